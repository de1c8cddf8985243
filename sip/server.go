// Package sip is trunkgate's SIP user agent: it listens on UDP and TCP, and
// TLS when given a certificate, with sipgo, turns each new INVITE into an Invite for the call handler, places
// outbound calls (Dial: INVITE, provisional responses, digest answers to
// 401/407, ACK and re-ACK of 2xx, CANCEL), keeps the edge's own dialog
// store (Call-ID and tags) for dialogs of both roles, routes in-dialog
// requests (ACK, BYE, re-INVITE, UPDATE, INFO) to their dialog, sends BYE
// with a Reason, pings gateways with OPTIONS, and does SDP offer/answer.
// Before any handler it screens what arrives (validate.go): the flood
// guard's verdict, requests it cannot parse (a stateless 400) and requests
// that break RFC 3261 §8.2 (400, 405, 416, 420, 501, 505).
// It knows nothing of WebSockets, keys or SQL: the handler decides, this
// package speaks the protocol.
package sip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	gosip "github.com/emiago/sipgo/sip"

	"trunkgate/refusal"
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
	// TCPIdle closes a TCP connection that has carried nothing for this
	// long (0: never): a peer that opens connections and sends nothing, or
	// half a message, holds no socket and goroutine for ever.
	TCPIdle time.Duration
	// Observer, when set, is told of each request the edge handles and
	// each response it sends (metrics).
	Observer Observer
	// NonceKey keys digest nonces; edges behind one load balancer share it
	// so that any of them accepts another's challenge. Empty: a random key.
	NonceKey []byte
	// TLSAddr is host:port of the SIP over TLS listener (port 0 picks a
	// free one); TLS is its server configuration (the certificate). Both
	// empty: no TLS listener. Carriers are asked for a client certificate
	// but not required to send one: Invite.PeerCertificates has it for
	// the trunk to check.
	TLSAddr string
	TLS     *tls.Config
	// TLSClient verifies the gateways the edge dials over TLS (nil: the
	// system's roots); SNI is the gateway's host.
	TLSClient *tls.Config
}

// Observer counts SIP traffic: each request that reaches the edge's
// handlers (after the flood screen), by method, and each response the
// edge sends, by status code.
type Observer interface {
	SIPRequest(method string)
	SIPResponse(code int)
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
	// tlsLn is the SIP over TLS listener (nil without one), on tlsPort.
	tlsLn   net.Listener
	tlsPort int
	peers   *peerCerts
	// udpAddr is the UDP listener's address: requests over UDP leave from
	// it, so that replies and in-dialog requests come back to it.
	udpAddr gosip.Addr
	// ready closes once sipgo serves the UDP listener: before that a
	// request sent "from the listener" would make sipgo bind its port again.
	ready chan struct{}

	nonces *nonces       // digest challenges
	parser *gosip.Parser // screenDatagram's

	mu        sync.Mutex
	dialogs   map[string]*Dialog
	abandoned map[string]*abandonedInvite // outbound INVITEs given up before any response, by Call-ID
	// abandoning counts abandon goroutines still reading their INVITE's end;
	// once stopping is set (under abandonMu) no more are started.
	abandoning sync.WaitGroup
	abandonMu  sync.Mutex
	stopping   bool
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
	udp, tcp, err := listenBoth(cfg.Addr, host)
	if err != nil {
		return nil, err
	}
	port := udp.LocalAddr().(*net.UDPAddr).Port
	if !cfg.ContactIP.IsValid() {
		cfg.ContactIP = netip.MustParseAddr("127.0.0.1")
		if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
			cfg.ContactIP = a
		}
	}
	s := &Server{cfg: cfg, log: cfg.Log, udp: udp, tcp: tcp, port: port, nonces: newNonces(cfg.NonceKey), dialogs: map[string]*Dialog{},
		abandoned: map[string]*abandonedInvite{}, ready: make(chan struct{}), parser: gosip.NewParser(),
		peers: &peerCerts{certs: map[string][]*x509.Certificate{}}}
	closeAll := func() {
		udp.Close()
		tcp.Close()
		if s.tlsLn != nil {
			s.tlsLn.Close()
		}
	}
	if cfg.TLSAddr != "" {
		if cfg.TLS == nil {
			closeAll()
			return nil, errors.New("sip: a TLS address without a TLS configuration")
		}
		ln, err := net.Listen("tcp", cfg.TLSAddr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("sip listen tls %s: %w", cfg.TLSAddr, err)
		}
		s.tlsPort = ln.Addr().(*net.TCPAddr).Port
		s.tlsLn = newTLSListener(ln, cfg.TLS, s.peers)
	}
	la := udp.LocalAddr().(*net.UDPAddr)
	s.udpAddr = gosip.Addr{IP: la.IP, Port: la.Port, Hostname: la.IP.String()}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("trunkgate"), sipgo.WithUserAgentHostname(cfg.ContactIP.String()),
		sipgo.WithUserAgenTLSConfig(clientTLS(cfg.TLSClient)),
		sipgo.WithUserAgentTransactionLayerOptions(gosip.WithTransactionLayerUnhandledResponseHandler(s.unhandledResponse)),
		// The read filter first: the transports copy it when they are set.
		sipgo.WithUserAgentTransportLayerOptions(gosip.WithTransportLayerReadFilter(s.screenDatagram),
			gosip.WithTransportLayerTransports(gosip.TransportsConfig{TCP: &gosip.TransportTCP{ReadTimeout: cfg.TCPIdle},
				TLS: &gosip.TransportTLS{TransportTCP: &gosip.TransportTCP{ReadTimeout: cfg.TCPIdle}}})))
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("sip user agent: %w", err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(cfg.Log.With("component", "sipgo")))
	if err != nil {
		ua.Close()
		closeAll()
		return nil, fmt.Errorf("sip server: %w", err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(cfg.ContactIP.String()), sipgo.WithClientPort(port))
	if err != nil {
		ua.Close()
		closeAll()
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
	srv.OnNotify(s.guard(s.onNotify))
	srv.OnNoRoute(s.guard(s.onNoRoute))
	return s, nil
}

// listenBoth binds UDP and TCP on the same port. With port 0 the kernel
// picks a free UDP port, which a TCP socket may hold: then it tries again.
func listenBoth(addr, host string) (net.PacketConn, net.Listener, error) {
	for attempt := 0; ; attempt++ {
		udp, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("sip listen udp %s: %w", addr, err)
		}
		port := udp.LocalAddr().(*net.UDPAddr).Port
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		if !strings.HasSuffix(addr, ":0") || !errors.Is(err, syscall.EADDRINUSE) || attempt == 20 {
			return nil, nil, fmt.Errorf("sip listen tcp %s: %w", addr, err)
		}
	}
}

