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
		{KeySuspended, 403, 403, 0, "key_suspended", `SIP;cause=403;text="key suspended by an alert"`},
		{ScopeMissing, 403, 403, 0, "scope_missing", `SIP;cause=403;text="key lacks the scope"`},
		{DestinationBlocked, 403, 403, 0, "destination_blocked", `SIP;cause=403;text="destination blocked"`},
		{ChannelCap, 486, 429, 0, "channel_cap", `SIP;cause=486;text="channel cap reached"`},
		{CallRate, 503, 429, 1, "call_rate", `SIP;cause=503;text="call rate exceeded"`},
		{SpendCap, 402, 402, 0, "spend_cap", `SIP;cause=402;text="monthly spend cap reached"`},
		{Draining, 503, 503, 5, "draining", `SIP;cause=503;text="edge draining"`},
		{Overloaded, 503, 503, 1, "overloaded", `SIP;cause=503;text="edge overloaded"`},
		{InvalidNumber, 484, 400, 0, "invalid_number", `SIP;cause=484;text="invalid number"`},
		{NoOutboundTrunk, 404, 404, 0, "no_outbound_trunk", `SIP;cause=404;text="key has no outbound trunk"`},
		{CallerIDNotAllowed, 403, 403, 0, "caller_id_not_allowed", `SIP;cause=403;text="caller id not allowed"`},
		{TrunkChannelCap, 486, 429, 0, "trunk_channel_cap", `SIP;cause=486;text="trunk channel cap reached"`},
		{NoCommonCodec, 488, 400, 0, "no_common_codec", `SIP;cause=488;text="no common codec (PCMU, PCMA)"`},
		{SRTPRequired, 488, 400, 0, "srtp_required", `SIP;cause=488;text="SRTP required (RTP/SAVP with a=crypto)"`},
		{SRTPOff, 488, 400, 0, "srtp_off", `SIP;cause=488;text="SRTP not enabled on this trunk"`},
		{SDESOverPlain, 488, 400, 0, "sdes_over_plain", `SIP;cause=488;text="SRTP keys need TLS signalling"`},
		{ClientCertRequired, 403, 403, 0, "client_cert", `SIP;cause=403;text="client certificate missing or not trusted"`},
		{AppUnreachable, 480, 502, 0, "app_unreachable", `SIP;cause=480;text="AI application unreachable"`},
		{NoAnswer, 480, 504, 0, "no_answer", `SIP;cause=480;text="no answer"`},
		{NoGateway, 503, 502, 0, "no_gateway", `SIP;cause=503;text="no gateway answered"`},
		{Canceled, 487, 499, 0, "canceled", `SIP;cause=487;text="canceled"`},
		{NoAck, 408, 504, 0, "no_ack", `SIP;cause=408;text="no ACK"`},
		{Internal, 500, 500, 0, "internal", `SIP;cause=500;text="internal error"`},
		{CallerHangup, 200, 200, 0, "caller_hangup", `SIP;cause=200;text="caller hung up"`},
		{CalleeHangup, 200, 200, 0, "callee_hangup", `SIP;cause=200;text="callee hung up"`},
		{AppHangup, 200, 200, 0, "app_hangup", `SIP;cause=200;text="app closed the stream"`},
		{AppFailed, 200, 200, 0, "app_failed", `SIP;cause=200;text="app stream failed"`},
		{AppNoAudio, 200, 200, 0, "app_no_audio", `SIP;cause=200;text="app sent no audio"`},
		{Transferred, 200, 200, 0, "transferred", `SIP;cause=200;text="call transferred"`},
		{RTPTimeout, 408, 504, 0, "rtp_timeout", `SIP;cause=408;text="rtp timeout"`},
		{MaxDuration, 200, 200, 0, "max_duration", `SIP;cause=200;text="max call duration"`},
		{OperatorHangup, 200, 200, 0, "operator_hangup", `SIP;cause=200;text="operator hangup"`},
		{Malformed, 400, 400, 0, "malformed", `SIP;cause=400;text="malformed request"`},
		{VersionUnsupported, 505, 400, 0, "version_unsupported", `SIP;cause=505;text="SIP version not supported"`},
		{SchemeUnsupported, 416, 400, 0, "scheme_unsupported", `SIP;cause=416;text="URI scheme not supported"`},
		{ExtensionUnsupported, 420, 400, 0, "extension_unsupported", `SIP;cause=420;text="required extension not supported"`},
		{MethodNotAllowed, 405, 405, 0, "method_not_allowed", `SIP;cause=405;text="method not allowed"`},
		{MethodUnknown, 501, 501, 0, "method_unknown", `SIP;cause=501;text="method not implemented"`},
		{NoSuchDialog, 481, 404, 0, "no_such_dialog", `SIP;cause=481;text="no such dialog"`},
		{Flooded, 503, 429, 60, "flooded", `SIP;cause=503;text="request flood"`},
		{NoStream, 481, 404, 0, "no_stream", `SIP;cause=481;text="no stream to resume"`},
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

// TestEndings pins what an answered call's end looks like on the wire: the
// BYE's Q.850 cause and the application's WebSocket close code (DESIGN:
// 1000 for a normal hang-up, 4000 + the SIP final code otherwise).
func TestEndings(t *testing.T) {
	tests := []struct {
		r     Reason
		bye   string
		close int
	}{
		{KeyRevoked, `Q.850;cause=16;text="key revoked"`, 4403},
		{SpendCap, `Q.850;cause=16;text="monthly spend cap reached"`, 4402},
		{Draining, `Q.850;cause=41;text="edge draining"`, 4503},
		{RTPTimeout, `Q.850;cause=102;text="rtp timeout"`, 1000},
		{MaxDuration, `Q.850;cause=16;text="max call duration"`, 1000},
		{OperatorHangup, `Q.850;cause=16;text="operator hangup"`, 1000},
		{AppFailed, `Q.850;cause=41;text="app stream failed"`, 1000},
		{AppNoAudio, `Q.850;cause=41;text="app sent no audio"`, 1000},
		{NoAnswer, `Q.850;cause=16;text="no answer"`, 4480},
		{NoGateway, `Q.850;cause=16;text="no gateway answered"`, 4503},
		{InvalidNumber, `Q.850;cause=16;text="invalid number"`, 4484},
		{Internal, `Q.850;cause=41;text="internal error"`, 4500},
	}
	for _, tt := range tests {
		if got := tt.r.ByeReason(); got != tt.bye {
			t.Errorf("%s: BYE Reason %s, want %s", tt.r.Label(), got, tt.bye)
		}
		if got := tt.r.CloseCode(); got != tt.close {
			t.Errorf("%s: close code %d, want %d", tt.r.Label(), got, tt.close)
		}
	}
	for code, want := range map[int]int{486: 4486, 404: 4404, 603: 4603, 200: 1000, 0: 1000, 180: 1000} {
		if got := CloseCodeForSIP(code); got != want {
			t.Errorf("CloseCodeForSIP(%d) = %d, want %d", code, got, want)
		}
	}
}
