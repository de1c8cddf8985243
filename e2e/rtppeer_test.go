package e2e

import (
	"encoding/binary"
	"math"
	"net"
	"net/netip"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// RTPPeer is the carrier's media, played by the test: the SIPp offer
// points at its port, so the edge sends its RTP here, and the test sends
// RTP from here, so symmetric RTP latches here too.
type RTPPeer struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []Received
	edge netip.AddrPort // where the edge's RTP comes from
	seq  uint16
	ts   uint32
	ssrc uint32
	done chan struct{}
}

// Received is one packet from the edge.
type Received struct {
	Pkt rtp.Packet
	At  time.Time
}

// NewRTPPeer listens on an even loopback port.
func NewRTPPeer(t *testing.T) *RTPPeer {
	t.Helper()
	var conn *net.UDPConn
	for range 100 {
		lo := portRange(t, 2)
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: lo})
		if err == nil {
			conn = c
			break
		}
	}
	if conn == nil {
		t.Fatal("no port for the RTP peer")
	}
	// Kernel receive timestamps: pacing is measured as the packets hit the
	// socket, not as this (race-instrumented) process gets round to them.
	if raw, err := conn.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
		})
	}
	p := &RTPPeer{conn: conn, seq: 1000, ts: 80000, ssrc: 0x5eed, done: make(chan struct{})}
	go p.read()
	t.Cleanup(func() {
		conn.Close()
		<-p.done
	})
	return p
}

// Port is the peer's RTP port (for the SDP offer).
func (p *RTPPeer) Port() int { return p.conn.LocalAddr().(*net.UDPAddr).Port }

func (p *RTPPeer) read() {
	defer close(p.done)
	buf := make([]byte, 2048)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := p.conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			return
		}
		at := kernelTimestamp(oob[:oobn])
		var pkt rtp.Packet
		if pkt.Unmarshal(buf[:n]) != nil {
			continue
		}
		pkt.Payload = append([]byte(nil), pkt.Payload...)
		p.mu.Lock()
		p.got = append(p.got, Received{Pkt: pkt, At: at})
		p.edge = from
		p.mu.Unlock()
	}
}

// kernelTimestamp is the SCM_TIMESTAMPNS arrival time in a packet's
// control messages, or now when the kernel gave none.
func kernelTimestamp(oob []byte) time.Time {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Now()
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			return time.Unix(sec, nsec)
		}
	}
	return time.Now()
}

// Len is how many packets have come so far.
func (p *RTPPeer) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.got)
}

// Received returns the packets so far.
func (p *RTPPeer) Received() []Received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Received(nil), p.got...)
}

// WaitEdge waits until the edge has sent something, and returns its address.
func (p *RTPPeer) WaitEdge(t *testing.T) netip.AddrPort {
	t.Helper()
	var a netip.AddrPort
	waitFor(t, 5*time.Second, "RTP from the edge", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		a = p.edge
		return a.IsValid()
	})
	return a
}

// Packet is one RTP packet the test sends.
type Packet struct {
	Seq     uint16
	TS      uint32
	PT      uint8
	Payload []byte
	Marker  bool
	SSRC    uint32
}

// Send writes packets to the edge's RTP address.
func (p *RTPPeer) Send(t *testing.T, to netip.AddrPort, pkts ...Packet) {
	t.Helper()
	for _, x := range pkts {
		ssrc := x.SSRC
		if ssrc == 0 {
			ssrc = p.ssrc
		}
		b, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: x.PT, SequenceNumber: x.Seq, Timestamp: x.TS,
			SSRC: ssrc, Marker: x.Marker}, Payload: x.Payload}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.conn.WriteToUDPAddrPort(b, to); err != nil {
			t.Fatal(err)
		}
	}
}

// Stream sends audio as 20 ms packets paced in real time, from the peer's
// own sequence and timestamp counters; payload(i) gives packet i's bytes.
func (p *RTPPeer) Stream(t *testing.T, to netip.AddrPort, pt uint8, n int, payload func(i int) []byte) {
	t.Helper()
	start := time.Now()
	for i := range n {
		p.Send(t, to, Packet{Seq: p.seq, TS: p.ts, PT: pt, Payload: payload(i), Marker: i == 0})
		p.seq++
		p.ts += 160
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * 20 * time.Millisecond)))
	}
}

// percentile of durations (p in 0..100).
func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	// Nearest rank, rounded, so p1 and p99 stand equally far from the ends.
	i := int(math.Round(float64(len(s)-1) * p / 100))
	return s[i]
}

// talkingCaller starts call c (PCMU) with a Go RTP peer as the carrier's
// media; once the app has the stream, the peer sends n packets of
// payload(i), paced in real time, in the background (waited for at
// cleanup). It returns SIPp's run, the app's stream, its start and the
// peer (which counts what the edge sends the carrier).
func talkingCaller(t *testing.T, e *Edge, app *App, c Call, n int, payload func(i int) []byte) (*SIPpRun, *AppConn, Msg, *RTPPeer) {
	t.Helper()
	peer := NewRTPPeer(t)
	c.SDPPort, c.Codecs = peer.Port(), "0"
	run := c.Start(t, e)
	conn := app.Next(t)
	start := conn.Expect(t, "start")
	edge := peer.WaitEdge(t)
	streamed := make(chan struct{})
	go func() {
		defer close(streamed)
		peer.Stream(t, edge, 0, n, payload)
	}()
	t.Cleanup(func() { <-streamed })
	return run, conn, start, peer
}
