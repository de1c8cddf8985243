package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"trunkgate/keys"
)

// TestLimitRefusals: the cps and spend-cap rows of the refusal table.
func TestLimitRefusals(t *testing.T) {
	e := StartEdge(t)
	app := StartApp(t)

	t.Run("call rate", func(t *testing.T) {
		k := e.NewKey("cps", keys.Limits{CPS: 1})
		e.NewTrunk(k.Key.ID, "+15551000", app.URL, nil)
		first := Call{Number: "+15551000", Steps: []Step{{PauseMS: 200}}}.Start(t, e)
		app.Next(t).Expect(t, "start")
		res := RunSIPp(t, e, Call{Number: "+15551000", Expect: 503}).MustPass(t)
		got := res.Logged(t, `REASON=(.*) RETRY-AFTER=(.*)`)
		if got[1] != `SIP;cause=503;text="call rate exceeded"` || got[2] != "1" {
			t.Fatalf("Reason %q Retry-After %q", got[1], got[2])
		}
		first.Wait(t).MustPass(t)
	})

	t.Run("spend cap", func(t *testing.T) {
		// 1 unit a second; the cap is 2 units: a 1.5 s call bills 2 s = the cap.
		k := e.NewKey("spend", keys.Limits{RatePerMinute: 60_000_000, MonthlySpendCap: 2_000_000})
		e.NewTrunk(k.Key.ID, "+15551001", app.URL, nil)
		run := Call{Number: "+15551001", Steps: []Step{{PauseMS: 1500}}}.Start(t, e)
		app.Next(t).Expect(t, "start")
		run.Wait(t).MustPass(t)
		c := e.WaitCDRs(k.Key.ID, 1)[0]
		if c.BilledSeconds != 2 || c.CostMicros != 2_000_000 {
			t.Fatalf("CDR billed %d s cost %d, want 2 s and 2000000", c.BilledSeconds, c.CostMicros)
		}
		res := RunSIPp(t, e, Call{Number: "+15551001", Expect: 402}).MustPass(t)
		if got := res.Logged(t, `REASON=(.*) RETRY`)[1]; got != `SIP;cause=402;text="monthly spend cap reached"` {
			t.Fatalf("Reason %q", got)
		}
	})

	t.Run("spend cap reached during a call", func(t *testing.T) {
		k := e.NewKey("spend-live", keys.Limits{RatePerMinute: 60_000_000, MonthlySpendCap: 2_000_000})
		e.NewTrunk(k.Key.ID, "+15551002", app.URL, nil)
		res := RunSIPp(t, e, Call{Number: "+15551002", Hangup: "callee", WaitByeMS: 10000}).MustPass(t)
		if got := res.Logged(t, `BYE REASON=(.*)`)[1]; !strings.Contains(got, `text="monthly spend cap reached"`) {
			t.Fatalf("BYE Reason %q", got)
		}
		c := e.WaitCDRs(k.Key.ID, 1)[0]
		// The two seconds the cap pays for are used, and no third begins.
		if c.HangupSide != "edge" || c.CostMicros != 2_000_000 || c.DurationMS <= 1600 || c.DurationMS > 2000 {
			t.Fatalf("CDR %+v: the call should end in its second second, exactly at the cap", c)
		}
	})

	t.Run("max call seconds", func(t *testing.T) {
		k := e.NewKey("short", keys.Limits{MaxCallSeconds: 1})
		e.NewTrunk(k.Key.ID, "+15551003", app.URL, nil)
		res := RunSIPp(t, e, Call{Number: "+15551003", Hangup: "callee", WaitByeMS: 5000}).MustPass(t)
		if got := res.Logged(t, `BYE REASON=(.*)`)[1]; !strings.Contains(got, `text="max call duration"`) {
			t.Fatalf("BYE Reason %q", got)
		}
		c := e.WaitCDRs(k.Key.ID, 1)[0]
		if c.DurationMS < 1000 || c.DurationMS > 1200 || c.BilledSeconds != int64((c.DurationMS+999)/1000) {
			t.Fatalf("CDR duration %d ms billed %d", c.DurationMS, c.BilledSeconds)
		}
	})
}

