package e2e

import (
	"crypto/md5"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"trunkgate/bridge"
	"trunkgate/keys"
)

// NewTestKey creates a test key (tg_test_…): its calls reach only the
// sandbox carrier.
func (e *Edge) NewTestKey(name string, limits keys.Limits, scopes ...string) CreatedKey {
	e.t.Helper()
	var c CreatedKey
	e.MustAPI(201, "POST", "/v1/keys", map[string]any{"name": name, "mode": "test", "scopes": scopes, "limits": limits}, &c)
	return c
}

// toneFrames counts the frames of a stream's media that carry the tone.
func toneFrames(conn *AppConn, freq float64) (tone, total int) {
	frames, _ := conn.Media()
	for _, f := range frames {
		x := pcm(f, false)
		if rms(x) > 1000 && toneShare(x, freq, 8000) > 0.8 {
			tone++
		}
	}
	return tone, len(frames)
}

// sippTime is when SIPp logged a message that matches pattern (its
// -trace_msg file stamps every message).
var sippStamp = regexp.MustCompile(`-{10,} (\d{4}-\d{2}-\d{2})\s+(\d{2}:\d{2}:\d{2}\.\d{6})`)

func sippTime(t *testing.T, messages, pattern string) time.Time {
	t.Helper()
	blocks := sippStamp.FindAllStringSubmatchIndex(messages, -1)
	re := regexp.MustCompile(pattern)
	for i, b := range blocks {
		end := len(messages)
		if i+1 < len(blocks) {
			end = blocks[i+1][0]
		}
		if re.MatchString(messages[b[1]:end]) {
			at, err := time.ParseInLocation("2006-01-02 15:04:05.000000", messages[b[2]:b[3]]+" "+messages[b[4]:b[5]], time.Local)
			if err != nil {
				t.Fatal(err)
			}
			return at
		}
	}
	t.Fatalf("no SIPp message matches %q", pattern)
	return time.Time{}
}

// TestOutboundFailoverAndAudio is the product's promise: an application
// with a live key opens a stream; the first gateway answers 503, the edge
// fails over to the second, which answers; audio flows both ways; the CDR
// names the gateway that carried the call.
func TestOutboundFailoverAndAudio(t *testing.T) {
	e := StartEdge(t)
	before := e.Goroutines()
	gw1 := StartGateway(t, Gateway{Code: 503, Phrase: "Service Unavailable"})
	gw2 := StartGateway(t, Gateway{Ring: true, RingMS: 300, Echo: true})
	k := e.NewKey("outbound", keys.Limits{RatePerMinute: 6000}, "calls:outbound", "usage:read")
	trunkID := e.NewOutboundTrunk(k.Key.ID, map[string]any{"caller_id": "+15550100", "headers": map[string]string{"X-Campaign": "spring"}},
		gw1.URI, gw2.URI)

	dialled := time.Now()
	app, refused := e.DialStream(t, k.APIKey, url.Values{"to": {"+1 555 123 0000"}})
	if refused != nil {
		t.Fatalf("refused: %+v", refused)
	}
	upgraded := time.Now()
	connected := app.Expect(t, "connected")
	start := app.Expect(t, "start")
	answeredAtApp := start.At
	if connected.SequenceNumber != "" || start.SequenceNumber != "1" {
		t.Errorf("sequence numbers %q, %q", connected.SequenceNumber, start.SequenceNumber)
	}
	p := start.Start.CustomParameters
	if p["direction"] != "outbound" || p["to"] != "+15551230000" || p["from"] != "+15550100" || p["trunkId"] != trunkID ||
		!strings.HasPrefix(start.Start.CallSid, "CA") {
		t.Fatalf("start %+v", start.Start)
	}
	app.SendAudio(t, start.StreamSid, ulawTone(1000, 8000, 8000)) // 1 s of 1 kHz
	waitFor(t, 10*time.Second, "the tone back through the gateway's RTP echo", func() bool {
		n, _ := toneFrames(app, 1000)
		return n >= 40
	})
	firstAudio := time.Time{}
	for _, m := range app.All() {
		if m.Event == "media" && m.Media != nil && rms(pcm(m.Media.Audio(), false)) > 1000 {
			firstAudio = m.At
			break
		}
	}
	app.Close()
	gw2.Wait(t)
	gw1.Wait(t)

	cdrs := e.WaitCDRs(k.Key.ID, 1)
	c := cdrs[0]
	if c.FinalCode != 200 || c.Gateway != gw2.URI || c.From != "+15550100" || c.To != "+15551230000" || c.Direction != "outbound" ||
		c.HangupSide != "app" || c.CallID != start.Start.CallSid || c.BilledSeconds != ceilSeconds(c.DurationMS) ||
		c.CostMicros != (c.BilledSeconds*6000+59)/60 {
		t.Fatalf("CDR %+v", c)
	}
	if !strings.Contains(gw1.Log(), "FROM= <sip:+15550100@") || !strings.Contains(gw1.Log(), "X-CAMPAIGN= spring") {
		t.Errorf("gateway 1 saw %s", gw1.Log())
	}
	if !strings.Contains(gw2.Log(), `BYE REASON= Q.850;cause=16;text="app closed the stream"`) {
		t.Errorf("gateway 2's BYE: %s", gw2.Log())
	}
	invite1 := sippTime(t, gw1.Messages(), `(?s)received.*\nINVITE sip:\+15551230000@`)
	refusal := sippTime(t, gw1.Messages(), `(?s)sent.*\nSIP/2.0 503`)
	invite2 := sippTime(t, gw2.Messages(), `(?s)received.*\nINVITE sip:\+15551230000@`)
	answer := sippTime(t, gw2.Messages(), `(?s)sent.*\nSIP/2.0 200 OK`)
	t.Logf("handshake %v; handshake start → INVITE at gateway 1 %v; 503 → INVITE at gateway 2 (failover) %v; "+
		"200 at gateway 2 → start at app %v; start → first echoed audio at app %v",
		upgraded.Sub(dialled).Round(time.Microsecond), invite1.Sub(dialled).Round(time.Microsecond),
		invite2.Sub(refusal).Round(time.Microsecond), answeredAtApp.Sub(answer).Round(time.Microsecond),
		firstAudio.Sub(answeredAtApp).Round(time.Microsecond))
	e.WaitGoroutines(before + 3)
}

