package billing

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Usage reports: calls, answered calls, billed seconds and cost, grouped
// by any of key, trunk, direction, destination prefix, country and a
// period (hour, day or month, in any time zone), over a time range. A
// call counts in the period its setup began. Two rollups are kept in the
// same transaction as each final CDR: by UTC day, and by hour. A report
// reads the daily rollup when its range and its periods are whole UTC
// days, the hourly one when they fall on whole hours (a time zone a
// whole number of hours off UTC), and the CDRs themselves otherwise; all
// three give the same totals, to the micro, as summing the CDRs.

// Usage dimensions.
const (
	ByKey       = "key"
	ByTrunk     = "trunk"
	ByDirection = "direction"
	ByPrefix    = "prefix" // the rate table prefix, or the country code of an unrated call
	ByCountry   = "country"
	ByHour      = "hour"
	ByDay       = "day"
	ByMonth     = "month"
)

// UsageQuery asks for one report.
type UsageQuery struct {
	KeyID string    // "" for every key
	Since time.Time // inclusive
	Until time.Time // exclusive
	By    []string  // dimensions, in the order the rows are sorted
	TZ    *time.Location
}

// UsageRow is one line of a report: the dimensions asked for, and the
// sums.
type UsageRow struct {
	Period        string `json:"period,omitempty"`
	KeyID         string `json:"key_id,omitempty"`
	TrunkID       string `json:"trunk_id,omitempty"`
	Direction     string `json:"direction,omitempty"`
	Prefix        string `json:"prefix,omitempty"`
	Country       string `json:"country,omitempty"`
	Calls         int64  `json:"calls"`
	Answered      int64  `json:"answered"`
	BilledSeconds int64  `json:"billed_seconds"`
	CostMicros    int64  `json:"cost_micros"`
	// AvgCostMicros is the cost per answered call, rounded to the nearest
	// micro (0 with none answered).
	AvgCostMicros int64 `json:"avg_cost_micros"`
}

func (r *UsageRow) add(f Fact) {
	r.Calls += f.Calls
	r.Answered += f.Answered
	r.BilledSeconds += f.BilledSeconds
	r.CostMicros += f.CostMicros
}

func (r *UsageRow) finish() {
	r.AvgCostMicros = 0
	if r.Answered > 0 {
		r.AvgCostMicros = (r.CostMicros + r.Answered/2) / r.Answered
	}
}

// Fact is what a usage source yields: one call (from the CDRs) or one
// hour of one combination of dimensions (from the rollup).
type Fact struct {
	AtMS                                       int64
	KeyID, TrunkID, Direction, Prefix, Country string
	Calls, Answered, BilledSeconds, CostMicros int64
}

// Usage sources, coarsest first.
const (
	SourceDaily  = "daily"  // the rollup by UTC day
	SourceHourly = "hourly" // the rollup by hour
	SourceCDRs   = "cdrs"   // the ended calls themselves
)

// FactQuery is what a source is asked for: facts in [Since, Until) of one
// key or all, from Source; Dims says which dimensions the report uses, so
// that a source may sum the others away.
type FactQuery struct {
	KeyID        string
	Since, Until time.Time
	Source       string
	Dims         map[string]bool
	// Period, when set (hour, day, month), asks for facts in time order,
	// summed by period: UTC shifted by OffsetSec, the time zone's offset
	// throughout [Since, Until). Each fact's AtMS is the first moment of
	// its sums.
	Period    string
	OffsetSec int
}

// UsageStore yields usage facts.
type UsageStore interface {
	UsageFacts(ctx context.Context, q FactQuery, fn func(Fact) error) error
}

// ErrInvalidQuery marks a report request that makes no sense (REST: 400).
var ErrInvalidQuery = errors.New("invalid usage query")

var knownDims = map[string]bool{ByKey: true, ByTrunk: true, ByDirection: true, ByPrefix: true, ByCountry: true,
	ByHour: true, ByDay: true, ByMonth: true}

// Validate checks a query and fills its defaults (UTC).
func (q *UsageQuery) Validate() error {
	if q.TZ == nil {
		q.TZ = time.UTC
	}
	if q.Since.IsZero() || q.Until.IsZero() || !q.Until.After(q.Since) {
		return fmt.Errorf("%w: want a range: since before until (or a month or a day)", ErrInvalidQuery)
	}
	periods := 0
	seen := map[string]bool{}
	for _, d := range q.By {
		if !knownDims[d] {
			return fmt.Errorf("%w: unknown dimension %q (want key, trunk, direction, prefix, country, hour, day or month)", ErrInvalidQuery, d)
		}
		if seen[d] {
			return fmt.Errorf("%w: dimension %q twice", ErrInvalidQuery, d)
		}
		seen[d] = true
		if d == ByHour || d == ByDay || d == ByMonth {
			periods++
		}
	}
	if periods > 1 {
		return fmt.Errorf("%w: at most one of hour, day and month", ErrInvalidQuery)
	}
	return nil
}

// period is the report's time dimension, or "".
func (q *UsageQuery) period() string {
	for _, d := range q.By {
		if d == ByHour || d == ByDay || d == ByMonth {
			return d
		}
	}
	return ""
}

// source picks the coarsest source that can answer q exactly: its range
// must start and end on the source's boundaries, and so must its periods
// in q's time zone (checked at every month boundary and at the ends).
func (q *UsageQuery) source() string {
	aligned := func(unit int64) bool {
		if q.Since.UnixMilli()%unit != 0 || q.Until.UnixMilli()%unit != 0 {
			return false
		}
		whole := func(t time.Time) bool { _, off := t.In(q.TZ).Zone(); return int64(off)*1000%unit == 0 }
		for t := q.Since; t.Before(q.Until); t = t.AddDate(0, 1, 0) {
			if !whole(t) {
				return false
			}
		}
		return whole(q.Until)
	}
	switch {
	case q.period() != ByHour && aligned(86_400_000):
		return SourceDaily
	case aligned(3_600_000):
		return SourceHourly
	}
	return SourceCDRs
}

