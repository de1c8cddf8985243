package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"trunkgate/internal/tlsconf/tlstest"
	"trunkgate/keys"
)

// TestBaresipOverTLSWithSRTP is issue 11's first promise, met by another
// implementation: baresip calls over SIP over TLS with SRTP mandatory;
// the app hears its 1 kHz tone, baresip hears the app's 600 Hz answer,
// and on the wire (a capture of the loopback interface) no RTP payload
// is G.711 speech: every packet carries SRTP's 10-byte tag.
func TestBaresipOverTLSWithSRTP(t *testing.T) {
	ca := tlstest.NewCA(t, "trunkgate test CA")
	e := StartTLSEdge(t, ca)
	app := StartApp(t)
	k := e.NewKey("srtp", keys.Limits{})
	e.NewTrunk(k.Key.ID, "+15550900", app.URL, map[string]any{"media_encryption": "require"})
	wire := CaptureLoopback(t, e.RTPLo, e.RTPHi)

	phone := Baresip{SRTP: true, Seconds: 4, Freq: 1000}.Start(t, fmt.Sprintf("sip:+15550900@127.0.0.1:%d;transport=tls", e.SIPTLSPort))
	conn := app.Next(t)
	start := conn.Expect(t, "start")
	params := start.Start.CustomParameters
	if params["sipTransport"] != "tls" || params["mediaEncryption"] != "srtp" {
		t.Fatalf("start.customParameters %v: want sipTransport tls, mediaEncryption srtp", params)
	}
	conn.SendAudio(t, start.StreamSid, ulawTone(600, 3*8000, 8000))
	waitFor(t, 10*time.Second, "the caller's tone at the app", func() bool { n, _ := toneFrames(conn, 1000); return n >= 100 })
	run := phone.Wait(t)
	if !strings.Contains(run.Log, "SRTP is Enabled") || !strings.Contains(run.Log, "Call established") {
		t.Fatalf("baresip did not set up SRTP:\n%s", run.Tail())
	}
	if heard := toneSeconds(run.Heard, 600); heard < 2 {
		t.Fatalf("baresip heard %.2f s of the app's 600 Hz tone (of %d samples recorded), want 2 s or more:\n%s",
			heard, len(run.Heard), run.Tail())
	}

	c := e.WaitCDRs(k.Key.ID, 1)[0]
	if c.Transport != "TLS" || c.MediaEncryption != "srtp" || c.FinalCode != 200 || c.BilledSeconds < 3 || c.Media.PacketsIn < 150 {
		t.Fatalf("CDR %+v: want transport TLS, media srtp, 200, 3 s or more billed", c)
	}
	if n, _ := e.Metric(`trunkgate_calls_answered_total{media="srtp",transport="tls"}`); n != 1 {
		t.Fatalf("calls answered over TLS with SRTP: %v, want 1", n)
	}
	if wire == nil {
		return
	}
	var packets, speech int
	for _, d := range wire.Datagrams() {
		var p rtp.Packet
		if err := p.Unmarshal(d); err != nil || p.Version != 2 || p.PayloadType != 0 {
			continue // RTCP, or not RTP at all
		}
		packets++
		if len(p.Payload) != 160+10 {
			t.Fatalf("an RTP packet of %d payload bytes on the wire: want 160 of G.711 and SRTP's 10-byte tag", len(p.Payload))
		}
		x := pcm(p.Payload[:160], false)
		if toneShare(x, 1000, 8000) > 0.5 || toneShare(x, 600, 8000) > 0.5 {
			speech++
		}
	}
	if packets < 300 || speech != 0 {
		t.Fatalf("capture: %d RTP packets, %d of them decode as the calls' tones; want 300 or more, none in clear", packets, speech)
	}
}
