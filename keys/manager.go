package keys

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"trunkgate/internal/textsafe"
	"trunkgate/refusal"
)

// Manager runs the operator lifecycle of keys: every change is stored,
// made effective in the admission cache at once, and written to the audit
// log with the acting key id.
type Manager struct {
	store    Store
	admitter *Admitter
	audit    *Auditor
	changed  func(keyID string)
	now      func() time.Time
}

// NewManager ties the store, the admission cache and the audit log.
// changed, if not nil, hears of every change to a key, after it is
// stored: other edges reload the key (cluster's change log).
func NewManager(store Store, admitter *Admitter, audit *Auditor, changed func(keyID string)) *Manager {
	if changed == nil {
		changed = func(string) {}
	}
	return &Manager{store: store, admitter: admitter, audit: audit, changed: changed, now: func() time.Time { return time.Now().UTC() }}
}

// put makes a stored change effective here, and tells other edges.
func (m *Manager) put(k *Key) {
	m.admitter.Put(k)
	m.changed(k.ID)
}

// Actor says who asks for an operation, for the audit log.
type Actor struct {
	KeyID  string // the operator's key id, or ActorCLI / ActorSystem
	Source string // remote address
}

// CreateSpec describes a new key.
type CreateSpec struct {
	Name   string       `json:"name"`
	Mode   Mode         `json:"mode"`
	Scopes []string     `json:"scopes"`
	Limits *Limits      `json:"limits"`
	Alerts *AlertConfig `json:"alerts"`
}

// Created is the one moment the full key text exists outside its owner.
type Created struct {
	Key           *Key
	Text          string // the full key: show once, never store
	SigningSecret string
}

const maxNameLen = 200

func validName(s string) error {
	if len(s) > maxNameLen {
		return fmt.Errorf("%w: name longer than %d bytes", ErrInvalid, maxNameLen)
	}
	if textsafe.HasControl(s) {
		return fmt.Errorf("%w: name contains control characters", ErrInvalid)
	}
	return nil
}

// Create makes a key. The text is returned once, in Created.Text.
func (m *Manager) Create(ctx context.Context, by Actor, spec CreateSpec) (*Created, error) {
	c, err := m.create(ctx, spec, "")
	m.auditOp(ctx, by, "key.create", keyIDOf(c), err, spec.Name)
	return c, err
}

// Import stores a key whose text the operator chose (the bootstrap admin key
// from TRUNKGATE_ADMIN_KEY), so that the same text works across restarts.
func (m *Manager) Import(ctx context.Context, by Actor, text string, spec CreateSpec) (*Created, error) {
	p, err := Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	spec.Mode = p.Mode
	c, err := m.create(ctx, spec, text)
	m.auditOp(ctx, by, "key.import", keyIDOf(c), err, spec.Name)
	return c, err
}

func keyIDOf(c *Created) string {
	if c == nil {
		return ""
	}
	return c.Key.ID
}

func (m *Manager) create(ctx context.Context, spec CreateSpec, text string) (*Created, error) {
	if spec.Mode == "" {
		spec.Mode = Test
	}
	if !spec.Mode.Valid() {
		return nil, fmt.Errorf("%w: mode must be live or test", ErrInvalid)
	}
	if err := validName(spec.Name); err != nil {
		return nil, err
	}
	scopes, err := ParseScopes(spec.Scopes)
	if err != nil {
		return nil, err
	}
	if len(scopes) == 0 {
		return nil, fmt.Errorf("%w: a key needs at least one scope", ErrInvalid)
	}
	limits := DefaultLimits()
	if spec.Limits != nil {
		limits = spec.Limits.Clone()
	}
	if err := limits.Validate(); err != nil {
		return nil, err
	}
	var alerts AlertConfig
	if spec.Alerts != nil {
		alerts = *spec.Alerts
		if err := alerts.Validate(); err != nil {
			return nil, err
		}
	}
	var id string
	if text == "" {
		id, text = NewText(spec.Mode)
	} else {
		p, _ := Parse(text)
		id = p.ID
	}
	now := m.now()
	k := &Key{
		ID: id, Name: spec.Name, Mode: spec.Mode, Scopes: scopes, Limits: limits, Alerts: alerts, Status: Active,
		Hash: Hash(text), SigningSecret: NewSigningSecret(), CreatedAt: now, UpdatedAt: now,
	}
	if err := m.store.InsertKey(ctx, k); err != nil {
		return nil, err
	}
	m.put(k)
	return &Created{Key: k.Clone(), Text: text, SigningSecret: k.SigningSecret}, nil
}

