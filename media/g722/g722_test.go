package g722

import (
	"encoding/binary"
	"math"
	"os"
	"testing"
)

// The reference files were made by FFmpeg 5.1's G.722 (an implementation
// of its own) from testdata/chirp.s16: 2 s of a 200 Hz to 7.4 kHz chirp
// over 1 kHz and 6 kHz tones and noise, with a clipped burst and a
// silence (see testdata/README).
func readPCM(t testing.TB, name string) []int16 {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	pcm := make([]int16, len(b)/2)
	for i := range pcm {
		pcm[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
	}
	return pcm
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEncoderMatchesReference: the bitstream is the reference's, byte for
// byte, fed in one piece or in 20 ms packets.
func TestEncoderMatchesReference(t *testing.T) {
	pcm, want := readPCM(t, "chirp.s16"), readFile(t, "chirp.g722")
	for _, chunk := range []int{len(pcm), 320} {
		e := NewEncoder()
		got := make([]byte, len(pcm)/2)
		for off := 0; off < len(pcm); off += chunk {
			end := min(off+chunk, len(pcm))
			e.Encode(got[off/2:], pcm[off:end])
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("chunk %d: byte %d is %#02x, reference %#02x", chunk, i, got[i], want[i])
			}
		}
	}
}

// TestDecoderMatchesReference: the decoded PCM is the reference's,
// sample for sample.
func TestDecoderMatchesReference(t *testing.T) {
	code, want := readFile(t, "chirp.g722"), readPCM(t, "chirp.dec.s16")
	d := NewDecoder()
	got := make([]int16, 2*len(code))
	for off := 0; off < len(code); off += 160 {
		d.Decode(got[2*off:], code[off:min(off+160, len(code))])
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sample %d is %d, reference %d", i, got[i], want[i])
		}
	}
}

// TestWidebandRoundTrip: tones across the band, 7 kHz included (what
// G.711 cannot carry), come back through encoder and decoder at over
// 20 dB SNR, after the filters' delay.
func TestWidebandRoundTrip(t *testing.T) {
	for _, freq := range []float64{300, 1000, 3400, 5000, 7000} {
		pcm := make([]int16, SampleRate/2)
		for i := range pcm {
			pcm[i] = int16(8000 * math.Sin(2*math.Pi*freq*float64(i)/SampleRate))
		}
		code := make([]byte, len(pcm)/2)
		NewEncoder().Encode(code, pcm)
		out := make([]int16, len(pcm))
		NewDecoder().Decode(out, code)
		best := math.Inf(-1)
		for delay := 0; delay < 64; delay++ {
			var sig, noise float64
			for i := 2000; i < len(pcm); i++ {
				s, o := float64(pcm[i-delay]), float64(out[i])
				sig += s * s
				noise += (s - o) * (s - o)
			}
			best = max(best, 10*math.Log10(sig/noise))
		}
		t.Logf("%5.0f Hz: SNR %.1f dB", freq, best)
		if best < 20 {
			t.Errorf("%.0f Hz came back at %.1f dB SNR", freq, best)
		}
	}
}

func BenchmarkEncode20ms(b *testing.B) {
	pcm := readPCM(b, "chirp.s16")[:320]
	out := make([]byte, 160)
	e := NewEncoder()
	b.ReportAllocs()
	for b.Loop() {
		e.Encode(out, pcm)
	}
}

func BenchmarkDecode20ms(b *testing.B) {
	code := readFile(b, "chirp.g722")[:160]
	out := make([]int16, 320)
	d := NewDecoder()
	b.ReportAllocs()
	for b.Loop() {
		d.Decode(out, code)
	}
}

// FuzzDecode: any bytes decode to two samples each, without panicking.
func FuzzDecode(f *testing.F) {
	f.Add(readFile(f, "chirp.g722")[:160])
	f.Add([]byte{0, 0xff, 0x3f, 0xc0})
	f.Fuzz(func(t *testing.T, code []byte) {
		out := make([]int16, 2*len(code))
		if n := NewDecoder().Decode(out, code); n != 2*len(code) {
			t.Fatalf("%d samples from %d bytes", n, len(code))
		}
	})
}

// FuzzEncode: any PCM (as little-endian bytes) encodes, and decodes again,
// without panicking.
func FuzzEncode(f *testing.F) {
	f.Add(readFile(f, "chirp.s16")[:640])
	f.Fuzz(func(t *testing.T, raw []byte) {
		pcm := make([]int16, len(raw)/2)
		for i := range pcm {
			pcm[i] = int16(binary.LittleEndian.Uint16(raw[2*i:]))
		}
		code := make([]byte, len(pcm)/2)
		NewEncoder().Encode(code, pcm)
		NewDecoder().Decode(make([]int16, 2*len(code)), code)
	})
}
