package media

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// ramp fills a packet with sample values equal to their timeline position,
// so the output shows exactly which samples came out, in what order.
func ramp(ts uint32, n int) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = int16((int(ts) + i) % rampMod)
	}
	return out
}

type rtpPacket struct {
	ts      uint32
	samples []int16
}

func packets(firstTS uint32, count, ptimeSamples int) []rtpPacket {
	var out []rtpPacket
	for i := range count {
		ts := firstTS + uint32(i*ptimeSamples)
		out = append(out, rtpPacket{ts: ts, samples: ramp(ts, ptimeSamples)})
	}
	return out
}

// drain pops frames until n frames of output have been collected.
func popN(jb *JitterBuffer, n int) [][]int16 {
	var out [][]int16
	for range n {
		f := make([]int16, FrameSamples)
		if jb.Pop(f) {
			out = append(out, f)
		}
	}
	return out
}

// rampMod is a multiple of the frame size that fits in an int16.
const rampMod = 200 * FrameSamples

func isRamp(f []int16) (start int16, ok bool) {
	for i := 1; i < len(f); i++ {
		if f[i] != (f[i-1]+1)%rampMod {
			return 0, false
		}
	}
	return f[0], true
}

func TestJitterBufferInOrder(t *testing.T) {
	jb := NewJitterBuffer()
	var out [][]int16
	for i, p := range packets(1000, 50, 160) {
		jb.Push(7, p.ts, p.samples, int64(i*160))
		out = append(out, popN(jb, 1)...)
	}
	checkContinuous(t, out, 1000)
	if jb.Stats.Late+jb.Stats.Duplicates+jb.Stats.Concealed != 0 {
		t.Fatalf("stats %+v", jb.Stats)
	}
}

// checkContinuous asserts that, after any leading silence, the frames are
// the timeline from first on without a gap or a repeat.
func checkContinuous(t *testing.T, frames [][]int16, first int16) {
	t.Helper()
	i := 0
	for i < len(frames) && slices.Equal(frames[i], make([]int16, FrameSamples)) {
		i++
	}
	if i == len(frames) {
		t.Fatal("only silence came out")
	}
	want := first
	for ; i < len(frames); i++ {
		start, ok := isRamp(frames[i])
		if !ok || start != want {
			t.Fatalf("frame %d starts at %d (ramp %v), want %d", i, start, ok, want)
		}
		want = (want + FrameSamples) % rampMod
	}
}

func TestJitterBufferReordersAndDropsDuplicates(t *testing.T) {
	jb := NewJitterBuffer()
	pkts := packets(5000, 60, 160)
	// Swap neighbours and send some packets twice; two frames of time pass
	// per pair.
	var out [][]int16
	for i := 0; i+1 < len(pkts); i += 2 {
		sent := []rtpPacket{pkts[i+1], pkts[i]}
		if i%4 == 0 {
			sent = []rtpPacket{pkts[i+1], pkts[i+1], pkts[i]}
		}
		for _, p := range sent {
			jb.Push(1, p.ts, p.samples, int64(i*160))
		}
		out = append(out, popN(jb, 2)...)
	}
	if jb.Stats.Duplicates != 15 {
		t.Fatalf("duplicates %d, want 15", jb.Stats.Duplicates)
	}
	checkContinuous(t, out, 5000)
	if jb.Stats.Late != 0 {
		t.Fatalf("%d packets dropped as late", jb.Stats.Late)
	}
}

func TestJitterBufferConcealsLoss(t *testing.T) {
	jb := NewJitterBuffer()
	pkts := packets(0, 20, 160)
	tone := make([]int16, 160)
	for i := range tone {
		tone[i] = 8000
	}
	var out [][]int16
	for i, p := range pkts {
		if i == 10 {
			// Packet 10 is lost: nothing arrives, the tick still comes.
			out = append(out, popN(jb, 1)...)
			continue
		}
		jb.Push(1, p.ts, tone, int64(i*160))
		out = append(out, popN(jb, 1)...)
	}
	if jb.Stats.Concealed == 0 {
		t.Fatal("no concealment counted")
	}
	// The concealed frame is the last frame attenuated, not silence.
	concealed := 0
	for _, f := range out {
		if f[0] == 4000 || f[0] == 2000 {
			concealed++
		}
	}
	if concealed == 0 {
		t.Fatalf("no attenuated repeat among %d frames", len(out))
	}
}

