package media

// RTCP (RFC 3550 §6): the session's sender and receiver reports, sent and
// read by the media clock, and the round-trip time and the far end's loss
// and jitter they carry.

import (
	"net/netip"
	"time"

	"github.com/pion/rtcp"
)

// ntpTime is the 64-bit NTP timestamp of t.
func ntpTime(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800
	secs := uint64(t.Unix()) + ntpEpochOffset
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return secs<<32 | frac
}

func (s *Session) sendRTCP() {
	dst := s.remoteRTCP.Load()
	if dst == nil {
		return
	}
	now := time.Now()
	s.rxMu.Lock()
	var reports []rtcp.ReceptionReport
	if s.rx.started {
		lost := s.rx.lost()
		if lost < 0 {
			lost = 0
		}
		var dlsr uint32
		if !s.lastSRAt.IsZero() {
			dlsr = uint32(now.Sub(s.lastSRAt).Seconds() * 65536)
		}
		reports = append(reports, rtcp.ReceptionReport{
			SSRC: s.rx.ssrc, FractionLost: s.rx.interval(), TotalLost: uint32(min(lost, 0x7FFFFF)),
			LastSequenceNumber: s.rx.extMax(), Jitter: uint32(s.rx.jitter),
			LastSenderReport: s.lastSR, Delay: dlsr,
		})
	}
	s.rxMu.Unlock()
	packets := []rtcp.Packet{
		&rtcp.SenderReport{SSRC: s.ssrc, NTPTime: ntpTime(now), RTPTime: s.ts,
			PacketCount: uint32(s.sent.Load()), OctetCount: uint32(s.octets.Load()), Reports: reports},
		&rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{Source: s.ssrc,
			Items: []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "trunkgate"}}}}},
	}
	b, err := rtcp.Marshal(packets)
	if err != nil {
		return
	}
	if s.cfg.SRTP != nil {
		if b, err = s.cfg.SRTP.ProtectRTCP(nil, b); err != nil {
			return
		}
	}
	_, _ = s.rtcpConn.WriteToUDPAddrPort(b, *dst)
}

// drainRTCP reads every datagram waiting on the RTCP port, without
// blocking (a deadline in the past makes the read give up at once when
// the socket is empty). On the clock's goroutine only.
func (s *Session) drainRTCP(now time.Time) {
	c := &s.clk
	_ = s.rtcpConn.SetReadDeadline(now.Add(-time.Second))
	for range 16 {
		n, from, err := s.rtcpConn.ReadFromUDPAddrPort(c.rtcpBuf)
		if err != nil {
			return // empty (timeout), or closed
		}
		pkt := c.rtcpBuf[:n]
		if s.cfg.SRTP != nil {
			if pkt, err = s.cfg.SRTP.UnprotectRTCP(c.rtcpClear, pkt); err != nil {
				s.badPkts.Add(1)
				continue
			}
		}
		s.receiveRTCP(pkt, from, now)
	}
}

// receiveRTCP handles one datagram from the RTCP port.
func (s *Session) receiveRTCP(b []byte, from netip.AddrPort, now time.Time) {
	pkts, err := rtcp.Unmarshal(b)
	if err != nil {
		s.badPkts.Add(1)
		return
	}
	if !s.rtcpLatch.Load() {
		f := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		s.remoteRTCP.Store(&f)
		s.rtcpLatch.Store(true)
	}
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.SenderReport:
			s.rxMu.Lock()
			s.lastSR, s.lastSRAt = uint32(p.NTPTime>>16), now
			s.rxMu.Unlock()
			s.takeReports(p.Reports, now)
		case *rtcp.ReceiverReport:
			s.takeReports(p.Reports, now)
		}
	}
}

// takeReports reads what the far end says about our stream: its loss and
// jitter, and the round trip from LSR/DLSR (RFC 3550 §6.4.1).
func (s *Session) takeReports(reports []rtcp.ReceptionReport, now time.Time) {
	for _, r := range reports {
		if r.SSRC != s.ssrc {
			continue
		}
		s.statsMu.Lock()
		s.remoteLost = int64(r.TotalLost)
		s.remoteJitter = float64(r.Jitter) / (ClockRate / 1000)
		if r.LastSenderReport != 0 {
			mid := uint32(ntpTime(now) >> 16)
			rtt := mid - r.LastSenderReport - r.Delay
			if int32(rtt) >= 0 {
				s.rttMS = float64(rtt) * 1000 / 65536
			}
		}
		s.statsMu.Unlock()
	}
}
