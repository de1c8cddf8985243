// Package sip is trunkgate's SIP user agent: it listens on UDP and TCP with
// sipgo, turns each new INVITE into an Invite for the call handler, places
// outbound calls (Dial: INVITE, provisional responses, digest answers to
// 401/407, ACK and re-ACK of 2xx, CANCEL), keeps the edge's own dialog
// store (Call-ID and tags) for dialogs of both roles, routes in-dialog
// requests (ACK, BYE, re-INVITE, UPDATE, INFO) to their dialog, sends BYE
// with a Reason, pings gateways with OPTIONS, and does SDP offer/answer.
// It knows nothing of WebSockets, keys or SQL: the handler decides, this
// package speaks the protocol.
package sip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	gosip "github.com/emiago/sipgo/sip"
)

// InviteHandler takes new calls. HandleInvite runs on its own goroutine
// and must finish the INVITE transaction with Reject, Refuse or Answer;
// after Answer it may return while the call goes on.
type InviteHandler interface {
	HandleInvite(inv *Invite)
}

// Config of the user agent.
type Config struct {
	// Addr is host:port for both UDP and TCP; port 0 picks a free one.
	Addr string
	// ContactIP is the address put in Contact headers: the public address
	// carriers reach the edge at.
	ContactIP netip.Addr
	Handler   InviteHandler
	Log       *slog.Logger
	// UserAgent is the User-Agent / Server header value; empty sends
	// neither (a scanner learns less).
	UserAgent string
	// Screen, when set, is asked about each request's source before the
	// request is handled (a flood guard). A request it refuses is dropped
	// or, with ScreenReply, answered 503 with Retry-After.
	Screen      func(src netip.Addr) bool
	ScreenReply bool
}

// Server is the SIP side of the edge.
type Server struct {
	cfg    Config
	log    *slog.Logger
	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	client *sipgo.Client
	udp    net.PacketConn
	tcp    net.Listener
	port   int
	// udpAddr is the UDP listener's address: requests over UDP leave from
	// it, so that replies and in-dialog requests come back to it.
	udpAddr gosip.Addr
	// ready closes once sipgo serves the UDP listener: before that a
	// request sent "from the listener" would make sipgo bind its port again.
	ready chan struct{}

	nonces *nonces // digest challenges

	mu        sync.Mutex
	dialogs   map[string]*Dialog
	abandoned map[string]*abandonedInvite // outbound INVITEs given up before any response, by Call-ID
}

var loggerOnce sync.Once

// SetLogger routes sipgo's own logging to l, where a level filter keeps its
// per-message debug lines out of production. sipgo has one logger for the
// whole process (a package variable), so the first call wins; call it
// before Listen.
func SetLogger(l *slog.Logger) {
	loggerOnce.Do(func() { gosip.SetDefaultLogger(l.With("component", "sipgo")) })
}

