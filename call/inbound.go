package call

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"trunkgate/billing"
	"trunkgate/bridge"
	"trunkgate/keys"
	"trunkgate/media"
	"trunkgate/refusal"
	"trunkgate/sip"
	"trunkgate/trunks"
)

// HandleInvite runs an inbound call from INVITE to answer, then hands it to
// its own goroutine until it ends.
func (m *Manager) HandleInvite(inv *sip.Invite) {
	called := inv.CalledUser()
	trunk, ok := m.cfg.Trunks.ByNumber(called)
	if !ok {
		if t, ok2 := m.cfg.Trunks.ByNumber(inv.To().User); ok2 {
			trunk, ok = t, true // some PBXs put the number in To only
		}
	}
	if !ok {
		m.refuse(inv, "", refusal.NoTrunk, called)
		return
	}
	if !trunk.AllowsSource(inv.Source().Addr()) {
		m.refuse(inv, trunk.KeyID, refusal.SourceNotAllowed, called)
		return
	}
	if trunk.DigestUser != "" {
		switch res := inv.CheckDigest(trunks.DigestRealm, trunk.DigestUser, trunk.DigestHA1); res {
		case sip.DigestMissing, sip.DigestStale:
			if err := inv.Challenge(trunks.DigestRealm, res == sip.DigestStale); err != nil {
				m.log.Debug("challenge not sent", "error", err)
			}
			m.recordRefusal(inv, trunk.KeyID, refusal.DigestMissing, called)
			return
		case sip.DigestWrong:
			m.refuse(inv, trunk.KeyID, refusal.DigestWrong, called)
			return
		}
	}
	offer, err := inv.Offer()
	if err != nil {
		m.log.Info("INVITE refused: no usable SDP offer", "sip_call_id", inv.CallID(), "error", err)
		_ = inv.NotAcceptable("no usable SDP offer")
		return
	}
	neg, err := sip.Negotiate(offer)
	if err != nil {
		m.log.Info("INVITE refused: no common codec", "sip_call_id", inv.CallID())
		_ = inv.NotAcceptable("no common codec (PCMU, PCMA)")
		return
	}
	lease, err := m.cfg.Admitter.Admit(inv.Context(), keys.Request{KeyID: trunk.KeyID, Direction: keys.Inbound})
	if err != nil {
		if r, ok := refusal.As(err); ok {
			m.refuse(inv, trunk.KeyID, r, called)
			return
		}
		m.log.Error("admission failed", "key_id", trunk.KeyID, "error", err)
		_ = inv.Reject(500, "Server Internal Error", "")
		return
	}
	m.cfg.Metrics.Admitted(trunk.KeyID, string(keys.Inbound))
	m.callStarted()
	_ = inv.Trying()
	m.setup(inv, trunk, lease, neg)
}

func (m *Manager) refuse(inv *sip.Invite, keyID string, r refusal.Reason, called string) {
	if err := inv.Refuse(r); err != nil {
		m.log.Debug("refusal not sent", "error", err)
	}
	m.recordRefusal(inv, keyID, r, called)
}

// recordRefusal counts, audits and logs a refusal already answered.
func (m *Manager) recordRefusal(inv *sip.Invite, keyID string, r refusal.Reason, called string) {
	m.cfg.Metrics.Refused(keyID, r)
	m.cfg.Audit.Record(keys.AuditEntry{
		Actor: "sip", Action: "call.refuse", Target: keyID, Outcome: "denied",
		Detail: fmt.Sprintf("reason=%s number=%s sip_call_id=%s", r.Label(), called, inv.CallID()),
		Source: inv.Source().String(),
	})
	m.log.Info("call refused", "reason", r.Label(), "key_id", keyID, "source", inv.Source().String(), "sip_call_id", inv.CallID())
}