func TestJitterBufferDropsLate(t *testing.T) {
	jb := NewJitterBuffer()
	pkts := packets(0, 10, 160)
	for i, p := range pkts[:5] {
		jb.Push(1, p.ts, p.samples, int64(i*160))
		popN(jb, 1)
	}
	popN(jb, 3) // time passes: frames 5.. are played (concealed)
	jb.Push(1, pkts[1].ts, pkts[1].samples, 1600)
	if jb.Stats.Late != 1 {
		t.Fatalf("late = %d, want 1", jb.Stats.Late)
	}
}

func TestJitterBufferPtime30To20(t *testing.T) {
	// 30 ms packets in, 20 ms frames out; the timeline is preserved.
	jb := NewJitterBuffer()
	var out [][]int16
	for i, p := range packets(100, 40, 240) {
		jb.Push(3, p.ts, p.samples, int64(i*240))
		// 3 packets (90 ms) per 4.5 frames: pop on the right schedule.
		for float64(len(out)+1)*160 <= float64((i+1)*240) {
			out = append(out, popN(jb, 1)...)
		}
	}
	checkContinuous(t, out[:len(out)-2], 100)
}

func TestJitterBufferWrapAndSSRCChange(t *testing.T) {
	jb := NewJitterBuffer()
	var out [][]int16
	start := uint32(math.MaxUint32 - 160*5 + 1)
	for i, p := range packets(start, 12, 160) {
		jb.Push(9, p.ts, p.samples, int64(i*160))
		out = append(out, popN(jb, 1)...)
	}
	if jb.Stats.Resyncs != 0 || jb.Stats.Late != 0 {
		t.Fatalf("timestamp wrap caused %+v", jb.Stats)
	}
	n := len(out)
	// A new SSRC with an unrelated timestamp restarts the timeline.
	for i, p := range packets(777, 10, 160) {
		jb.Push(10, p.ts, p.samples, int64(i*160))
		out = append(out, popN(jb, 1)...)
	}
	checkContinuous(t, out[n:], 777)
}

func TestJitterBufferAdaptsToJitter(t *testing.T) {
	jb := NewJitterBuffer()
	rng := rand.New(rand.NewPCG(1, 2))
	pkts := packets(0, 700, 160)
	// 200 packets with at most 5 ms of jitter, then 500 with up to 60 ms.
	type arrival struct {
		at int
		p  rtpPacket
	}
	var arrivals []arrival
	for i, p := range pkts {
		spread := 40 // samples: 5 ms
		if i >= 200 {
			spread = 480 // 60 ms
		}
		arrivals = append(arrivals, arrival{at: i*160 + rng.IntN(spread), p: p})
	}
	slices.SortFunc(arrivals, func(a, b arrival) int { return a.at - b.at })
	next := 0
	var out [][]int16
	var calmTarget int
	for tick := 0; tick < 720; tick++ {
		now := tick * 160
		for next < len(arrivals) && arrivals[next].at <= now {
			jb.Push(1, arrivals[next].p.ts, arrivals[next].p.samples, int64(arrivals[next].at))
			next++
		}
		out = append(out, popN(jb, 1)...)
		if tick == 199 {
			calmTarget = jb.Target()
		}
		if d := jb.Depth(); d > maxDelay+2*FrameSamples {
			t.Fatalf("tick %d: %d samples buffered, above the 100 ms bound", tick, d)
		}
	}
	if calmTarget != minDelay {
		t.Fatalf("target %d with 5 ms of jitter, want the 20 ms minimum", calmTarget)
	}
	if jb.Target() <= calmTarget || jb.Target() > maxDelay {
		t.Fatalf("target %d after 60 ms of jitter: did not grow within 20-100 ms", jb.Target())
	}
	// Once grown, the buffer stops losing audio to lateness.
	good := 0
	for _, f := range out[480:680] { // before the stream's end
		if _, ok := isRamp(f); ok {
			good++
		}
	}
	if good < 190 {
		t.Fatalf("only %d of the last 200 frames intact (stats %+v)", good, jb.Stats)
	}
}

