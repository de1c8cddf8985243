package call

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"trunkgate/billing"
	"trunkgate/bridge"
	"trunkgate/keys"
	"trunkgate/metrics"
	"trunkgate/refusal"
	"trunkgate/sip"
)

// Call is one admitted call, inbound or outbound, from admission to its
// CDR. Its parts are set during setup, in this order of need: the stream
// (inbound: dialled; outbound: accepted), the media session, the dialog.
type Call struct {
	m     *Manager
	id    string
	dir   keys.Direction
	lease Lease
	log   *slog.Logger

	// ctx lives while the call is being set up: stop cancels it with the
	// reason, and the setup code gives up with that reason.
	ctx    context.Context
	cancel context.CancelCauseFunc

	stream Stream
	media  Media
	dialog Dialog
	neg    sip.Negotiated
	sdpID  string

	mu         sync.Mutex
	cdr        billing.CDR
	state      string
	gateway    string
	sdpVersion uint64
	held       bool // the carrier holds the call (re-INVITE sendonly or inactive)

	endOnce   sync.Once
	endedWith chan struct{} // closed once the CDR is written
}

// outcome is how a call ended, or why it never got going: one of the
// edge's reasons, or a carrier's final response to an outbound INVITE.
type outcome struct {
	reason refusal.Reason // 0 for a carrier's final response
	code   int            // SIP final code for the CDR and stop.sipCode
	text   string
	side   string // billing.Side*
}

// because is the outcome of one of the edge's reasons.
func because(r refusal.Reason) outcome {
	code, _ := r.SIP()
	side := billing.SideEdge
	switch r {
	case refusal.CallerHangup, refusal.CalleeHangup, refusal.Canceled:
		side = billing.SideCarrier
	case refusal.AppHangup, refusal.AppFailed, refusal.AppNoAudio, refusal.AppUnreachable, refusal.Transferred:
		side = billing.SideApp
	}
	return outcome{reason: r, code: code, text: r.Text(), side: side}
}

// carrierFailed is the outcome of an outbound INVITE the carrier refused.
func carrierFailed(code int, text string) outcome {
	return outcome{code: code, text: text, side: billing.SideCarrier}
}

// streamEnd is how the application hears of the outcome.
func (o outcome) streamEnd(answered bool) bridge.End {
	if o.reason != 0 {
		return bridge.EndFor(o.reason, answered)
	}
	return bridge.End{Reason: o.text, SIPCode: o.code, CloseCode: refusal.CloseCodeForSIP(o.code)}
}

// newCall registers an admitted call.
func (m *Manager) newCall(dir keys.Direction, lease Lease, cdr billing.CDR) *Call {
	ctx, cancel := context.WithCancelCause(context.Background())
	c := &Call{
		m: m, id: cdr.CallID, dir: dir, lease: lease, ctx: ctx, cancel: cancel,
		cdr: cdr, state: StateSetup, endedWith: make(chan struct{}),
		sdpID: fmt.Sprint(time.Now().UnixNano() & 0x7fffffffffff), sdpVersion: 1,
	}
	c.log = m.log.With("call_id", c.id, "key_id", cdr.KeyID, "direction", string(dir))
	// Setup ends early when the edge orders the call to end (revocation,
	// spend cap, an operator, the end of a drain).
	context.AfterFunc(lease.Context(), func() { cancel(context.Cause(lease.Context())) })
	m.register(c)
	m.cfg.Metrics.Admitted(cdr.KeyID, string(dir))
	return c
}

// setupStopped is why setup was told to give up, if it was.
func (c *Call) setupStopped() (refusal.Reason, bool) {
	if c.ctx.Err() == nil {
		return 0, false
	}
	if r, ok := refusal.As(context.Cause(c.ctx)); ok {
		return r, true
	}
	return refusal.Internal, true
}

func (c *Call) setState(s string) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
}

// fail ends a call that was never answered: everything it holds is
// released, and its CDR written with the outcome.
func (c *Call) fail(o outcome) {
	c.endOnce.Do(func() {
		defer close(c.endedWith)
		c.cancel(nil)
		if c.stream != nil {
			c.stream.Close(o.streamEnd(false))
		}
		if c.media != nil {
			c.media.Close()
		}
		c.lease.Release()
		c.mu.Lock()
		c.cdr.FinalCode, c.cdr.HangupSide, c.cdr.HangupCause = o.code, o.side, o.text
		c.cdr.Close(time.Now())
		cdr := c.cdr
		c.mu.Unlock()
		if err := c.m.cfg.Meter.Finish(context.Background(), &cdr); err != nil {
			c.log.Error("CDR write failed", "error", err)
		}
		c.log.Info("call not answered", "final_code", o.code, "cause", o.text)
		c.m.unregister(c)
	})
}

// answered makes the call live: the meter starts, the stream begins, media
// flows, and run watches for its end.
func (c *Call) answered(at time.Time, setup time.Duration) {
	c.lease.Answer(at)
	c.mu.Lock()
	c.cdr.FinalCode = 200
	c.cdr.AnswerMS = at.UnixMilli()
	c.state = StateAnswered
	cdr := c.cdr
	c.mu.Unlock()
	c.m.cfg.Metrics.Answered(setup, cdr.Transport, cdr.MediaEncryption)
	if err := c.m.cfg.Meter.Answer(context.Background(), &cdr); err != nil {
		c.log.Error("live CDR write failed", "error", err)
	}
	c.cancel(nil) // setup is over; an order to end arrives through the lease now
	if c.dialog != nil {
		c.dialog.OnDTMF(c.stream.DTMF)
		c.stream.OnTransfer(c.transfer)
	}
	// The stream first: the media clock calls into it from its first tick.
	c.stream.Begin(c.media, bridge.Leg{SIPTransport: strings.ToLower(cdr.Transport), MediaEncryption: cdr.MediaEncryption})
	c.media.Start()
	c.log.Info("call answered", "setup_ms", float64(setup.Microseconds())/1000, "codec", c.neg.Codec, "ptime", c.neg.PtimeMS)
	go c.run()
}

