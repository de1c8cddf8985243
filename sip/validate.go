package sip

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"strings"

	gosip "github.com/emiago/sipgo/sip"

	"trunkgate/refusal"
)

// What a request must be before a handler sees it. Two gates, one per
// stage of sipgo's pipeline:
//
//   - screenDatagram, sipgo's read filter, sees each UDP datagram before
//     sipgo parses it. It drops what the flood guard refuses without
//     parsing it, and answers a request sipgo cannot parse with a
//     stateless 400 (416 for an unknown URI scheme) built from the raw
//     bytes: left unanswered, a carrier's malformed INVITE would be
//     retransmitted for 32 seconds and parsed again each time.
//   - checkRequest, in guard, sees each parsed request (UDP and TCP) and
//     refuses what parses but breaks RFC 3261 §8.2: a version other than
//     SIP/2.0, a header that must be single given twice, a CSeq whose
//     method is not the request's, an unknown URI scheme, a Require the
//     edge cannot honour.
//
// Methods the edge does not take end in onNoRoute: 405 for SIP methods it
// knows, 501 for the rest (RFC 3261 §8.2.1, §21.5.2), both with Allow.
// RFC 4475's torture messages are the test corpus (e2e TestTortureMessages).

// takenMethods are the methods with a handler; allowMethods lists them.
var takenMethods = map[string]bool{"INVITE": true, "ACK": true, "BYE": true, "CANCEL": true, "OPTIONS": true,
	"INFO": true, "UPDATE": true, "NOTIFY": true}

// knownMethods are SIP methods of RFC 3261 and its extensions that the
// edge recognises but does not take: 405, not 501.
var knownMethods = map[string]bool{"REGISTER": true, "MESSAGE": true, "SUBSCRIBE": true,
	"PUBLISH": true, "REFER": true, "PRACK": true}

// schemeSupported reports whether the edge can route a Request-URI of
// this scheme; the rest get 416 (RFC 3261 §8.2.2.1).
func schemeSupported(scheme string) bool {
	return strings.EqualFold(scheme, "sip") || strings.EqualFold(scheme, "sips") || strings.EqualFold(scheme, "tel")
}

// singleHeaders may appear once in a request (RFC 3261 §20, RFC 4475
// §3.3.8–3.3.9): two Content-Lengths make the framing ambiguous, two
// Call-IDs or CSeqs make the transaction ambiguous.
var singleHeaders = []string{"Call-ID", "From", "To", "CSeq", "Max-Forwards", "Content-Length", "Content-Type"}

// checkRequest refuses a parsed request that breaks RFC 3261 §8.2, in the
// order the RFC checks. detail says what was wrong (the Warning text);
// extra are the headers the refusal carries.
func checkRequest(req *gosip.Request) (r refusal.Reason, detail string, extra []gosip.Header, refused bool) {
	if req.SipVersion != "SIP/2.0" {
		return refusal.VersionUnsupported, "only SIP/2.0 is supported", nil, true
	}
	for _, name := range singleHeaders {
		if len(req.GetHeaders(name)) > 1 {
			return refusal.Malformed, "more than one " + name, nil, true
		}
	}
	method := req.Method.String()
	if cseq := req.CSeq(); cseq != nil && takenMethods[method] && !strings.EqualFold(cseq.MethodName.String(), method) {
		return refusal.Malformed, "CSeq method does not match the request", nil, true
	}
	if !schemeSupported(req.Recipient.Scheme) {
		return refusal.SchemeUnsupported, "", nil, true
	}
	// RFC 3261 §8.2.2.3: ACK and CANCEL carry no Require to honour.
	if !req.IsAck() && !req.IsCancel() {
		var tags []string
		for _, h := range req.GetHeaders("Require") {
			for _, tag := range strings.Split(h.Value(), ",") {
				if tag = strings.TrimSpace(tag); tag != "" {
					tags = append(tags, tag)
				}
			}
		}
		if len(tags) > 0 {
			return refusal.ExtensionUnsupported, "", []gosip.Header{gosip.NewHeader("Unsupported", strings.Join(tags, ", "))}, true
		}
	}
	return 0, "", nil, false
}