// TestSilentGatewayMarkedDownAndBack: a gateway that does not answer is
// failed over after the gateway timeout; after three such calls it is
// marked down and skipped; once it answers OPTIONS it is tried again.
func TestSilentGatewayMarkedDownAndBack(t *testing.T) {
	e := StartEdge(t, "--gateway-timeout", "400ms", "--gateway-probe-interval", "200ms")
	silent := newSilentGateway(t)
	gw2 := StartGateway(t, Gateway{Code: 486, Phrase: "Busy Here", Calls: 5})
	k := e.NewKey("outbound", keys.Limits{}, "calls:outbound")
	e.NewOutboundTrunk(k.Key.ID, map[string]any{"caller_id": "+15550100"}, silent.URI(), gw2.URI)
	call := func() *AppConn {
		app, refused := e.DialStream(t, k.APIKey, url.Values{"to": {"+15551230000"}})
		if refused != nil {
			t.Fatalf("refused: %+v", refused)
		}
		stop := app.Expect(t, "stop")
		if stop.Stop.SIPCode != 486 {
			t.Fatalf("stop %+v", stop.Stop)
		}
		return app
	}
	for i := range 3 {
		start := time.Now()
		call()
		if took := time.Since(start); took < 400*time.Millisecond {
			t.Fatalf("call %d failed over after %v, before the gateway timeout", i, took)
		}
	}
	invites, _ := silent.counts()
	if invites < 3 {
		t.Fatalf("the silent gateway got %d INVITEs", invites)
	}
	// Marked down: the next call goes straight to gateway 2.
	start := time.Now()
	call()
	if took := time.Since(start); took > 350*time.Millisecond {
		t.Fatalf("with gateway 1 down the call still took %v", took)
	}
	if n, _ := silent.counts(); n != invites {
		t.Fatalf("gateway 1 got an INVITE while down (%d → %d)", invites, n)
	}
	var status struct {
		Gateways []struct {
			URI string
			Up  bool
		}
	}
	e.MustAPI(200, "GET", "/v1/gateways", nil, &status)
	if !strings.Contains(fmt.Sprint(status.Gateways), silent.URI()+" false") {
		t.Fatalf("gateway status %+v", status.Gateways)
	}
	// It answers OPTIONS again: up, and tried first.
	silent.revive()
	waitFor(t, 5*time.Second, "gateway 1 back up", func() bool {
		e.MustAPI(200, "GET", "/v1/gateways", nil, &status)
		return strings.Contains(fmt.Sprint(status.Gateways), silent.URI()+" true")
	})
	call()
	if n, opts := silent.counts(); n != invites+1 || opts == 0 {
		t.Fatalf("after OPTIONS: %d INVITEs (want %d), %d OPTIONS", n, invites+1, opts)
	}
	gw2.Wait(t)
}

