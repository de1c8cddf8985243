// Package sqldb opens the database trunkgate keeps its state in — the
// embedded SQLite file by default, or a PostgreSQL server that several
// edges share — and applies each component's schema migrations. One SQL
// text serves both: queries are written with ? placeholders, which this
// package numbers for PostgreSQL, and migrations use a few macros for
// the types the two engines spell differently. Components (keys, trunks,
// billing, alerts, the ledger) own their tables; this package owns the
// connection settings and the migration bookkeeping.
package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "github.com/mattn/go-sqlite3"    // registers the "sqlite3" driver
)

// Dialect is the engine behind a DB.
type Dialect int

const (
	SQLite Dialect = iota
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// DB is a database with its dialect. Its query methods take ? placeholders.
type DB struct {
	*sql.DB
	Dialect Dialect
	// Where names the database in messages, without a password.
	Where string
	dsn   string // for Listen's connection of its own
	// stmts keeps prepared statements (SQLite only: pgx caches its own).
	stmts *stmtCache
	// writer admits one SQLite transaction at a time (nil on
	// PostgreSQL). SQLite has one write lock; connections that wait for
	// it in SQLite's busy handler sleep and retry (up to 100 ms a nap),
	// and under a burst of call ends the connection just freed kept
	// winning while the sleepers ran out their busy timeout: CDRs failed
	// with "database is locked" and the queue of writers stopped
	// draining. Waiting here, in order, the next writer starts the moment
	// the last commits.
	writer chan struct{}
}

// stmtCache holds the prepared statement of each parameterised query
// text: on SQLite, preparing a statement again for every call's CDR
// writes was a third of their cost. Only queries with arguments are
// cached (a migration's several statements cannot be prepared as one),
// and at most maxCachedStmts texts (a query built from filters varies).
type stmtCache struct {
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

const maxCachedStmts = 256

// stmt is q's cached statement, prepared on first use; nil when q is not
// cached (no cache, or no arguments).
func (db *DB) stmt(ctx context.Context, q string, args []any) *sql.Stmt {
	if db.stmts == nil || len(args) == 0 {
		return nil
	}
	return db.prepared(ctx, q)
}

// prepared is q's statement from the cache, prepared now if it is not
// there; nil when the cache is full or q does not prepare (the plain path
// then reports the error).
func (db *DB) prepared(ctx context.Context, q string) *sql.Stmt {
	c := db.stmts
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[q]; ok {
		return st
	}
	if len(c.m) >= maxCachedStmts {
		return nil
	}
	st, err := db.DB.PrepareContext(ctx, db.Rebind(q))
	if err != nil {
		return nil
	}
	c.m[q] = st
	return st
}

// IsPostgres reports whether dsn names a PostgreSQL server rather than a
// SQLite file.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Open opens the database dsn names: a postgres:// URL, or a SQLite path.
func Open(dsn string) (*DB, error) {
	if IsPostgres(dsn) {
		return openPostgres(dsn)
	}
	return openSQLite(dsn)
}

// openSQLite opens (creating if needed) the file at path in WAL mode with
// a busy timeout, so that the edge's readers never block on its writer
// and a CLI opening the same file waits instead of failing.
func openSQLite(path string) (*DB, error) {
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
	db, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	// As many idle as open: a connection closed when idle is reopened on
	// the next burst, and each open runs the pragmas above again (at 1000
	// call setups a second that was a fifth of the edge's SQLite time).
	db.SetMaxIdleConns(4)
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
	return &DB{DB: db, Dialect: SQLite, Where: path, stmts: &stmtCache{m: map[string]*sql.Stmt{}}, writer: make(chan struct{}, 1)}, nil
}

// Redact is dsn fit for a log line: a PostgreSQL URL without its
// password.
func Redact(dsn string) string {
	if !IsPostgres(dsn) {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	return u.Redacted()
}

func openPostgres(dsn string) (*DB, error) {
	where := Redact(dsn)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	return &DB{DB: db, Dialect: Postgres, Where: where, dsn: dsn}, nil
}

// Rebind numbers ? placeholders as $1, $2 ... for PostgreSQL. The
// project's SQL has no ? inside string literals.
func (db *DB) Rebind(q string) string { return rebind(db.Dialect, q) }

func rebind(d Dialect, q string) string {
	if d != Postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	n := 0
	for _, c := range q {
		if c == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func (db *DB) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := db.stmt(ctx, q, args); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return db.DB.ExecContext(ctx, db.Rebind(q), args...)
}

func (db *DB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := db.stmt(ctx, q, args); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return db.DB.QueryContext(ctx, db.Rebind(q), args...)
}

func (db *DB) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := db.stmt(ctx, q, args); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return db.DB.QueryRowContext(ctx, db.Rebind(q), args...)
}

// Exec, Query and QueryRow are the background-context forms.
func (db *DB) Exec(q string, args ...any) (sql.Result, error) {
	return db.ExecContext(context.Background(), q, args...)
}

func (db *DB) Query(q string, args ...any) (*sql.Rows, error) {
	return db.QueryContext(context.Background(), q, args...)
}

func (db *DB) QueryRow(q string, args ...any) *sql.Row {
	return db.QueryRowContext(context.Background(), q, args...)
}

// BeginTx starts a transaction whose statements take ? placeholders too.
// On SQLite it first waits its turn behind the process's other
// transactions (see DB.writer); Commit or Rollback ends the turn.
func (db *DB) BeginTx(ctx context.Context, opts *sql.TxOptions) (*Tx, error) {
	if db.writer != nil {
		select {
		case db.writer <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	tx, err := db.DB.BeginTx(ctx, opts)
	if err != nil {
		if db.writer != nil {
			<-db.writer
		}
		return nil, err
	}
	return &Tx{Tx: tx, dialect: db.Dialect, db: db, turn: db.writer != nil}, nil
}

// Tx is a transaction with ? placeholders.
type Tx struct {
	*sql.Tx
	dialect  Dialect
	db       *DB
	uncached []string // queries to prepare for the cache once it ends
	turn     bool     // holds the SQLite writer's turn
}

// endTurn lets the next SQLite transaction begin.
func (tx *Tx) endTurn() {
	if tx.turn {
		tx.turn = false
		<-tx.db.writer
	}
}

// stmt is q's cached statement bound to the transaction (the
// connection's prepared statement is reused), or nil. A query not cached
// yet is prepared for the cache when the transaction ends, not now:
// preparing takes a connection of the pool, and with every connection
// held by a transaction waiting for one, none would come.
func (tx *Tx) stmt(ctx context.Context, q string, args []any) *sql.Stmt {
	c := tx.db.stmts
	if c == nil || len(args) == 0 {
		return nil
	}
	c.mu.Lock()
	st, ok := c.m[q]
	c.mu.Unlock()
	if ok {
		return tx.Tx.StmtContext(ctx, st)
	}
	tx.uncached = append(tx.uncached, q)
	return nil
}

// Commit commits, then prepares for the cache what the transaction ran
// uncached.
func (tx *Tx) Commit() error {
	err := tx.Tx.Commit()
	tx.endTurn()
	tx.prime()
	return err
}

// Rollback rolls back (ErrTxDone after Commit), then prepares for the
// cache what the transaction ran uncached.
func (tx *Tx) Rollback() error {
	err := tx.Tx.Rollback()
	tx.endTurn()
	tx.prime()
	return err
}

func (tx *Tx) prime() {
	for _, q := range tx.uncached {
		tx.db.prepared(context.Background(), q)
	}
	tx.uncached = nil
}

func (tx *Tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := tx.stmt(ctx, q, args); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return tx.Tx.ExecContext(ctx, rebind(tx.dialect, q), args...)
}

func (tx *Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := tx.stmt(ctx, q, args); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return tx.Tx.QueryContext(ctx, rebind(tx.dialect, q), args...)
}

func (tx *Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := tx.stmt(ctx, q, args); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return tx.Tx.QueryRowContext(ctx, rebind(tx.dialect, q), args...)
}

func (tx *Tx) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return tx.Tx.PrepareContext(ctx, rebind(tx.dialect, q))
}

func (tx *Tx) Exec(q string, args ...any) (sql.Result, error) {
	return tx.ExecContext(context.Background(), q, args...)
}
