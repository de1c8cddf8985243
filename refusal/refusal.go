// Package refusal names every reason trunkgate refuses or ends a call and
// maps each one to its SIP response, its HTTP status and its metric label.
// It is the single table behind DESIGN.md's "Refusals" section: admission
// code returns a Reason as an error, and the SIP and HTTP edges translate
// it here and nowhere else.
package refusal

import (
	"errors"
	"fmt"
)

// Reason is why a call was refused. It implements error so that admission
// can return it directly or wrapped with %w; callers recover it with As.
type Reason int

// The reasons, in the order of DESIGN.md's refusal table.
const (
	NoTrunk            Reason = iota + 1 // no trunk for the called number
	SourceNotAllowed                     // source address not in the trunk's CIDRs
	DigestMissing                        // trunk has digest credentials, INVITE has none (or a stale nonce): 401 challenge
	DigestWrong                          // digest credentials do not match the trunk's
	KeyUnknown                           // no such key, or a malformed one
	KeyExpired                           // rotated key past its grace period
	KeyRevoked                           // key revoked by an operator
	ScopeMissing                         // key lacks the scope for this direction
	DestinationBlocked                   // outbound destination fails prefix rules
	ChannelCap                           // max_channels calls already up
	CallRate                             // cps token bucket empty
	SpendCap                             // monthly spend cap reached
	Draining                             // edge is shutting down
	Overloaded                           // edge out of capacity (ports, memory)
)

type entry struct {
	sipCode    int
	sipPhrase  string
	httpStatus int
	retryAfter int // seconds; 0 = no Retry-After header
	text       string
	label      string
}

var table = map[Reason]entry{
	NoTrunk:            {404, "Not Found", 404, 0, "no trunk for this number", "no_trunk"},
	SourceNotAllowed:   {403, "Forbidden", 403, 0, "source address not allowed", "source_not_allowed"},
	DigestMissing:      {401, "Unauthorized", 401, 0, "digest credentials missing", "digest_missing"},
	DigestWrong:        {403, "Forbidden", 403, 0, "digest credentials wrong", "digest_wrong"},
	KeyUnknown:         {403, "Forbidden", 401, 0, "key unknown", "key_unknown"},
	KeyExpired:         {403, "Forbidden", 401, 0, "key expired", "key_expired"},
	KeyRevoked:         {403, "Forbidden", 401, 0, "key revoked", "key_revoked"},
	ScopeMissing:       {403, "Forbidden", 403, 0, "key lacks the scope", "scope_missing"},
	DestinationBlocked: {403, "Forbidden", 403, 0, "destination blocked", "destination_blocked"},
	ChannelCap:         {486, "Busy Here", 429, 1, "channel cap reached", "channel_cap"},
	CallRate:           {503, "Service Unavailable", 429, 1, "call rate exceeded", "call_rate"},
	SpendCap:           {402, "Payment Required", 402, 0, "monthly spend cap reached", "spend_cap"},
	Draining:           {503, "Service Unavailable", 503, 5, "edge draining", "draining"},
	Overloaded:         {503, "Service Unavailable", 503, 1, "edge overloaded", "overloaded"},
}

func (r Reason) entry() entry {
	if e, ok := table[r]; ok {
		return e
	}
	return entry{500, "Server Internal Error", 500, 0, "internal error", "internal"}
}

// Error returns the human text that also goes into SIP Reason headers and
// JSON error bodies, e.g. "channel cap reached".
func (r Reason) Error() string { return r.entry().text }

// Text is the same as Error, for call sites that are not handling an error.
func (r Reason) Text() string { return r.entry().text }

// Label is the stable snake_case name used as a metric label and as the
// "code" of JSON errors.
func (r Reason) Label() string { return r.entry().label }

// SIP returns the status code and reason phrase for a refused INVITE.
func (r Reason) SIP() (code int, phrase string) {
	e := r.entry()
	return e.sipCode, e.sipPhrase
}

// HTTP returns the status for a refused WebSocket handshake or REST call.
func (r Reason) HTTP() int { return r.entry().httpStatus }

// RetryAfter is the Retry-After value in seconds, 0 when none is sent.
// The SIP 486 for the channel cap carries none (RFC 3261 does not use it
// for 486); the HTTP 429 does.
func (r Reason) RetryAfter() int { return r.entry().retryAfter }

// SIPRetryAfter is the Retry-After to put on a SIP refusal: DESIGN asks for
// it on 503 only.
func (r Reason) SIPRetryAfter() int {
	if code, _ := r.SIP(); code == 503 {
		return r.RetryAfter()
	}
	return 0
}

// ReasonHeader renders the SIP Reason header value (RFC 3326) for a
// refusal, e.g. `SIP;cause=486;text="channel cap reached"`.
func (r Reason) ReasonHeader() string {
	code, _ := r.SIP()
	return fmt.Sprintf("SIP;cause=%d;text=%q", code, r.Text())
}

// As extracts the Reason from err, if err is or wraps one.
func As(err error) (Reason, bool) {
	var r Reason
	if errors.As(err, &r) {
		return r, true
	}
	return 0, false
}

// All lists every reason, for tests and metric pre-registration.
func All() []Reason {
	out := make([]Reason, 0, len(table))
	for r := NoTrunk; r <= Overloaded; r++ {
		out = append(out, r)
	}
	return out
}
