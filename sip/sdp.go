package sip

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// SDP is the part of a session description (RFC 4566) the edge uses.
type SDP struct {
	Origin   Origin
	ConnAddr netip.Addr // session-level c=
	Media    []MediaDesc
}

// Origin is the o= line.
type Origin struct {
	Username  string
	SessionID string
	Version   uint64
	Addr      string
}

// MediaDesc is one m= section.
type MediaDesc struct {
	Type      string // "audio"
	Port      int
	Proto     string // "RTP/AVP"
	Formats   []uint8
	ConnAddr  netip.Addr // media-level c=, overrides the session's
	RTPMap    map[uint8]RTPMap
	Ptime     int
	Direction string // sendrecv, sendonly, recvonly, inactive
	RTCPPort  int    // a=rtcp:, 0 when absent
	// Crypto are the usable SDES keys offered (RTP/SAVP); an a=crypto the
	// edge cannot use is skipped, as RFC 4568 §6.1 allows.
	Crypto []Crypto
}

// RTPMap is one a=rtpmap attribute.
type RTPMap struct {
	Name      string
	ClockRate int
}

// ErrBadSDP is wrapped by every parse error.
var ErrBadSDP = errors.New("malformed SDP")

// Limits that keep a hostile body from costing much.
const (
	maxSDPBytes   = 16 << 10
	maxSDPMedia   = 8
	maxSDPFormats = 32
)

// ParseSDP parses a session description. It accepts LF or CRLF line ends
// and ignores lines it has no use for.
func ParseSDP(body []byte) (*SDP, error) {
	if len(body) > maxSDPBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadSDP, len(body))
	}
	s := &SDP{}
	var m *MediaDesc
	sawVersion := false
	for lineNo, raw := range bytes.Split(body, []byte("\n")) {
		line := string(bytes.TrimRight(raw, "\r"))
		if line == "" {
			continue
		}
		if len(line) < 2 || line[1] != '=' {
			return nil, fmt.Errorf("%w: line %d is not type=value", ErrBadSDP, lineNo+1)
		}
		val := line[2:]
		switch line[0] {
		case 'v':
			if val != "0" {
				return nil, fmt.Errorf("%w: version %q", ErrBadSDP, val)
			}
			sawVersion = true
		case 'o':
			f := strings.Fields(val)
			if len(f) != 6 {
				return nil, fmt.Errorf("%w: o= needs 6 fields", ErrBadSDP)
			}
			v, err := strconv.ParseUint(f[2], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: o= version %q", ErrBadSDP, f[2])
			}
			s.Origin = Origin{Username: f[0], SessionID: f[1], Version: v, Addr: f[5]}
		case 'c':
			addr, err := parseConnection(val)
			if err != nil {
				return nil, err
			}
			if m != nil {
				m.ConnAddr = addr
			} else {
				s.ConnAddr = addr
			}
		case 'm':
			if len(s.Media) == maxSDPMedia {
				return nil, fmt.Errorf("%w: more than %d media", ErrBadSDP, maxSDPMedia)
			}
			md, err := parseMediaLine(val)
			if err != nil {
				return nil, err
			}
			s.Media = append(s.Media, md)
			m = &s.Media[len(s.Media)-1]
		case 'a':
			if m != nil {
				if err := m.attribute(val); err != nil {
					return nil, err
				}
			}
		}
	}
	if !sawVersion {
		return nil, fmt.Errorf("%w: no v= line", ErrBadSDP)
	}
	return s, nil
}

func parseConnection(val string) (netip.Addr, error) {
	f := strings.Fields(val)
	if len(f) != 3 || f[0] != "IN" || (f[1] != "IP4" && f[1] != "IP6") {
		return netip.Addr{}, fmt.Errorf("%w: c=%q", ErrBadSDP, val)
	}
	host, _, _ := strings.Cut(f[2], "/") // multicast TTL suffix
	addr, err := netip.ParseAddr(host)
	if err != nil {
		// A host name in c= is legal but rare; symmetric RTP will find the
		// real address from the first packets.
		return netip.Addr{}, nil
	}
	return addr, nil
}

func parseMediaLine(val string) (MediaDesc, error) {
	f := strings.Fields(val)
	if len(f) < 3 {
		return MediaDesc{}, fmt.Errorf("%w: m=%q", ErrBadSDP, val)
	}
	portText, _, _ := strings.Cut(f[1], "/")
	port, err := strconv.Atoi(portText)
	if err != nil || port < 0 || port > 65535 {
		return MediaDesc{}, fmt.Errorf("%w: m= port %q", ErrBadSDP, f[1])
	}
	md := MediaDesc{Type: f[0], Port: port, Proto: f[2], RTPMap: map[uint8]RTPMap{}, Direction: "sendrecv"}
	if len(f)-3 > maxSDPFormats {
		return MediaDesc{}, fmt.Errorf("%w: more than %d formats", ErrBadSDP, maxSDPFormats)
	}
	for _, pt := range f[3:] {
		n, err := strconv.Atoi(pt)
		if err != nil || n < 0 || n > 127 {
			if strings.HasPrefix(md.Proto, "RTP/") {
				return MediaDesc{}, fmt.Errorf("%w: payload type %q", ErrBadSDP, pt)
			}
			continue // non-RTP media may use format names
		}
		md.Formats = append(md.Formats, uint8(n))
	}
	return md, nil
}

