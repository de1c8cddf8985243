package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/coder/websocket"
)

// Gateway describes a carrier gateway played by SIPp as a UAS
// (testdata/sipp/uas.xml.tmpl): how it answers each INVITE.
type Gateway struct {
	Name string
	Code int // final response; 200 answers
	// Phrase and Reason (header) of a refusal.
	Phrase, Reason string
	Ring           bool // 180 first
	RingMS         int  // ring this long before the final response
	ExpectCancel   bool // ring and wait for CANCEL
	ByeAfterMS     int  // answered: hang up after this long; 0 waits for the edge's BYE
	WaitByeMS      int
	AnswerPT       int    // 8 PCMA (default), 0 PCMU or 9 G722
	Challenge      *Auth  // 401, the answer checked by SIPp
	ProxyChallenge bool   // 407, the answer logged (SIPp cannot check Proxy-Authorization)
	Calls          int    // calls to take before SIPp exits (default 1)
	Transport      string // u1 (default) or t1
	Echo           bool   // -rtp_echo: send the edge's RTP back
	// Port is the SIP port; 0 takes a free one. A UDP and a TCP gateway
	// on one port make a gateway that listens on both.
	Port int
}

var gatewayTemplate = template.Must(template.ParseFiles(filepathFromRoot("testdata/sipp/uas.xml.tmpl")))

// GatewayRun is a SIPp gateway process.
type GatewayRun struct {
	Port   int
	URI    string // sip:127.0.0.1:port;transport=...
	cmd    *exec.Cmd
	dir    string
	screen *lockedBuffer
	done   chan struct{}
}

// StartGateway runs SIPp as a gateway on its own loopback port; it is
// killed at cleanup if still running.
func StartGateway(t *testing.T, g Gateway) *GatewayRun {
	t.Helper()
	if g.Code == 0 {
		g.Code = 200
	}
	if g.AnswerPT == 0 && g.Code == 200 {
		g.AnswerPT = 8
	}
	if g.WaitByeMS == 0 {
		g.WaitByeMS = 30000
	}
	if g.Calls == 0 {
		g.Calls = 1
	}
	if g.Transport == "" {
		g.Transport = "u1"
	}
	if g.Name == "" {
		g.Name = t.Name()
	}
	dir := t.TempDir()
	var buf bytes.Buffer
	if err := gatewayTemplate.Execute(&buf, g); err != nil {
		t.Fatal(err)
	}
	scenario := filepath.Join(dir, "gateway.xml")
	if err := os.WriteFile(scenario, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// SIPp exits at once when one of its ports was taken meanwhile (by a
	// process of another suite): then it is tried again on other ports.
	for attempt := 1; ; attempt++ {
		r := startGatewayOnce(t, g, dir, scenario)
		if r.waitListening(t, g.Transport) {
			return r
		}
		if g.Port != 0 || attempt == 3 {
			t.Fatalf("gateway SIPp exited at start:\n%s\n%s", r.read("errors.log"), tail(r.screen.String(), 30))
		}
		t.Logf("gateway SIPp exited at start (attempt %d), trying other ports: %s", attempt, tail(r.read("errors.log"), 5))
	}
}

func startGatewayOnce(t *testing.T, g Gateway, dir, scenario string) *GatewayRun {
	t.Helper()
	port, mediaPort := sippPorts(t)
	if g.Port != 0 {
		port = g.Port
	}
	args := []string{"-sf", scenario, "-i", "127.0.0.1", "-p", strconv.Itoa(port), "-mi", "127.0.0.1",
		"-mp", strconv.Itoa(mediaPort), "-t", g.Transport, "-m", strconv.Itoa(g.Calls), "-nostdin", "-timeout", "90s",
		"-trace_msg", "-message_file", filepath.Join(dir, "messages.log"),
		"-trace_logs", "-log_file", filepath.Join(dir, "logs.log"),
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log")}
	if g.Echo {
		args = append(args, "-rtp_echo")
	}
	r := &GatewayRun{Port: port, cmd: exec.Command("sipp", args...), dir: dir, screen: &lockedBuffer{}, done: make(chan struct{})}
	transport := map[string]string{"u1": "udp", "t1": "tcp"}[g.Transport]
	r.URI = fmt.Sprintf("sip:127.0.0.1:%d;transport=%s", port, transport)
	r.cmd.Dir = dir
	r.cmd.Stdout, r.cmd.Stderr = r.screen, r.screen
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("gateway %s (SIPp) output:\n%s\n--- errors ---\n%s\n--- messages ---\n%s", r.URI, tail(r.screen.String(), 30),
				tail(r.read("errors.log"), 10), tail(r.Messages(), 60))
		}
	})
	return r
}

