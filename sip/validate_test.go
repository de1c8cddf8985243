package sip

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"trunkgate/refusal"
)

// request renders a request with the usual headers; over replaces or
// adds lines (a header name mapped to "" drops it).
func request(method, uri, version string, over map[string]string, body string) []byte {
	headers := []string{"Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length"}
	values := map[string]string{
		"Via":            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-v1",
		"From":           "<sip:a@127.0.0.1>;tag=f1",
		"To":             "<sip:+15550100@127.0.0.1>",
		"Call-ID":        "validate-1",
		"CSeq":           "1 " + method,
		"Max-Forwards":   "70",
		"Content-Length": fmt.Sprint(len(body)),
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s\r\n", method, uri, version)
	for _, h := range headers {
		if v, ok := over[h]; ok {
			if v != "" {
				b.WriteString(h + ": " + v + "\r\n")
			}
			delete(over, h)
			continue
		}
		b.WriteString(h + ": " + values[h] + "\r\n")
	}
	for h, v := range over {
		b.WriteString(h + ": " + v + "\r\n")
	}
	return []byte(b.String() + "\r\n" + body)
}

func TestCheckRequest(t *testing.T) {
	tests := []struct {
		name        string
		raw         []byte
		want        refusal.Reason // 0: passes
		unsupported string
	}{
		{"plain OPTIONS", request("OPTIONS", "sip:a@b", "SIP/2.0", nil, ""), 0, ""},
		{"version 7", request("OPTIONS", "sip:a@b", "SIP/7.0", nil, ""), refusal.VersionUnsupported, ""},
		{"two Content-Lengths", request("OPTIONS", "sip:a@b", "SIP/2.0", map[string]string{"l": "0"}, ""), refusal.Malformed, ""},
		{"two Call-IDs", request("OPTIONS", "sip:a@b", "SIP/2.0", map[string]string{"i": "other"}, ""), refusal.Malformed, ""},
		{"CSeq of another method", request("OPTIONS", "sip:a@b", "SIP/2.0", map[string]string{"CSeq": "1 INVITE"}, ""), refusal.Malformed, ""},
		{"unknown method, CSeq of another", request("NEWMETHOD", "sip:a@b", "SIP/2.0", map[string]string{"CSeq": "1 INVITE"}, ""), 0, ""},
		{"tel URI", request("OPTIONS", "tel:+15550100", "SIP/2.0", nil, ""), 0, ""},
		{"unknown scheme", request("OPTIONS", "nobodyKnowsThisScheme:opaque", "SIP/2.0", nil, ""), refusal.SchemeUnsupported, ""},
		{"Require", request("OPTIONS", "sip:a@b", "SIP/2.0", map[string]string{"Require": "100rel, timer"}, ""), refusal.ExtensionUnsupported, "100rel, timer"},
		{"Require on ACK", request("ACK", "sip:a@b", "SIP/2.0", map[string]string{"Require": "100rel"}, ""), 0, ""},
		{"Proxy-Require is for proxies", request("OPTIONS", "sip:a@b", "SIP/2.0", map[string]string{"Proxy-Require": "x"}, ""), 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := gosip.NewParser().ParseSIP(tt.raw)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			r, _, extra, refused := checkRequest(msg.(*gosip.Request))
			if refused != (tt.want != 0) || r != tt.want {
				t.Fatalf("checkRequest = %v, %v; want %v", r, refused, tt.want)
			}
			if tt.unsupported != "" && (len(extra) != 1 || extra[0].Name() != "Unsupported" || extra[0].Value() != tt.unsupported) {
				t.Fatalf("extra headers %v, want Unsupported: %s", extra, tt.unsupported)
			}
		})
	}
}

