package alerts

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"trunkgate/internal/sqldb"
)

// Alert is one alert that fired.
type Alert struct {
	ID      int64     `json:"id"`
	KeyID   string    `json:"key_id"`
	Rule    string    `json:"rule"`
	Period  string    `json:"period"` // what "once per period" counts in: a month and threshold, an hour, a country
	FiredAt time.Time `json:"fired_at"`
	Action  string    `json:"action"` // notify or suspend
	Detail  string    `json:"detail"`
	// Delivery of the webhook: pending, delivered, failed, or none (the
	// key has no alert URL).
	URL         string    `json:"url,omitempty"`
	Delivery    string    `json:"delivery"`
	Attempts    int       `json:"attempts"`
	LastError   string    `json:"last_error,omitempty"`
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
}

// Delivery states.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
	DeliveryNone      = "none"
)

// Filter narrows List.
type Filter struct {
	KeyID string
	Rule  string
	Limit int
}

// Store keeps alerts. Insert is where "once per period" is decided: a
// second alert of a key, rule and period is not stored.
type Store interface {
	Insert(ctx context.Context, a *Alert) (bool, error)
	UpdateDelivery(ctx context.Context, a *Alert) error
	List(ctx context.Context, f Filter) ([]Alert, error)
	Pending(ctx context.Context) ([]Alert, error)
}

// SQLStore keeps alerts in the embedded database.
type SQLStore struct{ db *sqldb.DB }

var migrations = []sqldb.Migration{{Version: 1, SQL: `
CREATE TABLE alerts (
	id           {{serial}},
	key_id       TEXT NOT NULL,
	rule         TEXT NOT NULL,
	period       TEXT NOT NULL,
	fired_ms     BIGINT NOT NULL,
	action       TEXT NOT NULL,
	detail       TEXT NOT NULL,
	url          TEXT NOT NULL DEFAULT '',
	delivery     TEXT NOT NULL,
	attempts     BIGINT NOT NULL DEFAULT 0,
	last_error   TEXT NOT NULL DEFAULT '',
	delivered_ms BIGINT NOT NULL DEFAULT 0,
	UNIQUE (key_id, rule, period)
);
CREATE INDEX alerts_fired ON alerts (fired_ms);
CREATE INDEX alerts_pending ON alerts (delivery) WHERE delivery = 'pending';
`}}

// NewSQLStore migrates the alerts schema.
func NewSQLStore(ctx context.Context, db *sqldb.DB) (*SQLStore, error) {
	if err := sqldb.Migrate(ctx, db, "alerts", migrations); err != nil {
		return nil, err
	}
	return &SQLStore{db: db}, nil
}

func (s *SQLStore) Insert(ctx context.Context, a *Alert) (bool, error) {
	err := s.db.QueryRowContext(ctx, `INSERT INTO alerts (key_id, rule, period, fired_ms, action, detail, url, delivery)
		VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (key_id, rule, period) DO NOTHING RETURNING id`,
		a.KeyID, a.Rule, a.Period, a.FiredAt.UnixMilli(), a.Action, a.Detail, a.URL, a.Delivery).Scan(&a.ID)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil // fired before
	}
	if err != nil {
		return false, fmt.Errorf("insert alert: %w", err)
	}
	return true, nil
}

func (s *SQLStore) UpdateDelivery(ctx context.Context, a *Alert) error {
	delivered := int64(0)
	if !a.DeliveredAt.IsZero() {
		delivered = a.DeliveredAt.UnixMilli()
	}
	_, err := s.db.ExecContext(ctx, `UPDATE alerts SET delivery=?, attempts=?, last_error=?, delivered_ms=? WHERE id=?`,
		a.Delivery, a.Attempts, a.LastError, delivered, a.ID)
	if err != nil {
		return fmt.Errorf("update alert %d: %w", a.ID, err)
	}
	return nil
}

const alertColumns = `id, key_id, rule, period, fired_ms, action, detail, url, delivery, attempts, last_error, delivered_ms`

func (s *SQLStore) List(ctx context.Context, f Filter) ([]Alert, error) {
	q, args := `SELECT `+alertColumns+` FROM alerts WHERE 1=1`, []any{}
	if f.KeyID != "" {
		q += ` AND key_id=?`
		args = append(args, f.KeyID)
	}
	if f.Rule != "" {
		q += ` AND rule=?`
		args = append(args, f.Rule)
	}
	limit := f.Limit
	if limit <= 0 || limit > 10000 {
		limit = 100
	}
	return s.query(ctx, q+` ORDER BY id DESC LIMIT ?`, append(args, limit)...)
}

func (s *SQLStore) Pending(ctx context.Context) ([]Alert, error) {
	return s.query(ctx, `SELECT `+alertColumns+` FROM alerts WHERE delivery='pending' ORDER BY id`)
}

func (s *SQLStore) query(ctx context.Context, q string, args ...any) ([]Alert, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list alerts: %w", err)
	}
	defer rows.Close()
	out := []Alert{}
	for rows.Next() {
		var a Alert
		var fired, delivered int64
		if err := rows.Scan(&a.ID, &a.KeyID, &a.Rule, &a.Period, &fired, &a.Action, &a.Detail, &a.URL, &a.Delivery,
			&a.Attempts, &a.LastError, &delivered); err != nil {
			return nil, fmt.Errorf("list alerts: %w", err)
		}
		a.FiredAt = time.UnixMilli(fired).UTC()
		if delivered > 0 {
			a.DeliveredAt = time.UnixMilli(delivered).UTC()
		}
		out = append(out, a)
	}
	return out, rows.Err()
}