// TestChannelCapChangesLive: raising max_channels through the API admits a
// second call at once; lowering it refuses the next.
func TestChannelCapChangesLive(t *testing.T) {
	e, app, k := setup(t, keys.Limits{MaxChannels: 1}, "+15552000", nil)
	first := Call{Number: "+15552000", Steps: []Step{{PauseMS: 4000}}}.Start(t, e)
	app.Next(t).Expect(t, "start")
	RunSIPp(t, e, Call{Number: "+15552000", Expect: 486}).MustPass(t)

	var key struct {
		ChannelsInUse int `json:"channels_in_use"`
		Limits        keys.Limits
	}
	e.MustAPI(200, "PATCH", "/v1/keys/"+k.Key.ID+"/limits", map[string]any{"max_channels": 2}, &key)
	if key.Limits.MaxChannels != 2 || key.ChannelsInUse != 1 {
		t.Fatalf("after PATCH: %+v", key)
	}
	second := Call{Number: "+15552000", Steps: []Step{{PauseMS: 1500}}}.Start(t, e)
	app.Next(t).Expect(t, "start")
	if v, _ := e.Metric(`trunkgate_channels_in_use{key_id="` + k.Key.ID + `"}`); v != 2 {
		t.Errorf("channels_in_use metric %v, want 2", v)
	}
	second.Wait(t).MustPass(t)

	e.MustAPI(200, "PATCH", "/v1/keys/"+k.Key.ID+"/limits", map[string]any{"max_channels": 1}, nil)
	RunSIPp(t, e, Call{Number: "+15552000", Expect: 486}).MustPass(t)
	first.Wait(t).MustPass(t)
}

// TestRevokeEndsLiveCalls: two live calls get BYE within a second of the
// revocation, their streams get stop, their CDRs are written, the channels
// are free.
func TestRevokeEndsLiveCalls(t *testing.T) {
	e, app, k := setup(t, keys.Limits{MaxChannels: 5}, "+15553000", nil)
	before := e.Goroutines()
	var runs []*SIPpRun
	var conns []*AppConn
	for range 2 {
		runs = append(runs, Call{Number: "+15553000", Hangup: "callee", Steps: []Step{{Pcap: g711aPcap}}}.Start(t, e))
		c := app.Next(t)
		c.Expect(t, "start")
		// Live with audio: SIPp is past its ACK (a BYE that overtakes its own
		// ACK step it would count as unexpected).
		c.Expect(t, "media")
		conns = append(conns, c)
	}
	var out struct {
		LiveCallsEnded int `json:"live_calls_ended"`
	}
	revokedAt := time.Now()
	e.MustAPI(200, "POST", "/v1/keys/"+k.Key.ID+"/revoke", nil, &out)
	if out.LiveCallsEnded != 2 {
		t.Fatalf("live_calls_ended %d, want 2", out.LiveCallsEnded)
	}
	for i, r := range runs {
		res := r.Wait(t).MustPass(t)
		took := res.Ended.Sub(revokedAt)
		t.Logf("call %d: BYE answered and SIPp done %v after the revocation", i+1, took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("call %d: BYE came %v after revocation, want within 1 s", i+1, took)
		}
		if got := res.Logged(t, `BYE REASON=(.*)`)[1]; got != `Q.850;cause=16;text="key revoked"` {
			t.Errorf("BYE Reason %q", got)
		}
	}
	for i, c := range conns {
		stop := c.Expect(t, "stop")
		if stop.Stop == nil || !strings.HasPrefix(stop.Stop.CallSid, "CA") {
			t.Errorf("stream %d: stop %+v", i, stop)
		}
		<-c.Closed()
	}
	cdrs := e.WaitCDRs(k.Key.ID, 2)
	for _, c := range cdrs {
		if c.HangupSide != "edge" || c.HangupCause != "key revoked" || c.FinalCode != 200 {
			t.Errorf("CDR %+v", c)
		}
	}
	if v, _ := e.Metric(`trunkgate_channels_in_use{key_id="` + k.Key.ID + `"}`); v != 0 {
		t.Errorf("channels still in use: %v", v)
	}
	RunSIPp(t, e, Call{Number: "+15553000", Expect: 403}).MustPass(t)
	e.WaitGoroutines(before + 3)
}

