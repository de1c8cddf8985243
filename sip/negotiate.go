package sip

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// SDP offer/answer (RFC 3264) as the edge does it: which stream, codec,
// DTMF type, address and direction to take from an offer or an answer,
// under a trunk's encryption and wideband policy.

// ErrNoCommonCodec means the offer has no audio stream in a codec the
// edge speaks: the answer is 488 Not Acceptable Here.
var ErrNoCommonCodec = errors.New("no common codec")

// Encryption is what a trunk accepts for media: its media_encryption.
type Encryption string

const (
	EncryptionOff     Encryption = "off"     // RTP only
	EncryptionAllow   Encryption = "allow"   // SRTP when the offer has it, else RTP
	EncryptionRequire Encryption = "require" // SRTP only
)

// Refusals of an offer for its media encryption (both 488).
var (
	// ErrSRTPRequired: the trunk requires SRTP and the offer has only RTP.
	ErrSRTPRequired = errors.New("SRTP required")
	// ErrSRTPOff: the offer has only SRTP and the trunk does not do it.
	ErrSRTPOff = errors.New("SRTP not enabled")
)

// Negotiated is the outcome of an offer: what to send, where, and how.
type Negotiated struct {
	Codec       string // "PCMU", "PCMA" or "G722"
	PayloadType uint8
	DTMFType    uint8 // telephone-event payload type; 0 = none offered
	PtimeMS     int
	Remote      netip.AddrPort
	RemoteRTCP  netip.AddrPort // zero when the offer has no a=rtcp
	// Direction is ours, the mirror of the offer's: sendonly → recvonly.
	Direction string
	// RemoteCrypto is the far end's SDES key (what it sends with) and
	// LocalCrypto the edge's, of the same tag and suite; both zero for
	// plain RTP.
	RemoteCrypto, LocalCrypto Crypto
}

// Secure reports whether the media is SRTP.
func (n Negotiated) Secure() bool { return n.RemoteCrypto.Suite != "" }

// proto is the m= line's transport protocol for n.
func (n Negotiated) proto() string {
	if n.Secure() {
		return "RTP/SAVP"
	}
	return "RTP/AVP"
}

// Policy is what the edge takes of an offer on one trunk.
type Policy struct {
	Encryption Encryption
	// Wideband: the call's app takes 16 kHz audio, so G.722 is as good
	// as G.711 and is taken where the offer prefers it. Otherwise G.722
	// is taken only from an offer without G.711 (the app would hear it at
	// 8 kHz anyway, for the cost of transcoding).
	Wideband bool
}

// Negotiate picks, under narrowband policy, from the first audio stream
// that enc allows (see Policy.Negotiate).
func Negotiate(offer *SDP, enc Encryption) (Negotiated, error) {
	return Policy{Encryption: enc}.Negotiate(offer)
}

// Negotiate picks, from the first audio stream that p's encryption
// allows, the first codec of the offer that the edge supports (PCMU,
// PCMA, G722 as p says) and telephone-event; for RTP/SAVP the strongest
// a=crypto the edge speaks, and a fresh key of its own for the answer. An
// SRTP stream without a usable a=crypto is skipped.
func (p Policy) Negotiate(offer *SDP) (Negotiated, error) {
	enc := p.Encryption
	var plainSkipped, secureSkipped bool
	for _, m := range offer.Media {
		if m.Type != "audio" || m.Port == 0 {
			continue
		}
		var remoteKey Crypto
		switch m.Proto {
		case "RTP/AVP", "RTP/AVPF":
			if enc == EncryptionRequire {
				plainSkipped = true
				continue
			}
		case "RTP/SAVP", "RTP/SAVPF":
			c, ok := ChooseCrypto(m.Crypto)
			if !ok {
				continue
			}
			if enc != EncryptionAllow && enc != EncryptionRequire {
				secureSkipped = true
				continue
			}
			remoteKey = c
		default:
			continue
		}
		n, ok := negotiateCodec(offer, m, p.Wideband)
		if !ok {
			continue
		}
		if remoteKey.Suite != "" {
			local, err := NewCrypto(remoteKey.Tag, remoteKey.Suite)
			if err != nil {
				return Negotiated{}, fmt.Errorf("SRTP key: %w", err)
			}
			n.RemoteCrypto, n.LocalCrypto = remoteKey, local
		}
		return n, nil
	}
	switch {
	case plainSkipped:
		return Negotiated{}, ErrSRTPRequired
	case secureSkipped:
		return Negotiated{}, ErrSRTPOff
	}
	return Negotiated{}, ErrNoCommonCodec
}