// guard screens each request's source (UDP datagrams were screened
// before parsing, in screenDatagram), refuses what breaks RFC 3261 §8.2
// (checkRequest), and keeps a panic while handling one request from
// taking down the process and every other call with it: it is logged and
// answered 500.
func (s *Server) guard(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *gosip.Request, tx gosip.ServerTransaction) {
		if s.cfg.Screen != nil && !strings.EqualFold(req.Transport(), "udp") {
			if src, err := netip.ParseAddrPort(req.Source()); err == nil && !s.cfg.Screen(src.Addr()) {
				if s.cfg.ScreenReply && !req.IsAck() {
					s.refuse(tx, req, refusal.Flooded, "")
				}
				return
			}
		}
		if s.cfg.Observer != nil {
			s.cfg.Observer.SIPRequest(req.Method.String())
		}
		if r, detail, extra, refused := checkRequest(req); refused {
			if !req.IsAck() {
				s.refuse(tx, req, r, detail, extra...)
			}
			return
		}
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("panic handling SIP request", "method", req.Method.String(), "panic", fmt.Sprint(v),
					"stack", string(debug.Stack()))
				if !req.IsAck() {
					s.refuse(tx, req, refusal.Internal, "")
				}
			}
		}()
		h(req, tx)
	}
}

// respond sends res in tx, and counts it.
func (s *Server) respond(tx gosip.ServerTransaction, res *gosip.Response) error {
	if s.cfg.Observer != nil {
		s.cfg.Observer.SIPResponse(res.StatusCode)
	}
	return tx.Respond(res)
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

// TLSPort is the SIP over TLS port; 0 without a TLS listener.
func (s *Server) TLSPort() int { return s.tlsPort }

// clientTLS is the configuration the edge dials gateways with: TLS 1.2
// at least, whatever the caller's configuration says.
func clientTLS(c *tls.Config) *tls.Config {
	if c == nil {
		c = &tls.Config{}
	}
	c = c.Clone()
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
	return c
}

// Serve handles SIP until ctx ends, then closes the listeners.
func (s *Server) Serve(ctx context.Context) error {
	errs := make(chan error, 3)
	go func() { errs <- s.srv.ServeUDP(s.udp) }()
	go func() { errs <- s.srv.ServeTCP(s.tcp) }()
	listeners := 2
	if s.tlsLn != nil {
		listeners++
		go func() { errs <- s.srv.ServeTLS(s.tlsLn) }()
	}
	s.awaitListener(ctx)
	<-ctx.Done()
	s.abandonMu.Lock()
	s.stopping = true
	s.abandonMu.Unlock()
	done := make(chan struct{})
	go func() { s.abandoning.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(abandonGrace):
	}
	s.udp.Close()
	s.tcp.Close()
	if s.tlsLn != nil {
		s.tlsLn.Close()
	}
	for range listeners {
		<-errs
	}
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

// contact is the edge's Contact for a dialog over transport: the TLS
// port with transport=tls over TLS (a sip: URI, not sips:, which would
// ask every hop beyond the carrier for TLS too: RFC 5630 §3.1.2).
func (s *Server) contact(transport string) *gosip.ContactHeader {
	c := &gosip.ContactHeader{Address: gosip.Uri{Scheme: "sip", User: "trunkgate", Host: s.cfg.ContactIP.String(), Port: s.port}}
	switch t := strings.ToLower(transport); t {
	case "", "udp":
	case "tls":
		c.Address.Port = s.tlsPort
		c.Address.UriParams = gosip.NewParams()
		c.Address.UriParams.Add("transport", t)
	default:
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
	local, remote := tagOf(to.Params), tagOf(from.Params)
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
