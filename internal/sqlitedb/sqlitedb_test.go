package sqlitedb

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"
)

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
	db, err := Open(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	steps := []Migration{
		{1, `CREATE TABLE things (id INTEGER PRIMARY KEY)`},
		{2, `ALTER TABLE things ADD COLUMN name TEXT`},
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
	bad := append(steps, Migration{3, `CREATE TABLE more (id INTEGER); SELECT * FROM nowhere`})
	if err := Migrate(ctx, db, "things", bad); err == nil {
		t.Fatal("a broken migration succeeded")
	}
	var v int
	if err := db.QueryRow(`SELECT MAX(version) FROM schema_migrations WHERE component = 'things'`).Scan(&v); err != nil || v != 2 {
		t.Fatalf("version %d (%v) after a failed v3; want 2", v, err)
	}
	if _, err := db.Exec(`SELECT * FROM more`); err == nil {
		t.Fatal("the failed migration's table exists")
	}
	// Components keep separate versions.
	if err := Migrate(ctx, db, "others", []Migration{{1, `CREATE TABLE others (id INTEGER)`}}); err != nil {
		t.Fatal(err)
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
	if _, err := a.Exec(`CREATE TABLE n (v INTEGER)`); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for _, db := range []*sql.DB{a, b} {
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
