package sip

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"
)

// bigHeaders makes an INVITE of about n bytes.
func bigHeaders(n int) []Header {
	var hs []Header
	for i := 0; n > 0; i++ {
		hs = append(hs, Header{Name: "X-Pad-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Value: strings.Repeat("p", 200)})
		n -= 220
	}
	return hs
}

// TestLargeRequestGoesOverTCP: an INVITE over 1300 bytes to a UDP
// gateway goes over TCP when the gateway takes a TCP connection on the
// same port (RFC 3261 §18.1.1), with its Via and Contact saying TCP; it
// goes over UDP anyway when nothing listens on TCP.
func TestLargeRequestGoesOverTCP(t *testing.T) {
	edge := serve(t, handlerFunc(func(*Invite) {}))
	t.Run("tcp taken", func(t *testing.T) {
		udp := newRawPeer(t)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(udp.port())))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		got := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			var b strings.Builder
			for {
				line, err := r.ReadString('\n')
				b.WriteString(line)
				if err != nil || line == "\r\n" {
					break
				}
			}
			got <- b.String()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		go edge.Dial(ctx, DialRequest{Target: Target{Host: "127.0.0.1", Port: udp.port(), Transport: "udp"}, To: "+1555",
			From: "+1666", SDP: offer, Headers: bigHeaders(4000)})
		select {
		case head := <-got:
			if !strings.HasPrefix(head, "INVITE sip:+1555@") || !strings.Contains(head, "Via: SIP/2.0/TCP ") ||
				!strings.Contains(head, ";transport=tcp>") || len(head) < 4000 {
				t.Fatalf("INVITE over TCP:\n%.600s", head)
			}
		case <-ctx.Done():
			t.Fatal("the large INVITE never came over TCP")
		}
	})
	t.Run("no tcp", func(t *testing.T) {
		udp := newRawPeer(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		go edge.Dial(ctx, DialRequest{Target: Target{Host: "127.0.0.1", Port: udp.port(), Transport: "udp"}, To: "+1555",
			From: "+1666", SDP: offer, Headers: bigHeaders(4000)})
		msg, _ := udp.read()
		req, ok := msg.(*gosip.Request)
		if !ok || req.Method != gosip.INVITE || req.Via().Transport != "UDP" || len(req.String()) < 4000 {
			t.Fatalf("want the INVITE over UDP anyway, got %.300s", msg.String())
		}
	})
}

// TestLargeResponseOverUDP: the answer to a large INVITE goes back over
// UDP whatever its size (sipgo refused anything over 1300 bytes, so the
// carrier saw only 100 Trying).
func TestLargeResponseOverUDP(t *testing.T) {
	edge := serve(t, handlerFunc(func(inv *Invite) { _ = inv.Reject(486, "Busy Here", "") }))
	caller := newRawPeer(t)
	var vias strings.Builder
	for i := range 30 { // a long proxy path: 30 Via headers
		vias.WriteString("Via: SIP/2.0/UDP 10.0.0." + strconv.Itoa(i) + ":5060;branch=z9hG4bK-hop-" + strconv.Itoa(i) + strings.Repeat("x", 40) + "\n")
	}
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: edge.Port()}
	caller.send(to, "\nINVITE sip:+15550100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:"+strconv.Itoa(caller.port())+
		";branch=z9hG4bK-big\n"+vias.String()+`From: <sip:+1777@127.0.0.1>;tag=big
To: <sip:+15550100@127.0.0.1>
Call-ID: big@raw
CSeq: 1 INVITE
Contact: <sip:+1777@127.0.0.1:`+strconv.Itoa(caller.port())+`>
Max-Forwards: 70
Content-Length: 0

`)
	for {
		m, _ := caller.read()
		res, ok := m.(*gosip.Response)
		if ok && res.StatusCode == 486 {
			if n := len(res.String()); n < 2000 {
				t.Fatalf("response of %d bytes: the Via headers were not all copied", n)
			}
			return
		}
		if !ok {
			t.Fatalf("got %s", firstLine(m))
		}
	}
}
