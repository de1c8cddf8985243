package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// Target is where an outbound INVITE goes: a carrier gateway.
type Target struct {
	Host      string
	Port      int
	Transport string // "udp", "tcp" or "tls"
}

func (t Target) addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// Header is a header to add to an outbound INVITE. Its name and value
// must have been checked by the caller: no CR, LF or other control
// characters.
type Header struct{ Name, Value string }

// DialRequest describes an outbound call.
type DialRequest struct {
	Target Target
	// CallID of the INVITE; NewCallID when empty.
	CallID string
	To     string // the dialled number: the Request-URI's and To's user part
	From   string // the caller id: From's user part
	SDP    []byte // the offer
	// Headers are added to the INVITE (the trunk's custom headers).
	Headers []Header
	// Username and Password answer the carrier's 401/407 challenges.
	Username, Password string
	// FirstResponse bounds the wait for any response at all; 0 means
	// sipgo's Timer B (32 s). Past it the gateway counts as not answering.
	FirstResponse time.Duration
	// OnProgress is told of 180 and 183, with any SDP (early media).
	OnProgress func(code int, sdp []byte)
	// OnReinvite answers the far end's offers once the call is up.
	OnReinvite ReinviteFunc
}

// Errors of Dial that are not a carrier's final response.
var (
	// ErrNoResponse: the gateway sent nothing within FirstResponse (or
	// the transaction timed out without a response).
	ErrNoResponse = errors.New("no response from gateway")
	// ErrTransport: the request could not be sent (TCP refused, no route).
	ErrTransport = errors.New("transport error")
)

// FinalError is a non-2xx final response to an outbound INVITE.
type FinalError struct {
	Code   int
	Phrase string
	// Reason is the response's Reason header value (RFC 3326), if any.
	Reason string
}

func (e *FinalError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("%d %s (%s)", e.Code, e.Phrase, e.Reason)
	}
	return fmt.Sprintf("%d %s", e.Code, e.Phrase)
}

// ReasonCause reads the protocol, cause and text of the Reason header,
// e.g. ("Q.850", 34, "no circuit available").
func (e *FinalError) ReasonCause() (protocol string, cause int, text string) {
	proto, params, _ := strings.Cut(e.Reason, ";")
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch strings.ToLower(k) {
		case "cause":
			cause, _ = strconv.Atoi(v)
		case "text":
			text = strings.Trim(v, `"`)
		}
	}
	return strings.TrimSpace(proto), cause, text
}

// Text is what the carrier said: the Reason header's text, else the
// status phrase.
func (e *FinalError) Text() string {
	if _, _, text := e.ReasonCause(); text != "" {
		return text
	}
	return e.Phrase
}

// maxAuthAttempts: one answer to a challenge, and one more if the carrier
// says the nonce was stale.
const maxAuthAttempts = 2

// Dial sends an INVITE and waits for its final response. On 2xx it sends
// the ACK (and again for every retransmitted 2xx), and returns the dialog
// and the answer SDP. A non-2xx final response is a *FinalError. When ctx
// ends first the INVITE is canceled: with CANCEL once a provisional
// response has come (RFC 3261 §9.1), or as soon as one comes; a 2xx that
// crosses the CANCEL is acknowledged and hung up. Dial returns at once
// with context.Cause(ctx) in that case; the cleanup goes on behind it.
func (s *Server) Dial(ctx context.Context, r DialRequest) (*Dialog, []byte, error) {
	if err := s.waitReady(ctx); err != nil {
		return nil, nil, err
	}
	req := s.newInvite(r)
	var (
		authAttempts int
		provisional  bool
	)
	tx, err := s.transact(ctx, req)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: INVITE to %s: %w", ErrTransport, r.Target.addr(), err)
	}
	var first <-chan time.Time
	if r.FirstResponse > 0 {
		t := time.NewTimer(r.FirstResponse)
		defer t.Stop()
		first = t.C
	}
	for {
		select {
		case res := <-tx.Responses():
			provisional = true
			first = nil
			switch {
			case res.IsProvisional():
				if res.StatusCode > 100 && r.OnProgress != nil {
					r.OnProgress(res.StatusCode, res.Body())
				}
				continue
			case res.IsSuccess():
				d, err := s.established(tx, req, res, r.OnReinvite)
				if err != nil {
					return nil, nil, err
				}
				return d, res.Body(), nil
			case (res.StatusCode == 401 || res.StatusCode == 407) && r.Password != "" && authAttempts < maxAuthAttempts:
				authAttempts++
				tx.Terminate()
				if err := authorize(req, res, r.Username, r.Password); err != nil {
					return nil, nil, &FinalError{Code: res.StatusCode, Phrase: res.Reason, Reason: err.Error()}
				}
				if tx, err = s.transact(ctx, req); err != nil {
					return nil, nil, fmt.Errorf("%w: INVITE to %s: %w", ErrTransport, r.Target.addr(), err)
				}
				provisional = false
				continue
			default:
				fe := &FinalError{Code: res.StatusCode, Phrase: res.Reason}
				if h := res.GetHeader("Reason"); h != nil {
					fe.Reason = h.Value()
				}
				return nil, nil, fe
			}
		case <-tx.Done():
			err := tx.Err()
			if errors.Is(err, gosip.ErrTransactionTimeout) && !provisional {
				return nil, nil, fmt.Errorf("%w: %s", ErrNoResponse, r.Target.addr())
			}
			if !provisional {
				return nil, nil, fmt.Errorf("%w: %s: %w", ErrTransport, r.Target.addr(), err)
			}
			return nil, nil, fmt.Errorf("INVITE to %s: %w", r.Target.addr(), err)
		case <-first:
			s.goAbandon(tx, req, false)
			return nil, nil, fmt.Errorf("%w: %s in %v", ErrNoResponse, r.Target.addr(), r.FirstResponse)
		case <-ctx.Done():
			s.goAbandon(tx, req, provisional)
			return nil, nil, context.Cause(ctx)
		}
	}
}

