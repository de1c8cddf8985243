package sip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"trunkgate/refusal"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// handlerFunc makes a function an InviteHandler.
type handlerFunc func(inv *Invite)

func (f handlerFunc) HandleInvite(inv *Invite) { f(inv) }

// serve starts a Server on loopback that stops at cleanup.
func serve(t *testing.T, h InviteHandler) *Server {
	t.Helper()
	s, err := Listen(Config{Addr: "127.0.0.1:0", Handler: h, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func target(s *Server, transport string) Target {
	return Target{Host: "127.0.0.1", Port: s.Port(), Transport: transport}
}

var offer = BuildOffer(OfferSpec{SessionID: "1", Version: 1, Addr: mustAddr("127.0.0.1"), Port: 40000})

// carrierAnswers is a carrier that rings, then answers with the offer's
// first codec and hands its dialog to the test.
func carrierAnswers(dialogs chan<- *Dialog, sources chan<- string) handlerFunc {
	return func(inv *Invite) {
		if sources != nil {
			sources <- inv.Source().String()
		}
		_ = inv.Ringing()
		// A carrier rings for a while: sipgo handles each message on its own
		// goroutine, so a 180 right behind the 200 may be handled second,
		// and a client transaction past 2xx drops it.
		time.Sleep(20 * time.Millisecond)
		o, _ := inv.Offer()
		neg, _ := Negotiate(o, EncryptionOff)
		d, err := inv.Answer(BuildAnswer(AnswerSpec{SessionID: "9", Version: 1, Addr: mustAddr("127.0.0.1"), Port: 41000, Media: neg}), nil)
		if err == nil {
			dialogs <- d
		}
	}
}

// TestDialAnsweredAndHungUpBothWays: INVITE, 180 (progress), 200 with SDP,
// ACK; BYE from the edge, and on a second call BYE from the carrier; over
// UDP and TCP. The INVITE leaves from the edge's listening port.
func TestDialAnsweredAndHungUpBothWays(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			dialogs, sources := make(chan *Dialog, 2), make(chan string, 2)
			carrier := serve(t, carrierAnswers(dialogs, sources))
			edge := serve(t, handlerFunc(func(*Invite) {}))
			var progress []int
			d, answer, err := edge.Dial(context.Background(), DialRequest{Target: target(carrier, transport), To: "+15551230000",
				From: "+15550100", SDP: offer, Headers: []Header{{"X-Campaign", "spring"}},
				OnProgress: func(code int, _ []byte) { progress = append(progress, code) }})
			if err != nil {
				t.Fatal(err)
			}
			remote := <-dialogs
			src := <-sources
			if fmt.Sprint(progress) != "[180]" || !strings.Contains(string(answer), "PCMU/8000") {
				t.Fatalf("progress %v, answer %q", progress, answer)
			}
			if transport == "udp" && src != "127.0.0.1:"+strconv.Itoa(edge.Port()) {
				t.Fatalf("INVITE came from %s, not the edge's listening port %d", src, edge.Port())
			}
			if d.Transport() != strings.ToUpper(transport) || d.CallID() != remote.CallID() {
				t.Fatalf("dialog %s %s vs %s", d.Transport(), d.CallID(), remote.CallID())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := d.Hangup(ctx, refusal.OperatorHangup.ByeReason()); err != nil {
				t.Fatalf("BYE: %v", err)
			}
			select {
			case <-remote.Done():
			case <-ctx.Done():
				t.Fatal("the carrier never got the BYE")
			}
			if remote.EndedBy() != EndedByRemote {
				t.Fatalf("carrier's dialog ended by %s", remote.EndedBy())
			}
			// Second call: the carrier hangs up.
			d2, _, err := edge.Dial(ctx, DialRequest{Target: target(carrier, transport), To: "+15551230001", From: "+15550100", SDP: offer})
			if err != nil {
				t.Fatal(err)
			}
			<-sources
			if err := (<-dialogs).Hangup(ctx, ""); err != nil {
				t.Fatalf("carrier's BYE: %v", err)
			}
			select {
			case <-d2.Done():
			case <-ctx.Done():
				t.Fatal("the edge never saw the carrier's BYE")
			}
			if d2.EndedBy() != EndedByRemote || edge.LiveDialogs() != 0 {
				t.Fatalf("ended by %s, %d dialogs left", d2.EndedBy(), edge.LiveDialogs())
			}
		})
	}
}

// TestDialFinalResponses: a refusal comes back as a FinalError with the
// carrier's Reason, and the edge's own digest challenge is answered with
// the trunk's credentials (and refused with the wrong ones).
func TestDialFinalResponses(t *testing.T) {
	ha1 := md5hex("carrier-user:trunkgate:s3cret-pass")
	carrier := serve(t, handlerFunc(func(inv *Invite) {
		switch inv.CalledUser() {
		case "+1486":
			_ = inv.Refuse(refusal.ChannelCap)
		case "+1401":
			switch inv.CheckDigest("trunkgate", "carrier-user", ha1) {
			case DigestMissing, DigestStale:
				_ = inv.Challenge("trunkgate", false)
			case DigestWrong:
				_ = inv.Refuse(refusal.DigestWrong)
			default:
				_ = inv.Reject(404, "Not Found", `Q.850;cause=1;text="unallocated number"`)
			}
		}
	}))
	edge := serve(t, handlerFunc(func(*Invite) {}))
	ctx := context.Background()
	_, _, err := edge.Dial(ctx, DialRequest{Target: target(carrier, "udp"), To: "+1486", From: "+1555", SDP: offer})
	var fe *FinalError
	if !errors.As(err, &fe) || fe.Code != 486 || fe.Text() != "channel cap reached" {
		t.Fatalf("busy: %v", err)
	}
	// Right credentials: past the challenge to the carrier's real answer.
	_, _, err = edge.Dial(ctx, DialRequest{Target: target(carrier, "udp"), To: "+1401", From: "+1555", SDP: offer,
		Username: "carrier-user", Password: "s3cret-pass"})
	if !errors.As(err, &fe) || fe.Code != 404 {
		t.Fatalf("with credentials: %v", err)
	}
	if proto, cause, text := fe.ReasonCause(); proto != "Q.850" || cause != 1 || text != "unallocated number" {
		t.Fatalf("Reason %q %d %q", proto, cause, text)
	}
	_, _, err = edge.Dial(ctx, DialRequest{Target: target(carrier, "udp"), To: "+1401", From: "+1555", SDP: offer,
		Username: "carrier-user", Password: "wrong"})
	if !errors.As(err, &fe) || fe.Code != 403 {
		t.Fatalf("wrong password: %v", err)
	}
	_, _, err = edge.Dial(ctx, DialRequest{Target: target(carrier, "udp"), To: "+1401", From: "+1555", SDP: offer})
	if !errors.As(err, &fe) || fe.Code != 401 {
		t.Fatalf("no credentials: %v", err)
	}
}

// TestDialCancel: the caller giving up after a provisional response sends
// CANCEL; the carrier sees its INVITE canceled.
func TestDialCancel(t *testing.T) {
	canceled := make(chan error, 1)
	carrier := serve(t, handlerFunc(func(inv *Invite) {
		_ = inv.Ringing()
		<-inv.Context().Done()
		canceled <- context.Cause(inv.Context())
	}))
	edge := serve(t, handlerFunc(func(*Invite) {}))
	ctx, cancel := context.WithCancelCause(context.Background())
	_, _, err := edge.Dial(ctx, DialRequest{Target: target(carrier, "udp"), To: "+1555", From: "+1666", SDP: offer,
		OnProgress: func(int, []byte) { cancel(refusal.Canceled) }})
	if !errors.Is(err, refusal.Canceled) {
		t.Fatalf("Dial = %v", err)
	}
	select {
	case err := <-canceled:
		if !errors.Is(err, ErrCanceled) {
			t.Fatalf("carrier's INVITE ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no CANCEL reached the carrier")
	}
}

// TestDialNoResponse: a gateway that says nothing, and one that refuses
// the connection, fail fast with errors that failover recognises.
func TestDialNoResponse(t *testing.T) {
	edge := serve(t, handlerFunc(func(*Invite) {}))
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	_, _, err = edge.Dial(context.Background(), DialRequest{Target: Target{Host: "127.0.0.1", Port: silent.LocalAddr().(*net.UDPAddr).Port,
		Transport: "udp"}, To: "+1555", From: "+1666", SDP: offer, FirstResponse: 300 * time.Millisecond})
	if !errors.Is(err, ErrNoResponse) || time.Since(start) > 2*time.Second {
		t.Fatalf("silent gateway: %v after %v", err, time.Since(start))
	}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	port := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	_, _, err = edge.Dial(context.Background(), DialRequest{Target: Target{Host: "127.0.0.1", Port: port, Transport: "tcp"},
		To: "+1555", From: "+1666", SDP: offer, FirstResponse: time.Second})
	if !errors.Is(err, ErrTransport) {
		t.Fatalf("refused TCP: %v", err)
	}
}

// rawPeer is a SIP peer written by hand on a UDP socket, for what a
// well-behaved sip.Server would never do: drop an ACK, move its Contact,
// record-route.
type rawPeer struct {
	t    *testing.T
	conn *net.UDPConn
}

func newRawPeer(t *testing.T) *rawPeer {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, conn: c}
}

func (p *rawPeer) port() int { return p.conn.LocalAddr().(*net.UDPAddr).Port }

// read waits for the next message that is not a retransmission of one of
// skip's methods.
func (p *rawPeer) read(skipMethods ...string) (gosip.Message, *net.UDPAddr) {
	p.t.Helper()
	buf := make([]byte, 8192)
	for {
		p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			p.t.Fatalf("raw peer on %d: %v", p.port(), err)
		}
		msg, err := gosip.ParseMessage(buf[:n])
		if err != nil {
			p.t.Fatalf("unparsable %q: %v", buf[:n], err)
		}
		if req, ok := msg.(*gosip.Request); ok {
			skip := false
			for _, m := range skipMethods {
				skip = skip || req.Method.String() == m
			}
			if skip {
				continue
			}
		}
		return msg, from
	}
}

