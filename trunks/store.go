package trunks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"trunkgate/internal/sqldb"
)

// SQLStore keeps trunks in the embedded database. Numbers have their own
// table whose primary key makes "one trunk per number" a database rule.
type SQLStore struct{ db *sqldb.DB }

var migrations = []sqldb.Migration{{Version: 1, SQL: `
CREATE TABLE trunks (
	id          TEXT PRIMARY KEY,
	key_id      TEXT NOT NULL REFERENCES keys(id),
	name        TEXT NOT NULL DEFAULT '',
	ai_url      TEXT NOT NULL,
	sources     TEXT NOT NULL,
	format      TEXT NOT NULL,
	sample_rate BIGINT NOT NULL,
	params      TEXT NOT NULL,
	created_ms  BIGINT NOT NULL
);
CREATE TABLE trunk_numbers (
	number   TEXT PRIMARY KEY,
	trunk_id TEXT NOT NULL REFERENCES trunks(id) ON DELETE CASCADE
);
CREATE INDEX trunk_numbers_trunk ON trunk_numbers (trunk_id);
`}, {Version: 2, SQL: `
ALTER TABLE trunks ADD COLUMN digest_user TEXT NOT NULL DEFAULT '';
ALTER TABLE trunks ADD COLUMN digest_ha1  TEXT NOT NULL DEFAULT '';
`}, {Version: 3, SQL: `
ALTER TABLE trunks ADD COLUMN direction      TEXT NOT NULL DEFAULT 'inbound' CHECK (direction IN ('inbound','outbound'));
ALTER TABLE trunks ADD COLUMN gateways       TEXT NOT NULL DEFAULT '[]';
ALTER TABLE trunks ADD COLUMN auth_user      TEXT NOT NULL DEFAULT '';
ALTER TABLE trunks ADD COLUMN auth_password  TEXT NOT NULL DEFAULT '';
ALTER TABLE trunks ADD COLUMN caller_id      TEXT NOT NULL DEFAULT '';
ALTER TABLE trunks ADD COLUMN max_channels   BIGINT NOT NULL DEFAULT 0;
ALTER TABLE trunks ADD COLUMN headers        TEXT NOT NULL DEFAULT '{}';
ALTER TABLE trunks ADD COLUMN ring_timeout_s BIGINT NOT NULL DEFAULT 0;
`}, {Version: 4, SQL: `
ALTER TABLE trunks ADD COLUMN media_encryption   TEXT NOT NULL DEFAULT 'off' CHECK (media_encryption IN ('off','allow','require'));
ALTER TABLE trunks ADD COLUMN tls_client_ca      TEXT NOT NULL DEFAULT '';
ALTER TABLE trunks ADD COLUMN tls_client_subject TEXT NOT NULL DEFAULT '';
`}, {Version: 5, SQL: `
ALTER TABLE trunks ADD COLUMN protocol_extensions BOOLEAN NOT NULL DEFAULT FALSE;
`}, {Version: 6, SQL: `
ALTER TABLE trunks ADD COLUMN sip_headers TEXT NOT NULL DEFAULT '[]';
`}, {Version: 7, SQL: `
ALTER TABLE trunks ADD COLUMN resume_grace_s BIGINT NOT NULL DEFAULT 0;
`}}

// NewSQLStore migrates the trunks schema (after the keys schema, which
// it references) and returns the store.
func NewSQLStore(ctx context.Context, db *sqldb.DB) (*SQLStore, error) {
	if err := sqldb.Migrate(ctx, db, "trunks", migrations); err != nil {
		return nil, err
	}
	return &SQLStore{db: db}, nil
}

