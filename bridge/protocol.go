// Package bridge owns the WebSocket side of a call: the Twilio Media
// Streams-shaped JSON protocol (and the binary L16 variant) that AI
// applications speak, dialling the application for inbound calls with a
// signed request, and the built-in demo echo application. It turns 8 kHz
// PCM from media into frames and frames back into PCM, and knows nothing
// of SIP or SQL.
package bridge

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	"trunkgate/internal/signature"
	"trunkgate/media"
)

// Stream formats (DESIGN: the WebSocket media protocol).
const (
	FormatTwilio = "twilio" // JSON text frames, base64 μ-law, 8 kHz
	FormatL16    = "l16"    // binary 16-bit little-endian PCM frames, JSON events
)

// Format is what a stream carries.
type Format struct {
	Kind       string // FormatTwilio or FormatL16
	SampleRate int    // 8000, or 16000 for L16
}

// Start is what the application learns about the call in the start
// message.
type Start struct {
	CallSid    string
	AccountSid string
	StreamSid  string
	From       string
	To         string
	Direction  string
	KeyID      string
	TrunkID    string
	Params     map[string]string
	// SIPTransport ("udp", "tcp", "tls") and MediaEncryption ("srtp",
	// "none") say what protected the carrier leg; Begin sets them from
	// its Leg at answer.
	SIPTransport, MediaEncryption string
}

// NewSid makes a Twilio-shaped id: two-letter prefix and 32 hex digits.
func NewSid(prefix string) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("bridge: crypto/rand failed: " + err.Error())
	}
	return prefix + hex.EncodeToString(b[:])
}

// AccountSid derives the stable "AC…" id of a key.
func AccountSid(keyID string) string {
	sum := sha256.Sum256([]byte("trunkgate-account:" + keyID))
	return "AC" + hex.EncodeToString(sum[:16])
}

// Sign computes X-Trunkgate-Signature: hex HMAC-SHA256, keyed with the
// key's signing secret, over the URL, a newline and X-Trunkgate-Timestamp.
func Sign(secret, url, timestamp string) string {
	return signature.Sign(secret, []byte(url), []byte(timestamp))
}

// Verify checks a signature in constant time (the application's side).
func Verify(secret, url, timestamp, sig string) bool {
	return signature.Verify(secret, sig, []byte(url), []byte(timestamp))
}

// Wideband reports whether the application takes 16 kHz audio, so that a
// G.722 call's audio reaches it whole.
func (f Format) Wideband() bool { return f.Kind == FormatL16 && f.SampleRate == 16000 }