func TestPlayoutMarksAndClear(t *testing.T) {
	p := NewPlayout()
	frame := make([]int16, 160)
	p.Mark("before-audio")
	played := func(names ...string) (m []DoneMark) {
		for _, n := range names {
			m = append(m, DoneMark{Name: n})
		}
		return m
	}
	if got := p.TakeMarks(nil); !slices.Equal(got, played("before-audio")) {
		t.Fatalf("mark on an empty queue: %v", got)
	}
	p.Write(ramp(0, 400), time.Time{})
	p.Mark("m1")
	p.Write(ramp(400, 100), time.Time{})
	p.Mark("m2")
	out := make([]int16, 160)
	if n, _ := p.Read(out); n != 160 {
		t.Fatalf("read %d", n)
	}
	if got := p.TakeMarks(nil); len(got) != 0 {
		t.Fatalf("marks early: %v", got)
	}
	p.Read(out)
	p.Read(out) // samples 320..479: m1 (at 400) is due
	if got := p.TakeMarks(nil); !slices.Equal(got, played("m1")) {
		t.Fatalf("after 480 samples: %v", got)
	}
	p.Write(frame, time.Time{})
	p.Mark("m3")
	if dropped := p.Clear(); dropped != 20+160 {
		t.Fatalf("clear dropped %d samples, want the 180 still queued", dropped)
	}
	if got := p.TakeMarks(nil); !slices.Equal(got, []DoneMark{{Name: "m2", Cleared: true}, {Name: "m3", Cleared: true}}) {
		t.Fatalf("clear echoes pending marks: %v", got)
	}
	if n, _ := p.Read(out); n != 0 || !slices.Equal(out, frame) {
		t.Fatalf("after clear read %d real samples", n)
	}
}

func TestPlayoutGrowsAndWraps(t *testing.T) {
	p := NewPlayout()
	out := make([]int16, 160)
	pos := 0
	for round := range 3 {
		// Burst 5 s (far more than the initial 160 ms) then drain it.
		p.Write(ramp(uint32(pos), 40000), time.Time{})
		for range 250 {
			if n, _ := p.Read(out); n != 160 {
				t.Fatalf("round %d: read %d", round, n)
			}
			if start, ok := isRamp(out); !ok || int(start) != pos%rampMod {
				t.Fatalf("round %d at %d: got %d", round, pos, start)
			}
			pos += 160
		}
	}
	if p.Over != 0 {
		t.Fatalf("dropped %d samples", p.Over)
	}
	// Drained after a long burst, the queue gives its memory back.
	if len(p.buf) != playoutInitial {
		t.Fatalf("a drained queue holds %d samples of buffer, want %d", len(p.buf), playoutInitial)
	}
	// Steady state (a frame in, a frame out) never grows or reallocates.
	buf := &p.buf[0]
	for range 500 {
		p.Write(out, time.Time{})
		p.Read(out)
	}
	if &p.buf[0] != buf {
		t.Fatal("the steady state reallocated the queue")
	}
}

func TestDTMFDetectorOnePerPress(t *testing.T) {
	var d DTMFDetector
	press := func(ts uint32, ev byte) (digits []byte) {
		for i := range 8 {
			end := byte(0)
			if i >= 5 {
				end = 0x80 // the end packet, sent three times
			}
			dur := uint16(160 * (i + 1))
			if digit, ok := d.Packet(ts, []byte{ev, end | 10, byte(dur >> 8), byte(dur)}); ok {
				digits = append(digits, digit)
			}
		}
		return digits
	}
	var got []byte
	for i, ev := range []byte{1, 1, 11, 10, 0, 15} {
		got = append(got, press(uint32(1000+i*4000), ev)...)
	}
	if string(got) != "11#*0D" {
		t.Fatalf("digits %q, want 11#*0D", got)
	}
	if _, ok := d.Packet(1, []byte{16, 0, 0, 0}); ok {
		t.Fatal("event 16 (flash) reported as a digit")
	}
	if _, ok := d.Packet(2, []byte{1}); ok {
		t.Fatal("short payload accepted")
	}
}

