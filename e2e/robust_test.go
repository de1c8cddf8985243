package e2e

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"trunkgate/keys"
)

// TestMalformedSIPLeavesCallsAlone fires malformed and hostile SIP messages
// (testdata/sip) at the edge while a call is up: each gets its error
// response or is dropped, nothing leaks into responses, and the call goes
// on undisturbed.
func TestMalformedSIPLeavesCallsAlone(t *testing.T) {
	e, app, k := setup(t, keys.Limits{}, "+15550100", nil)
	before := e.Goroutines()
	run := Call{Number: "+15550100", Steps: []Step{{Pcap: g711aPcap, PauseMS: 3000}}}.Start(t, e)
	conn := app.Next(t)
	conn.Expect(t, "start")

	sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	srcPort := strconv.Itoa(sock.LocalAddr().(*net.UDPAddr).Port)
	edgeAddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: e.SIPPort}

	// The answer each message must get; "" means none (dropped).
	want := map[string][]string{
		"missing-callid.sip":           {"400"},
		"missing-cseq.sip":             {"400"},
		"no-from-tag.sip":              {"400"},
		"bad-content-length.sip":       {"400"},
		"garbage-sdp.sip":              {"488"},
		"bad-request-line.sip":         {""}, // no CSeq: no answer can be built
		"unknown-method.sip":           {"501"},
		"bye-unknown-dialog.sip":       {"481"},
		"cseq-huge.sip":                {"400"},
		"header-injection-display.sip": {"404"},
		"binary-noise.sip":             {""},
		"only-crlf.sip":                {""},
	}
	files, err := filepath.Glob(filepathFromRoot("testdata/sip/*.sip"))
	if err != nil || len(files) != len(want) {
		t.Fatalf("torture messages: %v %v", files, err)
	}
	status := regexp.MustCompile(`^SIP/2\.0 (\d{3}) `)
	buf := make([]byte, 65535)
	for i, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		msg := strings.NewReplacer("{port}", strconv.Itoa(e.SIPPort), "{n}", strconv.Itoa(i), "{src}", srcPort).Replace(string(raw))
		if _, err := sock.WriteToUDP([]byte(msg), edgeAddr); err != nil {
			t.Fatal(err)
		}
		got := ""
		deadline := time.Now().Add(700 * time.Millisecond)
		for {
			sock.SetReadDeadline(deadline)
			n, _, err := sock.ReadFromUDP(buf)
			if err != nil {
				break
			}
			res := string(buf[:n])
			if m := status.FindStringSubmatch(res); m != nil && m[1] != "100" {
				got = m[1]
				if strings.Contains(strings.ToLower(res), "\r\nx-injected:") {
					t.Errorf("%s: injected header echoed:\n%s", filepath.Base(f), res)
				}
				// ACK final error responses to INVITEs so retransmissions stop.
				if strings.HasPrefix(msg, "INVITE") && got >= "300" {
					ack := strings.Replace(strings.SplitN(msg, "\r\n", 2)[0], "INVITE", "ACK", 1) + "\r\n" +
						headerLine(res, "Via") + headerLine(res, "From") + headerLine(res, "To") + headerLine(res, "Call-ID") +
						"CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
					sock.WriteToUDP([]byte(ack), edgeAddr)
				}
				break
			}
		}
		ok := false
		for _, w := range want[filepath.Base(f)] {
			ok = ok || w == got
		}
		if !ok {
			t.Errorf("%s: answered %q, want one of %q", filepath.Base(f), got, want[filepath.Base(f)])
		}
	}

	run.Wait(t).MustPass(t)
	<-conn.Closed()
	frames, _ := conn.Media()
	c := e.WaitCDRs(k.Key.ID, 1)[0]
	if c.FinalCode != 200 || c.HangupSide != "carrier" || c.DurationMS < 2900 || len(frames) < 140 {
		t.Fatalf("the live call was disturbed: %d frames, CDR %+v", len(frames), c)
	}
	// And the edge still takes calls.
	run = Call{Number: "+15550100", Steps: []Step{{PauseMS: 200}}}.Start(t, e)
	app.Next(t).Expect(t, "start")
	run.Wait(t).MustPass(t)
	e.WaitGoroutines(before + 3)
}

func headerLine(msg, name string) string {
	for _, line := range strings.Split(msg, "\r\n") {
		if strings.HasPrefix(strings.ToLower(line), strings.ToLower(name)+":") {
			return line + "\r\n"
		}
	}
	return ""
}

