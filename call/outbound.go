package call

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"trunkgate/billing"
	"trunkgate/bridge"
	"trunkgate/internal/e164"
	"trunkgate/keys"
	"trunkgate/media"
	"trunkgate/refusal"
	"trunkgate/sip"
	"trunkgate/trunks"
)

// Carrier places outbound INVITEs (sip.Server, through Carriers).
type Carrier interface {
	Dial(ctx context.Context, req sip.DialRequest) (Dialog, []byte, error)
}

// FirstResponseTimeout is how long a gateway may stay silent before the
// next one is tried (DESIGN: 3 s for the first provisional response).
const FirstResponseTimeout = 3 * time.Second

// OutboundRequest is an application's request to place a call, from the
// stream endpoint (the application is on the line already) or from
// POST /v1/calls (the edge dials AIURL when the callee answers).
type OutboundRequest struct {
	Key     *keys.Key // authenticated
	To      string
	From    string
	TrunkID string
	Format  bridge.Format
	// Options are the stream's opt-ins: progress=1, extensions=1.
	Options bridge.Options
	// Headers are added to the INVITE (validated by
	// trunks.ValidAppHeaders); the trunk's own headers win a clash.
	Headers map[string]string
	// AIURL and Params: POST /v1/calls only.
	AIURL  string
	Params map[string]string
	// Source is the application's address, for the audit log.
	Source string
}

// placement is an admitted outbound call before its stream exists.
type placement struct {
	req    OutboundRequest
	trunk  *trunks.Trunk
	to     string
	from   string // the caller id presented
	lease  Lease
	callID string
}

// admitOutbound runs every check of an outbound call — numbers, trunk,
// caller id, the edge's block list, then the key's admission — and
// refuses with a refusal.Reason before anything reaches a carrier.
func (m *Manager) admitOutbound(ctx context.Context, req OutboundRequest) (*placement, error) {
	key := req.Key
	refuse := func(r refusal.Reason, detail string) (*placement, error) {
		m.refused(key.ID, r, req.Source, detail)
		if r != refusal.InvalidNumber {
			to, _ := trunks.NormaliseNumber(req.To)
			m.attempted(key.ID, keys.Outbound, to, r)
		}
		return nil, r
	}
	if m.cfg.Carrier == nil {
		return refuse(refusal.Overloaded, "no SIP user agent")
	}
	to, ok := trunks.NormaliseNumber(req.To)
	if !ok {
		return refuse(refusal.InvalidNumber, fmt.Sprintf("to=%q", keys.Redact(req.To)))
	}
	from := ""
	if req.From != "" {
		if from, ok = trunks.NormaliseNumber(req.From); !ok {
			return refuse(refusal.InvalidNumber, fmt.Sprintf("from=%q", keys.Redact(req.From)))
		}
	}
	trunk, ok := m.cfg.Trunks.Outbound(key.ID, req.TrunkID)
	switch {
	case key.Mode == keys.Test && m.cfg.Sandbox == nil:
		return refuse(refusal.Overloaded, "no sandbox carrier")
	case key.Mode == keys.Test:
		// Test keys never reach a carrier, whatever their trunks say.
		sandbox := *m.cfg.Sandbox
		if ok {
			sandbox.RingTimeoutSeconds, sandbox.Headers = trunk.RingTimeoutSeconds, trunk.Headers
		}
		trunk = &sandbox
		if from == "" {
			from = "+15005550000"
		}
	case !ok:
		return refuse(refusal.NoOutboundTrunk, "trunk="+req.TrunkID)
	case trunk.CallerID != "":
		from = trunk.CallerID
	case from == "":
		return refuse(refusal.InvalidNumber, "from missing and the trunk has no caller_id")
	case !slices.Contains(m.cfg.Trunks.Numbers(key.ID), from):
		return refuse(refusal.CallerIDNotAllowed, "from="+from)
	}
	for _, p := range m.cfg.BlockedPrefixes {
		if strings.HasPrefix(to, p) {
			return refuse(refusal.DestinationBlocked, "to="+to+" edge block list "+p)
		}
	}
	callID := bridge.NewSid("CA")
	lease, err := m.cfg.Admitter.Admit(ctx, keys.Request{CallID: callID, KeyID: key.ID, Direction: keys.Outbound,
		Destination: to, TrunkID: trunk.ID, TrunkChannels: trunk.MaxChannels})
	if err != nil {
		r, isRefusal := refusal.As(err)
		if !isRefusal {
			m.log.Error("admission failed", "key_id", key.ID, "error", err)
			r = refusal.Internal
		}
		return refuse(r, "to="+to)
	}
	m.attempted(key.ID, keys.Outbound, to, 0)
	return &placement{req: req, trunk: trunk, to: to, from: from, lease: lease, callID: callID}, nil
}

