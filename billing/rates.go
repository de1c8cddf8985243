package billing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"trunkgate/keys"
)

// Rate is one row of a destination rate table: an outbound call to a
// number starting with Prefix costs PerMinute a minute. KeyID "" is the
// edge-wide table; a key's rows override it.
type Rate struct {
	KeyID       string `json:"key_id,omitempty"`
	Prefix      string `json:"prefix"`
	PerMinute   int64  `json:"rate_per_minute"`
	Description string `json:"description,omitempty"`
}

// ErrInvalidRate marks a rate row that fails validation (REST: 400).
var ErrInvalidRate = errors.New("invalid rate")

// maxPrefixDigits is the longest prefix: a whole E.164 number.
const maxPrefixDigits = 15

// Validate normalises the prefix to "+" and digits and checks the row.
func (r *Rate) Validate() error {
	p, ok := normalisePrefix(r.Prefix)
	if !ok {
		return fmt.Errorf("%w: prefix %q: want +, then 1 to %d digits", ErrInvalidRate, r.Prefix, maxPrefixDigits)
	}
	r.Prefix = p
	if r.PerMinute < 0 {
		return fmt.Errorf("%w: rate must not be negative", ErrInvalidRate)
	}
	if len(r.Description) > 200 || strings.ContainsFunc(r.Description, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return fmt.Errorf("%w: description: at most 200 printable characters", ErrInvalidRate)
	}
	return nil
}

// normalisePrefix accepts "+44 20", "4420", "+4420" as "+4420".
func normalisePrefix(s string) (string, bool) {
	var b strings.Builder
	b.WriteByte('+')
	for i, c := range strings.TrimSpace(s) {
		switch {
		case c >= '0' && c <= '9':
			b.WriteRune(c)
		case c == '+' && i == 0, c == ' ', c == '-':
		default:
			return "", false
		}
	}
	n := b.Len() - 1
	return b.String(), n >= 1 && n <= maxPrefixDigits
}

// RateStore keeps rate tables.
type RateStore interface {
	ListRates(ctx context.Context, keyID string) ([]Rate, error)
	AllRates(ctx context.Context) ([]Rate, error)
	PutRate(ctx context.Context, r Rate) error
	DeleteRate(ctx context.Context, keyID, prefix string) (bool, error)
	// ReplaceRates swaps one table (a key's, or the edge's with "") for
	// rows in one transaction.
	ReplaceRates(ctx context.Context, keyID string, rows []Rate) error
}

// Auditor records who changed a rate table (keys.Auditor).
type Auditor interface {
	Record(e keys.AuditEntry)
}

// Rates rates calls by destination: the rate tables in memory, kept in
// step with their store. keys.Admitter asks it for each call's rate;
// REST and the CLI change the tables through it, and every change is
// audited.
type Rates struct {
	store   RateStore
	audit   Auditor
	changed func(keyID string)

	mu      sync.RWMutex
	tables  map[string]map[string]Rate // by key id ("" = edge), then prefix
	longest int
}

// NewRates loads every rate table; audit may be nil. changed, if not
// nil, hears of every table changed here ("" for the edge's): other edges
// reload (cluster's change log).
func NewRates(ctx context.Context, store RateStore, audit Auditor, changed func(keyID string)) (*Rates, error) {
	if changed == nil {
		changed = func(string) {}
	}
	r := &Rates{store: store, audit: audit, changed: changed}
	return r, r.Reload(ctx)
}