// TestGatewayDigestAndBusy: a gateway that challenges with 407 gets the
// trunk's credentials (the digest answer checked here, RFC 2617), one that
// challenges with 401 gets them too (checked by SIPp); a 486 describes
// the callee, so the next gateway is not tried, and the app hears busy.
func TestGatewayDigestAndBusy(t *testing.T) {
	e := StartEdge(t)
	gw1 := StartGateway(t, Gateway{Code: 486, Phrase: "Busy Here", Reason: `Q.850;cause=17;text="user busy"`, ProxyChallenge: true})
	gw2 := StartGateway(t, Gateway{})
	k := e.NewKey("outbound", keys.Limits{}, "calls:outbound")
	var tr map[string]any
	e.MustAPI(201, "POST", "/v1/trunks", map[string]any{"key_id": k.Key.ID, "direction": "outbound", "caller_id": "+15550100",
		"auth_username": "acme-trunk", "auth_password": "carrier-pass-1",
		"gateways": []map[string]any{{"uri": gw1.URI, "priority": 1}, {"uri": gw2.URI, "priority": 2}}}, &tr)
	if _, leaked := tr["auth_password"]; leaked || tr["auth_username"] != "acme-trunk" {
		t.Fatalf("the API returned the carrier password, or lost the user: %v", tr)
	}
	app, refused := e.DialStream(t, k.APIKey, url.Values{"to": {"+15551230000"}})
	if refused != nil {
		t.Fatalf("refused: %+v", refused)
	}
	stop := app.Expect(t, "stop")
	if stop.Stop.SIPCode != 486 || stop.Stop.Reason != "user busy" {
		t.Fatalf("stop %+v", stop.Stop)
	}
	if code, reason := app.CloseCode(t); code != 4486 || reason != "user busy" {
		t.Fatalf("close %d %q, want 4486", code, reason)
	}
	gw1.Wait(t)
	checkDigest(t, gw1.Log(), "acme-trunk", "carrier.example", "carrier-pass-1")
	if n := gw2.Invites(); n != 0 {
		t.Fatalf("486 was failed over: gateway 2 got %d INVITEs", n)
	}
	c := e.WaitCDRs(k.Key.ID, 1)[0]
	if c.FinalCode != 486 || c.HangupSide != "carrier" || c.HangupCause != "user busy" || c.BilledSeconds != 0 || c.Gateway != gw1.URI {
		t.Fatalf("CDR %+v", c)
	}

	// 401 and WWW-Authenticate, with SIPp checking the answer.
	gw3 := StartGateway(t, Gateway{Code: 486, Phrase: "Busy Here", Challenge: &Auth{User: "acme-trunk", Password: "carrier-pass-1"}})
	e.MustAPI(201, "POST", "/v1/trunks", map[string]any{"key_id": k.Key.ID, "direction": "outbound", "caller_id": "+15550100",
		"auth_username": "acme-trunk", "auth_password": "carrier-pass-1", "gateways": []map[string]any{{"uri": gw3.URI}}}, &tr)
	app, refused = e.DialStream(t, k.APIKey, url.Values{"to": {"+15551230000"}, "trunk": {tr["id"].(string)}})
	if refused != nil {
		t.Fatalf("refused: %+v", refused)
	}
	if stop := app.Expect(t, "stop"); stop.Stop.SIPCode != 486 {
		t.Fatalf("stop %+v", stop.Stop)
	}
	gw3.Wait(t)
	if !strings.Contains(gw3.Log(), "AUTHVALID=true") {
		t.Fatalf("SIPp did not accept the digest answer: %s", gw3.Log())
	}
}

// checkDigest recomputes the digest answer a gateway logged (RFC 2617,
// MD5 without qop) and compares.
func checkDigest(t *testing.T, log, user, realm, password string) {
	t.Helper()
	m := regexp.MustCompile(`PROXY-AUTHORIZATION= Digest (.*)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no Proxy-Authorization logged: %s", log)
	}
	params := map[string]string{}
	for _, kv := range regexp.MustCompile(`(\w+)=("[^"]*"|[^,\s]*)`).FindAllStringSubmatch(m[1], -1) {
		params[kv[1]] = strings.Trim(kv[2], `"`)
	}
	md5hex := func(s string) string { return fmt.Sprintf("%x", md5.Sum([]byte(s))) }
	ha1 := md5hex(user + ":" + realm + ":" + password)
	want := md5hex(ha1 + ":" + params["nonce"] + ":" + md5hex("INVITE:"+params["uri"]))
	if params["username"] != user || params["realm"] != realm || params["response"] != want {
		t.Fatalf("digest answer %v, want response %s", params, want)
	}
}

