package call

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"trunkgate/billing"
	"trunkgate/bridge"
	"trunkgate/refusal"
	"trunkgate/sip"
	"trunkgate/trunks"
)

// TestInboundRefusals: each refusal of DESIGN's table is answered with its
// reason, counted and audited, and nothing is admitted or billed.
func TestInboundRefusals(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(h *harness, inv *fakeInvite)
		want   refusal.Reason
		admits bool // the refusal came from admission
	}{
		{"no trunk", func(h *harness, inv *fakeInvite) { inv.called = "+15559999" }, refusal.NoTrunk, false},
		{"another source's number", func(h *harness, inv *fakeInvite) {
			h.trunks.inbound["+15550199"] = &trunks.Trunk{ID: "tr_other", KeyID: "OTHER0000001", Numbers: []string{"+15550199"},
				AllowedSources: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
			inv.called = "+15550199"
		}, refusal.NoTrunk, false},
		{"unknown source, 403 asked for", func(h *harness, inv *fakeInvite) {
			h.m.cfg.UnknownSourceReply = true
			inv.source = netip.MustParseAddrPort("203.0.113.9:5060")
		}, refusal.SourceNotAllowed, false},
		{"digest wrong", func(h *harness, inv *fakeInvite) {
			h.trunks.inbound["+15550100"].DigestUser = "pbx"
			inv.digest = sip.DigestWrong
		}, refusal.DigestWrong, false},
		{"no codec", func(h *harness, inv *fakeInvite) { inv.offer = nil }, refusal.NoCommonCodec, false},
		{"plain offer to an SRTP trunk", func(h *harness, inv *fakeInvite) {
			h.trunks.inbound["+15550100"].MediaEncryption = trunks.MediaRequire
		}, refusal.SRTPRequired, false},
		{"SDES keys over UDP to an SRTP trunk", func(h *harness, inv *fakeInvite) {
			h.trunks.inbound["+15550100"].MediaEncryption = trunks.MediaRequire
			inv.offer = srtpOffer(t)
		}, refusal.SDESOverPlain, false},
		{"SRTP offer to a plain trunk", func(h *harness, inv *fakeInvite) { inv.offer = srtpOffer(t) }, refusal.SRTPOff, false},
		{"no client certificate", func(h *harness, inv *fakeInvite) {
			h.trunks.inbound["+15550100"].TLSClientCA = "-----BEGIN CERTIFICATE-----"
			inv.transport = "TLS"
		}, refusal.ClientCertRequired, false},
		{"key revoked", func(h *harness, inv *fakeInvite) { h.admit.refuse = refusal.KeyRevoked }, refusal.KeyRevoked, true},
		{"scope", func(h *harness, inv *fakeInvite) { h.admit.refuse = refusal.ScopeMissing }, refusal.ScopeMissing, true},
		{"channel cap", func(h *harness, inv *fakeInvite) { h.admit.refuse = refusal.ChannelCap }, refusal.ChannelCap, true},
		{"call rate", func(h *harness, inv *fakeInvite) { h.admit.refuse = refusal.CallRate }, refusal.CallRate, true},
		{"spend cap", func(h *harness, inv *fakeInvite) { h.admit.refuse = refusal.SpendCap }, refusal.SpendCap, true},
		{"draining", func(h *harness, inv *fakeInvite) { h.admit.refuse = refusal.Draining }, refusal.Draining, true},
		{"admission broken", func(h *harness, inv *fakeInvite) { h.admit.refuse = errors.New("disk on fire") },
			refusal.Internal, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			inv := newFakeInvite("+15550100")
			tt.setup(h, inv)
			h.m.Inbound(inv)
			if got := inv.refused(); len(got) != 1 || got[0] != tt.want {
				t.Fatalf("refused with %v, want %v", got, tt.want)
			}
			if len(h.admit.reqs) != map[bool]int{false: 0, true: 1}[tt.admits] || len(h.admit.leases) != 0 {
				t.Fatalf("%d admissions, %d leases", len(h.admit.reqs), len(h.admit.leases))
			}
			if len(h.meter.finished) != 0 || len(h.media.sessions) != 0 {
				t.Fatal("a refused call reached media or billing")
			}
			if tt.want != refusal.NoCommonCodec && (len(h.metrics.refused) != 1 || h.metrics.refused[0] != tt.want || len(h.audit.entries) != 1) {
				t.Fatalf("metrics %v, audit %d entries", h.metrics.refused, len(h.audit.entries))
			}
		})
	}
}

