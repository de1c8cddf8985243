package keys

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// ErrInvalid marks a request that fails validation (bad limit, scope,
// prefix). REST maps it to 400.
var ErrInvalid = errors.New("invalid")

// Limits are a key's run-time limits. A zero numeric limit means "none".
// Money is in currency micros (1 unit = 1,000,000), never floats.
type Limits struct {
	// MaxChannels caps concurrent calls in both directions.
	MaxChannels int `json:"max_channels"`
	// CPS caps new calls a second (token bucket, burst = max(1, CPS)).
	CPS float64 `json:"cps"`
	// MonthlySpendCap refuses admission once the month's spend reaches it.
	MonthlySpendCap int64 `json:"monthly_spend_cap"`
	// InboundRate and OutboundRate are what a minute of the key's calls
	// costs in each direction; an outbound call to a number in the rate
	// table costs the table's rate instead.
	InboundRate  int64 `json:"inbound_rate_per_minute"`
	OutboundRate int64 `json:"outbound_rate_per_minute"`
	// RatePerMinute sets both rates at once (the single rate of older
	// clients and stored keys): Validate folds it into those left at 0.
	RatePerMinute int64 `json:"rate_per_minute,omitempty"`
	// MaxCallSeconds ends a call with BYE when it has lasted this long.
	MaxCallSeconds int `json:"max_call_seconds"`
	// AllowedPrefixes, when not empty, lists the only outbound destination
	// prefixes allowed; BlockedPrefixes are refused in any case.
	AllowedPrefixes []string `json:"allowed_prefixes"`
	BlockedPrefixes []string `json:"blocked_prefixes"`
}

// DefaultLimits are what a key gets unless the operator says otherwise.
func DefaultLimits() Limits {
	return Limits{MaxChannels: 10, CPS: 5, MaxCallSeconds: 4 * 3600,
		AllowedPrefixes: []string{}, BlockedPrefixes: []string{}}
}

// Upper bounds that catch typos (an extra zero) before they become outages.
const (
	maxChannelsBound    = 100000
	maxCPSBound         = 10000
	maxCallSecondsBound = 7 * 24 * 3600
)

// Validate checks every field and normalises the prefix lists.
func (l *Limits) Validate() error {
	switch {
	case l.MaxChannels < 0 || l.MaxChannels > maxChannelsBound:
		return fmt.Errorf("%w: max_channels must be between 0 and %d", ErrInvalid, maxChannelsBound)
	case l.CPS < 0 || l.CPS > maxCPSBound || math.IsNaN(l.CPS):
		return fmt.Errorf("%w: cps must be between 0 and %d", ErrInvalid, maxCPSBound)
	case l.MonthlySpendCap < 0:
		return fmt.Errorf("%w: monthly_spend_cap must not be negative", ErrInvalid)
	case l.RatePerMinute < 0 || l.InboundRate < 0 || l.OutboundRate < 0:
		return fmt.Errorf("%w: rates must not be negative", ErrInvalid)
	case l.MaxCallSeconds < 0 || l.MaxCallSeconds > maxCallSecondsBound:
		return fmt.Errorf("%w: max_call_seconds must be between 0 and %d", ErrInvalid, maxCallSecondsBound)
	}
	l.FoldRate()
	var err error
	if l.AllowedPrefixes, err = normalisePrefixes("allowed_prefixes", l.AllowedPrefixes); err != nil {
		return err
	}
	if l.BlockedPrefixes, err = normalisePrefixes("blocked_prefixes", l.BlockedPrefixes); err != nil {
		return err
	}
	return nil
}

// FoldRate moves the single rate_per_minute into the direction rates left
// at 0.
func (l *Limits) FoldRate() {
	if l.RatePerMinute == 0 {
		return
	}
	if l.InboundRate == 0 {
		l.InboundRate = l.RatePerMinute
	}
	if l.OutboundRate == 0 {
		l.OutboundRate = l.RatePerMinute
	}
	l.RatePerMinute = 0
}

