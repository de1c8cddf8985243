package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"
)

// Call describes one SIPp carrier call (testdata/sipp/uac.xml.tmpl).
type Call struct {
	Name   string
	Number string // dialled number (Request-URI user)
	From   string // caller number
	Codecs string // payload types offered, in order
	Ptime  int
	// SDPPort is the RTP port in the offer: 0 means SIPp's own media port
	// (-mp); a Go RTPPeer's port makes the edge send its audio there.
	SDPPort int
	// Expect is the final response: 200, or the refusal code to expect.
	Expect int
	// CancelAfterMS sends CANCEL this long after the INVITE (before answer).
	CancelAfterMS int
	Steps         []Step
	// Hangup: "caller" (SIPp sends BYE after the steps) or "callee" (SIPp
	// waits up to WaitByeMS for the edge's BYE).
	Hangup    string
	WaitByeMS int
	Transport string // "u1" (UDP, default) or "t1" (TCP)
	RTPEcho   bool   // SIPp echoes the RTP it receives (-rtp_echo)
	LocalIP   string // SIPp's address, default 127.0.0.1
	// Auth, when set, answers the edge's 401 challenge with these digest
	// credentials (the re-sent INVITE has CSeq 2).
	Auth *Auth
	// ProxyBytes pads the INVITE to about this size with the Via headers
	// of proxies it crossed, which every response carries back too.
	ProxyBytes int
	// Calls and Rate make SIPp place this many calls at this many a
	// second (default one call).
	Calls, Rate int
	// Headers are extra INVITE header lines ("X-Customer-Id: 42").
	Headers []string
	// Transfer, when set, makes SIPp wait (after the steps) for the
	// edge's REFER, accept it, call the Refer-To target at a second SIPp
	// and NOTIFY the edge of that call's final status (RFC 3515).
	Transfer *TransferTarget
}

// TransferTarget is a second SIPp (a Gateway) that takes transferred
// calls on 127.0.0.1:Port and answers them with Code Phrase.
type TransferTarget struct {
	Port   int
	Code   int
	Phrase string
}

// ProxyVias are the Via headers of the proxies a padded INVITE crossed.
func (c Call) ProxyVias() []string {
	var vias []string
	for i, n := 0, c.ProxyBytes-700; n > 0; i++ {
		v := fmt.Sprintf("Via: SIP/2.0/UDP 10.%d.%d.1:5060;branch=z9hG4bK-proxy-%03d-%s;received=10.%d.%d.1", i/250, i%250, i,
			strings.Repeat("x", 30), i/250, i%250)
		vias = append(vias, v)
		n -= len(v) + 2
	}
	return vias
}

// Auth is a carrier's digest username and password.
type Auth struct{ User, Password string }

// Step is one thing the caller does once answered.
type Step struct {
	Pcap      string // play_pcap_audio file
	RTPStream string // rtp_stream "file,loops,payload type" (headerless G.711)
	PauseMS   int
	Reinvite  string // re-INVITE with this direction: sendonly, inactive, sendrecv
	CSeq      int
}

// SIPpResult is how a SIPp run went.
type SIPpResult struct {
	Exit     int
	Log      string // <log> lines
	Messages string // every SIP message sent and received
	Screen   string
	Took     time.Duration
	Ended    time.Time
}

var scenarioTemplate = template.Must(template.New("uac.xml.tmpl").Funcs(template.FuncMap{
	// invite gives the "invite" block the scenario, the CSeq and an
	// optional SIPp [authentication] line.
	"invite": func(d any, cseq int, auth string) map[string]any {
		return map[string]any{"D": d, "CSeq": cseq, "Auth": auth}
	},
}).ParseFiles(filepathFromRoot("testdata/sipp/uac.xml.tmpl")))

func filepathFromRoot(rel string) string {
	_, err := os.Stat(rel)
	if err == nil {
		return rel
	}
	return filepath.Join("..", rel)
}

// sippPorts hands each SIPp run its own SIP and media ports.
func sippPorts(t *testing.T) (sipPort, mediaPort int) {
	sipPort = freePort(t)
	return sipPort, portRange(t, 4) // audio RTP and RTCP, and SIPp's video pair
}

// RunSIPp renders the call's scenario and runs SIPp against the edge for
// one call. It returns when SIPp exits.
func RunSIPp(t *testing.T, e *Edge, c Call) SIPpResult {
	t.Helper()
	return c.start(t, e).Wait(t)
}

// SIPpRun is a SIPp process in flight.
type SIPpRun struct {
	cmd    *exec.Cmd
	dir    string
	screen *bytes.Buffer
	start  time.Time
	done   chan struct{}
	err    error
	ended  time.Time
}

// Start runs SIPp in the background (for calls that must overlap).
func (c Call) Start(t *testing.T, e *Edge) *SIPpRun { return c.start(t, e) }

