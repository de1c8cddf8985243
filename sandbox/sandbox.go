// Package sandbox is the built-in carrier that test keys' outbound calls
// reach instead of a real one: a SIP user agent of its own on a loopback
// port (so the edge's outbound SIP path runs end to end), which rings,
// answers and echoes the call's audio, or fails the way DESIGN's magic
// numbers say. It knows nothing of keys, billing or WebSockets: it is a
// carrier, and the edge dials it like any other.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"trunkgate/sip"
	"trunkgate/trunks"
)

// The magic numbers (DESIGN: Sandbox carrier).
const (
	NumberEcho         = "+15005550006" // rings ~1 s, answers, echoes (any other number too)
	NumberInvalid      = "+15005550001" // 404 Not Found
	NumberBusy         = "+15005550002" // 486 Busy Here
	NumberNoAnswer     = "+15005550003" // rings until the edge gives up
	NumberDecline      = "+15005550004" // 603 Decline
	NumberHangsUp      = "+15005550005" // answers, echoes, hangs up after 5 s
	NumberTone         = "+15005550007" // answers and plays a 1 kHz tone
	NumberUnavailable  = "+15005550008" // 503 on every gateway
	ringFor            = time.Second
	hangUpAfter        = 5 * time.Second
	defaultRTPTimeout  = 60 * time.Second
	maxSandboxDuration = 4 * time.Hour
)

// behaviour is what the sandbox does for a dialled number.
type behaviour struct {
	code   int // final code; 200 answers
	phrase string
	ring   bool // 180 before the final response
	never  bool // ring until canceled
	hangUp time.Duration
	tone   bool
}

func behaviourFor(number string) behaviour {
	n, ok := trunks.NormaliseNumber(number)
	if !ok {
		n = number
	}
	switch n {
	case NumberInvalid:
		return behaviour{code: 404, phrase: "Not Found"}
	case NumberBusy:
		return behaviour{code: 486, phrase: "Busy Here", ring: true}
	case NumberNoAnswer:
		return behaviour{ring: true, never: true}
	case NumberDecline:
		return behaviour{code: 603, phrase: "Decline", ring: true}
	case NumberHangsUp:
		return behaviour{code: 200, ring: true, hangUp: hangUpAfter}
	case NumberTone:
		return behaviour{code: 200, ring: true, tone: true}
	case NumberUnavailable:
		return behaviour{code: 503, phrase: "Service Unavailable"}
	}
	return behaviour{code: 200, ring: true}
}

// Carrier is the sandbox's SIP user agent.
type Carrier struct {
	srv *sip.Server
	ip  netip.Addr
	log *slog.Logger

	calls sync.WaitGroup
}

// Start listens on ip, port 0 (UDP and TCP), and serves until ctx ends.
func Start(ctx context.Context, ip netip.Addr, log *slog.Logger) (*Carrier, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Carrier{ip: ip, log: log.With("component", "sandbox")}
	srv, err := sip.Listen(sip.Config{Addr: net.JoinHostPort(ip.String(), "0"), ContactIP: ip, Handler: c,
		Log: c.log, UserAgent: "trunkgate-sandbox"})
	if err != nil {
		return nil, fmt.Errorf("sandbox carrier: %w", err)
	}
	c.srv = srv
	go srv.Serve(ctx)
	return c, nil
}

// Port is the sandbox's SIP port (UDP and TCP).
func (c *Carrier) Port() int { return c.srv.Port() }

// Trunk is the outbound trunk of test keys: two gateways, UDP and TCP, on
// the sandbox's port, so that a failing number runs through failover.
func (c *Carrier) Trunk() *trunks.Trunk {
	host := c.ip.String()
	gw := func(transport string, prio int) trunks.Gateway {
		return trunks.Gateway{URI: "sip:" + net.JoinHostPort(host, strconv.Itoa(c.Port())) + ";transport=" + transport,
			Host: host, Port: c.Port(), Transport: transport, Priority: prio, Weight: 10}
	}
	return &trunks.Trunk{ID: "sandbox", Name: "sandbox carrier", Direction: trunks.Outbound, Sandbox: true,
		Gateways: []trunks.Gateway{gw("udp", 1), gw("tcp", 2)}}
}

// Wait blocks until every sandbox call has ended.
func (c *Carrier) Wait() { c.calls.Wait() }

// HandleInvite plays the carrier for one call (sip.InviteHandler).
func (c *Carrier) HandleInvite(inv *sip.Invite) {
	c.calls.Add(1)
	defer c.calls.Done()
	b := behaviourFor(inv.CalledUser())
	log := c.log.With("to", inv.CalledUser(), "sip_call_id", inv.CallID())
	offer, err := inv.Offer()
	var neg sip.Negotiated
	if err == nil {
		neg, err = sip.Negotiate(offer, sip.EncryptionOff) // the sandbox echoes packets as they come: plain RTP
	}
	if err != nil {
		_ = inv.Reject(488, "Not Acceptable Here", `SIP;cause=488;text="sandbox speaks PCMU and PCMA"`)
		return
	}
	if b.ring {
		_ = inv.Ringing()
		wait := ringFor
		if b.never {
			wait = maxSandboxDuration
		}
		select {
		case <-time.After(wait):
		case <-inv.Context().Done():
			log.Debug("sandbox: canceled while ringing")
			return
		}
	}
	if b.code != 200 {
		_ = inv.Reject(b.code, b.phrase, fmt.Sprintf("SIP;cause=%d;text=%q", b.code, "sandbox: "+strings.ToLower(b.phrase)))
		return
	}
	m, err := newMedia(c.ip, neg, b.tone)
	if err != nil {
		log.Error("sandbox: no media port", "error", err)
		_ = inv.Reject(503, "Service Unavailable", `SIP;cause=503;text="sandbox out of ports"`)
		return
	}
	defer m.close()
	answer := sip.BuildAnswer(sip.AnswerSpec{SessionID: strconv.FormatInt(time.Now().UnixNano(), 10), Version: 1,
		Addr: c.ip, Port: m.port(), Media: neg})
	dialog, err := inv.Answer(answer, nil)
	if err != nil {
		log.Debug("sandbox: answer not confirmed", "error", err)
		return
	}
	m.run()
	var hangUp <-chan time.Time
	if b.hangUp > 0 {
		t := time.NewTimer(b.hangUp)
		defer t.Stop()
		hangUp = t.C
	}
	limit := time.NewTimer(maxSandboxDuration)
	defer limit.Stop()
	select {
	case <-dialog.Done():
	case <-m.silent():
		log.Info("sandbox: no RTP from the edge; hanging up")
		c.bye(dialog, `Q.850;cause=102;text="sandbox: rtp timeout"`)
	case <-hangUp:
		c.bye(dialog, `Q.850;cause=16;text="sandbox: normal clearing"`)
	case <-limit.C:
		c.bye(dialog, `Q.850;cause=16;text="sandbox: call too long"`)
	}
}

func (c *Carrier) bye(d *sip.Dialog, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Hangup(ctx, reason); err != nil && !errors.Is(err, context.Canceled) {
		c.log.Debug("sandbox: BYE not confirmed", "error", err)
	}
}