// Rate is the key's own rate for a direction.
func (l *Limits) Rate(d Direction) int64 {
	if d == Outbound {
		return l.OutboundRate
	}
	return l.InboundRate
}

// Clone copies the prefix slices.
func (l Limits) Clone() Limits {
	l.AllowedPrefixes = append([]string{}, l.AllowedPrefixes...)
	l.BlockedPrefixes = append([]string{}, l.BlockedPrefixes...)
	return l
}

// normalisePrefixes accepts E.164-style prefixes ("+1", "4420", "+44 20")
// and stores them as "+" and digits.
func normalisePrefixes(field string, in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, p := range in {
		n, ok := normaliseNumber(p)
		if !ok || len(n) > 16 {
			return nil, fmt.Errorf("%w: %s: %q is not a number prefix (digits, optional leading +)", ErrInvalid, field, p)
		}
		out = append(out, n)
	}
	return out, nil
}

// normaliseNumber turns "+1 (555) 010-0" into "+15550100": optional "+",
// digits, visual separators dropped. It reports false for anything else.
func normaliseNumber(s string) (string, bool) {
	s = strings.TrimSpace(s)
	var b strings.Builder
	for i, r := range s {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '+' && i == 0:
		case r == ' ' || r == '-' || r == '(' || r == ')' || r == '.':
		default:
			return "", false
		}
	}
	if b.Len() == 0 {
		return "", false
	}
	return "+" + b.String(), true
}

// DestinationAllowed applies the prefix rules to an outbound destination.
func (l *Limits) DestinationAllowed(dest string) bool {
	n, ok := normaliseNumber(dest)
	if !ok {
		return false
	}
	for _, p := range l.BlockedPrefixes {
		if strings.HasPrefix(n, p) {
			return false
		}
	}
	if len(l.AllowedPrefixes) == 0 {
		return true
	}
	for _, p := range l.AllowedPrefixes {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// LimitsPatch changes some limits and leaves the rest; nil means unchanged.
type LimitsPatch struct {
	MaxChannels     *int      `json:"max_channels"`
	CPS             *float64  `json:"cps"`
	MonthlySpendCap *int64    `json:"monthly_spend_cap"`
	RatePerMinute   *int64    `json:"rate_per_minute"` // sets both rates
	InboundRate     *int64    `json:"inbound_rate_per_minute"`
	OutboundRate    *int64    `json:"outbound_rate_per_minute"`
	MaxCallSeconds  *int      `json:"max_call_seconds"`
	AllowedPrefixes *[]string `json:"allowed_prefixes"`
	BlockedPrefixes *[]string `json:"blocked_prefixes"`
}

// Apply returns l with the patch applied and validated.
func (p LimitsPatch) Apply(l Limits) (Limits, error) {
	l = l.Clone()
	if p.MaxChannels != nil {
		l.MaxChannels = *p.MaxChannels
	}
	if p.CPS != nil {
		l.CPS = *p.CPS
	}
	if p.MonthlySpendCap != nil {
		l.MonthlySpendCap = *p.MonthlySpendCap
	}
	if p.RatePerMinute != nil {
		l.InboundRate, l.OutboundRate = *p.RatePerMinute, *p.RatePerMinute
	}
	if p.InboundRate != nil {
		l.InboundRate = *p.InboundRate
	}
	if p.OutboundRate != nil {
		l.OutboundRate = *p.OutboundRate
	}
	if p.MaxCallSeconds != nil {
		l.MaxCallSeconds = *p.MaxCallSeconds
	}
	if p.AllowedPrefixes != nil {
		l.AllowedPrefixes = *p.AllowedPrefixes
	}
	if p.BlockedPrefixes != nil {
		l.BlockedPrefixes = *p.BlockedPrefixes
	}
	return l, l.Validate()
}

// Empty reports whether the patch changes nothing.
func (p LimitsPatch) Empty() bool {
	return p == LimitsPatch{}
}