// srtpOffer is an RTP/SAVP offer with one AES-CM key.
func srtpOffer(t *testing.T) *sip.SDP {
	c, err := sip.NewCrypto(1, sip.SuiteAESCM128HMACSHA1_80)
	if err != nil {
		t.Fatal(err)
	}
	offer, err := sip.ParseSDP([]byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio 6000 RTP/SAVP 0\r\na=crypto:" + c.Attribute() + "\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return offer
}

// TestInboundSRTPOverTLS: an SRTP offer over TLS to a trunk that
// requires SRTP is answered with RTP/SAVP and a key of the edge's own,
// and its media session is protected.
func TestInboundSRTPOverTLS(t *testing.T) {
	h := newHarness(t)
	h.trunks.inbound["+15550100"].MediaEncryption = trunks.MediaRequire
	inv := newFakeInvite("+15550100")
	inv.offer, inv.transport = srtpOffer(t), "TLS"
	h.m.Inbound(inv)
	if got := inv.refused(); len(got) != 0 {
		t.Fatalf("refused with %v", got)
	}
	answer := string(inv.answerSDP())
	if !strings.Contains(answer, "RTP/SAVP 0") || !strings.Contains(answer, "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:") {
		t.Fatalf("answer:\n%s", answer)
	}
	if cfg := h.media.last().cfg; cfg.SRTP == nil {
		t.Fatal("the media session has no SRTP")
	}
	inv.dialog.remoteBye()
	if cdr := h.meter.cdr(t); cdr.Transport != "TLS" || cdr.MediaEncryption != "srtp" {
		t.Fatalf("CDR transport %q, media %q", cdr.Transport, cdr.MediaEncryption)
	}
}

// TestUnknownSourceIsUniform: a source no trunk allows gets the same
// answer — by default none — for a number that exists and one that does
// not; it is still counted and audited.
func TestUnknownSourceIsUniform(t *testing.T) {
	for _, called := range []string{"+15550100", "+15559999"} {
		h := newHarness(t)
		inv := newFakeInvite(called)
		inv.source = netip.MustParseAddrPort("203.0.113.9:5060")
		h.m.Inbound(inv)
		if !inv.dropped || len(inv.refused()) != 0 || inv.challenge {
			t.Fatalf("%s: dropped %v, refused %v, challenged %v", called, inv.dropped, inv.refused(), inv.challenge)
		}
		if h.metrics.refused[0] != refusal.SourceNotAllowed || len(h.audit.entries) != 1 || h.audit.entries[0].Target != "" {
			t.Fatalf("%s: metrics %v, audit %+v", called, h.metrics.refused, h.audit.entries)
		}
	}
}

// TestDigestDoesNotRevealNumbers: when every trunk that allows a source
// wants digest, a number that does not exist is challenged like one that
// does; with good credentials it is 404, with bad ones 403.
func TestDigestDoesNotRevealNumbers(t *testing.T) {
	for _, tt := range []struct {
		creds sip.DigestResult
		want  string
	}{{sip.DigestMissing, "challenge"}, {sip.DigestStale, "challenge"}, {sip.DigestOK, "no_trunk"}, {sip.DigestWrong, "digest_wrong"}} {
		h := newHarness(t)
		h.trunks.inbound["+15550100"].DigestUser = "pbx"
		inv := newFakeInvite("+15559999")
		inv.digest = tt.creds
		h.m.Inbound(inv)
		got := "challenge"
		if r := inv.refused(); len(r) == 1 {
			got = r[0].Label()
		} else if !inv.challenge {
			got = fmt.Sprint("nothing: ", r)
		}
		if got != tt.want {
			t.Errorf("credentials %v: %s, want %s", tt.creds, got, tt.want)
		}
	}
}

// TestInboundDigestChallenge: no credentials get a challenge, not a refusal.
func TestInboundDigestChallenge(t *testing.T) {
	h := newHarness(t)
	h.trunks.inbound["+15550100"].DigestUser = "pbx"
	inv := newFakeInvite("+15550100")
	inv.digest = sip.DigestMissing
	h.m.Inbound(inv)
	if !inv.challenge || len(inv.refused()) != 0 || len(h.admit.reqs) != 0 {
		t.Fatalf("challenge %v, refusals %v, admissions %d", inv.challenge, inv.refused(), len(h.admit.reqs))
	}
	if h.metrics.refused[0] != refusal.DigestMissing {
		t.Fatalf("counted %v", h.metrics.refused)
	}
}

// TestInboundSetupFailures: an admitted call that never gets answered
// frees its channel and leaves a CDR with the final code it was refused
// with.
func TestInboundSetupFailures(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(h *harness, inv *fakeInvite)
		refusal refusal.Reason // sent to the carrier; 0 = none (the carrier canceled)
		code    int
		side    string
		cause   string
	}{
		{"app unreachable", func(h *harness, _ *fakeInvite) { h.apps.err = bridge.ErrDial },
			refusal.AppUnreachable, 480, billing.SideApp, "AI application unreachable"},
		{"no RTP ports", func(h *harness, _ *fakeInvite) { h.media.err = fmt.Errorf("%w", errors.New("no free RTP ports")) },
			refusal.Overloaded, 503, billing.SideEdge, "edge overloaded"},
		{"no ACK", func(h *harness, inv *fakeInvite) { inv.noAck = true }, 0, 200, billing.SideEdge, "no ACK"},
		{"panic in setup", func(h *harness, _ *fakeInvite) { h.apps.panics = true }, 0, 500, billing.SideEdge, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			inv := newFakeInvite("+15550100")
			tt.setup(h, inv)
			h.m.Inbound(inv)
			cdr := h.meter.cdr(t)
			h.idle(t)
			if cdr.FinalCode != tt.code || cdr.HangupSide != tt.side || cdr.HangupCause != tt.cause || cdr.BilledSeconds != 0 ||
				cdr.AnswerMS != 0 || cdr.Direction != "inbound" || cdr.KeyID != testKeyID {
				t.Fatalf("CDR %+v", cdr)
			}
			if got := inv.refused(); tt.refusal != 0 && (len(got) != 1 || got[0] != tt.refusal) {
				t.Fatalf("refused with %v, want %v", got, tt.refusal)
			}
			if n := h.admit.last().releases(); n != 1 {
				t.Fatalf("lease released %d times", n)
			}
			for _, s := range h.media.sessions {
				if _, closed := s.state(); closed == 0 {
					t.Fatal("media left open")
				}
			}
		})
	}
}