// Get returns a key by id.
func (m *Manager) Get(ctx context.Context, id string) (*Key, error) {
	if !ValidID(id) {
		// Never echo the input: an operator may have pasted key text.
		return nil, fmt.Errorf("key: no such key id: %w", ErrNotFound)
	}
	return m.store.GetKey(ctx, id)
}

// List returns every key.
func (m *Manager) List(ctx context.Context) ([]*Key, error) { return m.store.ListKeys(ctx) }

// SetLimits applies patch to the key's limits, effective at the next
// admission. Calls already up keep the limits they were admitted under,
// except that a lower max_channels refuses the next call.
func (m *Manager) SetLimits(ctx context.Context, by Actor, id string, patch LimitsPatch) (*Key, error) {
	k, err := m.setLimits(ctx, id, patch)
	m.auditOp(ctx, by, "key.set", id, err, patchSummary(patch))
	return k, err
}

func (m *Manager) setLimits(ctx context.Context, id string, patch LimitsPatch) (*Key, error) {
	k, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if k.Status == Revoked {
		return nil, fmt.Errorf("%w: key %s is revoked", ErrInvalid, id)
	}
	if k.Limits, err = patch.Apply(k.Limits); err != nil {
		return nil, err
	}
	k.UpdatedAt = m.now()
	if err := m.store.UpdateKey(ctx, k); err != nil {
		return nil, err
	}
	m.put(k)
	return k, nil
}

func patchSummary(p LimitsPatch) string {
	var parts []string
	add := func(name string, set bool, v any) {
		if set {
			parts = append(parts, fmt.Sprintf("%s=%v", name, v))
		}
	}
	if p.MaxChannels != nil {
		add("max_channels", true, *p.MaxChannels)
	}
	if p.CPS != nil {
		add("cps", true, *p.CPS)
	}
	if p.MonthlySpendCap != nil {
		add("monthly_spend_cap", true, *p.MonthlySpendCap)
	}
	if p.RatePerMinute != nil {
		add("rate_per_minute", true, *p.RatePerMinute)
	}
	if p.InboundRate != nil {
		add("inbound_rate_per_minute", true, *p.InboundRate)
	}
	if p.OutboundRate != nil {
		add("outbound_rate_per_minute", true, *p.OutboundRate)
	}
	if p.MaxCallSeconds != nil {
		add("max_call_seconds", true, *p.MaxCallSeconds)
	}
	if p.AllowedPrefixes != nil {
		add("allowed_prefixes", true, *p.AllowedPrefixes)
	}
	if p.BlockedPrefixes != nil {
		add("blocked_prefixes", true, *p.BlockedPrefixes)
	}
	return strings.Join(parts, " ")
}

// DefaultGrace is how long a rotated-out key keeps working.
const DefaultGrace = 24 * time.Hour

// Rotate issues a new text for the key. The key keeps its id, limits,
// scopes, trunks, spend and live calls; the old text keeps working until
// grace has passed, then is refused as expired.
func (m *Manager) Rotate(ctx context.Context, by Actor, id string, grace time.Duration) (*Created, error) {
	c, err := m.rotate(ctx, id, grace)
	m.auditOp(ctx, by, "key.rotate", id, err, "grace="+grace.String())
	return c, err
}