// TestStreamHandshakeRefusals: every check runs in the HTTP handshake,
// before the upgrade; each refusal has DESIGN's status, a JSON body and
// Retry-After where due, and no INVITE reaches the gateway.
func TestStreamHandshakeRefusals(t *testing.T) {
	e := StartEdge(t)
	gw := StartGateway(t, Gateway{})
	outbound := map[string]any{"caller_id": "+15550100"}
	k := e.NewKey("outbound", keys.Limits{BlockedPrefixes: []string{"+4420"}}, "calls:outbound")
	e.NewOutboundTrunk(k.Key.ID, outbound, gw.URI)
	inboundOnly := e.NewKey("inbound only", keys.Limits{}, "calls:inbound")
	noTrunk := e.NewKey("no trunk", keys.Limits{}, "calls:outbound")
	revoked := e.NewKey("revoked", keys.Limits{}, "calls:outbound")
	e.MustAPI(200, "POST", "/v1/keys/"+revoked.Key.ID+"/revoke", nil, nil)
	to := url.Values{"to": {"+15551230000"}}

	// A key whose only channel is taken by a call that rings.
	ringer := StartGateway(t, Gateway{Ring: true, ExpectCancel: true})
	full := e.NewKey("full", keys.Limits{MaxChannels: 1}, "calls:outbound")
	ringerTrunk := e.NewOutboundTrunk(full.Key.ID, outbound, ringer.URI)
	busyLine, refused := e.DialStream(t, full.APIKey, url.Values{"to": {"+15551230000"}, "progress": {"1"}})
	if refused != nil {
		t.Fatalf("first call of the full key refused: %+v", refused)
	}
	busyLine.Expect(t, "progress")
	// A key at one call a second that just made its call.
	slow := e.NewKey("slow", keys.Limits{CPS: 1}, "calls:outbound")
	e.NewOutboundTrunk(slow.Key.ID, outbound, gw.URI)
	slowFirst, refused := e.DialStream(t, slow.APIKey, url.Values{"to": {"+15005550006"}, "trunk": {"nosuch"}})
	if slowFirst != nil || refused.Status != 404 {
		t.Fatalf("a refused handshake took the call rate's token? %+v", refused)
	}
	// A key that can pay for one second more, not two: one answered second
	// at 60 a minute is 1,000,000 micros against a cap of 1,500,000; the
	// next call could not pay its first second and is refused before it
	// rings.
	spent := StartGateway(t, Gateway{ByeAfterMS: 300})
	capped := e.NewKey("capped", keys.Limits{MonthlySpendCap: 1_500_000, RatePerMinute: 60_000_000}, "calls:outbound")
	e.NewOutboundTrunk(capped.Key.ID, outbound, spent.URI)
	paid, refused := e.DialStream(t, capped.APIKey, to)
	if refused != nil {
		t.Fatalf("capped key's first call: %+v", refused)
	}
	paid.Expect(t, "start")
	paid.Expect(t, "stop")
	spent.Wait(t)
	if c := e.WaitCDRs(capped.Key.ID, 1)[0]; c.CostMicros != 1_000_000 {
		t.Fatalf("the first call cost %d", c.CostMicros)
	}

	tests := []struct {
		name       string
		key        string
		query      url.Values
		status     int
		code       string
		retryAfter string
	}{
		{"no key", "", to, 401, "unauthorized", ""},
		{"unknown key", "tg_live_AAAAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", to, 401, "key_unknown", ""},
		{"revoked key", revoked.APIKey, to, 401, "key_revoked", ""},
		{"no calls:outbound", inboundOnly.APIKey, to, 403, "scope_missing", ""},
		{"bad number", k.APIKey, url.Values{"to": {"+1555abc"}}, 400, "invalid_number", ""},
		{"no number", k.APIKey, url.Values{}, 400, "bad_request", ""},
		{"bad format", k.APIKey, url.Values{"to": {"+15551230000"}, "format": {"opus"}}, 400, "bad_request", ""},
		{"header without a value", k.APIKey, url.Values{"to": {"+15551230000"}, "header": {"X-Campaign"}}, 400, "bad_request", ""},
		{"header injection", k.APIKey, url.Values{"to": {"+15551230000"}, "header": {"X-A:b\r\nVia: SIP/2.0/UDP evil"}}, 400, "bad_request", ""},
		{"identity header", k.APIKey, url.Values{"to": {"+15551230000"}, "header": {"P-Asserted-Identity:<sip:+15550199@x>"}}, 400, "bad_request", ""},
		{"key's blocked prefix", k.APIKey, url.Values{"to": {"+442079460000"}}, 403, "destination_blocked", ""},
		{"edge's high-cost list", k.APIKey, url.Values{"to": {"+88216000000"}}, 403, "destination_blocked", ""},
		{"caller id not the key's", noTrunk.APIKey, to, 404, "no_outbound_trunk", ""},
		{"someone else's trunk", k.APIKey, url.Values{"to": {"+15551230000"}, "trunk": {ringerTrunk}}, 404, "no_outbound_trunk", ""},
		{"channel cap", full.APIKey, to, 429, "channel_cap", "1"},
		{"spend cap", capped.APIKey, to, 402, "spend_cap", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, r := e.DialStream(t, tt.key, tt.query)
			if conn != nil {
				t.Fatal("the handshake was accepted")
			}
			if r.Status != tt.status || r.Code != tt.code || r.RetryAfter != tt.retryAfter || r.Message == "" {
				t.Fatalf("got %+v, want %d %s Retry-After %q", r, tt.status, tt.code, tt.retryAfter)
			}
			if strings.Contains(r.Message, "tg_live_") {
				t.Fatalf("a key in the error: %q", r.Message)
			}
		})
	}
	// The call rate: the first call takes the token, the second is refused.
	first, r := e.DialStream(t, slow.APIKey, to)
	if r != nil {
		t.Fatalf("slow key's first call: %+v", r)
	}
	first.Close()
	if _, r = e.DialStream(t, slow.APIKey, to); r == nil || r.Status != 429 || r.Code != "call_rate" || r.RetryAfter != "1" {
		t.Fatalf("second call within a second: %+v", r)
	}
	// A plain GET is told it needs an upgrade, and takes no channel.
	if status := e.API("GET", "/v1/calls/stream?to=%2B15551230000", k.APIKey, nil, nil); status != 426 {
		t.Fatalf("plain GET: %d, want 426", status)
	}
	if n := gw.Invites(); n > 1 {
		t.Fatalf("refused handshakes reached the gateway: %d INVITEs (one is the slow key's call)", n)
	}
	// Draining: SIGTERM with a call still ringing; new handshakes get 503.
	e.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 5*time.Second, "503 while draining", func() bool {
		_, r := e.DialStream(t, k.APIKey, to)
		if r != nil && r.Status == 503 {
			if r.Code != "draining" || r.RetryAfter != "5" {
				t.Fatalf("draining: %+v", r)
			}
			return true
		}
		return false
	})
	busyLine.Close()
	ringer.Wait(t)
}