func TestRawHasTag(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{"To: <sip:a@b>;tag=1", true},
		{"To: <sip:a@b> ;   tag    = 1918181833n", true},
		{"t: sip:a@b;TAG=x", true},
		{"To: <sip:a@b;tag=inside-the-uri>", false},
		{`To: "a;tag=quoted" <sip:a@b>`, false},
		{`To: "esc \";tag=x" <sip:a@b>`, false},
		{"To: <sip:a@b>;tagged=1", false},
		{"To: <sip:a@b>", false},
		{"To:", false},
	}
	for _, tt := range tests {
		if got := rawHasTag([]byte(tt.line)); got != tt.want {
			t.Errorf("rawHasTag(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
}

func TestTagOf(t *testing.T) {
	msg, err := gosip.NewParser().ParseSIP(request("BYE", "sip:a@b", "SIP/2.0",
		map[string]string{"From": "<sip:a@b> ;  tag = 98asjd8", "To": "<sip:c@d>;tag=plain"}, ""))
	if err != nil {
		t.Fatal(err)
	}
	req := msg.(*gosip.Request)
	if from, to := tagOf(req.From().Params), tagOf(req.To().Params); from != "98asjd8" || to != "plain" {
		t.Fatalf("tags %q, %q", from, to)
	}
}

// peer is a UDP socket standing for a carrier: what the edge answers
// statelessly arrives here.
type peer struct {
	t    *testing.T
	conn *net.UDPConn
}

func newPeer(t *testing.T) *peer {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{t: t, conn: c}
}

func (p *peer) props() gosip.TransportReadProps {
	return gosip.TransportReadProps{Transport: "UDP", RemoteAddr: p.conn.LocalAddr()}
}

// answer is the next datagram, "" if none comes within wait.
func (p *peer) answer(wait time.Duration) string {
	buf := make([]byte, 65535)
	p.conn.SetReadDeadline(time.Now().Add(wait))
	n, err := p.conn.Read(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

func TestScreenDatagram(t *testing.T) {
	s, err := Listen(Config{Addr: "127.0.0.1:0", Handler: handlerFunc(func(*Invite) {}), Log: quiet, UserAgent: "trunkgate-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.udp.Close(); s.tcp.Close() })
	good := request("OPTIONS", "sip:a@b", "SIP/2.0", nil, "")
	tests := []struct {
		name   string
		raw    []byte
		pass   bool   // handed on to sipgo
		status string // the stateless answer's status line, "" none
	}{
		{"a good request", good, true, ""},
		{"a response", []byte("SIP/2.0 200 OK\r\nVia: x\r\n\r\n"), true, ""},
		{"a keep-alive", []byte("\r\n\r\n"), true, ""},
		{"negative Content-Length", request("INVITE", "sip:a@b", "SIP/2.0", map[string]string{"Content-Length": "-999"}, "v=0\r\n"), false, "SIP/2.0 400 Bad Request"},
		{"Content-Length past the end", request("INVITE", "sip:a@b", "SIP/2.0", map[string]string{"Content-Length": "9999"}, "v=0\r\n"), false, "SIP/2.0 400 Bad Request"},
		{"two spaces in the request line", []byte(strings.Replace(string(good), "OPTIONS ", "OPTIONS  ", 1)), false, "SIP/2.0 400 Bad Request"},
		{"CSeq past 2^64", request("OPTIONS", "sip:a@b", "SIP/2.0", map[string]string{"CSeq": "36893488147419103232 OPTIONS"}, ""), false, "SIP/2.0 400 Bad Request"},
		{"unparsable URI of an unknown scheme", request("OPTIONS", "soap.beep://192.0.2.103:3002", "SIP/2.0", nil, ""), false, "SIP/2.0 416 Unsupported URI Scheme"},
		{"no Via: nothing to answer to", request("INVITE", "sip:a@b", "SIP/2.0", map[string]string{"Via": "", "Content-Length": "-1"}, ""), false, ""},
		{"an ACK is never answered", request("ACK", "sip:a@b", "SIP/2.0", map[string]string{"Content-Length": "-1"}, ""), false, ""},
		{"binary noise", []byte("\x00\x01\x02\xff garbage"), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPeer(t)
			out, err := s.screenDatagram(p.props(), tt.raw)
			if err != nil || (len(out) > 0) != tt.pass {
				t.Fatalf("screenDatagram passed %d bytes (%v), want pass %v", len(out), err, tt.pass)
			}
			wait := 300 * time.Millisecond
			if tt.status == "" {
				wait = 50 * time.Millisecond
			}
			got := p.answer(wait)
			line, _, _ := strings.Cut(got, "\r\n")
			if line != tt.status {
				t.Fatalf("answered %q, want %q", line, tt.status)
			}
			if got == "" {
				return
			}
			for _, h := range []string{"\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-v1\r\n", "\r\nFrom: <sip:a@127.0.0.1>;tag=f1\r\n",
				"\r\nTo: <sip:+15550100@127.0.0.1>;tag=", "\r\nCall-ID: validate-1\r\n", "\r\nServer: trunkgate-test\r\n",
				"\r\nContent-Length: 0\r\n\r\n"} {
				if !strings.Contains(got, h) {
					t.Errorf("answer lacks %q:\n%s", h, got)
				}
			}
		})
	}
}

// TestScreenDatagramFlood: a source the flood guard refuses is dropped
// before parsing, or answered 503 with Retry-After when the operator
// chose to reject.
func TestScreenDatagramFlood(t *testing.T) {
	for _, reply := range []bool{false, true} {
		s, err := Listen(Config{Addr: "127.0.0.1:0", Handler: handlerFunc(func(*Invite) {}), Log: quiet,
			Screen: func(netip.Addr) bool { return false }, ScreenReply: reply})
		if err != nil {
			t.Fatal(err)
		}
		p := newPeer(t)
		out, _ := s.screenDatagram(p.props(), request("INVITE", "sip:a@b", "SIP/2.0", nil, ""))
		got := p.answer(200 * time.Millisecond)
		s.udp.Close()
		s.tcp.Close()
		if len(out) != 0 {
			t.Fatalf("reply %v: a refused source's request went on to sipgo", reply)
		}
		if want := reply; strings.HasPrefix(got, "SIP/2.0 503 Service Unavailable\r\n") != want ||
			(want && !strings.Contains(got, "\r\nRetry-After: 60\r\n")) {
			t.Fatalf("reply %v: answered %q", reply, got)
		}
	}
}

// FuzzScreenDatagram: whatever arrives, the filter neither panics nor
// hands sipgo a request that sipgo then cannot parse; what it hands on
// goes through checkRequest without panicking either.
func FuzzScreenDatagram(f *testing.F) {
	f.Add(request("INVITE", "sip:+15550100@127.0.0.1", "SIP/2.0", nil, "v=0\r\n"))
	f.Add(request("OPTIONS", "sip:a@b", "SIP/7.0", map[string]string{"l": "0", "Require": "x"}, ""))
	f.Add(request("BYE", "sip:a@b", "SIP/2.0", map[string]string{"To": `"x;tag=\"" <sip:a@b> ; tag = 1`}, ""))
	f.Add([]byte("INVITE sip:a@b SIP/2.0\r\nVia: x\r\nCSeq: 1\r\nContent-Length: -1\r\n\r\n"))
	f.Add([]byte("SIP/2.0 4294967301 x\r\n\r\n"))
	s, err := Listen(Config{Addr: "127.0.0.1:0", Handler: handlerFunc(func(*Invite) {}), Log: quiet})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.udp.Close(); s.tcp.Close() })
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sink.Close() })
	props := gosip.TransportReadProps{Transport: "UDP", RemoteAddr: sink.LocalAddr()}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := s.screenDatagram(props, bytes.Clone(data))
		if err != nil || len(out) == 0 || !looksLikeRequest(out) {
			return
		}
		msg, err := gosip.NewParser().ParseSIP(out)
		if err != nil {
			t.Fatalf("handed on a request sipgo cannot parse: %v", err)
		}
		if req, ok := msg.(*gosip.Request); ok {
			checkRequest(req)
		}
	})
}

