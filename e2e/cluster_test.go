package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"trunkgate/internal/sqldb/sqldbtest"
	"trunkgate/keys"
)

// TestCLIOfflineRevokeReachesARunningEdge: `trunkgate keys revoke --db`
// against the database of a running edge ends the key's live call there
// within a second, and its next call is refused.
func TestCLIOfflineRevokeReachesARunningEdge(t *testing.T) {
	e, app, k := setup(t, keys.Limits{}, "+15558000", nil)
	run := Call{Number: "+15558000", Hangup: "callee", Steps: []Step{{Pcap: g711aPcap}}}.Start(t, e)
	conn := app.Next(t)
	conn.Expect(t, "start")
	conn.Expect(t, "media")
	revoked := time.Now()
	if out := e.cli(t, "keys", "revoke", "--db", e.DB, k.Key.ID); !strings.Contains(out, "Revoked key") {
		t.Fatalf("revoke --db: %s", out)
	}
	res := run.Wait(t).MustPass(t)
	took := res.Ended.Sub(revoked)
	t.Logf("revoked with --db: BYE answered %v later", took.Round(time.Millisecond))
	if took > time.Second || !strings.Contains(res.Logged(t, `BYE REASON=(.*)`)[1], "key revoked") {
		t.Fatalf("BYE %v after an offline revoke (want within 1 s): %s", took, res.Logged(t, `BYE REASON=(.*)`)[1])
	}
	RunSIPp(t, e, Call{Number: "+15558000", Expect: 403}).MustPass(t)
}

// startCluster runs two edges on one fresh PostgreSQL database.
func startCluster(t *testing.T, extraArgs ...string) (a, b *Edge) {
	t.Helper()
	url := sqldbtest.PostgresURL(t)
	a = StartEdge(t, append([]string{"--db", url, "--node-name", "edge-a"}, extraArgs...)...)
	// The second edge imports the same admin key: one cluster, one admin.
	b = startEdgeAs(t, a.AdminKey, append([]string{"--db", url, "--node-name", "edge-b"}, extraArgs...)...)
	return a, b
}

// TestClusterChangesAndRevocation: a key and a trunk created on edge A
// take calls on edge B; a key revoked on A ends its call live on B within
// a second.
func TestClusterChangesAndRevocation(t *testing.T) {
	a, b := startCluster(t)
	app := StartApp(t)
	k := a.NewKey("shared", keys.Limits{})
	a.NewTrunk(k.Key.ID, "+15558100", app.URL, nil)
	var run *SIPpRun
	waitFor(t, 2*time.Second, "the key and trunk on edge B", func() bool {
		var tr struct{ Trunks []struct{ ID string } }
		b.MustAPI(200, "GET", "/v1/trunks", nil, &tr)
		return len(tr.Trunks) == 1
	})
	run = Call{Number: "+15558100", Hangup: "callee", Steps: []Step{{Pcap: g711aPcap}}}.Start(t, b)
	conn := app.Next(t)
	conn.Expect(t, "start")
	conn.Expect(t, "media")
	revoked := time.Now()
	a.MustAPI(200, "POST", "/v1/keys/"+k.Key.ID+"/revoke", nil, nil)
	res := run.Wait(t).MustPass(t)
	took := res.Ended.Sub(revoked)
	t.Logf("revoked on edge A: edge B's BYE answered %v later", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("BYE from edge B %v after the revocation on edge A, want within 1 s", took)
	}
	if c := b.WaitCDRs(k.Key.ID, 1)[0]; c.HangupCause != "key revoked" {
		t.Fatalf("CDR %+v", c)
	}
}

// eitherRun is SIPp placing calls that may be answered or refused
// (testdata/sipp/uac_either.xml).
type eitherRun struct {
	cmd    *exec.Cmd
	dir    string
	screen *bytes.Buffer
	done   chan error
}

// startEither places calls toward e at rate a second; each answered call
// is held for holdMS.
func startEither(t *testing.T, e *Edge, number string, calls, rate, holdMS int) *eitherRun {
	t.Helper()
	scenario, err := filepath.Abs(filepathFromRoot("testdata/sipp/uac_either.xml"))
	if err != nil {
		t.Fatal(err)
	}
	sipPort, mediaPort := sippPorts(t)
	r := &eitherRun{dir: t.TempDir(), screen: &bytes.Buffer{}, done: make(chan error, 1)}
	r.cmd = exec.Command("sipp", fmt.Sprintf("127.0.0.1:%d", e.SIPPort), "-sf", scenario, "-s", number,
		"-m", strconv.Itoa(calls), "-r", strconv.Itoa(rate), "-l", strconv.Itoa(calls), "-d", strconv.Itoa(holdMS),
		"-i", "127.0.0.1", "-p", strconv.Itoa(sipPort), "-mi", "127.0.0.1", "-mp", strconv.Itoa(mediaPort),
		"-nostdin", "-timeout", "60s", "-timeout_error", "-trace_logs", "-log_file", filepath.Join(r.dir, "logs.log"))
	r.cmd.Dir = r.dir
	r.cmd.Stdout, r.cmd.Stderr = r.screen, r.screen
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() { r.cmd.Process.Kill() })
	return r
}