// Listen binds UDP and TCP on cfg.Addr (the same port for both).
func Listen(cfg Config) (*Server, error) {
	if cfg.Handler == nil {
		return nil, errors.New("sip: no invite handler")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	liftUDPLimit()
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("sip address %q: %w", cfg.Addr, err)
	}
	udp, err := net.ListenPacket("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("sip listen udp %s: %w", cfg.Addr, err)
	}
	port := udp.LocalAddr().(*net.UDPAddr).Port
	tcp, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("sip listen tcp %s: %w", cfg.Addr, err)
	}
	if !cfg.ContactIP.IsValid() {
		cfg.ContactIP = netip.MustParseAddr("127.0.0.1")
		if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
			cfg.ContactIP = a
		}
	}
	s := &Server{cfg: cfg, log: cfg.Log, udp: udp, tcp: tcp, port: port, nonces: newNonces(), dialogs: map[string]*Dialog{},
		abandoned: map[string]*abandonedInvite{}, ready: make(chan struct{})}
	la := udp.LocalAddr().(*net.UDPAddr)
	s.udpAddr = gosip.Addr{IP: la.IP, Port: la.Port, Hostname: la.IP.String()}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("trunkgate"), sipgo.WithUserAgentHostname(cfg.ContactIP.String()),
		sipgo.WithUserAgentTransactionLayerOptions(gosip.WithTransactionLayerUnhandledResponseHandler(s.unhandledResponse)))
	if err != nil {
		udp.Close()
		tcp.Close()
		return nil, fmt.Errorf("sip user agent: %w", err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(cfg.Log.With("component", "sipgo")))
	if err != nil {
		ua.Close()
		udp.Close()
		tcp.Close()
		return nil, fmt.Errorf("sip server: %w", err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(cfg.ContactIP.String()), sipgo.WithClientPort(port))
	if err != nil {
		ua.Close()
		udp.Close()
		tcp.Close()
		return nil, fmt.Errorf("sip client: %w", err)
	}
	s.ua, s.srv, s.client = ua, srv, client
	srv.OnInvite(s.guard(s.onInvite))
	srv.OnUpdate(s.guard(s.onOffer))
	srv.OnAck(s.guard(s.onAck))
	srv.OnBye(s.guard(s.onBye))
	srv.OnCancel(s.guard(s.onCancel))
	srv.OnOptions(s.guard(s.onOptions))
	srv.OnInfo(s.guard(s.onInfo))
	return s, nil
}

// guard screens each request's source, and keeps a panic while handling
// one request from taking down the process and every other call with it:
// it is logged and answered 500.
func (s *Server) guard(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *gosip.Request, tx gosip.ServerTransaction) {
		if s.cfg.Screen != nil {
			if src, err := netip.ParseAddrPort(req.Source()); err == nil && !s.cfg.Screen(src.Addr()) {
				if s.cfg.ScreenReply && !req.IsAck() {
					res := gosip.NewResponseFromRequest(req, 503, "Service Unavailable", nil)
					res.AppendHeader(gosip.NewHeader("Retry-After", "60"))
					_ = tx.Respond(res)
				}
				return
			}
		}
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("panic handling SIP request", "method", req.Method.String(), "panic", fmt.Sprint(v),
					"stack", string(debug.Stack()))
				if !req.IsAck() {
					s.respond(tx, req, 500, "Server Internal Error")
				}
			}
		}()
		h(req, tx)
	}
}

// identify adds the Server (responses) or User-Agent (requests) header,
// unless the operator turned it off.
func (s *Server) identify(m interface{ AppendHeader(gosip.Header) }, name string) {
	if s.cfg.UserAgent != "" {
		m.AppendHeader(gosip.NewHeader(name, s.cfg.UserAgent))
	}
}

// Port is the SIP port (UDP and TCP).
func (s *Server) Port() int { return s.port }

// Serve handles SIP until ctx ends, then closes the listeners.
func (s *Server) Serve(ctx context.Context) error {
	errs := make(chan error, 2)
	go func() { errs <- s.srv.ServeUDP(s.udp) }()
	go func() { errs <- s.srv.ServeTCP(s.tcp) }()
	s.awaitListener(ctx)
	<-ctx.Done()
	s.udp.Close()
	s.tcp.Close()
	<-errs
	<-errs
	s.ua.Close()
	return nil
}

