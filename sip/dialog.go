package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"trunkgate/refusal"
)

// ReinviteFunc answers a re-INVITE's (or UPDATE's) offer inside a dialog
// (hold, unhold, refresh) with an SDP answer; an error keeps the old
// session and answers 488.
type ReinviteFunc func(offer *SDP) (answer []byte, err error)

// Who ended a dialog.
const (
	EndedByRemote = "remote"
	EndedByLocal  = "local"
)

// Dialog is an established call's SIP side, in either role: the edge
// answered the INVITE (UAS, inbound calls) or sent it (UAC, outbound
// calls). It keeps the dialog state of RFC 3261 §12 itself — Call-ID,
// tags, local and remote URIs, CSeq numbers, the route set and the remote
// target, which target-refresh requests (re-INVITE, UPDATE) move — and
// builds every in-dialog request from it.
type Dialog struct {
	srv       *Server
	key       string
	callID    string
	localTag  string
	remoteTag string
	// from and to are the From and To of the edge's requests: the edge's
	// identity with its tag, and the far end's with its tag.
	from      *gosip.FromHeader
	to        *gosip.ToHeader
	transport string // "UDP", "TCP" or "TLS"
	// source is the far end's transport address the dialog was set up
	// with: over TCP, requests of a UAS dialog without a route set go back
	// on that connection (a PBX's Contact port often does not listen).
	source    string
	uac       bool
	localSeq  atomic.Uint32
	remoteSeq atomic.Uint32 // 0 until the far end sends a request (UAC)

	mu         sync.Mutex
	target     gosip.Uri   // remote target: the far end's Contact
	routes     []gosip.Uri // route set, in the order requests carry it
	lastSDP    []byte
	onReinvite ReinviteFunc
	onDTMF     func(digit byte)
	onTransfer TransferProgress
	acks       map[uint32]chan struct{}

	done    chan struct{}
	endOnce sync.Once
	endedBy string
}

// newUASDialog is the dialog of an INVITE the edge answers with res
// (RFC 3261 §12.1.1): the route set is the INVITE's Record-Route, in
// order; the remote target its Contact.
func newUASDialog(inv *Invite, res *gosip.Response, sdp []byte, onReinvite ReinviteFunc) *Dialog {
	req := inv.req
	remoteTag := tagOf(req.From().Params)
	from := res.To().AsFrom()
	to := req.From().AsTo()
	d := &Dialog{
		srv: inv.srv, callID: inv.CallID(), localTag: inv.localTag, remoteTag: remoteTag, from: &from, to: &to,
		transport: inv.Transport(), source: req.Source(), target: *req.Contact().Address.Clone(),
		routes: recordRoutes(req), lastSDP: sdp, onReinvite: onReinvite,
		acks: map[uint32]chan struct{}{}, done: make(chan struct{}),
	}
	d.key = dialogKey(d.callID, d.localTag, d.remoteTag)
	d.remoteSeq.Store(req.CSeq().SeqNo)
	d.localSeq.Store(1)
	return d
}

// newUACDialog is the dialog an INVITE the edge sent established with the
// 2xx res (RFC 3261 §12.1.2): the route set is the 2xx's Record-Route in
// reverse; the remote target its Contact.
func newUACDialog(s *Server, invite *gosip.Request, res *gosip.Response, onReinvite ReinviteFunc) (*Dialog, error) {
	contact := res.Contact()
	if contact == nil {
		return nil, fmt.Errorf("2xx without Contact")
	}
	remoteTag := tagOf(res.To().Params)
	localTag := tagOf(invite.From().Params)
	from := cloneFrom(invite.From())
	to := cloneTo(res.To())
	routes := recordRoutes(res)
	slices.Reverse(routes)
	d := &Dialog{
		srv: s, callID: invite.CallID().Value(), localTag: localTag, remoteTag: remoteTag, from: from, to: to,
		transport: strings.ToUpper(invite.Transport()), source: res.Source(), uac: true,
		target: *contact.Address.Clone(), routes: routes, lastSDP: invite.Body(), onReinvite: onReinvite,
		acks: map[uint32]chan struct{}{}, done: make(chan struct{}),
	}
	d.key = dialogKey(d.callID, d.localTag, d.remoteTag)
	d.localSeq.Store(invite.CSeq().SeqNo)
	return d, nil
}

