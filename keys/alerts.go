package keys

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"trunkgate/internal/textsafe"
)

// Alert rules a key can be watched by (package alerts runs them).
const (
	RuleSpend              = "spend"               // spend crossed a threshold of the cap
	RuleCallRateSpike      = "call_rate_spike"     // new calls far above the key's own baseline
	RuleConcurrencySpike   = "concurrency_spike"   // live calls far above the key's own baseline
	RuleNewDestination     = "new_destination"     // a first call to a country the key never called
	RuleBlockedDestination = "blocked_destination" // a call attempted to a blocked prefix
)

// Rules lists every alert rule.
var Rules = []string{RuleSpend, RuleCallRateSpike, RuleConcurrencySpike, RuleNewDestination, RuleBlockedDestination}

// What an alert does besides the webhook and the audit log.
const (
	ActionNotify  = "notify"  // the default
	ActionSuspend = "suspend" // stop admitting the key's new calls until an operator resumes it
	ActionOff     = "off"     // the rule is not watched
)

// AlertConfig is how a key is watched: where its alerts go and what each
// rule does. The zero value watches every rule, notifies, and sends no
// webhook (the alerts are audited and listed all the same).
type AlertConfig struct {
	// URL receives each alert as a signed POST.
	URL string `json:"url,omitempty"`
	// SpendThresholds are percentages of the monthly spend cap, each
	// alerted once a month [80, 100].
	SpendThresholds []int `json:"spend_thresholds,omitempty"`
	// Actions per rule (notify, suspend, off); a rule not named notifies.
	Actions map[string]string `json:"actions,omitempty"`
	// A spike is calls in the last 10 minutes (live calls) at least Factor
	// times the key's average of the last 7 days, and at least Floor
	// [5x, 30 calls; 5x, 10 live calls].
	RateFactor        float64 `json:"rate_factor,omitempty"`
	RateFloor         int     `json:"rate_floor,omitempty"`
	ConcurrencyFactor float64 `json:"concurrency_factor,omitempty"`
	ConcurrencyFloor  int     `json:"concurrency_floor,omitempty"`
}

// Defaults of an AlertConfig.
var (
	DefaultSpendThresholds   = []int{80, 100}
	DefaultRateFactor        = 5.0
	DefaultRateFloor         = 30
	DefaultConcurrencyFactor = 5.0
	DefaultConcurrencyFloor  = 10
)

// Action is what rule does for this key.
func (c *AlertConfig) Action(rule string) string {
	if a := c.Actions[rule]; a != "" {
		return a
	}
	return ActionNotify
}

// Thresholds are the spend thresholds, defaults filled in.
func (c *AlertConfig) Thresholds() []int {
	if len(c.SpendThresholds) == 0 {
		return DefaultSpendThresholds
	}
	return c.SpendThresholds
}

// Rate is the call-rate spike rule's factor and floor, defaults filled in.
func (c *AlertConfig) Rate() (float64, int) {
	return or(c.RateFactor, DefaultRateFactor), or(c.RateFloor, DefaultRateFloor)
}

// Concurrency is the concurrency spike rule's factor and floor.
func (c *AlertConfig) Concurrency() (float64, int) {
	return or(c.ConcurrencyFactor, DefaultConcurrencyFactor), or(c.ConcurrencyFloor, DefaultConcurrencyFloor)
}

func or[T int | float64](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// Validate checks the configuration.
func (c *AlertConfig) Validate() error {
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || textsafe.HasControl(c.URL) || len(c.URL) > 2048 {
			return fmt.Errorf("%w: alerts url: want an http or https URL", ErrInvalid)
		}
	}
	for _, t := range c.SpendThresholds {
		if t < 1 || t > 1000 {
			return fmt.Errorf("%w: spend thresholds are percentages from 1 to 1000", ErrInvalid)
		}
	}
	slices.Sort(c.SpendThresholds)
	c.SpendThresholds = slices.Compact(c.SpendThresholds)
	for rule, action := range c.Actions {
		if !slices.Contains(Rules, rule) {
			return fmt.Errorf("%w: alert rule %q: want one of %s", ErrInvalid, rule, strings.Join(Rules, ", "))
		}
		if action != ActionNotify && action != ActionSuspend && action != ActionOff {
			return fmt.Errorf("%w: alert action %q: want notify, suspend or off", ErrInvalid, action)
		}
	}
	if c.RateFactor < 0 || c.RateFloor < 0 || c.ConcurrencyFactor < 0 || c.ConcurrencyFloor < 0 {
		return fmt.Errorf("%w: alert factors and floors must not be negative", ErrInvalid)
	}
	return nil
}

// SetAlerts replaces the key's alert configuration.
func (m *Manager) SetAlerts(ctx context.Context, by Actor, id string, c AlertConfig) (*Key, error) {
	k, err := m.setAlerts(ctx, id, c)
	m.auditOp(ctx, by, "key.alerts", id, err, "")
	return k, err
}

func (m *Manager) setAlerts(ctx context.Context, id string, c AlertConfig) (*Key, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	k, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	k.Alerts, k.UpdatedAt = c, m.now()
	if err := m.store.UpdateKey(ctx, k); err != nil {
		return nil, err
	}
	m.put(k)
	return k, nil
}

// Suspend stops admitting the key's new calls (an alert's suspend
// action); its live calls go on. reason says why, for operators.
func (m *Manager) Suspend(ctx context.Context, by Actor, id, reason string) error {
	err := m.setSuspended(ctx, id, reason)
	m.auditOp(ctx, by, "key.suspend", id, err, reason)
	return err
}

// Resume admits the key's calls again after a suspension.
func (m *Manager) Resume(ctx context.Context, by Actor, id string) (*Key, error) {
	err := m.setSuspended(ctx, id, "")
	m.auditOp(ctx, by, "key.resume", id, err, "")
	if err != nil {
		return nil, err
	}
	return m.Get(ctx, id)
}

func (m *Manager) setSuspended(ctx context.Context, id, reason string) error {
	k, err := m.Get(ctx, id)
	if err != nil {
		return err
	}
	if k.Suspended == reason {
		return nil
	}
	k.Suspended, k.UpdatedAt = reason, m.now()
	if err := m.store.UpdateKey(ctx, k); err != nil {
		return err
	}
	m.put(k)
	return nil
}
