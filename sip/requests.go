package sip

import (
	gosip "github.com/emiago/sipgo/sip"

	"trunkgate/refusal"
)

// The handlers of requests sipgo routes by method. In-dialog requests
// find their dialog by Call-ID and tags; the dialog does the rest.

// accept answers 200 OK to a request that carries nothing back.
func (s *Server) accept(tx gosip.ServerTransaction, req *gosip.Request) {
	res := gosip.NewResponseFromRequest(req, 200, "OK", nil)
	s.identify(res, "Server")
	if err := s.respond(tx, res); err != nil {
		s.log.Debug("sip respond failed", "code", 200, "method", req.Method.String(), "error", err)
	}
}

func (s *Server) onInvite(req *gosip.Request, tx gosip.ServerTransaction) {
	if to := req.To(); to != nil {
		if tagOf(to.Params) != "" {
			s.onOffer(req, tx)
			return
		}
	}
	inv, err := newInvite(s, req, tx)
	if err != nil {
		s.log.Info("bad INVITE", "error", err, "source", req.Source())
		s.refuse(tx, req, refusal.Malformed, err.Error())
		return
	}
	defer inv.finish()
	s.cfg.Handler.HandleInvite(inv)
}

// inDialog is the dialog an in-dialog request belongs to; a request for
// no dialog of the edge is answered 481 (RFC 3261 §12.2.2) and gets nil.
func (s *Server) inDialog(req *gosip.Request, tx gosip.ServerTransaction) *Dialog {
	d := s.lookup(req)
	if d == nil {
		s.refuse(tx, req, refusal.NoSuchDialog, "")
	}
	return d
}

// onOffer takes an in-dialog re-INVITE, or an UPDATE (RFC 3311): a session
// refresh or a new offer, and a target refresh.
func (s *Server) onOffer(req *gosip.Request, tx gosip.ServerTransaction) {
	d := s.inDialog(req, tx)
	if d == nil {
		return
	}
	d.handleOffer(req, tx)
}

func (s *Server) onAck(req *gosip.Request, tx gosip.ServerTransaction) {
	if d := s.lookup(req); d != nil {
		if cseq := req.CSeq(); cseq != nil {
			d.ackReceived(cseq.SeqNo)
		}
	}
}

func (s *Server) onBye(req *gosip.Request, tx gosip.ServerTransaction) {
	d := s.inDialog(req, tx)
	if d == nil {
		return
	}
	s.accept(tx, req)
	d.end(EndedByRemote)
}

// onCancel sees only CANCELs that matched no pending INVITE: sipgo's
// transaction layer answers the others itself (200 to the CANCEL, 487 to
// the INVITE) and the Invite's context tells the handler.
func (s *Server) onCancel(req *gosip.Request, tx gosip.ServerTransaction) {
	s.refuse(tx, req, refusal.NoSuchDialog, "")
}

func (s *Server) onOptions(req *gosip.Request, tx gosip.ServerTransaction) {
	res := gosip.NewResponseFromRequest(req, 200, "OK", nil)
	res.AppendHeader(gosip.NewHeader("Allow", allowMethods))
	res.AppendHeader(gosip.NewHeader("Accept", "application/sdp"))
	s.identify(res, "Server")
	_ = s.respond(tx, res)
}

// onInfo accepts in-dialog INFO (some carriers send DTMF as
// application/dtmf-relay) and hands digits to the dialog.
func (s *Server) onInfo(req *gosip.Request, tx gosip.ServerTransaction) {
	d := s.inDialog(req, tx)
	if d == nil {
		return
	}
	s.accept(tx, req)
	if digit, ok := parseDTMFRelay(req); ok {
		d.infoDTMF(digit)
	}
}

const allowMethods = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY"
