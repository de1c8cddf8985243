package sip

import (
	"context"
	"strings"
	"sync"

	"github.com/emiago/sipgo"
	gosip "github.com/emiago/sipgo/sip"
)

// RFC 3261 §18: a response goes back the way its request came, whatever
// its size (IP fragmentation is the risk a UDP peer accepted by sending
// over UDP); a request larger than 1300 bytes that the edge originates
// goes over TCP when the peer takes a TCP connection, and over UDP anyway
// when it does not.
const (
	// udpRequestLimit is the size above which a request goes over TCP.
	udpRequestLimit = 1300
	// viaAllowance is what the Via header sipgo adds will weigh.
	viaAllowance = 100
	// maxUDPPayload is the largest datagram IPv4 carries.
	maxUDPPayload = 65507
)

var mtuOnce sync.Once

// liftUDPLimit stops sipgo refusing UDP messages over 1300 bytes
// (ErrUDPMTUCongestion): it would drop the 200 OK to a large INVITE and
// the carrier would see only 100 Trying. sipgo checks len > UDPMTUSize-200.
func liftUDPLimit() {
	mtuOnce.Do(func() { gosip.UDPMTUSize = maxUDPPayload + 200 })
}

// transact sends a request the edge originates in a client transaction,
// over TCP instead of UDP when it is too large for UDP (see above). A
// request built for UDP is rebuilt for TCP: Via (added here), Contact and
// the source address follow the transport.
func (s *Server) transact(ctx context.Context, req *gosip.Request, opts ...sipgo.ClientRequestOption) (gosip.ClientTransaction, error) {
	if len(opts) == 0 {
		opts = []sipgo.ClientRequestOption{addVia}
	}
	if !strings.EqualFold(req.Transport(), "UDP") || len(req.String())+viaAllowance <= udpRequestLimit {
		return s.client.TransactionRequest(ctx, req, opts...)
	}
	s.useTransport(req, "TCP")
	tx, err := s.client.TransactionRequest(ctx, req, opts...)
	if err == nil {
		return tx, nil
	}
	s.log.Debug("large request: no TCP to the peer, sending over UDP", "method", req.Method.String(),
		"destination", req.Destination(), "bytes", len(req.String()), "error", err)
	req.RemoveHeader("Via")
	s.useTransport(req, "UDP")
	return s.client.TransactionRequest(ctx, req, opts...)
}

// useTransport switches a request the edge built to another transport.
func (s *Server) useTransport(req *gosip.Request, transport string) {
	req.SetTransport(transport)
	req.Laddr = gosip.Addr{}
	s.sendFromListener(req)
	if req.Contact() != nil {
		req.RemoveHeader("Contact")
		req.AppendHeader(s.contact(transport))
	}
}
