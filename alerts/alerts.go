// Package alerts watches each key for what its operator would want to
// hear about at 3 AM: its spend crossing thresholds of its cap (80 % and
// 100 % by default), new calls or live calls several times its own
// baseline of the last seven days, a first call to a country it never
// called, a call attempted to a blocked prefix. Each alert fires once per
// period (a month and threshold, an hour, a country), is written to the
// audit log, is listed, and is POSTed to the key's alert URL signed with
// its signing secret, retried with backoff. A rule's action may suspend
// the key: its new calls are refused until an operator resumes it.
//
// Nothing here blocks a call: calls report their attempts on a buffered
// channel, and the engine's own goroutine does the rest. The package
// knows nothing of SIP, media or SQL outside its own store.
package alerts

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"trunkgate/billing"
	"trunkgate/internal/e164"
	"trunkgate/keys"
	"trunkgate/refusal"
)

// Keys is where the engine reads keys (keys.Admitter's cache).
type Keys interface {
	Cached() []*keys.Key
	Key(ctx context.Context, id string) (*keys.Key, error)
}

// Suspender suspends a key (keys.Manager).
type Suspender interface {
	Suspend(ctx context.Context, by keys.Actor, id, reason string) error
}

// Spender tells a key's spend (billing.Meter).
type Spender interface {
	Spend(keyID string, spendCap int64) billing.Spend
}

// Live counts live calls per key (ledger.Memory).
type Live interface {
	Counts() map[string]int
}

// Auditor writes the audit log (keys.Auditor).
type Auditor interface {
	Record(e keys.AuditEntry)
}

// Config wires an Engine.
type Config struct {
	Store     Store
	Keys      Keys
	Suspender Suspender
	Spend     Spender
	Live      Live
	// Usage is the call history baselines and known destinations are
	// read from (billing's usage reports).
	Usage billing.UsageStore
	Audit Auditor
	Log   *slog.Logger
	// Client posts webhooks [5 s timeout].
	Client *http.Client
	// CheckEvery is how often spend and live calls are checked [2 s].
	CheckEvery time.Duration
	// Retry is the wait before each retry of a webhook that failed
	// [1 s, 2 s, 4 s ... 64 s: 8 attempts in about 2 minutes].
	Retry []time.Duration
}

// Engine runs the rules.
type Engine struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	attempts chan attempt
	dropped  atomic.Int64

	// Owned by Run's goroutine.
	recent    map[string]*window
	baselines map[string]baseline
	known     map[string]map[string]bool // countries each key has called
	fired     map[string]bool            // key|rule|period already stored

	deliveries sync.WaitGroup
}

type attempt struct {
	at                            time.Time
	keyID, direction, destination string
	refused                       refusal.Reason
}

// baseline is a key's average over the last 7 days.
type baseline struct {
	callsPer10Min float64
	concurrency   float64 // mean live calls: talk time over the week's length
}

// History is how far back baselines look.
const History = 7 * 24 * time.Hour

// New makes an engine; Run starts it.
func New(cfg Config) *Engine {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 5 * time.Second}
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = 2 * time.Second
	}
	if len(cfg.Retry) == 0 {
		for d := time.Second; d <= 64*time.Second; d *= 2 {
			cfg.Retry = append(cfg.Retry, d)
		}
	}
	return &Engine{cfg: cfg, log: cfg.Log, now: time.Now, attempts: make(chan attempt, 4096),
		recent: map[string]*window{}, baselines: map[string]baseline{}, known: map[string]map[string]bool{}, fired: map[string]bool{}}
}

// Attempt reports a call attempt of a key, admitted (refused 0) or not.
// It never blocks: past 4096 unread attempts, attempts are dropped and
// counted.
func (e *Engine) Attempt(keyID, direction, destination string, refused refusal.Reason) {
	if keyID == "" {
		return
	}
	select {
	case e.attempts <- attempt{at: e.now(), keyID: keyID, direction: direction, destination: destination, refused: refused}:
	default:
		e.dropped.Add(1)
	}
}

