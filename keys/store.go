package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"trunkgate/internal/sqldb"
)

// ErrNotFound is returned for a key id the store does not hold.
var ErrNotFound = errors.New("not found")

// Store keeps keys and the audit log. SQLStore is the embedded default.
type Store interface {
	InsertKey(ctx context.Context, k *Key) error
	UpdateKey(ctx context.Context, k *Key) error
	GetKey(ctx context.Context, id string) (*Key, error)
	ListKeys(ctx context.Context) ([]*Key, error)
	InsertAudit(ctx context.Context, entries []AuditEntry) error
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)
}

// SQLStore is the Store on the embedded SQLite database.
type SQLStore struct{ db *sqldb.DB }

var migrations = []sqldb.Migration{{Version: 1, SQL: `
CREATE TABLE keys (
	id              TEXT PRIMARY KEY,
	name            TEXT NOT NULL DEFAULT '',
	mode            TEXT NOT NULL CHECK (mode IN ('live','test')),
	hash            {{blob}} NOT NULL,
	prev_hash       {{blob}},
	prev_expires_ms BIGINT NOT NULL DEFAULT 0,
	scopes          TEXT NOT NULL,
	limits          TEXT NOT NULL,
	signing_secret  TEXT NOT NULL,
	status          TEXT NOT NULL CHECK (status IN ('active','revoked')),
	created_ms      BIGINT NOT NULL,
	updated_ms      BIGINT NOT NULL,
	revoked_ms      BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE audit (
	id       {{serial}},
	at_ms    BIGINT NOT NULL,
	actor    TEXT NOT NULL,
	action   TEXT NOT NULL,
	target   TEXT NOT NULL DEFAULT '',
	outcome  TEXT NOT NULL,
	detail   TEXT NOT NULL DEFAULT '',
	source   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_at ON audit (at_ms);
CREATE INDEX audit_target ON audit (target, at_ms);
`}, {Version: 2, SQL: `
ALTER TABLE keys ADD COLUMN alerts    TEXT NOT NULL DEFAULT '{}';
ALTER TABLE keys ADD COLUMN suspended TEXT NOT NULL DEFAULT '';
`}}

