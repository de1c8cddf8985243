package call

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"trunkgate/billing"
	"trunkgate/bridge"
	"trunkgate/keys"
	"trunkgate/refusal"
	"trunkgate/sip"
	"trunkgate/trunks"
)

// outboundHarness is a harness whose key has an outbound trunk with the
// given gateways (by host, priority 1..n in order).
func outboundHarness(t *testing.T, hosts ...string) *harness {
	t.Helper()
	h := newHarness(t)
	tr := &trunks.Trunk{ID: "tr_out", KeyID: testKeyID, Direction: trunks.Outbound, CallerID: "+15550100"}
	for i, host := range hosts {
		tr.Gateways = append(tr.Gateways, trunks.Gateway{URI: "sip:" + host + ":5060;transport=udp", Host: host, Port: 5060,
			Transport: "udp", Priority: i + 1, Weight: 10})
	}
	h.trunks.outbound = tr
	return h
}

// place runs an outbound call the way POST /v1/calls does, with the app
// dialled at answer.
func (h *harness) place(t *testing.T, to string) string {
	t.Helper()
	id, err := h.m.Place(context.Background(), OutboundRequest{Key: h.admit.key, To: to, AIURL: "ws://app.example/a",
		Format: bridge.Format{Kind: bridge.FormatTwilio, SampleRate: 8000}})
	if err != nil {
		t.Fatalf("Place: %v", err)
	}
	return id
}

// TestOutboundFailover: the first gateway answers 503 and is counted
// failed, the second answers; the CDR names the gateway that carried the
// call, and the call ends like any other.
func TestOutboundFailover(t *testing.T) {
	h := outboundHarness(t, "gw1", "gw2")
	d := newFakeDialog()
	h.carrier.answers["gw1"] = refuses(503, "Service Unavailable", "")
	h.carrier.answers["gw2"] = answers(d)
	h.place(t, "+15551230000")
	live := h.waitLive(t, 1)
	if live[0].Direction != "outbound" || live[0].Gateway != "sip:gw2:5060;transport=udp" || live[0].Codec != "PCMA" {
		t.Fatalf("live %+v", live[0])
	}
	if tried := h.carrier.triedHosts(); fmt.Sprint(tried) != "[gw1 gw2]" {
		t.Fatalf("tried %v", tried)
	}
	if m := h.media.last(); m.codec.Name != "PCMA" || m.remote.String() != "127.0.0.2:7000" {
		t.Fatalf("media took %+v from the answer", m)
	}
	if st := h.health.Status(); len(st) != 2 || st[0].Failures != 1 || st[1].Failures != 0 {
		t.Fatalf("health %+v", st)
	}
	d.remoteBye()
	cdr := h.meter.cdr(t)
	h.idle(t)
	if cdr.Gateway != "sip:gw2:5060;transport=udp" || cdr.HangupCause != "callee hung up" || cdr.From != "+15550100" ||
		cdr.To != "+15551230000" || cdr.Direction != "outbound" || cdr.FinalCode != 200 {
		t.Fatalf("CDR %+v", cdr)
	}
	if req := h.admit.reqs[0]; req.Direction != keys.Outbound || req.Destination != "+15551230000" || req.TrunkID != "tr_out" {
		t.Fatalf("admission %+v", req)
	}
}

// TestOutboundFinalAnswers: answers about the callee end the call at the
// first gateway; failures of the gateway move on; when every gateway
// fails, the app hears 503 "no gateway answered".
func TestOutboundFinalAnswers(t *testing.T) {
	tests := []struct {
		name   string
		gw1    func(context.Context, sip.DialRequest) (Dialog, []byte, error)
		tried  string
		code   int
		cause  string
		close  int
		failed int // gw1's failures in a row afterwards
	}{
		{"busy", refuses(486, "Busy Here", ""), "[gw1]", 486, "Busy Here", 4486, 0},
		{"invalid", refuses(404, "Not Found", ""), "[gw1]", 404, "Not Found", 4404, 0},
		{"decline", refuses(603, "Decline", `Q.850;cause=21;text="call rejected"`), "[gw1]", 603, "call rejected", 4603, 0},
		{"408 fails over", refuses(408, "Request Timeout", ""), "[gw1 gw2]", 503, "no gateway answered", 4503, 1},
		{"500 fails over", refuses(500, "Server Internal Error", ""), "[gw1 gw2]", 503, "no gateway answered", 4503, 1},
		{"silence fails over", nil, "[gw1 gw2]", 503, "no gateway answered", 4503, 1},
		{"transport error", func(context.Context, sip.DialRequest) (Dialog, []byte, error) {
			return nil, nil, fmt.Errorf("%w: connection refused", sip.ErrTransport)
		}, "[gw1 gw2]", 503, "no gateway answered", 4503, 1},
		{"carrier channel limit, Q.850 34", refuses(503, "Service Unavailable", `Q.850;cause=34;text="no circuit"`),
			"[gw1 gw2]", 503, "no gateway answered", 4503, 0},
		{"carrier channel limit, 403 text", refuses(403, "Channel Limit Exceeded", ""), "[gw1 gw2]", 503, "no gateway answered", 4503, 0},
		{"403 about the callee", refuses(403, "Forbidden", ""), "[gw1]", 403, "Forbidden", 4403, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := outboundHarness(t, "gw1", "gw2")
			h.carrier.answers["gw1"] = tt.gw1
			h.carrier.answers["gw2"] = refuses(502, "Bad Gateway", "")
			stream := newFakeStream()
			h.apps.err = errors.New("never dialled: the call is not answered")
			id, err := h.m.Place(context.Background(), OutboundRequest{Key: h.admit.key, To: "+15551230000", AIURL: "ws://a/b"})
			if err != nil {
				t.Fatal(err)
			}
			_ = stream
			cdr := h.meter.cdr(t)
			h.idle(t)
			if cdr.CallID != id || cdr.FinalCode != tt.code || cdr.HangupCause != tt.cause || cdr.BilledSeconds != 0 {
				t.Fatalf("CDR %+v", cdr)
			}
			if got := fmt.Sprint(h.carrier.triedHosts()); got != tt.tried {
				t.Fatalf("tried %s, want %s", got, tt.tried)
			}
			if got := refusalEnd(cdr).CloseCode; got != tt.close {
				t.Fatalf("close code %d, want %d", got, tt.close)
			}
			if st := h.health.Status(); len(st) > 0 && st[0].URI == "sip:gw1:5060;transport=udp" && st[0].Failures != tt.failed {
				t.Fatalf("gw1 failures %d, want %d", st[0].Failures, tt.failed)
			}
			if h.admit.last().releases() != 1 {
				t.Fatal("lease not released")
			}
		})
	}
}