// Run loads the history, resumes undelivered webhooks and watches until
// ctx ends; then it waits for webhooks in flight to give up.
func (e *Engine) Run(ctx context.Context) {
	defer e.deliveries.Wait()
	e.refreshHistory(ctx)
	e.resumeDeliveries(ctx)
	checks := time.NewTicker(e.cfg.CheckEvery)
	defer checks.Stop()
	hourly := time.NewTicker(time.Hour)
	defer hourly.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-e.attempts:
			e.observe(ctx, a)
		case <-checks.C:
			e.check(ctx)
			if n := e.dropped.Swap(0); n > 0 {
				e.log.Warn("alerts: call attempts not watched (queue full)", "dropped", n)
			}
		case <-hourly.C:
			e.refreshHistory(ctx)
		}
	}
}

// refreshHistory reads every key's last 7 days (baselines) and the
// countries it has ever called.
func (e *Engine) refreshHistory(ctx context.Context) {
	now := e.now().UTC().Truncate(time.Hour)
	week := billing.UsageQuery{Since: now.Add(-History), Until: now, By: []string{billing.ByKey}}
	// A fresh map: a key with no calls this week has no baseline left from
	// the last.
	baselines := map[string]baseline{}
	_, err := billing.Report(ctx, e.cfg.Usage, week, func(r billing.UsageRow) error {
		baselines[r.KeyID] = baseline{
			callsPer10Min: float64(r.Calls) / float64(History/(10*time.Minute)),
			concurrency:   float64(r.BilledSeconds) / History.Seconds(),
		}
		return nil
	})
	if err != nil {
		e.log.Error("alerts: reading baselines", "error", err)
	} else {
		e.baselines = baselines
	}
	ever := billing.UsageQuery{Since: time.Unix(0, 0), Until: now.Add(time.Hour),
		By: []string{billing.ByKey, billing.ByDirection, billing.ByCountry}}
	_, err = billing.Report(ctx, e.cfg.Usage, ever, func(r billing.UsageRow) error {
		if r.Direction == string(keys.Outbound) && r.Country != "" {
			e.knownSet(r.KeyID)[r.Country] = true
		}
		return nil
	})
	if err != nil {
		e.log.Error("alerts: reading known destinations", "error", err)
	}
}

func (e *Engine) knownSet(keyID string) map[string]bool {
	s := e.known[keyID]
	if s == nil {
		s = map[string]bool{}
		e.known[keyID] = s
	}
	return s
}

// observe applies the per-call rules to one attempt.
func (e *Engine) observe(ctx context.Context, a attempt) {
	k, err := e.cfg.Keys.Key(ctx, a.keyID)
	if err != nil {
		return
	}
	w := e.recent[a.keyID]
	if w == nil {
		w = &window{}
		e.recent[a.keyID] = w
	}
	w.add(a.at)
	hour := a.at.UTC().Format("2006-01-02T15")
	factor, floor := k.Alerts.Rate()
	base := e.baselines[a.keyID].callsPer10Min
	if n := w.total(a.at); n >= threshold(factor, base, floor) {
		e.fire(ctx, k, keys.RuleCallRateSpike, hour,
			fmt.Sprintf("%d calls in 10 minutes; the key's average is %.1f", n, base))
	}
	if a.refused == refusal.DestinationBlocked {
		e.fire(ctx, k, keys.RuleBlockedDestination, hour, fmt.Sprintf("call to %s refused: blocked prefix", a.destination))
	}
	if country := e164.CountryCode(a.destination); a.direction == string(keys.Outbound) && country != "" {
		if known := e.knownSet(a.keyID); !known[country] {
			known[country] = true
			e.fire(ctx, k, keys.RuleNewDestination, country, fmt.Sprintf("first call to %s (%s)", country, a.destination))
		}
	}
}

// threshold is how many make a spike: factor times the baseline, and at
// least floor.
func threshold(factor, base float64, floor int) int {
	return max(floor, int(math.Ceil(factor*base)))
}