// setup dials the application, opens media and answers. Whatever fails,
// the lease is released and, since the call was admitted, a CDR written.
func (m *Manager) setup(inv *sip.Invite, trunk *trunks.Trunk, lease *keys.Lease, neg sip.Negotiated) {
	called, _ := trunks.NormaliseNumber(inv.CalledUser())
	if called == "" {
		called = inv.CalledUser()
	}
	c := &Call{
		m: m, id: bridge.NewSid("CA"), trunk: trunk, lease: lease, neg: neg, hangup: make(chan string, 1),
		sdpID: fmt.Sprint(time.Now().UnixNano() & 0x7fffffffffff), sdpVersion: 1,
	}
	c.cdr = billing.CDR{
		CallID: c.id, SIPCallID: inv.CallID(), KeyID: trunk.KeyID, TrunkID: trunk.ID, Direction: string(keys.Inbound),
		From: inv.From().User, To: called, TestKey: lease.Key.Mode == keys.Test, SetupMS: inv.Received().UnixMilli(),
		Codec: neg.Codec,
	}
	if !c.cdr.TestKey {
		c.cdr.RatePerMinute = lease.Key.Limits.RatePerMinute
	}
	log := m.log.With("call_id", c.id, "sip_call_id", inv.CallID(), "key_id", trunk.KeyID)
	// Setup ends early if the caller cancels, the key is revoked or hits
	// its spend cap (the lease), or the edge drains (HangupAll).
	ctx, cancel := context.WithCancelCause(inv.Context())
	stopWatch := context.AfterFunc(lease.Context(), func() { cancel(context.Cause(lease.Context())) })
	m.beginSetup(c, cancel)
	defer func() {
		stopWatch()
		m.endSetup(c)
		cancel(nil)
	}()
	fail := func(code int, side, cause string) {
		lease.Release()
		c.cdr.FinalCode, c.cdr.HangupSide, c.cdr.HangupCause = code, side, cause
		c.cdr.Close(time.Now())
		if err := m.cfg.Meter.Finish(context.Background(), &c.cdr); err != nil {
			log.Error("CDR write failed", "error", err)
		}
		log.Info("call not answered", "final_code", code, "cause", cause)
		m.callDone()
	}
	// stopped answers a setup cut short and reports whether it was.
	stopped := func() bool {
		cause := context.Cause(ctx)
		switch r, isRefusal := refusal.As(cause); {
		case ctx.Err() == nil:
			return false
		case errors.Is(cause, sip.ErrCanceled):
			fail(487, billing.SideCarrier, "canceled") // sipgo answered 487
		case isRefusal:
			_ = inv.Refuse(r)
			m.cfg.Metrics.Refused(trunk.KeyID, r)
			code, _ := r.SIP()
			fail(code, billing.SideEdge, r.Text())
		default:
			fail(500, billing.SideEdge, "setup stopped")
		}
		return true
	}

	stream, err := bridge.Dial(ctx, bridge.DialConfig{
		URL: trunk.AIURL, SigningSecret: lease.Key.SigningSecret, Timeout: m.cfg.DialTimeout, Log: log,
		Format: bridge.Format{Kind: trunk.Format, SampleRate: trunk.SampleRate},
		Start: bridge.Start{
			CallSid: c.id, AccountSid: bridge.AccountSid(trunk.KeyID), StreamSid: bridge.NewSid("MZ"),
			From: c.cdr.From, To: called, Direction: string(keys.Inbound), KeyID: trunk.KeyID, TrunkID: trunk.ID,
			Params: trunk.Params,
		},
	})
	if err != nil {
		if stopped() {
			return
		}
		log.Warn("AI application unreachable", "url", trunk.AIURL, "error", err)
		_ = inv.Reject(480, "Temporarily Unavailable", `SIP;cause=480;text="AI application unreachable"`)
		fail(480, billing.SideApp, "app unreachable")
		return
	}
	c.stream = stream
	sess, err := m.cfg.Media.NewSession(media.Config{
		Codec: media.Codec{Name: neg.Codec, PayloadType: neg.PayloadType}, PtimeMS: neg.PtimeMS,
		DTMFPayloadType: neg.DTMFType, Remote: neg.Remote, RemoteRTCP: neg.RemoteRTCP,
		RTPTimeout: m.cfg.RTPTimeout, Listener: stream, Log: log,
	})
	if err != nil {
		stream.Close("no media ports")
		log.Error("no RTP ports", "error", err)
		_ = inv.Refuse(refusal.Overloaded)
		m.cfg.Metrics.Refused(trunk.KeyID, refusal.Overloaded)
		fail(503, billing.SideEdge, "no media ports")
		return
	}
	c.media = sess
	sess.SetDirection(direction(neg))
	answer := sip.BuildAnswer(sip.AnswerSpec{SessionID: c.sdpID, Version: 1, Addr: m.cfg.MediaIP, Port: sess.LocalPort(), Media: neg})

	if stopped() {
		sess.Close()
		stream.Close("call not answered")
		return
	}
	answeredAt := time.Now()
	dialog, err := inv.Answer(answer, c.reinvite)
	if err != nil {
		sess.Close()
		stream.Close("call not answered")
		switch {
		case errors.Is(err, sip.ErrCanceled), errors.Is(context.Cause(inv.Context()), sip.ErrCanceled):
			fail(487, billing.SideCarrier, "canceled")
		case errors.Is(err, sip.ErrNoAck):
			fail(200, billing.SideEdge, "no ACK")
		default:
			log.Warn("answer failed", "error", err)
			fail(500, billing.SideEdge, "answer failed")
		}
		return
	}
	c.dialog = dialog
	dialog.OnDTMF(stream.DTMF)
	c.cdr.FinalCode = 200
	c.cdr.AnswerMS = answeredAt.UnixMilli()
	setup := answeredAt.Sub(inv.Received())
	m.cfg.Metrics.Answered(setup)
	if err := m.cfg.Meter.Answer(context.Background(), &c.cdr); err != nil {
		log.Error("live CDR write failed", "error", err)
	}
	// The stream first: the media clock calls into it from its first tick.
	stream.Begin(sess)
	sess.Start()
	m.mu.Lock()
	m.live[c.id] = c
	m.mu.Unlock()
	log.Info("call answered", "setup_ms", float64(setup.Microseconds())/1000, "codec", neg.Codec, "ptime", neg.PtimeMS,
		"trunk_id", trunk.ID, "transport", inv.Transport())
	go c.run(log)
}

