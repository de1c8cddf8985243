package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"trunkgate/keys"
)

// Proxy is a Kamailio record-routing proxy between SIPp and the edge.
type Proxy struct {
	Port int
	out  *lockedBuffer
}

// StartProxy runs Kamailio (testdata/kamailio/proxy.cfg.tmpl) on its own
// loopback port, UDP and TCP; it is stopped at cleanup.
func StartProxy(t *testing.T) *Proxy {
	t.Helper()
	if _, err := exec.LookPath("kamailio"); err != nil {
		t.Fatal("kamailio not found; `make test` installs it (Debian package kamailio)")
	}
	dir := t.TempDir()
	p := &Proxy{Port: freePort(t), out: &lockedBuffer{}}
	tmpl := template.Must(template.ParseFiles(filepathFromRoot("testdata/kamailio/proxy.cfg.tmpl")))
	var cfg bytes.Buffer
	if err := tmpl.Execute(&cfg, p); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(cfgFile, cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("kamailio", "-f", cfgFile, "-DD", "-E", "-w", dir, "-Y", dir, "-P", filepath.Join(dir, "kamailio.pid"),
		"-m", "32", "-M", "4")
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("kamailio output:\n%s", tail(p.out.String(), 60))
		}
	})
	waitListening(t, "t1", p.Port)
	return p
}

// TestTargetRefreshBehindKamailio: a carrier behind a record-routing
// Kamailio answers from a dead Contact, then moves it with a re-INVITE.
// When the app hangs up, the edge's BYE must follow the route set to the
// new Contact (before the fix it went to the old one: Kamailio answered
// 408 and the carrier's leg stayed up).
// The carrier speaks UDP, or TCP to the proxy (which then record-routes
// twice: TCP toward the carrier, UDP toward the edge).
func TestTargetRefreshBehindKamailio(t *testing.T) {
	for _, transport := range []string{"u1", "t1"} {
		t.Run(map[string]string{"u1": "udp", "t1": "tcp"}[transport], func(t *testing.T) { targetRefreshBehindKamailio(t, transport) })
	}
}

func targetRefreshBehindKamailio(t *testing.T, transport string) {
	e := StartEdge(t)
	proxy := StartProxy(t)
	app := StartApp(t)
	k := e.NewKey("behind a proxy", keys.Limits{})
	e.NewTrunk(k.Key.ID, "+15557300", app.URL, nil)
	sipPort, mediaPort := sippPorts(t)
	dir := t.TempDir()
	scenario, err := filepath.Abs(filepathFromRoot("testdata/sipp/uac_refresh.xml"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sipp", fmt.Sprintf("127.0.0.1:%d", e.SIPPort), "-rsa", fmt.Sprintf("127.0.0.1:%d", proxy.Port),
		"-sf", scenario, "-s", "+15557300", "-m", "1", "-i", "127.0.0.1",
		"-p", strconv.Itoa(sipPort), "-mi", "127.0.0.1", "-mp", strconv.Itoa(mediaPort), "-t", transport, "-nostdin",
		"-timeout", "30s", "-timeout_error", "-trace_msg", "-message_file", filepath.Join(dir, "messages.log"),
		"-trace_logs", "-log_file", filepath.Join(dir, "logs.log"))
	cmd.Dir = dir
	var screen lockedBuffer
	cmd.Stdout, cmd.Stderr = &screen, &screen
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var sippErr error
	go func() { sippErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			messages, _ := os.ReadFile(filepath.Join(dir, "messages.log"))
			t.Logf("SIPp output:\n%s\n--- messages ---\n%s", tail(screen.String(), 30), tail(string(messages), 80))
		}
	})
	conn := app.Next(t)
	conn.Expect(t, "start")
	// The re-INVITE has moved the remote target to SIPp's own address.
	e.WaitLog(fmt.Sprintf(`in-dialog offer answered.*remote_target="?sip:moved@127\.0\.0\.1:%d`, sipPort))
	conn.Close()
	select {
	case <-done:
		if sippErr != nil {
			t.Fatalf("SIPp behind Kamailio never got the BYE: %v", sippErr)
		}
		logs, _ := os.ReadFile(filepath.Join(dir, "logs.log"))
		if want := fmt.Sprintf("BYE RURI=sip:moved@127.0.0.1:%d", sipPort); !strings.Contains(string(logs), want) {
			t.Fatalf("the BYE went elsewhere: %s", logs)
		}
		// The BYE went through the proxy (the route set), not straight to
		// the Contact.
		if !strings.Contains(proxy.out.String(), fmt.Sprintf("proxy: BYE sip:moved@127.0.0.1:%d", sipPort)) {
			t.Fatalf("the edge's BYE did not follow the route set through the proxy")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("SIPp still waiting for the BYE")
	}
	if c := e.WaitCDRs(k.Key.ID, 1)[0]; c.HangupSide != "app" || c.FinalCode != 200 {
		t.Fatalf("CDR %+v", c)
	}
}