// ErrNotWebSocket is returned for a stream request that is not a
// WebSocket upgrade (REST answers 426).
var ErrNotWebSocket = errors.New("not a WebSocket upgrade request")

// PlaceStream places an outbound call for the application whose request
// r is: every check runs first, and a refusal comes back as a
// refusal.Reason with nothing written to w, so that the caller answers the
// HTTP status of DESIGN's table and no INVITE leaves. Once admitted, the
// request is upgraded to the call's WebSocket (connected at once), and the
// edge dials the trunk's gateways; start follows the answer.
func (m *Manager) PlaceStream(w http.ResponseWriter, r *http.Request, req OutboundRequest) error {
	p, err := m.admitOutbound(r.Context(), req)
	if err != nil {
		return err
	}
	c := m.newOutboundCall(p)
	stream, err := bridge.Accept(w, r, bridge.AcceptConfig{Format: req.Format, Options: m.streamOptions(req.Options),
		Start: c.start(p), Log: c.log})
	if err != nil {
		c.log.Info("stream upgrade failed", "error", err)
		c.fail(because(refusal.AppFailed))
		return fmt.Errorf("%w: %w", ErrNotWebSocket, err)
	}
	c.stream = stream
	go c.placeOutbound(p, nil)
	return nil
}

// ResumeStream carries an outbound call's stream on over the request r of
// the application that placed it (GET /v1/calls/stream?resume=streamSid):
// a refusal.Reason with nothing written when key has no such stream that
// can be resumed (it ended, it has no grace window, it is not answered).
func (m *Manager) ResumeStream(w http.ResponseWriter, r *http.Request, key *keys.Key, streamSid string) error {
	for _, c := range m.snapshot() {
		c.mu.Lock()
		answered := c.state == StateAnswered // and so c.stream is set
		c.mu.Unlock()
		if !answered || c.dir != keys.Outbound || c.lease.Key().ID != key.ID || c.stream.StreamSid() != streamSid {
			continue
		}
		err := c.stream.ResumeOn(w, r)
		if errors.Is(err, bridge.ErrNotResumable) {
			return refusal.NoStream
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNotWebSocket, err)
		}
		return nil
	}
	return refusal.NoStream
}

// Place places an outbound call from POST /v1/calls: it returns at once
// with the call's id; when the callee answers, the edge dials the
// request's AIURL (signed, as for inbound calls).
func (m *Manager) Place(ctx context.Context, req OutboundRequest) (string, error) {
	p, err := m.admitOutbound(ctx, req)
	if err != nil {
		return "", err
	}
	c := m.newOutboundCall(p)
	go c.placeOutbound(p, &lateListener{})
	return c.id, nil
}

func (m *Manager) newOutboundCall(p *placement) *Call {
	key := p.lease.Key()
	cdr := billing.CDR{
		CallID: p.callID, KeyID: key.ID, TrunkID: p.trunk.ID, Direction: string(keys.Outbound),
		From: p.from, To: p.to, TestKey: key.Mode == keys.Test, Sandbox: p.trunk.Sandbox, SetupMS: time.Now().UnixMilli(),
		RatePerMinute: p.lease.RatePerMinute(), RatePrefix: p.lease.RatePrefix(), Country: e164.CountryCode(p.to),
	}
	return m.newCall(keys.Outbound, p.lease, cdr)
}

func (c *Call) start(p *placement) bridge.Start {
	return bridge.Start{CallSid: c.id, AccountSid: bridge.AccountSid(p.req.Key.ID), StreamSid: bridge.NewSid("MZ"),
		From: p.from, To: p.to, Direction: string(keys.Outbound), KeyID: p.req.Key.ID, TrunkID: p.trunk.ID, Params: p.req.Params}
}