func cloneFrom(h *gosip.FromHeader) *gosip.FromHeader {
	return gosip.HeaderClone(h).(*gosip.FromHeader)
}
func cloneTo(h *gosip.ToHeader) *gosip.ToHeader { return gosip.HeaderClone(h).(*gosip.ToHeader) }

func recordRoutes(m gosip.Message) []gosip.Uri {
	var out []gosip.Uri
	for _, h := range m.GetHeaders("Record-Route") {
		switch rr := h.(type) {
		case *gosip.RecordRouteHeader:
			out = append(out, *rr.Address.Clone())
		default:
			var u gosip.Uri
			if _, err := gosip.ParseAddressValue(h.Value(), &u, nil); err == nil {
				out = append(out, u)
			}
		}
	}
	return out
}

// CallID is the SIP Call-ID.
func (d *Dialog) CallID() string { return d.callID }

// Transport is "UDP", "TCP" or "TLS".
func (d *Dialog) Transport() string { return d.transport }

// RemoteTarget is where in-dialog requests go (the far end's Contact).
func (d *Dialog) RemoteTarget() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.target.String()
}

// OnDTMF sets the receiver of digits sent as SIP INFO.
func (d *Dialog) OnDTMF(f func(digit byte)) {
	d.mu.Lock()
	d.onDTMF = f
	d.mu.Unlock()
}

// OnReinvite sets who answers the far end's offers in this dialog.
func (d *Dialog) OnReinvite(f ReinviteFunc) {
	d.mu.Lock()
	d.onReinvite = f
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

// takeRemoteSeq accepts a request's CSeq if it is above the last one
// (RFC 3261 §12.2.2): lower or equal is out of order.
func (d *Dialog) takeRemoteSeq(seq uint32) bool {
	for {
		old := d.remoteSeq.Load()
		if old != 0 && seq <= old {
			return false
		}
		if d.remoteSeq.CompareAndSwap(old, seq) {
			return true
		}
	}
}

// refreshTarget moves the remote target to a target-refresh request's
// Contact (RFC 3261 §12.2.2; RFC 3311 for UPDATE).
func (d *Dialog) refreshTarget(req *gosip.Request) {
	c := req.Contact()
	if c == nil || c.Address.Host == "" {
		return
	}
	d.mu.Lock()
	d.target = *c.Address.Clone()
	d.mu.Unlock()
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
	giveUp := time.NewTimer(64 * timerT1)
	defer giveUp.Stop()
	interval := timerT1
	retransmit := time.NewTimer(interval)
	defer retransmit.Stop()
	if d.transport != "UDP" {
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
			if err := d.srv.respond(tx, res); err != nil {
				// The transaction is gone; keep waiting for the ACK, which
				// arrives outside it.
				d.srv.log.Debug("2xx retransmit failed", "error", err)
			}
			interval = min(2*interval, timerT2)
			retransmit.Reset(interval)
		}
	}
}

