package sip

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
)

// SIP over TLS (RFC 3261 §26.2): the edge's TLS listener asks each
// carrier for a client certificate without requiring one, and remembers
// what each connection presented, so that the handler can hold an INVITE's
// certificate against its trunk (mutual TLS is a per-trunk credential,
// not a listener-wide rule: a trunk without it takes TLS from anyone its
// source networks allow).

// peerCerts maps a TLS connection's remote address to the certificate
// chain it presented, for as long as the connection is open.
type peerCerts struct {
	mu    sync.Mutex
	certs map[string][]*x509.Certificate
}

func (p *peerCerts) set(addr string, chain []*x509.Certificate) {
	p.mu.Lock()
	p.certs[addr] = chain
	p.mu.Unlock()
}

func (p *peerCerts) get(addr string) []*x509.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.certs[addr]
}

func (p *peerCerts) forget(addr string) {
	p.mu.Lock()
	delete(p.certs, addr)
	p.mu.Unlock()
}

// tlsListener serves TLS on a TCP listener; sipgo's reader does the
// handshake on its first read, so a slow client holds no accept loop.
type tlsListener struct {
	net.Listener
	cfg   *tls.Config
	peers *peerCerts
}

func newTLSListener(l net.Listener, cfg *tls.Config, peers *peerCerts) *tlsListener {
	cfg = cfg.Clone()
	if cfg.ClientAuth == tls.NoClientCert {
		cfg.ClientAuth = tls.RequestClientCert
	}
	return &tlsListener{Listener: l, cfg: cfg, peers: peers}
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	addr := c.RemoteAddr().String()
	cfg := l.cfg.Clone()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		l.peers.set(addr, cs.PeerCertificates)
		return nil
	}
	return tls.Server(&forgetOnClose{Conn: c, addr: addr, peers: l.peers}, cfg), nil
}

// forgetOnClose drops a connection's certificate when it closes: a later
// connection from the same address and port presents its own.
type forgetOnClose struct {
	net.Conn
	addr  string
	peers *peerCerts
	once  sync.Once
}

func (c *forgetOnClose) Close() error {
	c.once.Do(func() { c.peers.forget(c.addr) })
	return c.Conn.Close()
}

// PeerCertificates is the certificate chain the caller presented on its
// TLS connection, leaf first; nil over UDP and TCP, or when it sent none.
// The chain is not verified here: the trunk's CA decides.
func (inv *Invite) PeerCertificates() []*x509.Certificate {
	if inv.Transport() != "TLS" {
		return nil
	}
	return inv.srv.peers.get(inv.req.Source())
}