func (s *SQLStore) Insert(ctx context.Context, t *Trunk) error {
	sources := make([]string, len(t.AllowedSources))
	for i, p := range t.AllowedSources {
		sources[i] = p.String()
	}
	params, err := json.Marshal(t.Params)
	if err != nil {
		return fmt.Errorf("insert trunk: %w", err)
	}
	gateways, err := json.Marshal(t.Gateways)
	if err != nil {
		return fmt.Errorf("insert trunk: %w", err)
	}
	headers, err := json.Marshal(t.Headers)
	if err != nil {
		return fmt.Errorf("insert trunk: %w", err)
	}
	passed, err := json.Marshal(t.SIPHeaders)
	if err != nil {
		return fmt.Errorf("insert trunk: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("insert trunk: %w", err)
	}
	defer tx.Rollback()
	var keyExists int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM keys WHERE id = ?`, t.KeyID).Scan(&keyExists); err != nil {
		return fmt.Errorf("insert trunk: %w", err)
	}
	if keyExists == 0 {
		return fmt.Errorf("%w: key %s does not exist", ErrInvalid, t.KeyID)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO trunks (id, key_id, name, ai_url, sources, format, sample_rate, params,
		digest_user, digest_ha1, created_ms, direction, gateways, auth_user, auth_password, caller_id, max_channels, headers, ring_timeout_s,
		media_encryption, tls_client_ca, tls_client_subject, protocol_extensions, sip_headers, resume_grace_s)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, t.ID, t.KeyID, t.Name, t.AIURL, strings.Join(sources, ","),
		t.Format, t.SampleRate, string(params), t.DigestUser, t.DigestHA1, t.CreatedAt.UnixMilli(),
		t.Direction, string(gateways), t.AuthUser, t.AuthPassword, t.CallerID, t.MaxChannels, string(headers), t.RingTimeoutSeconds,
		t.MediaEncryption, t.TLSClientCA, t.TLSClientSubject, t.ProtocolExtensions, string(passed), t.ResumeGraceSeconds); err != nil {
		return fmt.Errorf("insert trunk: %w", err)
	}
	for _, n := range t.Numbers {
		if _, err := tx.ExecContext(ctx, `INSERT INTO trunk_numbers (number, trunk_id) VALUES (?, ?)`, n, t.ID); err != nil {
			if strings.Contains(err.Error(), "UNIQUE") {
				return fmt.Errorf("%w: number %s already belongs to a trunk", ErrConflict, n)
			}
			return fmt.Errorf("insert trunk number: %w", err)
		}
	}
	return tx.Commit()
}

func (s *SQLStore) Delete(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM trunks WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete trunk %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("trunk %s: %w", id, ErrNotFound)
	}
	return nil
}

func (s *SQLStore) List(ctx context.Context) ([]*Trunk, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, key_id, name, ai_url, sources, format, sample_rate, params, digest_user, digest_ha1,
		created_ms, direction, gateways, auth_user, auth_password, caller_id, max_channels, headers, ring_timeout_s,
		media_encryption, tls_client_ca, tls_client_subject, protocol_extensions, sip_headers, resume_grace_s FROM trunks ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list trunks: %w", err)
	}
	byID := map[string]*Trunk{}
	var out []*Trunk
	for rows.Next() {
		var t Trunk
		var sources, params, gateways, headers, passed string
		var created int64
		if err := rows.Scan(&t.ID, &t.KeyID, &t.Name, &t.AIURL, &sources, &t.Format, &t.SampleRate, &params, &t.DigestUser, &t.DigestHA1,
			&created, &t.Direction, &gateways, &t.AuthUser, &t.AuthPassword, &t.CallerID, &t.MaxChannels, &headers, &t.RingTimeoutSeconds,
			&t.MediaEncryption, &t.TLSClientCA, &t.TLSClientSubject, &t.ProtocolExtensions, &passed, &t.ResumeGraceSeconds); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list trunks: %w", err)
		}
		for _, src := range strings.Split(sources, ",") {
			if src == "" {
				continue
			}
			p, err := netip.ParsePrefix(src)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("trunk %s: stored source %q: %w", t.ID, src, err)
			}
			t.AllowedSources = append(t.AllowedSources, p)
		}
		if err := json.Unmarshal([]byte(params), &t.Params); err != nil {
			rows.Close()
			return nil, fmt.Errorf("trunk %s: params: %w", t.ID, err)
		}
		if err := json.Unmarshal([]byte(gateways), &t.Gateways); err != nil {
			rows.Close()
			return nil, fmt.Errorf("trunk %s: gateways: %w", t.ID, err)
		}
		if err := json.Unmarshal([]byte(headers), &t.Headers); err != nil {
			rows.Close()
			return nil, fmt.Errorf("trunk %s: headers: %w", t.ID, err)
		}
		if err := json.Unmarshal([]byte(passed), &t.SIPHeaders); err != nil {
			rows.Close()
			return nil, fmt.Errorf("trunk %s: sip_headers: %w", t.ID, err)
		}
		if err := t.loadClientCA(); err != nil {
			rows.Close()
			return nil, fmt.Errorf("trunk %s: %w", t.ID, err)
		}
		t.CreatedAt = time.UnixMilli(created).UTC()
		byID[t.ID] = &t
		out = append(out, &t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list trunks: %w", err)
	}
	nrows, err := s.db.QueryContext(ctx, `SELECT number, trunk_id FROM trunk_numbers ORDER BY number`)
	if err != nil {
		return nil, fmt.Errorf("list trunk numbers: %w", err)
	}
	defer nrows.Close()
	for nrows.Next() {
		var n, id string
		if err := nrows.Scan(&n, &id); err != nil {
			return nil, fmt.Errorf("list trunk numbers: %w", err)
		}
		if t, ok := byID[id]; ok {
			t.Numbers = append(t.Numbers, n)
		}
	}
	return out, nrows.Err()
}
