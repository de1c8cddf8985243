package media

import "math"

// 2:1 resampling between 8 and 16 kHz for applications that want wideband
// L16. Both directions use one linear-phase low-pass FIR (windowed sinc,
// cutoff at 4 kHz, Blackman window) — a proper anti-imaging filter when
// going up and anti-aliasing filter when going down, not sample doubling
// or dropping. The ratio is fixed, so a 63-tap filter computed at start-up
// is all that is needed; a general resampling library (libsoxr via cgo)
// would add a C dependency for no gain here.

const firTaps = 63

// lowpass is the prototype filter at 16 kHz, unity gain at DC.
var lowpass = func() [firTaps]float32 {
	var h [firTaps]float32
	const m = (firTaps - 1) / 2
	var sum float64
	coef := make([]float64, firTaps)
	for n := range firTaps {
		x := float64(n - m)
		sinc := 0.5 // sinc at 0 for cutoff fs/4: 2*fc = 0.5
		if x != 0 {
			sinc = math.Sin(math.Pi*0.5*x) / (math.Pi * x)
		}
		w := 0.42 - 0.5*math.Cos(2*math.Pi*float64(n)/(firTaps-1)) + 0.08*math.Cos(4*math.Pi*float64(n)/(firTaps-1))
		coef[n] = sinc * w
		sum += coef[n]
	}
	for n := range firTaps {
		h[n] = float32(coef[n] / sum)
	}
	return h
}()

// Upsampler doubles the rate of a PCM stream (8 → 16 kHz). It keeps the
// filter's history across frames, so feed one stream through one Upsampler.
type Upsampler struct {
	hist [firTaps/2 + 1]float32 // newest input last
}

// Process writes 2*len(in) samples to out and returns them.
func (u *Upsampler) Process(out []int16, in []int16) []int16 {
	out = out[:2*len(in)]
	const hl = len(u.hist)
	for i, s := range in {
		copy(u.hist[:], u.hist[1:])
		u.hist[hl-1] = float32(s)
		// Output 2i+p takes the taps of phase p: y = 2·Σ h[2j+p]·x[i-j].
		for p := range 2 {
			var acc float32
			for j := 0; 2*j+p < firTaps; j++ {
				acc += lowpass[2*j+p] * u.hist[hl-1-j]
			}
			out[2*i+p] = clamp16(2 * acc)
		}
	}
	return out
}

// Downsampler halves the rate of a PCM stream (16 → 8 kHz), filtering out
// what lies above 4 kHz first.
type Downsampler struct {
	hist [firTaps]float32 // newest input last
}

// Process writes len(in)/2 samples to out and returns them; len(in) must
// be even.
func (d *Downsampler) Process(out []int16, in []int16) []int16 {
	out = out[:len(in)/2]
	for i := range out {
		copy(d.hist[:], d.hist[2:])
		d.hist[firTaps-2] = float32(in[2*i])
		d.hist[firTaps-1] = float32(in[2*i+1])
		var acc float32
		for k := range firTaps {
			acc += lowpass[k] * d.hist[firTaps-1-k]
		}
		out[i] = clamp16(acc)
	}
	return out
}

func clamp16(v float32) int16 {
	switch {
	case v > math.MaxInt16:
		return math.MaxInt16
	case v < math.MinInt16:
		return math.MinInt16
	}
	return int16(math.Round(float64(v)))
}
