package e2e

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"trunkgate/keys"
)

const g711aPcap = "/usr/share/sip-tester/g711a.pcap"

// setup starts an edge (with edgeArgs), an app, and a key with a trunk
// for number.
func setup(t *testing.T, limits keys.Limits, number string, trunkExtra map[string]any, edgeArgs ...string) (*Edge, *App, CreatedKey) {
	t.Helper()
	e := StartEdge(t, edgeArgs...)
	app := StartApp(t)
	k := e.NewKey("e2e", limits)
	e.NewTrunk(k.Key.ID, number, app.URL, trunkExtra)
	return e, app, k
}

// TestInboundCallEndToEnd is the walking skeleton's promise: SIPp calls with
// G.711 audio playing, the app hears that audio, the app's audio reaches the
// carrier as RTP, the CDR bills the seconds, the lease is freed and no
// goroutine outlives the calls.
func TestInboundCallEndToEnd(t *testing.T) {
	e, app, k := setup(t, keys.Limits{MaxChannels: 1}, "+15550101", map[string]any{"params": map[string]string{"agent": "support"}})
	before := e.Goroutines()

	// Call 1: SIPp plays g711a.pcap (A-law, 30 ms packets) for 3 s.
	run := Call{Number: "+15550101", Steps: []Step{{Pcap: g711aPcap, PauseMS: 3000}}}.Start(t, e)
	conn := app.Next(t)
	connected := conn.Expect(t, "connected")
	start := conn.Expect(t, "start")
	// As Twilio sends them: connected carries no sequence number, start is "1".
	if connected.SequenceNumber != "" || start.SequenceNumber != "1" {
		t.Errorf("sequence numbers %q, %q; want none, 1", connected.SequenceNumber, start.SequenceNumber)
	}
	st := start.Start
	if st == nil || !strings.HasPrefix(st.CallSid, "CA") || len(st.CallSid) != 34 || !strings.HasPrefix(st.StreamSid, "MZ") ||
		!strings.HasPrefix(st.AccountSid, "AC") || start.StreamSid != st.StreamSid {
		t.Fatalf("start ids: %+v", st)
	}
	if st.MediaFormat.Encoding != "audio/x-mulaw" || st.MediaFormat.SampleRate != 8000 || st.MediaFormat.Channels != 1 {
		t.Errorf("mediaFormat %+v", st.MediaFormat)
	}
	p := st.CustomParameters
	if p["to"] != "+15550101" || p["from"] != "+15557654321" || p["direction"] != "inbound" || p["keyId"] != k.Key.ID ||
		p["trunkId"] == "" || p["agent"] != "support" {
		t.Errorf("customParameters %v", p)
	}
	res := run.Wait(t).MustPass(t)
	<-conn.Closed()

	// The app heard what SIPp sent: align the pcap's audio with the
	// frames and compare samples.
	frames, msgs := conn.Media()
	if len(frames) < 140 { // 3 s of 20 ms frames, give or take the edges
		t.Fatalf("only %d media frames for a 3 s call", len(frames))
	}
	var heard []float64
	for i, f := range frames {
		if len(f) != 160 {
			t.Fatalf("frame %d has %d bytes, want 160", i, len(f))
		}
		heard = append(heard, pcm(f, false)...)
		if msgs[i].Media.Chunk != itoa(i+1) || msgs[i].Media.Track != "inbound" {
			t.Fatalf("frame %d: chunk %q track %q", i, msgs[i].Media.Chunk, msgs[i].Media.Track)
		}
		// Stamped from the media clock: chunk n at (n-1)·20 ms, no frame
		// missing, whatever the wall clock did (a 19 or 21 ms step reads
		// as lost audio to the OpenAI Agents SDK's Twilio transport).
		if msgs[i].Media.Timestamp != itoa(20*i) {
			t.Fatalf("frame %d: timestamp %q, want %d", i, msgs[i].Media.Timestamp, 20*i)
		}
	}
	pkts, err := pcapRTP(g711aPcap)
	if err != nil {
		t.Fatal(err)
	}
	var sent []float64
	for _, p := range pkts {
		sent = append(sent, pcm(p.Payload, true)...)
	}
	// 1.5 s from the middle of what SIPp sent, found in what the app heard.
	// The app hears the pcap from its start, so the needle sits near its own
	// offset; it must fit inside a call that gave the app 140 to 150 frames.
	needle := sent[4000:16000]
	offset, corr := bestMatch(heard, needle, len(heard)-len(needle))
	t.Logf("app audio matches the carrier's at offset %d samples, correlation %.4f, rms %.0f", offset, corr, rms(heard))
	if corr < 0.98 {
		t.Fatalf("the app's audio does not match what SIPp sent: best correlation %.3f", corr)
	}

	cdrs := e.WaitCDRs(k.Key.ID, 1)
	c := cdrs[0]
	wantBilled := int64(math.Ceil(float64(c.DurationMS) / 1000))
	if c.BilledSeconds != wantBilled || c.DurationMS < 2900 || c.DurationMS > 4500 {
		t.Errorf("CDR duration %d ms billed %d s, want ceil = %d", c.DurationMS, c.BilledSeconds, wantBilled)
	}
	if c.FinalCode != 200 || c.HangupSide != "carrier" || c.From != "+15557654321" || c.To != "+15550101" ||
		c.CallID != st.CallSid || c.SIPCallID == "" || c.AnswerAt.Before(c.SetupAt) || c.EndAt.Sub(c.AnswerAt).Milliseconds() != c.DurationMS {
		t.Errorf("CDR %+v", c)
	}
	if c.Media.PacketsIn < 90 || c.Media.PacketsOut < 140 {
		t.Errorf("CDR media %+v", c.Media)
	}
	t.Logf("setup %d ms, answered→BYE %d ms, %d frames to the app", c.AnswerAt.Sub(c.SetupAt).Milliseconds(), c.DurationMS, len(frames))
	_ = res

	// Call 2 at max_channels = 1: the first call's lease is free. SIPp echoes
	// RTP, so the tone the app sends comes back to the app only if SIPp
	// received it as RTP.
	run2 := Call{Number: "+15550101", RTPEcho: true, Steps: []Step{{PauseMS: 2500}}}.Start(t, e)
	conn2 := app.Next(t)
	start2 := conn2.Expect(t, "start")
	conn2.SendAudio(t, start2.StreamSid, ulawTone(1000, 8000, 8000)) // 1 s of 1 kHz
	run2.Wait(t).MustPass(t)
	<-conn2.Closed()
	frames2, _ := conn2.Media()
	var back []float64
	for _, f := range frames2 {
		back = append(back, pcm(f, false)...)
	}
	loud := 0
	for i := 0; i+160 <= len(back); i += 160 {
		block := back[i : i+160]
		if rms(block) > 2000 && toneShare(block, 1000, 8000) > 0.9 {
			loud++
		}
	}
	if loud < 40 { // of the 50 frames sent
		t.Fatalf("only %d frames of the 1 kHz tone came back through SIPp's RTP echo", loud)
	}
	t.Logf("%d frames of the app's tone made the round trip app → edge → SIPp RTP → edge → app", loud)
	if cdrs := e.WaitCDRs(k.Key.ID, 2); cdrs[0].FinalCode != 200 {
		t.Fatalf("second call at max_channels=1 not answered: %+v", cdrs[0])
	}
	e.WaitGoroutines(before + 3)
}

