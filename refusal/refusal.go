// Package refusal names every reason trunkgate refuses or ends a call and
// maps each one to its SIP response, its HTTP status, the Q.850 cause of
// the BYE that ends a call for it, the WebSocket close code the AI
// application sees, and its metric label. It is the single table behind
// DESIGN.md's "Refusals" section: admission and call code return a Reason
// as an error, and the SIP, HTTP and WebSocket edges translate it here and
// nowhere else.
package refusal

import (
	"errors"
	"fmt"
)

// Reason is why a call was refused or ended by the edge. It implements
// error so that admission can return it directly or wrapped with %w;
// callers recover it with As.
type Reason int

// The reasons: first DESIGN.md's refusal table, then the other refusals
// of call setup, then the ways an answered call ends, then the protocol
// answers the SIP layer gives a request before it is a call.
const (
	NoTrunk            Reason = iota + 1 // no trunk for the called number
	SourceNotAllowed                     // source address not in the trunk's CIDRs
	DigestMissing                        // trunk has digest credentials, INVITE has none (or a stale nonce): 401 challenge
	DigestWrong                          // digest credentials do not match the trunk's
	KeyUnknown                           // no such key, or a malformed one
	KeyExpired                           // rotated key past its grace period
	KeyRevoked                           // key revoked by an operator
	KeySuspended                         // key suspended by an alert until an operator resumes it
	ScopeMissing                         // key lacks the scope for this direction
	DestinationBlocked                   // outbound destination fails prefix rules
	ChannelCap                           // max_channels calls already up
	CallRate                             // cps token bucket empty
	SpendCap                             // monthly spend cap reached
	Draining                             // edge is shutting down
	Overloaded                           // edge out of capacity (ports, memory)

	InvalidNumber      // to or from is not an E.164 number
	NoOutboundTrunk    // the key has no outbound trunk (or not the one asked for)
	CallerIDNotAllowed // the app's from is not one of the key's numbers
	TrunkChannelCap    // the outbound trunk's own max_channels calls already up
	NoCommonCodec      // the offer (or the carrier's answer) has no PCMU/PCMA
	SRTPRequired       // the trunk requires SRTP; the offer (or answer) is plain RTP
	SRTPOff            // the offer is SRTP only; the trunk's media_encryption is off
	SDESOverPlain      // SDES keys in SDP over UDP or TCP to a trunk that requires SRTP: the keys crossed the network in clear
	ClientCertRequired // the trunk wants mutual TLS; the carrier's certificate is missing or does not match
	AppUnreachable     // the AI application's WebSocket handshake failed
	NoAnswer           // the callee rang past the ring timeout
	NoGateway          // every gateway of the trunk failed (timeout, 408, 5xx, transport)
	Canceled           // the caller (inbound CANCEL) or the app (closed before answer) gave up
	NoAck              // the 200 OK was never acknowledged
	Internal           // a bug or a failure inside the edge

	CallerHangup   // the carrier's side sent BYE (the caller, on inbound calls)
	CalleeHangup   // the carrier's side sent BYE (the callee, on outbound calls)
	AppHangup      // the AI application closed its WebSocket
	AppFailed      // the AI application's WebSocket failed
	AppNoAudio     // the AI application sent no audio by the first-audio deadline
	Transferred    // the AI application transferred the call (REFER) and the far end reached the target
	RTPTimeout     // no RTP from the carrier for the RTP timeout
	MaxDuration    // the key's max_call_seconds passed
	OperatorHangup // an operator hung the call up (REST, CLI)

	Malformed            // the request breaks SIP's grammar or framing (RFC 3261 §18.3, RFC 4475)
	VersionUnsupported   // the request is not SIP/2.0
	SchemeUnsupported    // the Request-URI is not sip, sips or tel
	ExtensionUnsupported // the request Requires an extension the edge lacks
	MethodNotAllowed     // a SIP method the edge knows but does not take (REGISTER, MESSAGE…)
	MethodUnknown        // a method the edge does not know
	NoSuchDialog         // an in-dialog request for no dialog of the edge
	Flooded              // the source sent more requests than the flood guard allows
	NoStream             // a resume names no stream of the key's that can be resumed

	lastReason = NoStream
)

