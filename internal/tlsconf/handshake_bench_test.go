package tlsconf

import (
	"crypto/tls"
	"net"
	"testing"

	"trunkgate/internal/tlsconf/tlstest"
)

// BenchmarkHandshake is the cost of a carrier's TLS connection to the
// edge before its first INVITE: a full handshake (no resumption) with the
// edge's ECDSA P-256 certificate, the client verifying it against the CA,
// over an in-memory pipe: the CPU of both ends, without network delay.
// With a client certificate it is mutual TLS (a trunk's tls_client_ca).
func BenchmarkHandshake(b *testing.B) {
	dir := b.TempDir()
	ca := tlstest.NewCA(b, "bench CA")
	pair := ca.Issue(b, dir, "edge", "127.0.0.1")
	client := ca.Issue(b, dir, "carrier", "sbc.carrier.example")
	cert, err := LoadCertificate(pair.CertFile, pair.KeyFile)
	if err != nil {
		b.Fatal(err)
	}
	clientCert, err := tls.LoadX509KeyPair(client.CertFile, client.KeyFile)
	if err != nil {
		b.Fatal(err)
	}
	pool, err := CAPool(ca.File)
	if err != nil {
		b.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		version uint16
		mutual  bool
	}{{"TLS1.3", tls.VersionTLS13, false}, {"TLS1.2", tls.VersionTLS12, false}, {"TLS1.3-mutual", tls.VersionTLS13, true}} {
		b.Run(tt.name, func(b *testing.B) {
			server := ServerConfig(cert)
			server.ClientAuth = tls.RequestClientCert
			cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: tt.version, ClientSessionCache: nil}
			if tt.mutual {
				cfg.Certificates = []tls.Certificate{clientCert}
			}
			b.ReportAllocs()
			for range b.N {
				c1, c2 := net.Pipe()
				done := make(chan error, 1)
				go func() { done <- tls.Server(c2, server).Handshake() }()
				if err := tls.Client(c1, cfg).Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				c1.Close()
				c2.Close()
			}
		})
	}
}
