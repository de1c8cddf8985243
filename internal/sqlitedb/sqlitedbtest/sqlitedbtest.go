// Package sqlitedbtest gives tests a fresh database, opened as the edge
// opens its own (sqlitedb.Open), in the test's temporary directory.
package sqlitedbtest

import (
	"database/sql"
	"path/filepath"
	"testing"

	"trunkgate/internal/sqlitedb"
)

// Open returns an empty database that is closed when the test ends.
func Open(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