// Report runs q over src and hands each row to emit, sorted by period
// and then by the other dimensions in the order asked; rows of one
// period are kept in memory until the period ends, nothing more. It
// returns the totals.
func Report(ctx context.Context, src UsageStore, q UsageQuery, emit func(UsageRow) error) (UsageRow, error) {
	if err := q.Validate(); err != nil {
		return UsageRow{}, err
	}
	dims := map[string]bool{}
	for _, d := range q.By {
		dims[d] = true
	}
	period := q.period()
	var total UsageRow
	current, open := "", false
	rows := map[UsageRow]*UsageRow{}
	flush := func() error {
		out := make([]*UsageRow, 0, len(rows))
		for _, r := range rows {
			r.finish()
			out = append(out, r)
		}
		sort.Slice(out, func(i, j int) bool { return q.less(out[i], out[j]) })
		for _, r := range out {
			if err := emit(*r); err != nil {
				return err
			}
		}
		clear(rows)
		return nil
	}
	add := func(f Fact) error {
		k := UsageRow{Period: periodLabel(f.AtMS, period, q.TZ)}
		if open && k.Period != current {
			if err := flush(); err != nil {
				return err
			}
		}
		current, open = k.Period, true
		if dims[ByKey] {
			k.KeyID = f.KeyID
		}
		if dims[ByTrunk] {
			k.TrunkID = f.TrunkID
		}
		if dims[ByDirection] {
			k.Direction = f.Direction
		}
		if dims[ByPrefix] {
			k.Prefix = f.Prefix
		}
		if dims[ByCountry] {
			k.Country = f.Country
		}
		r := rows[k]
		if r == nil {
			r = &UsageRow{}
			*r = k
			rows[k] = r
		}
		r.add(f)
		total.add(f)
		return nil
	}
	var err error
	fq := FactQuery{KeyID: q.KeyID, Source: q.source(), Dims: dims, Period: period}
	// One source query per stretch of constant offset from UTC, so that
	// SQL sums whole periods; a period cut by a change of offset (the day
	// clocks move) comes as two facts, one after the other, and is summed
	// here.
	for _, seg := range offsetSegments(q.Since, q.Until, q.TZ) {
		fq.Since, fq.Until, fq.OffsetSec = seg.from, seg.to, seg.offset
		if err = src.UsageFacts(ctx, fq, add); err != nil {
			break
		}
	}
	if err == nil {
		err = flush()
	}
	total.finish()
	return total, err
}

type segment struct {
	from, to time.Time
	offset   int // seconds east of UTC
}

// offsetSegments cuts [since, until) where tz's offset from UTC changes.
// Offsets change on a quarter hour of UTC in every zone there is.
func offsetSegments(since, until time.Time, tz *time.Location) []segment {
	offset := func(t time.Time) int { _, off := t.In(tz).Zone(); return off }
	var out []segment
	from, off := since, offset(since)
	for t := since.Truncate(15 * time.Minute).Add(15 * time.Minute); t.Before(until); t = t.Add(15 * time.Minute) {
		if o := offset(t); o != off {
			out = append(out, segment{from: from, to: t, offset: off})
			from, off = t, o
		}
	}
	return append(out, segment{from: from, to: until, offset: off})
}

// less orders rows by period, then the dimensions in the order asked.
func (q *UsageQuery) less(a, b *UsageRow) bool {
	if a.Period != b.Period {
		return a.Period < b.Period
	}
	for _, d := range q.By {
		var x, y string
		switch d {
		case ByKey:
			x, y = a.KeyID, b.KeyID
		case ByTrunk:
			x, y = a.TrunkID, b.TrunkID
		case ByDirection:
			x, y = a.Direction, b.Direction
		case ByPrefix:
			x, y = a.Prefix, b.Prefix
		case ByCountry:
			x, y = a.Country, b.Country
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// periodLabel names the period a moment falls in, in tz: 2026-11,
// 2026-11-24 or 2026-11-24T13.
func periodLabel(ms int64, period string, tz *time.Location) string {
	t := time.UnixMilli(ms).In(tz)
	switch period {
	case ByMonth:
		return t.Format("2006-01")
	case ByDay:
		return t.Format("2006-01-02")
	case ByHour:
		return t.Format("2006-01-02T15")
	}
	return ""
}

// MonthRange is [first instant of month, first of the next) in tz, for
// "2026-11".
func MonthRange(month string, tz *time.Location) (time.Time, time.Time, error) {
	t, err := time.ParseInLocation("2006-01", month, tz)
	if err != nil {
		return t, t, fmt.Errorf("%w: month %q: want YYYY-MM", ErrInvalidQuery, month)
	}
	return t, t.AddDate(0, 1, 0), nil
}

// DayRange is the day "2026-11-24" in tz.
func DayRange(day string, tz *time.Location) (time.Time, time.Time, error) {
	t, err := time.ParseInLocation("2006-01-02", day, tz)
	if err != nil {
		return t, t, fmt.Errorf("%w: day %q: want YYYY-MM-DD", ErrInvalidQuery, day)
	}
	return t, t.AddDate(0, 0, 1), nil
}

// ParseDims reads "day,trunk" into dimensions.
func ParseDims(s string) []string {
	var out []string
	for _, d := range strings.Split(s, ",") {
		if d = strings.ToLower(strings.TrimSpace(d)); d != "" {
			out = append(out, d)
		}
	}
	return out
}
