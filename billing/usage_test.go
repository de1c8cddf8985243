package billing

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// genCDRs makes n final CDRs spread over keys, trunks, directions,
// prefixes and the days of November 2026, seeded so every run is the same.
func genCDRs(n int, seed uint64) []CDR {
	r := rand.New(rand.NewPCG(seed, 1))
	start := time.Date(2026, 10, 31, 12, 0, 0, 0, time.UTC)
	prefixes := []struct{ prefix, country string }{{"+44", "+44"}, {"+447", "+44"}, {"", "+1"}, {"+49", "+49"}, {"", "+353"}}
	out := make([]CDR, n)
	for i := range out {
		p := prefixes[r.IntN(len(prefixes))]
		setup := start.Add(time.Duration(r.Int64N(int64(32 * 24 * time.Hour))))
		c := CDR{CallID: fmt.Sprintf("CA%06d", i), KeyID: fmt.Sprintf("key%d", r.IntN(3)), TrunkID: fmt.Sprintf("tr%d", r.IntN(2)),
			Direction: []string{"inbound", "outbound"}[r.IntN(2)], SetupMS: setup.UnixMilli(),
			RatePerMinute: []int64{0, 6_000, 12_345, 60_000}[r.IntN(4)], RatePrefix: p.prefix, Country: p.country}
		end := setup.Add(time.Duration(r.Int64N(int64(3*time.Second))) + 100*time.Millisecond)
		if r.IntN(5) > 0 { // four in five are answered
			answer := setup.Add(time.Duration(r.Int64N(int64(2 * time.Second))))
			c.AnswerMS = answer.UnixMilli()
			end = answer.Add(time.Duration(r.Int64N(int64(10 * time.Minute))))
		}
		c.Close(end)
		out[i] = c
	}
	return out
}

// direct sums CDRs the slow, obvious way: the truth a report must match.
func direct(cdrs []CDR, keyID string, since, until time.Time, label func(CDR) string) map[string]UsageRow {
	out := map[string]UsageRow{}
	for _, c := range cdrs {
		t := time.UnixMilli(c.SetupMS)
		if t.Before(since) || !t.Before(until) || (keyID != "" && c.KeyID != keyID) {
			continue
		}
		k := label(c)
		r := out[k]
		r.Calls++
		if c.Answered() {
			r.Answered++
		}
		r.BilledSeconds += c.BilledSeconds
		r.CostMicros += c.CostMicros
		out[k] = r
	}
	return out
}

