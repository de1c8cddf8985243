package sip

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gosip "github.com/emiago/sipgo/sip"
)

// ReinviteFunc answers a re-INVITE's offer inside a dialog (hold, unhold,
// refresh) with an SDP answer; an error keeps the old session and
// answers 488.
type ReinviteFunc func(offer *SDP) (answer []byte, err error)

// Who ended a dialog.
const (
	EndedByRemote = "remote"
	EndedByLocal  = "local"
)

// Dialog is an answered call's SIP side (UAS role).
type Dialog struct {
	srv       *Server
	key       string
	invite    *gosip.Request // the initial INVITE: route set, remote target, tags
	answer    *gosip.Response
	localSeq  atomic.Uint32
	remoteSeq atomic.Uint32

	mu         sync.Mutex
	lastSDP    []byte
	sdpVersion uint64
	onReinvite ReinviteFunc
	onDTMF     func(digit byte)
	acks       map[uint32]chan struct{}

	done    chan struct{}
	endOnce sync.Once
	endedBy string
}

func newDialog(inv *Invite, answer *gosip.Response, sdp []byte, onReinvite ReinviteFunc) *Dialog {
	remoteTag, _ := inv.req.From().Params.Get("tag")
	d := &Dialog{
		srv: inv.srv, key: dialogKey(inv.CallID(), inv.localTag, remoteTag), invite: inv.req, answer: answer,
		lastSDP: sdp, onReinvite: onReinvite, acks: map[uint32]chan struct{}{}, done: make(chan struct{}),
	}
	d.remoteSeq.Store(inv.req.CSeq().SeqNo)
	d.localSeq.Store(1)
	return d
}

// CallID is the SIP Call-ID.
func (d *Dialog) CallID() string { return d.invite.CallID().Value() }

// OnDTMF sets the receiver of digits sent as SIP INFO.
func (d *Dialog) OnDTMF(f func(digit byte)) {
	d.mu.Lock()
	d.onDTMF = f
	d.mu.Unlock()
}

func (d *Dialog) infoDTMF(digit byte) {
	d.mu.Lock()
	f := d.onDTMF
	d.mu.Unlock()
	if f != nil {
		f(digit)
	}
}

// Done is closed when the dialog has ended, by BYE either way.
func (d *Dialog) Done() <-chan struct{} { return d.done }

// EndedBy says who ended the dialog (EndedByRemote or EndedByLocal), once
// Done is closed.
func (d *Dialog) EndedBy() string {
	<-d.done
	return d.endedBy
}

func (d *Dialog) end(by string) {
	d.endOnce.Do(func() {
		d.endedBy = by
		d.srv.unregister(d)
		close(d.done)
	})
}

func (d *Dialog) ended() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// expectAck registers the wait for the ACK of the 2xx to request cseq. It
// comes before the 2xx is sent, so that an ACK arriving at once is seen.
func (d *Dialog) expectAck(cseq uint32) chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	ch := make(chan struct{})
	d.acks[cseq] = ch
	return ch
}

// ackReceived wakes the wait for this CSeq's ACK, if there is one: a late,
// repeated or stray ACK leaves nothing behind.
func (d *Dialog) ackReceived(cseq uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ch, ok := d.acks[cseq]; ok {
		close(ch)
		delete(d.acks, cseq)
	}
}

// awaitAck retransmits a 2xx over UDP (T1 doubling to T2) until its ACK
// arrives, for at most 64·T1 (RFC 3261 §13.3.1.4).
func (d *Dialog) awaitAck(acked chan struct{}, cseq uint32, tx gosip.ServerTransaction, res *gosip.Response) error {
	defer func() {
		d.mu.Lock()
		if d.acks[cseq] == acked {
			delete(d.acks, cseq)
		}
		d.mu.Unlock()
	}()
	reliable := d.invite.Transport() != "UDP"
	giveUp := time.NewTimer(64 * timerT1)
	defer giveUp.Stop()
	interval := timerT1
	retransmit := time.NewTimer(interval)
	defer retransmit.Stop()
	if reliable {
		retransmit.Stop()
	}
	for {
		select {
		case <-acked:
			return nil
		case <-tx.Acks(): // an ACK that reused the INVITE's branch
			return nil
		case <-d.done:
			return nil // BYE crossed the ACK: the dialog existed
		case <-giveUp.C:
			return ErrNoAck
		case <-retransmit.C:
			if err := tx.Respond(res); err != nil {
				// The transaction is gone; keep waiting for the ACK, which
				// arrives outside it.
				d.srv.log.Debug("2xx retransmit failed", "error", err)
			}
			interval = min(2*interval, timerT2)
			retransmit.Reset(interval)
		}
	}
}

