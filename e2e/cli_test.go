package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"trunkgate/keys"
)

// cli runs the trunkgate binary as an operator would, against the edge.
func (e *Edge) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.cliCmd(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("trunkgate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// cliCmd is the CLI command against the edge, to run as the test likes.
func (e *Edge) cliCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(edgeBinary, args...)
	cmd.Env = append(os.Environ(), "TRUNKGATE_ADMIN_KEY="+e.AdminKey, "TRUNKGATE_SERVER="+e.HTTP, "TRUNKGATE_CA="+e.CA)
	return cmd
}

// TestCLILifecycle: the whole key lifecycle from the CLI against a running
// edge, with its effect on a live call.
func TestCLILifecycle(t *testing.T) {
	e := StartEdge(t)
	app := StartApp(t)
	out := e.cli(t, "keys", "create", "--name", "cli-key", "--live", "--scopes", "calls:inbound,usage:read", "--max-channels", "1", "--cps", "10")
	text := regexp.MustCompile(`tg_live_[A-Za-z0-9]{12}_[A-Za-z0-9]{32}`).FindString(out)
	id := regexp.MustCompile(`Created key ([A-Za-z0-9]{12})`).FindStringSubmatch(out)
	if text == "" || id == nil {
		t.Fatalf("keys create printed no key:\n%s", out)
	}
	keyID := id[1]
	e.cli(t, "trunks", "create", "--key", keyID, "--number", "+15557000", "--ai-url", app.URL, "--allow", "127.0.0.1/32", "--param", "team=cli")
	e.cli(t, "trunks", "create", "--key", keyID, "--number", "+15557001", "--ai-url", app.URL, "--allow", "127.0.0.1/32",
		"--digest-user", "pbx-7", "--digest-password", "cli-digest-pw")
	if out := e.cli(t, "trunks", "list"); !strings.Contains(out, "+15557000") || !regexp.MustCompile(`\+15557001 .* pbx-7`).MatchString(out) ||
		strings.Contains(out, "cli-digest-pw") {
		t.Fatalf("trunks list:\n%s", out)
	}
	if out := e.cli(t, "keys", "show", keyID); !regexp.MustCompile(`max_channels\s+1 \(in use: 0\)`).MatchString(out) {
		t.Fatalf("keys show:\n%s", out)
	}

	run := Call{Number: "+15557000", Hangup: "callee", Steps: []Step{{Pcap: g711aPcap}}}.Start(t, e)
	conn := app.Next(t)
	start := conn.Expect(t, "start")
	if start.Start.CustomParameters["team"] != "cli" {
		t.Fatalf("customParameters %v", start.Start.CustomParameters)
	}
	if out := e.cli(t, "keys", "list"); !regexp.MustCompile(keyID + `\s+cli-key\s+live\s+active\s+\S+\s+1/1`).MatchString(out) {
		t.Fatalf("keys list while a call is up:\n%s", out)
	}
	RunSIPp(t, e, Call{Number: "+15557000", Expect: 486}).MustPass(t)
	e.cli(t, "keys", "set", keyID, "--max-channels", "2")
	second := Call{Number: "+15557000", Steps: []Step{{PauseMS: 300}}}.Start(t, e)
	app.Next(t).Expect(t, "start")
	second.Wait(t).MustPass(t)

	var calls []struct {
		CallID string `json:"call_id"`
		KeyID  string `json:"key_id"`
	}
	if err := json.Unmarshal([]byte(e.cli(t, "calls", "list", "--json")), &calls); err != nil || len(calls) != 1 || calls[0].KeyID != keyID {
		t.Fatalf("calls list: %+v %v", calls, err)
	}
	e.cli(t, "calls", "hangup", calls[0].CallID)
	res := run.Wait(t).MustPass(t)
	if got := res.Logged(t, `BYE REASON=(.*)`)[1]; !strings.Contains(got, "operator hangup") {
		t.Fatalf("BYE Reason %q", got)
	}

	out = e.cli(t, "keys", "rotate", keyID, "--grace", "1h")
	newText := regexp.MustCompile(`tg_live_[A-Za-z0-9]{12}_[A-Za-z0-9]{32}`).FindString(out)
	if newText == "" || newText == text || !strings.Contains(newText, keyID) {
		t.Fatalf("keys rotate:\n%s", out)
	}
	for _, k := range []string{text, newText} {
		if st := e.API("GET", "/v1/cdrs", k, nil, nil); st != 200 {
			t.Fatalf("after rotation a key text gets %d", st)
		}
	}
	// A bad flag value is a clear error, not a crash.
	cmd := exec.Command(edgeBinary, "keys", "set", keyID, "--max-channels", "-1", "--server", e.HTTP)
	cmd.Env = append(os.Environ(), "TRUNKGATE_ADMIN_KEY="+e.AdminKey)
	if bad, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(bad), "max_channels") {
		t.Fatalf("negative limit from the CLI: %v %s", err, bad)
	}
	if out := e.cli(t, "keys", "revoke", keyID); !strings.Contains(out, "Revoked key "+keyID) {
		t.Fatalf("keys revoke:\n%s", out)
	}
	RunSIPp(t, e, Call{Number: "+15557000", Expect: 403}).MustPass(t)

	out = e.cli(t, "cdrs", "--key", keyID)
	if strings.Count(out, keyID) != 2 || !strings.Contains(out, "operator hangup") {
		t.Fatalf("cdrs:\n%s", out)
	}
	out = e.cli(t, "audit", "--target", keyID)
	for _, action := range []string{"key.create", "key.set", "key.rotate", "key.revoke", "call.refuse"} {
		if !strings.Contains(out, action) {
			t.Errorf("audit lacks %s:\n%s", action, out)
		}
	}

	// Revoking it again says so and audits nothing more.
	again, err := e.cliCmd("keys", "revoke", keyID).CombinedOutput()
	if err == nil || !strings.Contains(string(again), "already revoked") {
		t.Fatalf("second revoke: %v\n%s", err, again)
	}
	if n := strings.Count(e.cli(t, "audit", "--target", keyID, "--action", "key.revoke"), "key.revoke"); n != 1 {
		t.Fatalf("%d key.revoke audit entries after revoking twice, want 1", n)
	}
	// A key that does not exist is an error, not an empty list.
	for _, id := range []string{"nosuch", "ZZZZZZZZZZZZ"} {
		if none, err := e.cliCmd("cdrs", "--key", id).CombinedOutput(); err == nil || !strings.Contains(string(none), "not found") {
			t.Fatalf("cdrs --key %s: %v\n%s", id, err, none)
		}
	}
	// Metrics: SIP by method and class, RTP packets, and the revoked key
	// gone from the per-key gauges.
	for _, series := range []string{`trunkgate_sip_requests_total{method="INVITE"}`, `trunkgate_sip_requests_total{method="BYE"}`,
		`trunkgate_sip_responses_total{class="2xx"}`, `trunkgate_sip_responses_total{class="4xx"}`,
		`trunkgate_rtp_packets_total{direction="in"}`, `trunkgate_rtp_packets_total{direction="out"}`} {
		if n, ok := e.Metric(series); !ok || n < 1 {
			t.Errorf("%s = %v (present %v), want at least 1", series, n, ok)
		}
	}
	if _, ok := e.Metric(`trunkgate_channels_in_use{key_id="` + keyID + `"}`); ok {
		t.Error("a revoked key still has a channels gauge")
	}
}

