package e2e

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"regexp"
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
	waitFor(t, 10*time.Second, "the caller's tone at the app", func() bool { n, _ := toneFrames(conn, 1000); return n >= 50 })
	if out := e.cli(t, "calls", "list"); !strings.Contains(out, "TLS/srtp") {
		t.Fatalf("calls list does not show the live call's protection:\n%s", out)
	}
	waitFor(t, 10*time.Second, "more of the caller's tone", func() bool { n, _ := toneFrames(conn, 1000); return n >= 100 })
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
	// The edge logs at debug here, SIP messages included: no SRTP key.
	if key := sdesKey.FindString(e.Logs()); key != "" {
		t.Fatalf("an SRTP master key in the edge's log: %s…", key[:12])
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

// sdesKey is an SDES master key as SDP carries it.
var sdesKey = regexp.MustCompile(`inline:[A-Za-z0-9+/]{30,}`)

// TestMediaEncryptionPolicy: each trunk's media_encryption decides what
// an offer gets. A plain offer to a "require" trunk gets 488, and so do
// SDES keys sent in clear (over UDP) to one, and an SRTP-only offer to an
// "off" trunk; an "allow" trunk answers both kinds, in kind. Nothing
// refused is admitted: only the answered calls have CDRs.
func TestMediaEncryptionPolicy(t *testing.T) {
	ca := tlstest.NewCA(t, "trunkgate test CA")
	e := StartTLSEdge(t, ca)
	app := StartApp(t)
	k := e.NewKey("policy", keys.Limits{})
	for number, enc := range map[string]string{"+15550911": "require", "+15550912": "off", "+15550913": "allow"} {
		e.NewTrunk(k.Key.ID, number, app.URL, map[string]any{"media_encryption": enc})
	}
	peer := NewRTPPeer(t)
	tests := []struct {
		name, number, transport string
		srtp                    bool
		code                    int
		reason, answer          string
	}{
		{"plain offer to require", "+15550911", "TLS", false, 488, `text="SRTP required (RTP/SAVP with a=crypto)"`, ""},
		{"SDES over UDP to require", "+15550911", "UDP", true, 488, `text="SRTP keys need TLS signalling"`, ""},
		{"SRTP offer to off", "+15550912", "TLS", true, 488, `text="SRTP not enabled on this trunk"`, ""},
		{"plain offer to allow", "+15550913", "UDP", false, 200, "", "RTP/AVP 0"},
		{"SRTP offer to allow", "+15550913", "TLS", true, 200, "", "RTP/SAVP 0"},
	}
	answered := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dialled := time.Now()
			phone := DialSIP(t, e, tt.transport, nil)
			connected := time.Now()
			res := phone.Invite(tt.number, offerSDP(peer.Port(), tt.srtp))
			// For docs/PERFORMANCE.md: what TLS adds to call setup.
			t.Logf("%s: connection (TLS handshake) %v, INVITE to final response %v", tt.transport,
				connected.Sub(dialled), time.Since(connected))
			if res.Code != tt.code || !strings.Contains(res.Get("Reason"), tt.reason) {
				t.Fatalf("answered %d (Reason %q), want %d %s\n%s", res.Code, res.Get("Reason"), tt.code, tt.reason, res.Header)
			}
			if tt.code != 200 {
				return
			}
			answered++
			app.Next(t).Expect(t, "start")
			if !strings.Contains(res.Body, tt.answer) || strings.Contains(res.Body, "a=crypto") != tt.srtp {
				t.Fatalf("answer SDP, want %q and a=crypto only for SRTP:\n%s", tt.answer, res.Body)
			}
			if tt.srtp && !strings.Contains(res.Body, "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:") {
				t.Fatalf("the answer's key is not for the offered tag and suite:\n%s", res.Body)
			}
			if tt.transport == "TLS" && !strings.Contains(res.Get("Contact"), fmt.Sprintf(":%d;transport=tls", e.SIPTLSPort)) {
				t.Fatalf("Contact %q: want the TLS port with transport=tls", res.Get("Contact"))
			}
			if code := phone.Bye(res); code != 200 {
				t.Fatalf("BYE over %s answered %d", tt.transport, code)
			}
		})
	}
	cdrs := e.WaitCDRs(k.Key.ID, answered)
	if len(e.CDRs(k.Key.ID)) != 2 {
		t.Fatalf("%d CDRs, want the 2 answered calls only: %+v", len(e.CDRs(k.Key.ID)), cdrs)
	}
	got := map[string]bool{}
	for _, c := range cdrs {
		got[c.Transport+"/"+c.MediaEncryption] = true
	}
	if !got["UDP/none"] || !got["TLS/srtp"] {
		t.Fatalf("CDRs record %v, want UDP/none and TLS/srtp", got)
	}
	if out := e.cli(t, "cdrs", "--key", k.Key.ID); !strings.Contains(out, "TLS/srtp") || !strings.Contains(out, "UDP/none") {
		t.Fatalf("trunkgate cdrs does not show the calls' protection:\n%s", out)
	}
	if n, _ := e.Metric(`trunkgate_refusals_total{key_id="` + k.Key.ID + `",reason="srtp_required"}`); n != 1 {
		t.Logf("metrics:\n%s", e.Scrape())
		t.Fatalf("srtp_required refusals counted: %v, want 1", n)
	}
}