func (d *Dialog) handleReinvite(req *gosip.Request, tx gosip.ServerTransaction) {
	seq := req.CSeq().SeqNo
	if old := d.remoteSeq.Load(); seq <= old || !d.remoteSeq.CompareAndSwap(old, seq) {
		d.srv.respond(tx, req, 500, "Server Internal Error")
		return
	}
	d.mu.Lock()
	onReinvite := d.onReinvite
	answer := d.lastSDP
	d.mu.Unlock()
	if body := req.Body(); len(body) > 0 && onReinvite != nil {
		offer, err := ParseSDP(body)
		if err != nil {
			d.srv.respond(tx, req, 400, "Bad Request")
			return
		}
		if answer, err = onReinvite(offer); err != nil {
			res := gosip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil)
			res.AppendHeader(gosip.NewHeader("Warning", fmt.Sprintf("304 trunkgate %q", err.Error())))
			_ = tx.Respond(res)
			return
		}
		d.mu.Lock()
		d.lastSDP = answer
		d.mu.Unlock()
	}
	res := gosip.NewSDPResponseFromRequest(req, answer)
	res.AppendHeader(d.srv.contact(d.invite.Transport()))
	res.AppendHeader(gosip.NewHeader("Server", d.srv.cfg.UserAgent))
	acked := d.expectAck(seq)
	if err := tx.Respond(res); err != nil {
		d.srv.log.Info("re-INVITE answer failed", "call_id", d.CallID(), "error", err)
		return
	}
	if err := d.awaitAck(acked, seq, tx, res); err != nil {
		d.srv.log.Info("no ACK for re-INVITE answer", "call_id", d.CallID())
	}
}

// Hangup sends BYE with a Reason header (e.g. `Q.850;cause=16;text="key
// revoked"`) and waits for its response or ctx. The dialog has ended when
// Hangup returns, whether or not the far end answered.
func (d *Dialog) Hangup(ctx context.Context, reason string) error {
	if d.ended() {
		return nil
	}
	defer d.end(EndedByLocal)
	bye := d.newRequest(gosip.BYE)
	if reason != "" {
		bye.AppendHeader(gosip.NewHeader("Reason", reason))
	}
	tx, err := d.srv.client.TransactionRequest(ctx, bye)
	if err != nil {
		return fmt.Errorf("send BYE: %w", err)
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			if !res.IsSuccess() {
				return fmt.Errorf("BYE answered %d", res.StatusCode)
			}
			return nil
		case <-tx.Done():
			return fmt.Errorf("BYE: %w", tx.Err())
		case <-d.done:
			return nil // the far end hung up at the same moment
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// newRequest builds an in-dialog request from the UAS side (RFC 3261
// §12.2.1.1): to the remote target, along the route set.
func (d *Dialog) newRequest(method gosip.RequestMethod) *gosip.Request {
	inv := d.invite
	target := inv.Contact().Address
	req := gosip.NewRequest(method, *target.Clone())
	from := d.answer.To().AsFrom()
	to := inv.From().AsTo()
	callID := gosip.CallIDHeader(inv.CallID().Value())
	cseq := &gosip.CSeqHeader{SeqNo: d.localSeq.Add(1), MethodName: method}
	maxFwd := gosip.MaxForwardsHeader(70)
	req.AppendHeader(&from)
	req.AppendHeader(&to)
	req.AppendHeader(&callID)
	req.AppendHeader(cseq)
	req.AppendHeader(&maxFwd)
	routes := inv.GetHeaders("Record-Route")
	for _, rr := range routes {
		req.AppendHeader(gosip.NewHeader("Route", rr.Value()))
	}
	req.SetTransport(inv.Transport())
	switch {
	case len(routes) > 0:
		if r := req.Route(); r != nil {
			req.SetDestination(r.Address.HostPort())
		}
	case strings.ToUpper(inv.Transport()) != "UDP":
		// Over TCP reuse the caller's connection: its Contact port is
		// often not listening.
		req.SetDestination(inv.Source())
	}
	req.SetBody(nil)
	return req
}