// placeOutbound opens media, dials the gateways and, on answer, makes the
// call live. late is set for POST /v1/calls: the application is dialled
// at answer, and media reaches it through late.
func (c *Call) placeOutbound(p *placement, late *lateListener) {
	defer c.recoverSetup()
	m := c.m
	if c.stream != nil {
		// The application hanging up before the answer cancels the call.
		stream := c.stream
		go func() {
			select {
			case <-stream.Done():
				c.cancel(refusal.Canceled)
			case <-c.ctx.Done():
			}
		}()
	}
	var listener media.Listener = c.stream
	if late != nil {
		listener = late
	}
	sess, err := m.cfg.Media.NewSession(media.Config{Codec: media.PCMU, PtimeMS: 20, RTPTimeout: m.cfg.RTPTimeout,
		Listener: listener, Log: c.log})
	if err != nil {
		c.log.Error("no RTP ports", "error", err)
		c.fail(because(refusal.Overloaded))
		return
	}
	c.media = sess
	keys, err := offerKeys(p.trunk)
	if err != nil {
		c.log.Error("SRTP keys", "error", err)
		c.fail(because(refusal.Internal))
		return
	}
	spec := sip.OfferSpec{SessionID: c.sdpID, Version: 1, Addr: m.cfg.MediaIP, Port: sess.LocalPort(), Crypto: keys,
		Wideband: p.req.Format.Wideband()}
	offer := sip.BuildOffer(spec)
	dialled := time.Now()
	dialog, answer, o := c.dialGateways(p, offer)
	if dialog == nil {
		c.fail(o)
		return
	}
	c.dialog = dialog
	answeredAt := time.Now()
	if r := c.takeAnswer(answer, spec); r != 0 {
		c.log.Warn("carrier answer unusable; hanging up", "reason", r.Text())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = dialog.Hangup(ctx, r.ByeReason())
		cancel()
		c.fail(because(r))
		return
	}
	if late != nil {
		stream, err := m.cfg.Apps.Dial(context.Background(), bridge.DialConfig{URL: p.req.AIURL,
			SigningSecret: p.lease.Key().SigningSecret, Timeout: m.cfg.DialTimeout, Log: c.log, Format: p.req.Format,
			Options: m.streamOptions(p.req.Options), Start: c.start(p)})
		if err != nil {
			c.log.Warn("AI application unreachable", "url", p.req.AIURL, "error", err)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = dialog.Hangup(ctx, refusal.AppUnreachable.ByeReason())
			cancel()
			c.fail(because(refusal.AppUnreachable))
			return
		}
		c.mu.Lock() // a re-INVITE may look for it already
		c.stream = stream
		c.mu.Unlock()
		late.set(stream)
	}
	c.answered(answeredAt, answeredAt.Sub(dialled))
}

// takeAnswer applies the carrier's SDP answer to the media session:
// SRTP with one of the offered keys when the edge offered SRTP.
func (c *Call) takeAnswer(body []byte, offer sip.OfferSpec) refusal.Reason {
	sdp, err := sip.ParseSDP(body)
	if err != nil {
		return refusal.NoCommonCodec
	}
	neg, err := sip.NegotiateAnswer(sdp, offer)
	if err != nil {
		c.log.Info("carrier answer refused", "error", err)
		if errors.Is(err, sip.ErrBadCrypto) {
			return refusal.SRTPRequired
		}
		return offerRefusal(err)
	}
	srtp, err := srtpFor(neg)
	if err != nil {
		c.log.Error("SRTP setup failed", "error", err)
		return refusal.Internal
	}
	if srtp != nil {
		c.media.SetSRTP(srtp)
	}
	c.neg = neg
	c.media.SetCodec(media.Codec{Name: neg.Codec, PayloadType: neg.PayloadType}, neg.PtimeMS)
	c.media.SetPayloadTypes(neg.PayloadType, neg.DTMFType)
	c.media.SetRemote(neg.Remote, neg.RemoteRTCP)
	c.media.SetDirection(direction(neg))
	c.mu.Lock()
	c.cdr.Codec = neg.Codec
	c.cdr.MediaEncryption = protection(neg)
	c.mu.Unlock()
	return 0
}

