package sqldb_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "trunkgate/internal/sqldb"
	"trunkgate/internal/sqldb/sqldbtest"
)

func TestMain(m *testing.M) { sqldbtest.Main(m) }

func TestOpenIsWALWithBusyTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a dir with spaces", "edge.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	var timeout int
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("PRAGMA busy_timeout").Scan(&timeout); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || timeout != 5000 {
		t.Fatalf("journal_mode %q, busy_timeout %d; want wal, 5000", mode, timeout)
	}
}

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	db := sqldbtest.Open(t)
	steps := []Migration{
		{Version: 1, SQL: `CREATE TABLE things (id {{serial}}, data {{blob}})`},
		{Version: 2, SQL: `ALTER TABLE things ADD COLUMN name TEXT`},
		{Version: 3, SQL: `CREATE TABLE pg_only (id BIGINT)`, Only: On(Postgres)},
	}
	for range 2 { // the second run finds nothing to do
		if err := Migrate(ctx, db, "things", steps); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`INSERT INTO things (name) VALUES ('x')`); err != nil {
		t.Fatalf("schema after v2: %v", err)
	}
	// A failing step leaves neither its changes nor its version behind.
	if _, err := db.Exec(`SELECT * FROM pg_only`); (err == nil) != (db.Dialect == Postgres) {
		t.Fatalf("a PostgreSQL-only step on %v: %v", db.Dialect, err)
	}
	bad := append(steps, Migration{Version: 4, SQL: `CREATE TABLE more (id BIGINT); SELECT * FROM nowhere`})
	if err := Migrate(ctx, db, "things", bad); err == nil {
		t.Fatal("a broken migration succeeded")
	}
	var v int
	if err := db.QueryRow(`SELECT MAX(version) FROM schema_migrations WHERE component = 'things'`).Scan(&v); err != nil || v != 3 {
		t.Fatalf("version %d (%v) after a failed v4; want 3", v, err)
	}
	if _, err := db.Exec(`SELECT * FROM more`); err == nil {
		t.Fatal("the failed migration's table exists")
	}
	// Components keep separate versions.
	if err := Migrate(ctx, db, "others", []Migration{{Version: 1, SQL: `CREATE TABLE others (id BIGINT)`}}); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateConcurrently: edges starting together on one PostgreSQL each
// run Migrate; every step runs once.
func TestMigrateConcurrently(t *testing.T) {
	url := sqldbtest.PostgresURL(t)
	steps := []Migration{{Version: 1, SQL: `CREATE TABLE things (id {{serial}})`}, {Version: 2, SQL: `INSERT INTO things DEFAULT VALUES`}}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := Open(url)
			if err != nil {
				errs <- err
				return
			}
			defer db.Close()
			errs <- Migrate(context.Background(), db, "things", steps)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	db, _ := Open(url)
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM things`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d rows (%v): a step ran more than once", n, err)
	}
}

func TestRebind(t *testing.T) {
	pg := &DB{Dialect: Postgres}
	if got := pg.Rebind(`SELECT a FROM t WHERE b = ? AND c IN (?, ?)`); got != `SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)` {
		t.Fatal(got)
	}
	if got := (&DB{Dialect: SQLite}).Rebind(`b = ?`); got != `b = ?` {
		t.Fatal(got)
	}
}

// TestWritersQueue: the edge and a CLI write the same file at once; the
// busy timeout and immediate transactions make them wait, not fail.
func TestWritersQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.db")
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := a.Exec(`CREATE TABLE n (v BIGINT)`); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for _, db := range []*DB{a, b} {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 50 {
					tx, err := db.BeginTx(context.Background(), nil)
					if err != nil {
						errs <- err
						return
					}
					if _, err := tx.Exec(`INSERT INTO n (v) VALUES (?)`, i); err != nil {
						tx.Rollback()
						errs <- err
						return
					}
					if err := tx.Commit(); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent writer: %v", err)
	}
	var n int
	if err := a.QueryRow(`SELECT COUNT(*) FROM n`).Scan(&n); err != nil || n != 400 {
		t.Fatalf("%d rows (%v), want 400", n, err)
	}
}

// TestBurstOfWriters: far more writers than connections, as at the end of
// a burst of calls, each writing a CDR-sized transaction; none may fail
// with "database is locked" (SQLite's busy handler starved some before
// transactions took turns in the process).
func TestBurstOfWriters(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "burst.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Dialect != SQLite {
		t.Skip("SQLite's write lock")
	}
	if _, err := db.Exec(`CREATE TABLE cdr (id BIGINT PRIMARY KEY, body TEXT); CREATE TABLE rollup (k BIGINT PRIMARY KEY, n BIGINT)`); err != nil {
		t.Fatal(err)
	}
	const writers, each = 200, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				err := func() error {
					tx, err := db.BeginTx(context.Background(), nil)
					if err != nil {
						return err
					}
					defer tx.Rollback()
					if _, err := tx.Exec(`INSERT INTO cdr (id, body) VALUES (?, ?)`, w*each+i, strings.Repeat("x", 400)); err != nil {
						return err
					}
					if _, err := tx.Exec(`INSERT INTO rollup (k, n) VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET n = n + 1`, i); err != nil {
						return err
					}
					return tx.Commit()
				}()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	var n, sum int
	if err := db.QueryRow(`SELECT (SELECT COUNT(*) FROM cdr), (SELECT SUM(n) FROM rollup)`).Scan(&n, &sum); err != nil || n != writers*each || sum != n {
		t.Fatalf("%d CDRs, rollup %d (%v); want %d", n, sum, err, writers*each)
	}
	// A transaction that cannot have its turn in time gives up with its
	// context, and leaves the turn to the others.
	held, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := db.BeginTx(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second transaction while one is open: %v", err)
	}
	held.Rollback()
	next, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	next.Commit()
}