func (p *rawPeer) send(to *net.UDPAddr, msg string) {
	p.t.Helper()
	msg = strings.ReplaceAll(strings.ReplaceAll(strings.TrimLeft(msg, "\n"), "\r\n", "\n"), "\n", "\r\n")
	if _, err := p.conn.WriteToUDP([]byte(msg), to); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) sendMsg(to *net.UDPAddr, m gosip.Message) {
	p.t.Helper()
	if _, err := p.conn.WriteToUDP([]byte(m.String()), to); err != nil {
		p.t.Fatal(err)
	}
}

// answer200 answers an INVITE with 200 OK, a To tag, the given Contact
// port and Record-Route values.
func answer200(inv *gosip.Request, contactPort int, recordRoutes ...string) *gosip.Response {
	res := gosip.NewResponseFromRequest(inv, 200, "OK", BuildAnswer(AnswerSpec{SessionID: "7", Version: 1,
		Addr: mustAddr("127.0.0.1"), Port: 42000, Media: Negotiated{Codec: "PCMU", PtimeMS: 20, Direction: "sendrecv"}}))
	res.To().Params.Add("tag", "rawtag")
	res.AppendHeader(gosip.NewHeader("Contact", fmt.Sprintf("<sip:callee@127.0.0.1:%d>", contactPort)))
	for _, rr := range recordRoutes {
		res.AppendHeader(gosip.NewHeader("Record-Route", rr))
	}
	res.AppendHeader(gosip.NewHeader("Content-Type", "application/sdp"))
	return res
}

