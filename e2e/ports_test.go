package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// Ports for the edge's RTP range, SIPp's SIP and media ports and the
// test's own RTP peers come from blocks below the kernel's ephemeral range
// (32768 and up on Linux), so that no socket the kernel picks for :0 —
// ours, another suite's, a browser's — can land in them. A block is held
// for the life of the test process by an flock on a file in the temp
// directory: a second `go test` of this suite (another clone on the same
// machine) takes other blocks. Within its blocks the process hands ports
// out in order and checks each is free before giving it away.
const (
	portBase      = 10000
	portCeiling   = 32700 // below the ephemeral range
	portBlockSize = 400
	// blocksPerProcess bounds how much of the space one suite takes; ports
	// are handed out round-robin within them (tests run one at a time, so
	// by the time a port comes round again its last user has stopped).
	blocksPerProcess = 6
)

var ports struct {
	mu     sync.Mutex
	blocks []int // first port of each held block
	next   int   // index into the concatenation of blocks
	locks  []*os.File
}

// acquireBlock takes the next block no other process holds.
func acquireBlock() (int, error) {
	dir := filepath.Join(os.TempDir(), "trunkgate-e2e-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, err
	}
	nBlocks := (portCeiling - portBase) / portBlockSize
	start := os.Getpid() % nBlocks // spread suites apart from the start
	for i := range nBlocks {
		b := (start + i) % nBlocks
		first := portBase + b*portBlockSize
		held := false
		for _, h := range ports.blocks {
			held = held || h == first
		}
		if held {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(first)+".lock"), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return 0, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		ports.locks = append(ports.locks, f) // held until the process exits
		ports.blocks = append(ports.blocks, first)
		return first, nil
	}
	return 0, fmt.Errorf("every port block in %d-%d is held by another test process", portBase, portCeiling)
}

// portsFree reports whether every port of [first, first+n) can be bound on
// loopback, UDP and TCP.
func portsFree(first, n int) bool {
	for p := first; p < first+n; p++ {
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		u.Close()
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

// portRange hands out n consecutive free ports starting at an even port.
func portRange(t testing.TB, n int) int {
	t.Helper()
	n += n % 2
	ports.mu.Lock()
	defer ports.mu.Unlock()
	for tries := 0; tries < 4*blocksPerProcess*portBlockSize/n; tries++ {
		if ports.next+n > len(ports.blocks)*portBlockSize {
			if len(ports.blocks) < blocksPerProcess {
				if _, err := acquireBlock(); err != nil {
					t.Fatal(err)
				}
			} else {
				ports.next = 0
			}
			continue
		}
		block, off := ports.next/portBlockSize, ports.next%portBlockSize
		if off+n > portBlockSize { // a range never straddles two blocks
			ports.next += portBlockSize - off
			continue
		}
		first := ports.blocks[block] + off
		ports.next += n
		if portsFree(first, n) {
			return first
		}
	}
	t.Fatalf("no %d free ports in this suite's blocks", n)
	return 0
}

// freePort is one free port (UDP and TCP) from the suite's blocks.
func freePort(t testing.TB) int { return portRange(t, 1) }

// rtpRange is an even range of RTP ports for one edge: 40 pairs.
func rtpRange(t testing.TB) (int, int) {
	lo := portRange(t, 80)
	return lo, lo + 78
}