// newInvite builds the INVITE of an outbound call.
func (s *Server) newInvite(r DialRequest) *gosip.Request {
	transport := strings.ToUpper(r.Target.Transport)
	if transport == "" {
		transport = "UDP"
	}
	ruri := gosip.Uri{Scheme: "sip", User: r.To, Host: r.Target.Host, Port: r.Target.Port}
	if transport != "UDP" {
		ruri.UriParams = gosip.NewParams()
		ruri.UriParams.Add("transport", strings.ToLower(transport))
	}
	req := gosip.NewRequest(gosip.INVITE, ruri)
	from := &gosip.FromHeader{Address: gosip.Uri{Scheme: "sip", User: r.From, Host: s.cfg.ContactIP.String()}, Params: gosip.NewParams()}
	from.Params.Add("tag", gosip.GenerateTagN(16))
	to := &gosip.ToHeader{Address: gosip.Uri{Scheme: "sip", User: r.To, Host: r.Target.Host}, Params: gosip.NewParams()}
	if r.CallID == "" {
		r.CallID = NewCallID()
	}
	callID := gosip.CallIDHeader(r.CallID)
	maxFwd := gosip.MaxForwardsHeader(70)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&callID)
	req.AppendHeader(&gosip.CSeqHeader{SeqNo: 1, MethodName: gosip.INVITE})
	req.AppendHeader(&maxFwd)
	req.AppendHeader(s.contact(transport))
	req.AppendHeader(gosip.NewHeader("Allow", allowMethods))
	s.identify(req, "User-Agent")
	for _, h := range r.Headers {
		req.AppendHeader(gosip.NewHeader(h.Name, h.Value))
	}
	req.AppendHeader(gosip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(r.SDP)
	req.SetTransport(transport)
	req.SetDestination(r.Target.addr())
	s.sendFromListener(req)
	return req
}

// NewCallID makes a Call-ID for a request the edge originates.
func NewCallID() string { return gosip.GenerateTagN(24) + "@trunkgate" }

// authorize adds the answer to a 401/407 challenge to req, with the next
// CSeq and without the old Via (RFC 3261 §22.2).
func authorize(req *gosip.Request, res *gosip.Response, user, password string) error {
	name, header := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		name, header = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := res.GetHeader(name)
	if h == nil {
		return fmt.Errorf("%d without %s", res.StatusCode, name)
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return fmt.Errorf("challenge: %w", err)
	}
	chal.Algorithm = strings.ToUpper(chal.Algorithm)
	cred, err := digest.Digest(chal, digest.Options{Method: "INVITE", URI: req.Recipient.Addr(), Username: user, Password: password})
	if err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	req.RemoveHeader(header)
	req.AppendHeader(gosip.NewHeader(header, cred.String()))
	req.CSeq().SeqNo++
	req.RemoveHeader("Via")
	return nil
}

