package media

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// recorder is a Listener that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	frames [][]int16
	ticks  []int64 // the media clock frame of each frame
	digits []byte
	marks  []string
	got    chan struct{}
}

func newRecorder() *recorder { return &recorder{got: make(chan struct{}, 1000)} }

func (r *recorder) Audio(pcm []int16, frame int64, _ time.Time) {
	r.mu.Lock()
	r.frames = append(r.frames, slices.Clone(pcm))
	r.ticks = append(r.ticks, frame)
	r.mu.Unlock()
	select {
	case r.got <- struct{}{}:
	default:
	}
}

func (r *recorder) DTMF(d byte) {
	r.mu.Lock()
	r.digits = append(r.digits, d)
	r.mu.Unlock()
}

func (r *recorder) MarkDone(name string, cleared bool) {
	if cleared {
		name += " (cleared)"
	}
	r.mu.Lock()
	r.marks = append(r.marks, name)
	r.mu.Unlock()
}

func (r *recorder) snapshot() ([][]int16, []byte, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.frames), slices.Clone(r.digits), slices.Clone(r.marks)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type carrier struct {
	conn *net.UDPConn
	seq  uint16
	ts   uint32
}

func newCarrier(t *testing.T) *carrier {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &carrier{conn: c, seq: 100, ts: 5000}
}

func (c *carrier) addr() netip.AddrPort { return c.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (c *carrier) send(t *testing.T, to int, pt uint8, payload []byte, marker bool) {
	t.Helper()
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: c.seq, Timestamp: c.ts, SSRC: 0xabc, Marker: marker}, Payload: payload}
	b, _ := p.Marshal()
	if _, err := c.conn.WriteToUDPAddrPort(b, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(to))); err != nil {
		t.Fatal(err)
	}
	c.seq++
}