func TestRxStatsLossAndWrap(t *testing.T) {
	var s rxStats
	seq := uint16(65530)
	for i := range 20 {
		if i == 7 || i == 8 {
			seq++
			continue // lost
		}
		s.update(42, seq, uint32(i*160), int64(i*160), 172)
		seq++
	}
	if s.received != 18 || s.expected() != 20 || s.lost() != 2 {
		t.Fatalf("received %d expected %d lost %d", s.received, s.expected(), s.lost())
	}
	if s.cycles != 1<<16 {
		t.Fatalf("sequence wrap not counted: cycles %d", s.cycles)
	}
	if f := s.interval(); f != uint8(2*256/20) {
		t.Fatalf("fraction lost %d", f)
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, c := range []Codec{PCMU, PCMA} {
		pcm := make([]int16, 160)
		for i := range pcm {
			pcm[i] = int16(12000 * math.Sin(2*math.Pi*1000*float64(i)/8000))
		}
		enc := make([]byte, 160)
		c.Encode(enc, pcm)
		dec := make([]int16, 160)
		c.Decode(dec, enc)
		for i := range pcm {
			// G.711 keeps about 3% relative error at this level.
			if d := math.Abs(float64(dec[i] - pcm[i])); d > 0.04*12000 {
				t.Fatalf("%s sample %d: %d → %d", c.Name, i, pcm[i], dec[i])
			}
		}
	}
}

func tone(freq float64, rate, n int, amp float64) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(amp * math.Sin(2*math.Pi*freq*float64(i)/float64(rate)))
	}
	return out
}

func rms(x []int16) float64 {
	var sum float64
	for _, v := range x {
		sum += float64(v) * float64(v)
	}
	return math.Sqrt(sum / float64(len(x)))
}

func TestResamplerPassesVoiceBand(t *testing.T) {
	for _, freq := range []float64{300, 1000, 3000} {
		var up Upsampler
		var down Downsampler
		in := tone(freq, 8000, 1600, 10000)
		wide := make([]int16, 0, 3200)
		back := make([]int16, 0, 1600)
		buf16 := make([]int16, 320)
		buf8 := make([]int16, 160)
		for i := 0; i < len(in); i += 160 {
			w := up.Process(buf16, in[i:i+160])
			wide = append(wide, w...)
			back = append(back, down.Process(buf8, w)...)
		}
		// Skip the filter's start-up; compare levels.
		inR, wideR, backR := rms(in[400:]), rms(wide[800:]), rms(back[400:])
		if math.Abs(wideR/inR-1) > 0.05 || math.Abs(backR/inR-1) > 0.1 {
			t.Errorf("%v Hz: rms in %.0f, 16k %.0f, back %.0f", freq, inR, wideR, backR)
		}
	}
}

func TestDownsamplerRejectsAliases(t *testing.T) {
	// 6 kHz at 16 kHz would fold to 2 kHz at 8 kHz without a filter.
	var down Downsampler
	in := tone(6000, 16000, 3200, 10000)
	out := make([]int16, 0, 1600)
	buf := make([]int16, 160)
	for i := 0; i < len(in); i += 320 {
		out = append(out, down.Process(buf, in[i:i+320])...)
	}
	if r := rms(out[200:]); r > 10000*0.01 {
		t.Fatalf("alias at %.1f dB", 20*math.Log10(r/7071))
	}
}

