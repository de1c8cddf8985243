package billing

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"trunkgate/internal/sqldb"
)

// ErrNotFound is returned for an unknown call id.
var ErrNotFound = errors.New("not found")

// Store keeps CDRs.
type Store interface {
	// InsertCDR writes a CDR (live at answer, or done for unanswered calls).
	InsertCDR(ctx context.Context, c *CDR) error
	// FinishCDR overwrites a CDR with its final state.
	FinishCDR(ctx context.Context, c *CDR) error
	// Checkpoint records that the live calls were still up at t.
	Checkpoint(ctx context.Context, callIDs []string, t time.Time) error
	// LiveCDRs returns the CDRs still marked live, with their last
	// checkpoint: after a crash, the calls that were up.
	LiveCDRs(ctx context.Context) ([]LiveCDR, error)
	// MonthSpend sums the cost of CDRs ended in the month (UTC) that
	// starts at monthStart, by key.
	MonthSpend(ctx context.Context, monthStart time.Time) (map[string]int64, error)
	ListCDRs(ctx context.Context, f Filter) ([]CDR, error)
	GetCDR(ctx context.Context, callID string) (*CDR, error)
}

// LiveCDR is a CDR still marked live, and when it was last seen up.
type LiveCDR struct {
	CDR          CDR
	CheckpointMS int64
}

// Filter narrows ListCDRs.
type Filter struct {
	KeyID  string
	Since  time.Time
	Until  time.Time
	Status string
	Limit  int
}

// SQLStore keeps CDRs in the embedded database.
type SQLStore struct{ db *sqldb.DB }

var migrations = []sqldb.Migration{{Version: 1, SQL: `
CREATE TABLE cdrs (
	call_id         TEXT PRIMARY KEY,
	sip_call_id     TEXT NOT NULL,
	key_id          TEXT NOT NULL,
	trunk_id        TEXT NOT NULL DEFAULT '',
	direction       TEXT NOT NULL,
	from_uri        TEXT NOT NULL DEFAULT '',
	to_uri          TEXT NOT NULL DEFAULT '',
	test_key        BIGINT NOT NULL DEFAULT 0,
	setup_ms        BIGINT NOT NULL,
	answer_ms       BIGINT NOT NULL DEFAULT 0,
	end_ms          BIGINT NOT NULL DEFAULT 0,
	checkpoint_ms   BIGINT NOT NULL DEFAULT 0,
	duration_ms     BIGINT NOT NULL DEFAULT 0,
	billed_seconds  BIGINT NOT NULL DEFAULT 0,
	rate_per_minute BIGINT NOT NULL DEFAULT 0,
	cost_micros     BIGINT NOT NULL DEFAULT 0,
	final_code      BIGINT NOT NULL DEFAULT 0,
	hangup_side     TEXT NOT NULL DEFAULT '',
	hangup_cause    TEXT NOT NULL DEFAULT '',
	status          TEXT NOT NULL,
	codec           TEXT NOT NULL DEFAULT '',
	media           TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX cdrs_key_end ON cdrs (key_id, end_ms);
CREATE INDEX cdrs_status ON cdrs (status);
CREATE INDEX cdrs_setup ON cdrs (setup_ms);
`}, {Version: 2, SQL: `
ALTER TABLE cdrs ADD COLUMN sandbox   BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cdrs ADD COLUMN gateway   TEXT NOT NULL DEFAULT '';
ALTER TABLE cdrs ADD COLUMN transport TEXT NOT NULL DEFAULT '';
`}, {Version: 3, SQL: `
ALTER TABLE cdrs ADD COLUMN rate_prefix TEXT NOT NULL DEFAULT '';
ALTER TABLE cdrs ADD COLUMN country     TEXT NOT NULL DEFAULT '';
CREATE TABLE rates (
	key_id      TEXT NOT NULL DEFAULT '',
	prefix      TEXT NOT NULL,
	per_minute  BIGINT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (key_id, prefix)
);
`}, {Version: 4, SQL: `
` + rollupTable("usage_daily") + rollupTable("usage_hourly") + `
CREATE INDEX cdrs_key_setup ON cdrs (key_id, setup_ms);
` + rebuildRollup}, {Version: 5, SQL: `
ALTER TABLE cdrs ADD COLUMN node TEXT NOT NULL DEFAULT '';
`}, {Version: 6, Only: sqldb.On(sqldb.SQLite), SQL: spendMonthTable + `
INSERT INTO spend_month SELECT strftime('%Y-%m', end_ms / 1000, 'unixepoch'), key_id, SUM(cost_micros)
	FROM cdrs WHERE status != 'live' AND cost_micros != 0 GROUP BY 1, 2;
`}, {Version: 7, Only: sqldb.On(sqldb.Postgres), SQL: spendMonthTable + `
INSERT INTO spend_month SELECT to_char(to_timestamp(end_ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM'), key_id, SUM(cost_micros)
	FROM cdrs WHERE status != 'live' AND cost_micros != 0 GROUP BY 1, 2;
`}, {Version: 8, SQL: `
ALTER TABLE cdrs ADD COLUMN media_encryption TEXT NOT NULL DEFAULT '';
`}}

