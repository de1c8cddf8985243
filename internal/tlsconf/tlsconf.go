// Package tlsconf owns the edge's TLS settings: its certificate and key,
// read from files and read again on demand (SIGHUP) without dropping a
// connection, the CA bundles it verifies peers against, and the floor of
// TLS 1.2. It knows nothing of SIP, HTTP or WebSocket.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// MinVersion is the oldest TLS the edge speaks, as server and client.
const MinVersion = tls.VersionTLS12

// Certificate is the edge's certificate chain and private key, from
// files. Handshakes read the current pair; Reload swaps it.
type Certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadCertificate reads a PEM certificate chain and its private key.
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again. On an error the pair in use stays.
func (c *Certificate) Reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		// LoadX509KeyPair's errors name files and PEM blocks, never key
		// material.
		return fmt.Errorf("TLS certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	if pair.Leaf == nil && len(pair.Certificate) > 0 {
		pair.Leaf, _ = x509.ParseCertificate(pair.Certificate[0])
	}
	c.cur.Store(&pair)
	return nil
}

// Leaf is the certificate in use (for logs: its subject and expiry).
func (c *Certificate) Leaf() *x509.Certificate { return c.cur.Load().Leaf }

func (c *Certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }

// ClientCertificate presents c to a server that asks for a client
// certificate (tls.Config.GetClientCertificate): a carrier's gateway
// doing mutual TLS.
func (c *Certificate) ClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// ServerConfig is a server's TLS configuration presenting c.
func ServerConfig(c *Certificate) *tls.Config {
	return &tls.Config{MinVersion: MinVersion, GetCertificate: c.get}
}

// ErrNoCertificates is returned for a CA bundle without one certificate.
var ErrNoCertificates = errors.New("no PEM certificates")

// CAPool reads a PEM bundle of CA certificates; "" is the system's roots
// (nil).
func CAPool(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA bundle %s: %w", file, ErrNoCertificates)
	}
	return pool, nil
}

// ClientConfig is a client's TLS configuration verifying servers against
// the CA bundle in caFile ("" for the system's roots).
func ClientConfig(caFile string) (*tls.Config, error) {
	pool, err := CAPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: MinVersion, RootCAs: pool}, nil
}
