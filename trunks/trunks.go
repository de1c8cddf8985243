// Package trunks owns a key's trunks. Inbound trunks say which numbers a
// key takes calls for, from which source networks (and with which digest
// credentials), and which AI application URL each call is streamed to.
// Outbound trunks say through which carrier gateways the key's
// applications call out: their priorities and weights, the credentials to
// give the carrier, the caller id, a channel cap and custom headers; and
// Health tracks which gateways answer. Lookups on the call path are served
// from memory; the store is written only by operator changes.
//
// DESIGN.md lists trunks under sip, but sip must know nothing of SQL, so the
// model and its store live here and sip's caller (package call) joins them.
package trunks

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"trunkgate/internal/textsafe"
)

// Errors of validation and lookup.
var (
	ErrInvalid  = errors.New("invalid")
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// Stream formats toward the AI application (DESIGN: WebSocket protocols).
const (
	FormatTwilio = "twilio" // JSON text frames, base64 μ-law 8 kHz
	FormatL16    = "l16"    // binary 16-bit little-endian PCM, JSON events
)

// Trunk is a trunk owned by a key: inbound (numbers the edge answers) or
// outbound (gateways the edge dials).
type Trunk struct {
	ID        string `json:"id"`
	KeyID     string `json:"key_id"`
	Name      string `json:"name"`
	Direction string `json:"direction"`
	// Numbers are E.164 with a leading "+", e.g. "+15550100".
	Numbers []string `json:"numbers,omitempty"`
	// AIURL is the ws:// or wss:// URL the edge dials for each call.
	AIURL string `json:"ai_url,omitempty"`
	// AllowedSources are the networks carriers may send INVITEs from;
	// "0.0.0.0/0" allows any IPv4 source.
	AllowedSources []netip.Prefix `json:"allowed_sources,omitempty"`
	// Format is FormatTwilio (default) or FormatL16; SampleRate (8000 or
	// 16000) applies to L16.
	Format     string `json:"format"`
	SampleRate int    `json:"sample_rate"`
	// Params are passed to the app in start.customParameters.
	Params map[string]string `json:"params"`
	// DigestUser, when set, makes carriers authenticate each INVITE with
	// SIP digest (RFC 3261 §22) in DigestRealm. Only HA1, MD5 of
	// "user:realm:password", is kept: what a digest server needs, and not
	// the password itself. HA1 never leaves the edge.
	DigestUser string `json:"digest_username,omitempty"`
	DigestHA1  string `json:"-"`

	// Gateways of an outbound trunk.
	Gateways []Gateway `json:"gateways,omitempty"`
	// AuthUser and AuthPassword answer the carrier's digest challenges.
	// The password is kept as given, because the edge must compute
	// responses with it; it is never returned by the API.
	AuthUser     string `json:"auth_username,omitempty"`
	AuthPassword string `json:"-"`
	// CallerID, when set, is the number every call presents; when empty,
	// the application's from is passed through if it is one of the key's
	// numbers (its inbound trunks' numbers).
	CallerID string `json:"caller_id,omitempty"`
	// MaxChannels caps the trunk's live calls on top of the key's cap.
	MaxChannels int `json:"max_channels,omitempty"`
	// Headers are added to every INVITE (validated: see ValidHeader).
	Headers            map[string]string `json:"headers,omitempty"`
	RingTimeoutSeconds int               `json:"ring_timeout_seconds,omitempty"`
	// MediaEncryption is MediaOff, MediaAllow or MediaRequire.
	MediaEncryption string `json:"media_encryption"`
	// TLSClientCA (PEM) and TLSClientSubject make carriers prove
	// themselves with a client certificate over TLS (mutual TLS), beside
	// the source networks and digest.
	TLSClientCA      string `json:"tls_client_ca,omitempty"`
	TLSClientSubject string `json:"tls_client_subject,omitempty"`
	clientCAs        *x509.CertPool
	// ProtocolExtensions opts the trunk's streams in to what the edge adds
	// to the Twilio protocol (DESIGN: extensions); off, an app sees
	// exactly Twilio's messages.
	ProtocolExtensions bool `json:"protocol_extensions"`
	// SIPHeaders names the INVITE headers whose values the app gets in
	// start.customParameters (inbound; see ValidPassedHeader).
	SIPHeaders []string `json:"sip_headers,omitempty"`
	// ResumeGraceSeconds holds an answered call this long when its
	// app's socket drops, while the edge redials the app (inbound;
	// DESIGN: a resumed stream); 0 hangs up at once.
	ResumeGraceSeconds int `json:"resume_grace_seconds,omitempty"`

	// Sandbox marks the built-in carrier of test keys (never stored).
	Sandbox bool `json:"sandbox,omitempty"`

	CreatedAt time.Time `json:"created_at"`
}

// HasAuth reports whether the trunk answers carrier challenges.
func (t *Trunk) HasAuth() bool { return t.AuthUser != "" }

// DigestRealm is the realm of trunk digest challenges.
const DigestRealm = "trunkgate"

// DigestHA1 is hex MD5 of "user:realm:password" (RFC 2617 §3.2.2.2).
func DigestHA1(user, realm, password string) string {
	sum := md5.Sum([]byte(user + ":" + realm + ":" + password))
	return hex.EncodeToString(sum[:])
}

// AllowsSource reports whether addr may send INVITEs on this trunk.
func (t *Trunk) AllowsSource(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range t.AllowedSources {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Spec is what an operator gives to create a trunk.
type Spec struct {
	KeyID     string `json:"key_id"`
	Name      string `json:"name"`
	Direction string `json:"direction"` // "inbound" (default) or "outbound"

	// Inbound trunks.
	Numbers        []string          `json:"numbers"`
	AIURL          string            `json:"ai_url"`
	AllowedSources []string          `json:"allowed_sources"`
	Format         string            `json:"format"`
	SampleRate     int               `json:"sample_rate"`
	Params         map[string]string `json:"params"`
	// DigestUsername and DigestPassword turn on digest authentication of
	// INVITEs; the password is write-only.
	DigestUsername string `json:"digest_username"`
	DigestPassword string `json:"digest_password"`

	// Outbound trunks.
	Gateways           []GatewaySpec     `json:"gateways"`
	AuthUsername       string            `json:"auth_username"`
	AuthPassword       string            `json:"auth_password"`
	CallerID           string            `json:"caller_id"`
	MaxChannels        int               `json:"max_channels"`
	Headers            map[string]string `json:"headers"`
	RingTimeoutSeconds int               `json:"ring_timeout_seconds"`

	// Both directions: "off" (default), "allow" or "require".
	MediaEncryption string `json:"media_encryption"`
	// Inbound trunks: mutual TLS (a PEM CA bundle, and optionally the
	// subject the carrier's certificate must name).
	TLSClientCA      string `json:"tls_client_ca"`
	TLSClientSubject string `json:"tls_client_subject"`
	// Inbound trunks: the protocol extensions (DESIGN), off by default,
	// and the INVITE headers passed to the app.
	ProtocolExtensions bool     `json:"protocol_extensions"`
	SIPHeaders         []string `json:"sip_headers"`
	ResumeGraceSeconds int      `json:"resume_grace_seconds"`
}

func (s Spec) digest(t *Trunk) error {
	if s.DigestUsername == "" && s.DigestPassword == "" {
		return nil
	}
	if s.DigestUsername == "" || s.DigestPassword == "" {
		return fmt.Errorf("%w: digest_username and digest_password go together", ErrInvalid)
	}
	if len(s.DigestUsername) > 64 || strings.IndexFunc(s.DigestUsername, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.!~*'()&=+$,;?/", r))
	}) >= 0 {
		return fmt.Errorf("%w: digest_username must be 1-64 characters of letters, digits and -_.!~*'()&=+$,;?/", ErrInvalid)
	}
	if len(s.DigestPassword) < 8 || len(s.DigestPassword) > 128 || strings.IndexFunc(s.DigestPassword, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		return fmt.Errorf("%w: digest_password must be 8-128 printable characters", ErrInvalid)
	}
	t.DigestUser, t.DigestHA1 = s.DigestUsername, DigestHA1(s.DigestUsername, DigestRealm, s.DigestPassword)
	return nil
}

// build validates spec into a Trunk with a fresh id.
func (s Spec) build(now time.Time) (*Trunk, error) {
	t := &Trunk{ID: newID(), KeyID: s.KeyID, Name: s.Name, Direction: s.Direction, AIURL: s.AIURL, Format: s.Format,
		SampleRate: s.SampleRate, Params: s.Params, ProtocolExtensions: s.ProtocolExtensions, ResumeGraceSeconds: s.ResumeGraceSeconds,
		CreatedAt: now}
	if t.KeyID == "" {
		return nil, fmt.Errorf("%w: key_id is required", ErrInvalid)
	}
	if len(s.Name) > 200 || textsafe.HasControl(s.Name) {
		return nil, fmt.Errorf("%w: name must be at most 200 bytes, without control characters", ErrInvalid)
	}
	switch t.Direction {
	case "", Inbound:
		t.Direction = Inbound
	case Outbound:
		if s.ProtocolExtensions || len(s.SIPHeaders) > 0 || s.ResumeGraceSeconds != 0 {
			return nil, fmt.Errorf("%w: protocol_extensions, sip_headers and resume_grace_seconds are for inbound trunks (an outbound stream asks with extensions=1, header= and resume_grace=)", ErrInvalid)
		}
		if err := s.buildOutbound(t); err != nil {
			return nil, err
		}
		if err := s.security(t); err != nil {
			return nil, err
		}
		return t, nil
	default:
		return nil, fmt.Errorf("%w: direction must be %q or %q", ErrInvalid, Inbound, Outbound)
	}
	if err := s.passedHeaders(t); err != nil {
		return nil, err
	}
	if err := ValidResumeGrace(s.ResumeGraceSeconds); err != nil {
		return nil, err
	}
	if len(s.Gateways) > 0 || s.AuthUsername != "" || s.CallerID != "" || s.MaxChannels != 0 || len(s.Headers) > 0 || s.RingTimeoutSeconds != 0 {
		return nil, fmt.Errorf("%w: gateways, auth, caller_id, max_channels, headers and ring_timeout_seconds are for outbound trunks", ErrInvalid)
	}
	if len(s.Numbers) == 0 {
		return nil, fmt.Errorf("%w: a trunk needs at least one number", ErrInvalid)
	}
	seen := map[string]bool{}
	for _, n := range s.Numbers {
		e, ok := NormaliseNumber(n)
		if !ok {
			return nil, fmt.Errorf("%w: %q is not an E.164 number", ErrInvalid, n)
		}
		if !seen[e] {
			seen[e] = true
			t.Numbers = append(t.Numbers, e)
		}
	}
	if err := ValidAIURL(s.AIURL); err != nil {
		return nil, err
	}
	if len(s.AllowedSources) == 0 {
		return nil, fmt.Errorf("%w: allowed_sources is required (use 0.0.0.0/0 to allow any source)", ErrInvalid)
	}
	for _, c := range s.AllowedSources {
		p, err := parsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("%w: allowed_sources: %q is not a CIDR or address", ErrInvalid, c)
		}
		t.AllowedSources = append(t.AllowedSources, p)
	}
	if err := s.digest(t); err != nil {
		return nil, err
	}
	switch t.Format {
	case "", FormatTwilio:
		t.Format, t.SampleRate = FormatTwilio, 8000
	case FormatL16:
		if t.SampleRate == 0 {
			t.SampleRate = 8000
		}
		if t.SampleRate != 8000 && t.SampleRate != 16000 {
			return nil, fmt.Errorf("%w: sample_rate must be 8000 or 16000", ErrInvalid)
		}
	default:
		return nil, fmt.Errorf("%w: format must be %q or %q", ErrInvalid, FormatTwilio, FormatL16)
	}
	if t.Params == nil {
		t.Params = map[string]string{}
	}
	if err := ValidParams(t.Params); err != nil {
		return nil, err
	}
	if err := s.security(t); err != nil {
		return nil, err
	}
	return t, nil
}

// ValidAIURL checks an AI application's URL: ws:// or wss:// with a host.
func ValidAIURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("%w: ai_url must be a ws:// or wss:// URL", ErrInvalid)
	}
	return nil
}

