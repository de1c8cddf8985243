package e2e

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"trunkgate/keys"
)

// TestLargeInvites: INVITEs that crossed many proxies (1.3, 4 and 8 KB,
// their Via headers carried back in every response) are answered over UDP
// and TCP, and the call works: sipgo used to refuse any UDP message over
// 1300 bytes, so the 200 OK never left.
func TestLargeInvites(t *testing.T) {
	e := StartEdge(t)
	app := StartApp(t)
	k := e.NewKey("large", keys.Limits{})
	e.NewTrunk(k.Key.ID, "+15557400", app.URL, nil)
	for _, transport := range []string{"u1", "t1"} {
		for _, size := range []int{1300, 4000, 8000} {
			t.Run(fmt.Sprintf("%s-%d", transport, size), func(t *testing.T) {
				run := Call{Number: "+15557400", Transport: transport, ProxyBytes: size,
					Steps: []Step{{Pcap: g711aPcap, PauseMS: 1000}}}.Start(t, e)
				conn := app.Next(t)
				conn.Expect(t, "start")
				res := run.Wait(t).MustPass(t)
				if !strings.Contains(res.Messages, "z9hG4bK-proxy-000") {
					t.Fatal("the INVITE carried no proxy Via")
				}
				invite := res.Messages[strings.Index(res.Messages, "INVITE sip:"):]
				invite = invite[:strings.Index(invite, "\n\n")]
				if len(invite) < size-800 {
					t.Fatalf("INVITE headers of %d bytes, want about %d", len(invite), size)
				}
				<-conn.Closed()
				if frames, _ := conn.Media(); len(frames) < 25 {
					t.Fatalf("only %d frames reached the app", len(frames))
				}
			})
		}
	}
	if cdrs := e.WaitCDRs(k.Key.ID, 6); len(cdrs) != 6 {
		t.Fatalf("%d CDRs", len(cdrs))
	} else {
		for _, c := range cdrs {
			if c.FinalCode != 200 || c.BilledSeconds == 0 {
				t.Fatalf("CDR %+v", c)
			}
		}
	}
}

// TestLargeOutboundInviteOverTCP: an outbound INVITE over 1300 bytes (a
// trunk with many custom headers) goes over TCP to a gateway that listens
// on UDP and TCP, though the trunk says UDP (RFC 3261 §18.1.1).
func TestLargeOutboundInviteOverTCP(t *testing.T) {
	e := StartEdge(t)
	tcp := StartGateway(t, Gateway{Code: 486, Phrase: "Busy Here", Transport: "t1"})
	udp := StartGateway(t, Gateway{Code: 486, Phrase: "Busy Here", Transport: "u1", Port: tcp.Port})
	k := e.NewKey("large outbound", keys.Limits{}, "calls:outbound")
	headers := map[string]string{}
	for i := range 14 {
		headers[fmt.Sprintf("X-Account-Data-%02d", i)] = strings.Repeat("d", 200)
	}
	e.NewOutboundTrunk(k.Key.ID, map[string]any{"caller_id": "+15550100", "headers": headers}, udp.URI)
	app, refused := e.DialStream(t, k.APIKey, url.Values{"to": {"+15551230000"}})
	if refused != nil {
		t.Fatal(refused)
	}
	if stop := app.Expect(t, "stop"); stop.Stop.SIPCode != 486 {
		t.Fatalf("stop %+v", stop.Stop)
	}
	tcp.Wait(t)
	if n := udp.Invites(); n != 0 {
		t.Fatalf("the %d-byte INVITE went over UDP", n)
	}
	if !strings.Contains(tcp.Messages(), "Via: SIP/2.0/TCP ") || !strings.Contains(tcp.Messages(), "X-Account-Data-13") {
		t.Fatalf("over TCP:\n%s", tail(tcp.Messages(), 20))
	}
}

// rawUDP sends SIP requests from a chosen loopback address and collects
// what comes back.
type rawUDP struct {
	t    *testing.T
	conn *net.UDPConn
}

func newRawUDP(t *testing.T, ip string) *rawUDP {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip), Port: freePort(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawUDP{t: t, conn: c}
}

func (r *rawUDP) port() int { return r.conn.LocalAddr().(*net.UDPAddr).Port }

func (r *rawUDP) ip() string { return r.conn.LocalAddr().(*net.UDPAddr).IP.String() }

func (r *rawUDP) send(e *Edge, msg string) {
	r.t.Helper()
	msg = strings.ReplaceAll(strings.ReplaceAll(strings.TrimLeft(msg, "\n"), "\r\n", "\n"), "\n", "\r\n")
	if _, err := r.conn.WriteToUDP([]byte(msg), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: e.SIPPort}); err != nil {
		r.t.Fatal(err)
	}
}