// TestRotation: during the grace both texts work; after it the old one is
// refused as expired.
func TestRotation(t *testing.T) {
	e := StartEdge(t)
	k := e.NewKey("rotating", keys.Limits{}, "usage:read")
	if st := e.API("GET", "/v1/cdrs", k.APIKey, nil, nil); st != 200 {
		t.Fatalf("new key: %d", st)
	}
	var rot CreatedKey
	e.MustAPI(200, "POST", "/v1/keys/"+k.Key.ID+"/rotate", map[string]any{"grace_seconds": 2}, &rot)
	if rot.APIKey == k.APIKey || rot.Key.ID != k.Key.ID {
		t.Fatalf("rotation gave %q (id %s)", rot.APIKey, rot.Key.ID)
	}
	graceEnds := time.Now().Add(2 * time.Second)
	for _, text := range []string{k.APIKey, rot.APIKey} {
		if st := e.API("GET", "/v1/cdrs", text, nil, nil); st != 200 {
			t.Fatalf("during the grace: %d", st)
		}
	}
	time.Sleep(time.Until(graceEnds) + 100*time.Millisecond) // the grace is wall-clock time by definition
	var errBody struct {
		Error struct{ Code, Message string }
	}
	if st := e.API("GET", "/v1/cdrs", k.APIKey, nil, &errBody); st != 401 || errBody.Error.Code != "key_expired" {
		t.Fatalf("old key after the grace: %d %+v", st, errBody)
	}
	if st := e.API("GET", "/v1/cdrs", rot.APIKey, nil, nil); st != 200 {
		t.Fatalf("new key after the grace: %d", st)
	}
}

// TestRESTValidation: bad requests get the right status and a JSON error,
// and change nothing.
func TestRESTValidation(t *testing.T) {
	e := StartEdge(t)
	k := e.NewKey("existing", keys.Limits{MaxChannels: 3})
	reader := e.NewKey("reader", keys.Limits{}, "usage:read")
	snapshot := func() string {
		var raw json.RawMessage
		e.MustAPI(200, "GET", "/v1/keys", nil, &raw)
		var trunks json.RawMessage
		e.MustAPI(200, "GET", "/v1/trunks", nil, &trunks)
		return string(raw) + string(trunks)
	}
	before := snapshot()
	tests := []struct {
		name, method, path, key string
		body                    any
		status                  int
		code                    string
	}{
		{"malformed JSON", "POST", "/v1/keys", "", `{"name": "x",`, 400, "bad_request"},
		{"not an object", "POST", "/v1/keys", "", `[1,2]`, 400, "bad_request"},
		{"trailing data", "POST", "/v1/keys", "", `{"name":"x","scopes":["usage:read"]} {}`, 400, "bad_request"},
		{"empty body", "POST", "/v1/keys", "", ``, 400, "bad_request"},
		{"unknown field", "POST", "/v1/keys", "", `{"name":"x","scopes":["usage:read"],"admin":true}`, 400, "bad_request"},
		{"unknown scope", "POST", "/v1/keys", "", `{"name":"x","scopes":["root"]}`, 400, "invalid"},
		{"negative limit on create", "POST", "/v1/keys", "", `{"name":"x","scopes":["usage:read"],"limits":{"max_channels":-1}}`, 400, "invalid"},
		{"negative limit", "PATCH", "/v1/keys/" + k.Key.ID + "/limits", "", `{"max_channels":-5}`, 400, "invalid"},
		{"negative cps", "PATCH", "/v1/keys/" + k.Key.ID + "/limits", "", `{"cps":-1}`, 400, "invalid"},
		{"wrong type", "PATCH", "/v1/keys/" + k.Key.ID + "/limits", "", `{"max_channels":"ten"}`, 400, "bad_request"},
		{"bad prefix", "PATCH", "/v1/keys/" + k.Key.ID + "/limits", "", `{"blocked_prefixes":["+1x"]}`, 400, "invalid"},
		{"empty patch", "PATCH", "/v1/keys/" + k.Key.ID + "/limits", "", `{}`, 400, "bad_request"},
		{"unknown key", "PATCH", "/v1/keys/AAAAAAAAAAAA/limits", "", `{"max_channels":1}`, 404, "not_found"},
		{"bad trunk url", "POST", "/v1/trunks", "", map[string]any{"key_id": k.Key.ID, "numbers": []string{"+1555"}, "ai_url": "http://x", "allowed_sources": []string{"0.0.0.0/0"}}, 400, "invalid"},
		{"bad trunk number", "POST", "/v1/trunks", "", map[string]any{"key_id": k.Key.ID, "numbers": []string{"call me"}, "ai_url": "ws://x", "allowed_sources": []string{"0.0.0.0/0"}}, 400, "invalid"},
		{"trunk for no key", "POST", "/v1/trunks", "", map[string]any{"key_id": "AAAAAAAAAAAA", "numbers": []string{"+1555"}, "ai_url": "ws://x", "allowed_sources": []string{"0.0.0.0/0"}}, 400, "invalid"},
		{"negative grace", "POST", "/v1/keys/" + k.Key.ID + "/rotate", "", `{"grace_seconds":-1}`, 400, "invalid"},
		{"missing auth", "POST", "/v1/keys", "none", `{"name":"x","scopes":["usage:read"]}`, 401, "unauthorized"},
		{"garbage key", "GET", "/v1/keys", "tg_live_nope", nil, 401, "key_unknown"},
		{"unknown key text", "GET", "/v1/keys", "tg_live_AAAAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", nil, 401, "key_unknown"},
		{"missing scope", "POST", "/v1/keys", reader.APIKey, `{"name":"x","scopes":["usage:read"]}`, 403, "scope_missing"},
		{"missing scope, revoke", "POST", "/v1/keys/" + k.Key.ID + "/revoke", reader.APIKey, nil, 403, "scope_missing"},
		{"bad limit param", "GET", "/v1/cdrs?limit=-4", "", nil, 400, "bad_request"},
		{"bad since param", "GET", "/v1/cdrs?since=yesterday", "", nil, 400, "bad_request"},
		{"no such endpoint", "GET", "/v1/nothing", "", nil, 404, "not_found"},
	}
	for _, tt := range tests {
		var body struct {
			Error struct{ Code, Message string }
		}
		st := e.API(tt.method, tt.path, tt.key, tt.body, &body)
		if st != tt.status || body.Error.Code != tt.code || body.Error.Message == "" {
			t.Errorf("%s: %d %+v, want %d %s", tt.name, st, body, tt.status, tt.code)
		}
	}
	if after := snapshot(); after != before {
		t.Fatalf("rejected requests changed the store:\nbefore %s\nafter  %s", before, after)
	}
}