// TestRFC4475TortureMessages sends RFC 4475's torture messages (sipgo's
// copy of the corpus, testdata/torture) to the edge over UDP while a call
// is up: each gets the answer the RFC asks of an endpoint that is not a
// registrar, or none, the live call is untouched and the edge still
// takes calls. Each message leaves from its own loopback address, bound
// on its Via's port, so the answer comes back however the edge routes it.
// The corpus reuses branch ids across messages; each gets its own, as
// from a real peer, or the edge would rightly take one for a
// retransmission of another.
func TestRFC4475TortureMessages(t *testing.T) {
	e := StartEdge(t, "--sip-tcp-idle", "1s")
	app := StartApp(t)
	k := e.NewKey("e2e", keys.Limits{})
	e.NewTrunk(k.Key.ID, "+15550100", app.URL, nil)
	before := e.Goroutines()
	run := Call{Number: "+15550100", Steps: []Step{{Pcap: g711aPcap, PauseMS: 6000}}}.Start(t, e)
	conn := app.Next(t)
	conn.Expect(t, "start")

	// The answer each message must get ("" none). Where RFC 4475 allows
	// two answers the table takes the one the edge gives and says why.
	want := map[string]string{
		"valid/dblreq.dat":     "405", // REGISTER; the trailing "INVITE" bytes are not a message
		"valid/esc01.dat":      "404",
		"valid/esc02.dat":      "501", // RE%47IST%45R is not REGISTER
		"valid/escnull.dat":    "405",
		"valid/intmeth.dat":    "501",
		"valid/longreq.dat":    "404",
		"valid/lwsdisp.dat":    "200",
		"valid/mpart01.dat":    "405", // MESSAGE
		"valid/noreason.dat":   "",    // a response
		"valid/semiuri.dat":    "200",
		"valid/transports.dat": "200",
		"valid/unreason.dat":   "", // a response
		// RFC 2543 transaction matching needs the From tag, which sipgo
		// cannot read with LWS around '=' ("tag = 98asjd8"): it answers 400
		// where the RFC wants 481.
		"valid/wsinv.dat":        "400",
		"invalid/badaspec.dat":   "400",
		"invalid/badbranch.dat":  "200", // 2543 matching, as §3.2.1 allows
		"invalid/baddate.dat":    "404", // Date is not read
		"invalid/baddn.dat":      "400",
		"invalid/badinv01.dat":   "400",
		"invalid/badvers.dat":    "505",
		"invalid/bcast.dat":      "",
		"invalid/bext01.dat":     "420",
		"invalid/bigcode.dat":    "",
		"invalid/clerr.dat":      "400",
		"invalid/cparam01.dat":   "405",
		"invalid/cparam02.dat":   "405",
		"invalid/escruri.dat":    "404", // the escaped Route is ignored
		"invalid/insuf.dat":      "400",
		"invalid/inv2543.dat":    "400", // no From tag: strict, as §3.4.1 allows
		"invalid/invut.dat":      "404", // the number is checked before the body
		"invalid/ltgtruri.dat":   "400",
		"invalid/lwsruri.dat":    "400",
		"invalid/lwsstart.dat":   "400",
		"invalid/mcl01.dat":      "400",
		"invalid/mismatch01.dat": "400",
		"invalid/mismatch02.dat": "501",
		"invalid/multi01.dat":    "400",
		"invalid/ncl.dat":        "400",
		"invalid/novelsc.dat":    "416",
		"invalid/quotbal.dat":    "400",
		"invalid/regaut01.dat":   "405",
		"invalid/regbadct.dat":   "405",
		"invalid/regescrt.dat":   "405",
		"invalid/scalar02.dat":   "400",
		"invalid/scalarlg.dat":   "",
		"invalid/sdp01.dat":      "404",
		"invalid/test.dat":       "", // no Via: no answer can be built
		"invalid/trws.dat":       "400",
		"invalid/unkscm.dat":     "416",
		"invalid/unksm2.dat":     "405",
		"invalid/zeromf.dat":     "200", // the edge is the endpoint, not a proxy
	}
	files, err := filepath.Glob(filepathFromRoot("testdata/torture/*/*.dat"))
	if err != nil || len(files) != len(want) {
		t.Fatalf("torture corpus: %d files, %d expected (%v)", len(files), len(want), err)
	}
	viaPort := regexp.MustCompile(`(?im)^v(ia)?\s*:[^\r\n]*?[A-Za-z0-9.\-]+:(\d+)`)
	branch := regexp.MustCompile(`branch=z9hG4bK([^;,\s]+)`)
	edge := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: e.SIPPort}
	status := regexp.MustCompile(`^SIP/2\.0 (\d{3}) `)
	buf := make([]byte, 65535)
	for i, f := range files {
		name := filepath.Base(filepath.Dir(f)) + "/" + filepath.Base(f)
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		data = branch.ReplaceAll(data, []byte("branch=z9hG4bK${1}x"+strconv.Itoa(i)))
		port := 5060
		if m := viaPort.FindSubmatch(data); m != nil {
			port, _ = strconv.Atoi(string(m[2]))
		}
		sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 201, byte(i), 1), Port: port})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sock.WriteToUDP(data, edge); err != nil {
			t.Fatal(err)
		}
		// A message that gets no answer costs the whole wait; one that
		// gets an answer ends it.
		got := ""
		sock.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, _, err := sock.ReadFromUDP(buf)
			if err != nil {
				break
			}
			if m := status.FindSubmatch(buf[:n]); m != nil && string(m[1]) != "100" {
				got = string(m[1])
				break
			}
		}
		sock.Close()
		if got != want[name] {
			t.Errorf("%s: answered %q, want %q", name, got, want[name])
		}
	}
	tortureOverTCP(t, e, want)

	run.Wait(t).MustPass(t)
	<-conn.Closed()
	frames, _ := conn.Media()
	c := e.WaitCDRs(k.Key.ID, 1)[0]
	if c.FinalCode != 200 || c.HangupSide != "carrier" || c.BilledSeconds != ceilSeconds(c.DurationMS) || c.DurationMS < 5900 || len(frames) < 290 {
		t.Fatalf("the live call was disturbed: %d frames, CDR %+v", len(frames), c)
	}
	run = Call{Number: "+15550100", Steps: []Step{{PauseMS: 200}}}.Start(t, e)
	app.Next(t).Expect(t, "start")
	run.Wait(t).MustPass(t)
	e.WaitGoroutines(before + 3)
}