// TestSandboxMagicNumbers: a test key's calls reach the built-in sandbox
// carrier, whatever its trunk says: each magic number gives DESIGN's
// result, and no packet reaches the key's own gateway.
func TestSandboxMagicNumbers(t *testing.T) {
	e := StartEdge(t, "--ring-timeout", "2s")
	real := StartGateway(t, Gateway{})
	k := e.NewTestKey("sandbox", keys.Limits{}, "calls:outbound", "usage:read")
	e.NewOutboundTrunk(k.Key.ID, map[string]any{"caller_id": "+15550100"}, real.URI)
	tests := []struct {
		to        string
		answered  bool
		sipCode   int
		reason    string
		closeCode int
	}{
		{"+15005550001", false, 404, "sandbox: not found", 4404},
		{"+15005550002", false, 486, "sandbox: busy here", 4486},
		{"+15005550003", false, 480, "no answer", 4480},
		{"+15005550004", false, 603, "sandbox: decline", 4603},
		{"+15005550008", false, 503, "no gateway answered", 4503},
		{"+15005550005", true, 200, "callee hung up", 1000},
		{"+15005550006", true, 200, "", 1000},
		{"+15005550007", true, 200, "", 1000},
	}
	type result struct {
		conn  *AppConn
		start time.Time
	}
	results := make([]result, len(tests))
	for i, tt := range tests { // all at once: the sandbox takes them side by side
		conn, refused := e.DialStream(t, k.APIKey, url.Values{"to": {tt.to}, "from": {"+19995550000"}, "progress": {"1"}})
		if refused != nil {
			t.Fatalf("%s refused: %+v", tt.to, refused)
		}
		results[i] = result{conn, time.Now()}
	}
	for i, tt := range tests {
		t.Run(tt.to, func(t *testing.T) {
			conn := results[i].conn
			if !tt.answered {
				stop := conn.Expect(t, "stop")
				if stop.Stop.SIPCode != tt.sipCode || stop.Stop.Reason != tt.reason {
					t.Fatalf("stop %+v, want %d %q", stop.Stop, tt.sipCode, tt.reason)
				}
				if code, _ := conn.CloseCode(t); int(code) != tt.closeCode {
					t.Fatalf("close code %d, want %d", code, tt.closeCode)
				}
				return
			}
			start := conn.Expect(t, "start")
			if start.Start.CustomParameters["from"] != "+19995550000" {
				t.Fatalf("a test key's from should pass as is: %v", start.Start.CustomParameters)
			}
			switch tt.to {
			case "+15005550005": // hangs up after 5 s
				stop := conn.Expect(t, "stop")
				took := time.Since(start.At)
				if stop.Stop.Reason != tt.reason || took < 4500*time.Millisecond || took > 7*time.Second {
					t.Fatalf("stop %+v after %v", stop.Stop, took)
				}
			case "+15005550006": // echoes
				conn.SendAudio(t, start.StreamSid, ulawTone(1000, 8000, 8000))
				waitFor(t, 10*time.Second, "the echo", func() bool { n, _ := toneFrames(conn, 1000); return n >= 40 })
				conn.Close()
			case "+15005550007": // plays a 1 kHz tone, ignoring ours
				conn.SendAudio(t, start.StreamSid, ulawTone(440, 8000, 8000))
				waitFor(t, 10*time.Second, "the sandbox's tone", func() bool { n, _ := toneFrames(conn, 1000); return n >= 40 })
				if n, _ := toneFrames(conn, 440); n > 0 {
					t.Fatalf("%d frames of our own 440 Hz came back", n)
				}
				conn.Close()
			}
			if code, _ := conn.CloseCode(t); int(code) != tt.closeCode {
				t.Fatalf("close code %d, want %d", code, tt.closeCode)
			}
		})
	}
	cdrs := e.WaitCDRs(k.Key.ID, len(tests))
	for _, c := range cdrs {
		if !c.Sandbox || !c.TestKey || c.CostMicros != 0 || c.RatePerMinute != 0 || c.TrunkID != "sandbox" {
			t.Errorf("sandbox CDR %+v", c)
		}
	}
	if n := real.Invites(); n != 0 || strings.Contains(real.Messages(), "received") {
		t.Fatalf("a test key's call reached the key's real gateway (%d INVITEs)", n)
	}
}

