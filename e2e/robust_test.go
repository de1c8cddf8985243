package e2e

import (
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
		"bad-content-length.sip":       {"", "400"},
		"garbage-sdp.sip":              {"488"},
		"bad-request-line.sip":         {"", "400"},
		"unknown-method.sip":           {"405"},
		"bye-unknown-dialog.sip":       {"481"},
		"cseq-huge.sip":                {"", "400"},
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