// onNoRoute answers a method the edge does not take.
func (s *Server) onNoRoute(req *gosip.Request, tx gosip.ServerTransaction) {
	r := refusal.MethodUnknown
	if knownMethods[req.Method.String()] {
		r = refusal.MethodNotAllowed
	}
	s.refuse(tx, req, r, "", gosip.NewHeader("Allow", allowMethods))
}

// refuse answers req for a protocol refusal: the code and phrase of the
// table, a Warning with detail when there is one (RFC 3261 §20.43: 399 is
// "miscellaneous"), Retry-After where the table has one.
func (s *Server) refuse(tx gosip.ServerTransaction, req *gosip.Request, r refusal.Reason, detail string, extra ...gosip.Header) {
	code, phrase := r.SIP()
	res := gosip.NewResponseFromRequest(req, code, phrase, nil)
	res.SipVersion = "SIP/2.0" // sipgo copies the request's, which may be what is refused
	if detail != "" {
		res.AppendHeader(gosip.NewHeader("Warning", s.warning(detail)))
	}
	if ra := r.SIPRetryAfter(); ra > 0 {
		res.AppendHeader(gosip.NewHeader("Retry-After", strconv.Itoa(ra)))
	}
	for _, h := range extra {
		res.AppendHeader(h)
	}
	s.identify(res, "Server")
	if err := s.respond(tx, res); err != nil {
		s.log.Debug("sip respond failed", "code", code, "method", req.Method.String(), "error", err)
	}
}

func (s *Server) warning(detail string) string {
	return "399 " + s.cfg.ContactIP.String() + " " + quote(detail)
}

// screenDatagram is sipgo's read filter. TCP streams pass untouched (sipgo
// frames them; a stream it cannot parse is closed); on UDP each datagram
// is one message.
func (s *Server) screenDatagram(p gosip.TransportReadProps, data []byte) ([]byte, error) {
	if !strings.EqualFold(p.Transport, "udp") || !looksLikeRequest(data) {
		return data, nil // responses, keep-alives, streams
	}
	src := addrPortOf(p.RemoteAddr)
	if s.cfg.Screen != nil && src.IsValid() && !s.cfg.Screen(src.Addr()) {
		if s.cfg.ScreenReply && !bytes.HasPrefix(data, []byte("ACK ")) {
			s.replyStateless(data, src, refusal.Flooded)
		}
		return nil, nil
	}
	msg, err := s.parser.ParseSIP(data)
	if err == nil {
		if _, ok := msg.(*gosip.Request); ok {
			return data, nil
		}
	}
	r := refusal.Malformed
	if scheme, ok := rawScheme(data); ok && !schemeSupported(scheme) {
		r = refusal.SchemeUnsupported
	}
	code := 0
	if !bytes.HasPrefix(data, []byte("ACK ")) && s.replyStateless(data, src, r) {
		code, _ = r.SIP()
	}
	// Logged the way sipgo logs what it cannot parse, so the same
	// rate-limited, excerpting handler takes both.
	s.log.Error("failed to parse", "data", string(data), "error", err, "source", src.String(),
		"answered", code)
	return nil, nil
}

// looksLikeRequest tells a request from a response (status line "SIP/")
// and from a CRLF keep-alive (RFC 5626 §3.5.1).
func looksLikeRequest(data []byte) bool {
	if len(bytes.Trim(data, "\r\n\x00")) == 0 {
		return false
	}
	return !bytes.HasPrefix(data, []byte("SIP/"))
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// rawScheme is the Request-URI's scheme, read from the request line.
func rawScheme(data []byte) (string, bool) {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	_, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return "", false
	}
	scheme, _, ok := bytes.Cut(rest, []byte(":"))
	if !ok || len(scheme) == 0 || bytes.ContainsAny(scheme, " <>\t") {
		return "", false
	}
	return string(scheme), true
}