// tortureOverTCP sends the torture messages that parse, one after the
// other on one TCP connection as a carrier would, and expects the same
// answers as over UDP; then it leaves a message half sent (RFC 4475
// §3.1.2.2: Content-Length larger than what came) and expects the edge to
// close that connection once --sip-tcp-idle passes, answering nothing.
func tortureOverTCP(t *testing.T, e *Edge, want map[string]string) {
	t.Helper()
	conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(e.SIPPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	for i, name := range []string{"valid/esc01.dat", "valid/esc02.dat", "valid/longreq.dat", "valid/lwsdisp.dat",
		"valid/semiuri.dat", "valid/transports.dat", "valid/mpart01.dat", "invalid/badvers.dat", "invalid/bext01.dat",
		"invalid/mismatch01.dat", "invalid/multi01.dat", "invalid/unkscm.dat", "invalid/zeromf.dat", "invalid/invut.dat"} {
		data, err := os.ReadFile(filepathFromRoot("testdata/torture/" + name))
		if err != nil {
			t.Fatal(err)
		}
		// Another transaction than the UDP copy's, also for RFC 2543
		// matching (no branch: the Call-ID is part of the key).
		data = regexp.MustCompile(`branch=z9hG4bK([^;,\s]+)`).ReplaceAll(data, []byte("branch=z9hG4bK${1}t"+strconv.Itoa(i)))
		data = regexp.MustCompile(`(?im)^(call-id|i)\s*:\s*`).ReplaceAll(data, []byte("${0}tcp."))
		if _, err := conn.Write(data); err != nil {
			t.Fatalf("%s over TCP: %v", name, err)
		}
		code, err := readStatus(conn, r)
		if err != nil || code != want[name] {
			t.Errorf("%s over TCP: answered %q (%v), want %q", name, code, err, want[name])
		}
	}

	slow, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(e.SIPPort))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	data, err := os.ReadFile(filepathFromRoot("testdata/torture/invalid/clerr.dat"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Write(data); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	slow.SetReadDeadline(start.Add(5 * time.Second))
	n, err := slow.Read(make([]byte, 1024))
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("half-sent message: read %d bytes, %v; want the edge to close the connection", n, err)
	}
	if idle := time.Since(start); idle < 900*time.Millisecond {
		t.Fatalf("connection closed after %v, before --sip-tcp-idle", idle)
	}
}

// readStatus reads one SIP response from a stream and returns its code,
// skipping 100 Trying.
func readStatus(conn net.Conn, r *bufio.Reader) (string, error) {
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		code := ""
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "SIP/2.0" {
			code = f[1]
		}
		length := 0
		for {
			h, err := r.ReadString('\n')
			if err != nil {
				return "", err
			}
			if h == "\r\n" {
				break
			}
			if name, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(strings.TrimSpace(name), "Content-Length") {
				length, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		if _, err := io.CopyN(io.Discard, r, int64(length)); err != nil {
			return "", err
		}
		if code != "100" {
			return code, nil
		}
	}
}