// TestDialReACKAndRouteSet: the edge ACKs a 2xx again when the 2xx comes
// again (its ACK was lost), and sends in-dialog requests along the 2xx's
// record-route set, reversed, to the first route's address.
func TestDialReACKAndRouteSet(t *testing.T) {
	edge := serve(t, handlerFunc(func(*Invite) {}))
	callee, proxy := newRawPeer(t), newRawPeer(t)
	type dialed struct {
		d   *Dialog
		err error
	}
	out := make(chan dialed, 1)
	go func() {
		d, _, err := edge.Dial(context.Background(), DialRequest{Target: Target{Host: "127.0.0.1", Port: callee.port(), Transport: "udp"},
			To: "+1555", From: "+1666", SDP: offer})
		out <- dialed{d, err}
	}()
	msg, from := callee.read()
	inv := msg.(*gosip.Request)
	// Two proxies record-routed, the near one (proxy) last in the 2xx.
	res := answer200(inv, callee.port(), "<sip:127.0.0.9:5099;lr>", fmt.Sprintf("<sip:127.0.0.1:%d;lr>", proxy.port()))
	callee.sendMsg(from, res)
	// The ACK, like every in-dialog request, goes along the route set: to
	// the near proxy.
	ack1, _ := proxy.read()
	if r, ok := ack1.(*gosip.Request); !ok || !r.IsAck() || r.Recipient.Port != callee.port() {
		t.Fatalf("want ACK to the callee's Contact via the proxy, got %s", firstLine(ack1))
	}
	callee.sendMsg(from, res) // the ACK was "lost": the 2xx comes again
	ack2, _ := proxy.read()
	if r, ok := ack2.(*gosip.Request); !ok || !r.IsAck() {
		t.Fatalf("want a second ACK, got %s", firstLine(ack2))
	}
	got := <-out
	if got.err != nil {
		t.Fatal(got.err)
	}
	go got.d.Hangup(context.Background(), "")
	bye, _ := proxy.read("ACK")
	req := bye.(*gosip.Request)
	routes := req.GetHeaders("Route")
	if req.Method != gosip.BYE || req.Recipient.Port != callee.port() || len(routes) != 2 ||
		!strings.Contains(routes[0].Value(), strconv.Itoa(proxy.port())) || !strings.Contains(routes[1].Value(), "5099") {
		t.Fatalf("BYE went %s with routes %v", firstLine(req), routes)
	}
}