// TestKeyNeverLeaks: the text of a key appears nowhere but in the response
// that created it: not in logs, metrics, errors or the audit log.
func TestKeyNeverLeaks(t *testing.T) {
	e, app, _ := setup(t, keys.Limits{}, "+15554000", nil)
	k := e.NewKey("secretive", keys.Limits{MaxChannels: 1}, "calls:inbound", "usage:read", "keys:admin")
	e.NewTrunk(k.Key.ID, "+15554001", app.URL, nil)
	var seen []string
	record := func(s string) { seen = append(seen, s) }
	// Use the key every way an operator or an attacker would.
	for _, path := range []string{"/v1/cdrs", "/v1/keys", "/v1/keys/" + k.Key.ID, "/v1/audit"} {
		var raw json.RawMessage
		e.API("GET", path, k.APIKey, nil, &raw)
		record(string(raw))
	}
	var raw json.RawMessage
	e.API("POST", "/v1/keys", k.APIKey, `{"broken`, &raw)
	record(string(raw))
	e.API("GET", "/v1/keys", k.APIKey[:len(k.APIKey)-1]+"x", nil, &raw)
	record(string(raw))
	e.API("GET", "/v1/keys", "Basic "+k.APIKey, nil, &raw)
	record(string(raw))
	run := Call{Number: "+15554001", Steps: []Step{{PauseMS: 300}}}.Start(t, e)
	app.Next(t).Expect(t, "start")
	run.Wait(t).MustPass(t)
	// An operator pastes the key where its id belongs.
	for _, p := range []string{"/v1/keys/" + k.APIKey, "/v1/keys/" + k.APIKey + "/revoke", "/v1/keys/" + k.APIKey + "/rotate"} {
		method := "POST"
		if !strings.HasSuffix(p, "e") {
			method = "GET"
		}
		if st := e.API(method, p, "", nil, &raw); st != 404 {
			t.Errorf("%s with key text for an id: %d", method, st)
		}
		record(string(raw))
	}
	e.API("PATCH", "/v1/keys/"+k.APIKey[:40]+"/limits", "", `{"cps":1}`, &raw)
	record(string(raw))
	var rot CreatedKey
	e.MustAPI(200, "POST", "/v1/keys/"+k.Key.ID+"/rotate", map[string]any{"grace_seconds": 60}, &rot)
	e.API("GET", "/v1/cdrs", rot.APIKey, nil, &raw)
	record(string(raw))
	e.MustAPI(200, "POST", "/v1/keys/"+k.Key.ID+"/revoke", nil, nil)
	e.API("GET", "/v1/cdrs", k.APIKey, nil, &raw)
	record(string(raw))
	var audit json.RawMessage
	e.MustAPI(200, "GET", "/v1/audit?limit=1000", nil, &audit)
	record(string(audit))
	res, err := http.Get(e.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	record(string(metrics))
	record(e.Logs())
	// The CLI reading the database directly prints nothing secret either.
	out, _ := exec.Command(edgeBinary, "keys", "list", "--db", e.DB, "--json").CombinedOutput()
	record(string(out))
	out, _ = exec.Command(edgeBinary, "audit", "--db", e.DB, "--json").CombinedOutput()
	record(string(out))
	for _, text := range []string{k.APIKey, rot.APIKey} {
		secret := text[len(text)-32 : len(text)-12] // also catches text cut short
		for i, s := range seen {
			if strings.Contains(s, secret) {
				t.Fatalf("key secret found in output #%d:\n%s", i, s)
			}
		}
	}
	if !strings.Contains(strings.Join(seen, ""), k.Key.ID) {
		t.Fatal("the key id should appear (it is not secret); the test looked at the wrong things")
	}
}

// TestDrain: SIGTERM refuses new calls with 503, lets live calls go on up
// to the deadline, then hangs them up and writes their CDRs.
func TestDrain(t *testing.T) {
	e, app, k := setup(t, keys.Limits{}, "+15555000", nil)
	live := Call{Number: "+15555000", Hangup: "callee", Steps: []Step{{Pcap: g711aPcap}}}.Start(t, e)
	app.Next(t).Expect(t, "start")
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	drainStart := time.Now()
	waitFor(t, 5*time.Second, "readyz to fail", func() bool {
		res, err := http.Get(e.HTTP + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 503
	})
	res := RunSIPp(t, e, Call{Number: "+15555000", Expect: 503}).MustPass(t)
	if got := res.Logged(t, `REASON=(.*) RETRY`)[1]; got != `SIP;cause=503;text="edge draining"` {
		t.Fatalf("Reason %q", got)
	}
	bye := live.Wait(t).MustPass(t)
	if got := bye.Logged(t, `BYE REASON=(.*)`)[1]; !strings.Contains(got, `text="edge draining"`) {
		t.Fatalf("BYE Reason %q", got)
	}
	if took := bye.Ended.Sub(drainStart); took < 1900*time.Millisecond || took > 4*time.Second {
		t.Fatalf("live call ended %v after SIGTERM; the drain deadline is 2 s", took)
	}
	select {
	case <-e.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("edge did not exit after the drain")
	}
	out, err := exec.Command(edgeBinary, "cdrs", "--db", e.DB, "--key", k.Key.ID, "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var cdrs []CDR
	if err := json.Unmarshal(out, &cdrs); err != nil || len(cdrs) != 1 {
		t.Fatalf("CDRs after drain: %s %v", out, err)
	}
	if c := cdrs[0]; c.Status != "done" || c.HangupCause != "edge draining" || c.BilledSeconds < 2 || c.BilledSeconds != ceilSeconds(c.DurationMS) {
		t.Fatalf("CDR %+v", c)
	}
}

// TestStoppedDuringSetup: a call whose key is revoked, or whose edge drains,
// while the app's handshake is still pending is refused, not answered.
func TestStoppedDuringSetup(t *testing.T) {
	e, app, k := setup(t, keys.Limits{}, "+15555100", nil)
	app.HandshakeDelay = 3 * time.Second
	run := Call{Number: "+15555100", Expect: 403}.Start(t, e)
	app.WaitDialling(t)
	e.MustAPI(200, "POST", "/v1/keys/"+k.Key.ID+"/revoke", nil, nil)
	res := run.Wait(t).MustPass(t)
	if got := res.Logged(t, `REASON=(.*) RETRY`)[1]; got != `SIP;cause=403;text="key revoked"` {
		t.Fatalf("Reason %q", got)
	}
	if c := e.WaitCDRs(k.Key.ID, 1)[0]; c.FinalCode != 403 || !c.AnswerAt.IsZero() || c.BilledSeconds != 0 {
		t.Fatalf("CDR %+v", c)
	}

	// Drain with only a call in setup: its 503 comes at the deadline.
	k2 := e.NewKey("drain-setup", keys.Limits{})
	e.NewTrunk(k2.Key.ID, "+15555101", app.URL, nil)
	app.HandshakeDelay = 10 * time.Second
	run = Call{Number: "+15555101", Expect: 503}.Start(t, e)
	app.WaitDialling(t)
	e.cmd.Process.Signal(syscall.SIGTERM)
	res = run.Wait(t).MustPass(t)
	if got := res.Logged(t, `REASON=(.*) RETRY`)[1]; got != `SIP;cause=503;text="edge draining"` {
		t.Fatalf("Reason %q", got)
	}
	select {
	case <-e.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("edge did not exit")
	}
	out, err := exec.Command(edgeBinary, "cdrs", "--db", e.DB, "--key", k2.Key.ID, "--json").Output()
	if err != nil || !strings.Contains(string(out), `"final_code": 503`) {
		t.Fatalf("CDR after drain: %s %v", out, err)
	}
}
