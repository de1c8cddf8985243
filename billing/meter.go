package billing

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"trunkgate/ledger"
	"trunkgate/refusal"
)

// Ledger is where the meter finds live calls and ends them
// (ledger.Memory, ledger.Shared): it keeps no list of its own. Calls and
// KeyCalls are every node's calls, Local this node's.
type Ledger interface {
	Node() string
	Calls() []ledger.Entry
	KeyCalls(keyID string) []ledger.Entry
	Local() []ledger.Entry
	End(keyID string, cause error) int
}

// Meter bills calls: it writes each call's CDR (as live at answer, so that
// a crash still bills it, and final at its end), checkpoints live calls
// so that a crash loses at most one interval, keeps month-to-date spend
// per key, tells admission whether a key can afford a call, and hangs up
// a key's live calls when its spend reaches its cap.
type Meter struct {
	store           Store
	ledger          Ledger
	log             *slog.Logger
	now             func() time.Time
	checkpointEvery time.Duration

	mu    sync.Mutex
	month time.Time        // first instant of the month mtd counts
	mtd   map[string]int64 // rated spend of ended calls this month, by key
}

// NewMeter loads this month's spend from store.
func NewMeter(ctx context.Context, store Store, l Ledger, log *slog.Logger) (*Meter, error) {
	m := &Meter{store: store, ledger: l, log: log, now: time.Now, checkpointEvery: 5 * time.Second}
	if err := m.loadMonth(ctx, monthStart(m.now())); err != nil {
		return nil, err
	}
	return m, nil
}

// SetCheckpointInterval changes how often live calls are checkpointed.
func (m *Meter) SetCheckpointInterval(d time.Duration) {
	if d > 0 {
		m.checkpointEvery = d
	}
}

func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// ReloadSpend reads the month's spend on ended calls from the store again:
// edges that share the store end calls too. The ledger's sync calls it
// after reading every node's calls. A call leaves the ledger a moment
// before its CDR is written, so a sync in that moment misses its cost
// until the next (250 ms later): never counting a call twice, which would
// hang up the key's other calls early.
func (m *Meter) ReloadSpend(ctx context.Context) error {
	return m.loadMonth(ctx, monthStart(m.now()))
}

func (m *Meter) loadMonth(ctx context.Context, start time.Time) error {
	spend, err := m.store.MonthSpend(ctx, start)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.month, m.mtd = start, spend
	m.mu.Unlock()
	return nil
}

// Recover closes the calls that were live when the edge last stopped:
// each is billed to its last checkpoint (or its answer, if it died before
// the first). Run it before taking calls. With nodes, only those nodes'
// calls are closed (edges sharing a database); without, every live call
// (the one edge on its SQLite file).
func (m *Meter) Recover(ctx context.Context, nodes ...string) ([]CDR, error) {
	live, err := m.store.LiveCDRs(ctx)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	cause := "edge restarted; billed to last checkpoint"
	if len(nodes) > 0 {
		cause = "edge node stopped; billed to last checkpoint"
	}
	return m.recover(ctx, live, cause, func(l LiveCDR) bool { return len(nodes) == 0 || slices.Contains(nodes, l.CDR.Node) })
}

// RecoverOrphans closes the live calls of nodes not in alive (and not
// self) last seen up longer than silent ago: calls whose node died
// without another closing them (the one that took it for dead failed, or
// died too). Edges sharing a database run it now and then.
func (m *Meter) RecoverOrphans(ctx context.Context, alive []string, self string, silent time.Duration) ([]CDR, error) {
	live, err := m.store.LiveCDRs(ctx)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	cutoff := m.now().Add(-silent).UnixMilli()
	return m.recover(ctx, live, "edge node stopped; billed to last checkpoint", func(l LiveCDR) bool {
		return l.CDR.Node != self && !slices.Contains(alive, l.CDR.Node) && max(l.CheckpointMS, l.CDR.AnswerMS) < cutoff
	})
}

// recover closes the live CDRs that pick chooses at their last checkpoint.
func (m *Meter) recover(ctx context.Context, live []LiveCDR, cause string, pick func(LiveCDR) bool) ([]CDR, error) {
	recovered := make([]CDR, 0, len(live))
	for _, l := range live {
		if !pick(l) {
			continue
		}
		c := l.CDR
		c.Close(time.UnixMilli(max(l.CheckpointMS, c.AnswerMS)))
		c.Status, c.HangupSide, c.HangupCause = StatusRecovered, SideEdge, cause
		if err := m.store.FinishCDR(ctx, &c); err != nil {
			return recovered, fmt.Errorf("recover: %w", err)
		}
		recovered = append(recovered, c)
	}
	if len(recovered) > 0 {
		if err := m.loadMonth(ctx, monthStart(m.now())); err != nil {
			return recovered, err
		}
	}
	return recovered, nil
}

// Answer starts the meter: the CDR is stored as live, so that a crash from
// here on still bills the call up to its last checkpoint. The call's
// ledger entry must be answered too: the running cost is read there.
func (m *Meter) Answer(ctx context.Context, c *CDR) error {
	c.Status = StatusLive
	if c.Node == "" {
		c.Node = m.ledger.Node()
	}
	if err := m.store.InsertCDR(ctx, c); err != nil {
		return fmt.Errorf("meter answer: %w", err)
	}
	return nil
}