// spendMonthTable is each key's spend by calendar month (UTC) of its
// calls' end, kept with every final CDR: month-to-date spend in one
// small read, which edges sharing a database repeat four times a second.
const spendMonthTable = `
CREATE TABLE spend_month (
	month       TEXT NOT NULL,
	key_id      TEXT NOT NULL,
	cost_micros BIGINT NOT NULL,
	PRIMARY KEY (month, key_id)
);
`

// rebuildRollup fills the usage rollup from the final CDRs (the
// migration that adds it; tests).
var rebuildRollup = rollupFill("usage_daily", 86_400_000) + rollupFill("usage_hourly", 3_600_000)

// rollupTable is the schema of a usage rollup.
func rollupTable(name string) string {
	return fmt.Sprintf(`
CREATE TABLE %[1]s (
	at_ms          BIGINT NOT NULL,
	key_id         TEXT NOT NULL,
	trunk_id       TEXT NOT NULL,
	direction      TEXT NOT NULL,
	prefix         TEXT NOT NULL,
	country        TEXT NOT NULL,
	calls          BIGINT NOT NULL,
	answered       BIGINT NOT NULL,
	billed_seconds BIGINT NOT NULL,
	cost_micros    BIGINT NOT NULL,
	PRIMARY KEY (at_ms, key_id, trunk_id, direction, prefix, country)
) {{without_rowid}};
CREATE INDEX %[1]s_key ON %[1]s (key_id, at_ms);
`, name)
}

// rollupFill sums the final CDRs into a rollup of unit milliseconds.
func rollupFill(name string, unit int64) string {
	return fmt.Sprintf(`
INSERT INTO %s
	SELECT setup_ms - setup_ms %% %d, key_id, trunk_id, direction,
		CASE WHEN rate_prefix != '' THEN rate_prefix ELSE country END, country,
		COUNT(*), SUM(CASE WHEN answer_ms > 0 THEN 1 ELSE 0 END), SUM(billed_seconds), SUM(cost_micros)
	FROM cdrs WHERE status != 'live'
	GROUP BY 1, 2, 3, 4, 5, 6;
`, name, unit)
}

