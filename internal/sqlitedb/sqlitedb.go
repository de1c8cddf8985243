// Package sqlitedb opens the embedded SQLite database that trunkgate uses by
// default and applies each component's schema migrations. Components (keys,
// trunks, billing) own their tables; this package owns only the connection
// settings and the migration bookkeeping.
package sqlitedb

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

// Open opens (creating if needed) the database at path in WAL mode with a
// busy timeout, so that the edge's readers never block on its writer and a
// CLI opening the same file waits instead of failing.
func Open(path string) (*sql.DB, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create database directory: %w", err)
		}
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_busy_timeout", "5000")
	q.Set("_foreign_keys", "on")
	q.Set("_synchronous", "NORMAL")
	// IMMEDIATE takes the write lock at BEGIN, so two writers queue on the
	// busy timeout instead of one failing with SQLITE_BUSY mid-transaction.
	q.Set("_txlock", "immediate")
	dsn := "file:" + path + "?" + q.Encode()
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		db.Close()
		return nil, fmt.Errorf("read journal mode: %w", err)
	}
	if mode != "wal" {
		db.Close()
		return nil, fmt.Errorf("database %s: journal mode is %q, want wal", path, mode)
	}
	return db, nil
}

// Migration is one step of a component's schema, applied once, in order.
type Migration struct {
	Version int
	SQL     string
}

// Migrate applies the component's migrations that the database has not seen
// yet, each in its own transaction, and records them in schema_migrations.
func Migrate(ctx context.Context, db *sql.DB, component string, steps []Migration) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		component TEXT NOT NULL,
		version   INTEGER NOT NULL,
		applied_ms INTEGER NOT NULL DEFAULT (CAST(strftime('%s','now') AS INTEGER) * 1000),
		PRIMARY KEY (component, version))`); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	var current int
	if err := db.QueryRowContext(ctx,
		`SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?`,
		component).Scan(&current); err != nil {
		return fmt.Errorf("migrate %s: read version: %w", component, err)
	}
	for _, step := range steps {
		if step.Version <= current {
			continue
		}
		if err := apply(ctx, db, component, step); err != nil {
			return err
		}
	}
	return nil
}

func apply(ctx context.Context, db *sql.DB, component string, step Migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate %s to v%d: %w", component, step.Version, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, step.SQL); err != nil {
		return fmt.Errorf("migrate %s to v%d: %w", component, step.Version, err)
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO schema_migrations (component, version) VALUES (?, ?)`,
		component, step.Version); err != nil {
		return fmt.Errorf("migrate %s to v%d: record: %w", component, step.Version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate %s to v%d: commit: %w", component, step.Version, err)
	}
	return nil
}