// TestInboundCancelWhileDialling: the caller's CANCEL during the app
// handshake ends setup: 487 in the CDR, the channel free.
func TestInboundCancelWhileDialling(t *testing.T) {
	h := newHarness(t)
	h.apps.block = true
	h.apps.dialled = make(chan struct{}, 1)
	inv := newFakeInvite("+15550100")
	go h.m.Inbound(inv)
	<-h.apps.dialled
	inv.cancel(sip.ErrCanceled)
	cdr := h.meter.cdr(t)
	h.idle(t)
	if cdr.FinalCode != 487 || cdr.HangupSide != billing.SideCarrier || cdr.HangupCause != "canceled" {
		t.Fatalf("CDR %+v", cdr)
	}
	if len(inv.refused()) != 0 {
		t.Fatalf("refused %v after the caller's CANCEL (sipgo answers 487 itself)", inv.refused())
	}
	if h.admit.last().releases() != 1 {
		t.Fatal("lease not released")
	}
}

// TestInboundAnsweredAndEnded: every way an answered call ends gives its
// side and cause in the CDR, the BYE Reason the edge sends (none when the
// carrier hung up) and the stop the application sees.
func TestInboundAnsweredAndEnded(t *testing.T) {
	tests := []struct {
		name  string
		end   func(h *harness, inv *fakeInvite, stream *fakeStream, m *fakeMedia, lease *fakeLease)
		side  string
		cause string
		bye   string
		close int
	}{
		{"caller BYE", func(_ *harness, inv *fakeInvite, _ *fakeStream, _ *fakeMedia, _ *fakeLease) { inv.dialog.remoteBye() },
			billing.SideCarrier, "caller hung up", "", 1000},
		{"app closes", func(_ *harness, _ *fakeInvite, s *fakeStream, _ *fakeMedia, _ *fakeLease) { s.appHangsUp(true) },
			billing.SideApp, "app closed the stream", `Q.850;cause=16;text="app closed the stream"`, 1000},
		{"app fails", func(_ *harness, _ *fakeInvite, s *fakeStream, _ *fakeMedia, _ *fakeLease) { s.appHangsUp(false) },
			billing.SideApp, "app stream failed", `Q.850;cause=41;text="app stream failed"`, 1000},
		{"rtp timeout", func(_ *harness, _ *fakeInvite, _ *fakeStream, m *fakeMedia, _ *fakeLease) { m.timeout() },
			billing.SideEdge, "rtp timeout", `Q.850;cause=102;text="rtp timeout"`, 1000},
		{"key revoked", func(_ *harness, _ *fakeInvite, _ *fakeStream, _ *fakeMedia, l *fakeLease) {
			l.cancel(refusal.KeyRevoked)
		},
			billing.SideEdge, "key revoked", `Q.850;cause=16;text="key revoked"`, 4403},
		{"spend cap", func(_ *harness, _ *fakeInvite, _ *fakeStream, _ *fakeMedia, l *fakeLease) { l.cancel(refusal.SpendCap) },
			billing.SideEdge, "monthly spend cap reached", `Q.850;cause=16;text="monthly spend cap reached"`, 4402},
		{"operator", func(h *harness, _ *fakeInvite, _ *fakeStream, _ *fakeMedia, _ *fakeLease) {
			if err := h.m.Hangup(h.m.List()[0].CallID); err != nil {
				panic(err)
			}
		}, billing.SideEdge, "operator hangup", `Q.850;cause=16;text="operator hangup"`, 1000},
		{"drain", func(h *harness, _ *fakeInvite, _ *fakeStream, _ *fakeMedia, _ *fakeLease) {
			h.m.HangupAll(refusal.Draining)
		},
			billing.SideEdge, "edge draining", `Q.850;cause=41;text="edge draining"`, 4503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			inv := newFakeInvite("+15550100")
			h.m.Inbound(inv)
			live := h.waitLive(t, 1)
			stream, sess, lease := h.apps.last(), h.media.last(), h.admit.last()
			if started, _ := sess.state(); !started || !stream.begun || live[0].State != StateAnswered || live[0].Direction != "inbound" {
				t.Fatalf("live call %+v: media started %v, stream begun %v", live[0], started, stream.begun)
			}
			if len(h.meter.answered) != 1 || h.meter.answered[0].RatePerMinute != 6000 {
				t.Fatalf("meter answered %+v", h.meter.answered)
			}
			tt.end(h, inv, stream, sess, lease)
			cdr := h.meter.cdr(t)
			h.idle(t)
			if cdr.HangupSide != tt.side || cdr.HangupCause != tt.cause || cdr.FinalCode != 200 || cdr.AnswerMS == 0 ||
				cdr.BilledSeconds != billing.BilledSeconds(cdr.DurationMS) || cdr.Media.PacketsIn != 10 || cdr.Transport != "UDP" {
				t.Fatalf("CDR %+v", cdr)
			}
			byes := inv.dialog.sentByes()
			if tt.bye == "" && len(byes) != 0 || tt.bye != "" && (len(byes) != 1 || byes[0] != tt.bye) {
				t.Fatalf("BYEs %q, want %q", byes, tt.bye)
			}
			ends := stream.closedWith()
			if len(ends) == 0 || ends[0].CloseCode != tt.close || ends[0].SIPCode != 200 || ends[0].Reason != tt.cause {
				t.Fatalf("stream ended %+v, want close %d", ends, tt.close)
			}
			if _, closed := sess.state(); closed == 0 || lease.releases() != 1 || len(h.m.List()) != 0 {
				t.Fatalf("media closed %d, lease released %d, %d live", closed, lease.releases(), len(h.m.List()))
			}
			if ended := h.metrics.endedSides(); len(ended) != 1 || ended[0] != tt.side {
				t.Fatalf("metrics ended %v", ended)
			}
		})
	}
}

