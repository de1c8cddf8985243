package media

import (
	"net/netip"
	"time"

	"github.com/pion/rtp"
)

// The clock's side of a session: on each tick, packets toward the carrier
// every ptime and frames toward the listener every 20 ms, then marks,
// RTCP and the RTP timeout.

// clockState is what the session's clock carries from one tick to the
// next; only the hub's goroutine touches it, under tickMu.
type clockState struct {
	inFrame  [2 * FrameSamples]int16 // 20 ms at 8 or 16 kHz
	outPCM   []int16
	payload  []byte
	wire     []byte
	marks    []DoneMark
	pkt      rtp.Packet
	nIn      int64
	nOut     int64
	nextRTCP time.Duration
	// nextDrain is when the RTCP port is read next; rtcpBuf and
	// rtcpClear (SRTCP) are its buffers.
	nextDrain time.Duration
	rtcpBuf   []byte
	rtcpClear []byte
	first     bool
	halted    bool // closed, or ended by the RTP timeout: no more ticks
}

func (s *Session) initClock() {
	// One payload byte per tick of the 8 kHz clock, G.711 and G.722 alike.
	ticks := s.cfg.PtimeMS * ClockRate / 1000
	c := &s.clk
	c.outPCM = make([]int16, ticks*s.spt)
	c.payload = make([]byte, ticks)
	c.wire = make([]byte, 12+ticks+srtpOverhead)
	c.marks = make([]DoneMark, 0, 8)
	c.nextRTCP = s.cfg.RTCPInterval / 5 // an early first report gets RTT going
	c.pkt.Version = 2
	c.pkt.SSRC = s.ssrc
	c.first = true
	c.rtcpBuf = make([]byte, 1500)
	if s.cfg.SRTP != nil {
		c.rtcpClear = make([]byte, 1500)
	}
}

// tick does the clock's work that is due at now: packets toward the
// carrier every ptime and frames toward the application every 20 ms,
// counted from the session's start (so a late tick catches up and an
// early one waits), then marks, RTCP and the RTP timeout. The hub calls
// it every tickPeriod.
func (s *Session) tick(now time.Time) {
	s.tickMu.Lock()
	defer s.tickMu.Unlock()
	c := &s.clk
	if c.halted {
		return
	}
	const inPeriod = 20 * time.Millisecond
	outPeriod := time.Duration(s.cfg.PtimeMS) * time.Millisecond
	elapsed := now.Sub(s.start)
	// The carrier's packet goes first: its spacing on the wire is what
	// the far end's jitter buffer sees; the app's frame can wait a few
	// microseconds.
	for k := 0; time.Duration(c.nOut+1)*outPeriod <= elapsed; k++ {
		// After a stall (a paused process, a slow listener) catch up a
		// few frames, then skip: the timeline stays true to the clock.
		if k < 5 {
			s.sendPacket(&c.pkt, c.outPCM, c.payload, c.wire, &c.first)
		} else {
			s.ts += uint32(len(c.payload))
		}
		c.nOut++
	}
	for k := 0; time.Duration(c.nIn+1)*inPeriod <= elapsed; k++ {
		if k < 5 {
			s.rxMu.Lock()
			frame := c.inFrame[:FrameSamples*s.spt]
			ok := s.jb.Pop(frame)
			arrival := s.jb.FrameArrival
			s.rxMu.Unlock()
			if ok {
				var arrived time.Time
				if arrival >= 0 {
					arrived = s.epoch.Add(time.Duration(arrival) * (time.Second / ClockRate))
				}
				s.cfg.Listener.Audio(frame, c.nIn, arrived)
			}
		}
		c.nIn++
	}
	c.marks = s.deliverMarks(c.marks)
	if elapsed >= c.nextDrain {
		s.drainRTCP(now)
		c.nextDrain = elapsed + rtcpDrainEvery
	}
	if elapsed >= c.nextRTCP {
		s.sendRTCP()
		c.nextRTCP = elapsed + s.cfg.RTCPInterval
	}
	if s.Direction().receives() && time.Duration(s.now()-s.lastRx.Load()) > s.cfg.RTPTimeout {
		s.endErr = ErrRTPTimeout
		close(s.ended)
		c.halted = true
		s.pool.clock.unregister(s)
	}
}

// sendPacket sends the next packet: a telephone-event packet while the
// application's digits play, else playout audio, or comfort silence when
// the queue is empty. The marker bit starts each talkspurt and each event.
func (s *Session) sendPacket(pkt *rtp.Packet, pcm []int16, payload, wire []byte, first *bool) {
	samples := uint32(len(payload)) // RTP clock ticks
	remote := s.remote.Load()
	sends := s.Direction().sends() && remote != nil
	if dtmfPT := uint8(s.dtmfPT.Load()); sends && dtmfPT != 0 {
		if ok, marker := s.dtmfOut.next(payload[:4], s.ts, samples); ok {
			pkt.PayloadType, pkt.Timestamp, pkt.Marker = dtmfPT, s.dtmfOut.startTS, marker
			pkt.SequenceNumber, pkt.Payload = s.seq, payload[:4]
			s.transmit(pkt, wire, *remote)
			*first = false
			s.seq++
			s.ts += samples
			s.talking = false
			return
		}
	}
	n, spurtAt := s.playout.Read(pcm)
	if !sends {
		s.ts += samples
		s.talking = false
		return
	}
	s.codec.encode(payload, pcm)
	pkt.PayloadType = uint8(s.codecPT.Load())
	pkt.SequenceNumber = s.seq
	pkt.Timestamp = s.ts
	pkt.Marker = *first || (n > 0 && !s.talking)
	pkt.Payload = payload
	s.transmit(pkt, wire, *remote)
	if !spurtAt.IsZero() {
		s.toCarrier.Add(time.Since(spurtAt))
	}
	*first = false
	s.seq++
	s.ts += samples
	s.talking = n > 0
}

// transmit marshals pkt into wire, protects it when the call has SRTP and
// sends it.
func (s *Session) transmit(pkt *rtp.Packet, wire []byte, remote netip.AddrPort) {
	size, err := pkt.MarshalTo(wire)
	out := wire[:size]
	if err == nil && s.cfg.SRTP != nil {
		// In place: pion's EncryptRTP writes over its input when dst is it.
		out, err = s.cfg.SRTP.ProtectRTP(wire[:size], out)
	}
	if err == nil {
		if _, err := s.rtpConn.WriteToUDPAddrPort(out, remote); err == nil {
			s.sent.Add(1)
			s.octets.Add(uint64(len(pkt.Payload)))
		}
	}
}

// rtcpDrainEvery is how often the clock reads what the RTCP port holds.
// RTCP comes every few seconds: polling it from the clock costs one
// system call per drain, where a reader goroutine per call would cost a
// stack and a wake-up of its own.
const rtcpDrainEvery = 200 * time.Millisecond