// awaitListener closes ready once sipgo has the UDP listener in its
// connection pool (its ServeUDP adds it from its own goroutine).
func (s *Server) awaitListener(ctx context.Context) {
	defer close(s.ready)
	for ctx.Err() == nil {
		if c, err := s.ua.TransportLayer().GetConnection("udp", s.udpAddr.String()); err == nil {
			c.TryClose() // GetConnection took a reference; a listener stays open
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// waitReady waits until the server serves, or ctx ends.
func (s *Server) waitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// LiveDialogs is the number of answered dialogs not yet ended.
func (s *Server) LiveDialogs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.dialogs)
}

func (s *Server) contact(transport string) *gosip.ContactHeader {
	c := &gosip.ContactHeader{Address: gosip.Uri{Scheme: "sip", User: "trunkgate", Host: s.cfg.ContactIP.String(), Port: s.port}}
	if transport != "" && transport != "UDP" && transport != "udp" {
		c.Address.UriParams = gosip.NewParams()
		c.Address.UriParams.Add("transport", "tcp")
	}
	return c
}

func dialogKey(callID, localTag, remoteTag string) string {
	return callID + "\x00" + localTag + "\x00" + remoteTag
}

// lookup finds the dialog an in-dialog request belongs to.
func (s *Server) lookup(req *gosip.Request) *Dialog {
	callID, from, to := req.CallID(), req.From(), req.To()
	if callID == nil || from == nil || to == nil {
		return nil
	}
	local, _ := to.Params.Get("tag")
	remote, _ := from.Params.Get("tag")
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dialogs[dialogKey(callID.Value(), local, remote)]
}

func (s *Server) register(d *Dialog) {
	s.mu.Lock()
	s.dialogs[d.key] = d
	s.mu.Unlock()
}

func (s *Server) unregister(d *Dialog) {
	s.mu.Lock()
	if s.dialogs[d.key] == d {
		delete(s.dialogs, d.key)
	}
	s.mu.Unlock()
}

func (s *Server) respond(tx gosip.ServerTransaction, req *gosip.Request, code int, phrase string) {
	res := gosip.NewResponseFromRequest(req, code, phrase, nil)
	s.identify(res, "Server")
	if err := tx.Respond(res); err != nil {
		s.log.Debug("sip respond failed", "code", code, "method", req.Method.String(), "error", err)
	}
}

func (s *Server) onInvite(req *gosip.Request, tx gosip.ServerTransaction) {
	if to := req.To(); to != nil {
		if tag, _ := to.Params.Get("tag"); tag != "" {
			s.onOffer(req, tx)
			return
		}
	}
	inv, err := newInvite(s, req, tx)
	if err != nil {
		s.log.Info("bad INVITE", "error", err, "source", req.Source())
		s.respond(tx, req, 400, "Bad Request")
		return
	}
	defer inv.finish()
	s.cfg.Handler.HandleInvite(inv)
}

// onOffer takes an in-dialog re-INVITE, or an UPDATE (RFC 3311): a session
// refresh or a new offer, and a target refresh.
func (s *Server) onOffer(req *gosip.Request, tx gosip.ServerTransaction) {
	d := s.lookup(req)
	if d == nil {
		s.respond(tx, req, 481, "Call/Transaction Does Not Exist")
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
	d := s.lookup(req)
	if d == nil {
		s.respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	s.respond(tx, req, 200, "OK")
	d.end(EndedByRemote)
}

// onCancel sees only CANCELs that matched no pending INVITE: sipgo's
// transaction layer answers the others itself (200 to the CANCEL, 487 to
// the INVITE) and the Invite's context tells the handler.
func (s *Server) onCancel(req *gosip.Request, tx gosip.ServerTransaction) {
	s.respond(tx, req, 481, "Call/Transaction Does Not Exist")
}

func (s *Server) onOptions(req *gosip.Request, tx gosip.ServerTransaction) {
	res := gosip.NewResponseFromRequest(req, 200, "OK", nil)
	res.AppendHeader(gosip.NewHeader("Allow", allowMethods))
	res.AppendHeader(gosip.NewHeader("Accept", "application/sdp"))
	s.identify(res, "Server")
	_ = tx.Respond(res)
}

// onInfo accepts in-dialog INFO (some carriers send DTMF as
// application/dtmf-relay) and hands digits to the dialog.
func (s *Server) onInfo(req *gosip.Request, tx gosip.ServerTransaction) {
	d := s.lookup(req)
	if d == nil {
		s.respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	s.respond(tx, req, 200, "OK")
	if digit, ok := parseDTMFRelay(req); ok {
		d.infoDTMF(digit)
	}
}

const allowMethods = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE"

// addVia completes a request the edge built itself: a fresh Via (sipgo
// fills in the sent-by from the connection) and a Content-Length.
func addVia(c *sipgo.Client, r *gosip.Request) error {
	if err := sipgo.ClientRequestAddVia(c, r); err != nil {
		return err
	}
	if r.ContentLength() == nil {
		r.SetBody(r.Body())
	}
	return nil
}

// sendFromListener makes a UDP request leave from the listening socket:
// replies, retransmissions and the far end's in-dialog requests come
// back to the port the edge announces in Via and Contact. Over TCP sipgo
// reuses a connection to the destination or opens one.
func (s *Server) sendFromListener(req *gosip.Request) {
	if strings.EqualFold(req.Transport(), "UDP") {
		s.udpAddr.Copy(&req.Laddr)
	}
}

// Timers of RFC 3261 §17, for 2xx retransmission and ACK waiting.
const (
	timerT1 = 500 * time.Millisecond
	timerT2 = 4 * time.Second
)