type entry struct {
	sipCode    int
	sipPhrase  string
	httpStatus int
	retryAfter int // seconds; 0 = no Retry-After header
	text       string
	label      string
	// q850 is the cause of the BYE the edge sends when it ends an answered
	// call for this reason (RFC 3326); 0 means 16, normal call clearing.
	q850 int
	// normal marks the ends of an answered call that are ordinary hang-ups:
	// the application's WebSocket closes with 1000, not 4000 + SIP code.
	normal bool
}

var table = map[Reason]entry{
	NoTrunk:            {404, "Not Found", 404, 0, "no trunk for this number", "no_trunk", 0, false},
	SourceNotAllowed:   {403, "Forbidden", 403, 0, "source address not allowed", "source_not_allowed", 0, false},
	DigestMissing:      {401, "Unauthorized", 401, 0, "digest credentials missing", "digest_missing", 0, false},
	DigestWrong:        {403, "Forbidden", 403, 0, "digest credentials wrong", "digest_wrong", 0, false},
	KeyUnknown:         {403, "Forbidden", 401, 0, "key unknown", "key_unknown", 0, false},
	KeyExpired:         {403, "Forbidden", 401, 0, "key expired", "key_expired", 0, false},
	KeyRevoked:         {403, "Forbidden", 401, 0, "key revoked", "key_revoked", 0, false},
	KeySuspended:       {403, "Forbidden", 403, 0, "key suspended by an alert", "key_suspended", 0, false},
	ScopeMissing:       {403, "Forbidden", 403, 0, "key lacks the scope", "scope_missing", 0, false},
	DestinationBlocked: {403, "Forbidden", 403, 0, "destination blocked", "destination_blocked", 0, false},
	ChannelCap:         {486, "Busy Here", 429, 1, "channel cap reached", "channel_cap", 0, false},
	CallRate:           {503, "Service Unavailable", 429, 1, "call rate exceeded", "call_rate", 0, false},
	SpendCap:           {402, "Payment Required", 402, 0, "monthly spend cap reached", "spend_cap", 0, false},
	Draining:           {503, "Service Unavailable", 503, 5, "edge draining", "draining", 41, false},
	Overloaded:         {503, "Service Unavailable", 503, 1, "edge overloaded", "overloaded", 41, false},

	InvalidNumber:      {484, "Address Incomplete", 400, 0, "invalid number", "invalid_number", 0, false},
	NoOutboundTrunk:    {404, "Not Found", 404, 0, "key has no outbound trunk", "no_outbound_trunk", 0, false},
	CallerIDNotAllowed: {403, "Forbidden", 403, 0, "caller id not allowed", "caller_id_not_allowed", 0, false},
	TrunkChannelCap:    {486, "Busy Here", 429, 1, "trunk channel cap reached", "trunk_channel_cap", 0, false},
	NoCommonCodec:      {488, "Not Acceptable Here", 400, 0, "no common codec (PCMU, PCMA)", "no_common_codec", 0, false},
	SRTPRequired:       {488, "Not Acceptable Here", 400, 0, "SRTP required (RTP/SAVP with a=crypto)", "srtp_required", 0, false},
	SRTPOff:            {488, "Not Acceptable Here", 400, 0, "SRTP not enabled on this trunk", "srtp_off", 0, false},
	SDESOverPlain:      {488, "Not Acceptable Here", 400, 0, "SRTP keys need TLS signalling", "sdes_over_plain", 0, false},
	ClientCertRequired: {403, "Forbidden", 403, 0, "client certificate missing or not trusted", "client_cert", 0, false},
	AppUnreachable:     {480, "Temporarily Unavailable", 502, 0, "AI application unreachable", "app_unreachable", 0, false},
	NoAnswer:           {480, "Temporarily Unavailable", 504, 0, "no answer", "no_answer", 0, false},
	NoGateway:          {503, "Service Unavailable", 502, 0, "no gateway answered", "no_gateway", 0, false},
	Canceled:           {487, "Request Terminated", 499, 0, "canceled", "canceled", 0, false},
	NoAck:              {408, "Request Timeout", 504, 0, "no ACK", "no_ack", 0, false},
	Internal:           {500, "Server Internal Error", 500, 0, "internal error", "internal", 41, false},

	CallerHangup:   {200, "OK", 200, 0, "caller hung up", "caller_hangup", 0, true},
	CalleeHangup:   {200, "OK", 200, 0, "callee hung up", "callee_hangup", 0, true},
	AppHangup:      {200, "OK", 200, 0, "app closed the stream", "app_hangup", 0, true},
	AppFailed:      {200, "OK", 200, 0, "app stream failed", "app_failed", 41, true},
	AppNoAudio:     {200, "OK", 200, 0, "app sent no audio", "app_no_audio", 41, true},
	Transferred:    {200, "OK", 200, 0, "call transferred", "transferred", 16, true},
	RTPTimeout:     {408, "Request Timeout", 504, 0, "rtp timeout", "rtp_timeout", 102, true},
	MaxDuration:    {200, "OK", 200, 0, "max call duration", "max_duration", 0, true},
	OperatorHangup: {200, "OK", 200, 0, "operator hangup", "operator_hangup", 0, true},

	Malformed:            {400, "Bad Request", 400, 0, "malformed request", "malformed", 0, false},
	VersionUnsupported:   {505, "Version Not Supported", 400, 0, "SIP version not supported", "version_unsupported", 0, false},
	SchemeUnsupported:    {416, "Unsupported URI Scheme", 400, 0, "URI scheme not supported", "scheme_unsupported", 0, false},
	ExtensionUnsupported: {420, "Bad Extension", 400, 0, "required extension not supported", "extension_unsupported", 0, false},
	MethodNotAllowed:     {405, "Method Not Allowed", 405, 0, "method not allowed", "method_not_allowed", 0, false},
	MethodUnknown:        {501, "Not Implemented", 501, 0, "method not implemented", "method_unknown", 0, false},
	NoSuchDialog:         {481, "Call/Transaction Does Not Exist", 404, 0, "no such dialog", "no_such_dialog", 0, false},
	Flooded:              {503, "Service Unavailable", 429, 60, "request flood", "flooded", 0, false},
	NoStream:             {481, "Call/Transaction Does Not Exist", 404, 0, "no stream to resume", "no_stream", 0, false},
}