// refusalEnd is the stream end the CDR's outcome maps to.
func refusalEnd(c billing.CDR) bridge.End {
	o := carrierFailed(c.FinalCode, c.HangupCause)
	if c.FinalCode == 503 && c.HangupCause == refusal.NoGateway.Text() {
		o = because(refusal.NoGateway)
	}
	return o.streamEnd(false)
}

// TestGatewayMarkedDown: three failures in a row mark a gateway down; it
// is then tried last, after the gateway that is up.
func TestGatewayMarkedDown(t *testing.T) {
	h := outboundHarness(t, "gw1", "gw2")
	h.carrier.answers["gw1"] = refuses(500, "Server Internal Error", "")
	h.carrier.answers["gw2"] = refuses(486, "Busy Here", "")
	for range 3 {
		h.place(t, "+15551230000")
		h.meter.cdr(t)
		h.idle(t)
	}
	if h.health.Up(h.trunks.outbound.Gateways[0]) {
		t.Fatalf("gw1 still up after 3 failures: %+v", h.health.Status())
	}
	h.carrier.tried = nil
	h.place(t, "+15551230000")
	h.meter.cdr(t)
	h.idle(t)
	if got := fmt.Sprint(h.carrier.triedHosts()); got != "[gw2]" {
		t.Fatalf("with gw1 down, tried %s", got)
	}
}

// TestOutboundRefusals: every check runs before any INVITE leaves.
func TestOutboundRefusals(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *harness, req *OutboundRequest)
		want  refusal.Reason
	}{
		{"bad to", func(_ *harness, r *OutboundRequest) { r.To = "12ab" }, refusal.InvalidNumber},
		{"bad from", func(_ *harness, r *OutboundRequest) { r.From = "x" }, refusal.InvalidNumber},
		{"no trunk", func(h *harness, _ *OutboundRequest) { h.trunks.outbound = nil }, refusal.NoOutboundTrunk},
		{"other trunk", func(_ *harness, r *OutboundRequest) { r.TrunkID = "tr_nope" }, refusal.NoOutboundTrunk},
		{"caller id not the key's", func(h *harness, r *OutboundRequest) {
			h.trunks.outbound.CallerID, r.From = "", "+15559999999"
		}, refusal.CallerIDNotAllowed},
		{"edge block list", func(_ *harness, r *OutboundRequest) { r.To = "+8821234567" }, refusal.DestinationBlocked},
		{"admission", func(h *harness, _ *OutboundRequest) { h.admit.refuse = refusal.SpendCap }, refusal.SpendCap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := outboundHarness(t, "gw1")
			req := OutboundRequest{Key: h.admit.key, To: "+15551230000"}
			tt.setup(h, &req)
			_, err := h.m.Place(context.Background(), req)
			if r, ok := refusal.As(err); !ok || r != tt.want {
				t.Fatalf("Place = %v, want %v", err, tt.want)
			}
			if len(h.carrier.triedHosts()) != 0 || len(h.meter.finished) != 0 {
				t.Fatal("a refused call reached the carrier or billing")
			}
			if h.metrics.refused[0] != tt.want || len(h.audit.entries) != 1 {
				t.Fatalf("metrics %v, audit %v", h.metrics.refused, h.audit.entries)
			}
		})
	}
	// The key's own number passes as caller id when the trunk sets none.
	h := outboundHarness(t, "gw1")
	h.trunks.outbound.CallerID, h.trunks.numbers = "", []string{"+15550100"}
	h.carrier.answers["gw1"] = refuses(486, "Busy Here", "")
	if _, err := h.m.Place(context.Background(), OutboundRequest{Key: h.admit.key, To: "+15551230000", From: "+1 555 0100"}); err != nil {
		t.Fatalf("the key's own number refused: %v", err)
	}
	if cdr := h.meter.cdr(t); cdr.From != "+15550100" {
		t.Fatalf("CDR from %q", cdr.From)
	}
	h.idle(t)
}