// replyStateless answers a request that will never reach a transaction
// (RFC 3261 §8.2.6): its Via values, From, To (with a tag added), Call-ID
// and CSeq copied as they came. Without a Via and a CSeq no response can
// be built and the request is dropped. The answer goes back to the
// datagram's source (RFC 3581's symmetric response), never to an address
// a forged Via names: the edge is no reflector.
func (s *Server) replyStateless(data []byte, dst netip.AddrPort, r refusal.Reason) bool {
	if !dst.IsValid() {
		return false
	}
	code, phrase := r.SIP()
	var b bytes.Buffer
	b.WriteString("SIP/2.0 ")
	b.WriteString(strconv.Itoa(code))
	b.WriteByte(' ')
	b.WriteString(phrase)
	b.WriteString("\r\n")
	var haveVia, haveCSeq bool
	eachRawHeader(data, func(name string, line []byte) {
		switch name {
		case "via":
			haveVia = true
		case "cseq":
			haveCSeq = true
		case "from", "call-id":
		case "to":
			b.Write(line)
			if !rawHasTag(line) {
				b.WriteString(";tag=")
				b.WriteString(gosip.GenerateTagN(16))
			}
			b.WriteString("\r\n")
			return
		default:
			return
		}
		b.Write(line)
		b.WriteString("\r\n")
	})
	if !haveVia || !haveCSeq {
		return false
	}
	if ra := r.SIPRetryAfter(); ra > 0 {
		b.WriteString("Retry-After: " + strconv.Itoa(ra) + "\r\n")
	}
	if s.cfg.UserAgent != "" {
		b.WriteString("Server: " + s.cfg.UserAgent + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	if _, err := s.udp.WriteTo(b.Bytes(), net.UDPAddrFromAddrPort(dst)); err != nil {
		s.log.Debug("stateless reply failed", "code", code, "error", err)
		return false
	}
	return true
}

// compactNames are RFC 3261 §7.3.3's one-letter header names, for the
// headers a stateless reply copies.
var compactNames = map[string]string{"v": "via", "f": "from", "t": "to", "i": "call-id"}

// eachRawHeader calls fn with each header of a raw message's header
// block: its lower-case long name and its whole line, folded
// continuation lines included. It stops at the empty line, or at the end
// of the datagram when there is none (RFC 4475 §3.1.2.15's message has
// none).
func eachRawHeader(data []byte, fn func(name string, line []byte)) {
	_, rest, ok := bytes.Cut(data, []byte("\n")) // the start line
	for ok && len(rest) > 0 {
		end := 0
		for {
			nl := bytes.IndexByte(rest[end:], '\n')
			if nl < 0 {
				end = len(rest)
				break
			}
			end += nl + 1
			if end >= len(rest) || (rest[end] != ' ' && rest[end] != '\t') {
				break
			}
		}
		line := bytes.TrimRight(rest[:end], "\r\n")
		rest = rest[end:]
		if len(line) == 0 {
			return
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		name := strings.ToLower(strings.TrimSpace(string(line[:colon])))
		if long, ok := compactNames[name]; ok {
			name = long
		}
		fn(name, line)
	}
}

// rawHasTag reports whether a raw To line has a tag parameter: a ';'
// outside quotes and angle brackets followed by "tag" (LWS allowed).
func rawHasTag(line []byte) bool {
	colon := bytes.IndexByte(line, ':')
	inQuote, angle := false, 0
	for i := colon + 1; i < len(line); i++ {
		switch c := line[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == '<':
			angle++
		case c == '>':
			angle--
		case c == ';' && angle == 0:
			name, _, _ := bytes.Cut(line[i+1:], []byte("="))
			name, _, _ = bytes.Cut(name, []byte(";"))
			if strings.EqualFold(strings.TrimSpace(string(name)), "tag") {
				return true
			}
		}
	}
	return false
}

// tagOf is a From or To header's tag. sipgo keeps the LWS RFC 3261 allows
// around '=' in the key and value ("; tag = 98asjd8", RFC 4475 §3.1.1.1),
// so a plain Get misses it.
func tagOf(p gosip.HeaderParams) string {
	if v, ok := p.Get("tag"); ok {
		return v
	}
	for _, kv := range p {
		if strings.EqualFold(strings.TrimSpace(kv.K), "tag") {
			return strings.TrimSpace(kv.V)
		}
	}
	return ""
}

// quote is a SIP quoted-string of s (RFC 3261 §25.1).
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