var outcomeLine = regexp.MustCompile(`OUTCOME (\d+)`)

// outcomes waits for SIPp to finish and counts its calls' final codes.
func (r *eitherRun) outcomes(t *testing.T) map[int]int {
	t.Helper()
	if err := <-r.done; err != nil {
		t.Fatalf("SIPp: %v\n%s", err, tail(r.screen.String(), 40))
	}
	logs, err := os.ReadFile(filepath.Join(r.dir, "logs.log"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int{}
	for _, m := range outcomeLine.FindAllStringSubmatch(string(logs), -1) {
		code, _ := strconv.Atoi(m[1])
		out[code]++
	}
	return out
}

// refusals sums a refusal reason's metric of a key over edges.
func refusals(keyID, reason string, edges ...*Edge) float64 {
	var sum float64
	for _, e := range edges {
		v, _ := e.Metric(`trunkgate_refusals_total{key_id="` + keyID + `",reason="` + reason + `"}`)
		sum += v
	}
	return sum
}

// waitShared waits until edge b serves the trunk a created.
func waitShared(t *testing.T, b *Edge, trunks int) {
	t.Helper()
	waitFor(t, 2*time.Second, "the key and trunk on edge B", func() bool {
		var tr struct{ Trunks []struct{ ID string } }
		b.MustAPI(200, "GET", "/v1/trunks", nil, &tr)
		return len(tr.Trunks) == trunks
	})
}

// channelsInUse is the key's live calls as an edge counts them.
func channelsInUse(e *Edge, keyID string) int {
	var v struct {
		ChannelsInUse int `json:"channels_in_use"`
	}
	e.MustAPI(200, "GET", "/v1/keys/"+keyID, nil, &v)
	return v.ChannelsInUse
}

// TestClusterChannelCapAcrossEdges: a key with max_channels 3; ten calls
// at once, five to each edge: exactly three are answered and seven get
// 486, round after round.
func TestClusterChannelCapAcrossEdges(t *testing.T) {
	a, b := startCluster(t)
	app := StartApp(t)
	k := a.NewKey("capped", keys.Limits{MaxChannels: 3})
	a.NewTrunk(k.Key.ID, "+15558200", app.URL, nil)
	waitShared(t, b, 1)
	const rounds = 3
	for round := range rounds {
		ra := startEither(t, a, "+15558200", 5, 200, 2000)
		rb := startEither(t, b, "+15558200", 5, 200, 2000)
		oa, ob := ra.outcomes(t), rb.outcomes(t)
		answered, busy := oa[200]+ob[200], oa[486]+ob[486]
		t.Logf("round %d: edge A answered %d, refused %d; edge B answered %d, refused %d", round, oa[200], oa[486], ob[200], ob[486])
		if answered != 3 || busy != 7 {
			t.Fatalf("round %d: %d answered and %d refused 486 over both edges, want 3 and 7 (A %v, B %v)", round, answered, busy, oa, ob)
		}
		waitFor(t, 3*time.Second, "the key's channels free on both edges", func() bool {
			return channelsInUse(a, k.Key.ID) == 0 && channelsInUse(b, k.Key.ID) == 0
		})
	}
	if got := refusals(k.Key.ID, "channel_cap", a, b); got != 7*rounds {
		t.Fatalf("channel_cap refusals over both edges %v, want %d", got, 7*rounds)
	}
	na, _ := a.Metric("trunkgate_admission_seconds_count")
	nb, _ := b.Metric("trunkgate_admission_seconds_count")
	if na+nb != 10*rounds {
		t.Fatalf("admissions timed %v + %v, want %d (admitted and refused)", na, nb, 10*rounds)
	}
	answered := 0
	for _, c := range b.WaitCDRs(k.Key.ID, 3*rounds) {
		if c.FinalCode == 200 && c.BilledSeconds >= 2 {
			answered++
		}
	}
	if answered != 3*rounds {
		t.Fatalf("%d answered CDRs of at least 2 s, want %d", answered, 3*rounds)
	}
}

// TestClusterDeadEdgeChannelsHeal: kill -9 edge A with two live calls;
// edge B frees their channels once A's heartbeat is overdue and bills
// them to their last checkpoint.
func TestClusterDeadEdgeChannelsHeal(t *testing.T) {
	a, b := startCluster(t, "--node-timeout", "2s", "--checkpoint-interval", "1s")
	app := StartApp(t)
	k := a.NewKey("healing", keys.Limits{MaxChannels: 2, RatePerMinute: 60_000})
	a.NewTrunk(k.Key.ID, "+15558300", app.URL, nil)
	waitShared(t, b, 1)
	var runs []*SIPpRun
	for range 2 {
		runs = append(runs, Call{Number: "+15558300", Hangup: "callee", WaitByeMS: 30000, Steps: []Step{{Pcap: g711aPcap}}}.Start(t, a))
		app.Next(t).Expect(t, "start")
	}
	waitFor(t, 2*time.Second, "edge B to see edge A's two calls", func() bool { return channelsInUse(b, k.Key.ID) == 2 })
	RunSIPp(t, b, Call{Number: "+15558300", Expect: 486}).MustPass(t)
	if n, _ := b.Metric("trunkgate_cluster_nodes"); n != 2 {
		t.Fatalf("edge B sees %v nodes, want 2", n)
	}
	time.Sleep(1500 * time.Millisecond) // the calls run past a checkpoint
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.exited
	killed := time.Now()
	for _, r := range runs {
		r.cmd.Process.Kill()
	}
	var recovered []CDR
	waitFor(t, 10*time.Second, "edge B to close edge A's calls", func() bool {
		recovered = recovered[:0]
		for _, c := range b.CDRs(k.Key.ID) {
			if c.Status == "recovered" {
				recovered = append(recovered, c)
			}
		}
		return len(recovered) == 2 && channelsInUse(b, k.Key.ID) == 0
	})
	healed := time.Since(killed)
	t.Logf("edge A killed: edge B freed its channels and closed its calls %v later (node timeout 2 s)", healed.Round(time.Millisecond))
	for _, c := range recovered {
		if c.Node != "edge-a" || c.BilledSeconds < 1 || c.CostMicros != c.BilledSeconds*1000 || !strings.Contains(c.HangupCause, "edge node stopped") {
			t.Fatalf("recovered CDR %+v", c)
		}
	}
	if dead, _ := b.Metric("trunkgate_cluster_dead_nodes_total"); dead != 1 {
		t.Fatalf("edge B counted %v dead nodes, want 1", dead)
	}
	waitFor(t, time.Second, "edge B to see itself alone", func() bool { n, _ := b.Metric("trunkgate_cluster_nodes"); return n == 1 })
	// Both channels are free again: two calls on B are answered.
	RunSIPp(t, b, Call{Number: "+15558300", Calls: 2, Rate: 10, Steps: []Step{{PauseMS: 500}}}).MustPass(t)
}

// TestClusterCallRate: a key with cps 5; SIPp offers 20 calls a second,
// ten to each edge, for 3 s. The edges share one token bucket: the calls
// admitted over the offer's span T are at most its burst (5, full at the
// start) over 5·T, and at least 5·T less one; T is 2.9 s, give or take
// the 0.5 s the two SIPp may start apart.
func TestClusterCallRate(t *testing.T) {
	a, b := startCluster(t)
	app := StartApp(t)
	go func() { // the app answers every call
		for {
			select {
			case <-app.conns:
			case <-t.Context().Done():
				return
			}
		}
	}()
	k := a.NewKey("paced", keys.Limits{CPS: 5})
	a.NewTrunk(k.Key.ID, "+15558400", app.URL, nil)
	waitShared(t, b, 1)
	start := time.Now()
	ra := startEither(t, a, "+15558400", 30, 10, 100)
	rb := startEither(t, b, "+15558400", 30, 10, 100)
	oa, ob := ra.outcomes(t), rb.outcomes(t)
	span := 2.9 // seconds from the first INVITE to the last, at 10 a second
	admitted, limited := oa[200]+ob[200], oa[503]+ob[503]
	t.Logf("cps 5 over two edges, 60 calls offered in %.1f s: %d admitted (A %d, B %d), %d refused call_rate; took %v",
		span, admitted, oa[200], ob[200], limited, time.Since(start).Round(time.Millisecond))
	if admitted+limited != 60 {
		t.Fatalf("outcomes A %v, B %v: want 60 calls answered or refused 503", oa, ob)
	}
	if lo, hi := 5*span-1, 5*(span+0.5)+5; float64(admitted) < lo || float64(admitted) > hi {
		t.Fatalf("%d calls admitted at cps 5 over %.1f s, want %.1f..%.1f", admitted, span, lo, hi)
	}
	if got := refusals(k.Key.ID, "call_rate", a, b); got != float64(limited) {
		t.Fatalf("call_rate refusals metric %v, want %d", got, limited)
	}
}

// TestClusterCallsListAndHangupAcrossEdges: edge B lists the call edge A
// holds, with its node, and an operator's hang-up on B ends it on A
// within a second.
func TestClusterCallsListAndHangupAcrossEdges(t *testing.T) {
	a, b := startCluster(t)
	app := StartApp(t)
	k := a.NewKey("listed", keys.Limits{})
	a.NewTrunk(k.Key.ID, "+15558500", app.URL, nil)
	waitShared(t, b, 1)
	run := Call{Number: "+15558500", Hangup: "callee", Steps: []Step{{Pcap: g711aPcap}}}.Start(t, a)
	app.Next(t).Expect(t, "start")
	type listed struct {
		Calls []struct {
			CallID string `json:"call_id"`
			KeyID  string `json:"key_id"`
			Node   string `json:"node"`
			State  string `json:"state"`
		}
	}
	var onB listed
	waitFor(t, 2*time.Second, "edge B to list edge A's call", func() bool {
		b.MustAPI(200, "GET", "/v1/calls", nil, &onB)
		return len(onB.Calls) == 1
	})
	if c := onB.Calls[0]; c.Node != "edge-a" || c.KeyID != k.Key.ID || c.State != "answered" {
		t.Fatalf("edge B lists %+v", c)
	}
	if out := b.cli(t, "calls", "list"); !strings.Contains(out, "edge-a") {
		t.Fatalf("calls list on edge B:\n%s", out)
	}
	hungUp := time.Now()
	b.MustAPI(202, "POST", "/v1/calls/"+onB.Calls[0].CallID+"/hangup", nil, nil)
	res := run.Wait(t).MustPass(t)
	took := res.Ended.Sub(hungUp)
	t.Logf("hang-up on edge B of edge A's call: BYE answered %v later", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("BYE %v after the hang-up on the other edge, want within 1 s", took)
	}
	if c := a.WaitCDRs(k.Key.ID, 1)[0]; c.HangupCause != "operator hangup" || c.Node != "edge-a" {
		t.Fatalf("CDR %+v", c)
	}
	b.MustAPI(404, "POST", "/v1/calls/no-such-call/hangup", nil, nil)
}

// TestClusterSpendCapAcrossEdges: a key whose cap pays for 6.5 seconds of
// talk has one call on each edge: both are hung up as the key's spend
// over the cluster reaches the cap, the total stays under it, and then
// neither edge admits a call the key cannot pay a second of.
func TestClusterSpendCapAcrossEdges(t *testing.T) {
	a, b := startCluster(t)
	app := StartApp(t)
	const unit = 1_000_000 // a second of talk at 60 units a minute
	k := a.NewKey("capped", keys.Limits{RatePerMinute: 60 * unit, MonthlySpendCap: 6*unit + unit/2})
	a.NewTrunk(k.Key.ID, "+15558600", app.URL, nil)
	waitShared(t, b, 1)
	var runs []*SIPpRun
	for _, e := range []*Edge{a, b} {
		runs = append(runs, Call{Number: "+15558600", Hangup: "callee", WaitByeMS: 20000}.Start(t, e))
		app.Next(t).Expect(t, "start")
	}
	for _, r := range runs {
		if res := r.Wait(t).MustPass(t); !strings.Contains(res.Log, `text="monthly spend cap reached"`) {
			t.Fatalf("BYE without the spend cap's Reason:\n%s", res.Log)
		}
	}
	cdrs := b.WaitCDRs(k.Key.ID, 2)
	total := cdrs[0].CostMicros + cdrs[1].CostMicros
	t.Logf("one call on each edge: %d ms on %s and %d ms on %s, billed %d+%d s, %d micros against a cap of %d",
		cdrs[0].DurationMS, cdrs[0].Node, cdrs[1].DurationMS, cdrs[1].Node, cdrs[0].BilledSeconds, cdrs[1].BilledSeconds,
		total, 6*unit+unit/2)
	if total != 6*unit || cdrs[0].Node == cdrs[1].Node {
		t.Fatalf("CDRs %+v", cdrs)
	}
	// Either edge now refuses a call the key cannot pay for.
	for _, e := range []*Edge{a, b} {
		waitFor(t, 2*time.Second, "the month's spend on "+e.HTTP, func() bool {
			var kv keyView
			e.MustAPI(200, "GET", "/v1/keys/"+k.Key.ID, nil, &kv)
			return kv.Spend.MonthToDate == total
		})
		RunSIPp(t, e, Call{Number: "+15558600", Expect: 402}).MustPass(t)
	}
}