// waitListening waits until the gateway's SIPp has bound its SIP port;
// false if it exited first.
func (r *GatewayRun) waitListening(t *testing.T, transport string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !listening(transport, r.Port) {
		select {
		case <-r.done:
			return false
		case <-ctx.Done():
			t.Fatalf("timed out after 10s waiting for SIPp listening on 127.0.0.1:%d", r.Port)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}

// waitListening waits until SIPp has bound its SIP port.
func waitListening(t *testing.T, transport string, port int) {
	t.Helper()
	waitFor(t, 10*time.Second, "SIPp listening on 127.0.0.1:"+strconv.Itoa(port), func() bool { return listening(transport, port) })
}

// listening reports whether something holds the port: for TCP, accepts a
// connection; for UDP, it cannot be bound.
func listening(transport string, port int) bool {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if transport == "t1" {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	c, err := net.ListenPacket("udp", addr)
	if err == nil {
		c.Close()
		return false
	}
	return true
}

func (r *GatewayRun) read(name string) string {
	b, _ := os.ReadFile(filepath.Join(r.dir, name))
	return string(b)
}

// Messages is every SIP message SIPp sent and received so far.
func (r *GatewayRun) Messages() string { return r.read("messages.log") }

// Log is SIPp's <log> lines so far.
func (r *GatewayRun) Log() string { return r.read("logs.log") }

// Invites is how many INVITEs reached the gateway.
func (r *GatewayRun) Invites() int {
	return strings.Count(r.Messages(), "\nINVITE sip:")
}

// Wait waits for SIPp to take all its calls and exit, and fails the test
// unless every call went through the scenario.
func (r *GatewayRun) Wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("gateway %s still running", r.URI)
	}
	if code := r.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("gateway %s: SIPp exit %d\n%s\n%s", r.URI, code, tail(r.screen.String(), 30), r.read("errors.log"))
	}
}

// Ended is when SIPp exited (after Wait).
func (r *GatewayRun) Done() <-chan struct{} { return r.done }

// NewOutboundTrunk creates an outbound trunk for key with the gateways,
// in priority order.
func (e *Edge) NewOutboundTrunk(keyID string, extra map[string]any, gateways ...string) string {
	e.t.Helper()
	var gws []map[string]any
	for i, g := range gateways {
		gws = append(gws, map[string]any{"uri": g, "priority": i + 1})
	}
	spec := map[string]any{"key_id": keyID, "direction": "outbound", "gateways": gws}
	for k, v := range extra {
		spec[k] = v
	}
	var tr struct{ ID string }
	e.MustAPI(201, "POST", "/v1/trunks", spec, &tr)
	return tr.ID
}

// StreamRefusal is an outbound stream's refused handshake.
type StreamRefusal struct {
	Status     int
	RetryAfter string
	Code       string
	Message    string
}

// DialStream opens /v1/calls/stream as an AI application does. It returns
// the stream, or, for a refused handshake, what the edge answered.
func (e *Edge) DialStream(t testing.TB, key string, query url.Values) (*AppConn, *StreamRefusal) {
	t.Helper()
	u := "ws" + strings.TrimPrefix(e.HTTP, "http") + "/v1/calls/stream?" + query.Encode()
	hdr := http.Header{}
	if key != "" {
		hdr.Set("Authorization", "Bearer "+key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, res, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: hdr, HTTPClient: e.httpClient()})
	if err != nil {
		if res == nil {
			t.Fatalf("dial %s: %v", u, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var eb struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(body, &eb); err != nil {
			t.Fatalf("refusal %d without a JSON body: %q", res.StatusCode, body)
		}
		return nil, &StreamRefusal{Status: res.StatusCode, RetryAfter: res.Header.Get("Retry-After"), Code: eb.Error.Code,
			Message: eb.Error.Message}
	}
	conn.SetReadLimit(1 << 20)
	c := &AppConn{t: t, conn: conn, msgs: make(chan Msg, 10000), closed: make(chan struct{})}
	go c.readLoop()
	t.Cleanup(func() { conn.CloseNow() })
	return c, nil
}

// silentGateway is a carrier gateway that never answers an INVITE (a
// network black hole), counts them, and answers OPTIONS once revived.
type silentGateway struct {
	conn    *net.UDPConn
	mu      sync.Mutex
	invites int
	options int
	revived bool
	done    chan struct{}
}

func newSilentGateway(t *testing.T) *silentGateway {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: freePort(t)})
	if err != nil {
		t.Fatal(err)
	}
	g := &silentGateway{conn: c, done: make(chan struct{})}
	go g.serve()
	t.Cleanup(func() { c.Close(); <-g.done })
	return g
}

func (g *silentGateway) URI() string {
	return fmt.Sprintf("sip:127.0.0.1:%d;transport=udp", g.conn.LocalAddr().(*net.UDPAddr).Port)
}

func (g *silentGateway) serve() {
	defer close(g.done)
	buf := make([]byte, 8192)
	for {
		n, from, err := g.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		msg := string(buf[:n])
		g.mu.Lock()
		switch {
		case strings.HasPrefix(msg, "INVITE "):
			g.invites++
		case strings.HasPrefix(msg, "OPTIONS "):
			g.options++
			if g.revived {
				g.conn.WriteToUDP([]byte(okFor(msg)), from)
			}
		}
		g.mu.Unlock()
	}
}

// okFor is a 200 OK to an OPTIONS request.
func okFor(req string) string {
	var b strings.Builder
	b.WriteString("SIP/2.0 200 OK\r\n")
	for _, line := range strings.Split(req, "\r\n")[1:] {
		name, _, _ := strings.Cut(line, ":")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "via", "from", "call-id", "cseq":
			b.WriteString(line + "\r\n")
		case "to":
			b.WriteString(line + ";tag=silent\r\n")
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

func (g *silentGateway) counts() (invites, options int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.invites, g.options
}

func (g *silentGateway) revive() {
	g.mu.Lock()
	g.revived = true
	g.mu.Unlock()
}