func (m *MediaDesc) attribute(val string) error {
	name, arg, _ := strings.Cut(val, ":")
	switch name {
	case "rtpmap":
		ptText, enc, ok := strings.Cut(arg, " ")
		pt, err := strconv.Atoi(ptText)
		if !ok || err != nil || pt < 0 || pt > 127 {
			return fmt.Errorf("%w: a=rtpmap:%s", ErrBadSDP, arg)
		}
		parts := strings.Split(strings.TrimSpace(enc), "/")
		rate := 0
		if len(parts) > 1 {
			if rate, err = strconv.Atoi(parts[1]); err != nil {
				return fmt.Errorf("%w: a=rtpmap:%s", ErrBadSDP, arg)
			}
		}
		m.RTPMap[uint8(pt)] = RTPMap{Name: parts[0], ClockRate: rate}
	case "ptime":
		p, err := strconv.Atoi(strings.TrimSpace(arg))
		if err != nil || p <= 0 || p > 1000 {
			return fmt.Errorf("%w: a=ptime:%s", ErrBadSDP, arg)
		}
		m.Ptime = p
	case "sendrecv", "sendonly", "recvonly", "inactive":
		m.Direction = name
	case "crypto":
		if c, err := ParseCrypto(arg); err == nil {
			m.Crypto = append(m.Crypto, c)
		}
	case "rtcp":
		portText, _, _ := strings.Cut(strings.TrimSpace(arg), " ")
		p, err := strconv.Atoi(portText)
		if err != nil || p <= 0 || p > 65535 {
			return fmt.Errorf("%w: a=rtcp:%s", ErrBadSDP, arg)
		}
		m.RTCPPort = p
	}
	return nil
}

// AnswerSpec is what the edge puts in its SDP answer.
type AnswerSpec struct {
	SessionID string
	Version   uint64
	Addr      netip.Addr
	Port      int
	Media     Negotiated
}

// sessionLines writes the session-level lines of the edge's SDP: v=, o=,
// s=, c= and t=.
func sessionLines(b *strings.Builder, sessionID string, version uint64, a netip.Addr) {
	ipv := "IP4"
	if a.Is6() && !a.Is4In6() {
		ipv = "IP6"
	}
	addr := a.Unmap().String()
	fmt.Fprintf(b, "v=0\r\no=trunkgate %s %d IN %s %s\r\ns=trunkgate\r\nc=IN %s %s\r\nt=0 0\r\n",
		sessionID, version, ipv, addr, ipv, addr)
}

// BuildAnswer renders the SDP answer.
func BuildAnswer(a AnswerSpec) []byte {
	var b strings.Builder
	sessionLines(&b, a.SessionID, a.Version, a.Addr)
	m := a.Media
	fmt.Fprintf(&b, "m=audio %d %s %d", a.Port, m.proto(), m.PayloadType)
	if m.DTMFType != 0 {
		fmt.Fprintf(&b, " %d", m.DTMFType)
	}
	fmt.Fprintf(&b, "\r\na=rtpmap:%d %s/8000\r\n", m.PayloadType, m.Codec)
	if m.DTMFType != 0 {
		fmt.Fprintf(&b, "a=rtpmap:%d telephone-event/8000\r\na=fmtp:%d 0-16\r\n", m.DTMFType, m.DTMFType)
	}
	fmt.Fprintf(&b, "a=ptime:%d\r\na=%s\r\n", m.PtimeMS, m.Direction)
	if m.Secure() {
		fmt.Fprintf(&b, "a=crypto:%s\r\n", m.LocalCrypto.Attribute())
	}
	return []byte(b.String())
}

// OfferSpec is what the edge offers in an outbound INVITE.
type OfferSpec struct {
	SessionID string
	Version   uint64
	Addr      netip.Addr
	Port      int
	// Crypto, when set, makes the offer RTP/SAVP with these keys, one
	// a=crypto each (distinct tags): the answer picks one.
	Crypto []Crypto
	// Wideband offers G.722 first (the call's app takes 16 kHz audio).
	Wideband bool
}

// Offer payload types: PCMU, PCMA and G722 static, telephone-event
// dynamic.
const offerDTMFType = 101

// BuildOffer renders the edge's offer: G722 when wideband, PCMU, PCMA and
// telephone-event (RFC 4733, events 0-16), 20 ms packets, sendrecv.
func BuildOffer(o OfferSpec) []byte {
	var b strings.Builder
	sessionLines(&b, o.SessionID, o.Version, o.Addr)
	proto := "RTP/AVP"
	if len(o.Crypto) > 0 {
		proto = "RTP/SAVP"
	}
	wide, wideMap := "", ""
	if o.Wideband {
		wide, wideMap = "9 ", "a=rtpmap:9 G722/8000\r\n"
	}
	fmt.Fprintf(&b, "m=audio %d %s %s0 8 %d\r\n", o.Port, proto, wide, offerDTMFType)
	fmt.Fprintf(&b, "%sa=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:%d telephone-event/8000\r\na=fmtp:%d 0-16\r\n",
		wideMap, offerDTMFType, offerDTMFType)
	b.WriteString("a=ptime:20\r\na=sendrecv\r\n")
	for _, c := range o.Crypto {
		fmt.Fprintf(&b, "a=crypto:%s\r\n", c.Attribute())
	}
	return []byte(b.String())
}