func TestRxStatsDuplicatesAndEarlyReorder(t *testing.T) {
	var s rxStats
	// 1 arrives before 0; 3 twice; 5 lost; 7 three times.
	for i, seq := range []uint16{1, 0, 2, 3, 3, 4, 6, 7, 7, 7, 8} {
		s.update(9, seq, uint32(seq)*160, int64(i*160), 172)
	}
	if s.received != 8 || s.duplicates != 3 || s.expected() != 9 || s.lost() != 1 {
		t.Fatalf("received %d dup %d expected %d lost %d; want 8, 3, 9, 1", s.received, s.duplicates, s.expected(), s.lost())
	}
}

// A second source (another SSRC: a DTMF stream, a restarted sender) does
// not wipe the call's counts: 177 packets from two sources are 177 in,
// and the first source's loss stays counted (the make call CDR bug).
func TestRxStatsEverySource(t *testing.T) {
	var s rxStats
	for seq := uint16(100); seq < 270; seq++ {
		if seq == 150 || seq == 151 {
			continue // two lost
		}
		s.update(1, seq, uint32(seq)*160, int64(seq)*160, 172)
	}
	for seq := uint16(7000); seq < 7009; seq++ {
		s.update(2, seq, uint32(seq)*160, int64(seq)*160, 20)
	}
	if s.totalReceived() != 168+9 || s.totalLost() != 2 || s.totalExpected() != 170+9 {
		t.Fatalf("totals: received %d lost %d expected %d; want 177, 2, 179", s.totalReceived(), s.totalLost(), s.totalExpected())
	}
	if s.received != 9 || s.ssrc != 2 {
		t.Fatalf("RTCP reports the current source: %d received of SSRC %d", s.received, s.ssrc)
	}
}

func TestLatencySummary(t *testing.T) {
	var l Latency
	if s := l.Summary(); s.Count != 0 || s.P50 != 0 {
		t.Fatalf("empty: %+v", s)
	}
	for i := range 100 {
		l.Add(time.Duration(10+i%10) * time.Millisecond) // 10..19 ms, ten of each
	}
	l.Add(400 * time.Millisecond) // past the last bin: only the maximum says how far
	s := l.Summary()
	if s.Count != 101 || s.P50 != 15500*time.Microsecond || s.P95 != 19500*time.Microsecond || s.Max != 400*time.Millisecond {
		t.Fatalf("summary %+v", s)
	}
}

// TestPlayoutSpurt: audio written into an empty queue is timed from its
// arrival to the read that plays its first sample; audio queued behind
// other audio, or cleared, is not.
func TestPlayoutSpurt(t *testing.T) {
	p := NewPlayout()
	out := make([]int16, 160)
	at := time.Unix(1000, 0)
	p.Write(ramp(0, 100), at)
	p.Write(ramp(100, 300), at.Add(time.Second)) // behind: not a spurt of its own
	if _, s := p.Read(out); !s.Equal(at) {
		t.Fatalf("first read: spurt %v", s)
	}
	for range 2 {
		if _, s := p.Read(out); !s.IsZero() {
			t.Fatalf("later read: spurt %v", s)
		}
	}
	p.Write(ramp(0, 100), at.Add(2*time.Second))
	p.Clear()
	p.Write(ramp(0, 100), time.Time{})
	if _, s := p.Read(out); !s.IsZero() {
		t.Fatalf("a cleared spurt was timed: %v", s)
	}
}

// TestJitterFrameArrival: the frame that plays the start of a packet says
// when that packet arrived.
func TestJitterFrameArrival(t *testing.T) {
	jb := NewJitterBuffer()
	pcm := make([]int16, 240) // 30 ms packets
	out := make([]int16, FrameSamples)
	var got []int64
	for i := range 12 {
		jb.Push(1, uint32(i*240), pcm, int64(1000+i*240))
		for jb.Depth() >= jb.Target()+FrameSamples {
			jb.Pop(out)
			got = append(got, jb.FrameArrival)
		}
	}
	starts := 0
	for _, a := range got {
		if a >= 0 {
			if (a-1000)%240 != 0 {
				t.Fatalf("arrival %d is no packet's", a)
			}
			starts++
		}
	}
	if starts == 0 || starts < len(got)/2 {
		t.Fatalf("frame arrivals %v", got)
	}
}