// handleOffer answers a re-INVITE or an UPDATE inside the dialog: a new
// offer gets the handler's answer (488 if it refuses), no offer gets the
// last answer again; a 2xx refreshes the remote target.
func (d *Dialog) handleOffer(req *gosip.Request, tx gosip.ServerTransaction) {
	if !d.takeRemoteSeq(req.CSeq().SeqNo) {
		d.srv.refuse(tx, req, refusal.Internal, "CSeq lower than the dialog's") // RFC 3261 §12.2.2
		return
	}
	d.mu.Lock()
	onReinvite := d.onReinvite
	answer := d.lastSDP
	d.mu.Unlock()
	if body := req.Body(); len(body) > 0 && onReinvite != nil {
		offer, err := ParseSDP(body)
		if err != nil {
			d.srv.refuse(tx, req, refusal.Malformed, "SDP: "+err.Error())
			return
		}
		if answer, err = onReinvite(offer); err != nil {
			d.srv.refuse(tx, req, refusal.NoCommonCodec, "",
				gosip.NewHeader("Warning", "304 "+d.srv.cfg.ContactIP.String()+" "+quote(err.Error())))
			return
		}
		d.mu.Lock()
		d.lastSDP = answer
		d.mu.Unlock()
	}
	d.refreshTarget(req)
	d.srv.log.Debug("in-dialog offer answered", "method", req.Method.String(), "call_id", d.callID,
		"remote_target", d.RemoteTarget())
	res := gosip.NewSDPResponseFromRequest(req, answer)
	res.AppendHeader(d.srv.contact(d.transport))
	d.srv.identify(res, "Server")
	if !req.IsInvite() {
		_ = d.srv.respond(tx, res) // UPDATE: no ACK
		return
	}
	seq := req.CSeq().SeqNo
	acked := d.expectAck(seq)
	if err := d.srv.respond(tx, res); err != nil {
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
	bye := d.newRequest(gosip.BYE, d.localSeq.Add(1))
	if reason != "" {
		bye.AppendHeader(gosip.NewHeader("Reason", reason))
	}
	res, err := d.request(ctx, bye)
	switch {
	case errors.Is(err, errDialogEnded):
		return nil // the far end hung up at the same moment
	case err != nil:
		return err
	case !res.IsSuccess():
		return fmt.Errorf("BYE answered %d", res.StatusCode)
	}
	return nil
}

// errDialogEnded: the dialog ended while a request of the edge's waited
// for its answer.
var errDialogEnded = errors.New("the dialog has ended")

// request sends an in-dialog request and waits for its final response.
func (d *Dialog) request(ctx context.Context, req *gosip.Request) (*gosip.Response, error) {
	tx, err := d.srv.transact(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("send %s: %w", req.Method, err)
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return res, nil
		case <-tx.Done():
			return nil, fmt.Errorf("%s: %w", req.Method, tx.Err())
		case <-d.done:
			return nil, errDialogEnded
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// newRequest builds an in-dialog request (RFC 3261 §12.2.1.1): to the
// remote target along the route set (a strict router first in the set
// takes the Request-URI, the target goes last), sent to the first hop —
// the first route, else the target — on the default port of its
// transport when the URI has none, from the edge's listening socket.
func (d *Dialog) newRequest(method gosip.RequestMethod, seq uint32) *gosip.Request {
	d.mu.Lock()
	target := *d.target.Clone()
	routes := slices.Clone(d.routes)
	d.mu.Unlock()
	ruri, routeSet := target, routes
	if len(routes) > 0 && !routes[0].UriParams.Has("lr") {
		ruri = *routes[0].Clone()
		ruri.UriParams, ruri.Headers = nil, nil
		routeSet = append(slices.Clone(routes[1:]), target)
	}
	req := gosip.NewRequest(method, ruri)
	from, to := cloneFrom(d.from), cloneTo(d.to)
	callID := gosip.CallIDHeader(d.callID)
	cseq := &gosip.CSeqHeader{SeqNo: seq, MethodName: method}
	maxFwd := gosip.MaxForwardsHeader(70)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&callID)
	req.AppendHeader(cseq)
	req.AppendHeader(&maxFwd)
	for i := range routeSet {
		req.AppendHeader(&gosip.RouteHeader{Address: routeSet[i]})
	}
	if method != gosip.ACK && method != gosip.BYE {
		req.AppendHeader(d.srv.contact(d.transport))
	}
	next := target
	if len(routes) > 0 {
		next = routes[0]
	}
	transport := d.transport
	if t, ok := next.UriParams.Get("transport"); ok && t != "" {
		transport = strings.ToUpper(t)
	}
	req.SetTransport(transport)
	switch {
	case len(routes) == 0 && !d.uac && transport != "UDP" && d.source != "":
		req.SetDestination(d.source)
	default:
		req.SetDestination(hostPort(next, transport))
	}
	d.srv.sendFromListener(req)
	req.SetBody(nil)
	return req
}

// hostPort is where a URI points: its port, or its transport's default
// port (RFC 3263: 5060 for UDP and TCP, 5061 for TLS) when it has none.
func hostPort(u gosip.Uri, transport string) string {
	port := u.Port
	if port == 0 {
		port = 5060
		if strings.EqualFold(transport, "TLS") || u.Scheme == "sips" {
			port = 5061
		}
	}
	host := strings.TrimSuffix(strings.TrimPrefix(u.Host, "["), "]")
	return net.JoinHostPort(host, strconv.Itoa(port))
}
