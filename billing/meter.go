package billing

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"trunkgate/refusal"
)

// Limits tells the meter each key's spend cap (0 = none).
type Limits interface {
	SpendCap(keyID string) int64
}

// CallEnder hangs up every live call of a key; keys.Admitter implements it.
type CallEnder interface {
	EndCalls(keyID string, cause error) int
}

// Meter tracks live calls from answer to end: it writes the CDR of each
// call, checkpoints live calls so a crash loses at most one interval, keeps
// month-to-date spend per key for admission, and hangs up a key's calls
// when the spend reaches its cap.
type Meter struct {
	store           Store
	log             *slog.Logger
	now             func() time.Time
	checkpointEvery time.Duration

	mu    sync.Mutex
	month time.Time        // first instant of the month mtd counts
	mtd   map[string]int64 // rated spend of ended calls this month, by key
	live  map[string]*liveCall
}

type liveCall struct {
	keyID  string
	answer time.Time
	rate   int64
}

// NewMeter loads this month's spend from store.
func NewMeter(ctx context.Context, store Store, log *slog.Logger) (*Meter, error) {
	m := &Meter{store: store, log: log, now: time.Now, checkpointEvery: 5 * time.Second, live: map[string]*liveCall{}}
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

// Recover closes the calls that were live when the edge last stopped,
// billing each to its last checkpoint. Run it before taking calls.
func (m *Meter) Recover(ctx context.Context) ([]CDR, error) {
	recovered, err := m.store.RecoverLive(ctx)
	if err != nil {
		return nil, err
	}
	if len(recovered) > 0 {
		if err := m.loadMonth(ctx, monthStart(m.now())); err != nil {
			return recovered, err
		}
	}
	return recovered, nil
}

// Answer starts the meter: the CDR is stored as live, so that a crash from
// here on still bills the call up to its last checkpoint.
func (m *Meter) Answer(ctx context.Context, c *CDR) error {
	c.Status = StatusLive
	m.mu.Lock()
	m.live[c.CallID] = &liveCall{keyID: c.KeyID, answer: time.UnixMilli(c.AnswerMS), rate: c.RatePerMinute}
	m.mu.Unlock()
	if err := m.store.InsertCDR(ctx, c); err != nil {
		return fmt.Errorf("meter answer: %w", err)
	}
	return nil
}

// Finish stops the meter and writes the final CDR. c must be closed
// (CDR.Close) by the caller, who knows when the call really ended.
func (m *Meter) Finish(ctx context.Context, c *CDR) error {
	m.mu.Lock()
	m.rollLocked(m.now())
	delete(m.live, c.CallID)
	if !time.UnixMilli(c.EndMS).Before(m.month) {
		m.mtd[c.KeyID] += c.CostMicros
	}
	m.mu.Unlock()
	if err := m.store.FinishCDR(ctx, c); err != nil {
		return fmt.Errorf("meter finish: %w", err)
	}
	return nil
}

// MonthToDate is the key's spend this calendar month (UTC), including what
// its live calls have cost so far.
func (m *Meter) MonthToDate(keyID string) int64 {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(now)
	total := m.mtd[keyID]
	for _, lc := range m.live {
		if lc.keyID == keyID {
			total += runningCost(lc, now)
		}
	}
	return total
}

// rollLocked starts a new month's spend at zero once now is in it. The
// roll happens under the lock with every Finish, so a call that ends just
// after midnight counts in the new month and none is lost between months.
func (m *Meter) rollLocked(now time.Time) {
	if ms := monthStart(now); ms.After(m.month) {
		m.month, m.mtd = ms, map[string]int64{}
	}
}

func runningCost(lc *liveCall, now time.Time) int64 {
	return Cost(BilledSeconds(now.Sub(lc.answer).Milliseconds()), lc.rate)
}

// LiveCalls is the number of calls being metered.
func (m *Meter) LiveCalls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.live)
}

// Run enforces spend caps once a second and checkpoints live calls every
// checkpoint interval, until ctx ends.
func (m *Meter) Run(ctx context.Context, limits Limits, ender CallEnder) {
	caps := time.NewTicker(time.Second)
	defer caps.Stop()
	// Its own ticker: folded into the 1 s cap tick, timer jitter could
	// stretch a 1 s checkpoint interval to 2 s.
	checkpoints := time.NewTicker(m.checkpointEvery)
	defer checkpoints.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-caps.C:
			m.enforceCaps(m.now(), limits, ender)
		case <-checkpoints.C:
			m.checkpoint(ctx, m.now())
		}
	}
}

func (m *Meter) enforceCaps(now time.Time, limits Limits, ender CallEnder) {
	m.mu.Lock()
	m.rollLocked(now)
	spend := map[string]int64{}
	for _, lc := range m.live {
		spend[lc.keyID] += runningCost(lc, now)
	}
	for id := range spend {
		spend[id] += m.mtd[id]
	}
	m.mu.Unlock()
	for id, total := range spend {
		if limit := limits.SpendCap(id); limit > 0 && total >= limit {
			if n := ender.EndCalls(id, refusal.SpendCap); n > 0 {
				m.log.Info("spend cap reached; hanging up live calls", "key_id", id, "spend_micros", total, "cap_micros", limit, "calls", n)
			}
		}
	}
}

func (m *Meter) checkpoint(ctx context.Context, now time.Time) {
	m.mu.Lock()
	ids := make([]string, 0, len(m.live))
	for id := range m.live {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	sort.Strings(ids)
	if err := m.store.Checkpoint(ctx, ids, now); err != nil {
		m.log.Error("checkpoint failed", "calls", len(ids), "error", err)
	}
}
