package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"trunkgate/internal/tlsconf"
	"trunkgate/internal/tlsconf/tlstest"
	"trunkgate/keys"
)

// TestHTTPSAndWSS: with --tls-cert and --tls-key the REST API and the
// outbound stream are HTTPS and WSS; the CLI verifies them against --ca
// (and refuses without it); a new certificate is taken on SIGHUP without
// a restart.
func TestHTTPSAndWSS(t *testing.T) {
	ca := tlstest.NewCA(t, "trunkgate test CA")
	e := StartTLSEdge(t, ca)
	if !strings.HasPrefix(e.HTTP, "https://127.0.0.1:") {
		t.Fatalf("edge serves %s, want https://", e.HTTP)
	}
	k := e.NewTestKey("over tls", keys.Limits{}, "calls:outbound")
	if out := e.cli(t, "keys", "list"); !strings.Contains(out, k.Key.ID) {
		t.Fatalf("keys list over HTTPS:\n%s", out)
	}
	noCA := e.cliCmd("keys", "list")
	noCA.Env = append(noCA.Env, "TRUNKGATE_CA=")
	if out, err := noCA.CombinedOutput(); err == nil || !strings.Contains(string(out), "certificate") {
		t.Fatalf("the CLI trusted a certificate from an unknown CA: %v\n%s", err, out)
	}
	// An AI application places a call over wss:// (the sandbox echoes).
	conn, refused := e.DialStream(t, k.APIKey, url.Values{"to": {"+15005550006"}})
	if refused != nil {
		t.Fatalf("stream over wss refused: %+v", refused)
	}
	start := conn.Expect(t, "start")
	conn.SendAudio(t, start.StreamSid, ulawTone(1000, 8000, 8000))
	waitFor(t, 10*time.Second, "the echo over wss", func() bool { n, _ := toneFrames(conn, 1000); return n >= 40 })
	conn.Close()
	// `trunkgate call` over wss too.
	if out := e.cli(t, "call", "--key", k.APIKey, "--to", "+15005550006", "--seconds", "1"); !strings.Contains(out, "answered") {
		t.Fatalf("trunkgate call over wss:\n%s", out)
	}

	// SIGHUP: the next handshake presents the new certificate.
	next := ca.Issue(t, t.TempDir(), "edge-renewed", "127.0.0.1")
	for src, dst := range map[string]string{next.CertFile: e.TLS.CertFile, next.KeyFile: e.TLS.KeyFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.cmd.Process.Signal(syscall.SIGHUP)
	client, err := tlsconf.ClientConfig(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the renewed certificate", func() bool {
		c, err := tls.Dial("tcp", strings.TrimPrefix(e.HTTP, "https://"), client)
		if err != nil {
			return false
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName == "edge-renewed"
	})
	e.WaitLog(`msg="SIGHUP: TLS certificate reloaded" subject="CN=edge-renewed"`)
	// SIP over TLS presents the same renewed certificate.
	sipTLS := fmt.Sprintf("127.0.0.1:%d", e.SIPTLSPort)
	if c, err := tls.Dial("tcp", sipTLS, client); err != nil || c.ConnectionState().PeerCertificates[0].Subject.CommonName != "edge-renewed" {
		t.Fatalf("SIP over TLS after SIGHUP: %v", err)
	} else {
		c.Close()
	}
	// TLS 1.1 is refused, by HTTPS and SIP alike.
	old := client.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
	for _, addr := range []string{strings.TrimPrefix(e.HTTP, "https://"), sipTLS} {
		if c, err := tls.Dial("tcp", addr, old); err == nil {
			c.Close()
			t.Fatalf("TLS 1.1 accepted at %s", addr)
		}
	}
}

// TestPlainHTTPOnlyOnLoopback: plain HTTP on an address other than
// loopback is refused at start, unless the operator allows it.
func TestPlainHTTPOnlyOnLoopback(t *testing.T) {
	db := filepath.Join(t.TempDir(), "edge.db")
	refused := exec.Command(edgeBinary, "serve", "--db", db, "--sip-addr", "127.0.0.1:0", "--http-addr", "0.0.0.0:0")
	out, err := refused.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--http-addr 0.0.0.0:0 is not a loopback address") {
		t.Fatalf("plain HTTP on 0.0.0.0 started: %v\n%s", err, out)
	}
	lo, hi := rtpRange(t)
	allowed := exec.Command(edgeBinary, "serve", "--db", db, "--sip-addr", "127.0.0.1:0", "--http-addr", "0.0.0.0:0",
		"--http-allow-plain", "--rtp-ports", fmt.Sprintf("%d-%d", lo, hi))
	stderr := &lockedBuffer{}
	allowed.Stderr = stderr
	if err := allowed.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { allowed.Wait(); close(exited) }()
	defer func() { allowed.Process.Signal(syscall.SIGTERM); <-exited }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !strings.Contains(stderr.String(), `msg="trunkgate up"`) {
		select {
		case <-exited:
			t.Fatalf("--http-allow-plain did not start:\n%s", stderr.String())
		case <-ctx.Done():
			t.Fatalf("--http-allow-plain not up in 10 s:\n%s", stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestAppOverWSS: an inbound call's application at a wss:// URL is
// reached when its certificate verifies against --tls-ca, and refused
// (480, the app unreachable) by an edge that does not trust it.
func TestAppOverWSS(t *testing.T) {
	ca := tlstest.NewCA(t, "app CA")
	app := StartTLSApp(t, ca)
	e := StartEdge(t, "--tls-ca", ca.File)
	k := e.NewKey("wss app", keys.Limits{})
	e.NewTrunk(k.Key.ID, "+15558700", app.URL, nil)
	run := Call{Number: "+15558700", Hangup: "callee", Steps: []Step{{Pcap: g711aPcap}}}.Start(t, e)
	conn := app.Next(t)
	conn.Expect(t, "start")
	conn.Expect(t, "media")
	conn.Close()
	run.Wait(t).MustPass(t)

	untrusting := StartEdge(t)
	k2 := untrusting.NewKey("wss app", keys.Limits{})
	untrusting.NewTrunk(k2.Key.ID, "+15558700", app.URL, nil)
	RunSIPp(t, untrusting, Call{Number: "+15558700", Expect: 480}).MustPass(t)
	untrusting.WaitLog(`AI application unreachable.*certificate`)
}