func (c *carrier) recv(t *testing.T, timeout time.Duration) (*rtp.Packet, time.Time, bool) {
	t.Helper()
	buf := make([]byte, 1500)
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	n, err := c.conn.Read(buf)
	if err != nil {
		return nil, time.Time{}, false
	}
	var p rtp.Packet
	if err := p.Unmarshal(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return &p, time.Now(), true
}

func newTestPool(t *testing.T) *PortPool {
	t.Helper()
	p, err := NewPortPool(netip.MustParseAddr("127.0.0.1"), 30000+int(time.Now().UnixNano()%2000)*2, 34998)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSessionLatchesAndPaces(t *testing.T) {
	pool := newTestPool(t)
	car := newCarrier(t)
	rec := newRecorder()
	// The SDP says a port nobody listens on: only latching finds the carrier.
	bogus := netip.MustParseAddrPort("127.0.0.1:9")
	s, err := pool.NewSession(Config{Codec: PCMU, Remote: bogus, DTMFPayloadType: 101, Listener: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Start()
	ulaw := make([]byte, 160)
	EncodeUlaw(ulaw, tone(1000, 8000, 160, 8000))
	car.send(t, s.LocalPort(), 0, ulaw, true)
	waitFor(t, 2*time.Second, "latch", func() bool { return s.latched.Load() })
	// Queue 1 s of audio, and a mark after it.
	s.Play(tone(1000, 8000, 8000, 8000), time.Now())
	s.Mark("end-of-tone")
	var (
		arrivals []time.Time
		pkts     []*rtp.Packet
	)
	for len(pkts) < 70 {
		p, at, ok := car.recv(t, time.Second)
		if !ok {
			t.Fatalf("no RTP after %d packets: latching failed", len(pkts))
		}
		pkts = append(pkts, p)
		arrivals = append(arrivals, at)
	}
	// Timestamps advance 160 per packet, sequence numbers by one, and the
	// talkspurt start carries the marker bit.
	talkStart := -1
	for i := 1; i < len(pkts); i++ {
		if pkts[i].Timestamp-pkts[i-1].Timestamp != 160 || pkts[i].SequenceNumber-pkts[i-1].SequenceNumber != 1 {
			t.Fatalf("packet %d: ts %d→%d seq %d→%d", i, pkts[i-1].Timestamp, pkts[i].Timestamp,
				pkts[i-1].SequenceNumber, pkts[i].SequenceNumber)
		}
		if pkts[i].Marker {
			talkStart = i
		}
	}
	if !pkts[0].Marker && talkStart < 0 {
		t.Fatal("no marker bit at the start of audio")
	}
	// Pacing: 20 ms apart on average over the run (individual gaps are
	// checked by the end-to-end test, on an unloaded clock).
	span := arrivals[len(arrivals)-1].Sub(arrivals[0])
	if avg := span / time.Duration(len(arrivals)-1); avg < 18*time.Millisecond || avg > 22*time.Millisecond {
		t.Fatalf("average spacing %v, want 20 ms", avg)
	}
	waitFor(t, 2*time.Second, "mark after the tone", func() bool {
		_, _, marks := rec.snapshot()
		return slices.Equal(marks, []string{"end-of-tone"})
	})
	// Once the carrier's audio starts, the clock hands the listener a frame
	// on every tick: their frame numbers (the media timestamps the app
	// sees) step by exactly one.
	rec.mu.Lock()
	ticks := slices.Clone(rec.ticks)
	rec.mu.Unlock()
	for i := 1; i < len(ticks); i++ {
		if ticks[i] != ticks[i-1]+1 {
			t.Fatalf("frame %d is clock frame %d after %d: the clock skipped or repeated", i, ticks[i], ticks[i-1])
		}
	}
	// The carrier's audio reached the listener.
	waitFor(t, time.Second, "inbound frames", func() bool {
		frames, _, _ := rec.snapshot()
		for _, f := range frames {
			if rms(f) > 3000 {
				return true
			}
		}
		return false
	})
}

func TestSessionDTMFAndHold(t *testing.T) {
	pool := newTestPool(t)
	car := newCarrier(t)
	rec := newRecorder()
	s, err := pool.NewSession(Config{Codec: PCMA, Remote: car.addr(), DTMFPayloadType: 96, Listener: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Start()
	for i := range 6 {
		end := byte(0)
		if i >= 3 {
			end = 0x80
		}
		car.send(t, s.LocalPort(), 96, []byte{7, end | 10, 0, byte(160 * (i + 1))}, i == 0)
	}
	waitFor(t, time.Second, "dtmf", func() bool {
		_, digits, _ := rec.snapshot()
		return string(digits) == "7"
	})
	if _, _, ok := car.recv(t, time.Second); !ok {
		t.Fatal("no RTP before hold")
	}
	s.SetDirection(RecvOnly) // the far end holds the call: we go quiet
	time.Sleep(60 * time.Millisecond)
	for { // drain what was in flight
		if _, _, ok := car.recv(t, 30*time.Millisecond); !ok {
			break
		}
	}
	if p, _, ok := car.recv(t, 200*time.Millisecond); ok {
		t.Fatalf("RTP sent while on hold: seq %d", p.SequenceNumber)
	}
	s.SetDirection(SendRecv)
	if _, _, ok := car.recv(t, time.Second); !ok {
		t.Fatal("no RTP after unhold")
	}
}

func TestSessionRTPTimeout(t *testing.T) {
	pool := newTestPool(t)
	car := newCarrier(t)
	s, err := pool.NewSession(Config{Codec: PCMU, Remote: car.addr(), RTPTimeout: 150 * time.Millisecond, Listener: newRecorder()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Start()
	select {
	case <-s.Done():
		if s.Err() != ErrRTPTimeout {
			t.Fatalf("ended with %v", s.Err())
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no RTP timeout")
	}
}

func TestPortPoolQuarantineAndExhaustion(t *testing.T) {
	pool, err := NewPortPool(netip.MustParseAddr("127.0.0.1"), 36000, 36002)
	if err != nil {
		t.Fatal(err)
	}
	var conns []*Session
	for range 2 {
		s, err := pool.NewSession(Config{Codec: PCMU, Listener: newRecorder()})
		if err != nil {
			t.Fatal(err)
		}
		if s.LocalPort()%2 != 0 {
			t.Fatalf("odd RTP port %d", s.LocalPort())
		}
		conns = append(conns, s)
	}
	if _, err := pool.NewSession(Config{Codec: PCMU, Listener: newRecorder()}); err != ErrNoPorts {
		t.Fatalf("third session: %v, want ErrNoPorts", err)
	}
	conns[0].Close()
	if _, err := pool.NewSession(Config{Codec: PCMU, Listener: newRecorder()}); err != ErrNoPorts {
		t.Fatalf("port reused within its quarantine: %v", err)
	}
	pool.now = func() time.Time { return time.Now().Add(time.Minute) }
	s, err := pool.NewSession(Config{Codec: PCMU, Listener: newRecorder()})
	if err != nil {
		t.Fatalf("after quarantine: %v", err)
	}
	s.Close()
	conns[1].Close()
	if pool.InUse() != 0 {
		t.Fatalf("%d ports still in use", pool.InUse())
	}
}

// TestSessionSendsDTMF: digits from the application go out as RFC 4733
// events in the media: one timestamp per event, the marker on its first
// packet, the duration growing by a packet each time up to the digit's
// length, three end packets, audio paused meanwhile and a gap between
// digits.
func TestSessionSendsDTMF(t *testing.T) {
	pool := newTestPool(t)
	car := newCarrier(t)
	s, err := pool.NewSession(Config{Codec: PCMU, Remote: car.addr(), DTMFPayloadType: 101, Listener: newRecorder()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SendDTMF("1x", 0); !errors.Is(err, ErrBadDigit) {
		t.Fatalf("bad digit: %v", err)
	}
	s.Start()
	if err := s.SendDTMF("1#", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	type event struct {
		digit     byte
		ts        uint32
		durations []uint16
		ends      int
		marker    bool
	}
	var events []*event
	audioBetween := 0
	for len(events) < 2 || events[len(events)-1].ends < 3 {
		p, _, ok := car.recv(t, time.Second)
		if !ok {
			t.Fatalf("events so far: %+v", events)
		}
		if p.PayloadType != 101 {
			if len(events) == 1 && events[0].ends == 3 {
				audioBetween++
			}
			continue
		}
		if len(p.Payload) != 4 {
			t.Fatalf("event payload %x", p.Payload)
		}
		if len(events) == 0 || events[len(events)-1].ts != p.Timestamp {
			events = append(events, &event{digit: p.Payload[0], ts: p.Timestamp, marker: p.Marker})
		} else if p.Marker {
			t.Fatalf("marker on a continuation packet of %+v", events[len(events)-1])
		}
		e := events[len(events)-1]
		e.durations = append(e.durations, binary.BigEndian.Uint16(p.Payload[2:]))
		if p.Payload[1]&0x80 != 0 {
			e.ends++
		}
		if p.Payload[1]&0x3f != 10 {
			t.Fatalf("volume %d", p.Payload[1]&0x3f)
		}
	}
	want := []uint16{160, 320, 480, 640, 800, 800, 800}
	for i, e := range events {
		if e.digit != []byte{1, 11}[i] || !e.marker || !slices.Equal(e.durations, want) || e.ends != 3 {
			t.Fatalf("event %d: %+v, want digit %d, marker, durations %v, 3 ends", i, e, []byte{1, 11}[i], want)
		}
	}
	if audioBetween != 3 { // the 60 ms gap: three 20 ms audio packets
		t.Fatalf("%d audio packets between the digits, want 3", audioBetween)
	}
	if d := events[1].ts - events[0].ts; d != 160*(7+3) {
		t.Fatalf("second digit starts %d samples after the first, want 1600", d)
	}
}