// answers reads what comes back within d for the request with callID,
// once each (an unacknowledged final response is retransmitted).
func (r *rawUDP) answers(d time.Duration, callID string) []string {
	var out []string
	seen := map[string]bool{}
	buf := make([]byte, 65535)
	deadline := time.Now().Add(d)
	for {
		r.conn.SetReadDeadline(deadline)
		n, _, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			return out
		}
		msg := string(buf[:n])
		if strings.Contains(msg, "\r\nCall-ID: "+callID+"\r\n") && !seen[msg] {
			seen[msg] = true
			out = append(out, msg)
		}
	}
}

func (r *rawUDP) invite(e *Edge, number, callID string) {
	r.send(e, fmt.Sprintf(`
INVITE sip:%[1]s@127.0.0.1:%[2]d SIP/2.0
Via: SIP/2.0/UDP %[3]s:%[4]d;branch=z9hG4bK-%[5]s
From: <sip:scanner@%[3]s>;tag=%[5]s
To: <sip:%[1]s@127.0.0.1>
Call-ID: %[5]s
CSeq: 1 INVITE
Contact: <sip:scanner@%[3]s:%[4]d>
Max-Forwards: 70
Content-Length: 0

`, number, e.SIPPort, r.ip(), r.port(), callID))
}

// normalise removes what may differ between two answers that must
// otherwise be the same: tags, Call-ID, branch, nonce.
var varying = regexp.MustCompile(`(tag|branch|nonce)=("[^"]*"|[^;,\s>]*)|Call-ID: \S+|CSeq: \d+`)

func normalise(s string) string { return varying.ReplaceAllString(s, "$1=*") }

// TestNoNumberEnumeration: a source no trunk allows gets byte-identical
// answers (apart from tags and Call-ID) for a number that exists and one
// that does not — by default none at all; and a digest trunk open to any
// source challenges both alike (TestSvwarFindsNothing runs the scanner).
func TestNoNumberEnumeration(t *testing.T) {
	app := StartApp(t)
	t.Run("reject", func(t *testing.T) {
		e := StartEdge(t, "--unknown-source", "reject")
		k := e.NewKey("enum", keys.Limits{})
		e.NewTrunk(k.Key.ID, "+15557500", app.URL, map[string]any{"allowed_sources": []string{"127.0.0.1/32"}})
		scanner := newRawUDP(t, "127.0.0.2")
		scanner.invite(e, "+15557500", "exists-1")
		exists := scanner.answers(300*time.Millisecond, "exists-1")
		scanner.invite(e, "+15557599", "missing-1")
		missing := scanner.answers(300*time.Millisecond, "missing-1")
		if len(exists) == 0 || len(exists) != len(missing) {
			t.Fatalf("answers: %d for an existing number, %d for a missing one", len(exists), len(missing))
		}
		for i := range exists {
			a, b := normalise(strings.ReplaceAll(exists[i], "+15557500", "N")), normalise(strings.ReplaceAll(missing[i], "+15557599", "N"))
			if a != b {
				t.Fatalf("answer %d differs:\n%s\n---\n%s", i, a, b)
			}
		}
		if !strings.HasPrefix(exists[len(exists)-1], "SIP/2.0 403 ") {
			t.Fatalf("final answer %q", exists[len(exists)-1])
		}
	})
	t.Run("drop", func(t *testing.T) {
		e := StartEdge(t)
		k := e.NewKey("enum", keys.Limits{})
		e.NewTrunk(k.Key.ID, "+15557500", app.URL, map[string]any{"allowed_sources": []string{"127.0.0.1/32"}})
		scanner := newRawUDP(t, "127.0.0.2")
		scanner.invite(e, "+15557500", "exists-2")
		scanner.invite(e, "+15557599", "missing-2")
		if got := append(scanner.answers(700*time.Millisecond, "exists-2"), scanner.answers(10*time.Millisecond, "missing-2")...); len(got) != 0 {
			t.Fatalf("a source no trunk allows got %d answers: %q", len(got), got[0])
		}
		// The edge still answers its carrier.
		RunSIPp(t, e, Call{Number: "+15557599", Expect: 404}).MustPass(t)
	})
	t.Run("digest", func(t *testing.T) {
		e := StartEdge(t)
		k := e.NewKey("enum", keys.Limits{})
		e.NewTrunk(k.Key.ID, "+15557500", app.URL, map[string]any{"allowed_sources": []string{"0.0.0.0/0"},
			"digest_username": "pbx-9", "digest_password": "digest-pass-9"})
		scanner := newRawUDP(t, "127.0.0.2")
		scanner.invite(e, "+15557500", "exists-3")
		exists := scanner.answers(300*time.Millisecond, "exists-3")
		scanner.invite(e, "+15557599", "missing-3")
		missing := scanner.answers(300*time.Millisecond, "missing-3")
		if len(exists) == 0 || len(exists) != len(missing) || !strings.HasPrefix(exists[len(exists)-1], "SIP/2.0 401 ") {
			t.Fatalf("answers %q vs %q", exists, missing)
		}
		a, b := normalise(strings.ReplaceAll(exists[len(exists)-1], "+15557500", "N")),
			normalise(strings.ReplaceAll(missing[len(missing)-1], "+15557599", "N"))
		if a != b {
			t.Fatalf("challenges differ:\n%s\n---\n%s", a, b)
		}
	})
}

