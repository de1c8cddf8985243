package sip

import (
	"context"
	"time"

	"github.com/emiago/sipgo"
	gosip "github.com/emiago/sipgo/sip"
)

// An outbound INVITE the edge gives up on (the app hung up, the ring
// timeout passed, a gateway stayed silent) must not ring on: CANCEL once
// it has a provisional response, and a late answer is cancelled or
// acknowledged and hung up.

// goAbandon abandons on its own goroutine, which Serve waits for on
// shutdown (up to abandonGrace): the CANCEL's 487 still needs its ACK
// when the call it ended was the last one of a drain.
func (s *Server) goAbandon(tx gosip.ClientTransaction, invite *gosip.Request, provisional bool) {
	s.abandonMu.Lock()
	defer s.abandonMu.Unlock()
	if s.stopping {
		// Serve is waiting for the others: this one is only ended (the
		// WaitGroup may not grow once Wait has begun).
		tx.Terminate()
		return
	}
	s.abandoning.Add(1)
	go func() {
		defer s.abandoning.Done()
		s.abandon(tx, invite, provisional)
	}()
}

// abandonGrace bounds how long shutdown waits for abandoned INVITEs to
// end: a CANCEL is answered in a round trip, or not at all.
const abandonGrace = 8 * timerT1

// abandon ends an INVITE the edge no longer waits for. With a provisional
// response in, it sends CANCEL and reads the transaction to its end: a
// 2xx that crossed the CANCEL is acknowledged and hung up. With nothing
// in yet (a silent gateway, or the app gave up at once), RFC 3261 §9.1
// forbids CANCEL, and retransmitting an INVITE nobody waits for only
// invites a late answer: the transaction ends now, and the INVITE is
// remembered for 64·T1 so that a late provisional response gets its
// CANCEL and a late 2xx its ACK and BYE (unhandledResponse).
func (s *Server) abandon(tx gosip.ClientTransaction, invite *gosip.Request, provisional bool) {
	defer tx.Terminate()
	if !provisional {
		s.rememberAbandoned(invite)
		return
	}
	go s.sendCancel(invite)
	for {
		select {
		case res := <-tx.Responses():
			switch {
			case res.IsProvisional():
			case res.IsSuccess():
				s.ackAndBye(invite, res)
				return
			default:
				return // 487 to the CANCEL, or any other end
			}
		case <-tx.Done():
			return
		}
	}
}

// abandonedFor is how long an abandoned INVITE's late answers are taken
// care of: the far end's own INVITE server transaction lasts no longer.
const abandonedFor = 64 * timerT1

type abandonedInvite struct {
	invite   *gosip.Request
	canceled bool
}

func (s *Server) rememberAbandoned(invite *gosip.Request) {
	id := invite.CallID().Value()
	s.mu.Lock()
	s.abandoned[id] = &abandonedInvite{invite: invite}
	s.mu.Unlock()
	time.AfterFunc(abandonedFor, func() {
		s.mu.Lock()
		delete(s.abandoned, id)
		s.mu.Unlock()
	})
}

// lateAnswer handles a response to an abandoned INVITE: CANCEL on its
// first provisional response, ACK and BYE for a 2xx. It reports whether
// the response was one.
func (s *Server) lateAnswer(res *gosip.Response) bool {
	s.mu.Lock()
	a := s.abandoned[res.CallID().Value()]
	cancel := a != nil && res.IsProvisional() && res.StatusCode > 100 && !a.canceled
	if cancel {
		a.canceled = true
	}
	s.mu.Unlock()
	switch {
	case a == nil:
		return false
	case cancel:
		go s.sendCancel(a.invite)
	case res.IsSuccess():
		go s.ackAndBye(a.invite, res)
	}
	return true
}

// sendCancel cancels invite (RFC 3261 §9.1): same Request-URI, Call-ID,
// From, To, CSeq number and top Via as the INVITE.
func (s *Server) sendCancel(invite *gosip.Request) {
	req := gosip.NewRequest(gosip.CANCEL, *invite.Recipient.Clone())
	req.AppendHeader(gosip.HeaderClone(invite.Via()))
	req.AppendHeader(gosip.HeaderClone(invite.From()))
	req.AppendHeader(gosip.HeaderClone(invite.To()))
	req.AppendHeader(gosip.HeaderClone(invite.CallID()))
	req.AppendHeader(&gosip.CSeqHeader{SeqNo: invite.CSeq().SeqNo, MethodName: gosip.CANCEL})
	maxFwd := gosip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	for _, h := range invite.GetHeaders("Route") {
		req.AppendHeader(gosip.HeaderClone(h))
	}
	req.SetBody(nil)
	req.SetTransport(invite.Transport())
	req.SetDestination(invite.Destination())
	req.Laddr = invite.Laddr
	ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
	defer cancel()
	tx, err := s.transact(ctx, req, func(*sipgo.Client, *gosip.Request) error { return nil })
	if err != nil {
		s.log.Debug("CANCEL not sent", "call_id", invite.CallID().Value(), "error", err)
		return
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if !res.IsProvisional() {
				return
			}
		case <-tx.Done():
			return
		}
	}
}