func (f Format) mediaFormat() map[string]any {
	if f.Kind == FormatL16 {
		// Little-endian, unlike RTP's L16 (RFC 3551): said so, because
		// audio/l16 alone would mean network byte order.
		return map[string]any{"encoding": "audio/l16", "sampleRate": f.SampleRate, "channels": 1, "byteOrder": "little-endian"}
	}
	return map[string]any{"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
}

// The messages below are rendered by the stream writer, which owns the
// sequence counter. Control messages are rare and use encoding/json; the
// media message is hand-rendered into a reused buffer: it is the
// per-packet path.

func seqString(n int64) string { return strconv.FormatInt(n, 10) }

// renderConnected is Twilio's first message: it carries no sequence
// number; start is "1".
func renderConnected() []byte {
	return []byte(`{"event":"connected","protocol":"Call","version":"1.0.0"}`)
}

// renderStart is start; a stream resumed on a new socket (an extension)
// says so with "resumed":true.
func renderStart(seq int64, s *Start, f Format, resumed bool) []byte {
	params := map[string]string{}
	for k, v := range s.Params {
		params[k] = v
	}
	// The call's identity wins over same-named trunk parameters.
	params["from"], params["to"], params["direction"] = s.From, s.To, s.Direction
	params["keyId"], params["trunkId"] = s.KeyID, s.TrunkID
	if s.SIPTransport != "" {
		params["sipTransport"] = s.SIPTransport
	}
	if s.MediaEncryption != "" {
		params["mediaEncryption"] = s.MediaEncryption
	}
	start := map[string]any{
		"accountSid": s.AccountSid, "streamSid": s.StreamSid, "callSid": s.CallSid,
		"tracks": []string{"inbound"}, "customParameters": params, "mediaFormat": f.mediaFormat(),
	}
	if resumed {
		start["resumed"] = true
	}
	b, _ := json.Marshal(map[string]any{"event": "start", "sequenceNumber": seqString(seq), "streamSid": s.StreamSid, "start": start})
	return b
}

// renderStop adds reason and sipCode to Twilio's stop: fields Twilio
// clients ignore, which tell every application why the call ended.
func renderStop(seq int64, s *Start, end End) []byte {
	stop := map[string]any{"accountSid": s.AccountSid, "callSid": s.CallSid}
	if end.Reason != "" {
		stop["reason"] = end.Reason
	}
	if end.SIPCode != 0 {
		stop["sipCode"] = end.SIPCode
	}
	b, _ := json.Marshal(map[string]any{"event": "stop", "sequenceNumber": seqString(seq), "streamSid": s.StreamSid,
		"stop": stop})
	return b
}

// renderProgress is the opt-in call progress of outbound calls (DESIGN:
// progress=1): "ringing" on 180, "early_media" on 183.
func renderProgress(seq int64, s *Start, status string, sipCode int) []byte {
	b, _ := json.Marshal(map[string]any{"event": "progress", "sequenceNumber": seqString(seq), "streamSid": s.StreamSid,
		"progress": map[string]any{"status": status, "sipCode": sipCode}})
	return b
}

// renderMark echoes a mark; status ("played" or "cleared") only for a
// stream that opted in to the extensions.
func renderMark(seq int64, s *Start, name, status string) []byte {
	mark := map[string]any{"name": name}
	if status != "" {
		mark["status"] = status
	}
	b, _ := json.Marshal(map[string]any{"event": "mark", "sequenceNumber": seqString(seq), "streamSid": s.StreamSid,
		"mark": mark})
	return b
}

func markStatus(cleared bool) string {
	if cleared {
		return "cleared"
	}
	return "played"
}

// renderStats is the periodic stats event (extension): the carrier leg's
// quality and the edge's own delay each way, so far in the call.
func renderStats(seq int64, s *Start, st media.Stats, toApp media.LatencySummary) []byte {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	lat := func(l media.LatencySummary) map[string]any {
		return map[string]any{"samples": l.Count, "p50Ms": ms(l.P50), "p95Ms": ms(l.P95), "maxMs": ms(l.Max)}
	}
	b, _ := json.Marshal(map[string]any{"event": "stats", "sequenceNumber": seqString(seq), "streamSid": s.StreamSid,
		"stats": map[string]any{"packetsIn": st.PacketsIn, "packetsLost": st.PacketsLost, "lossPercent": st.LossPercent(),
			"jitterMs": st.JitterMS, "rttMs": st.RTTMS, "edgeToApp": lat(toApp), "edgeToCarrier": lat(st.ToCarrier)}})
	return b
}

// renderTransfer answers an application's transfer: accepted, succeeded
// or failed, with the SIP code when there is one.
func renderTransfer(seq int64, s *Start, status string, sipCode int) []byte {
	t := map[string]any{"status": status}
	if sipCode != 0 {
		t["sipCode"] = sipCode
	}
	b, _ := json.Marshal(map[string]any{"event": "transfer", "sequenceNumber": seqString(seq), "streamSid": s.StreamSid,
		"transfer": t})
	return b
}

// renderHold is hold or unhold (extension).
func renderHold(seq int64, s *Start, held bool) []byte {
	event := "unhold"
	if held {
		event = "hold"
	}
	b, _ := json.Marshal(map[string]any{"event": event, "sequenceNumber": seqString(seq), "streamSid": s.StreamSid})
	return b
}

// renderCleared answers a clear (extension): how much queued audio never
// reached the carrier, and the media timestamp at which playout stopped.
func renderCleared(seq int64, s *Start, droppedMs, playedUntil int64) []byte {
	b, _ := json.Marshal(map[string]any{"event": "cleared", "sequenceNumber": seqString(seq), "streamSid": s.StreamSid,
		"cleared": map[string]any{"droppedMs": droppedMs, "playedUntil": seqString(playedUntil)}})
	return b
}

func renderDTMF(seq int64, s *Start, digit byte) []byte {
	b, _ := json.Marshal(map[string]any{"event": "dtmf", "sequenceNumber": seqString(seq), "streamSid": s.StreamSid,
		"dtmf": map[string]any{"track": "inbound_track", "digit": string(digit)}})
	return b
}

// AppendMedia renders a media message for one frame of μ-law audio into
// dst and returns it. It does not allocate when dst has room (about 350
// bytes for 20 ms).
func AppendMedia(dst []byte, seq, chunk, timestampMS int64, streamSid string, ulaw []byte) []byte {
	dst = append(dst, `{"event":"media","sequenceNumber":"`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `","media":{"track":"inbound","chunk":"`...)
	dst = strconv.AppendInt(dst, chunk, 10)
	dst = append(dst, `","timestamp":"`...)
	dst = strconv.AppendInt(dst, timestampMS, 10)
	dst = append(dst, `","payload":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, ulaw)
	dst = append(dst, `"},"streamSid":"`...)
	dst = append(dst, streamSid...)
	dst = append(dst, `"}`...)
	return dst
}
