package media

import (
	"errors"
	"fmt"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// SRTP protects one call's RTP and RTCP (RFC 3711; AES-GCM, RFC 7714)
// with keys exchanged in SDP (SDES): what the edge sends is encrypted and
// authenticated with its own master key, what it receives is checked
// against the peer's and decrypted, with replay protection. Each
// direction must be used from one goroutine at a time. Buffers are the
// caller's: a packet costs no allocation.
type SRTP struct {
	out, in       *srtp.Context
	outHdr, inHdr rtp.Header
	outCtl, inCtl rtcp.Header
}

// ErrSuite is an SRTP crypto suite the edge does not speak.
var ErrSuite = errors.New("unsupported SRTP suite")

// srtpProfiles maps SDES suite names to pion's profiles.
var srtpProfiles = map[string]srtp.ProtectionProfile{
	"AES_CM_128_HMAC_SHA1_80": srtp.ProtectionProfileAes128CmHmacSha1_80,
	"AES_CM_128_HMAC_SHA1_32": srtp.ProtectionProfileAes128CmHmacSha1_32,
	"AEAD_AES_128_GCM":        srtp.ProtectionProfileAeadAes128Gcm,
}

// srtpOverhead is the most a protected RTP packet grows: the 16-byte
// GCM tag (HMAC-SHA1-80 adds 10, -32 adds 4).
const srtpOverhead = 16

// replayWindow is how many packets back a late one is still accepted
// (RFC 3711 §3.3.2 asks for at least 64).
const replayWindow = 128

// NewSRTP sets up both directions of suite: local is the edge's master
// key and salt (what it sends), remote the peer's.
func NewSRTP(suite string, localKey, localSalt, remoteKey, remoteSalt []byte) (*SRTP, error) {
	profile, ok := srtpProfiles[suite]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrSuite, suite)
	}
	out, err := srtp.CreateContext(localKey, localSalt, profile)
	if err != nil {
		return nil, fmt.Errorf("srtp: %w", err)
	}
	in, err := srtp.CreateContext(remoteKey, remoteSalt, profile,
		srtp.SRTPReplayProtection(replayWindow), srtp.SRTCPReplayProtection(replayWindow))
	if err != nil {
		return nil, fmt.Errorf("srtp: %w", err)
	}
	return &SRTP{out: out, in: in}, nil
}

// ProtectRTP encrypts an RTP packet into dst (which needs room for the
// packet and its tag: len(pkt)+16).
func (s *SRTP) ProtectRTP(dst, pkt []byte) ([]byte, error) {
	return s.out.EncryptRTP(dst, pkt, &s.outHdr)
}

// UnprotectRTP checks and decrypts an SRTP packet into dst; a forged,
// replayed or damaged packet is an error.
func (s *SRTP) UnprotectRTP(dst, pkt []byte) ([]byte, error) {
	return s.in.DecryptRTP(dst, pkt, &s.inHdr)
}

// ProtectRTCP encrypts an RTCP compound packet into dst.
func (s *SRTP) ProtectRTCP(dst, pkt []byte) ([]byte, error) {
	return s.out.EncryptRTCP(dst, pkt, &s.outCtl)
}

// UnprotectRTCP checks and decrypts an SRTCP packet into dst.
func (s *SRTP) UnprotectRTCP(dst, pkt []byte) ([]byte, error) {
	return s.in.DecryptRTCP(dst, pkt, &s.inCtl)
}