func (r Reason) entry() entry {
	if e, ok := table[r]; ok {
		return e
	}
	return table[Internal]
}

// Error returns the human text that also goes into SIP Reason headers and
// JSON error bodies, e.g. "channel cap reached".
func (r Reason) Error() string { return r.entry().text }

// Text is the same as Error, for call sites that are not handling an error.
func (r Reason) Text() string { return r.entry().text }

// Label is the stable snake_case name used as a metric label and as the
// "code" of JSON errors.
func (r Reason) Label() string { return r.entry().label }

// SIP returns the status code and reason phrase for a refused INVITE. For
// the ends of an answered call it is 200, the call's final response.
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

// Q850 is the ISDN cause of the BYE that ends an answered call for r.
func (r Reason) Q850() int {
	if c := r.entry().q850; c != 0 {
		return c
	}
	return 16 // normal call clearing
}

// ByeReason renders the Reason header of the edge's BYE (RFC 3326), e.g.
// `Q.850;cause=16;text="key revoked"`.
func (r Reason) ByeReason() string {
	return fmt.Sprintf("Q.850;cause=%d;text=%q", r.Q850(), r.Text())
}

// Normal reports whether r is an ordinary end of an answered call.
func (r Reason) Normal() bool { return r.entry().normal }

// WebSocket close codes toward the AI application (DESIGN: Outbound calls).
const (
	CloseNormal = 1000 // a normal hang-up
	closeBase   = 4000 // 4000 + the SIP final code of a failure
)

// CloseCode is the WebSocket close code for a call that ends for r.
func (r Reason) CloseCode() int {
	if r.Normal() {
		return CloseNormal
	}
	return CloseCodeForSIP(r.entry().sipCode)
}

// CloseCodeForSIP is the close code for a call that failed with a SIP
// final code, the carrier's or the edge's: 4486 busy, 4404 invalid number.
func CloseCodeForSIP(code int) int {
	if code < 300 || code > 699 {
		return CloseNormal
	}
	return closeBase + code
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
	for r := NoTrunk; r <= lastReason; r++ {
		out = append(out, r)
	}
	return out
}

// ByLabel finds the reason whose metric label is label: a reason stored
// or sent by name (an order to end a call, kept in a shared database).
func ByLabel(label string) (Reason, bool) {
	for r := NoTrunk; r <= lastReason; r++ {
		if r.Label() == label {
			return r, true
		}
	}
	return 0, false
}