// TestTargetRefresh: a re-INVITE that moves the far end's Contact moves
// where the edge's next requests go, whichever side set the dialog up
// (the bug found behind Kamailio: the BYE still went to the old Contact).
func TestTargetRefresh(t *testing.T) {
	t.Run("uac", func(t *testing.T) {
		edge := serve(t, handlerFunc(func(*Invite) {}))
		callee, moved := newRawPeer(t), newRawPeer(t)
		out := make(chan *Dialog, 1)
		go func() {
			d, _, err := edge.Dial(context.Background(), DialRequest{Target: Target{Host: "127.0.0.1", Port: callee.port(), Transport: "udp"},
				To: "+1555", From: "+1666", SDP: offer})
			if err != nil {
				t.Error(err)
			}
			out <- d
		}()
		msg, from := callee.read()
		inv := msg.(*gosip.Request)
		callee.sendMsg(from, answer200(inv, callee.port()))
		callee.read() // ACK
		d := <-out
		fromTag, _ := inv.From().Params.Get("tag")
		reinvite(t, callee, from, inv.CallID().Value(), "<sip:+1555@127.0.0.1>;tag=rawtag",
			fmt.Sprintf("<sip:+1666@127.0.0.1>;tag=%s", fromTag), moved.port())
		go d.Hangup(context.Background(), "")
		bye, _ := moved.read("ACK")
		if r := bye.(*gosip.Request); r.Method != gosip.BYE || r.Recipient.Port != moved.port() {
			t.Fatalf("after the re-INVITE: %s", firstLine(bye))
		}
	})
	t.Run("uas", func(t *testing.T) {
		dialogs := make(chan *Dialog, 1)
		edge := serve(t, carrierAnswers(dialogs, nil))
		caller, moved := newRawPeer(t), newRawPeer(t)
		to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: edge.Port()}
		caller.send(to, fmt.Sprintf(`
INVITE sip:+15550100@127.0.0.1:%[1]d SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:%[2]d;branch=z9hG4bK-raw-1
From: <sip:+1777@127.0.0.1:%[2]d>;tag=callertag
To: <sip:+15550100@127.0.0.1>
Call-ID: uas-refresh@raw
CSeq: 1 INVITE
Contact: <sip:+1777@127.0.0.1:%[2]d>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: %[3]d

%[4]s`, edge.Port(), caller.port(), len(offer), offer))
		var ok *gosip.Response
		for ok == nil {
			m, _ := caller.read()
			if r, isRes := m.(*gosip.Response); isRes && r.StatusCode == 200 {
				ok = r
			}
		}
		localTag, _ := ok.To().Params.Get("tag")
		caller.send(to, fmt.Sprintf(`
ACK sip:trunkgate@127.0.0.1:%[1]d SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:%[2]d;branch=z9hG4bK-raw-2
From: <sip:+1777@127.0.0.1:%[2]d>;tag=callertag
To: <sip:+15550100@127.0.0.1>;tag=%[3]s
Call-ID: uas-refresh@raw
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

`, edge.Port(), caller.port(), localTag))
		d := <-dialogs
		reinvite(t, caller, to, "uas-refresh@raw", "<sip:+1777@127.0.0.1>;tag=callertag",
			"<sip:+15550100@127.0.0.1>;tag="+localTag, moved.port())
		go d.Hangup(context.Background(), "")
		bye, _ := moved.read("ACK")
		if r := bye.(*gosip.Request); r.Method != gosip.BYE || r.Recipient.Port != moved.port() {
			t.Fatalf("after the re-INVITE: %s", firstLine(bye))
		}
	})
}

