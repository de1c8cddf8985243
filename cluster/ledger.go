package cluster

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	"trunkgate/internal/sqldb"
	"trunkgate/ledger"
	"trunkgate/refusal"
)

// ErrNeedsPostgres is returned for a shared ledger on SQLite: one edge
// owns a SQLite file and keeps its ledger in memory.
var ErrNeedsPostgres = errors.New("a shared ledger needs PostgreSQL")

// The ledger's rows live in PostgreSQL alone. Admission is one call of
// ledger_open: under a transaction-scoped advisory lock on the key (and on
// the trunk, when capped) it counts the key's rows, takes a token from
// the key's bucket and inserts the row, so two nodes can never both take
// the last channel. The bucket runs on the database's clock, which every
// node shares. A node heartbeats once per sync, not once per call.
//
// The ledger's transactions commit without waiting for the disk
// (synchronous_commit off): its rows live as long as calls, and a
// database crash that loses the last milliseconds of them only forgets
// some live calls' channels until those calls end; admission then costs a
// round trip, not a disk flush.
var ledgerMigrations = []sqldb.Migration{{Version: 1, Only: sqldb.On(sqldb.Postgres), SQL: `
CREATE TABLE live_calls (
	call_id      TEXT PRIMARY KEY,
	key_id       TEXT NOT NULL,
	trunk_id     TEXT NOT NULL,
	trunk_capped BOOLEAN NOT NULL,
	direction    TEXT NOT NULL,
	destination  TEXT NOT NULL,
	node         TEXT NOT NULL,
	admitted_ms  BIGINT NOT NULL,
	answered_ms  BIGINT NOT NULL DEFAULT 0,
	rate         BIGINT NOT NULL,
	spend_cap    BIGINT NOT NULL,
	end_cause    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX live_calls_key ON live_calls (key_id);
CREATE INDEX live_calls_node ON live_calls (node);
CREATE INDEX live_calls_trunk ON live_calls (trunk_id) WHERE trunk_capped;
CREATE TABLE ledger_nodes (
	name         TEXT PRIMARY KEY,
	heartbeat_ms BIGINT NOT NULL
);
CREATE TABLE key_buckets (
	key_id  TEXT PRIMARY KEY,
	tokens  DOUBLE PRECISION NOT NULL,
	last_ms BIGINT NOT NULL
);
CREATE FUNCTION ledger_now_ms() RETURNS BIGINT LANGUAGE sql VOLATILE AS
	$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT $$;
CREATE FUNCTION ledger_open(p_call TEXT, p_key TEXT, p_trunk TEXT, p_dir TEXT, p_dest TEXT, p_node TEXT,
	p_admitted BIGINT, p_rate BIGINT, p_spend_cap BIGINT, p_key_cap INT, p_trunk_cap INT, p_cps DOUBLE PRECISION)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
	n      INT;
	now_ms BIGINT;
	burst  DOUBLE PRECISION;
	tokens DOUBLE PRECISION;
	b      key_buckets%ROWTYPE;
BEGIN
	PERFORM set_config('synchronous_commit', 'off', true);
	PERFORM pg_advisory_xact_lock(hashtextextended('ledger key ' || p_key, 0));
	IF p_key_cap > 0 THEN
		SELECT count(*) INTO n FROM live_calls WHERE key_id = p_key;
		IF n >= p_key_cap THEN RETURN 'channel_cap'; END IF;
	END IF;
	IF p_trunk_cap > 0 THEN
		PERFORM pg_advisory_xact_lock(hashtextextended('ledger trunk ' || p_trunk, 0));
		SELECT count(*) INTO n FROM live_calls WHERE trunk_id = p_trunk AND trunk_capped;
		IF n >= p_trunk_cap THEN RETURN 'trunk_channel_cap'; END IF;
	END IF;
	IF p_cps > 0 THEN
		now_ms := ledger_now_ms();
		burst := greatest(1, p_cps);
		SELECT * INTO b FROM key_buckets WHERE key_id = p_key;
		IF NOT FOUND THEN
			tokens := burst;
		ELSE
			tokens := least(burst, b.tokens + greatest(0, now_ms - b.last_ms) / 1000.0 * p_cps);
		END IF;
		IF tokens < 1 THEN RETURN 'call_rate'; END IF;
		INSERT INTO key_buckets (key_id, tokens, last_ms) VALUES (p_key, tokens - 1, now_ms)
		ON CONFLICT (key_id) DO UPDATE SET tokens = excluded.tokens, last_ms = excluded.last_ms;
	END IF;
	INSERT INTO live_calls (call_id, key_id, trunk_id, trunk_capped, direction, destination, node, admitted_ms, rate, spend_cap)
	VALUES (p_call, p_key, p_trunk, p_trunk_cap > 0, p_dir, p_dest, p_node, p_admitted, p_rate, p_spend_cap);
	RETURN 'ok';
END $$;
`}}