// TestCancelAndRevokeOutbound: the app hanging up while the callee rings
// makes the edge CANCEL; revoking the key during an outbound call sends
// BYE with the reason within a second.
func TestCancelAndRevokeOutbound(t *testing.T) {
	e := StartEdge(t)
	ringer := StartGateway(t, Gateway{Ring: true, ExpectCancel: true})
	k := e.NewKey("outbound", keys.Limits{}, "calls:outbound", "usage:read")
	ringing := e.NewOutboundTrunk(k.Key.ID, map[string]any{"caller_id": "+15550100"}, ringer.URI)
	app, refused := e.DialStream(t, k.APIKey, url.Values{"to": {"+15551230000"}, "trunk": {ringing}, "progress": {"1"}})
	if refused != nil {
		t.Fatal(refused)
	}
	if p := app.Expect(t, "progress"); p.Progress.Status != "ringing" || p.Progress.SIPCode != 180 {
		t.Fatalf("progress %+v", p.Progress)
	}
	app.Close()
	ringer.Wait(t) // it saw CANCEL, answered 200 and 487, and got the ACK
	if !strings.Contains(ringer.Log(), "CANCELED") {
		t.Fatalf("no CANCEL: %s", ringer.Log())
	}
	if c := e.WaitCDRs(k.Key.ID, 1)[0]; c.FinalCode != 487 || c.HangupCause != "canceled" {
		t.Fatalf("CDR %+v", c)
	}

	answerer := StartGateway(t, Gateway{Echo: true})
	answering := e.NewOutboundTrunk(k.Key.ID, map[string]any{"caller_id": "+15550100"}, answerer.URI)
	app, refused = e.DialStream(t, k.APIKey, url.Values{"to": {"+15551230000"}, "trunk": {answering}})
	if refused != nil {
		t.Fatal(refused)
	}
	app.Expect(t, "start")
	revoked := time.Now()
	e.MustAPI(200, "POST", "/v1/keys/"+k.Key.ID+"/revoke", nil, nil)
	answerer.Wait(t)
	bye := sippTime(t, answerer.Messages(), `(?s)received.*\nBYE sip:`)
	if took := bye.Sub(revoked); took > time.Second {
		t.Fatalf("BYE %v after the revocation", took)
	} else {
		t.Logf("revocation → BYE at the gateway: %v", took.Round(time.Microsecond))
	}
	if !strings.Contains(answerer.Log(), `BYE REASON= Q.850;cause=16;text="key revoked"`) {
		t.Fatalf("BYE: %s", answerer.Log())
	}
	stop := app.Expect(t, "stop")
	if code, _ := app.CloseCode(t); stop.Stop.Reason != "key revoked" || code != 4403 {
		t.Fatalf("stop %+v, close %d", stop.Stop, code)
	}
}