func direction(n sip.Negotiated) media.Direction {
	d := media.SendRecv
	switch n.Direction {
	case "sendonly":
		d = media.SendOnly
	case "recvonly":
		d = media.RecvOnly
	case "inactive":
		d = media.Inactive
	}
	// RFC 2543 hold: c=0.0.0.0 means "do not send to me".
	if n.Remote.IsValid() && n.Remote.Addr().IsUnspecified() {
		switch d {
		case media.SendRecv:
			d = media.RecvOnly
		case media.SendOnly:
			d = media.Inactive
		}
	}
	return d
}

// reinvite answers an in-dialog offer: hold, unhold, a new address, or a
// session refresh. The codec stays the one negotiated at setup.
func (c *Call) reinvite(offer *sip.SDP) ([]byte, error) {
	neg, err := sip.NegotiateKeeping(offer, c.neg)
	if err != nil {
		return nil, err
	}
	c.media.SetRemote(neg.Remote, neg.RemoteRTCP)
	c.media.SetPayloadTypes(neg.PayloadType, neg.DTMFType)
	c.media.SetDirection(direction(neg))
	// The packetisation we send stays the one set up: ptime is advice
	// (RFC 4566), and the playout clock keeps its schedule.
	neg.PtimeMS = c.neg.PtimeMS
	c.mu.Lock()
	c.sdpVersion++
	version := c.sdpVersion
	c.mu.Unlock()
	return sip.BuildAnswer(sip.AnswerSpec{SessionID: c.sdpID, Version: version, Addr: c.m.cfg.MediaIP,
		Port: c.media.LocalPort(), Media: neg}), nil
}

// run waits for whichever end comes first and tears the call down.
func (c *Call) run(log *slog.Logger) {
	defer c.m.callDone()
	defer func() {
		// A bug in one call must not end every other call in the process:
		// log it and release what the call holds.
		if v := recover(); v != nil {
			log.Error("panic in call; tearing it down", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			c.stream.Close("internal error")
			c.media.Close()
			c.lease.Release()
			c.m.mu.Lock()
			delete(c.m.live, c.id)
			c.m.mu.Unlock()
		}
	}()
	var limit <-chan time.Time
	if secs := c.lease.Key.Limits.MaxCallSeconds; secs > 0 {
		t := time.NewTimer(time.Duration(secs)*time.Second - time.Since(time.UnixMilli(c.cdr.AnswerMS)))
		defer t.Stop()
		limit = t.C
	}
	var side, cause string
	select {
	case <-c.dialog.Done():
		side, cause = billing.SideCarrier, "caller hung up"
	case <-c.stream.Done():
		side, cause = billing.SideApp, "app closed the stream"
		if !c.stream.ClosedByApp() {
			cause = "app stream failed"
		}
	case <-c.media.Done():
		side, cause = billing.SideEdge, c.media.Err().Error()
	case <-c.lease.Done():
		side, cause = billing.SideEdge, "key limit"
		if r, ok := refusal.As(c.lease.Cause()); ok {
			cause = r.Text()
		}
	case <-limit:
		side, cause = billing.SideEdge, "max call duration"
	case reason := <-c.hangup:
		side, cause = billing.SideEdge, reason
	}
	end := time.Now()
	if side != billing.SideCarrier {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.dialog.Hangup(ctx, byeReason(cause)); err != nil {
			log.Warn("BYE not confirmed", "error", err)
		}
		cancel()
	}
	c.stream.Close(cause)
	c.media.Close()
	c.lease.Release()

	st := c.media.Stats()
	c.mu.Lock()
	c.cdr.HangupSide, c.cdr.HangupCause = side, cause
	c.cdr.Media = mediaStats(st)
	c.cdr.Close(end)
	cdr := c.cdr
	c.mu.Unlock()
	if err := c.m.cfg.Meter.Finish(context.Background(), &cdr); err != nil {
		log.Error("CDR write failed", "error", err)
	}
	c.m.mu.Lock()
	delete(c.m.live, c.id)
	c.m.mu.Unlock()
	c.m.cfg.Metrics.Ended(cdr.KeyID, side, time.Duration(cdr.DurationMS)*time.Millisecond,
		c.stream.Stats.FramesOut.Load(), c.stream.Stats.FramesDropped.Load(), st.PacketsLost)
	log.Info("call ended", "side", side, "cause", cause, "duration_ms", cdr.DurationMS, "billed_seconds", cdr.BilledSeconds,
		"frames_to_app", c.stream.Stats.FramesOut.Load(), "frames_from_app", c.stream.Stats.FramesIn.Load(),
		"packets_in", st.PacketsIn, "packets_out", st.PacketsOut, "lost", st.PacketsLost)
}
