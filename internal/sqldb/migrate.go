package sqldb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Migration is one step of a component's schema, applied once, in order.
// SQL is the same for both engines, with these macros:
//
//	{{serial}}        an auto-numbered 64-bit primary key column type
//	{{blob}}          a byte string
//	{{without_rowid}} SQLite's WITHOUT ROWID table option (nothing on PostgreSQL)
//
// A step with Only set runs on that engine alone (it is recorded on both,
// so versions stay in step): a PostgreSQL function, say.
type Migration struct {
	Version int
	SQL     string
	Only    *Dialect
}

// On is the Only of a step for one engine.
func On(d Dialect) *Dialect { return &d }

var macros = map[Dialect]*strings.Replacer{
	SQLite:   strings.NewReplacer("{{serial}}", "INTEGER PRIMARY KEY AUTOINCREMENT", "{{blob}}", "BLOB", "{{without_rowid}}", "WITHOUT ROWID"),
	Postgres: strings.NewReplacer("{{serial}}", "BIGSERIAL PRIMARY KEY", "{{blob}}", "BYTEA", "{{without_rowid}}", ""),
}

// migrationLock serialises migrations of edges starting at once on one
// PostgreSQL (an advisory lock; SQLite's immediate transactions already
// queue).
const migrationLock = 727_272

// Migrate applies the component's migrations that the database has not seen
// yet, each in its own transaction, and records them in schema_migrations.
// Edges starting together on one PostgreSQL each take the migration lock,
// so each step runs once.
func Migrate(ctx context.Context, db *DB, component string, steps []Migration) error {
	err := db.inLockedTx(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			component  TEXT NOT NULL,
			version    BIGINT NOT NULL,
			applied_ms BIGINT NOT NULL,
			PRIMARY KEY (component, version))`)
		return err
	})
	if err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	for _, step := range steps {
		if err := db.apply(ctx, component, step); err != nil {
			return err
		}
	}
	return nil
}

func (db *DB) inLockedTx(ctx context.Context, f func(tx *Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if db.Dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, migrationLock); err != nil {
			return err
		}
	}
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// errApplied ends a step another edge has applied meanwhile.
var errApplied = errors.New("applied")

func (db *DB) apply(ctx context.Context, component string, step Migration) error {
	err := db.inLockedTx(ctx, func(tx *Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE component = ? AND version = ?`,
			component, step.Version).Scan(&n); err != nil {
			return fmt.Errorf("read version: %w", err)
		}
		if n > 0 {
			return errApplied
		}
		if step.Only == nil || *step.Only == db.Dialect {
			// No arguments: the driver sends it as it is, several statements
			// at once.
			if _, err := tx.Tx.ExecContext(ctx, macros[db.Dialect].Replace(step.SQL)); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_ms) VALUES (?, ?, ?)`,
			component, step.Version, time.Now().UnixMilli())
		return err
	})
	if err != nil && !errors.Is(err, errApplied) {
		return fmt.Errorf("migrate %s to v%d: %w", component, step.Version, err)
	}
	return nil
}
