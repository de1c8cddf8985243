package sip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"trunkgate/refusal"
)

// ErrCanceled is the cause of an Invite's context when the caller sent
// CANCEL (sipgo has already answered 487).
var ErrCanceled = errors.New("canceled by the caller")

// ErrNoAck means the caller never acknowledged the 200 OK.
var ErrNoAck = errors.New("no ACK for 200 OK")

// ErrFinal is returned when a final response was already sent.
var ErrFinal = errors.New("INVITE already has a final response")

// Party is a From or To identity.
type Party struct {
	Display string
	User    string
	Host    string
}

// Invite is a new incoming call waiting for the handler's decision.
type Invite struct {
	srv      *Server
	req      *gosip.Request
	tx       gosip.ServerTransaction
	localTag string
	received time.Time
	ctx      context.Context
	cancel   context.CancelCauseFunc

	offer    *SDP
	offerErr error

	mu       sync.Mutex
	final    int
	answered bool
}

func newInvite(s *Server, req *gosip.Request, tx gosip.ServerTransaction) (*Invite, error) {
	switch {
	case req.CallID() == nil:
		return nil, errors.New("no Call-ID")
	case req.From() == nil || !req.From().Params.Has("tag"):
		return nil, errors.New("no From tag")
	case req.To() == nil:
		return nil, errors.New("no To")
	case req.Contact() == nil:
		return nil, errors.New("no Contact")
	case req.CSeq() == nil:
		return nil, errors.New("no CSeq")
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	inv := &Invite{srv: s, req: req, tx: tx, localTag: gosip.GenerateTagN(16), received: time.Now(), ctx: ctx, cancel: cancel}
	// sipgo calls these inside its transaction state machine: only cancel
	// the context here, never touch the transaction.
	if !tx.OnCancel(func(*gosip.Request) { cancel(ErrCanceled) }) {
		cancel(ErrCanceled)
	}
	tx.OnTerminate(func(string, error) { cancel(context.Canceled) })
	if body := req.Body(); len(body) > 0 {
		inv.offer, inv.offerErr = ParseSDP(body)
	} else {
		inv.offerErr = errors.New("INVITE without SDP offer")
	}
	return inv, nil
}

// finish makes sure the transaction got a final response, unless the
// handler dropped the INVITE.
func (inv *Invite) finish() {
	inv.mu.Lock()
	final := inv.final
	inv.mu.Unlock()
	if final == 0 && inv.ctx.Err() == nil {
		_ = inv.Reject(500, "Server Internal Error", "")
	}
}

// dropped is the final code of an INVITE that gets no answer at all.
const dropped = -1

// Drop leaves the INVITE unanswered: the edge does not even say it is
// there (the answer to a source no trunk allows, when the operator wants
// silence). No 100 Trying goes out either.
func (inv *Invite) Drop() {
	inv.mu.Lock()
	if inv.final == 0 {
		inv.final = dropped
	}
	inv.mu.Unlock()
	inv.tx.Terminate()
}

// Context is cancelled when the caller gives up (CANCEL) or the
// transaction dies before an answer.
func (inv *Invite) Context() context.Context { return inv.ctx }

// CallID is the SIP Call-ID.
func (inv *Invite) CallID() string { return inv.req.CallID().Value() }

// Received is when the INVITE arrived.
func (inv *Invite) Received() time.Time { return inv.received }

// Source is the address the INVITE came from.
func (inv *Invite) Source() netip.AddrPort {
	ap, err := netip.ParseAddrPort(inv.req.Source())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Transport is "UDP", "TCP" or "TLS".
func (inv *Invite) Transport() string { return strings.ToUpper(inv.req.Transport()) }

// CalledUser is the user part of the Request-URI: the dialled number.
func (inv *Invite) CalledUser() string { return inv.req.Recipient.User }

// From is the caller.
func (inv *Invite) From() Party {
	f := inv.req.From()
	return Party{Display: f.DisplayName, User: f.Address.User, Host: f.Address.Host}
}

// To is the callee as the caller addressed it.
func (inv *Invite) To() Party {
	t := inv.req.To()
	return Party{Display: t.DisplayName, User: t.Address.User, Host: t.Address.Host}
}

// Header returns the first value of a header, or "".
func (inv *Invite) Header(name string) string {
	if h := inv.req.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

// Offer is the parsed SDP offer, or why there is none.
func (inv *Invite) Offer() (*SDP, error) { return inv.offer, inv.offerErr }

func (inv *Invite) response(code int, phrase string, body []byte) *gosip.Response {
	res := gosip.NewResponseFromRequest(inv.req, code, phrase, body)
	if code > 100 {
		if to := res.To(); to != nil {
			to.Params.Add("tag", inv.localTag)
		}
	}
	inv.srv.identify(res, "Server")
	return res
}

// Trying sends 100 Trying.
func (inv *Invite) Trying() error {
	return inv.srv.respond(inv.tx, inv.response(100, "Trying", nil))
}

// Ringing sends 180 Ringing.
func (inv *Invite) Ringing() error {
	res := inv.response(180, "Ringing", nil)
	res.AppendHeader(inv.srv.contact(inv.Transport()))
	return inv.srv.respond(inv.tx, res)
}

func (inv *Invite) claimFinal(code int) error {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.final != 0 {
		return ErrFinal
	}
	if inv.ctx.Err() != nil {
		return context.Cause(inv.ctx)
	}
	inv.final = code
	return nil
}

// FinalCode is the final response code sent (487 after CANCEL), 0 if none.
func (inv *Invite) FinalCode() int {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.final == 0 && errors.Is(context.Cause(inv.ctx), ErrCanceled) {
		return 487
	}
	return inv.final
}

// Reject sends a final error response with an optional Reason header value.
func (inv *Invite) Reject(code int, phrase, reason string, extra ...gosip.Header) error {
	if code < 300 || code > 699 {
		return fmt.Errorf("reject with %d: not an error code", code)
	}
	if err := inv.claimFinal(code); err != nil {
		return err
	}
	res := inv.response(code, phrase, nil)
	if reason != "" {
		res.AppendHeader(gosip.NewHeader("Reason", reason))
	}
	for _, h := range extra {
		res.AppendHeader(h)
	}
	return inv.srv.respond(inv.tx, res)
}

// Refuse rejects the call for a refusal reason, with the code, Reason
// header and Retry-After of DESIGN.md's table (and, for 488, the Warning
// RFC 3261 §21.4.26 asks for).
func (inv *Invite) Refuse(r refusal.Reason) error {
	code, phrase := r.SIP()
	var extra []gosip.Header
	if ra := r.SIPRetryAfter(); ra > 0 {
		extra = append(extra, gosip.NewHeader("Retry-After", strconv.Itoa(ra)))
	}
	if code == 488 {
		extra = append(extra, gosip.NewHeader("Warning", `304 trunkgate "Media type not available"`))
	}
	return inv.Reject(code, phrase, r.ReasonHeader(), extra...)
}

// Answer sends 200 OK with the SDP answer and waits for the ACK. It
// returns the established dialog. onReinvite answers the dialog's later
// offers (hold, unhold, refresh); with nil they get the last SDP back.
func (inv *Invite) Answer(sdp []byte, onReinvite ReinviteFunc) (*Dialog, error) {
	if err := inv.claimFinal(200); err != nil {
		return nil, err
	}
	res := inv.response(200, "OK", sdp)
	res.AppendHeader(gosip.NewHeader("Content-Type", "application/sdp"))
	res.AppendHeader(inv.srv.contact(inv.Transport()))
	res.AppendHeader(gosip.NewHeader("Allow", allowMethods))
	d := newUASDialog(inv, res, sdp, onReinvite)
	inv.srv.register(d)
	acked := d.expectAck(inv.req.CSeq().SeqNo)
	// A CANCEL that won the race has been answered 487 by the transaction:
	// a 200 now would contradict it.
	if err := inv.ctx.Err(); err != nil {
		inv.srv.unregister(d)
		return nil, context.Cause(inv.ctx)
	}
	if err := inv.srv.respond(inv.tx, res); err != nil {
		inv.srv.unregister(d)
		return nil, fmt.Errorf("send 200 OK: %w", err)
	}
	if err := d.awaitAck(acked, inv.req.CSeq().SeqNo, inv.tx, res); err != nil {
		// RFC 3261 §13.3.1.4: no ACK — confirm, then end with BYE.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Hangup(ctx, refusal.NoAck.ReasonHeader())
		return nil, err
	}
	return d, nil
}