// NewSQLStore migrates the keys schema on db and returns the store.
func NewSQLStore(ctx context.Context, db *sqldb.DB) (*SQLStore, error) {
	if err := sqldb.Migrate(ctx, db, "keys", migrations); err != nil {
		return nil, err
	}
	return &SQLStore{db: db}, nil
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

func scopesText(s []Scope) string {
	parts := make([]string, len(s))
	for i, sc := range s {
		parts[i] = string(sc)
	}
	return strings.Join(parts, " ")
}

func (s *SQLStore) InsertKey(ctx context.Context, k *Key) error {
	limits, err := json.Marshal(k.Limits)
	if err != nil {
		return fmt.Errorf("insert key %s: %w", k.ID, err)
	}
	alerts, err := json.Marshal(k.Alerts)
	if err != nil {
		return fmt.Errorf("insert key %s: %w", k.ID, err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO keys
		(id, name, mode, hash, prev_hash, prev_expires_ms, scopes, limits, signing_secret, status, created_ms, updated_ms,
		revoked_ms, alerts, suspended)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		k.ID, k.Name, string(k.Mode), k.Hash[:], k.PrevHash, ms(k.PrevExpiresAt), scopesText(k.Scopes),
		string(limits), k.SigningSecret, string(k.Status), ms(k.CreatedAt), ms(k.UpdatedAt), ms(k.RevokedAt),
		string(alerts), k.Suspended)
	if err != nil {
		return fmt.Errorf("insert key %s: %w", k.ID, err)
	}
	return nil
}

func (s *SQLStore) UpdateKey(ctx context.Context, k *Key) error {
	limits, err := json.Marshal(k.Limits)
	if err != nil {
		return fmt.Errorf("update key %s: %w", k.ID, err)
	}
	alerts, err := json.Marshal(k.Alerts)
	if err != nil {
		return fmt.Errorf("update key %s: %w", k.ID, err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE keys SET name=?, hash=?, prev_hash=?, prev_expires_ms=?,
		scopes=?, limits=?, status=?, updated_ms=?, revoked_ms=?, alerts=?, suspended=? WHERE id=?`,
		k.Name, k.Hash[:], k.PrevHash, ms(k.PrevExpiresAt), scopesText(k.Scopes), string(limits),
		string(k.Status), ms(k.UpdatedAt), ms(k.RevokedAt), string(alerts), k.Suspended, k.ID)
	if err != nil {
		return fmt.Errorf("update key %s: %w", k.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("update key %s: %w", k.ID, ErrNotFound)
	}
	return nil
}

const keyColumns = `id, name, mode, hash, prev_hash, prev_expires_ms, scopes, limits, signing_secret, status, created_ms,
	updated_ms, revoked_ms, alerts, suspended`

type scanner interface{ Scan(dest ...any) error }

func scanKey(row scanner) (*Key, error) {
	var (
		k                                 Key
		mode, scopes, limits, status      string
		alerts                            string
		hash, prevHash                    []byte
		prevExp, created, updated, revokd int64
	)
	if err := row.Scan(&k.ID, &k.Name, &mode, &hash, &prevHash, &prevExp, &scopes, &limits,
		&k.SigningSecret, &status, &created, &updated, &revokd, &alerts, &k.Suspended); err != nil {
		return nil, err
	}
	if len(hash) != len(k.Hash) {
		return nil, fmt.Errorf("key %s: stored hash has %d bytes", k.ID, len(hash))
	}
	copy(k.Hash[:], hash)
	k.PrevHash = prevHash
	k.Mode, k.Status = Mode(mode), Status(status)
	for _, sc := range strings.Fields(scopes) {
		k.Scopes = append(k.Scopes, Scope(sc))
	}
	if err := json.Unmarshal([]byte(limits), &k.Limits); err != nil {
		return nil, fmt.Errorf("key %s: limits: %w", k.ID, err)
	}
	k.Limits.FoldRate() // keys stored with the single rate
	if err := json.Unmarshal([]byte(alerts), &k.Alerts); err != nil {
		return nil, fmt.Errorf("key %s: alerts: %w", k.ID, err)
	}
	if k.Limits.AllowedPrefixes == nil {
		k.Limits.AllowedPrefixes = []string{}
	}
	if k.Limits.BlockedPrefixes == nil {
		k.Limits.BlockedPrefixes = []string{}
	}
	k.PrevExpiresAt, k.CreatedAt, k.UpdatedAt, k.RevokedAt = fromMS(prevExp), fromMS(created), fromMS(updated), fromMS(revokd)
	return &k, nil
}

func (s *SQLStore) GetKey(ctx context.Context, id string) (*Key, error) {
	k, err := scanKey(s.db.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM keys WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("key %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get key %s: %w", id, err)
	}
	return k, nil
}

func (s *SQLStore) ListKeys(ctx context.Context) ([]*Key, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+keyColumns+` FROM keys ORDER BY created_ms, id`)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	defer rows.Close()
	var out []*Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

func (s *SQLStore) InsertAudit(ctx context.Context, entries []AuditEntry) error {
	if len(entries) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("insert audit: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO audit (at_ms, actor, action, target, outcome, detail, source) VALUES (?,?,?,?,?,?,?)`)
	if err != nil {
		return fmt.Errorf("insert audit: %w", err)
	}
	defer stmt.Close()
	for _, e := range entries {
		if _, err := stmt.ExecContext(ctx, ms(e.At), e.Actor, e.Action, e.Target, e.Outcome, e.Detail, e.Source); err != nil {
			return fmt.Errorf("insert audit: %w", err)
		}
	}
	return tx.Commit()
}

func (s *SQLStore) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	q := `SELECT id, at_ms, actor, action, target, outcome, detail, source FROM audit WHERE 1=1`
	var args []any
	if f.Target != "" {
		q += ` AND (target = ? OR actor = ?)`
		args = append(args, f.Target, f.Target)
	}
	if f.Action != "" {
		q += ` AND action = ?`
		args = append(args, f.Action)
	}
	if !f.Since.IsZero() {
		q += ` AND at_ms >= ?`
		args = append(args, ms(f.Since))
	}
	limit := f.Limit
	if limit <= 0 || limit > 10000 {
		limit = 1000
	}
	q += ` ORDER BY at_ms DESC, id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Target, &e.Outcome, &e.Detail, &e.Source); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.At = fromMS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}
