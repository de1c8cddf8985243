package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"trunkgate/internal/sqldb/sqldbtest"
	"trunkgate/ledger"
	"trunkgate/refusal"
)

func TestBilledSecondsAndCost(t *testing.T) {
	for _, tt := range []struct {
		ms, billed, rate, cost int64
	}{
		{0, 0, 60_000, 0}, {-5, 0, 60_000, 0}, {1, 1, 60_000, 1000}, {999, 1, 60_000, 1000}, {1000, 1, 60_000, 1000},
		{1001, 2, 60_000, 2000}, {59_999, 60, 60_000, 60_000}, {61_000, 61, 10_000, 10_167}, {3_600_000, 3600, 0, 0},
	} {
		b := BilledSeconds(tt.ms)
		if c := Cost(b, tt.rate); b != tt.billed || c != tt.cost {
			t.Errorf("%d ms at %d/min: billed %d cost %d, want %d and %d", tt.ms, tt.rate, b, c, tt.billed, tt.cost)
		}
	}
	c := CDR{AnswerMS: 1000, RatePerMinute: 60_000}
	c.Close(time.UnixMilli(3500))
	if c.DurationMS != 2500 || c.BilledSeconds != 3 || c.CostMicros != 3000 || c.Status != StatusDone {
		t.Fatalf("closed CDR %+v", c)
	}
	unanswered := CDR{SetupMS: 1000}
	unanswered.Close(time.UnixMilli(9000))
	if unanswered.DurationMS != 0 || unanswered.BilledSeconds != 0 {
		t.Fatalf("unanswered call billed: %+v", unanswered)
	}
}

