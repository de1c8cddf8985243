package trunks

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"testing"
	"time"

	"trunkgate/internal/tlsconf/tlstest"
)

func certChain(t *testing.T, p tlstest.Pair) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(p.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{c}
}

func TestMediaEncryptionAndClientCA(t *testing.T) {
	ca := tlstest.NewCA(t, "carrier CA")
	caPEM, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := os.ReadFile(ca.Issue(t, t.TempDir(), "x").KeyFile)
	tests := []struct {
		name    string
		edit    func(*Spec)
		wantErr bool
	}{
		{"default is off", func(s *Spec) {}, false},
		{"require", func(s *Spec) { s.MediaEncryption = MediaRequire }, false},
		{"unknown mode", func(s *Spec) { s.MediaEncryption = "sometimes" }, true},
		{"client CA and subject", func(s *Spec) { s.TLSClientCA, s.TLSClientSubject = string(caPEM), "sbc.example" }, false},
		{"subject without CA", func(s *Spec) { s.TLSClientSubject = "sbc.example" }, true},
		{"not PEM", func(s *Spec) { s.TLSClientCA = "hello" }, true},
		{"a private key as CA", func(s *Spec) { s.TLSClientCA = string(keyPEM) }, true},
		{"subject with a newline", func(s *Spec) { s.TLSClientCA, s.TLSClientSubject = string(caPEM), "a\nb" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			tt.edit(&s)
			tr, err := s.build(time.Now())
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("build: %v, want error %v", err, tt.wantErr)
			}
			if err == nil && s.MediaEncryption == "" && tr.MediaEncryption != MediaOff {
				t.Fatalf("media_encryption %q, want off by default", tr.MediaEncryption)
			}
		})
	}
}

func TestOutboundSRTPNeedsTLSGateways(t *testing.T) {
	for gw, ok := range map[string]bool{"sip:gw.example;transport=tls": true, "sips:gw.example": true, "sip:gw.example": false,
		"sip:gw.example;transport=tcp": false} {
		s := Spec{KeyID: "AAAAAAAAAAAA", Direction: Outbound, Gateways: []GatewaySpec{{URI: gw}}, MediaEncryption: MediaRequire}
		if _, err := s.build(time.Now()); (err == nil) != ok {
			t.Errorf("require with gateway %s: %v, want ok %v", gw, err, ok)
		}
	}
}

func TestClientCertTrusted(t *testing.T) {
	ca, other := tlstest.NewCA(t, "carrier CA"), tlstest.NewCA(t, "other CA")
	caPEM, _ := os.ReadFile(ca.File)
	dir := t.TempDir()
	s := validSpec()
	s.TLSClientCA, s.TLSClientSubject = string(caPEM), "sbc.example"
	tr, err := s.build(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		chain []*x509.Certificate
		want  bool
	}{
		{"the carrier's, by common name", certChain(t, ca.Issue(t, dir, "sbc.example")), true},
		{"the carrier's, by DNS name", certChain(t, ca.Issue(t, dir, "edge-7", "sbc.example")), true},
		{"the carrier's CA, another subject", certChain(t, ca.Issue(t, dir, "pbx.example")), false},
		{"another CA", certChain(t, other.Issue(t, dir, "sbc.example")), false},
		{"none", nil, false},
	} {
		if got := tr.ClientCertTrusted(tt.chain); got != tt.want {
			t.Errorf("%s: trusted %v, want %v", tt.name, got, tt.want)
		}
	}
	// Stored and read back, the CA still verifies.
	ctx := context.Background()
	store, err := NewSQLStore(ctx, openDB(t))
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDirectory(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	created, err := d.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	again, err := NewDirectory(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	back, ok := again.Get(created.ID)
	if !ok || !back.WantsClientCert() || !back.ClientCertTrusted(certChain(t, ca.Issue(t, dir, "sbc.example"))) ||
		back.MediaEncryption != MediaOff {
		t.Fatalf("reloaded trunk %+v", back)
	}
}
