package e2e

import (
	"strings"
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
