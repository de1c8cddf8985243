package billing

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"trunkgate/internal/sqldb"
)

// The report benchmarks run over a year of one million CDRs, built once
// and kept in the temporary directory between runs. Like real traffic,
// the volume is skewed: 20 keys, a few heavy (Zipf), each calling
// through 2 of its trunks, to 30 destination prefixes of which a few take
// most calls (Zipf).

const bigCDRs = 1_000_000

var bigYear = time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC)

var (
	bigOnce  sync.Once
	bigStore *SQLStore
	bigErr   error
)

func millionCDRs(b *testing.B) *SQLStore {
	b.Helper()
	bigOnce.Do(func() {
		path := filepath.Join(os.TempDir(), "trunkgate-bench-1m-v2.db")
		_, statErr := os.Stat(path)
		db, err := sqldb.Open(path)
		if err != nil {
			bigErr = err
			return
		}
		ctx := context.Background()
		if bigStore, bigErr = NewSQLStore(ctx, db); bigErr != nil {
			return
		}
		var n int
		if statErr == nil {
			if bigErr = db.QueryRow(`SELECT COUNT(*) FROM cdrs`).Scan(&n); bigErr != nil || n == bigCDRs {
				return
			}
		}
		b.Logf("building %d CDRs in %s", bigCDRs, path)
		bigErr = fillCDRs(ctx, bigStore)
	})
	if bigErr != nil {
		b.Fatal(bigErr)
	}
	return bigStore
}

func fillCDRs(ctx context.Context, s *SQLStore) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM cdrs; DELETE FROM usage_daily; DELETE FROM usage_hourly`); err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(1, 2))
	keys := rand.NewZipf(rand.New(rand.NewPCG(3, 4)), 1.1, 2, 19)
	prefixes := rand.NewZipf(rand.New(rand.NewPCG(5, 6)), 1.3, 1, 29)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	year := int64(365 * 24 * time.Hour / time.Millisecond)
	for i := range bigCDRs {
		c := CDR{CallID: fmt.Sprintf("CA%08d", i), KeyID: fmt.Sprintf("key%02d", keys.Uint64()), Direction: "outbound",
			SetupMS: bigYear.UnixMilli() + r.Int64N(year), RatePerMinute: 12_000, Country: "+44",
			RatePrefix: fmt.Sprintf("+44%02d", prefixes.Uint64())}
		c.TrunkID = c.KeyID + fmt.Sprintf("-tr%d", r.IntN(2))
		if r.IntN(4) > 0 {
			c.AnswerMS = c.SetupMS + 2000
		}
		c.Close(time.UnixMilli(c.SetupMS + 2000 + r.Int64N(300_000)))
		if err := insertCDR(ctx, tx, &c); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, rebuildRollup); err != nil {
		return err
	}
	return tx.Commit()
}

func benchReport(b *testing.B, q UsageQuery) {
	s := millionCDRs(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	rows := 0
	for b.Loop() {
		rows = 0
		if _, err := Report(ctx, s, q, func(UsageRow) error { rows++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows), "rows")
}

// A key's month, by day and trunk: "what does key X owe for November".
func BenchmarkReportMonthKeyByDayTrunk(b *testing.B) {
	since := bigYear.AddDate(0, 11, 0)
	benchReport(b, UsageQuery{KeyID: "key03", Since: since, Until: since.AddDate(0, 1, 0), By: []string{ByDay, ByTrunk}})
}

// Every key's year, by month and key.
func BenchmarkReportYearAllByMonthKey(b *testing.B) {
	benchReport(b, UsageQuery{Since: bigYear, Until: bigYear.AddDate(1, 0, 0), By: []string{ByMonth, ByKey}})
}

// A key's year by destination prefix: which destinations cost most.
func BenchmarkReportYearKeyByPrefix(b *testing.B) {
	benchReport(b, UsageQuery{KeyID: "key03", Since: bigYear, Until: bigYear.AddDate(1, 0, 0), By: []string{ByPrefix}})
}

// The same month from the CDRs themselves (a range off the hour, or a
// time zone off the hour, as India's): the slow path's price.
func BenchmarkReportMonthKeyFromCDRs(b *testing.B) {
	since := bigYear.AddDate(0, 11, 0).Add(time.Minute)
	benchReport(b, UsageQuery{KeyID: "key03", Since: since, Until: since.AddDate(0, 1, 0), By: []string{ByDay, ByTrunk}})
}

// BenchmarkFinishCDR is what one call costs the CDR store: the live CDR
// at answer, then the final CDR and its rollup at the end.
func BenchmarkFinishCDR(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		c := CDR{CallID: fmt.Sprintf("CA%d", i), KeyID: "key1", TrunkID: "tr1", Direction: "inbound", SetupMS: now.UnixMilli(),
			AnswerMS: now.UnixMilli() + 500, RatePerMinute: 6_000, Country: "+1", Status: StatusLive}
		if err := s.InsertCDR(ctx, &c); err != nil {
			b.Fatal(err)
		}
		c.Close(now.Add(time.Minute))
		if err := s.FinishCDR(ctx, &c); err != nil {
			b.Fatal(err)
		}
	}
}