// TestOutboundRingTimeoutAndCancel: a callee that rings past the ring
// timeout gives 480 "no answer"; the app hanging up while it rings gives
// 487 "canceled"; both cancel the INVITE (the carrier's ctx ends).
func TestOutboundRingTimeoutAndCancel(t *testing.T) {
	h := outboundHarness(t, "gw1")
	h.carrier.answers["gw1"] = ringsForever
	h.place(t, "+15551230000")
	cdr := h.meter.cdr(t)
	h.idle(t)
	if cdr.FinalCode != 480 || cdr.HangupCause != "no answer" {
		t.Fatalf("ring timeout CDR %+v", cdr)
	}

	// The stream flow: the app is on the line while it rings.
	stream := newFakeStream()
	p, err := h.m.admitOutbound(context.Background(), OutboundRequest{Key: h.admit.key, To: "+15551230000", Options: bridge.Options{Progress: true}})
	if err != nil {
		t.Fatal(err)
	}
	c := h.m.newOutboundCall(p)
	c.stream = stream
	go c.placeOutbound(p, nil)
	deadline := time.Now().Add(5 * time.Second)
	for info, _ := h.m.Get(c.id); info.State != StateRinging; info, _ = h.m.Get(c.id) {
		if time.Now().After(deadline) {
			t.Fatalf("never ringing: %+v", info)
		}
		time.Sleep(time.Millisecond)
	}
	stream.appHangsUp(true)
	cdr = h.meter.cdr(t)
	h.idle(t)
	if cdr.FinalCode != 487 || cdr.HangupCause != "canceled" {
		t.Fatalf("app hang-up while ringing: CDR %+v", cdr)
	}
	if fmt.Sprint(stream.progress) != "[ringing]" {
		t.Fatalf("progress %v", stream.progress)
	}
}

// TestOutboundRevokedWhileRinging: the key revoked during setup ends it
// with the revocation's code, and the app hears 4403.
func TestOutboundRevokedWhileRinging(t *testing.T) {
	h := outboundHarness(t, "gw1")
	ringing := make(chan struct{})
	h.carrier.answers["gw1"] = func(ctx context.Context, r sip.DialRequest) (Dialog, []byte, error) {
		close(ringing)
		return ringsForever(ctx, r)
	}
	h.place(t, "+15551230000")
	<-ringing
	h.admit.last().cancel(refusal.KeyRevoked)
	cdr := h.meter.cdr(t)
	h.idle(t)
	if cdr.FinalCode != 403 || cdr.HangupCause != "key revoked" {
		t.Fatalf("CDR %+v", cdr)
	}
}

// TestTestKeysReachOnlyTheSandbox: a test key's call goes to the sandbox
// even when the key has a trunk with real gateways, and is rated at zero.
func TestTestKeysReachOnlyTheSandbox(t *testing.T) {
	h := outboundHarness(t, "gw1")
	h.admit.key.Mode = keys.Test
	d := newFakeDialog()
	h.carrier.answers["sandbox"] = answers(d)
	h.place(t, "+15005550006")
	h.waitLive(t, 1)
	d.remoteBye()
	cdr := h.meter.cdr(t)
	h.idle(t)
	if fmt.Sprint(h.carrier.triedHosts()) != "[sandbox]" || !cdr.Sandbox || !cdr.TestKey || cdr.RatePerMinute != 0 ||
		cdr.CostMicros != 0 || cdr.TrunkID != "sandbox" {
		t.Fatalf("tried %v, CDR %+v", h.carrier.triedHosts(), cdr)
	}
}

// TestPlaceAppUnreachableAtAnswer: POST /v1/calls dials the app at answer;
// if it is unreachable the callee gets BYE and the CDR says why.
func TestPlaceAppUnreachableAtAnswer(t *testing.T) {
	h := outboundHarness(t, "gw1")
	d := newFakeDialog()
	h.carrier.answers["gw1"] = answers(d)
	h.apps.err = bridge.ErrDial
	h.place(t, "+15551230000")
	cdr := h.meter.cdr(t)
	h.idle(t)
	if cdr.FinalCode != 480 || cdr.HangupCause != "AI application unreachable" {
		t.Fatalf("CDR %+v", cdr)
	}
	if byes := d.sentByes(); len(byes) != 1 || byes[0] != `Q.850;cause=16;text="AI application unreachable"` {
		t.Fatalf("BYEs %q", byes)
	}
}