func (m *Manager) rotate(ctx context.Context, id string, grace time.Duration) (*Created, error) {
	if grace < 0 {
		return nil, fmt.Errorf("%w: grace must not be negative", ErrInvalid)
	}
	k, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if k.Status == Revoked {
		return nil, fmt.Errorf("%w: key %s is revoked", ErrInvalid, id)
	}
	text := textFor(k.Mode, k.ID)
	now := m.now()
	old := k.Hash
	k.PrevHash, k.PrevExpiresAt = old[:], now.Add(grace)
	k.Hash = Hash(text)
	k.UpdatedAt = now
	if err := m.store.UpdateKey(ctx, k); err != nil {
		return nil, err
	}
	m.put(k)
	return &Created{Key: k.Clone(), Text: text}, nil
}

// Revoke refuses the key from now on and orders its live calls to hang up
// (they end within a second: each call watches its lease). It returns how
// many live calls were told to end.
//
// Revoking a key that is already revoked changes nothing, audits nothing
// and says so: ErrAlreadyRevoked.
func (m *Manager) Revoke(ctx context.Context, by Actor, id string) (int, error) {
	n, err := m.revoke(ctx, id)
	if errors.Is(err, ErrAlreadyRevoked) {
		return 0, err
	}
	m.auditOp(ctx, by, "key.revoke", id, err, fmt.Sprintf("live_calls=%d", n))
	return n, err
}

// ErrAlreadyRevoked: the key was revoked before.
var ErrAlreadyRevoked = errors.New("already revoked")

func (m *Manager) revoke(ctx context.Context, id string) (int, error) {
	k, err := m.Get(ctx, id)
	if err != nil {
		return 0, err
	}
	if k.Status == Revoked {
		return 0, fmt.Errorf("key %s was %w at %s", id, ErrAlreadyRevoked, k.RevokedAt.UTC().Format(time.RFC3339))
	}
	now := m.now()
	k.Status, k.RevokedAt, k.UpdatedAt = Revoked, now, now
	if err := m.store.UpdateKey(ctx, k); err != nil {
		return 0, err
	}
	m.put(k)
	return m.admitter.EndCalls(id, refusal.KeyRevoked), nil
}

// Authenticate checks a key text presented to the REST API or the stream
// endpoint. Errors are refusal reasons (KeyUnknown, KeyExpired,
// KeyRevoked) and never contain the text.
func (m *Manager) Authenticate(ctx context.Context, text string) (*Key, error) {
	p, err := Parse(text)
	if err != nil {
		return nil, refusal.KeyUnknown
	}
	k, err := m.admitter.Key(ctx, p.ID)
	if errors.Is(err, ErrNotFound) {
		return nil, refusal.KeyUnknown
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate key %s: %w", p.ID, err)
	}
	current := matches(k.Hash[:], text)
	previous := !current && len(k.PrevHash) > 0 && matches(k.PrevHash, text)
	switch {
	case !current && !previous:
		return nil, refusal.KeyUnknown
	case k.Mode != p.Mode:
		return nil, refusal.KeyUnknown
	case k.Status == Revoked:
		return nil, refusal.KeyRevoked
	case previous && !m.now().Before(k.PrevExpiresAt):
		return nil, refusal.KeyExpired
	}
	return k, nil
}

// AuditLog lists audit entries.
func (m *Manager) AuditLog(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	return m.store.ListAudit(ctx, f)
}

func (m *Manager) auditOp(ctx context.Context, by Actor, action, target string, opErr error, detail string) {
	outcome := "ok"
	if opErr != nil {
		outcome = "error"
		detail = strings.TrimSpace(detail + " error=" + opErr.Error())
	}
	if target != "" && !ValidID(target) {
		target = "(invalid key id)"
	}
	e := AuditEntry{Actor: by.KeyID, Action: action, Target: target, Outcome: outcome, Detail: detail, Source: by.Source}
	if err := m.audit.Write(ctx, e); err != nil {
		// The operation itself stands; losing its audit line must be loud.
		m.audit.log.Error("audit write failed", "action", action, "target", target, "error", err)
	}
}
