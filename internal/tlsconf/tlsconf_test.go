package tlsconf

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"trunkgate/internal/tlsconf/tlstest"
)

// A server presenting a reloaded certificate: handshakes before the
// reload see the first, after it the second; a bad file keeps the pair in
// use; clients verify against the CA bundle and refuse TLS 1.1.
func TestReloadAndVerify(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test CA")
	first := ca.Issue(t, dir, "first", "127.0.0.1")
	second := ca.Issue(t, dir, "second", "127.0.0.1")
	certFile, keyFile := filepath.Join(dir, "edge.crt"), filepath.Join(dir, "edge.key")
	install := func(p tlstest.Pair) {
		for src, dst := range map[string]string{p.CertFile: certFile, p.KeyFile: keyFile} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(first)
	cert, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerConfig(cert))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	client, err := ClientConfig(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	presented := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), client)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := presented(); got != "first" {
		t.Fatalf("presented %q, want first", got)
	}
	install(second)
	if err := cert.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := presented(); got != "second" {
		t.Fatalf("after reload presented %q, want second", got)
	}
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cert.Reload(); err == nil {
		t.Fatal("a broken key file reloaded")
	}
	if got := presented(); got != "second" {
		t.Fatalf("after a failed reload presented %q, want second still", got)
	}
	// Another CA's server is refused; so is TLS 1.1.
	other := tlstest.NewCA(t, "other CA")
	otherClient, _ := ClientConfig(other.File)
	if c, err := tls.Dial("tcp", ln.Addr().String(), otherClient); err == nil {
		c.Close()
		t.Fatal("a certificate from another CA verified")
	}
	old := client.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
	if c, err := tls.Dial("tcp", ln.Addr().String(), old); err == nil {
		c.Close()
		t.Fatal("TLS 1.1 accepted")
	}
}

func TestCAPool(t *testing.T) {
	if p, err := CAPool(""); p != nil || err != nil {
		t.Fatalf("no bundle: %v, %v; want the system roots (nil)", p, err)
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("nothing here"), 0o644)
	if _, err := CAPool(empty); !errors.Is(err, ErrNoCertificates) {
		t.Fatalf("bundle without certificates: %v", err)
	}
	if _, err := CAPool(filepath.Join(t.TempDir(), "missing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing bundle: %v", err)
	}
}