func itoa(n int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(n)) }

func fmtInt(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

// TestInboundRefusals: each refusal reaches SIPp with its exact code and
// Reason.
func TestInboundRefusals(t *testing.T) {
	e := StartEdge(t, "--unknown-source", "reject")
	app := StartApp(t)
	carrier := map[string]any{"allowed_sources": []string{"127.0.0.1/32"}}
	k := e.NewKey("refusals", keys.Limits{MaxChannels: 1})
	e.NewTrunk(k.Key.ID, "+15550200", app.URL, carrier)
	other := e.NewKey("wrong-source", keys.Limits{})
	e.NewTrunk(other.Key.ID, "+15550201", app.URL, map[string]any{"allowed_sources": []string{"10.0.0.0/8"}})
	revoked := e.NewKey("revoked", keys.Limits{})
	e.NewTrunk(revoked.Key.ID, "+15550202", app.URL, carrier)
	e.MustAPI(200, "POST", "/v1/keys/"+revoked.Key.ID+"/revoke", nil, nil)
	noScope := e.NewKey("no-inbound", keys.Limits{}, "usage:read")
	e.NewTrunk(noScope.Key.ID, "+15550203", app.URL, carrier)

	tests := []struct {
		name, number, source string
		code                 int
		reason               string
	}{
		{"unknown number", "+15559999", "", 404, `SIP;cause=404;text="no trunk for this number"`},
		// A number on a trunk that does not allow this source is not this
		// source's to know about: the same 404.
		{"another source's number", "+15550201", "", 404, `SIP;cause=404;text="no trunk for this number"`},
		// A source no trunk allows: one answer for every number.
		{"source not allowed", "+15550200", "127.0.0.2", 403, `SIP;cause=403;text="source address not allowed"`},
		{"revoked key", "+15550202", "", 403, `SIP;cause=403;text="key revoked"`},
		{"key lacks calls:inbound", "+15550203", "", 403, `SIP;cause=403;text="key lacks the scope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := RunSIPp(t, e, Call{Number: tt.number, Expect: tt.code, LocalIP: tt.source}).MustPass(t)
			if got := res.Logged(t, `REASON=(.*) RETRY`)[1]; got != tt.reason {
				t.Fatalf("Reason %s, want %s", got, tt.reason)
			}
		})
	}

	t.Run("channel cap", func(t *testing.T) {
		first := Call{Number: "+15550200", Steps: []Step{{PauseMS: 3000}}}.Start(t, e)
		conn := app.Next(t)
		conn.Expect(t, "start")
		res := RunSIPp(t, e, Call{Number: "+15550200", Expect: 486}).MustPass(t)
		if got := res.Logged(t, `REASON=(.*) RETRY`)[1]; got != `SIP;cause=486;text="channel cap reached"` {
			t.Fatalf("Reason %s", got)
		}
		first.Wait(t).MustPass(t)
	})

	t.Run("no common codec", func(t *testing.T) {
		res := RunSIPp(t, e, Call{Number: "+15550200", Codecs: "18", Expect: 488}).MustPass(t)
		if got := res.Logged(t, `REASON=(.*) RETRY`)[1]; !strings.Contains(got, "no common codec") {
			t.Fatalf("Reason %s", got)
		}
	})

	// Every refusal is in the audit log with its source, and counted.
	var audit struct {
		Audit []keys.AuditEntry
	}
	e.MustAPI(200, "GET", "/v1/audit?action=call.refuse", nil, &audit)
	reasons := map[string]string{}
	for _, a := range audit.Audit {
		reasons[strings.Fields(a.Detail)[0]] = a.Source
	}
	for want, from := range map[string]string{"reason=no_trunk": "127.0.0.1:", "reason=source_not_allowed": "127.0.0.2:",
		"reason=key_revoked": "127.0.0.1:", "reason=scope_missing": "127.0.0.1:", "reason=channel_cap": "127.0.0.1:"} {
		if src, ok := reasons[want]; !ok || !strings.HasPrefix(src, from) {
			t.Errorf("audit log lacks %s from %s (have %v)", want, from, reasons)
		}
	}
	if v, _ := e.Metric(`trunkgate_refusals_total{key_id="` + k.Key.ID + `",reason="channel_cap"}`); v != 1 {
		t.Errorf("channel_cap refusals metric = %v, want 1", v)
	}
}

// TestAppHangsUp: the app closing its WebSocket makes the edge send BYE.
func TestAppHangsUp(t *testing.T) {
	e, app, k := setup(t, keys.Limits{}, "+15550300", nil)
	before := e.Goroutines()
	run := Call{Number: "+15550300", Hangup: "callee", Steps: []Step{{Pcap: g711aPcap}}}.Start(t, e)
	conn := app.Next(t)
	conn.Expect(t, "start")
	waitFor(t, 5*time.Second, "half a second of audio at the app", func() bool {
		frames, _ := conn.Media()
		return len(frames) >= 25
	})
	conn.Close()
	res := run.Wait(t).MustPass(t)
	if got := res.Logged(t, `BYE REASON=(.*)`)[1]; !strings.Contains(got, "app closed the stream") {
		t.Fatalf("BYE Reason %q", got)
	}
	c := e.WaitCDRs(k.Key.ID, 1)[0]
	if c.HangupSide != "app" || c.FinalCode != 200 || c.BilledSeconds != int64(math.Ceil(float64(c.DurationMS)/1000)) {
		t.Fatalf("CDR %+v", c)
	}
	e.WaitGoroutines(before + 3)
}

// TestCancelBeforeAnswer: CANCEL while the edge is still dialling the app.
func TestCancelBeforeAnswer(t *testing.T) {
	e, app, k := setup(t, keys.Limits{MaxChannels: 1}, "+15550400", nil)
	app.HandshakeDelay = 3 * time.Second
	before := e.Goroutines()
	RunSIPp(t, e, Call{Number: "+15550400", CancelAfterMS: 300}).MustPass(t)
	c := e.WaitCDRs(k.Key.ID, 1)[0]
	if c.FinalCode != 487 || c.BilledSeconds != 0 || !c.AnswerAt.IsZero() || c.HangupSide != "carrier" {
		t.Fatalf("CDR %+v", c)
	}
	// The lease is free again.
	app.HandshakeDelay = 0
	run := Call{Number: "+15550400", Steps: []Step{{PauseMS: 300}}}.Start(t, e)
	app.Next(t).Expect(t, "start")
	run.Wait(t).MustPass(t)
	e.WaitGoroutines(before + 3)
}

// TestInboundOverTCP: the same call over SIP/TCP, answered with PCMU.
func TestInboundOverTCP(t *testing.T) {
	e, app, k := setup(t, keys.Limits{}, "+15550500", nil)
	run := Call{Number: "+15550500", Transport: "t1", Codecs: "0 8 101", Steps: []Step{{PauseMS: 1000}}}.Start(t, e)
	app.Next(t).Expect(t, "start")
	res := run.Wait(t).MustPass(t)
	if got := res.Logged(t, `ANSWER (.*)`)[1]; !strings.HasSuffix(got, "RTP/AVP 0") {
		t.Fatalf("answer %q: want PCMU (0), the offer's first codec", got)
	}
	c := e.WaitCDRs(k.Key.ID, 1)[0]
	if c.FinalCode != 200 || c.HangupSide != "carrier" || c.BilledSeconds < 1 || c.BilledSeconds != ceilSeconds(c.DurationMS) {
		t.Fatalf("CDR %+v", c)
	}
}

// TestDigestAuth: a trunk with digest credentials challenges each INVITE
// with 401; the carrier's retry with the right password is answered, a
// wrong one gets 403. DESIGN's "digest credentials missing / wrong" row.
func TestDigestAuth(t *testing.T) {
	const user, password = "carrier-1", "s3cret-Pa55"
	e, app, k := setup(t, keys.Limits{}, "+15550700", map[string]any{"digest_username": user, "digest_password": password})
	before := e.Goroutines()

	t.Run("no credentials", func(t *testing.T) {
		res := RunSIPp(t, e, Call{Number: "+15550700", Expect: 401}).MustPass(t)
		if got := res.Logged(t, `REASON=(.*) RETRY`)[1]; got != `SIP;cause=401;text="digest credentials missing"` {
			t.Fatalf("Reason %s", got)
		}
		chal := res.Logged(t, `CHALLENGE=(.*)`)[1]
		for _, want := range []string{`Digest realm="trunkgate"`, `nonce="`, `algorithm=MD5`, `qop="auth"`} {
			if !strings.Contains(chal, want) {
				t.Fatalf("WWW-Authenticate %s lacks %s", chal, want)
			}
		}
	})
	t.Run("right password", func(t *testing.T) {
		run := Call{Number: "+15550700", Auth: &Auth{user, password}, Steps: []Step{{Pcap: g711aPcap, PauseMS: 1000}}}.Start(t, e)
		conn := app.Next(t)
		conn.Expect(t, "start")
		conn.Expect(t, "media")
		res := run.Wait(t).MustPass(t)
		if chal := res.Logged(t, `CHALLENGE=(.*)`)[1]; !strings.Contains(chal, `realm="trunkgate"`) {
			t.Fatalf("challenge %s", chal)
		}
		if c := e.WaitCDRs(k.Key.ID, 1)[0]; c.FinalCode != 200 || c.BilledSeconds < 1 || c.BilledSeconds != ceilSeconds(c.DurationMS) {
			t.Fatalf("CDR %+v", c)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		res := RunSIPp(t, e, Call{Number: "+15550700", Auth: &Auth{user, "not-the-password"}, Expect: 403}).MustPass(t)
		if got := res.Logged(t, `REASON=(.*) RETRY`)[1]; got != `SIP;cause=403;text="digest credentials wrong"` {
			t.Fatalf("Reason %s", got)
		}
	})
	t.Run("wrong user", func(t *testing.T) {
		res := RunSIPp(t, e, Call{Number: "+15550700", Auth: &Auth{"someone-else", password}, Expect: 403}).MustPass(t)
		if got := res.Logged(t, `REASON=(.*) RETRY`)[1]; got != `SIP;cause=403;text="digest credentials wrong"` {
			t.Fatalf("Reason %s", got)
		}
	})

	// The password is write-only: the trunk shows its username, and neither
	// the password nor its hash appear in the API, the logs or the metrics.
	var raw json.RawMessage
	e.MustAPI(200, "GET", "/v1/trunks", nil, &raw)
	var list struct {
		Trunks []struct {
			DigestUsername string `json:"digest_username"`
		}
	}
	if err := json.Unmarshal(raw, &list); err != nil || len(list.Trunks) != 1 || list.Trunks[0].DigestUsername != user {
		t.Fatalf("trunks %s: want one with digest_username %s (%v)", raw, user, err)
	}
	ha1 := md5.Sum([]byte(user + ":trunkgate:" + password))
	for where, text := range map[string]string{"API": string(raw), "logs": e.Logs(), "metrics": e.Scrape()} {
		if strings.Contains(text, password) || strings.Contains(text, hex.EncodeToString(ha1[:])) {
			t.Fatalf("the digest password or its HA1 is in the %s", where)
		}
	}
	if m := e.Scrape(); !strings.Contains(m, `reason="digest_wrong"`) || !strings.Contains(m, `reason="digest_missing"`) {
		t.Fatal("digest refusals not counted in /metrics")
	}
	e.WaitGoroutines(before + 3)
}