// established turns the first 2xx into a dialog: ACK now, and again for
// each retransmission of it; a 2xx from another fork (another To tag) is
// acknowledged and hung up (RFC 3261 §13.2.2.4).
func (s *Server) established(tx gosip.ClientTransaction, invite *gosip.Request, res *gosip.Response, onReinvite ReinviteFunc) (*Dialog, error) {
	d, err := newUACDialog(s, invite, res, onReinvite)
	if err != nil {
		s.ackAndBye(invite, res)
		return nil, err
	}
	ack := d.newRequest(gosip.ACK, invite.CSeq().SeqNo)
	if err := addVia(s.client, ack); err != nil {
		return nil, fmt.Errorf("ACK: %w", err)
	}
	// The dialog and the re-ACK hook are in place before the ACK leaves: a
	// far end that missed it retransmits its 2xx at once.
	s.register(d)
	tx.OnRetransmission(func(r *gosip.Response) {
		if !r.IsSuccess() {
			return
		}
		if tagOf(r.To().Params) == d.remoteTag {
			_ = s.client.WriteRequest(ack.Clone())
			return
		}
		s.ackAndBye(invite, r)
	})
	if err := s.client.WriteRequest(ack); err != nil {
		s.unregister(d)
		return nil, fmt.Errorf("ACK: %w", err)
	}
	return d, nil
}

// ackAndBye ends a dialog the edge does not want: a 2xx that crossed a
// CANCEL, or a second fork's 2xx.
func (s *Server) ackAndBye(invite *gosip.Request, res *gosip.Response) {
	d, err := newUACDialog(s, invite, res, nil)
	if err != nil {
		return
	}
	_ = s.client.WriteRequest(d.newRequest(gosip.ACK, invite.CSeq().SeqNo), addVia)
	ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
	defer cancel()
	s.register(d)
	if err := d.Hangup(ctx, `SIP;cause=487;text="canceled"`); err != nil {
		s.log.Debug("BYE of an unwanted 2xx", "call_id", d.callID, "error", err)
	}
}

// unhandledResponse sees responses that match no transaction. A 2xx to an
// INVITE is a retransmission whose transaction has ended: the dialog's ACK
// went missing (ACK it again) or nobody wants it (ACK and BYE).
func (s *Server) unhandledResponse(res *gosip.Response) {
	cseq := res.CSeq()
	if cseq == nil || cseq.MethodName != gosip.INVITE || res.CallID() == nil || res.From() == nil || res.To() == nil {
		return
	}
	if s.lateAnswer(res) || !res.IsSuccess() {
		return
	}
	local, remote := tagOf(res.From().Params), tagOf(res.To().Params)
	s.mu.Lock()
	d := s.dialogs[dialogKey(res.CallID().Value(), local, remote)]
	s.mu.Unlock()
	if d != nil && d.uac {
		_ = s.client.WriteRequest(d.newRequest(gosip.ACK, cseq.SeqNo), addVia)
		return
	}
	s.log.Debug("stray 2xx", "call_id", res.CallID().Value())
}

// Ping sends OPTIONS to a gateway and returns the response code: a
// gateway's health check.
func (s *Server) Ping(ctx context.Context, t Target) (int, error) {
	if err := s.waitReady(ctx); err != nil {
		return 0, err
	}
	transport := strings.ToUpper(t.Transport)
	if transport == "" {
		transport = "UDP"
	}
	ruri := gosip.Uri{Scheme: "sip", Host: t.Host, Port: t.Port}
	req := gosip.NewRequest(gosip.OPTIONS, ruri)
	from := &gosip.FromHeader{Address: gosip.Uri{Scheme: "sip", User: "trunkgate", Host: s.cfg.ContactIP.String()}, Params: gosip.NewParams()}
	from.Params.Add("tag", gosip.GenerateTagN(16))
	callID := gosip.CallIDHeader(NewCallID())
	maxFwd := gosip.MaxForwardsHeader(70)
	req.AppendHeader(from)
	req.AppendHeader(&gosip.ToHeader{Address: ruri})
	req.AppendHeader(&callID)
	req.AppendHeader(&gosip.CSeqHeader{SeqNo: 1, MethodName: gosip.OPTIONS})
	req.AppendHeader(&maxFwd)
	s.identify(req, "User-Agent")
	req.SetBody(nil)
	req.SetTransport(transport)
	req.SetDestination(t.addr())
	s.sendFromListener(req)
	res, err := s.client.Do(ctx, req, addVia)
	if err != nil {
		return 0, err
	}
	return res.StatusCode, nil
}