// BenchmarkScreenDatagram is what the read filter adds to each UDP
// request (a parse by sipgo's parser, which sipgo then repeats), next to
// BenchmarkSipgoParse, what sipgo spends on it anyway.
func BenchmarkScreenDatagram(b *testing.B) {
	s, err := Listen(Config{Addr: "127.0.0.1:0", Handler: handlerFunc(func(*Invite) {}), Log: quiet,
		Screen: func(netip.Addr) bool { return true }})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.udp.Close(); s.tcp.Close() })
	props := gosip.TransportReadProps{Transport: "UDP", RemoteAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5070}}
	invite := benchInvite()
	b.ReportAllocs()
	for b.Loop() {
		if out, _ := s.screenDatagram(props, invite); len(out) == 0 {
			b.Fatal("dropped")
		}
	}
}

func BenchmarkSipgoParse(b *testing.B) {
	p := gosip.NewParser()
	invite := benchInvite()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.ParseSIP(invite); err != nil {
			b.Fatal(err)
		}
	}
}

func benchInvite() []byte {
	sdp := string(BuildOffer(OfferSpec{SessionID: "1", Version: 1, Addr: mustAddr("127.0.0.1"), Port: 40000}))
	return request("INVITE", "sip:+15550100@127.0.0.1:5060", "SIP/2.0", map[string]string{"Contact": "<sip:carrier@127.0.0.1:5070>",
		"Content-Type": "application/sdp", "User-Agent": "SIPp", "Allow": "INVITE, ACK, BYE, CANCEL, OPTIONS"}, sdp)
}
