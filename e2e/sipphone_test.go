package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"trunkgate/internal/tlsconf"
)

// SIPPhone is a minimal SIP caller written for the tests that SIPp
// cannot run (Debian's SIPp has no TLS): one INVITE at a time over TLS
// (optionally with a client certificate) or UDP, its final response,
// ACK and BYE.
type SIPPhone struct {
	t         *testing.T
	conn      net.Conn
	r         *bufio.Reader
	transport string
	edgePort  int
	n         int
}

// DialSIP connects to the edge over "TLS" (trusting the edge's CA, and
// presenting cert when given) or "UDP".
func DialSIP(t *testing.T, e *Edge, transport string, cert *tls.Certificate) *SIPPhone {
	t.Helper()
	p := &SIPPhone{t: t, transport: transport}
	var err error
	switch transport {
	case "TLS":
		pool, perr := tlsconf.CAPool(e.CA)
		if perr != nil {
			t.Fatal(perr)
		}
		cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		p.edgePort = e.SIPTLSPort
		p.conn, err = tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.edgePort)), cfg)
	case "UDP":
		p.edgePort = e.SIPPort
		p.conn, err = net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.edgePort)))
	default:
		t.Fatalf("transport %q", transport)
	}
	if err != nil {
		t.Fatalf("dial SIP over %s: %v", transport, err)
	}
	p.r = bufio.NewReader(p.conn)
	t.Cleanup(func() { p.conn.Close() })
	return p
}

// SIPResponse is a final response.
type SIPResponse struct {
	Code   int
	Header string // the header block, as received
	Body   string
	callID string
	number string
	toTag  string
}

// Get is the value of the first header called name.
func (r SIPResponse) Get(name string) string {
	for _, line := range strings.Split(r.Header, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (p *SIPPhone) via(branch string) string {
	return fmt.Sprintf("Via: SIP/2.0/%s %s;branch=z9hG4bK%s;rport", p.transport, p.conn.LocalAddr(), branch)
}

func (p *SIPPhone) send(msg string) {
	p.t.Helper()
	if _, err := io.WriteString(p.conn, msg); err != nil {
		p.t.Fatalf("send over %s: %v", p.transport, err)
	}
}

// Invite calls number with sdp and returns the final response; a 2xx is
// acknowledged.
func (p *SIPPhone) Invite(number, sdp string) SIPResponse {
	p.t.Helper()
	p.n++
	callID := fmt.Sprintf("phone-%d-%d@test", time.Now().UnixNano(), p.n)
	ruri := fmt.Sprintf("sip:%s@127.0.0.1:%d;transport=%s", number, p.edgePort, strings.ToLower(p.transport))
	la := p.conn.LocalAddr().String()
	p.send(fmt.Sprintf("INVITE %s SIP/2.0\r\n%s\r\nFrom: <sip:carrier@%s>;tag=f%d\r\nTo: <sip:%s@127.0.0.1>\r\n"+
		"Call-ID: %s\r\nCSeq: 1 INVITE\r\nContact: <sip:carrier@%s;transport=%s>\r\nMax-Forwards: 70\r\n"+
		"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		ruri, p.via(fmt.Sprintf("i%d", p.n)), la, p.n, number, callID, la, strings.ToLower(p.transport), len(sdp), sdp))
	for {
		res := p.read()
		if res.Code < 200 {
			continue
		}
		res.callID, res.number = callID, number
		if i := strings.Index(res.Get("To"), "tag="); i >= 0 {
			res.toTag = strings.TrimSpace(strings.Split(res.Get("To")[i+4:], ";")[0])
		}
		if res.Code < 300 {
			p.inDialog(res, "ACK", 1, fmt.Sprintf("a%d", p.n))
		}
		return res
	}
}

// Bye hangs up the call res answered and returns the BYE's status.
func (p *SIPPhone) Bye(res SIPResponse) int {
	p.t.Helper()
	p.inDialog(res, "BYE", 2, fmt.Sprintf("b%d", p.n))
	for {
		r := p.read()
		if r.Code >= 200 && strings.Contains(r.Get("CSeq"), "BYE") {
			return r.Code
		}
	}
}

func (p *SIPPhone) inDialog(res SIPResponse, method string, seq int, branch string) {
	la := p.conn.LocalAddr().String()
	p.send(fmt.Sprintf("%s sip:%s@127.0.0.1:%d;transport=%s SIP/2.0\r\n%s\r\nFrom: <sip:carrier@%s>;tag=f%d\r\n"+
		"To: <sip:%s@127.0.0.1>;tag=%s\r\nCall-ID: %s\r\nCSeq: %d %s\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		method, res.number, p.edgePort, strings.ToLower(p.transport), p.via(branch), la, p.n, res.number, res.toTag,
		res.callID, seq, method))
}

// read reads one response (over UDP: one datagram; over TLS: headers,
// then Content-Length bytes). Requests from the edge are skipped.
func (p *SIPPhone) read() SIPResponse {
	p.t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var head, body string
	if p.transport == "UDP" {
		buf := make([]byte, 65535)
		n, err := p.conn.Read(buf)
		if err != nil {
			p.t.Fatalf("no answer over UDP: %v", err)
		}
		head, body, _ = strings.Cut(string(buf[:n]), "\r\n\r\n")
	} else {
		var b strings.Builder
		length := 0
		for {
			line, err := p.r.ReadString('\n')
			if err != nil {
				p.t.Fatalf("no answer over %s: %v", p.transport, err)
			}
			if line == "\r\n" {
				break
			}
			b.WriteString(line)
			if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
				length, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		buf := make([]byte, length)
		if _, err := io.ReadFull(p.r, buf); err != nil {
			p.t.Fatal(err)
		}
		head, body = strings.TrimRight(b.String(), "\r\n"), string(buf)
	}
	status, header, _ := strings.Cut(head, "\r\n")
	f := strings.Fields(status)
	if len(f) < 2 || f[0] != "SIP/2.0" {
		return p.read() // a request from the edge
	}
	code, _ := strconv.Atoi(f[1])
	return SIPResponse{Code: code, Header: header, Body: body}
}

// offerSDP is a PCMU offer from port: plain RTP/AVP, or RTP/SAVP with
// one fresh AES_CM_128_HMAC_SHA1_80 key.
func offerSDP(port int, srtp bool) string {
	proto, crypto := "RTP/AVP", ""
	if srtp {
		key := make([]byte, 30)
		rand.Read(key)
		proto, crypto = "RTP/SAVP", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+base64.StdEncoding.EncodeToString(key)+"\r\n"
	}
	return fmt.Sprintf("v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
		"m=audio %d %s 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n%s", port, proto, crypto)
}
