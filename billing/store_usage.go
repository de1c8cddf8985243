package billing

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// The usage rollups: one row per UTC day (usage_daily) or hour
// (usage_hourly) of call setup and combination of key, trunk, direction,
// prefix and country. A report over a year reads a few rows a day
// instead of every CDR.

// reportPrefix is the prefix a call is reported under: its rate table
// prefix, or its country code when no table rated it.
func reportPrefix(c *CDR) string {
	if c.RatePrefix != "" {
		return c.RatePrefix
	}
	return c.Country
}

// usage is what a CDR adds to the rollups and the month's spend.
type usage struct {
	calls, answered, billedSeconds, cost int64
}

// usageOf is a final CDR's whole usage.
func usageOf(c *CDR) usage {
	u := usage{calls: 1, billedSeconds: c.BilledSeconds, cost: c.CostMicros}
	if c.Answered() {
		u.answered = 1
	}
	return u
}

// rollUp adds usage u of CDR c to its day, its hour and its month's spend.
func rollUp(ctx context.Context, db execer, c *CDR, u usage) error {
	for _, r := range []struct {
		table string
		unit  int64
	}{{"usage_daily", 86_400_000}, {"usage_hourly", 3_600_000}} {
		_, err := db.ExecContext(ctx, `INSERT INTO `+r.table+`
			(at_ms, key_id, trunk_id, direction, prefix, country, calls, answered, billed_seconds, cost_micros)
			VALUES (?,?,?,?,?,?,?,?,?,?)
			ON CONFLICT (at_ms, key_id, trunk_id, direction, prefix, country) DO UPDATE SET
				calls = `+r.table+`.calls + excluded.calls, answered = `+r.table+`.answered + excluded.answered,
				billed_seconds = `+r.table+`.billed_seconds + excluded.billed_seconds,
				cost_micros = `+r.table+`.cost_micros + excluded.cost_micros`,
			c.SetupMS-c.SetupMS%r.unit, c.KeyID, c.TrunkID, c.Direction, reportPrefix(c), c.Country,
			u.calls, u.answered, u.billedSeconds, u.cost)
		if err != nil {
			return fmt.Errorf("usage rollup %s: %w", c.CallID, err)
		}
	}
	if u.cost == 0 {
		return nil
	}
	_, err := db.ExecContext(ctx, `INSERT INTO spend_month (month, key_id, cost_micros) VALUES (?, ?, ?)
		ON CONFLICT (month, key_id) DO UPDATE SET cost_micros = spend_month.cost_micros + excluded.cost_micros`,
		spendMonth(c.EndMS), c.KeyID, u.cost)
	if err != nil {
		return fmt.Errorf("month spend %s: %w", c.CallID, err)
	}
	return nil
}

// spendMonth names the calendar month (UTC) of a time: "2026-11".
func spendMonth(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01") }

// factColumns are a report's dimensions as columns of either source; a
// dimension the report does not use is a constant, so that SQL sums
// over it.
func factColumns(dims map[string]bool, fromCDRs bool) (cols []string, group []string) {
	col := func(dim, name, fromCDR string) {
		expr := name
		if fromCDRs {
			expr = fromCDR
		}
		if dims[dim] {
			cols = append(cols, expr)
			group = append(group, expr)
		} else {
			cols = append(cols, "''")
		}
	}
	col(ByKey, "key_id", "key_id")
	col(ByTrunk, "trunk_id", "trunk_id")
	col(ByDirection, "direction", "direction")
	col(ByPrefix, "prefix", "CASE WHEN rate_prefix != '' THEN rate_prefix ELSE country END")
	col(ByCountry, "country", "country")
	return cols, group
}

// periodBucket is the SQL that names a row's period (the hour or day of
// its time shifted by offset seconds), or a part of it that Report sums.
func periodBucket(period, timeCol string, offset int) string {
	switch period {
	case ByDay, ByMonth:
		// Months by their days: integer division is far cheaper in SQLite
		// than strftime, and a year has only 365 of them to sum here.
		return fmt.Sprintf("(%s + %d) / 86400000", timeCol, int64(offset)*1000)
	}
	return fmt.Sprintf("(%s + %d) / 3600000", timeCol, int64(offset)*1000)
}

// sumsOf sums each expression as a BIGINT, 0 over no rows.
func sumsOf(exprs ...string) string {
	out := make([]string, len(exprs))
	for i, e := range exprs {
		out[i] = "CAST(COALESCE(SUM(" + e + "), 0) AS BIGINT)"
	}
	return strings.Join(out, ", ")
}

// UsageFacts streams the facts of q from its source, summed by SQL over
// what the report does not group by, in time order when q has a period.
func (s *SQLStore) UsageFacts(ctx context.Context, q FactQuery, fn func(Fact) error) error {
	fromCDRs := q.Source == SourceCDRs
	cols, group := factColumns(q.Dims, fromCDRs)
	var sql strings.Builder
	var args []any
	timeCol := "at_ms"
	// COALESCE: a sum over no rows is NULL; CAST: PostgreSQL sums BIGINTs
	// as NUMERIC.
	sums := sumsOf("calls", "answered", "billed_seconds", "cost_micros")
	from, where := "usage_hourly", "at_ms >= ? AND at_ms < ?"
	switch q.Source {
	case SourceDaily:
		from = "usage_daily"
	case SourceCDRs:
		timeCol = "setup_ms"
		sums = "COUNT(*), " + sumsOf("CASE WHEN answer_ms > 0 THEN 1 ELSE 0 END", "billed_seconds", "cost_micros")
		from, where = "cdrs", "status != 'live' AND setup_ms >= ? AND setup_ms < ?"
	}
	args = append(args, q.Since.UnixMilli(), q.Until.UnixMilli())
	if q.KeyID != "" {
		where += " AND key_id = ?"
		args = append(args, q.KeyID)
	}
	at := "0"
	if q.Period != "" {
		at = "MIN(" + timeCol + ")"
		group = append([]string{periodBucket(q.Period, timeCol, q.OffsetSec)}, group...)
	}
	fmt.Fprintf(&sql, "SELECT %s, %s, %s FROM %s WHERE %s", at, strings.Join(cols, ", "), sums, from, where)
	if len(group) > 0 {
		fmt.Fprintf(&sql, " GROUP BY %s", strings.Join(group, ", "))
	}
	if q.Period != "" {
		sql.WriteString(" ORDER BY 1")
	}
	rows, err := s.db.QueryContext(ctx, sql.String(), args...)
	if err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var f Fact
		if err := rows.Scan(&f.AtMS, &f.KeyID, &f.TrunkID, &f.Direction, &f.Prefix, &f.Country, &f.Calls, &f.Answered,
			&f.BilledSeconds, &f.CostMicros); err != nil {
			return fmt.Errorf("usage: %w", err)
		}
		if f.Calls == 0 {
			continue
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	return rows.Err()
}