// TestMutualTLS: a trunk with a client CA takes calls only from carriers
// presenting a certificate from that CA, for the subject it names; the
// others get 403 and nothing is admitted.
func TestMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "trunkgate test CA")
	e := StartTLSEdge(t, ca)
	app := StartApp(t)
	carrierCA := tlstest.NewCA(t, "carrier CA")
	otherCA := tlstest.NewCA(t, "another CA")
	k := e.NewKey("mtls", keys.Limits{})
	// From the CLI, as an operator would: the CA from a file.
	out := e.cli(t, "trunks", "create", "--key", k.Key.ID, "--number", "+15550920", "--ai-url", app.URL, "--allow", "127.0.0.0/8",
		"--media-encryption", "allow", "--tls-client-ca", carrierCA.File, "--tls-client-subject", "sbc.carrier.example")
	if !strings.Contains(out, "sbc.carrier.example") || !strings.Contains(out, "allow") {
		t.Fatalf("trunks create:\n%s", out)
	}
	load := func(p tlstest.Pair) *tls.Certificate {
		c, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	dir := t.TempDir()
	good := load(carrierCA.Issue(t, dir, "sbc.carrier.example", "sbc.carrier.example"))
	wrongSubject := load(carrierCA.Issue(t, dir, "pbx.elsewhere.example", "pbx.elsewhere.example"))
	wrongCA := load(otherCA.Issue(t, dir, "impostor", "sbc.carrier.example"))
	peer := NewRTPPeer(t)
	for _, tt := range []struct {
		name      string
		transport string
		cert      *tls.Certificate
		code      int
	}{
		{"no certificate", "TLS", nil, 403},
		{"another CA", "TLS", wrongCA, 403},
		{"another subject", "TLS", wrongSubject, 403},
		{"over UDP", "UDP", nil, 403},
		{"the carrier's certificate", "TLS", good, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			phone := DialSIP(t, e, tt.transport, tt.cert)
			res := phone.Invite("+15550920", offerSDP(peer.Port(), false))
			if res.Code != tt.code {
				t.Fatalf("answered %d, want %d\n%s", res.Code, tt.code, res.Header)
			}
			if tt.code == 403 && !strings.Contains(res.Get("Reason"), "client certificate missing or not trusted") {
				t.Fatalf("Reason %q", res.Get("Reason"))
			}
			if tt.code == 200 {
				app.Next(t).Expect(t, "start")
				phone.Bye(res)
			}
		})
	}
	if cdrs := e.WaitCDRs(k.Key.ID, 1); len(cdrs) != 1 || cdrs[0].Transport != "TLS" {
		t.Fatalf("CDRs %+v: want the one call with the carrier's certificate", cdrs)
	}
}

// TestOutboundOverTLSWithSRTP: an edge calls out through a gateway over
// SIP over TLS with an SRTP offer. The gateway is a second edge (TLS,
// SRTP required on its inbound trunk) with a certificate from its own CA:
// with that CA in --tls-ca the call goes through, both apps learn the leg
// was TLS and SRTP, and the audio crosses; an edge that does not trust
// the CA fails the call with "no gateway answered" and logs why.
func TestOutboundOverTLSWithSRTP(t *testing.T) {
	carrierCA := tlstest.NewCA(t, "carrier CA")
	carrier := StartTLSEdge(t, carrierCA)
	callee := StartApp(t)
	ck := carrier.NewKey("callee", keys.Limits{})
	carrier.NewTrunk(ck.Key.ID, "+15550930", callee.URL, map[string]any{"media_encryption": "require"})
	gateway := fmt.Sprintf("sip:127.0.0.1:%d;transport=tls", carrier.SIPTLSPort)

	edgeCA := tlstest.NewCA(t, "trunkgate test CA")
	place := func(e *Edge) (*AppConn, CreatedKey) {
		k := e.NewKey("caller", keys.Limits{}, "calls:outbound")
		e.NewOutboundTrunk(k.Key.ID, map[string]any{"caller_id": "+15550001", "media_encryption": "require"}, gateway)
		conn, refused := e.DialStream(t, k.APIKey, url.Values{"to": {"+15550930"}})
		if refused != nil {
			t.Fatalf("stream refused: %+v", refused)
		}
		return conn, k
	}

	trusting := StartTLSEdge(t, edgeCA, "--tls-ca", carrierCA.File)
	caller, k := place(trusting)
	in := callee.Next(t)
	inStart := in.Expect(t, "start")
	outStart := caller.Expect(t, "start")
	for _, p := range []map[string]string{inStart.Start.CustomParameters, outStart.Start.CustomParameters} {
		if p["sipTransport"] != "tls" || p["mediaEncryption"] != "srtp" {
			t.Fatalf("start.customParameters %v: want sipTransport tls, mediaEncryption srtp", p)
		}
	}
	caller.SendAudio(t, outStart.StreamSid, ulawTone(1000, 2*8000, 8000))
	waitFor(t, 10*time.Second, "the caller's tone at the callee", func() bool { n, _ := toneFrames(in, 1000); return n >= 50 })
	caller.Close()
	c := trusting.WaitCDRs(k.Key.ID, 1)[0]
	if c.Transport != "TLS" || c.MediaEncryption != "srtp" || c.Gateway != "sip:127.0.0.1:"+fmt.Sprint(carrier.SIPTLSPort)+";transport=tls" {
		t.Fatalf("caller's CDR %+v", c)
	}

	untrusting := StartTLSEdge(t, edgeCA) // the system's roots only
	caller, _ = place(untrusting)
	stop := caller.Expect(t, "stop")
	if stop.Stop.SIPCode != 503 || stop.Stop.Reason != "no gateway answered" {
		t.Fatalf("stop %+v: want 503 no gateway answered", stop.Stop)
	}
	// The log says why (it may reach the pipe after the stop message).
	untrusting.WaitLog(`gateway failed; trying the next.*certificate signed by unknown authority`)
}
