package media

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// offlineSession is a Session with no sockets, for feeding packets by hand.
func offlineSession(l Listener) *Session { return offlineSessionWith(l, PCMA) }

func offlineSessionWith(l Listener, c Codec) *Session {
	s := &Session{
		cfg:   Config{Codec: c, DTMFPayloadType: 101, Listener: l, PtimeMS: 20},
		epoch: time.Now(), ssrc: 77, log: slog.New(slog.DiscardHandler),
		ended: make(chan struct{}),
	}
	s.useCodec(c)
	s.SetPayloadTypes(c.PayloadType, 101)
	return s
}

func FuzzReceiveRTP(f *testing.F) {
	audio, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 8, SequenceNumber: 1, Timestamp: 160, SSRC: 5}, Payload: make([]byte, 160)}).Marshal()
	dtmf, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 101, SequenceNumber: 2, Timestamp: 320, SSRC: 5, Marker: true}, Payload: []byte{5, 0x8a, 0, 160}}).Marshal()
	ext, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 8, SequenceNumber: 3, Timestamp: 480, SSRC: 5, CSRC: []uint32{1, 2}}, Payload: make([]byte, 240)}).Marshal()
	f.Add(audio, int64(0))
	f.Add(dtmf, int64(20e6))
	f.Add(ext, int64(40e6))
	f.Add([]byte{0x80}, int64(1))
	f.Fuzz(func(t *testing.T, b []byte, now int64) {
		s := offlineSession(newRecorder())
		rx := newRTPReceiver()
		from := netip.MustParseAddrPort("192.0.2.1:4000")
		// Twice, as a duplicate, then a tick: nothing may panic and the
		// frame handed out is always 20 ms.
		s.receiveRTP(rx, b, from, now)
		s.receiveRTP(rx, b, from, now+1)
		frame := make([]int16, FrameSamples)
		s.jb.Pop(frame)
		_ = s.Stats()
	})
}

func FuzzReceiveRTCP(f *testing.F) {
	sr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.SenderReport{SSRC: 5, NTPTime: 1 << 40, Reports: []rtcp.ReceptionReport{{SSRC: 77, LastSenderReport: 3, Delay: 1}}}})
	rr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 5, Reports: []rtcp.ReceptionReport{{SSRC: 77, TotalLost: 3, Jitter: 80}}}})
	bye, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.Goodbye{Sources: []uint32{5}}})
	f.Add(sr)
	f.Add(rr)
	f.Add(bye)
	f.Fuzz(func(t *testing.T, b []byte) {
		s := offlineSession(newRecorder())
		s.receiveRTCP(b, netip.MustParseAddrPort("192.0.2.1:4001"), time.Now())
		st := s.Stats()
		if st.RTTMS < 0 || st.RemoteJitterMS < 0 {
			t.Fatalf("negative stats %+v", st)
		}
	})
}

func TestRTCPRoundTrip(t *testing.T) {
	// A receiver report that echoes our sender report 10 ms after we sent
	// it, after holding it 5 ms, gives a 5 ms round trip.
	s := offlineSession(newRecorder())
	sent := time.Now().Add(-10 * time.Millisecond)
	lsr := uint32(ntpTime(sent) >> 16)
	rr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 5, Reports: []rtcp.ReceptionReport{
		{SSRC: 77, LastSenderReport: lsr, Delay: 328 /* 5 ms in 1/65536 s */, TotalLost: 4, Jitter: 40}}}})
	s.receiveRTCP(rr, netip.MustParseAddrPort("192.0.2.1:4001"), time.Now())
	st := s.Stats()
	if st.RTTMS < 4 || st.RTTMS > 7 {
		t.Fatalf("rtt %.2f ms, want about 5", st.RTTMS)
	}
	if st.RemoteLost != 4 || st.RemoteJitterMS != 5 {
		t.Fatalf("remote lost %d jitter %.1f ms", st.RemoteLost, st.RemoteJitterMS)
	}
}

func TestPayloadTypesChangeMidCall(t *testing.T) {
	rec := newRecorder()
	s := offlineSession(rec)
	rx := newRTPReceiver()
	from := netip.MustParseAddrPort("192.0.2.1:4000")
	dtmf := func(pt uint8, ts uint32) []byte {
		b, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, Timestamp: ts, SSRC: 5}, Payload: []byte{3, 0x8a, 0, 160}}).Marshal()
		return b
	}
	s.receiveRTP(rx, dtmf(96, 100), from, 1)
	s.SetPayloadTypes(PCMA.PayloadType, 96) // a re-INVITE moved telephone-event to 96
	s.receiveRTP(rx, dtmf(96, 200), from, 2)
	s.receiveRTP(rx, dtmf(101, 300), from, 3)
	if _, digits, _ := rec.snapshot(); string(digits) != "3" {
		t.Fatalf("digits %q: want one, from the packet sent after the change", digits)
	}
}