// Finish writes the final CDR and adds its cost to the month. c must be
// closed (CDR.Close) by the caller, who knows when the call really ended.
func (m *Meter) Finish(ctx context.Context, c *CDR) error {
	if c.Node == "" {
		c.Node = m.ledger.Node()
	}
	err := m.store.FinishCDR(ctx, c)
	// Counted after the write, failed or not: a reload of the month's
	// spend (edges sharing the store) that read before the write and lands
	// after this would otherwise drop the call until the next reload.
	m.mu.Lock()
	m.rollLocked(m.now())
	if !time.UnixMilli(c.EndMS).Before(m.month) {
		m.mtd[c.KeyID] += c.CostMicros
	}
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("meter finish: %w", err)
	}
	return nil
}

// MonthToDate is the key's spend this calendar month (UTC): its ended
// calls' cost and what its live calls have cost so far.
func (m *Meter) MonthToDate(keyID string) int64 { return m.Spend(keyID, 0).MonthToDate }

// ended is the key's spend on ended calls this month.
func (m *Meter) ended(keyID string, now time.Time) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(now)
	return m.mtd[keyID]
}

// Spend is a key's spending this calendar month (UTC), in currency
// micros.
type Spend struct {
	// MonthToDate is the cost of its ended calls this month and of its
	// live calls so far.
	MonthToDate int64 `json:"month_to_date_micros"`
	// Live is what its live calls have cost so far.
	Live int64 `json:"live_cost_micros"`
	// Remaining is what is left under its spend cap (nil: no cap).
	Remaining *int64 `json:"remaining_micros"`
}

// Spend is the key's spend view under spendCap (0 = none).
func (m *Meter) Spend(keyID string, spendCap int64) Spend {
	now := m.now()
	live := LiveCost(m.ledger.KeyCalls(keyID), now)
	s := Spend{MonthToDate: m.ended(keyID, now) + live, Live: live}
	if spendCap > 0 {
		left := max(0, spendCap-s.MonthToDate)
		s.Remaining = &left
	}
	return s
}

// LiveCost is what the answered calls among es have cost by now: each is
// billed as if it ended now.
func LiveCost(es []ledger.Entry, now time.Time) int64 {
	var total int64
	for _, e := range es {
		if e.Answered() {
			total += Cost(BilledSeconds(now.Sub(e.AnsweredAt).Milliseconds()), e.RatePerMinute)
		}
	}
	return total
}

// CanAfford reports whether a key under spendCap can afford a new call
// at ratePerMinute: its spend must be under the cap by at least one
// billed second of the call (a call it cannot pay a second of would be
// answered and dropped at once). keys.Admitter asks it.
func (m *Meter) CanAfford(keyID string, spendCap, ratePerMinute int64) bool {
	if spendCap <= 0 {
		return true
	}
	spend := m.MonthToDate(keyID)
	return spend < spendCap && spend+Cost(1, ratePerMinute) <= spendCap
}

// rollLocked starts a new month's spend at zero once now is in it. The
// roll happens under the lock with every Finish, so a call that ends just
// after midnight counts in the new month and none is lost between months.
func (m *Meter) rollLocked(now time.Time) {
	if ms := monthStart(now); ms.After(m.month) {
		m.month, m.mtd = ms, map[string]int64{}
	}
}

// capCheckEvery is how often live calls are held against their key's
// spend cap.
const capCheckEvery = 250 * time.Millisecond

// capLookahead is how far ahead a check looks: a call is hung up before
// it starts a billed second its key cannot pay for, that is when such a
// second would start before the next check (with time for the BYE).
const capLookahead = capCheckEvery + 50*time.Millisecond

// Run enforces spend caps and checkpoints live calls every checkpoint
// interval, until ctx ends.
func (m *Meter) Run(ctx context.Context) {
	caps := time.NewTicker(capCheckEvery)
	defer caps.Stop()
	// Its own ticker: folded into the cap tick, timer jitter could
	// stretch a checkpoint interval.
	checkpoints := time.NewTicker(m.checkpointEvery)
	defer checkpoints.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-caps.C:
			m.EnforceCaps(m.now())
		case <-checkpoints.C:
			m.checkpoint(ctx, m.now())
		}
	}
}

// EnforceCaps hangs up the live calls of every key that would spend past
// its cap before the next check: calls use every second the key has paid
// for, and none starts a second it cannot pay for.
func (m *Meter) EnforceCaps(now time.Time) {
	byKey := map[string][]ledger.Entry{}
	for _, e := range m.ledger.Calls() {
		if e.Answered() && e.SpendCap > 0 {
			byKey[e.KeyID] = append(byKey[e.KeyID], e)
		}
	}
	for id, es := range byKey {
		limit := es[0].SpendCap
		if next := m.ended(id, now) + LiveCost(es, now.Add(capLookahead)); next > limit {
			if n := m.ledger.End(id, refusal.SpendCap); n > 0 {
				m.log.Info("spend cap reached; hanging up live calls", "key_id", id,
					"spend_micros", m.ended(id, now)+LiveCost(es, now), "cap_micros", limit, "calls", n)
			}
		}
	}
}

func (m *Meter) checkpoint(ctx context.Context, now time.Time) {
	var ids []string
	for _, e := range m.ledger.Local() {
		if e.Answered() {
			ids = append(ids, e.CallID)
		}
	}
	sort.Strings(ids)
	if err := m.store.Checkpoint(ctx, ids, now); err != nil {
		m.log.Error("checkpoint failed", "calls", len(ids), "error", err)
	}
}