// format names payload type pt of m (upper case) with its clock rate:
// from a=rtpmap, else the static types the edge speaks (0 PCMU, 8 PCMA,
// 9 G722).
func (m MediaDesc) format(pt uint8) (name string, rate int) {
	if rm, ok := m.RTPMap[pt]; ok {
		return strings.ToUpper(rm.Name), rm.ClockRate
	}
	switch pt {
	case 0:
		return "PCMU", 8000
	case 8:
		return "PCMA", 8000
	case 9:
		return "G722", 8000 // 16 kHz audio, an 8 kHz clock (RFC 3551 §4.5.2)
	}
	return "", 8000
}

// negotiateCodec reads codec, telephone-event, ptime, address and
// direction from one audio stream; false when it has no codec the edge
// speaks. G.722 is the stream's first choice only when wideband is
// wanted, else its last resort.
func negotiateCodec(offer *SDP, m MediaDesc, wideband bool) (Negotiated, bool) {
	var n Negotiated
	found := false
	var g722 uint8
	var hasG722 bool
	for _, pt := range m.Formats {
		name, rate := m.format(pt)
		if rate != 8000 {
			continue
		}
		switch {
		case found:
		case name == "PCMU" || name == "PCMA", name == "G722" && wideband:
			n.Codec, n.PayloadType, found = name, pt, true
		case name == "G722" && !hasG722:
			g722, hasG722 = pt, true
		}
		if name == "TELEPHONE-EVENT" && n.DTMFType == 0 {
			n.DTMFType = pt
		}
	}
	if !found && hasG722 {
		n.Codec, n.PayloadType, found = "G722", g722, true
	}
	if !found {
		return n, false
	}
	n.PtimeMS = m.Ptime
	if n.PtimeMS == 0 {
		n.PtimeMS = 20
	}
	addr := m.ConnAddr
	if !addr.IsValid() {
		addr = offer.ConnAddr
	}
	if addr.IsValid() {
		n.Remote = netip.AddrPortFrom(addr.Unmap(), uint16(m.Port))
		if m.RTCPPort != 0 {
			n.RemoteRTCP = netip.AddrPortFrom(addr.Unmap(), uint16(m.RTCPPort))
		}
	}
	n.Direction = mirror(m.Direction)
	return n, true
}

func mirror(d string) string {
	switch d {
	case "sendonly":
		return "recvonly"
	case "recvonly":
		return "sendonly"
	case "inactive":
		return "inactive"
	}
	return "sendrecv"
}

// ErrRekey: a re-offer changes the far end's SRTP key. The call keeps
// its keys and the re-offer gets 488.
var ErrRekey = errors.New("SRTP re-keying is not supported")

// NegotiateKeeping answers a re-INVITE's offer: the codec chosen at setup
// stays if the offer still lists it (changing codec mid-call is refused),
// and so do SRTP and its keys; address, ptime, telephone-event and
// direction follow the new offer.
func NegotiateKeeping(offer *SDP, current Negotiated) (Negotiated, error) {
	p := Policy{Encryption: EncryptionOff, Wideband: current.Codec == "G722"}
	if current.Secure() {
		p.Encryption = EncryptionRequire
	}
	n, err := p.Negotiate(offer)
	if err != nil {
		return n, err
	}
	if current.Secure() {
		if n.RemoteCrypto.Suite != current.RemoteCrypto.Suite || !bytes.Equal(n.RemoteCrypto.Key, current.RemoteCrypto.Key) {
			return Negotiated{}, ErrRekey
		}
		n.LocalCrypto = current.LocalCrypto
		n.LocalCrypto.Tag = n.RemoteCrypto.Tag
	}
	if n.Codec == current.Codec {
		return n, nil
	}
	for _, m := range offer.Media {
		if m.Type != "audio" || m.Port == 0 {
			continue
		}
		for _, pt := range m.Formats {
			if name, _ := m.format(pt); name == current.Codec {
				n.Codec, n.PayloadType = current.Codec, pt
				return n, nil
			}
		}
	}
	return Negotiated{}, fmt.Errorf("%w: offer drops %s", ErrNoCommonCodec, current.Codec)
}

// NegotiateAnswer reads the far end's answer to the edge's offer: as an
// offer, plus, when the edge offered SRTP keys, the answer must be SRTP
// with one of the offered tags and suites (RFC 4568 §7.1.3), and the
// edge sends with the key of that tag.
func NegotiateAnswer(answer *SDP, offer OfferSpec) (Negotiated, error) {
	p := Policy{Encryption: EncryptionOff, Wideband: offer.Wideband}
	if len(offer.Crypto) > 0 {
		p.Encryption = EncryptionRequire
	}
	n, err := p.Negotiate(answer)
	if err != nil || len(offer.Crypto) == 0 {
		return n, err
	}
	for _, c := range offer.Crypto {
		if c.Tag == n.RemoteCrypto.Tag && c.Suite == n.RemoteCrypto.Suite {
			n.LocalCrypto = c
			return n, nil
		}
	}
	return Negotiated{}, fmt.Errorf("%w: the answer's a=crypto matches no offered tag and suite", ErrBadCrypto)
}