// TestTwilioClientSeesTwilioBytes: a client that opts into nothing sees
// exactly connected, start, then media — as from Twilio: connected with no
// sequence number, start "1", media "2" on.
func TestTwilioClientSeesTwilioBytes(t *testing.T) {
	e := StartEdge(t)
	k := e.NewTestKey("twilio app", keys.Limits{}, "calls:outbound")
	app, refused := e.DialStream(t, k.APIKey, url.Values{"to": {"+15005550007"}})
	if refused != nil {
		t.Fatal(refused)
	}
	waitFor(t, 10*time.Second, "media", func() bool {
		_, msgs := app.Media()
		return len(msgs) >= 3
	})
	all := app.All()
	want := []struct{ event, seq string }{{"connected", ""}, {"start", "1"}, {"media", "2"}, {"media", "3"}}
	for i, w := range want {
		if all[i].Event != w.event || all[i].SequenceNumber != w.seq {
			t.Fatalf("message %d is %s #%q, want %s #%q (all: %v)", i, all[i].Event, all[i].SequenceNumber, w.event, w.seq, events(all))
		}
	}
	if all[0].Protocol != "Call" || all[1].Start.MediaFormat.Encoding != "audio/x-mulaw" || all[1].Start.CustomParameters["direction"] != "outbound" {
		t.Fatalf("connected %+v, start %+v", all[0], all[1].Start)
	}
	if all[2].Media.Chunk != "1" || all[2].Media.Timestamp != "0" || all[3].Media.Timestamp != "20" {
		t.Fatalf("media %+v, %+v", all[2].Media, all[3].Media)
	}
	app.Close()
}

func events(msgs []Msg) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.Event)
	}
	return out
}

// TestPlaceCallREST: POST /v1/calls returns the call's id at once; when
// the callee answers, the edge dials the request's ai_url, signed, and
// GET /v1/calls/{id} follows the call from ringing to its end.
func TestPlaceCallREST(t *testing.T) {
	e := StartEdge(t)
	app := StartApp(t)
	gw := StartGateway(t, Gateway{Ring: true, RingMS: 500, Echo: true})
	k := e.NewKey("rest caller", keys.Limits{}, "calls:outbound")
	e.NewOutboundTrunk(k.Key.ID, map[string]any{"caller_id": "+15550100"}, gw.URI)
	var placed struct {
		CallID string `json:"call_id"`
		State  string
	}
	status := e.API("POST", "/v1/calls", k.APIKey, map[string]any{"to": "+15551230000", "ai_url": app.URL + "?campaign=7",
		"params": map[string]string{"lead": "42"}, "headers": map[string]string{"X-Campaign": "fall"}}, &placed)
	if status != 202 || !strings.HasPrefix(placed.CallID, "CA") || placed.State != "setup" {
		t.Fatalf("POST /v1/calls: %d %+v", status, placed)
	}
	var state struct {
		State, Direction, Gateway string
		FinalCode                 int    `json:"final_code"`
		HangupCause               string `json:"hangup_cause"`
	}
	waitFor(t, 5*time.Second, "ringing", func() bool {
		e.API("GET", "/v1/calls/"+placed.CallID, k.APIKey, nil, &state)
		return state.State == "ringing"
	})
	conn := app.Next(t)
	if ts := conn.Header.Get("X-Trunkgate-Timestamp"); ts == "" ||
		!bridge.Verify(k.SigningSecret, app.URL+"?campaign=7", ts, conn.Header.Get("X-Trunkgate-Signature")) {
		t.Fatalf("the edge's request to the app is not signed with the key's secret")
	}
	start := conn.Expect(t, "start")
	if start.Start.CallSid != placed.CallID || start.Start.CustomParameters["lead"] != "42" ||
		start.Start.CustomParameters["direction"] != "outbound" {
		t.Fatalf("start %+v", start.Start)
	}
	e.API("GET", "/v1/calls/"+placed.CallID, k.APIKey, nil, &state)
	if state.State != "answered" || state.Gateway != gw.URI {
		t.Fatalf("state %+v", state)
	}
	// Another key cannot see it.
	other := e.NewKey("other", keys.Limits{}, "calls:outbound")
	if s := e.API("GET", "/v1/calls/"+placed.CallID, other.APIKey, nil, nil); s != 404 {
		t.Fatalf("another key's view of the call: %d", s)
	}
	conn.Close()
	gw.Wait(t)
	if !strings.Contains(gw.Log(), "X-CAMPAIGN= fall") {
		t.Errorf("the app's header did not reach the gateway: %s", gw.Log())
	}
	waitFor(t, 5*time.Second, "ended", func() bool {
		e.API("GET", "/v1/calls/"+placed.CallID, k.APIKey, nil, &state)
		return state.State == "ended"
	})
	if state.FinalCode != 200 || state.HangupCause != "app closed the stream" {
		t.Fatalf("ended %+v", state)
	}
	// A refusal is the HTTP status of the table, as for the stream.
	var eb struct{ Error struct{ Code string } }
	if s := e.API("POST", "/v1/calls", k.APIKey, map[string]any{"to": "+8821234", "ai_url": app.URL}, &eb); s != 403 ||
		eb.Error.Code != "destination_blocked" {
		t.Fatalf("blocked destination: %d %+v", s, eb)
	}
	if s := e.API("POST", "/v1/calls", k.APIKey, map[string]any{"to": "+15551230000", "ai_url": "http://x"}, &eb); s != 400 {
		t.Fatalf("bad ai_url: %d", s)
	}
	if s := e.API("POST", "/v1/calls", k.APIKey, map[string]any{"to": "+15551230000", "ai_url": app.URL,
		"headers": map[string]string{"Via": "SIP/2.0/UDP evil"}}, &eb); s != 400 || eb.Error.Code != "bad_request" {
		t.Fatalf("an app setting Via: %d %+v", s, eb)
	}
}