// NewSQLStore migrates the billing schema and returns the store.
func NewSQLStore(ctx context.Context, db *sqldb.DB) (*SQLStore, error) {
	if err := sqldb.Migrate(ctx, db, "billing", migrations); err != nil {
		return nil, err
	}
	return &SQLStore{db: db}, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// execer runs a statement on the database or in a transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (s *SQLStore) InsertCDR(ctx context.Context, c *CDR) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("insert cdr %s: %w", c.CallID, err)
	}
	defer tx.Rollback()
	if err := insertCDR(ctx, tx, c); err != nil {
		return err
	}
	if c.Status != StatusLive {
		if err := rollUp(ctx, tx, c, usageOf(c)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func insertCDR(ctx context.Context, db execer, c *CDR) error {
	media, err := json.Marshal(c.Media)
	if err != nil {
		return fmt.Errorf("insert cdr %s: %w", c.CallID, err)
	}
	checkpoint := c.AnswerMS
	if c.Status != StatusLive {
		checkpoint = c.EndMS
	}
	_, err = db.ExecContext(ctx, `INSERT INTO cdrs (call_id, sip_call_id, key_id, trunk_id, direction, from_uri, to_uri,
		test_key, setup_ms, answer_ms, end_ms, checkpoint_ms, duration_ms, billed_seconds, rate_per_minute, cost_micros,
		final_code, hangup_side, hangup_cause, status, codec, media, sandbox, gateway, transport, rate_prefix, country, node, media_encryption)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		c.CallID, c.SIPCallID, c.KeyID, c.TrunkID, c.Direction, c.From, c.To, boolInt(c.TestKey), c.SetupMS, c.AnswerMS,
		c.EndMS, checkpoint, c.DurationMS, c.BilledSeconds, c.RatePerMinute, c.CostMicros, c.FinalCode, c.HangupSide,
		c.HangupCause, c.Status, c.Codec, string(media), boolInt(c.Sandbox), c.Gateway, c.Transport, c.RatePrefix, c.Country, c.Node,
		c.MediaEncryption)
	if err != nil {
		return fmt.Errorf("insert cdr %s: %w", c.CallID, err)
	}
	return nil
}

// FinishCDR writes a CDR's final state (inserting it if it was never
// stored live) and, the first time it is final, adds it to the hourly
// usage rollup in the same transaction: a report never counts a call
// twice or misses one.
func (s *SQLStore) FinishCDR(ctx context.Context, c *CDR) error {
	media, err := json.Marshal(c.Media)
	if err != nil {
		return fmt.Errorf("finish cdr %s: %w", c.CallID, err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("finish cdr %s: %w", c.CallID, err)
	}
	defer tx.Rollback()
	var prev string
	var prevBilled, prevCost int64
	switch err := tx.QueryRowContext(ctx, `SELECT status, billed_seconds, cost_micros FROM cdrs WHERE call_id=?`,
		c.CallID).Scan(&prev, &prevBilled, &prevCost); {
	case errors.Is(err, sql.ErrNoRows):
		if err := insertCDR(ctx, tx, c); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("finish cdr %s: %w", c.CallID, err)
	default:
		// Only over the status it was read with: when two edges close the
		// same call at once (a dead node's), the second changes nothing
		// and rolls nothing up twice.
		res, err := tx.ExecContext(ctx, `UPDATE cdrs SET sip_call_id=?, answer_ms=?, end_ms=?, checkpoint_ms=?, duration_ms=?,
			billed_seconds=?, rate_per_minute=?, cost_micros=?, final_code=?, hangup_side=?, hangup_cause=?, status=?, codec=?,
			media=?, gateway=?, transport=?, media_encryption=? WHERE call_id=? AND status=?`,
			c.SIPCallID, c.AnswerMS, c.EndMS, c.EndMS, c.DurationMS, c.BilledSeconds, c.RatePerMinute, c.CostMicros, c.FinalCode,
			c.HangupSide, c.HangupCause, c.Status, c.Codec, string(media), c.Gateway, c.Transport, c.MediaEncryption, c.CallID, prev)
		if err != nil {
			return fmt.Errorf("finish cdr %s: %w", c.CallID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("finish cdr %s: %w", c.CallID, err)
		}
		if n == 0 {
			return nil // closed by another edge meanwhile
		}
	}
	switch prev {
	case "", StatusLive:
		if err := rollUp(ctx, tx, c, usageOf(c)); err != nil {
			return err
		}
	case StatusRecovered:
		// Another edge took this one for dead and billed the call to its
		// last checkpoint; the call went on, and this is its true end.
		if err := rollUp(ctx, tx, c, usage{billedSeconds: c.BilledSeconds - prevBilled, cost: c.CostMicros - prevCost}); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *SQLStore) Checkpoint(ctx context.Context, callIDs []string, t time.Time) error {
	if len(callIDs) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `UPDATE cdrs SET checkpoint_ms=? WHERE call_id=? AND status='live'`)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer stmt.Close()
	for _, id := range callIDs {
		if _, err := stmt.ExecContext(ctx, t.UnixMilli(), id); err != nil {
			return fmt.Errorf("checkpoint %s: %w", id, err)
		}
	}
	return tx.Commit()
}

func (s *SQLStore) LiveCDRs(ctx context.Context) ([]LiveCDR, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+cdrColumns+`, checkpoint_ms FROM cdrs WHERE status='live' ORDER BY setup_ms`)
	if err != nil {
		return nil, fmt.Errorf("live cdrs: %w", err)
	}
	defer rows.Close()
	var out []LiveCDR
	for rows.Next() {
		var l LiveCDR
		var checkpoint int64
		c, err := scanCDR(scanAlso{rows, &checkpoint})
		if err != nil {
			return nil, fmt.Errorf("live cdrs: %w", err)
		}
		l.CDR, l.CheckpointMS = c, checkpoint
		out = append(out, l)
	}
	return out, rows.Err()
}

func (s *SQLStore) MonthSpend(ctx context.Context, monthStart time.Time) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key_id, cost_micros FROM spend_month WHERE month = ?`, spendMonth(monthStart.UnixMilli()))
	if err != nil {
		return nil, fmt.Errorf("month spend: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var sum int64
		if err := rows.Scan(&id, &sum); err != nil {
			return nil, fmt.Errorf("month spend: %w", err)
		}
		out[id] = sum
	}
	return out, rows.Err()
}

const cdrColumns = `call_id, sip_call_id, key_id, trunk_id, direction, from_uri, to_uri, test_key, setup_ms, answer_ms,
	end_ms, duration_ms, billed_seconds, rate_per_minute, cost_micros, final_code, hangup_side, hangup_cause, status, codec, media,
	sandbox, gateway, transport, rate_prefix, country, node, media_encryption`

// scanAlso scans the CDR columns and then more.
type scanAlso struct {
	row  interface{ Scan(...any) error }
	more *int64
}

func (s scanAlso) Scan(dest ...any) error { return s.row.Scan(append(dest, s.more)...) }

func scanCDR(row interface{ Scan(...any) error }) (CDR, error) {
	var c CDR
	var test, sandbox int
	var media string
	err := row.Scan(&c.CallID, &c.SIPCallID, &c.KeyID, &c.TrunkID, &c.Direction, &c.From, &c.To, &test, &c.SetupMS,
		&c.AnswerMS, &c.EndMS, &c.DurationMS, &c.BilledSeconds, &c.RatePerMinute, &c.CostMicros, &c.FinalCode,
		&c.HangupSide, &c.HangupCause, &c.Status, &c.Codec, &media, &sandbox, &c.Gateway, &c.Transport, &c.RatePrefix, &c.Country, &c.Node,
		&c.MediaEncryption)
	if err != nil {
		return c, err
	}
	c.TestKey, c.Sandbox = test != 0, sandbox != 0
	if err := json.Unmarshal([]byte(media), &c.Media); err != nil {
		return c, fmt.Errorf("cdr %s media: %w", c.CallID, err)
	}
	return c, nil
}

func (s *SQLStore) ListCDRs(ctx context.Context, f Filter) ([]CDR, error) {
	q := `SELECT ` + cdrColumns + ` FROM cdrs WHERE 1=1`
	var args []any
	if f.KeyID != "" {
		q += ` AND key_id = ?`
		args = append(args, f.KeyID)
	}
	if !f.Since.IsZero() {
		q += ` AND setup_ms >= ?`
		args = append(args, f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		q += ` AND setup_ms < ?`
		args = append(args, f.Until.UnixMilli())
	}
	if f.Status != "" {
		q += ` AND status = ?`
		args = append(args, f.Status)
	}
	q += ` ORDER BY setup_ms DESC, call_id`
	if f.Limit >= 0 {
		limit := f.Limit
		if limit == 0 || limit > 10000 {
			limit = 1000
		}
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list cdrs: %w", err)
	}
	defer rows.Close()
	var out []CDR
	for rows.Next() {
		c, err := scanCDR(rows)
		if err != nil {
			return nil, fmt.Errorf("list cdrs: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func (s *SQLStore) GetCDR(ctx context.Context, callID string) (*CDR, error) {
	c, err := scanCDR(s.db.QueryRowContext(ctx, `SELECT `+cdrColumns+` FROM cdrs WHERE call_id = ?`, callID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("cdr %s: %w", callID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get cdr %s: %w", callID, err)
	}
	return &c, nil
}