// reinvite sends a re-INVITE from the peer (peer: its From) to the edge
// (edge: its To) whose Contact is on newPort, waits for its 200 and ACKs
// it.
func reinvite(t *testing.T, p *rawPeer, to *net.UDPAddr, callID, peer, edge string, newPort int) {
	t.Helper()
	p.send(to, fmt.Sprintf(`
INVITE sip:trunkgate@127.0.0.1:%[1]d SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:%[2]d;branch=z9hG4bK-reinv-%[3]d
From: %[4]s
To: %[5]s
Call-ID: %[6]s
CSeq: 20 INVITE
Contact: <sip:moved@127.0.0.1:%[3]d>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: %[7]d

%[8]s`, to.Port, p.port(), newPort, peer, edge, callID, len(offer), offer))
	for {
		m, _ := p.read("ACK")
		if r, ok := m.(*gosip.Response); ok && r.CSeq().SeqNo == 20 {
			if r.StatusCode != 200 {
				t.Fatalf("re-INVITE answered %d", r.StatusCode)
			}
			ack := fmt.Sprintf(`
ACK sip:trunkgate@127.0.0.1:%[1]d SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:%[2]d;branch=z9hG4bK-reack
From: %[3]s
To: %[4]s
Call-ID: %[5]s
CSeq: 20 ACK
Max-Forwards: 70
Content-Length: 0

`, to.Port, p.port(), peer, edge, callID)
			p.send(to, ack)
			return
		}
	}
}

// TestHostPortDefaults: a Record-Route or Contact without a port means
// its transport's default port, never port 0.
func TestHostPortDefaults(t *testing.T) {
	for _, tt := range []struct {
		uri, transport, want string
	}{
		{"sip:proxy.example;lr", "UDP", "proxy.example:5060"},
		{"sip:10.0.0.1;lr", "TCP", "10.0.0.1:5060"},
		{"sips:10.0.0.1;lr", "TLS", "10.0.0.1:5061"},
		{"sip:10.0.0.1:5070;lr", "UDP", "10.0.0.1:5070"},
		{"sip:[2001:db8::1];lr", "UDP", "[2001:db8::1]:5060"},
	} {
		var u gosip.Uri
		if err := gosip.ParseUri(tt.uri, &u); err != nil {
			t.Fatal(err)
		}
		if got := hostPort(u, tt.transport); got != tt.want {
			t.Errorf("hostPort(%s, %s) = %s, want %s", tt.uri, tt.transport, got, tt.want)
		}
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func firstLine(m gosip.Message) string {
	line, _, _ := strings.Cut(m.String(), "\r\n")
	return line
}

// TestLateAnswerAfterGivingUp: a gateway that answers after the edge gave
// up on it (no response within FirstResponse) gets CANCEL for its late
// ringing, and ACK then BYE for its late 2xx; the edge stopped
// retransmitting the INVITE meanwhile.
func TestLateAnswerAfterGivingUp(t *testing.T) {
	for _, late := range []int{180, 200} {
		t.Run(strconv.Itoa(late), func(t *testing.T) {
			edge := serve(t, handlerFunc(func(*Invite) {}))
			gw := newRawPeer(t)
			_, _, err := edge.Dial(context.Background(), DialRequest{Target: Target{Host: "127.0.0.1", Port: gw.port(), Transport: "udp"},
				To: "+1555", From: "+1666", SDP: offer, FirstResponse: 100 * time.Millisecond})
			if !errors.Is(err, ErrNoResponse) {
				t.Fatalf("Dial = %v", err)
			}
			msg, from := gw.read()
			inv := msg.(*gosip.Request)
			time.Sleep(700 * time.Millisecond) // past T1: a live transaction would have retransmitted
			var res *gosip.Response
			if late == 180 {
				res = gosip.NewResponseFromRequest(inv, 180, "Ringing", nil)
				res.To().Params.Add("tag", "late")
			} else {
				res = answer200(inv, gw.port())
			}
			gw.sendMsg(from, res)
			want := map[int][]string{180: {"CANCEL"}, 200: {"ACK", "BYE"}}[late]
			for _, method := range want {
				m, _ := gw.read()
				r, ok := m.(*gosip.Request)
				if !ok || r.Method.String() != method {
					t.Fatalf("want %s, got %s", method, firstLine(m))
				}
				if method == "BYE" {
					gw.sendMsg(from, gosip.NewResponseFromRequest(r, 200, "OK", nil))
				}
			}
		})
	}
}

// FuzzReasonCause: a carrier's Reason header, whatever it holds, gives a
// cause and a text without panicking, and the text is a part of it.
func FuzzReasonCause(f *testing.F) {
	for _, s := range []string{`Q.850;cause=34;text="no circuit"`, `SIP;cause=486;text="busy"`, `;;;`, `Q.850;cause=99999999999999999999`,
		`SIP ; cause = 1 ; text = "a;b"`, "Q.850;text=\"\r\nVia: x\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, reason string) {
		fe := &FinalError{Code: 503, Phrase: "Service Unavailable", Reason: reason}
		_, _, text := fe.ReasonCause()
		if !strings.Contains(reason, text) {
			t.Fatalf("text %q is not from %q", text, reason)
		}
		_ = fe.Error()
	})
}