func TestUsageReportsMatchTheCDRs(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	cdrs := genCDRs(600, 7)
	for i := range cdrs {
		if err := store.FinishCDR(ctx, &cdrs[i]); err != nil {
			t.Fatal(err)
		}
	}
	// Finishing a CDR again (a retried write) counts it once.
	if err := store.FinishCDR(ctx, &cdrs[0]); err != nil {
		t.Fatal(err)
	}
	// A live call is in no report.
	live := CDR{CallID: "CAlive", KeyID: "key0", SetupMS: time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC).UnixMilli(), AnswerMS: 1, Status: StatusLive}
	if err := store.InsertCDR(ctx, &live); err != nil {
		t.Fatal(err)
	}
	paris, _ := time.LoadLocation("Europe/Paris")
	kolkata, _ := time.LoadLocation("Asia/Kolkata") // +05:30: no whole hours, the CDRs answer
	nov := func(tz *time.Location) (time.Time, time.Time) { s, u, _ := MonthRange("2026-11", tz); return s, u }
	novUTC, decUTC := nov(time.UTC)
	novParis, decParis := nov(paris)
	novKolkata, decKolkata := nov(kolkata)
	tests := []struct {
		name   string
		q      UsageQuery
		source string
		label  func(CDR) string
	}{
		{"key0 by day and trunk, UTC", UsageQuery{KeyID: "key0", Since: novUTC, Until: decUTC, By: []string{"day", "trunk"}}, SourceDaily,
			func(c CDR) string {
				return time.UnixMilli(c.SetupMS).UTC().Format("2006-01-02") + "|" + c.TrunkID
			}},
		{"every key by key and prefix", UsageQuery{Since: novUTC, Until: decUTC, By: []string{"key", "prefix"}}, SourceDaily,
			func(c CDR) string { return c.KeyID + "|" + reportPrefix(&c) }},
		{"by month and direction, Paris", UsageQuery{Since: novParis, Until: decParis, By: []string{"month", "direction"}, TZ: paris}, SourceHourly,
			func(c CDR) string { return time.UnixMilli(c.SetupMS).In(paris).Format("2006-01") + "|" + c.Direction }},
		{"by hour and country", UsageQuery{KeyID: "key1", Since: novUTC, Until: novUTC.AddDate(0, 0, 3), By: []string{"hour", "country"}}, SourceHourly,
			func(c CDR) string { return time.UnixMilli(c.SetupMS).UTC().Format("2006-01-02T15") + "|" + c.Country }},
		{"by day in Kolkata", UsageQuery{Since: novKolkata, Until: decKolkata, By: []string{"day"}, TZ: kolkata}, SourceCDRs,
			func(c CDR) string { return time.UnixMilli(c.SetupMS).In(kolkata).Format("2006-01-02") }},
		{"a range off the hour", UsageQuery{Since: novUTC.Add(90 * time.Minute), Until: novUTC.AddDate(0, 0, 9).Add(17 * time.Second), By: []string{"trunk"}}, SourceCDRs,
			func(c CDR) string { return c.TrunkID }},
		{"totals only", UsageQuery{Since: novUTC.AddDate(-1, 0, 0), Until: decUTC.AddDate(1, 0, 0)}, SourceDaily,
			func(CDR) string { return "" }},
		{"hours of a day in Paris", UsageQuery{Since: novParis.Add(2 * time.Hour), Until: novParis.Add(26 * time.Hour)}, SourceHourly,
			func(CDR) string { return "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := tt.q
			if err := q.Validate(); err != nil || q.source() != tt.source {
				t.Fatalf("query %v, source %s, want %s", err, q.source(), tt.source)
			}
			want := direct(cdrs, q.KeyID, q.Since, q.Until, tt.label)
			var wantTotal UsageRow
			for _, r := range want {
				wantTotal.add(Fact{Calls: r.Calls, Answered: r.Answered, BilledSeconds: r.BilledSeconds, CostMicros: r.CostMicros})
			}
			got := map[string]UsageRow{}
			var last *UsageRow
			total, err := Report(ctx, store, q, func(r UsageRow) error {
				if last != nil && q.less(&r, last) {
					t.Fatalf("rows out of order: %+v after %+v", r, *last)
				}
				last = &r
				k := rowLabel(q, r)
				if _, dup := got[k]; dup {
					t.Fatalf("row %q twice", k)
				}
				want := UsageRow{Calls: r.Calls, Answered: r.Answered, BilledSeconds: r.BilledSeconds, CostMicros: r.CostMicros}
				got[k] = want
				if r.Answered > 0 && r.AvgCostMicros != (r.CostMicros+r.Answered/2)/r.Answered {
					t.Fatalf("average %d of %+v", r.AvgCostMicros, r)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d rows, want %d", len(got), len(want))
			}
			for k, w := range want {
				if got[k] != w {
					t.Fatalf("row %q: %+v, want %+v", k, got[k], w)
				}
			}
			wantTotal.finish()
			if total != wantTotal || total.Calls == 0 {
				t.Fatalf("totals %+v, want %+v", total, wantTotal)
			}
		})
	}
}

func rowLabel(q UsageQuery, r UsageRow) string {
	parts := []string{}
	if r.Period != "" {
		parts = append(parts, r.Period)
	}
	for _, d := range q.By {
		switch d {
		case ByKey:
			parts = append(parts, r.KeyID)
		case ByTrunk:
			parts = append(parts, r.TrunkID)
		case ByDirection:
			parts = append(parts, r.Direction)
		case ByPrefix:
			parts = append(parts, r.Prefix)
		case ByCountry:
			parts = append(parts, r.Country)
		}
	}
	out := ""
	for i, p := range parts {
		if i > 0 {
			out += "|"
		}
		out += p
	}
	return out
}

// TestRollupRebuildMatches: the migration's rebuild of the rollup from
// the CDRs gives what the writes kept.
func TestRollupRebuildMatches(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	for _, c := range genCDRs(200, 3) {
		if err := store.FinishCDR(ctx, &c); err != nil {
			t.Fatal(err)
		}
	}
	dump := func() string {
		out := ""
		for _, table := range []string{"usage_daily", "usage_hourly"} {
			rows, err := store.db.QueryContext(ctx, `SELECT at_ms, key_id, trunk_id, direction, prefix, country, calls, answered,
				billed_seconds, cost_micros FROM `+table+` ORDER BY 1, 2, 3, 4, 5, 6`)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var h, c, a, b, cost int64
				var k, tr, d, p, co string
				if err := rows.Scan(&h, &k, &tr, &d, &p, &co, &c, &a, &b, &cost); err != nil {
					t.Fatal(err)
				}
				out += fmt.Sprintln(table, h, k, tr, d, p, co, c, a, b, cost)
			}
			rows.Close()
		}
		return out
	}
	kept := dump()
	if _, err := store.db.ExecContext(ctx, `DELETE FROM usage_daily; DELETE FROM usage_hourly`); err != nil {
		t.Fatal(err)
	}
	if _, err := store.db.ExecContext(ctx, rebuildRollup); err != nil {
		t.Fatal(err)
	}
	if rebuilt := dump(); rebuilt != kept || kept == "" {
		t.Fatalf("rebuilt rollup differs:\n%s\nkept:\n%s", rebuilt, kept)
	}
}

func TestUsageQueryValidation(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for _, q := range []UsageQuery{
		{Since: now, Until: now},
		{Since: now, Until: now.Add(time.Hour), By: []string{"week"}},
		{Since: now, Until: now.Add(time.Hour), By: []string{"day", "month"}},
		{Since: now, Until: now.Add(time.Hour), By: []string{"key", "key"}},
	} {
		if err := q.Validate(); err == nil {
			t.Errorf("%+v accepted", q)
		}
	}
	if _, _, err := MonthRange("2026-13", time.UTC); err == nil {
		t.Error("month 13 accepted")
	}
}

func TestOffsetSegments(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	since, until := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	segs := offsetSegments(since, until, paris)
	got := ""
	for _, s := range segs {
		got += fmt.Sprintf("%s %d; ", s.from.Format(time.RFC3339), s.offset)
	}
	want := "2026-01-01T00:00:00Z 3600; 2026-03-29T01:00:00Z 7200; 2026-10-25T01:00:00Z 3600; "
	if got != want {
		t.Fatalf("segments %s, want %s", got, want)
	}
	if len(offsetSegments(since, until, time.UTC)) != 1 {
		t.Fatal("UTC has one offset")
	}
}