// TestFloodBanned: a scanner's 200 requests a second from one source are
// banned within the window, while the carrier's 10 calls a second from
// its own network all go through with audio; the ban is audited once.
func TestFloodBanned(t *testing.T) {
	e := StartEdge(t, "--flood-requests", "40", "--flood-window", "1s", "--flood-ban", "60s")
	app := StartApp(t)
	k := e.NewKey("carrier", keys.Limits{})
	e.NewTrunk(k.Key.ID, "+15557600", app.URL, map[string]any{"allowed_sources": []string{"127.0.0.1/32"}})
	go func() { // the app answers every call and keeps its audio
		for {
			select {
			case <-app.conns:
			case <-time.After(30 * time.Second):
				return
			}
		}
	}()
	// The flood: OPTIONS from 127.0.0.2 at 200 a second for 4 s.
	scenario, err := filepath.Abs(filepathFromRoot("testdata/sipp/options_flood.xml"))
	if err != nil {
		t.Fatal(err)
	}
	floodPort, floodMedia := sippPorts(t)
	flood := exec.Command("sipp", fmt.Sprintf("127.0.0.1:%d", e.SIPPort), "-sf", scenario, "-s", "100", "-m", "800",
		"-r", "200", "-i", "127.0.0.2", "-p", strconv.Itoa(floodPort), "-mi", "127.0.0.2", "-mp", strconv.Itoa(floodMedia),
		"-nostdin", "-timeout", "30s")
	flood.Dir = t.TempDir()
	cpuBefore, floodStart := e.CPU(), time.Now()
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	floodDone := make(chan error, 1)
	go func() { floodDone <- flood.Wait() }()
	t.Cleanup(func() { flood.Process.Kill() })
	// Meanwhile the carrier: 30 calls at 10 a second, each with audio.
	res := Call{Number: "+15557600", Calls: 30, Rate: 10, Steps: []Step{{Pcap: g711aPcap, PauseMS: 800}}}.Start(t, e).Wait(t)
	if res.Exit != 0 {
		t.Fatalf("the carrier's calls failed during the flood (SIPp exit %d):\n%s", res.Exit, tail(res.Screen, 40))
	}
	<-floodDone
	cpu, took := e.CPU()-cpuBefore, time.Since(floodStart)
	cdrs := e.WaitCDRs(k.Key.ID, 30)
	for _, c := range cdrs {
		if c.FinalCode != 200 || c.Media.PacketsIn < 20 {
			t.Fatalf("a carrier call suffered: %+v", c)
		}
	}
	if v, _ := e.Metric("trunkgate_flood_bans_total"); v != 1 {
		t.Fatalf("bans %v, want 1", v)
	}
	if v, _ := e.Metric("trunkgate_flood_requests_dropped_total"); v < 500 {
		t.Fatalf("only %v flood requests dropped", v)
	}
	var audit struct{ Audit []keys.AuditEntry }
	e.MustAPI(200, "GET", "/v1/audit?action=flood.ban", nil, &audit)
	if len(audit.Audit) != 1 || audit.Audit[0].Target != "127.0.0.2" {
		t.Fatalf("flood audit rows %+v, want one for 127.0.0.2", audit.Audit)
	}
	banned := e.WaitLog(`time=(\S+) level=WARN msg="source banned for flooding"`)
	at, err := time.Parse(time.RFC3339Nano, banned[1])
	if err != nil {
		t.Fatal(err)
	}
	// The figures for docs/PERFORMANCE.md (go test -v).
	t.Logf("flood figures: carrier calls %d/30 answered with audio; banned %v after the flood began; edge CPU %v over %v (%.0f%% of one core)",
		len(cdrs), at.Sub(floodStart).Round(time.Millisecond), cpu, took.Round(time.Millisecond), 100*cpu.Seconds()/took.Seconds())
}