// Reload re-reads every table (after another edge or the CLI changed one).
func (r *Rates) Reload(ctx context.Context) error {
	all, err := r.store.AllRates(ctx)
	if err != nil {
		return fmt.Errorf("load rates: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tables, r.longest = map[string]map[string]Rate{}, 0
	for _, row := range all {
		r.putLocked(row)
	}
	return nil
}

func (r *Rates) putLocked(row Rate) {
	t := r.tables[row.KeyID]
	if t == nil {
		t = map[string]Rate{}
		r.tables[row.KeyID] = t
	}
	t[row.Prefix] = row
	r.longest = max(r.longest, len(row.Prefix))
}

// Rate is what a minute of a call costs and the table prefix that said so
// ("" when the key's own rate applies). Outbound calls are rated by the
// longest prefix of the destination in the key's table or the edge's (at
// equal length the key's row wins); inbound calls, and outbound calls to
// numbers no table has, at the key's own rate.
func (r *Rates) Rate(keyID, direction, destination string, keyRate int64) (int64, string) {
	if direction != "outbound" || !strings.HasPrefix(destination, "+") {
		return keyRate, ""
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	own, edge := r.tables[keyID], r.tables[""]
	for n := min(len(destination), r.longest); n >= 2; n-- {
		p := destination[:n]
		if row, ok := own[p]; ok {
			return row.PerMinute, p
		}
		if row, ok := edge[p]; ok {
			return row.PerMinute, p
		}
	}
	return keyRate, ""
}

// List returns one table (a key's, or the edge's with ""), by prefix.
func (r *Rates) List(ctx context.Context, keyID string) ([]Rate, error) {
	return r.store.ListRates(ctx, keyID)
}

// Put adds or changes one row.
func (r *Rates) Put(ctx context.Context, actor keys.Actor, row Rate) (Rate, error) {
	if err := row.Validate(); err != nil {
		return row, err
	}
	if err := r.store.PutRate(ctx, row); err != nil {
		return row, err
	}
	r.mu.Lock()
	r.putLocked(row)
	r.mu.Unlock()
	r.changedBy(actor, "rate.set", row.KeyID, fmt.Sprintf("prefix=%s rate_per_minute=%d", row.Prefix, row.PerMinute))
	return row, nil
}

// Delete removes one row; false if there was none.
func (r *Rates) Delete(ctx context.Context, actor keys.Actor, keyID, prefix string) (bool, error) {
	p, ok := normalisePrefix(prefix)
	if !ok {
		return false, fmt.Errorf("%w: prefix %q", ErrInvalidRate, prefix)
	}
	found, err := r.store.DeleteRate(ctx, keyID, p)
	if err != nil || !found {
		return found, err
	}
	r.mu.Lock()
	delete(r.tables[keyID], p)
	r.mu.Unlock()
	r.changedBy(actor, "rate.delete", keyID, "prefix="+p)
	return true, nil
}

// Replace swaps one table for rows, all or nothing (a rate deck import).
func (r *Rates) Replace(ctx context.Context, actor keys.Actor, keyID string, rows []Rate) error {
	for i := range rows {
		rows[i].KeyID = keyID
		if err := rows[i].Validate(); err != nil {
			return err
		}
	}
	if err := r.store.ReplaceRates(ctx, keyID, rows); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.tables, keyID)
	for _, row := range rows {
		r.putLocked(row)
	}
	r.mu.Unlock()
	r.changedBy(actor, "rates.import", keyID, fmt.Sprintf("rows=%d", len(rows)))
	return nil
}

// Import replaces one table with a CSV rate deck (ParseRateDeck): all of
// it, or, with a bad line, none of it (a *DeckError says which lines).
func (r *Rates) Import(ctx context.Context, actor keys.Actor, keyID string, deck io.Reader) (int, error) {
	rows, err := ParseRateDeck(deck)
	if err != nil {
		return 0, err
	}
	return len(rows), r.Replace(ctx, actor, keyID, rows)
}

// changedBy ends every change made here: other edges hear of it, and the
// audit log records who made it.
func (r *Rates) changedBy(actor keys.Actor, action, keyID, detail string) {
	r.changed(keyID)
	if r.audit == nil {
		return
	}
	target := keyID
	if target == "" {
		target = "edge"
	}
	r.audit.Record(keys.AuditEntry{Actor: actor.KeyID, Action: action, Target: target, Outcome: "ok", Detail: detail, Source: actor.Source})
}

// sortRates orders rows by key, then prefix.
func sortRates(rows []Rate) {
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].KeyID != rows[j].KeyID {
			return rows[i].KeyID < rows[j].KeyID
		}
		return rows[i].Prefix < rows[j].Prefix
	})
}
