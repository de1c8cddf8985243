// Package media owns a call's audio toward the carrier: RTP and RTCP
// sessions on UDP ports from a configured range, G.711 and G.722 ⇄ 16-bit PCM, the
// adaptive jitter buffer toward the application, the paced playout queue
// (with marks and barge-in) toward the carrier, RFC 4733 DTMF, and call
// quality statistics. It speaks PCM16 to its listener — at 8 kHz, or at
// 16 kHz on a G.722 call — and knows nothing of SIP or WebSockets.
//
// Per-packet paths (RTP in → jitter buffer → listener, and Play → playout →
// RTP out) reuse their buffers and do not allocate.
package media

import (
	"github.com/zaf/g711"

	"trunkgate/media/g722"
)

// Codec is a codec on the wire. The payload type is normally the static
// one, but an offer may map the codec to a dynamic one.
type Codec struct {
	Name        string // SDP encoding name: "PCMU", "PCMA" or "G722"
	PayloadType uint8
}

func (c Codec) alaw() bool { return c.Name == "PCMA" }

// The codecs the edge speaks (RFC 3551 static payload types).
var (
	PCMU = Codec{Name: "PCMU", PayloadType: 0}
	PCMA = Codec{Name: "PCMA", PayloadType: 8}
	// G722 is wideband: 16 kHz audio at 64 kbit/s, on an 8 kHz RTP
	// clock (RFC 3551 §4.5.2).
	G722 = Codec{Name: "G722", PayloadType: 9}
)

// Wideband reports whether the codec carries 16 kHz audio (G.722).
func (c Codec) Wideband() bool { return c.Name == G722.Name }

// SampleRate is the rate of the codec's PCM: 16000 for G.722, else 8000.
func (c Codec) SampleRate() int {
	if c.Wideband() {
		return g722.SampleRate
	}
	return ClockRate
}

// perTick is the PCM samples per tick of the RTP clock: 2 for G.722.
func (c Codec) perTick() int { return c.SampleRate() / ClockRate }

// ClockRate of G.711 and of the PCM the package hands out.
const ClockRate = 8000

// FrameSamples is 20 ms at 8 kHz: the unit of audio toward the application.
const FrameSamples = 160

// Decode turns len(src) G.711 bytes into PCM in dst; dst must be as long.
// G.722 keeps state from packet to packet: a session's transcoder decodes
// it.
func (c Codec) Decode(dst []int16, src []byte) {
	dst = dst[:len(src)]
	if c.alaw() {
		for i, b := range src {
			dst[i] = g711.DecodeAlawFrame(b)
		}
		return
	}
	for i, b := range src {
		dst[i] = g711.DecodeUlawFrame(b)
	}
}

// Encode turns PCM into len(src) G.711 bytes in dst.
func (c Codec) Encode(dst []byte, src []int16) {
	dst = dst[:len(src)]
	if c.alaw() {
		for i, s := range src {
			dst[i] = g711.EncodeAlawFrame(s)
		}
		return
	}
	for i, s := range src {
		dst[i] = g711.EncodeUlawFrame(s)
	}
}

// DecodeUlaw and EncodeUlaw are the μ-law conversions the application
// protocol uses whatever the carrier's codec.
func DecodeUlaw(dst []int16, src []byte) { PCMU.Decode(dst, src) }

// EncodeUlaw encodes PCM to μ-law.
func EncodeUlaw(dst []byte, src []int16) { PCMU.Encode(dst, src) }

// transcoder is one call's codec with the state it keeps in each
// direction: none for G.711, the ADPCM predictors for G.722.
type transcoder struct {
	codec Codec
	enc   *g722.Encoder
	dec   *g722.Decoder
}

func newTranscoder(c Codec) transcoder {
	t := transcoder{codec: c}
	if c.Wideband() {
		t.enc, t.dec = g722.NewEncoder(), g722.NewDecoder()
	}
	return t
}

// decode turns a payload into PCM in dst and returns the samples: one per
// byte of G.711, two per byte of G.722. dst must hold them.
func (t *transcoder) decode(dst []int16, payload []byte) int {
	if t.dec != nil {
		return t.dec.Decode(dst, payload)
	}
	t.codec.Decode(dst, payload)
	return len(payload)
}

// encode turns pcm into a payload in dst and returns its bytes.
func (t *transcoder) encode(dst []byte, pcm []int16) int {
	if t.enc != nil {
		return t.enc.Encode(dst, pcm)
	}
	t.codec.Encode(dst, pcm)
	return len(pcm)
}