// TestControlCharactersStaySafe: a Request-URI user with an escape
// sequence is kept as received in the audit log, printed escaped by the
// CLI; names with control characters are refused; the Server header can
// be turned off.
func TestControlCharactersStaySafe(t *testing.T) {
	e := StartEdge(t, "--unknown-source", "reject", "--server-header", "")
	scanner := newRawUDP(t, "127.0.0.2")
	scanner.invite(e, "1555\x1bcRESET\x07", "ctrl-1")
	answers := scanner.answers(500*time.Millisecond, "ctrl-1")
	if len(answers) == 0 {
		t.Fatal("no answer")
	}
	for _, a := range answers {
		if strings.Contains(a, "\nServer:") || strings.Contains(a, "trunkgate") {
			t.Fatalf("the edge named itself with --server-header empty:\n%s", a)
		}
	}
	var raw struct{ Audit []keys.AuditEntry }
	waitFor(t, 5*time.Second, "the audit row", func() bool {
		e.MustAPI(200, "GET", "/v1/audit?action=call.refuse", nil, &raw)
		return len(raw.Audit) > 0
	})
	if !strings.Contains(raw.Audit[0].Detail, "1555\x1bcRESET\x07") {
		t.Fatalf("audit detail %q: not as received", raw.Audit[0].Detail)
	}
	out := e.cli(t, "audit", "--action", "call.refuse")
	if strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, `1555\x1bcRESET\a`) {
		t.Fatalf("trunkgate audit printed %q", out)
	}
	if s := e.API("POST", "/v1/keys", "", map[string]any{"name": "evil\x1b[2J", "scopes": []string{"calls:inbound"}}, nil); s != 400 {
		t.Fatalf("a key name with ESC: %d", s)
	}
	if s := e.API("POST", "/v1/keys", "", map[string]any{"name": "rtl\u202etxt", "scopes": []string{"calls:inbound"}}, nil); s != 400 {
		t.Fatalf("a key name with a bidi override: %d", s)
	}

}

// TestSvwarFindsNothing: SIPVicious svwar, the scanner the issue names,
// walks a list of numbers with INVITEs. From a source no trunk allows it
// lists none of them, with the edge answering a uniform 403 or nothing;
// from the carrier's own source (the control) it finds the trunk's
// number, so a blind scanner would show here.
func TestSvwarFindsNothing(t *testing.T) {
	if _, err := exec.LookPath("svwar"); err != nil {
		t.Fatal("svwar not found; `make test` installs it (Debian package sipvicious)")
	}
	app := StartApp(t)
	dictionary := filepath.Join(t.TempDir(), "numbers")
	if err := os.WriteFile(dictionary, []byte("+15557500\n+15557599\n+15557501\n+15557502\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	svwar := func(e *Edge) string {
		t.Helper()
		port, _ := sippPorts(t)
		cmd := exec.Command("svwar", "-m", "INVITE", "-d", dictionary, "-p", strconv.Itoa(e.SIPPort), "-P", strconv.Itoa(port),
			"--force", "--maximumtime", "5", "127.0.0.1")
		cmd.Dir = t.TempDir()
		cmd.Env = append(os.Environ(), "HOME="+cmd.Dir) // its saved sessions stay in the test
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("svwar: %v\n%s", err, out)
		}
		return string(out)
	}
	for _, mode := range []string{"reject", "drop"} {
		t.Run(mode, func(t *testing.T) {
			e := StartEdge(t, "--unknown-source", mode)
			k := e.NewKey("enum", keys.Limits{})
			// svwar sends from 127.0.0.1; the carrier is 127.0.0.3.
			e.NewTrunk(k.Key.ID, "+15557500", app.URL, map[string]any{"allowed_sources": []string{"127.0.0.3/32"}})
			// svwar repeats the answers it got in its log; its findings are
			// the rows of its table.
			if out := svwar(e); strings.Contains(out, "| +1555") {
				t.Fatalf("svwar found numbers from a source no trunk allows:\n%s", out)
			}
		})
	}
	t.Run("control", func(t *testing.T) {
		e := StartEdge(t)
		k := e.NewKey("enum", keys.Limits{})
		e.NewTrunk(k.Key.ID, "+15557500", app.URL, map[string]any{"allowed_sources": []string{"127.0.0.1/32"}})
		if out := svwar(e); !strings.Contains(out, "| +15557500 ") || strings.Contains(out, "+15557599") {
			t.Fatalf("svwar from the carrier's source should list exactly the trunk's number:\n%s", out)
		}
	})
}
