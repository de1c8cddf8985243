package media

import (
	"math"
	"testing"
	"time"

	"trunkgate/media/g722"
)

// toneLevel is the share of x's energy at freq (Goertzel), 0 to 1.
func toneLevel(x []int16, freq, rate float64) float64 {
	var s1, s2, total float64
	k := 2 * math.Cos(2*math.Pi*freq/rate)
	for _, v := range x {
		f := float64(v)
		s0 := f + k*s1 - s2
		s2, s1 = s1, s0
		total += f * f
	}
	if total == 0 {
		return 0
	}
	power := s1*s1 + s2*s2 - k*s1*s2
	return 2 * power / (float64(len(x)) * total)
}

// TestSessionWideband: on a G.722 call the listener gets 20 ms frames of
// 16 kHz audio, a 6 kHz tone (beyond G.711) intact; what the app plays at
// 16 kHz goes out as G.722 packets of 160 bytes, 160 clock ticks apart;
// and a clear counts what it dropped at 16 kHz.
func TestSessionWideband(t *testing.T) {
	pool := newTestPool(t)
	car := newCarrier(t)
	rec := newRecorder()
	s, err := pool.NewSession(Config{Codec: PCMU, Remote: car.addr(), Listener: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetCodec(G722, 20) // as an answer does, before Start
	if s.SampleRate() != 16000 {
		t.Fatalf("sample rate %d", s.SampleRate())
	}
	s.Start()

	enc := g722.NewEncoder()
	sixK := tone(6000, 16000, 16000, 8000)
	payload := make([]byte, 160)
	for i := 0; i < 25; i++ {
		enc.Encode(payload, sixK[320*i:320*(i+1)])
		car.send(t, s.LocalPort(), 9, payload, i == 0)
		car.ts += 160
	}
	waitFor(t, 2*time.Second, "the carrier's 6 kHz tone at the listener", func() bool {
		frames, _, _ := rec.snapshot()
		for _, f := range frames {
			if len(f) == 320 && rms(f) > 3000 && toneLevel(f, 6000, 16000) > 0.9 {
				return true
			}
		}
		return false
	})
	frames, _, _ := rec.snapshot()
	for _, f := range frames {
		if len(f) != 320 {
			t.Fatalf("a frame of %d samples, want 320 (20 ms at 16 kHz)", len(f))
		}
	}

	s.Play(tone(6000, 16000, 8000, 8000), time.Now()) // 0.5 s
	dec := g722.NewDecoder()
	pcm := make([]int16, 320)
	var last uint32
	heard := 0
	for n := 0; n < 40 && heard < 5; n++ {
		p, _, ok := car.recv(t, time.Second)
		if !ok {
			t.Fatal("no RTP from the session")
		}
		if p.PayloadType != 9 || len(p.Payload) != 160 {
			t.Fatalf("packet PT %d, %d bytes; want G.722, 160", p.PayloadType, len(p.Payload))
		}
		if last != 0 && p.Timestamp-last != 160 {
			t.Fatalf("timestamps %d then %d: want 160 ticks per 20 ms", last, p.Timestamp)
		}
		last = p.Timestamp
		dec.Decode(pcm, p.Payload)
		if rms(pcm) > 3000 && toneLevel(pcm, 6000, 16000) > 0.9 {
			heard++
		}
	}
	if heard < 5 {
		t.Fatal("the app's 6 kHz tone did not reach the carrier")
	}

	s.Clear()                                // what is left of the tone
	s.Play(make([]int16, 16000), time.Now()) // 1 s at 16 kHz
	if dropped, _ := s.Clear(); dropped < 900*time.Millisecond || dropped > time.Second {
		t.Fatalf("clear dropped %v of 1 s queued", dropped)
	}
}

// TestJitterBufferWideband: at two samples per clock tick, packets that
// come out of order are played in order, 320 samples a frame, and a lost
// one is concealed from the last frame.
func TestJitterBufferWideband(t *testing.T) {
	jb := newJitterBuffer(2)
	packet := func(v int16) []int16 {
		p := make([]int16, 320)
		for i := range p {
			p[i] = v
		}
		return p
	}
	for _, n := range []int{0, 2, 1} { // the second packet comes last
		jb.Push(1, uint32(160*n), packet(int16(1000*(n+1))), int64(160*n))
	}
	frame := make([]int16, 320)
	for want := int16(1000); want <= 3000; want += 1000 {
		if !jb.Pop(frame) {
			t.Fatal("nothing to play")
		}
		if frame[0] != want || frame[319] != want {
			t.Fatalf("frame starts %d ends %d, want %d", frame[0], frame[319], want)
		}
	}
	jb.Pop(frame) // packet 4 lost
	if frame[0] != 1500 || frame[319] != 1500 {
		t.Fatalf("concealed frame %d…%d, want the last at half gain (1500)", frame[0], frame[319])
	}
}