// TestCLIOutbound: an operator makes an outbound trunk with the CLI, and
// `trunkgate call` places a call from the terminal and reports it.
func TestCLIOutbound(t *testing.T) {
	e := StartEdge(t)
	k := e.NewKey("cli", keys.Limits{}, "calls:outbound")
	gw := StartGateway(t, Gateway{Echo: true})
	out := e.cli(t, "trunks", "create", "--outbound", "--key", k.Key.ID, "--gateway", gw.URI+";priority=1;weight=10",
		"--caller-id", "+15550100", "--auth-user", "acme", "--auth-password", "never-shown-1", "--header", "X-Campaign=cli",
		"--max-channels", "2")
	if !strings.Contains(out, gw.URI+";priority=1;weight=10") || !strings.Contains(out, "X-Campaign=cli") ||
		strings.Contains(out, "never-shown-1") {
		t.Fatalf("trunks create --outbound:\n%s", out)
	}
	cmd := exec.Command(edgeBinary, "call", "--server", e.HTTP, "--to", "+15551230000", "--seconds", "1.5", "--tone", "1000")
	cmd.Env = append(os.Environ(), "TRUNKGATE_API_KEY="+k.APIKey)
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("trunkgate call: %v\n%s", err, outb)
	}
	m := regexp.MustCompile(`audio back: (\d+) frames .* level (-?[\d.]+) dBFS`).FindStringSubmatch(string(outb))
	if m == nil || !strings.Contains(string(outb), "answered: call CA") {
		t.Fatalf("trunkgate call printed:\n%s", outb)
	}
	if frames, _ := strconv.Atoi(m[1]); frames < 50 {
		t.Fatalf("only %s frames came back:\n%s", m[1], outb)
	}
	if level, _ := strconv.ParseFloat(m[2], 64); level < -20 {
		t.Fatalf("the echo came back at %.1f dBFS:\n%s", level, outb)
	}
	gw.Wait(t)
	if !strings.Contains(gw.Log(), "X-CAMPAIGN= cli") {
		t.Fatalf("the trunk's header did not reach the gateway: %s", gw.Log())
	}
	// A failed call is a failed command, with the reason.
	test := e.NewTestKey("cli test", keys.Limits{}, "calls:outbound")
	cmd = exec.Command(edgeBinary, "call", "--server", e.HTTP, "--to", "+15005550002")
	cmd.Env = append(os.Environ(), "TRUNKGATE_API_KEY="+test.APIKey)
	outb, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(outb), "SIP 486") {
		t.Fatalf("busy sandbox call: %v\n%s", err, outb)
	}
}
