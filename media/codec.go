// Package media owns a call's audio toward the carrier: RTP and RTCP
// sessions on UDP ports from a configured range, G.711 ⇄ 16-bit PCM, the
// adaptive jitter buffer toward the application, the paced playout queue
// (with marks and barge-in) toward the carrier, RFC 4733 DTMF, and call
// quality statistics. It speaks PCM16 at 8 kHz to its listener and knows
// nothing of SIP or WebSockets.
//
// Per-packet paths (RTP in → jitter buffer → listener, and Play → playout →
// RTP out) reuse their buffers and do not allocate.
package media

import "github.com/zaf/g711"

// Codec is a G.711 variant on the wire. The payload type is normally the
// static 0 or 8, but an offer may map the codec to a dynamic one.
type Codec struct {
	Name        string // SDP encoding name: "PCMU" or "PCMA"
	PayloadType uint8
}

func (c Codec) alaw() bool { return c.Name == "PCMA" }

// The two codecs the edge speaks (RFC 3551 static payload types).
var (
	PCMU = Codec{Name: "PCMU", PayloadType: 0}
	PCMA = Codec{Name: "PCMA", PayloadType: 8}
)

// ClockRate of G.711 and of the PCM the package hands out.
const ClockRate = 8000

// FrameSamples is 20 ms at 8 kHz: the unit of audio toward the application.
const FrameSamples = 160

// Decode turns len(src) G.711 bytes into PCM in dst; dst must be as long.
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