// TestPanicInCallStillRecords: a bug inside a live call ends that call
// alone, and its CDR is still written, its meter entry finished and its
// channel freed (the recovery path used to skip Meter.Finish).
func TestPanicInCallStillRecords(t *testing.T) {
	h := newHarness(t)
	inv := newFakeInvite("+15550100")
	inv.dialog.panicky = true
	h.m.Inbound(inv)
	cdr := h.meter.cdr(t)
	h.idle(t)
	if cdr.HangupCause != "internal error" || cdr.HangupSide != billing.SideEdge || cdr.AnswerMS == 0 {
		t.Fatalf("CDR %+v", cdr)
	}
	if h.admit.last().releases() != 1 || len(h.m.List()) != 0 || len(h.admit.ledger.Calls()) != 0 {
		t.Fatal("the panicking call kept its channel or stayed live")
	}
	if ends := h.apps.last().closedWith(); len(ends) != 1 || ends[0].Reason != "internal error" {
		t.Fatalf("stream ended %+v", ends)
	}
}

// TestMaxDuration: max_call_seconds ends the call with BYE.
func TestMaxDuration(t *testing.T) {
	h := newHarness(t)
	h.admit.key.Limits.MaxCallSeconds = 1
	inv := newFakeInvite("+15550100")
	h.m.Inbound(inv)
	cdr := h.meter.cdr(t)
	if cdr.HangupCause != "max call duration" || cdr.BilledSeconds != 1 && cdr.BilledSeconds != 2 {
		t.Fatalf("CDR %+v", cdr)
	}
	if byes := inv.dialog.sentByes(); len(byes) != 1 || byes[0] != `Q.850;cause=16;text="max call duration"` {
		t.Fatalf("BYEs %q", byes)
	}
}

func TestTransferTarget(t *testing.T) {
	for _, tt := range []struct{ to, remote, want string }{
		{"sip:desk@pbx.example", "sip:carrier@198.51.100.7:5060", "sip:desk@pbx.example"},
		{"sips:desk@pbx.example;transport=tls", "sip:carrier@198.51.100.7:5060", "sips:desk@pbx.example;transport=tls"},
		{"+1 555 0199", "sip:carrier@198.51.100.7:5060;transport=tcp", "sip:+15550199@198.51.100.7:5060;transport=tcp"},
		{"+15550199", "sip:198.51.100.7", "sip:+15550199@198.51.100.7"},
		{"sip:a@b\r\nVia: x", "sip:c@d", ""},
		{"sip:", "sip:c@d", ""},
		{"desk", "sip:c@d", ""},
		{"tel:+15550199", "sip:c@d", "sip:+15550199@d"}, // a tel: URI is its number
	} {
		got, err := transferTarget(tt.to, tt.remote)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("transferTarget(%q, %q) = %q, %v; want %q", tt.to, tt.remote, got, err, tt.want)
		}
	}
}
