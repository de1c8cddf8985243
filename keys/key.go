// Package keys owns trunkgate's API keys: their format and hashing, scopes,
// limits, the operator lifecycle (create, rotate, set, revoke), the audit
// log, and admission — the per-call decision that takes a channel lease
// under the key's limits. It knows nothing of SIP or media: callers ask
// Admit for a lease and watch the lease for the order to hang up.
package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"time"
)

// Mode says whether a key reaches real carriers (live) or only the sandbox
// and zero-rated billing (test). It is part of the key's text.
type Mode string

const (
	Live Mode = "live"
	Test Mode = "test"
)

// Valid reports whether m is one of the two modes.
func (m Mode) Valid() bool { return m == Live || m == Test }

// Status is a key's lifecycle state.
type Status string

const (
	Active  Status = "active"
	Revoked Status = "revoked"
)

// Scope grants one family of operations.
type Scope string

const (
	ScopeCallsInbound  Scope = "calls:inbound"
	ScopeCallsOutbound Scope = "calls:outbound"
	ScopeUsageRead     Scope = "usage:read"
	ScopeKeysAdmin     Scope = "keys:admin"
)

// AllScopes lists every scope, in display order.
var AllScopes = []Scope{ScopeCallsInbound, ScopeCallsOutbound, ScopeUsageRead, ScopeKeysAdmin}

// ParseScopes validates a list of scope names; duplicates are dropped.
func ParseScopes(names []string) ([]Scope, error) {
	out := make([]Scope, 0, len(names))
	seen := map[Scope]bool{}
	for _, n := range names {
		s := Scope(strings.TrimSpace(n))
		if s == "" {
			continue
		}
		known := false
		for _, k := range AllScopes {
			if s == k {
				known = true
			}
		}
		if !known {
			return nil, fmt.Errorf("%w: unknown scope %q", ErrInvalid, n)
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out, nil
}

// Key is the stored form of an API key: never the key text itself, only
// its id and the SHA-256 of the whole text.
type Key struct {
	ID     string  `json:"id"`
	Name   string  `json:"name"`
	Mode   Mode    `json:"mode"`
	Scopes []Scope `json:"scopes"`
	Limits Limits  `json:"limits"`
	Status Status  `json:"status"`
	// Suspended, when set, says why an alert suspended the key: its new
	// calls are refused until an operator resumes it.
	Suspended string `json:"suspended,omitempty"`
	// Alerts is how the key is watched.
	Alerts AlertConfig `json:"alerts"`

	// Hash is SHA-256 of the full key text. PrevHash is the hash of the key
	// this one was rotated from, accepted until PrevExpiresAt.
	Hash          [32]byte  `json:"-"`
	PrevHash      []byte    `json:"-"`
	PrevExpiresAt time.Time `json:"rotation_grace_until,omitzero"`

	// SigningSecret signs the edge's WebSocket requests to the key's AI
	// applications (X-Trunkgate-Signature). Shown at creation only.
	SigningSecret string `json:"-"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// HasScope reports whether the key grants s.
func (k *Key) HasScope(s Scope) bool {
	for _, have := range k.Scopes {
		if have == s {
			return true
		}
	}
	return false
}

// Clone returns a deep copy, so that cached snapshots are never mutated.
func (k *Key) Clone() *Key {
	c := *k
	c.Scopes = append([]Scope(nil), k.Scopes...)
	c.PrevHash = append([]byte(nil), k.PrevHash...)
	c.Limits = k.Limits.Clone()
	c.Alerts.SpendThresholds = append([]int(nil), k.Alerts.SpendThresholds...)
	c.Alerts.Actions = maps.Clone(k.Alerts.Actions)
	return &c
}

// Key text layout: "tg_live_" or "tg_test_", a 12-character public id, "_",
// and a 32-character secret, both base62.
const (
	idLen     = 12
	secretLen = 32
	prefixLen = len("tg_live_")
	// TextLen is the length of every well-formed key.
	TextLen = prefixLen + idLen + 1 + secretLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// randomBase62 draws n characters from crypto/rand without modulo bias.
func randomBase62(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/2)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			panic("keys: crypto/rand failed: " + err.Error()) // the OS RNG does not fail on Linux
		}
		for _, b := range buf {
			if b < 248 { // 248 = 4*62: keeps the distribution uniform
				out = append(out, base62[b%62])
				if len(out) == n {
					break
				}
			}
		}
	}
	return string(out)
}

// NewText makes a fresh key text for mode with a new id.
func NewText(mode Mode) (id, text string) {
	id = randomBase62(idLen)
	return id, textFor(mode, id)
}

func textFor(mode Mode, id string) string {
	return "tg_" + string(mode) + "_" + id + "_" + randomBase62(secretLen)
}

// Parsed is the public part of a key text.
type Parsed struct {
	Mode Mode
	ID   string
}

// ErrMalformed is returned by Parse for text that is not a key. It never
// includes the text.
var ErrMalformed = errors.New("malformed API key")

// Parse checks the layout of a key text and returns its mode and id.
func Parse(text string) (Parsed, error) {
	if len(text) != TextLen || !strings.HasPrefix(text, "tg_") {
		return Parsed{}, ErrMalformed
	}
	var mode Mode
	switch text[:prefixLen] {
	case "tg_live_":
		mode = Live
	case "tg_test_":
		mode = Test
	default:
		return Parsed{}, ErrMalformed
	}
	id := text[prefixLen : prefixLen+idLen]
	if text[prefixLen+idLen] != '_' || !isBase62(id) || !isBase62(text[prefixLen+idLen+1:]) {
		return Parsed{}, ErrMalformed
	}
	return Parsed{Mode: mode, ID: id}, nil
}

func isBase62(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// Hash is the at-rest form of a key text.
func Hash(text string) [32]byte { return sha256.Sum256([]byte(text)) }

// matches compares in constant time.
func matches(want []byte, text string) bool {
	got := Hash(text)
	return len(want) == len(got) && subtle.ConstantTimeCompare(want, got[:]) == 1
}

// NewSigningSecret makes the secret with which the edge signs its requests
// to the key owner's AI application.
func NewSigningSecret() string { return "tgsig_" + randomBase62(32) }

// ValidID reports whether id has the shape of a key id.
func ValidID(id string) bool { return len(id) == idLen && isBase62(id) }

// keyText matches key text, whole or cut short, anywhere in a string.
var keyText = regexp.MustCompile(`tg_(live|test)_([A-Za-z0-9]{12})_[A-Za-z0-9]{1,32}`)

// Redact replaces the secret part of any key text in s, keeping the mode
// and id: for strings from outside (URL paths, ids an operator typed) that
// are about to be logged, audited or returned in an error.
func Redact(s string) string {
	if !strings.Contains(s, "tg_") {
		return s
	}
	return keyText.ReplaceAllString(s, "tg_${1}_${2}_[redacted]")
}
