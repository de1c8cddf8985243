package e2e

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"trunkgate/keys"
)

// l16Frames counts an L16 app's binary frames of 20 ms at rate, and those
// that carry freq (loud, most of their energy there).
func l16Frames(conn *AppConn, freq float64, rate int) (tone, total int) {
	for _, m := range conn.All() {
		if m.Event != "binary" {
			continue
		}
		total++
		x := make([]float64, len(m.Binary)/2)
		for i := range x {
			x[i] = float64(int16(binary.LittleEndian.Uint16(m.Binary[2*i:])))
		}
		if len(x) == rate/50 && rms(x) > 1000 && toneShare(x, freq, float64(rate)) > 0.8 {
			tone++
		}
	}
	return tone, total
}

// l16Tone is seconds of a sine at freq as 16-bit little-endian PCM at rate.
func l16Tone(freq float64, rate int, seconds float64) []byte {
	n := int(float64(rate) * seconds)
	b := make([]byte, 2*n)
	for i := range n {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(int16(10000*math.Sin(2*math.Pi*freq*float64(i)/float64(rate)))))
	}
	return b
}

// TestG722WithBaresip: baresip (spandsp's G.722) calls offering G.722
// only; a trunk whose app takes 16 kHz L16 answers G.722, and a 6 kHz tone
// — which G.711 cannot carry — goes from the caller to the app, and a
// 5 kHz tone from the app to the caller, both intact. The start message
// says 16 kHz little-endian; the CDR says G722.
func TestG722WithBaresip(t *testing.T) {
	e, app, k := setup(t, keys.Limits{}, "+15550722", map[string]any{"format": "l16", "sample_rate": 16000})

	phone := Baresip{G722: true, Seconds: 4, Freq: 6000}.Start(t, fmt.Sprintf("sip:+15550722@127.0.0.1:%d", e.SIPPort))
	conn := app.Next(t)
	start := conn.Expect(t, "start")
	if f := start.Start.MediaFormat; f.Encoding != "audio/l16" || f.SampleRate != 16000 || f.ByteOrder != "little-endian" {
		t.Fatalf("start.mediaFormat %+v: want audio/l16, 16000, little-endian", f)
	}
	tone := l16Tone(5000, 16000, 3)
	for off := 0; off < len(tone); off += 640 {
		conn.SendRaw(t, websocket.MessageBinary, tone[off:off+640])
	}
	waitFor(t, 10*time.Second, "the caller's 6 kHz tone at the app", func() bool { n, _ := l16Frames(conn, 6000, 16000); return n >= 100 })
	run := phone.Wait(t)
	if !strings.Contains(run.Log, "G722") || !strings.Contains(run.Log, "Call established") {
		t.Fatalf("baresip did not set up a G.722 call:\n%s", run.Tail())
	}
	if run.HeardRate != 16000 {
		t.Fatalf("baresip recorded at %d Hz, want 16000 (G.722)", run.HeardRate)
	}
	if heard := toneSecondsAt(run.Heard, 5000, 16000); heard < 2 {
		t.Fatalf("baresip heard %.2f s of the app's 5 kHz tone, want 2 s or more:\n%s", heard, run.Tail())
	}
	n, total := l16Frames(conn, 6000, 16000)
	t.Logf("the app got %d frames of 640 bytes, %d with the caller's 6 kHz tone; baresip heard %.2f s of the app's 5 kHz",
		total, n, toneSecondsAt(run.Heard, 5000, 16000))
	if c := e.WaitCDRs(k.Key.ID, 1)[0]; c.Codec != "G722" || c.FinalCode != 200 {
		t.Fatalf("CDR codec %q final %d, want G722, 200", c.Codec, c.FinalCode)
	}
}

// TestOutboundG722: an app that places its call with a 16 kHz L16 stream
// makes the edge offer G.722 first; the carrier answers G.722 and echoes
// the RTP, and the app's 5 kHz tone comes back to it through the edge's
// G.722 encoder and decoder.
func TestOutboundG722(t *testing.T) {
	e := StartEdge(t)
	gw := StartGateway(t, Gateway{Echo: true, AnswerPT: 9})
	k := e.NewKey("wideband-out", keys.Limits{}, "calls:outbound")
	e.NewOutboundTrunk(k.Key.ID, map[string]any{"caller_id": "+15550100"}, gw.URI)

	app, refused := e.DialStream(t, k.APIKey, url.Values{"to": {"+15551230000"}, "format": {"l16"}, "rate": {"16000"}})
	if refused != nil {
		t.Fatalf("refused: %+v", refused)
	}
	app.Expect(t, "start")
	tone := l16Tone(5000, 16000, 2)
	for off := 0; off < len(tone); off += 640 {
		app.SendRaw(t, websocket.MessageBinary, tone[off:off+640])
	}
	waitFor(t, 10*time.Second, "the app's 5 kHz tone back through the carrier's echo", func() bool {
		n, _ := l16Frames(app, 5000, 16000)
		return n >= 50
	})
	app.Close()
	gw.Wait(t)
	if !strings.Contains(gw.Messages(), "m=audio") || !regexp.MustCompile(`m=audio \d+ RTP/AVP 9 0 8 101`).MatchString(gw.Messages()) {
		t.Fatalf("the edge's offer does not put G.722 first:\n%s", tail(gw.Messages(), 40))
	}
	if c := e.WaitCDRs(k.Key.ID, 1)[0]; c.Codec != "G722" {
		t.Fatalf("CDR codec %q, want G722", c.Codec)
	}
}
