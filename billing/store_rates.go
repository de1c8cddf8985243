package billing

import (
	"context"
	"fmt"
)

// The rates table: one row per prefix per table (key_id "" is the edge's).

func (s *SQLStore) ListRates(ctx context.Context, keyID string) ([]Rate, error) {
	return s.queryRates(ctx, `WHERE key_id=? ORDER BY prefix`, keyID)
}

func (s *SQLStore) AllRates(ctx context.Context) ([]Rate, error) {
	return s.queryRates(ctx, `ORDER BY key_id, prefix`)
}

func (s *SQLStore) queryRates(ctx context.Context, where string, args ...any) ([]Rate, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key_id, prefix, per_minute, description FROM rates `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("rates: %w", err)
	}
	defer rows.Close()
	out := []Rate{}
	for rows.Next() {
		var r Rate
		if err := rows.Scan(&r.KeyID, &r.Prefix, &r.PerMinute, &r.Description); err != nil {
			return nil, fmt.Errorf("rates: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *SQLStore) PutRate(ctx context.Context, r Rate) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO rates (key_id, prefix, per_minute, description) VALUES (?,?,?,?)
		ON CONFLICT (key_id, prefix) DO UPDATE SET per_minute=excluded.per_minute, description=excluded.description`,
		r.KeyID, r.Prefix, r.PerMinute, r.Description)
	if err != nil {
		return fmt.Errorf("put rate %s: %w", r.Prefix, err)
	}
	return nil
}

func (s *SQLStore) DeleteRate(ctx context.Context, keyID, prefix string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM rates WHERE key_id=? AND prefix=?`, keyID, prefix)
	if err != nil {
		return false, fmt.Errorf("delete rate %s: %w", prefix, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

func (s *SQLStore) ReplaceRates(ctx context.Context, keyID string, rows []Rate) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("replace rates: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM rates WHERE key_id=?`, keyID); err != nil {
		return fmt.Errorf("replace rates: %w", err)
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO rates (key_id, prefix, per_minute, description) VALUES (?,?,?,?)`)
	if err != nil {
		return fmt.Errorf("replace rates: %w", err)
	}
	defer stmt.Close()
	for _, r := range rows {
		if _, err := stmt.ExecContext(ctx, keyID, r.Prefix, r.PerMinute, r.Description); err != nil {
			return fmt.Errorf("replace rates: %s: %w", r.Prefix, err)
		}
	}
	return tx.Commit()
}