// check applies the rules that watch state: spend and live calls.
func (e *Engine) check(ctx context.Context) {
	now := e.now()
	live := e.cfg.Live.Counts()
	for _, k := range e.cfg.Keys.Cached() {
		if k.Status == keys.Revoked {
			continue
		}
		if limit := k.Limits.MonthlySpendCap; limit > 0 {
			spent := e.cfg.Spend.Spend(k.ID, limit).MonthToDate
			for _, t := range k.Alerts.Thresholds() {
				if spent*100 >= int64(t)*limit {
					e.fire(ctx, k, keys.RuleSpend, fmt.Sprintf("%s/%d%%", now.UTC().Format("2006-01"), t),
						fmt.Sprintf("spend %d%% of the monthly cap: %d of %d micros", spent*100/limit, spent, limit))
				}
			}
		}
		factor, floor := k.Alerts.Concurrency()
		base := e.baselines[k.ID].concurrency
		if n := live[k.ID]; n > 0 && n >= threshold(factor, base, floor) {
			e.fire(ctx, k, keys.RuleConcurrencySpike, now.UTC().Format("2006-01-02T15"),
				fmt.Sprintf("%d live calls; the key's average is %.2f", n, base))
		}
	}
}

// fire records an alert once per key, rule and period: audit log, the
// rule's action, the webhook.
func (e *Engine) fire(ctx context.Context, k *keys.Key, rule, period, detail string) {
	action := k.Alerts.Action(rule)
	id := k.ID + "|" + rule + "|" + period
	if action == keys.ActionOff || e.fired[id] {
		return
	}
	a := &Alert{KeyID: k.ID, Rule: rule, Period: period, FiredAt: e.now().UTC(), Action: action, Detail: detail,
		URL: k.Alerts.URL, Delivery: DeliveryNone}
	if a.URL != "" {
		a.Delivery = DeliveryPending
	}
	fresh, err := e.cfg.Store.Insert(ctx, a)
	if err != nil {
		e.log.Error("alerts: store", "key_id", k.ID, "rule", rule, "error", err)
		return
	}
	e.fired[id] = true
	if !fresh {
		return // fired before this process started
	}
	e.log.Warn("alert", "key_id", k.ID, "rule", rule, "period", period, "action", action, "detail", detail)
	e.cfg.Audit.Record(keys.AuditEntry{Actor: keys.ActorSystem, Action: "alert." + rule, Target: k.ID, Outcome: action,
		Detail: "period=" + period + " " + detail})
	if action == keys.ActionSuspend {
		reason := fmt.Sprintf("alert %s (%s): %s", rule, period, detail)
		if err := e.cfg.Suspender.Suspend(ctx, keys.Actor{KeyID: keys.ActorSystem, Source: "alerts"}, k.ID, reason); err != nil {
			e.log.Error("alerts: suspend", "key_id", k.ID, "error", err)
		}
	}
	if a.URL != "" {
		e.goDeliver(ctx, *a, k.SigningSecret)
	}
}

// resumeDeliveries picks up webhooks a previous run did not get through.
func (e *Engine) resumeDeliveries(ctx context.Context) {
	pending, err := e.cfg.Store.Pending(ctx)
	if err != nil {
		e.log.Error("alerts: pending webhooks", "error", err)
		return
	}
	for _, a := range pending {
		if k, err := e.cfg.Keys.Key(ctx, a.KeyID); err == nil {
			e.goDeliver(ctx, a, k.SigningSecret)
		}
	}
}

// window counts a key's call attempts of the last 10 minutes, by minute.
type window struct {
	minute int64 // the newest minute counted
	counts [10]int
}

func (w *window) advance(m int64) {
	if m <= w.minute {
		return
	}
	if m-w.minute >= int64(len(w.counts)) {
		w.counts = [10]int{}
	} else {
		for i := w.minute + 1; i <= m; i++ {
			w.counts[i%int64(len(w.counts))] = 0
		}
	}
	w.minute = m
}

func (w *window) add(t time.Time) {
	m := t.Unix() / 60
	w.advance(m)
	if m > w.minute-int64(len(w.counts)) {
		w.counts[m%int64(len(w.counts))]++
	}
}

func (w *window) total(t time.Time) int {
	w.advance(t.Unix() / 60)
	n := 0
	for _, c := range w.counts {
		n += c
	}
	return n
}
