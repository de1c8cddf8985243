package e2e

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Capture records the UDP datagrams on the loopback interface to or from
// a port in [lo, hi], as a packet capture would (an
// AF_PACKET socket: root only). Each datagram is kept once, as received.
type Capture struct {
	fd     int
	lo, hi int
	mu     sync.Mutex
	got    [][]byte
	done   chan struct{}
}

// CaptureLoopback starts a capture; it skips the test's capture checks
// (returns nil) when the process may not open a packet socket.
func CaptureLoopback(t *testing.T, lo, hi int) *Capture {
	t.Helper()
	const ethPAll = 0x0003
	proto := int(htons(ethPAll))
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, proto)
	if errors.Is(err, syscall.EPERM) || os.Geteuid() != 0 {
		t.Logf("no packet capture without root (%v): the on-the-wire checks are skipped", err)
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	ifi, err := net.InterfaceByName("lo")
	if err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(ethPAll), Ifindex: ifi.Index}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	tv := syscall.NsecToTimeval(int64(100 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	c := &Capture{fd: fd, lo: lo, hi: hi, done: make(chan struct{})}
	stop := make(chan struct{})
	go c.read(stop)
	t.Cleanup(func() { close(stop); <-c.done; syscall.Close(fd) })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *Capture) read(stop <-chan struct{}) {
	defer close(c.done)
	buf := make([]byte, 65536)
	for {
		select {
		case <-stop:
			return
		default:
		}
		n, from, err := syscall.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue // the receive timeout: look at stop again
		}
		// Loopback shows each packet leaving and arriving: keep arrivals.
		if ll, ok := from.(*syscall.SockaddrLinklayer); !ok || ll.Pkttype != syscall.PACKET_HOST {
			continue
		}
		// Loopback frames carry a 14-byte Ethernet header.
		frame := buf[:n]
		if len(frame) < 14+20 || binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
			continue
		}
		ip := frame[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != syscall.IPPROTO_UDP || len(ip) < ihl+8 {
			continue
		}
		udp := ip[ihl:]
		src, dst := int(binary.BigEndian.Uint16(udp)), int(binary.BigEndian.Uint16(udp[2:]))
		if (src < c.lo || src > c.hi) && (dst < c.lo || dst > c.hi) {
			continue
		}
		c.mu.Lock()
		c.got = append(c.got, append([]byte(nil), udp[8:]...))
		c.mu.Unlock()
	}
}

// Datagrams is what was captured so far: UDP payloads.
func (c *Capture) Datagrams() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.got...)
}