// dialGateways tries the trunk's gateways in order (priority, weight;
// gateways marked down last) until one answers or a final answer says
// something about the callee. It fails over on no response within the
// gateway timeout, 408, 5xx and transport errors, and on a carrier's
// channel-limit refusal (without counting it against the gateway); never
// on 404, 486, 600, 603 or any other answer about the callee.
func (c *Call) dialGateways(p *placement, offer []byte) (Dialog, []byte, outcome) {
	m := c.m
	order := trunks.Order(p.trunk.Gateways, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
	health := m.cfg.Gateways
	if p.trunk.Sandbox {
		health = nil // the sandbox fails on purpose
	}
	if health != nil {
		order = health.Arrange(order)
	}
	headers := make([]sip.Header, 0, len(p.trunk.Headers)+len(p.req.Headers))
	for k, v := range p.trunk.Headers {
		headers = append(headers, sip.Header{Name: k, Value: v})
	}
	for k, v := range p.req.Headers {
		if !slices.ContainsFunc(headers, func(h sip.Header) bool { return strings.EqualFold(h.Name, k) }) {
			headers = append(headers, sip.Header{Name: k, Value: v})
		}
	}
	for _, gw := range order {
		c.mu.Lock()
		c.gateway = gw.URI
		c.cdr.Gateway = gw.URI
		c.cdr.Transport = strings.ToUpper(gw.Transport)
		c.mu.Unlock()
		ctx, cancel := context.WithTimeoutCause(c.ctx, p.trunk.RingTimeout(m.cfg.RingTimeout), refusal.NoAnswer)
		callID := sip.NewCallID()
		c.mu.Lock()
		c.cdr.SIPCallID = callID
		c.mu.Unlock()
		dialog, answer, err := m.cfg.Carrier.Dial(ctx, sip.DialRequest{
			Target: sip.Target{Host: gw.Host, Port: gw.Port, Transport: gw.Transport}, CallID: callID,
			To: p.to, From: p.from, SDP: offer, Headers: headers, Username: p.trunk.AuthUser, Password: p.trunk.AuthPassword,
			FirstResponse: m.cfg.GatewayTimeout, OnProgress: c.progress, OnReinvite: c.reinvite,
		})
		stopped := context.Cause(ctx)
		cancel()
		var fe *sip.FinalError
		switch {
		case err == nil:
			if health != nil {
				health.Succeeded(gw)
			}
			c.log = c.log.With("sip_call_id", callID)
			return dialog, answer, outcome{}
		case stopped != nil:
			r, ok := refusal.As(stopped)
			if !ok {
				r = refusal.Canceled
			}
			return nil, nil, because(r)
		case errors.As(err, &fe):
			if fe.Code == 408 || fe.Code >= 500 && fe.Code < 600 || channelLimit(fe) {
				c.log.Info("gateway failed; trying the next", "gateway", gw.URI, "code", fe.Code, "reason", fe.Text())
				if health != nil && !channelLimit(fe) {
					health.Failed(gw)
				}
				continue
			}
			return nil, nil, carrierFailed(fe.Code, fe.Text())
		default:
			c.log.Info("gateway failed; trying the next", "gateway", gw.URI, "error", err)
			if health != nil {
				health.Failed(gw)
			}
		}
	}
	return nil, nil, because(refusal.NoGateway)
}

// channelLimit recognises a carrier refusing for its own channel or call
// limit (a 403 or 503 with Q.850 cause 34 or 47, or a reason that says
// so): the call may go through another gateway, and the gateway is well.
func channelLimit(fe *sip.FinalError) bool {
	if fe.Code != 403 && fe.Code != 503 {
		return false
	}
	if proto, cause, _ := fe.ReasonCause(); strings.EqualFold(proto, "Q.850") && (cause == 34 || cause == 47) {
		return true
	}
	text := strings.ToLower(fe.Text())
	return strings.Contains(text, "limit") || strings.Contains(text, "capacity")
}

// progress reports 180/183 to the application (when it opted in).
func (c *Call) progress(code int, sdp []byte) {
	c.setState(StateRinging)
	if c.stream == nil {
		return
	}
	status := "ringing"
	if code == 183 || len(sdp) > 0 {
		status = "early_media"
	}
	c.stream.Progress(status, code)
}

// lateListener stands in for the stream of a call whose application is
// dialled only at answer (POST /v1/calls): media drops audio until set.
type lateListener struct {
	s atomic.Pointer[streamRef]
}

type streamRef struct{ s Stream }

func (l *lateListener) set(s Stream) { l.s.Store(&streamRef{s: s}) }

func (l *lateListener) Audio(pcm []int16, frame int64, arrived time.Time) {
	if r := l.s.Load(); r != nil {
		r.s.Audio(pcm, frame, arrived)
	}
}

func (l *lateListener) DTMF(digit byte) {
	if r := l.s.Load(); r != nil {
		r.s.DTMF(digit)
	}
}

func (l *lateListener) MarkDone(name string, cleared bool) {
	if r := l.s.Load(); r != nil {
		r.s.MarkDone(name, cleared)
	}
}

// streamOptions are a stream's options: the trunk's or the application's
// opt-ins, and the edge's pings, stats interval and first-audio deadline.
func (m *Manager) streamOptions(o bridge.Options) bridge.Options {
	o.Ping, o.StatsEvery, o.FirstAudio, o.HoldTone = m.cfg.AppPing, m.cfg.StatsEvery, m.cfg.FirstAudio, m.cfg.ResumeHoldTone
	return o
}
