package media

import (
	"errors"
	"net"
	"net/netip"

	"github.com/pion/rtp"
)

// The reader goroutine's side of a session: RTP in, decoded into the
// jitter buffer, DTMF events to the listener, and symmetric RTP latching.

func (s *Session) readRTP() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	var clear []byte
	if s.cfg.SRTP != nil {
		clear = make([]byte, 1500)
	}
	rx := newRTPReceiver()
	for {
		n, from, err := s.rtpConn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pkt := buf[:n]
		if s.cfg.SRTP != nil {
			if pkt, err = s.cfg.SRTP.UnprotectRTP(clear, pkt); err != nil {
				s.badPkts.Add(1)
				continue
			}
		}
		s.receiveRTP(rx, pkt, from, s.now())
	}
}

// rtpReceiver is the reader goroutine's reusable state.
type rtpReceiver struct {
	pkt rtp.Packet
	pcm []int16
}

func newRTPReceiver() *rtpReceiver { return &rtpReceiver{pcm: make([]int16, 2*1500)} }

// receiveRTP handles one datagram from the RTP port: anything that is not
// a version 2 RTP packet is counted and dropped.
func (s *Session) receiveRTP(rx *rtpReceiver, b []byte, from netip.AddrPort, now int64) {
	pkt := &rx.pkt
	if err := pkt.Unmarshal(b); err != nil || pkt.Version != 2 {
		s.badPkts.Add(1)
		return
	}
	if !s.latched.Load() {
		s.latch(from)
	}
	s.lastRx.Store(now)
	arrival := samplesAt(now)
	dtmfPT := uint8(s.dtmfPT.Load())
	switch {
	case pkt.PayloadType == uint8(s.codecPT.Load()):
		n := s.codec.decode(rx.pcm, pkt.Payload[:min(len(pkt.Payload), len(rx.pcm)/s.spt)])
		s.rxMu.Lock()
		s.rx.update(pkt.SSRC, pkt.SequenceNumber, pkt.Timestamp, arrival, len(b))
		s.jb.Push(pkt.SSRC, pkt.Timestamp, rx.pcm[:n], arrival)
		s.rxMu.Unlock()
	case dtmfPT != 0 && pkt.PayloadType == dtmfPT:
		s.rxMu.Lock()
		s.rx.update(pkt.SSRC, pkt.SequenceNumber, pkt.Timestamp, arrival, len(b))
		s.rxMu.Unlock()
		if digit, ok := s.dtmf.Packet(pkt.Timestamp, pkt.Payload); ok {
			s.dtmfCount.Add(1)
			s.cfg.Listener.DTMF(digit)
		}
	default:
		// Comfort noise and unknown payload types carry nothing we play.
	}
}

func (s *Session) latch(from netip.AddrPort) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if cur := s.remote.Load(); cur == nil || *cur != from {
		s.log.Debug("rtp latched", "remote", from)
	}
	s.remote.Store(&from)
	s.latched.Store(true)
	if !s.rtcpLatch.Load() {
		r := netip.AddrPortFrom(from.Addr(), from.Port()+1)
		s.remoteRTCP.Store(&r)
	}
}
