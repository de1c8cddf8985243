package media

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// ErrNoPorts means every RTP port pair of the range is in use or
// quarantined: the edge is at capacity.
var ErrNoPorts = errors.New("no free RTP ports")

// PortPool hands out even RTP ports (RTCP on port+1) from a range. A
// released pair rests in quarantine before reuse, so that late packets of
// an ended call never reach the next one.
type PortPool struct {
	ip         netip.Addr
	min, max   int // inclusive, even
	quarantine time.Duration
	now        func() time.Time

	mu       sync.Mutex
	next     int
	inUse    map[int]bool
	released map[int]time.Time

	// clock ticks every started session of the pool.
	clock clockHub
}

// NewPortPool serves even ports in [min, max] bound on ip.
func NewPortPool(ip netip.Addr, min, max int) (*PortPool, error) {
	if min%2 == 1 {
		min++
	}
	if max%2 == 1 {
		max--
	}
	if min < 1024 || max > 65534 || min > max {
		return nil, fmt.Errorf("rtp port range %d-%d: need even ports within 1024-65534, min <= max", min, max)
	}
	return &PortPool{ip: ip, min: min, max: max, quarantine: 2 * time.Second, now: time.Now,
		next: min, inUse: map[int]bool{}, released: map[int]time.Time{}}, nil
}

// Size is the number of port pairs in the range.
func (p *PortPool) Size() int { return (p.max-p.min)/2 + 1 }

// InUse is the number of pairs held by calls.
func (p *PortPool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inUse)
}

// open binds the next free pair, skipping ports another process holds.
func (p *PortPool) open() (rtpConn, rtcpConn *net.UDPConn, port int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for range p.Size() {
		port = p.next
		p.next += 2
		if p.next > p.max {
			p.next = p.min
		}
		if p.inUse[port] {
			continue
		}
		if t, ok := p.released[port]; ok {
			if now.Sub(t) < p.quarantine {
				continue
			}
			delete(p.released, port)
		}
		rtpConn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.ip, uint16(port))))
		if err != nil {
			continue
		}
		rtcpConn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.ip, uint16(port+1))))
		if err != nil {
			rtpConn.Close()
			continue
		}
		p.inUse[port] = true
		return rtpConn, rtcpConn, port, nil
	}
	return nil, nil, 0, ErrNoPorts
}

func (p *PortPool) release(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inUse[port] {
		delete(p.inUse, port)
		p.released[port] = p.now()
	}
}