// LedgerTable is the shared ledger's table (ledger.Table) in PostgreSQL.
type LedgerTable struct{ db *sqldb.DB }

// OpenLedgerTable migrates the shared ledger's tables.
func OpenLedgerTable(ctx context.Context, db *sqldb.DB) (*LedgerTable, error) {
	if db.Dialect != sqldb.Postgres {
		return nil, ErrNeedsPostgres
	}
	if err := sqldb.Migrate(ctx, db, "ledger", ledgerMigrations); err != nil {
		return nil, err
	}
	return &LedgerTable{db: db}, nil
}

// Insert adds a call's row if the key's channels, trunk channels and
// call rate allow, in one round trip.
func (t *LedgerTable) Insert(ctx context.Context, e ledger.Entry, caps ledger.Caps) error {
	var verdict string
	err := t.db.QueryRowContext(ctx, `SELECT ledger_open(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, e.CallID, e.KeyID, e.TrunkID,
		e.Direction, e.Destination, e.Node, e.AdmittedAt.UnixMilli(), e.RatePerMinute, e.SpendCap, caps.Key, caps.Trunk,
		caps.CPS).Scan(&verdict)
	if err != nil {
		return fmt.Errorf("ledger insert %s: %w", e.CallID, err)
	}
	if verdict == "ok" {
		return nil
	}
	if r, ok := refusal.ByLabel(verdict); ok {
		return r
	}
	return fmt.Errorf("ledger insert %s: unknown verdict %q", e.CallID, verdict)
}

// Answer records when a call was answered.
func (t *LedgerTable) Answer(ctx context.Context, callID string, at time.Time) error {
	_, err := t.db.ExecContext(ctx, `UPDATE live_calls SET answered_ms=? WHERE call_id=? AND answered_ms=0`, at.UnixMilli(), callID)
	return wrap("ledger answer", err)
}

// Delete frees a call's channel.
func (t *LedgerTable) Delete(ctx context.Context, callID string) error {
	_, err := t.db.ExecContext(ctx, `DELETE FROM live_calls WHERE call_id=?`, callID)
	return wrap("ledger delete", err)
}

// ordersChannel is where a node hears that another ordered one of its
// calls to end (the payload names the node).
const ordersChannel = "trunkgate_ledger_orders"

// Order marks a call to be ended by its holder and wakes the holder.
func (t *LedgerTable) Order(ctx context.Context, callID string, cause refusal.Reason) (bool, error) {
	rows, err := t.db.QueryContext(ctx, `WITH o AS (UPDATE live_calls SET end_cause=? WHERE call_id=? RETURNING node)
		SELECT pg_notify('`+ordersChannel+`', node) FROM o`, cause.Label(), callID)
	if err != nil {
		return false, wrap("ledger order", err)
	}
	defer rows.Close()
	found := rows.Next()
	return found, wrap("ledger order", rows.Err())
}

// Orders calls wake when another node orders one of node's calls to end
// (and once when it starts listening), until ctx ends.
func (t *LedgerTable) Orders(ctx context.Context, node string, wake func(), lost func(error)) {
	_ = t.db.Listen(ctx, ordersChannel, wake, lost)
}

// Sync heartbeats a node, puts its rows back if others had taken it for
// dead, drops its rows it no longer holds, frees the rows of silent nodes
// and reads every row, in one transaction.
func (t *LedgerTable) Sync(ctx context.Context, req ledger.SyncRequest) (ledger.Synced, error) {
	var out ledger.Synced
	tx, err := t.db.BeginTx(ctx, nil)
	if err != nil {
		return out, wrap("ledger sync", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
		return out, wrap("ledger sync", err)
	}
	// xmax is 0 for a row this statement inserted: the node had no row.
	if err := tx.QueryRowContext(ctx, `INSERT INTO ledger_nodes (name, heartbeat_ms) VALUES (?, ledger_now_ms())
		ON CONFLICT (name) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms RETURNING xmax = 0`, req.Node).Scan(&out.Rejoined); err != nil {
		return out, wrap("ledger heartbeat", err)
	}
	if out.Rejoined {
		// Counted against the key again; a trunk's own cap does not
		// count them until they end (the entry does not say it had one).
		for _, e := range req.Local {
			var answered int64
			if e.Answered() {
				answered = e.AnsweredAt.UnixMilli()
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO live_calls (call_id, key_id, trunk_id, trunk_capped, direction, destination,
				node, admitted_ms, answered_ms, rate, spend_cap) VALUES (?, ?, ?, false, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (call_id) DO NOTHING`,
				e.CallID, e.KeyID, e.TrunkID, e.Direction, e.Destination, req.Node, e.AdmittedAt.UnixMilli(), answered,
				e.RatePerMinute, e.SpendCap); err != nil {
				return out, wrap("ledger rejoin", err)
			}
		}
	}
	ids := make([]string, len(req.Local))
	for i, e := range req.Local {
		ids[i] = e.CallID
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM live_calls WHERE node=? AND admitted_ms < ? AND NOT (call_id = ANY(?))`,
		req.Node, req.Since.UnixMilli(), ids); err != nil {
		return out, wrap("ledger sync", err)
	}
	if req.ReapAfter > 0 {
		// A node is dead when its heartbeat is old; a row is an orphan when
		// its node is gone (a dead node's rows, whoever reaped the node).
		// Each deleted row is returned to one deleter only, so one node
		// closes the bills of each.
		dead := map[string]bool{}
		if err := collect(ctx, tx, `DELETE FROM ledger_nodes WHERE heartbeat_ms < ledger_now_ms() - ? RETURNING name`,
			dead, req.ReapAfter.Milliseconds()); err != nil {
			return out, err
		}
		if err := collect(ctx, tx, `DELETE FROM live_calls l WHERE NOT EXISTS (SELECT 1 FROM ledger_nodes n WHERE n.name = l.node)
			RETURNING node`, dead); err != nil {
			return out, err
		}
		for name := range dead {
			out.Dead = append(out.Dead, name)
		}
		sort.Strings(out.Dead)
	}
	alive := map[string]bool{}
	if err := collect(ctx, tx, `SELECT name FROM ledger_nodes`, alive); err != nil {
		return out, err
	}
	for name := range alive {
		out.Alive = append(out.Alive, name)
	}
	sort.Strings(out.Alive)
	rows, err := tx.QueryContext(ctx, `SELECT call_id, key_id, trunk_id, direction, destination, node, admitted_ms,
		answered_ms, rate, spend_cap, end_cause FROM live_calls`)
	if err != nil {
		return out, wrap("ledger sync", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r ledger.Row
		var admitted, answered int64
		var cause string
		if err := rows.Scan(&r.CallID, &r.KeyID, &r.TrunkID, &r.Direction, &r.Destination, &r.Node, &admitted, &answered,
			&r.RatePerMinute, &r.SpendCap, &cause); err != nil {
			return out, wrap("ledger sync", err)
		}
		r.AdmittedAt = time.UnixMilli(admitted)
		if answered > 0 {
			r.AnsweredAt = time.UnixMilli(answered)
		}
		if cause != "" {
			r.End, _ = refusal.ByLabel(cause)
			if r.End == 0 {
				r.End = refusal.Internal
			}
		}
		out.Rows = append(out.Rows, r)
	}
	if err := rows.Err(); err != nil {
		return out, wrap("ledger sync", err)
	}
	rows.Close()
	return out, wrap("ledger sync", tx.Commit())
}

func collect(ctx context.Context, tx *sqldb.Tx, q string, into map[string]bool, args ...any) error {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return wrap("ledger reap", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return wrap("ledger reap", err)
		}
		into[name] = true
	}
	return wrap("ledger reap", rows.Err())
}

// Leave removes a node and its rows.
func (t *LedgerTable) Leave(ctx context.Context, node string) error {
	tx, err := t.db.BeginTx(ctx, nil)
	if err != nil {
		return wrap("ledger leave", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM live_calls WHERE node=?`, node); err != nil {
		return wrap("ledger leave", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM ledger_nodes WHERE name=?`, node); err != nil {
		return wrap("ledger leave", err)
	}
	return wrap("ledger leave", tx.Commit())
}

// LastSeen is how long ago node last heartbeat, by the database's clock.
func (t *LedgerTable) LastSeen(ctx context.Context, node string) (time.Duration, bool, error) {
	var ms int64
	err := t.db.QueryRowContext(ctx, `SELECT ledger_now_ms() - heartbeat_ms FROM ledger_nodes WHERE name = ?`, node).Scan(&ms)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, wrap("ledger last seen", err)
	}
	return time.Duration(ms) * time.Millisecond, true, nil
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}