func newStore(t testing.TB) *SQLStore {
	t.Helper()
	db := sqldbtest.Open(t)
	s, err := NewSQLStore(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMeterSpendAndCheckpoints(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	// Last month's call does not count toward this month.
	old := CDR{CallID: "CAold", KeyID: "k1", SetupMS: now.AddDate(0, -1, 0).UnixMilli(), AnswerMS: now.AddDate(0, -1, 0).UnixMilli(), RatePerMinute: 60_000_000}
	old.Close(now.AddDate(0, -1, 0).Add(10 * time.Second))
	if err := store.InsertCDR(ctx, &old); err != nil {
		t.Fatal(err)
	}
	live := ledger.NewMemory("edge-1")
	m, err := NewMeter(ctx, store, live, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m.now = func() time.Time { return now }
	m.month = monthStart(now)
	if got := m.MonthToDate("k1"); got != 0 {
		t.Fatalf("last month counted: %d", got)
	}
	// A live call costs as it runs: 1 unit a second.
	hold, err := live.Open(ledger.Entry{CallID: "CA1", KeyID: "k1", RatePerMinute: 60_000_000, SpendCap: 3_000_000}, ledger.Caps{})
	if err != nil {
		t.Fatal(err)
	}
	hold.Answer(now)
	cdr := CDR{CallID: "CA1", KeyID: "k1", SetupMS: now.UnixMilli(), AnswerMS: now.UnixMilli(), RatePerMinute: 60_000_000}
	if err := m.Answer(ctx, &cdr); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2500 * time.Millisecond)
	if got := m.MonthToDate("k1"); got != 3_000_000 {
		t.Fatalf("running cost %d, want 3 s = 3000000", got)
	}
	if sp := m.Spend("k1", 5_000_000); sp.MonthToDate != 3_000_000 || sp.Live != 3_000_000 || sp.Remaining == nil || *sp.Remaining != 2_000_000 {
		t.Fatalf("spend view %+v", sp)
	}
	if sp := m.Spend("k1", 0); sp.Remaining != nil {
		t.Fatalf("no cap, yet remaining %d", *sp.Remaining)
	}
	if m.CanAfford("k1", 3_000_000, 0) || !m.CanAfford("k1", 4_000_000, 60_000_000) || m.CanAfford("k1", 3_999_999, 60_000_000) {
		t.Fatal("CanAfford: a key at its cap, or short of one second, must not afford a call")
	}
	// The cap is 3 s: the call is paid to 3.0 s, so it goes on until the
	// check before its fourth second would start.
	m.EnforceCaps(now)
	if hold.Context().Err() != nil {
		t.Fatalf("hung up at 2.5 s with the third second paid for: %v", context.Cause(hold.Context()))
	}
	m.EnforceCaps(now.Add(400 * time.Millisecond))
	if !errors.Is(context.Cause(hold.Context()), refusal.SpendCap) {
		t.Fatalf("cap not enforced at 2.9 s: %v", context.Cause(hold.Context()))
	}
	m.checkpoint(ctx, now)
	// Crash: a new meter over the same store closes the live call at its
	// checkpoint and bills it.
	// Another node's recovery leaves edge-1's call alone; edge-1's closes it.
	survivor := &Meter{store: store, ledger: ledger.NewMemory("edge-2"), now: func() time.Time { return now }}
	if recovered, err := survivor.Recover(ctx, "edge-3"); err != nil || len(recovered) != 0 {
		t.Fatalf("recovering edge-3 closed %v, %v", recovered, err)
	}
	// Two edges close the dead edge's call at once (each may find it
	// live): it is billed once, whichever wins.
	other := &Meter{store: store, ledger: ledger.NewMemory("edge-4"), now: func() time.Time { return now }}
	var wg sync.WaitGroup
	results, errs := make([][]CDR, 2), make([]error, 2)
	for i, m := range []*Meter{survivor, other} {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], errs[i] = m.Recover(ctx, "edge-1") }()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || len(results[0])+len(results[1]) == 0 {
		t.Fatalf("recovered %v and %v, errors %v", results[0], results[1], errs)
	}
	for _, r := range append(results[0], results[1]...) {
		if r.Node != "edge-1" {
			t.Fatalf("recovered %+v", r)
		}
	}
	var calls int64
	if err := store.db.QueryRow(`SELECT COALESCE(SUM(calls), 0) FROM usage_daily WHERE key_id='k1'`).Scan(&calls); err != nil || calls != 2 {
		t.Fatalf("usage rollup counts %d calls of k1 (%v), want 2 (last month's and the recovered one, once)", calls, err)
	}
	got, err := store.GetCDR(ctx, "CA1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusRecovered || got.DurationMS != 2500 || got.BilledSeconds != 3 || got.CostMicros != 3_000_000 {
		t.Fatalf("recovered CDR %+v", got)
	}
	spend, err := store.MonthSpend(ctx, monthStart(now))
	if err != nil || spend["k1"] != 3_000_000 {
		t.Fatalf("month spend %v, %v", spend, err)
	}
}

func TestStoreListFilters(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i, key := range []string{"a", "b", "a"} {
		c := CDR{CallID: "CA" + string(rune('0'+i)), KeyID: key, SetupMS: base.Add(time.Duration(i) * time.Hour).UnixMilli()}
		c.Close(base.Add(time.Duration(i) * time.Hour))
		if err := s.FinishCDR(ctx, &c); err != nil { // FinishCDR inserts a CDR it has not seen
			t.Fatal(err)
		}
	}
	all, _ := s.ListCDRs(ctx, Filter{})
	onlyA, _ := s.ListCDRs(ctx, Filter{KeyID: "a"})
	late, _ := s.ListCDRs(ctx, Filter{Since: base.Add(90 * time.Minute)})
	if len(all) != 3 || len(onlyA) != 2 || len(late) != 1 || all[0].CallID != "CA2" {
		t.Fatalf("all %d, key a %d, since %d, newest %s", len(all), len(onlyA), len(late), all[0].CallID)
	}
	if _, err := s.GetCDR(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetCDR missing: %v", err)
	}
}

func TestMonthRollover(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	m, err := NewMeter(ctx, store, ledger.NewMemory("edge-1"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC)
	m.now = func() time.Time { return now }
	m.month = monthStart(now)
	old := CDR{CallID: "CAnov", KeyID: "k", AnswerMS: now.Add(-time.Minute).UnixMilli(), RatePerMinute: 60_000}
	old.Close(now)
	if err := m.Finish(ctx, &old); err != nil {
		t.Fatal(err)
	}
	if got := m.MonthToDate("k"); got != 60_000 {
		t.Fatalf("November spend %d", got)
	}
	// 400 ms after midnight, before any tick: November's spend no longer
	// counts, and a call ending now counts in December.
	now = time.Date(2026, 12, 1, 0, 0, 0, 400e6, time.UTC)
	late := CDR{CallID: "CAdec", KeyID: "k", AnswerMS: now.Add(-10 * time.Second).UnixMilli(), RatePerMinute: 60_000}
	late.Close(now)
	if err := m.Finish(ctx, &late); err != nil {
		t.Fatal(err)
	}
	if got := m.MonthToDate("k"); got != 10_000 {
		t.Fatalf("December spend %d, want the 10 s call only", got)
	}
	// A call that ended in November but is finished after midnight stays in November.
	straggler := CDR{CallID: "CAnov2", KeyID: "k", AnswerMS: now.Add(-5 * time.Second).UnixMilli(), RatePerMinute: 60_000}
	straggler.Close(time.Date(2026, 11, 30, 23, 59, 59, 900e6, time.UTC))
	if err := m.Finish(ctx, &straggler); err != nil {
		t.Fatal(err)
	}
	if got := m.MonthToDate("k"); got != 10_000 {
		t.Fatalf("December spend %d after a November straggler", got)
	}
}

func TestMain(m *testing.M) { sqldbtest.Main(m) }

// A call closed as recovered by an edge that took its node for dead, but
// that went on: its true end replaces the recovered bill, and the usage
// rollups and the month's spend count the call once, at its true cost.
func TestRecoveredCallThatWentOn(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	cdr := CDR{CallID: "CAon", KeyID: "k1", Node: "slow", Status: StatusLive, SetupMS: t0.UnixMilli(), AnswerMS: t0.UnixMilli(), RatePerMinute: 60_000_000}
	if err := store.InsertCDR(ctx, &cdr); err != nil {
		t.Fatal(err)
	}
	if err := store.Checkpoint(ctx, []string{"CAon"}, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	m := &Meter{store: store, ledger: ledger.NewMemory("survivor"), now: time.Now}
	if got, err := m.Recover(ctx, "slow"); err != nil || len(got) != 1 || got[0].CostMicros != 2_000_000 {
		t.Fatalf("recovered %+v, %v", got, err)
	}
	final := cdr
	final.Close(t0.Add(10 * time.Second))
	final.Status = StatusDone
	if err := store.FinishCDR(ctx, &final); err != nil {
		t.Fatal(err)
	}
	var calls, cost int64
	if err := store.db.QueryRow(`SELECT SUM(calls), SUM(cost_micros) FROM usage_daily WHERE key_id='k1'`).Scan(&calls, &cost); err != nil {
		t.Fatal(err)
	}
	spend, _ := store.MonthSpend(ctx, monthStart(time.UnixMilli(final.EndMS)))
	if calls != 1 || cost != 10_000_000 || spend["k1"] != 10_000_000 {
		t.Fatalf("rollup %d calls, %d micros; month spend %d; want 1 call and 10 s = 10000000 in both", calls, cost, spend["k1"])
	}
}

// RecoverOrphans closes the live calls of an edge that is gone and was
// silent long enough, and no other.
func TestRecoverOrphans(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	now := time.Now()
	for _, c := range []struct {
		id, node string
		seen     time.Duration // how long ago it was last checkpointed
	}{{"gone", "dead-edge", time.Minute}, {"recent", "dead-edge-2", time.Second}, {"alive", "edge-b", time.Minute},
		{"mine", "edge-a", time.Minute}, {"legacy", "", time.Minute}} {
		cdr := CDR{CallID: c.id, KeyID: "k", Node: c.node, Status: StatusLive, SetupMS: now.Add(-c.seen).UnixMilli(), AnswerMS: now.Add(-c.seen).UnixMilli()}
		if err := store.InsertCDR(ctx, &cdr); err != nil {
			t.Fatal(err)
		}
	}
	m := &Meter{store: store, ledger: ledger.NewMemory("edge-a"), now: time.Now}
	got, err := m.RecoverOrphans(ctx, []string{"edge-a", "edge-b"}, "edge-a", 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range got {
		ids = append(ids, c.CallID)
	}
	sort.Strings(ids)
	if fmt.Sprint(ids) != "[gone legacy]" {
		t.Fatalf("recovered %v, want [gone legacy]", ids)
	}
}