// TestCrashLosesNoCDR: kill -9 during a call; the next start bills the call
// to its last checkpoint.
func TestCrashLosesNoCDR(t *testing.T) {
	e := StartEdge(t, "--checkpoint-interval", "1s")
	app := StartApp(t)
	k := e.NewKey("crash", keys.Limits{RatePerMinute: 60_000})
	e.NewTrunk(k.Key.ID, "+15557100", app.URL, nil)
	run := Call{Number: "+15557100", Hangup: "callee", WaitByeMS: 30000, Steps: []Step{{Pcap: g711aPcap}}}.Start(t, e)
	app.Next(t).Expect(t, "start")
	time.Sleep(2500 * time.Millisecond) // the call runs past at least one checkpoint
	e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.exited
	run.cmd.Process.Kill()

	// The same database, a new edge process.
	restart := exec.Command(edgeBinary, "serve", "--db", e.DB, "--sip-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	restart.Env = append(os.Environ(), "TRUNKGATE_ADMIN_KEY="+e.AdminKey)
	stderr := &lockedBuffer{}
	restart.Stderr = stderr
	if err := restart.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		restart.Process.Signal(syscall.SIGTERM)
		restart.Wait()
	}()
	waitFor(t, 10*time.Second, "the recovery log line", func() bool {
		return strings.Contains(stderr.String(), "closed a call left live by the last run")
	})
	out, err := exec.Command(edgeBinary, "cdrs", "--db", e.DB, "--key", k.Key.ID, "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var cdrs []CDR
	if err := json.Unmarshal(out, &cdrs); err != nil || len(cdrs) != 1 {
		t.Fatalf("CDRs after the crash: %s", out)
	}
	c := cdrs[0]
	if c.Status != "recovered" || c.DurationMS < 1300 || c.DurationMS > 2600 || c.BilledSeconds != (c.DurationMS+999)/1000 ||
		c.CostMicros != c.BilledSeconds*1000 {
		t.Fatalf("recovered CDR %+v: want billed to the last checkpoint, at most one interval (1 s) before the kill at 2.5 s", c)
	}
}