// ValidParams checks custom parameters for start.customParameters.
func ValidParams(p map[string]string) error {
	if len(p) > 32 {
		return fmt.Errorf("%w: at most 32 params", ErrInvalid)
	}
	for k, v := range p {
		if k == "" || len(k) > 64 || len(v) > 1024 || textsafe.HasControl(k) || textsafe.HasControl(v) {
			return fmt.Errorf("%w: param names are 1-64 bytes, values at most 1024, without control characters", ErrInvalid)
		}
	}
	return nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// NormaliseNumber turns a dialled number or a SIP user part into E.164 with
// a "+": "+1 555 0100", "15550100" and "+15550100" all give "+15550100".
// It reports false for anything that is not 1 to 15 digits.
func NormaliseNumber(s string) (string, bool) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "tel:")
	var b strings.Builder
	b.WriteByte('+')
	digits := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			b.WriteByte(c)
			digits++
		case c == '+' && i == 0:
		case c == ' ' || c == '-' || c == '(' || c == ')' || c == '.':
		default:
			return "", false
		}
	}
	if digits == 0 || digits > 15 {
		return "", false
	}
	return b.String(), true
}

func newID() string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("trunks: crypto/rand failed: " + err.Error())
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "tr_" + string(b[:])
}

// MaxResumeGraceSeconds bounds how long a call may wait for its app: the
// caller hears silence meanwhile.
const MaxResumeGraceSeconds = 60

// ValidResumeGrace checks a resume grace window in seconds.
func ValidResumeGrace(seconds int) error {
	if seconds < 0 || seconds > MaxResumeGraceSeconds {
		return fmt.Errorf("%w: resume grace must be 0 to %d seconds", ErrInvalid, MaxResumeGraceSeconds)
	}
	return nil
}
