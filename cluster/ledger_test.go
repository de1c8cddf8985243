package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trunkgate/internal/sqldb"
	"trunkgate/internal/sqldb/sqldbtest"
	"trunkgate/ledger"
	"trunkgate/refusal"
)

// sharedTable opens a fresh PostgreSQL database with the ledger's tables.
func sharedTable(t testing.TB) (*LedgerTable, *sqldb.DB) {
	t.Helper()
	db, err := sqldb.Open(sqldbtest.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	table, err := OpenLedgerTable(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return table, db
}

func sharedNode(t testing.TB, table *LedgerTable, name string) *ledger.Shared {
	t.Helper()
	s := ledger.NewShared(name, table, slog.New(slog.DiscardHandler))
	if err := s.Join(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLedgerTableNeedsPostgres(t *testing.T) {
	db, err := sqldb.Open(t.TempDir() + "/x.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := OpenLedgerTable(context.Background(), db); !errors.Is(err, ErrNeedsPostgres) {
		t.Fatalf("shared ledger on SQLite: %v, want ErrNeedsPostgres", err)
	}
}

// Two nodes race ten calls for a key's three channels, many times over:
// exactly three win each time.
func TestSharedLastChannelGoesOnce(t *testing.T) {
	table, _ := sharedTable(t)
	nodes := []*ledger.Shared{sharedNode(t, table, "a"), sharedNode(t, table, "b")}
	for round := range 25 {
		var wg sync.WaitGroup
		errs := make([]error, 10)
		holds := make([]*ledger.Hold, 10)
		start := make(chan struct{})
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				holds[i], errs[i] = nodes[i%2].Open(ledger.Entry{CallID: fmt.Sprintf("r%d-c%d", round, i), KeyID: "k",
					Direction: "inbound", AdmittedAt: time.Now()}, ledger.Caps{Key: 3})
			}()
		}
		close(start)
		wg.Wait()
		won, capped := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, refusal.ChannelCap):
				capped++
			default:
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if won != 3 || capped != 7 {
			t.Fatalf("round %d: %d admitted, %d refused channel_cap; want 3 and 7", round, won, capped)
		}
		for _, h := range holds {
			if h != nil {
				h.Close()
			}
		}
	}
}

func TestSharedTrunkCapAndCallRate(t *testing.T) {
	table, _ := sharedTable(t)
	a, b := sharedNode(t, table, "a"), sharedNode(t, table, "b")
	open := func(n *ledger.Shared, id string, caps ledger.Caps) error {
		_, err := n.Open(ledger.Entry{CallID: id, KeyID: "k", TrunkID: "t", Direction: "outbound"}, caps)
		return err
	}
	if err := open(a, "t1", ledger.Caps{Trunk: 1}); err != nil {
		t.Fatal(err)
	}
	if err := open(b, "t2", ledger.Caps{Trunk: 1}); !errors.Is(err, refusal.TrunkChannelCap) {
		t.Fatalf("second call on a one-channel trunk: %v, want trunk_channel_cap", err)
	}
	// cps 5: a full bucket holds five calls, across both nodes.
	admitted := 0
	for i := range 12 {
		err := open([]*ledger.Shared{a, b}[i%2], fmt.Sprint("r", i), ledger.Caps{CPS: 5})
		switch {
		case err == nil:
			admitted++
		case !errors.Is(err, refusal.CallRate):
			t.Fatal(err)
		}
	}
	if admitted != 5 {
		t.Fatalf("cps 5: %d of 12 immediate calls admitted, want 5", admitted)
	}
}

// Each node sees the other's calls after a sync; an order to end a call
// reaches its holder; a node that stops heartbeating has its channels
// freed by exactly one survivor.
func TestSharedSyncOrdersAndDeadNodes(t *testing.T) {
	ctx := context.Background()
	table, _ := sharedTable(t)
	a, b := sharedNode(t, table, "a"), sharedNode(t, table, "b")
	var deadMu sync.Mutex
	var dead []string
	for _, n := range []*ledger.Shared{a, b} {
		n.OnDead = func(node string) { deadMu.Lock(); dead = append(dead, node); deadMu.Unlock() }
	}
	ha, err := a.Open(ledger.Entry{CallID: "on-a", KeyID: "k", Direction: "inbound"}, ledger.Caps{})
	if err != nil {
		t.Fatal(err)
	}
	ha.Answer(time.Now())
	if _, err := b.Open(ledger.Entry{CallID: "on-b", KeyID: "k", Direction: "inbound"}, ledger.Caps{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := b.Count("k"); got != 2 {
		t.Fatalf("b counts %d calls for k, want 2", got)
	}
	if e, ok := b.Get("on-a"); !ok || e.Node != "a" || !e.Answered() {
		t.Fatalf("b sees a's call as %+v (%v)", e, ok)
	}
	if got := len(b.Local()); got != 1 {
		t.Fatalf("b holds %d calls, want 1", got)
	}
	if !b.EndCall("on-a", refusal.OperatorHangup) {
		t.Fatal("b could not order a's call to end")
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ha.Context().Done():
		if r, _ := refusal.As(context.Cause(ha.Context())); r != refusal.OperatorHangup {
			t.Fatalf("a's call ended with %v", context.Cause(ha.Context()))
		}
	default:
		t.Fatal("a did not end its call when b ordered it")
	}
	ha.Close()

	// c takes two calls and falls silent. a and b judge it dead once they
	// have been in sync for longer than their DeadAfter, and c's
	// heartbeat is older than that.
	c := sharedNode(t, table, "c")
	for i := range 2 {
		if _, err := c.Open(ledger.Entry{CallID: fmt.Sprint("on-c", i), KeyID: "k", Direction: "inbound"}, ledger.Caps{}); err != nil {
			t.Fatal(err)
		}
	}
	a.DeadAfter, b.DeadAfter = 300*time.Millisecond, 300*time.Millisecond
	deadline := time.Now().Add(5 * time.Second)
	for {
		var wg sync.WaitGroup
		for _, n := range []*ledger.Shared{a, b} {
			wg.Add(1)
			go func() { defer wg.Done(); _ = n.Sync(ctx) }()
		}
		wg.Wait()
		deadMu.Lock()
		found := len(dead) > 0
		deadMu.Unlock()
		if found || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // a and b heartbeat; c does not
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dead, []string{"c"}) {
		t.Fatalf("dead nodes reported %v, want [c] once", dead)
	}
	if got := a.Count("k"); got != 1 {
		t.Fatalf("after c died a counts %d calls for k, want 1 (b's)", got)
	}
	if alive := a.Alive(); !slices.Equal(alive, []string{"a", "b"}) {
		t.Fatalf("alive %v, want [a b]", alive)
	}
}

// A closed call frees its channel at once; a row a node no longer holds
// (its delete failed) is dropped by its next sync.
func TestSharedCloseAndStaleRows(t *testing.T) {
	ctx := context.Background()
	table, db := sharedTable(t)
	a := sharedNode(t, table, "a")
	h, err := a.Open(ledger.Entry{CallID: "x", KeyID: "k", Direction: "inbound"}, ledger.Caps{Key: 1})
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	h.Close()
	if _, err := a.Open(ledger.Entry{CallID: "y", KeyID: "k", Direction: "inbound"}, ledger.Caps{Key: 1}); err != nil {
		t.Fatalf("channel not freed by Close: %v", err)
	}
	if _, err := db.Exec(`INSERT INTO live_calls (call_id, key_id, trunk_id, trunk_capped, direction, destination, node, admitted_ms, rate, spend_cap)
		VALUES ('stale', 'k', '', false, 'inbound', '', 'a', ?, 0, 0)`, time.Now().Add(-time.Minute).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM live_calls WHERE key_id='k'`).Scan(&n)
	if n != 1 {
		t.Fatalf("%d rows for k after sync, want 1", n)
	}
}

// BenchmarkSharedOpen measures admission against PostgreSQL on loopback:
// one round trip per call (ledger_open), reported as p50 and p99.
func BenchmarkSharedOpen(b *testing.B) {
	table, _ := sharedTable(b)
	n := sharedNode(b, table, "a")
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		h, err := n.Open(ledger.Entry{CallID: fmt.Sprint("b", i), KeyID: "k", Direction: "inbound"}, ledger.Caps{Key: 100, CPS: 1e9})
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		h.Close()
		b.StartTimer()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkSharedOpenParallel admits calls of one key from two nodes at
// once, 8 at a time: the key's advisory lock serialises them.
func BenchmarkSharedOpenParallel(b *testing.B) {
	table, _ := sharedTable(b)
	nodes := []*ledger.Shared{sharedNode(b, table, "a"), sharedNode(b, table, "b")}
	var seq atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			h, err := nodes[i%2].Open(ledger.Entry{CallID: fmt.Sprint("p", i), KeyID: "k", Direction: "inbound"}, ledger.Caps{Key: 1000})
			if err != nil {
				b.Error(err)
				return
			}
			h.Close()
		}
	})
}

// TestSharedNodeNameInUse: a second edge under a running edge's name is
// refused; once the first has been silent a while, the name may be taken
// again (a restart after a crash).
func TestSharedNodeNameInUse(t *testing.T) {
	ctx := context.Background()
	table, db := sharedTable(t)
	first := sharedNode(t, table, "a")
	if _, err := first.Open(ledger.Entry{CallID: "held", KeyID: "k", Direction: "inbound"}, ledger.Caps{}); err != nil {
		t.Fatal(err)
	}
	second := ledger.NewShared("a", table, slog.New(slog.DiscardHandler))
	if err := second.Join(ctx); !errors.Is(err, ledger.ErrNodeNameInUse) {
		t.Fatalf("joining under a running edge's name: %v, want ErrNodeNameInUse", err)
	}
	// The first edge crashed six seconds ago: its successor takes the name
	// and clears its rows.
	if _, err := db.Exec(`UPDATE ledger_nodes SET heartbeat_ms = heartbeat_ms - 6000 WHERE name = 'a'`); err != nil {
		t.Fatal(err)
	}
	if err := second.Join(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM live_calls`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d rows of the crashed run left", n)
	}
}

// A node that comes back from a gap in its own syncs (a database outage,
// a pause) does not take the others for dead; a node that others did take
// for dead counts its calls again when it is back.
func TestSharedOutagesAndRejoin(t *testing.T) {
	ctx := context.Background()
	table, db := sharedTable(t)
	a, b := sharedNode(t, table, "a"), sharedNode(t, table, "b")
	a.DeadAfter, b.DeadAfter = 300*time.Millisecond, 300*time.Millisecond
	var dead []string
	a.OnDead = func(node string) { dead = append(dead, node) }
	if _, err := b.Open(ledger.Entry{CallID: "on-b", KeyID: "k", Direction: "inbound"}, ledger.Caps{Key: 1}); err != nil {
		t.Fatal(err)
	}
	// Both were cut off from the database for a while: every heartbeat is
	// old when a syncs again, yet a has not been in sync long enough to
	// judge b.
	if _, err := db.Exec(`UPDATE ledger_nodes SET heartbeat_ms = heartbeat_ms - 5000`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // a's own gap: no sync for longer than four intervals
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(dead) != 0 || a.Count("k") != 1 {
		t.Fatalf("after its own gap a reaped %v and counts %d calls of k; want none reaped and b's call counted", dead, a.Count("k"))
	}
	// Now a stays in sync while b is silent: b is reaped.
	deadline := time.Now().Add(5 * time.Second)
	for len(dead) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(dead, []string{"b"}) || a.Count("k") != 0 {
		t.Fatalf("reaped %v, a counts %d; want [b] and 0", dead, a.Count("k"))
	}
	// b was only slow: its next sync puts its call back, and the key's one
	// channel is taken again.
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Open(ledger.Entry{CallID: "on-a", KeyID: "k", Direction: "inbound"}, ledger.Caps{Key: 1}); !errors.Is(err, refusal.ChannelCap) {
		t.Fatalf("with b back, a second call on a one-channel key: %v, want channel_cap", err)
	}
}