// run waits for whichever end comes first and tears the call down. A
// panic inside the call ends this call alone, recorded like any other end.
func (c *Call) run() {
	defer func() {
		if v := recover(); v != nil {
			c.log.Error("panic in call; tearing it down", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			c.end(because(refusal.Internal))
		}
	}()
	var limit <-chan time.Time
	if secs := c.lease.Key().Limits.MaxCallSeconds; secs > 0 {
		c.mu.Lock()
		answer := time.UnixMilli(c.cdr.AnswerMS)
		c.mu.Unlock()
		t := time.NewTimer(time.Duration(secs)*time.Second - time.Since(answer))
		defer t.Stop()
		limit = t.C
	}
	var o outcome
	select {
	case <-c.dialog.Done():
		o = because(refusal.CallerHangup)
		if c.dir == keys.Outbound {
			o = because(refusal.CalleeHangup)
		}
	case <-c.stream.Done():
		switch {
		case c.stream.ClosedByApp():
			o = because(refusal.AppHangup)
		case c.stream.NoAudio():
			o = because(refusal.AppNoAudio)
		default:
			o = because(refusal.AppFailed)
		}
	case <-c.media.Done():
		o = because(refusal.RTPTimeout)
	case <-c.lease.Context().Done():
		r, ok := refusal.As(context.Cause(c.lease.Context()))
		if !ok {
			r = refusal.Internal
		}
		o = because(r)
	case <-limit:
		o = because(refusal.MaxDuration)
	}
	c.end(o)
}

// end tears an answered call down: BYE unless the carrier hung up, stop to
// the application, media closed, channel freed, CDR written. It runs once;
// a part that is missing (a panic mid-setup) is skipped.
func (c *Call) end(o outcome) {
	c.endOnce.Do(func() {
		defer close(c.endedWith)
		end := time.Now()
		if c.dialog != nil && o.side != billing.SideCarrier {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			reason := refusal.Internal.ByeReason()
			if o.reason != 0 {
				reason = o.reason.ByeReason()
			}
			if err := c.dialog.Hangup(ctx, reason); err != nil {
				c.log.Warn("BYE not confirmed", "error", err)
			}
			cancel()
		}
		var counters bridge.Counters
		if c.stream != nil {
			c.stream.Close(o.streamEnd(true))
			counters = c.stream.Counters()
		}
		var media billing.Media
		if c.media != nil {
			c.media.Close()
			media = mediaStats(c.media.Stats(), counters.ToApp)
			var toApp metrics.Delays
			if c.stream != nil {
				toApp = c.stream.ToAppLatency()
			}
			c.m.cfg.Metrics.EdgeLatency(toApp, c.media.ToCarrierLatency())
		}
		c.lease.Release()
		c.mu.Lock()
		c.cdr.HangupSide, c.cdr.HangupCause = o.side, o.text
		c.cdr.Media = media
		c.cdr.Close(end)
		cdr := c.cdr
		c.mu.Unlock()
		if err := c.m.cfg.Meter.Finish(context.Background(), &cdr); err != nil {
			c.log.Error("CDR write failed", "error", err)
		}
		c.m.cfg.Metrics.Ended(cdr.KeyID, o.side, time.Duration(cdr.DurationMS)*time.Millisecond,
			counters.FramesOut, counters.FramesDropped, media.PacketsLost)
		c.m.cfg.Metrics.RTP(media.PacketsIn, media.PacketsOut)
		c.log.Info("call ended", "side", o.side, "cause", o.text, "duration_ms", cdr.DurationMS, "billed_seconds", cdr.BilledSeconds,
			"frames_to_app", counters.FramesOut, "frames_from_app", counters.FramesIn,
			"packets_in", media.PacketsIn, "packets_out", media.PacketsOut, "lost", media.PacketsLost)
		c.m.unregister(c) // last: Wait returns once the call is all done
	})
}

func (c *Call) info() Info {
	c.mu.Lock()
	cdr, state, gateway := c.cdr, c.state, c.gateway
	c.mu.Unlock()
	info := Info{
		CallID: c.id, SIPCallID: cdr.SIPCallID, KeyID: cdr.KeyID, TrunkID: cdr.TrunkID, Gateway: gateway,
		Direction: cdr.Direction, State: state, From: cdr.From, To: cdr.To, Codec: cdr.Codec,
		Transport: cdr.Transport, MediaEncryption: cdr.MediaEncryption, SetupAt: time.UnixMilli(cdr.SetupMS).UTC(), Stream: map[string]int{},
	}
	if state != StateAnswered {
		return info
	}
	info.AnswerAt = time.UnixMilli(cdr.AnswerMS).UTC()
	info.DurationMS = time.Since(info.AnswerAt).Milliseconds()
	n := c.stream.Counters()
	info.Media = mediaStats(c.media.Stats(), n.ToApp)
	info.Stream = map[string]int{
		"frames_out": int(n.FramesOut), "frames_dropped": int(n.FramesDropped), "frames_in": int(n.FramesIn),
		"marks": int(n.Marks), "clears": int(n.Clears), "queued_samples": c.media.Queued(), "resumes": int(n.Resumes),
	}
	return info
}
