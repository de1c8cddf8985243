// Package g722 is the ITU-T G.722 wideband codec at 64 kbit/s (mode 1):
// sub-band ADPCM of 16 kHz 16-bit PCM into one byte per two samples (six
// bits of low band, two of high band), and back. It is written from the
// Recommendation's block diagrams (the block names in the comments are
// its names) and checked bit for bit against an independent
// implementation (testdata). It knows nothing of RTP: on the wire G.722
// runs at 64 kbit/s, 160 bytes per 20 ms, under an 8000 Hz RTP clock
// (RFC 3551 §4.5.2).
//
// Encoder and Decoder keep each direction's state; neither allocates.
package g722

// SampleRate is the PCM rate of G.722.
const SampleRate = 16000

// band is the adaptive state of one sub-band (the Recommendation's
// variables: s, sp, sz, r, a, ap, p, d, b, nb, det; its sign bits sg are
// worked out where they are used, and b is updated in place of bp).
type band struct {
	s, sp, sz int
	r         [3]int
	a, ap     [3]int
	p         [3]int
	d         [7]int
	b         [7]int
	nb, det   int
}

// qmf is the quadrature mirror filters' state: the last 24 samples, kept
// twice over in a ring (x[i] = x[i+24]) so that the newest 24 are always
// one contiguous window and nothing is shifted per sample.
type qmf struct {
	x   [48]int
	pos int // the window is x[pos : pos+24], oldest first
}

// The Recommendation's tables.
var (
	// q6 are the low band quantizer's decision levels.
	q6 = [32]int{0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714,
		786, 858, 940, 1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0}
	iln = [32]int{0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19,
		18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 0}
	ilp = [32]int{0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47,
		46, 45, 44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 0}
	wl   = [8]int{-60, -30, 58, 172, 334, 538, 1198, 3042}
	rl42 = [16]int{0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0}
	ilb  = [32]int{2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
		2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008}
	qm4 = [16]int{0, -20456, -12896, -8968, -6288, -4240, -2584, -1200,
		20456, 12896, 8968, 6288, 4240, 2584, 1200, 0}
	// qm6 reconstructs the low band from all six bits (64 kbit/s).
	qm6 = [64]int{
		-136, -136, -136, -136, -24808, -21904, -19008, -16704,
		-14984, -13512, -12280, -11192, -10232, -9360, -8576, -7856,
		-7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576,
		-3168, -2776, -2400, -2032, -1688, -1360, -1040, -728,
		24808, 21904, 19008, 16704, 14984, 13512, 12280, 11192,
		10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456,
		4944, 4464, 4008, 3576, 3168, 2776, 2400, 2032,
		1688, 1360, 1040, 728, 432, 136, -432, -136}
	qm2  = [4]int{-7408, -1616, 7408, 1616}
	ihn  = [3]int{0, 1, 0}
	ihp  = [3]int{0, 3, 2}
	wh   = [3]int{0, -214, 798}
	rh2  = [4]int{2, 1, 2, 1}
	qmfC = [12]int{3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11}
)

func saturate(v int) int {
	if v > 32767 {
		return 32767
	}
	if v < -32768 {
		return -32768
	}
	return v
}

func clamp(v, lo, hi int) int { return min(max(v, lo), hi) }

// scale is blocks 3L/3H SCALEL and SCALEH: the quantizer's step from its
// logarithmic scale factor nb.
func scale(nb, shift int) int {
	wd1 := (nb >> 6) & 31
	wd2 := shift - (nb >> 11)
	if wd2 < 0 {
		return (ilb[wd1] << -wd2) << 2
	}
	return (ilb[wd1] >> wd2) << 2
}

// lowScale is block 3L LOGSCL then SCALEL for a 4-bit low band code.
func (b *band) lowScale(il4 int) {
	b.nb = clamp((b.nb*127)>>7+wl[rl42[il4]], 0, 18432)
	b.det = scale(b.nb, 8)
}

// highScale is block 3H LOGSCH then SCALEH.
func (b *band) highScale(ih int) {
	b.nb = clamp((b.nb*127)>>7+wh[rh2[ih]], 0, 22528)
	b.det = scale(b.nb, 10)
}

// adapt is block 4: the reconstructed signal, the pole and zero
// predictors' adaptation and the next prediction, from the quantized
// difference d.
func (b *band) adapt(d int) {
	// RECONS, PARREC
	b.d[0] = d
	b.r[0] = saturate(b.s + d)
	b.p[0] = saturate(b.sz + d)

	// UPPOL2
	sg0, sg1, sg2 := b.p[0]>>15, b.p[1]>>15, b.p[2]>>15
	wd1 := saturate(b.a[1] << 2)
	wd2 := wd1
	if sg0 == sg1 {
		wd2 = -wd1
	}
	wd2 = min(wd2, 32767)
	wd3 := -128
	if sg0 == sg2 {
		wd3 = 128
	}
	wd3 += wd2 >> 7
	wd3 += (b.a[2] * 32512) >> 15
	b.ap[2] = clamp(wd3, -12288, 12288)

	// UPPOL1
	wd1 = -192
	if sg0 == sg1 {
		wd1 = 192
	}
	b.ap[1] = saturate(wd1 + (b.a[1]*32640)>>15)
	limit := saturate(15360 - b.ap[2])
	b.ap[1] = clamp(b.ap[1], -limit, limit)

	// UPZERO
	step := 128
	if d == 0 {
		step = 0
	}
	sgd := d >> 15
	for i := 1; i < 7; i++ {
		wd := -step
		if b.d[i]>>15 == sgd {
			wd = step
		}
		b.b[i] = saturate(wd + (b.b[i]*32640)>>15) // UPZERO into bp, DELAYA into b
	}

	// DELAYA
	for i := 6; i > 0; i-- {
		b.d[i] = b.d[i-1]
	}
	for i := 2; i > 0; i-- {
		b.r[i] = b.r[i-1]
		b.p[i] = b.p[i-1]
		b.a[i] = b.ap[i]
	}

	// FILTEP
	sp := (b.a[1] * saturate(b.r[1]+b.r[1])) >> 15
	sp += (b.a[2] * saturate(b.r[2]+b.r[2])) >> 15
	b.sp = saturate(sp)

	// FILTEZ
	sz := 0
	for i := 6; i > 0; i-- {
		sz += (b.b[i] * saturate(b.d[i]+b.d[i])) >> 15
	}
	b.sz = saturate(sz)

	// PREDIC
	b.s = saturate(b.sp + b.sz)
}

