// Package cluster keeps the edges that share one database in step. Every
// change an edge or the CLI makes to a key, a trunk or a rate table is
// appended to a change log in the database; each edge follows the log and applies what it has not seen
// within a poll interval (250 ms by default). The log is plain SQL, the
// same on SQLite (a CLI with --db beside a running edge) and PostgreSQL
// (several edges).
//
// A sequence number is taken when a row is inserted but becomes visible
// when its transaction commits, so a row can appear after a higher one:
// the follower remembers the gaps below the highest row it has seen and
// looks again until they fill or, after a while (a transaction rolled
// back and left its number unused), gives up on them.
//
// It knows nothing of what a change means: the edge's wiring applies it.
package cluster

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"time"

	"trunkgate/internal/sqldb"
)

// Kinds of change.
const (
	KindKey   = "key"   // a key was created, changed, rotated, suspended or revoked: reload it
	KindTrunk = "trunk" // a trunk was created, changed or deleted: reload it
	KindRates = "rates" // a rate table changed (id: its key, "" for the edge's): reload them
)

// Change is one row of the log.
type Change struct {
	Seq  int64
	Kind string
	ID   string
}

var migrations = []sqldb.Migration{{Version: 1, SQL: `
CREATE TABLE changes (
	seq   {{serial}},
	kind  TEXT NOT NULL,
	id    TEXT NOT NULL,
	at_ms BIGINT NOT NULL
);
CREATE INDEX changes_at ON changes (at_ms);
`}, {Version: 2, SQL: `
CREATE TABLE cluster_secrets (
	name  TEXT PRIMARY KEY,
	value {{blob}} NOT NULL
);
`}, {Version: 3, Only: sqldb.On(sqldb.Postgres), SQL: `
CREATE FUNCTION changes_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('` + notifyChannel + `', '');
	RETURN NULL;
END $$;
CREATE TRIGGER changes_notify AFTER INSERT ON changes FOR EACH STATEMENT EXECUTE FUNCTION changes_notify();
`}}

// notifyChannel is where PostgreSQL tells followers that the log grew
// (at the commit that makes the new rows visible).
const notifyChannel = "trunkgate_changes"

// Log is the change log.
type Log struct {
	db  *sqldb.DB
	log *slog.Logger
	now func() time.Time
}

// Open migrates the change log's table.
func Open(ctx context.Context, db *sqldb.DB, log *slog.Logger) (*Log, error) {
	if err := sqldb.Migrate(ctx, db, "cluster", migrations); err != nil {
		return nil, err
	}
	return &Log{db: db, log: log, now: time.Now}, nil
}

// Secret returns the secret called name that every edge on the database
// shares (the digest nonce key), made of 32 random bytes by whichever
// edge asks first.
func (l *Log) Secret(ctx context.Context, name string) ([]byte, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	if _, err := l.db.ExecContext(ctx, `INSERT INTO cluster_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`,
		name, fresh); err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	var v []byte
	if err := l.db.QueryRowContext(ctx, `SELECT value FROM cluster_secrets WHERE name = ?`, name).Scan(&v); err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return v, nil
}

// Append records a change for every edge to apply.
func (l *Log) Append(ctx context.Context, kind, id string) error {
	if _, err := l.db.ExecContext(ctx, `INSERT INTO changes (kind, id, at_ms) VALUES (?, ?, ?)`, kind, id, l.now().UnixMilli()); err != nil {
		return fmt.Errorf("change log: %w", err)
	}
	return nil
}

// Changed is Append for callers that cannot act on a failure: it is
// logged (the change itself stands; other edges see it at their next
// restart).
func (l *Log) Changed(kind, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Append(ctx, kind, id); err != nil {
		l.log.Error("change not logged for other edges", "kind", kind, "id", id, "error", err)
	}
}

// gapPatience is how long a missing sequence number is looked for.
const gapPatience = 30 * time.Second

// keepFor is how long rows stay in the log.
const keepFor = time.Hour

// Follow starts following the log from its end: the changes appended
// from now on are the ones Run applies.
func (l *Log) Follow(ctx context.Context) (*Follower, error) {
	var top int64
	if err := l.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM changes`).Scan(&top); err != nil {
		return nil, fmt.Errorf("change log: %w", err)
	}
	return &Follower{l: l, f: &follower{low: top, seen: map[int64]bool{}, gaps: map[int64]time.Time{}}}, nil
}

// Follower applies the log's changes.
type Follower struct {
	l *Log
	f *follower
}

// Run applies each change once, in log order, on Run's goroutine, until
// ctx ends; it also prunes rows older than an hour. On PostgreSQL it reads
// the log when notified of a change (LISTEN/NOTIFY) and every interval in
// case a notification was lost; on SQLite, which cannot notify, it polls
// every interval.
func (fl *Follower) Run(ctx context.Context, every time.Duration, apply func(Change)) {
	l := fl.l
	tick := time.NewTicker(every)
	defer tick.Stop()
	wake := make(chan struct{}, 1)
	if l.db.Dialect == sqldb.Postgres {
		listenCtx, stop := context.WithCancel(ctx)
		listening := make(chan struct{})
		defer func() { stop(); <-listening }()
		go func() {
			defer close(listening)
			_ = l.db.Listen(listenCtx, notifyChannel, func() {
				select {
				case wake <- struct{}{}:
				default:
				}
			}, func(err error) {
				l.log.Warn("change log: notifications lost; polling until they are back", "error", err)
			})
		}()
	}
	lastPrune := l.now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-wake:
		}
		if err := l.poll(ctx, fl.f, apply); err != nil && ctx.Err() == nil {
			l.log.Error("change log: poll", "error", err)
		}
		if now := l.now(); now.Sub(lastPrune) > time.Minute {
			lastPrune = now
			if _, err := l.db.ExecContext(ctx, `DELETE FROM changes WHERE at_ms < ?`, now.Add(-keepFor).UnixMilli()); err != nil && ctx.Err() == nil {
				l.log.Error("change log: prune", "error", err)
			}
		}
	}
}

// follower is where a Follower is in the log: every row at or below low has
// been applied or given up on; seen are the rows above low applied; gaps
// are the numbers above low not seen yet, and since when.
type follower struct {
	low  int64
	seen map[int64]bool
	gaps map[int64]time.Time
}

func (l *Log) poll(ctx context.Context, f *follower, apply func(Change)) error {
	rows, err := l.db.QueryContext(ctx, `SELECT seq, kind, id FROM changes WHERE seq > ? ORDER BY seq`, f.low)
	if err != nil {
		return err
	}
	var got []Change
	for rows.Next() {
		var c Change
		if err := rows.Scan(&c.Seq, &c.Kind, &c.ID); err != nil {
			rows.Close()
			return err
		}
		got = append(got, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	now := l.now()
	high := f.low
	for _, c := range got {
		if !f.seen[c.Seq] {
			f.seen[c.Seq] = true
			delete(f.gaps, c.Seq)
			apply(c)
		}
		high = max(high, c.Seq)
	}
	for s := f.low + 1; s < high; s++ {
		if _, waiting := f.gaps[s]; !f.seen[s] && !waiting {
			f.gaps[s] = now
		}
	}
	// Move low up over what is applied or given up on.
	for s := f.low + 1; s <= high; s++ {
		if since, gap := f.gaps[s]; gap {
			if now.Sub(since) < gapPatience {
				break
			}
			delete(f.gaps, s)
		}
		delete(f.seen, s)
		f.low = s
	}
	return nil
}