func (c Call) start(t *testing.T, e *Edge) *SIPpRun {
	t.Helper()
	if c.Codecs == "" {
		c.Codecs = "8 0 101"
	}
	if c.Ptime == 0 {
		c.Ptime = 20
	}
	if c.From == "" {
		c.From = "+15557654321"
	}
	if c.Expect == 0 {
		c.Expect = 200
	}
	if c.Hangup == "" {
		c.Hangup = "caller"
	}
	if c.WaitByeMS == 0 {
		c.WaitByeMS = 20000
	}
	if c.Transport == "" {
		c.Transport = "u1"
	}
	if c.LocalIP == "" {
		c.LocalIP = "127.0.0.1"
	}
	if c.Name == "" {
		c.Name = t.Name()
	}
	inviteCSeq := 1
	if c.Auth != nil {
		inviteCSeq = 2
	}
	cseq := inviteCSeq + 1
	for i := range c.Steps {
		if c.Steps[i].Reinvite != "" {
			c.Steps[i].CSeq = cseq
			cseq++
		}
	}
	dir := t.TempDir()
	var buf bytes.Buffer
	data := struct {
		Call
		SDPPort    string
		ByeCSeq    int
		NotifyCSeq int
		InviteCSeq int
		EdgePort   int
	}{Call: c, SDPPort: "[media_port]", ByeCSeq: cseq + 1, NotifyCSeq: cseq, InviteCSeq: inviteCSeq, EdgePort: e.SIPPort}
	if c.SDPPort != 0 {
		data.SDPPort = strconv.Itoa(c.SDPPort)
	}
	if err := scenarioTemplate.Execute(&buf, data); err != nil {
		t.Fatal(err)
	}
	scenario := filepath.Join(dir, "scenario.xml")
	if err := os.WriteFile(scenario, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sipPort, mediaPort := sippPorts(t)
	if c.Calls == 0 {
		c.Calls = 1
	}
	args := []string{
		fmt.Sprintf("127.0.0.1:%d", e.SIPPort), "-sf", scenario, "-s", c.Number, "-m", strconv.Itoa(c.Calls),
		"-i", c.LocalIP, "-p", strconv.Itoa(sipPort), "-mi", c.LocalIP, "-mp", strconv.Itoa(mediaPort),
		"-t", c.Transport, "-nostdin", "-timeout", "60s", "-timeout_error", "-recv_timeout", "30000",
		"-trace_msg", "-message_file", filepath.Join(dir, "messages.log"),
		"-trace_logs", "-log_file", filepath.Join(dir, "logs.log"),
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log"),
	}
	if c.RTPEcho {
		args = append(args, "-rtp_echo")
	}
	if c.Rate > 0 {
		args = append(args, "-r", strconv.Itoa(c.Rate), "-l", strconv.Itoa(4*c.Rate))
	}
	r := &SIPpRun{dir: dir, screen: &bytes.Buffer{}, start: time.Now(), done: make(chan struct{})}
	r.cmd = exec.CommandContext(context.Background(), "sipp", args...)
	r.cmd.Dir = dir
	r.cmd.Stdout, r.cmd.Stderr = r.screen, r.screen
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.err = r.cmd.Wait()
		r.ended = time.Now()
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
			t.Logf("SIPp %s", r.exitReport())
		}
	})
	return r
}

// exitReport is SIPp's exit status and the tail of what it printed, for a
// failed test: a test that fails waiting on the edge may have failed
// because SIPp never started its call.
func (r *SIPpRun) exitReport() string {
	code := r.cmd.ProcessState.ExitCode()
	hint := ""
	if code == 254 {
		hint = " (254: SIPp could not bind its SIP or media port)"
	}
	errs, _ := os.ReadFile(filepath.Join(r.dir, "errors.log"))
	msgs, _ := os.ReadFile(filepath.Join(r.dir, "messages.log"))
	return fmt.Sprintf("exit %d%s; output tail:\n%s\nerrors:\n%s\nlast messages:\n%s", code, hint, tail(r.screen.String(), 30),
		tail(string(errs), 10), tail(string(msgs), 40))
}

// Done is closed when SIPp has exited.
func (r *SIPpRun) Done() <-chan struct{} { return r.done }

// Wait waits (at most 90 s) for SIPp to exit and collects its output.
func (r *SIPpRun) Wait(t *testing.T) SIPpResult {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(90 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
		t.Fatal("SIPp did not finish")
	}
	res := SIPpResult{Exit: r.cmd.ProcessState.ExitCode(), Screen: r.screen.String(), Took: r.ended.Sub(r.start), Ended: r.ended}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(r.dir, name))
		return string(b)
	}
	res.Log, res.Messages = read("logs.log"), read("messages.log")
	if errs := read("errors.log"); errs != "" && res.Exit != 0 {
		res.Screen += "\n--- SIPp errors ---\n" + errs
	}
	return res
}

// MustPass fails the test unless SIPp saw the whole scenario through.
func (r SIPpResult) MustPass(t *testing.T) SIPpResult {
	t.Helper()
	if r.Exit != 0 {
		t.Fatalf("SIPp exit %d (scenario failed)\n%s\n--- messages ---\n%s", r.Exit, tail(r.Screen, 40), tail(r.Messages, 80))
	}
	return r
}

// Logged finds a <log> line's capture.
func (r SIPpResult) Logged(t *testing.T, pattern string) []string {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(r.Log)
	if m == nil {
		t.Fatalf("SIPp log has no %q:\n%s", pattern, r.Log)
	}
	for i := range m {
		m[i] = strings.TrimSpace(m[i]) // SIPp keeps the space after the colon
	}
	return m
}

// Final is the status line of the last final response SIPp received.
func (r SIPpResult) Final() string {
	var last string
	for _, line := range strings.Split(r.Messages, "\n") {
		if strings.HasPrefix(line, "SIP/2.0 ") && !strings.HasPrefix(line, "SIP/2.0 1") {
			last = strings.TrimSpace(line)
		}
	}
	return last
}