// push shifts two samples into the filter's delay line and returns the
// two polyphase sums (even taps of the older sample of each pair, odd
// taps of the newer).
func (q *qmf) push(a, b int) (older, newer int) {
	// The two oldest leave the window; a and b enter it as its newest.
	p := q.pos
	q.x[p], q.x[p+24], q.x[p+1], q.x[p+25] = a, a, b, b
	p = (p + 2) % 24
	q.pos = p
	w := (*[24]int)(q.x[p : p+24])
	for i := range 12 {
		older += w[2*i] * qmfC[i]
		newer += w[2*i+1] * qmfC[11-i]
	}
	return older, newer
}

// state is what an encoder and a decoder each keep: both sub-bands and
// the filter.
type state struct {
	low, high band
	filter    qmf
}

// Reset returns the state to the Recommendation's initial one (a new
// stream).
func (s *state) Reset() {
	*s = state{}
	s.low.det, s.high.det = 32, 8
}

// Encoder turns 16 kHz PCM into G.722.
type Encoder struct{ state }

// NewEncoder is an encoder in the Recommendation's reset state.
func NewEncoder() *Encoder {
	e := &Encoder{}
	e.Reset()
	return e
}

// Encode codes pcm into dst, one byte per two samples, and returns the
// bytes written: len(pcm)/2, which dst must hold. An odd last sample is
// ignored.
func (e *Encoder) Encode(dst []byte, pcm []int16) int {
	n := len(pcm) / 2
	dst = dst[:n]
	for j := range n {
		// Transmit QMF: split the pair into one low and one high band sample.
		older, newer := e.filter.push(int(pcm[2*j]), int(pcm[2*j+1]))
		xlow := (newer + older) >> 14
		xhigh := (newer - older) >> 14

		// 1L SUBTRA, QUANTL
		el := saturate(xlow - e.low.s)
		wd := el
		if el < 0 {
			wd = -(el + 1)
		}
		// The first level (1 to 29) above wd, 30 if none; the levels
		// rise, so a binary search finds it.
		lo, hi := 1, 30
		for lo < hi {
			mid := (lo + hi) / 2
			if wd < (q6[mid]*e.low.det)>>12 {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		i := lo
		ilow := ilp[i]
		if el < 0 {
			ilow = iln[i]
		}
		// 2L INVQAL, 3L, 4L
		il4 := ilow >> 2
		dlow := (e.low.det * qm4[il4]) >> 15
		e.low.lowScale(il4)
		e.low.adapt(dlow)

		// 1H SUBTRA, QUANTH
		eh := saturate(xhigh - e.high.s)
		wd = eh
		if eh < 0 {
			wd = -(eh + 1)
		}
		mih := 1
		if wd >= (564*e.high.det)>>12 {
			mih = 2
		}
		ihigh := ihp[mih]
		if eh < 0 {
			ihigh = ihn[mih]
		}
		// 2H INVQAH, 3H, 4H
		dhigh := (e.high.det * qm2[ihigh]) >> 15
		e.high.highScale(ihigh)
		e.high.adapt(dhigh)

		dst[j] = byte(ihigh<<6 | ilow)
	}
	return n
}

// Decoder turns G.722 into 16 kHz PCM.
type Decoder struct{ state }

// NewDecoder is a decoder in the Recommendation's reset state.
func NewDecoder() *Decoder {
	d := &Decoder{}
	d.Reset()
	return d
}

// Decode decodes src into dst, two samples per byte, and returns the
// samples written: 2·len(src), which dst must hold.
func (d *Decoder) Decode(dst []int16, src []byte) int {
	dst = dst[:2*len(src)]
	for j, code := range src {
		ilow, ihigh := int(code&0x3F), int(code>>6)

		// 5L INVQBL, RECONS, 6L LIMIT: the output uses all six bits.
		rlow := clamp(d.low.s+(d.low.det*qm6[ilow])>>15, -16384, 16383)
		// 2L INVQAL, 3L, 4L: the predictor sees only four.
		il4 := ilow >> 2
		dlow := (d.low.det * qm4[il4]) >> 15
		d.low.lowScale(il4)
		d.low.adapt(dlow)

		// 2H INVQAH, 5H RECONS, 6H LIMIT, 3H, 4H
		dhigh := (d.high.det * qm2[ihigh]) >> 15
		rhigh := clamp(dhigh+d.high.s, -16384, 16383)
		d.high.highScale(ihigh)
		d.high.adapt(dhigh)

		// Receive QMF: two output samples from the two bands.
		older, newer := d.filter.push(rlow+rhigh, rlow-rhigh)
		dst[2*j] = int16(saturate(newer >> 11))
		dst[2*j+1] = int16(saturate(older >> 11))
	}
	return 2 * len(src)
}
