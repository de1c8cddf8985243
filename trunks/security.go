package trunks

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
)

// Media encryption of a trunk's calls (media_encryption).
const (
	MediaOff     = "off"     // RTP only
	MediaAllow   = "allow"   // inbound: SRTP when the carrier offers it; outbound: RTP
	MediaRequire = "require" // SRTP only; inbound SDES keys only over TLS signalling
)

// maxClientCA bounds a trunk's PEM CA bundle.
const maxClientCA = 64 << 10

// security validates the encryption settings of a spec into t.
func (s Spec) security(t *Trunk) error {
	switch s.MediaEncryption {
	case "":
		t.MediaEncryption = MediaOff
	case MediaOff, MediaAllow, MediaRequire:
		t.MediaEncryption = s.MediaEncryption
	default:
		return fmt.Errorf("%w: media_encryption must be %q, %q or %q", ErrInvalid, MediaOff, MediaAllow, MediaRequire)
	}
	if t.Direction == Outbound && t.MediaEncryption == MediaRequire {
		for _, g := range t.Gateways {
			if g.Transport != "tls" {
				return fmt.Errorf("%w: media_encryption require sends SRTP keys in the SDP: gateway %s must be transport=tls", ErrInvalid, g.URI)
			}
		}
	}
	if s.TLSClientCA == "" && s.TLSClientSubject == "" {
		return nil
	}
	if t.Direction != Inbound {
		return fmt.Errorf("%w: tls_client_ca and tls_client_subject are for inbound trunks (carriers calling in over TLS)", ErrInvalid)
	}
	if s.TLSClientCA == "" {
		return fmt.Errorf("%w: tls_client_subject needs tls_client_ca", ErrInvalid)
	}
	if len(s.TLSClientCA) > maxClientCA {
		return fmt.Errorf("%w: tls_client_ca is over %d bytes", ErrInvalid, maxClientCA)
	}
	if len(s.TLSClientSubject) > 255 || strings.IndexFunc(s.TLSClientSubject, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		return fmt.Errorf("%w: tls_client_subject must be at most 255 printable characters", ErrInvalid)
	}
	t.TLSClientCA, t.TLSClientSubject = s.TLSClientCA, s.TLSClientSubject
	return t.loadClientCA()
}

// loadClientCA parses the trunk's client CA bundle (when it has one) into
// the pool ClientCertTrusted verifies against.
func (t *Trunk) loadClientCA() error {
	if t.TLSClientCA == "" {
		t.clientCAs = nil
		return nil
	}
	pool := x509.NewCertPool()
	rest := []byte(t.TLSClientCA)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("%w: tls_client_ca holds a %s: want only CERTIFICATE blocks (never a private key)", ErrInvalid, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("%w: tls_client_ca: %v", ErrInvalid, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return fmt.Errorf("%w: tls_client_ca has no PEM certificate", ErrInvalid)
	}
	t.clientCAs = pool
	return nil
}

// WantsClientCert reports whether carriers must present a client
// certificate on this trunk (mutual TLS).
func (t *Trunk) WantsClientCert() bool { return t.TLSClientCA != "" }

// ClientCertTrusted reports whether chain (leaf first, as the carrier
// sent it over TLS) verifies against the trunk's client CA for client
// authentication and, when the trunk names a subject, whether the leaf's
// common name or one of its DNS names is that subject.
func (t *Trunk) ClientCertTrusted(chain []*x509.Certificate) bool {
	if t.clientCAs == nil || len(chain) == 0 {
		return false
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: t.clientCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return false
	}
	if t.TLSClientSubject == "" {
		return true
	}
	return leaf.Subject.CommonName == t.TLSClientSubject || slices.Contains(leaf.DNSNames, t.TLSClientSubject)
}
