package refusal

import (
	"errors"
	"fmt"
	"testing"
)

// TestTable pins DESIGN.md's refusal table: the codes carriers, apps and
// dashboards depend on.
func TestTable(t *testing.T) {
	tests := []struct {
		r         Reason
		sip       int
		http      int
		sipRetry  int
		label     string
		reasonHdr string
	}{
		{NoTrunk, 404, 404, 0, "no_trunk", `SIP;cause=404;text="no trunk for this number"`},
		{SourceNotAllowed, 403, 403, 0, "source_not_allowed", `SIP;cause=403;text="source address not allowed"`},
		{DigestMissing, 401, 401, 0, "digest_missing", `SIP;cause=401;text="digest credentials missing"`},
		{DigestWrong, 403, 403, 0, "digest_wrong", `SIP;cause=403;text="digest credentials wrong"`},
		{KeyUnknown, 403, 401, 0, "key_unknown", `SIP;cause=403;text="key unknown"`},
		{KeyExpired, 403, 401, 0, "key_expired", `SIP;cause=403;text="key expired"`},
		{KeyRevoked, 403, 401, 0, "key_revoked", `SIP;cause=403;text="key revoked"`},
		{ScopeMissing, 403, 403, 0, "scope_missing", `SIP;cause=403;text="key lacks the scope"`},
		{DestinationBlocked, 403, 403, 0, "destination_blocked", `SIP;cause=403;text="destination blocked"`},
		{ChannelCap, 486, 429, 0, "channel_cap", `SIP;cause=486;text="channel cap reached"`},
		{CallRate, 503, 429, 1, "call_rate", `SIP;cause=503;text="call rate exceeded"`},
		{SpendCap, 402, 402, 0, "spend_cap", `SIP;cause=402;text="monthly spend cap reached"`},
		{Draining, 503, 503, 5, "draining", `SIP;cause=503;text="edge draining"`},
		{Overloaded, 503, 503, 1, "overloaded", `SIP;cause=503;text="edge overloaded"`},
	}
	if len(tests) != len(All()) {
		t.Fatalf("%d reasons in the table, %d tested", len(All()), len(tests))
	}
	labels := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.label, func(t *testing.T) {
			code, phrase := tt.r.SIP()
			if code != tt.sip || phrase == "" || tt.r.HTTP() != tt.http || tt.r.SIPRetryAfter() != tt.sipRetry ||
				tt.r.Label() != tt.label || tt.r.ReasonHeader() != tt.reasonHdr {
				t.Fatalf("%v: SIP %d %q, HTTP %d, Retry-After %d, label %q, Reason %s", tt.r, code, phrase,
					tt.r.HTTP(), tt.r.SIPRetryAfter(), tt.r.Label(), tt.r.ReasonHeader())
			}
			if labels[tt.label] {
				t.Fatalf("label %q used twice", tt.label)
			}
			labels[tt.label] = true
		})
	}
}

func TestAsThroughWrapping(t *testing.T) {
	err := fmt.Errorf("admit key abc: %w", fmt.Errorf("bucket: %w", CallRate))
	if r, ok := As(err); !ok || r != CallRate || !errors.Is(err, CallRate) {
		t.Fatalf("As(%v) = %v, %v", err, r, ok)
	}
	if _, ok := As(errors.New("disk full")); ok {
		t.Fatal("a plain error is not a refusal")
	}
	if code, _ := Reason(99).SIP(); code != 500 || Reason(99).Label() != "internal" {
		t.Fatalf("an unknown reason maps to %d %q", code, Reason(99).Label())
	}
}
