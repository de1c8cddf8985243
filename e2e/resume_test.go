package e2e

import (
	"net/url"
	"strconv"
	"testing"
	"time"

	"trunkgate/keys"
)

// A dropped application socket with a grace window (DESIGN: a resumed
// stream): the call survives, the app gets its stream back under the same
// streamSid with the caller's audio held meanwhile, and one CDR bills it.

// clickFrame is the caller's 20 ms packet i: μ-law silence with one click
// at sample i mod 160, so that the app can tell which packet a frame was.
func clickFrame(i int) []byte {
	b := make([]byte, 160)
	for j := range b {
		b[j] = 0xFF
	}
	b[i%160] = 0x80
	return b
}

// clickAt is where a frame's click is, -1 in a frame without one.
func clickAt(m Msg) int {
	for j, v := range pcm(m.Media.Audio(), false) {
		if v > 4000 {
			return j
		}
	}
	return -1
}

// TestResumeAfterDroppedSocket: the app's socket dies mid-call without a
// close handshake while the app restarts; the edge holds the call, redials
// and the resumed stream gets start with resumed:true, the mark that was
// played meanwhile, then the caller's audio held over the gap and live
// audio — chunk after chunk, 20 ms after 20 ms, click after click: nothing
// lost, nothing twice. Meanwhile the caller hears the hold tone
// (--resume-hold-tone). The caller's BYE ends it with one CDR.
func TestResumeAfterDroppedSocket(t *testing.T) {
	e, app, k := setup(t, keys.Limits{}, "+15556490", map[string]any{"protocol_extensions": true, "resume_grace_seconds": 5},
		"--resume-hold-tone")
	before := e.Goroutines()
	run, old, start, peer := talkingCaller(t, e, app, Call{Number: "+15556490", Steps: []Step{{PauseMS: 6500}}},
		250, clickFrame) // 5 s of the caller
	app.WaitDialling(t) // the first handshake
	sid := start.StreamSid

	waitFor(t, 5*time.Second, "a second of the caller at the app", func() bool { _, m := old.Media(); return len(m) >= 50 })
	old.SendAudio(t, sid, ulawTone(1000, 4000, 8000)) // half a second the caller hears during the gap
	old.Send(t, map[string]any{"event": "mark", "streamSid": sid, "mark": map[string]string{"name": "before-the-drop"}})

	// Twice: the app restarting (three redials refused), then the app
	// back at once (the edge's own resume gap).
	sockets := []*AppConn{old}
	var all []Msg
	for drop, refused := range []int{3, 0} {
		conn := sockets[len(sockets)-1]
		if drop > 0 {
			waitFor(t, 5*time.Second, "another second of the caller", func() bool { _, m := conn.Media(); return len(m) >= 50 })
		}
		app.Away.Store(refused > 0)
		conn.Kill()
		killed := time.Now()
		for range refused { // at once, 100 ms and 300 ms after the drop
			app.WaitDialling(t)
		}
		app.Away.Store(false)
		resumed := app.Next(t)
		app.WaitDialling(t)
		if resumed.Header.Get("X-Trunkgate-Resume") != sid {
			t.Errorf("redial's X-Trunkgate-Resume %q, want %s", resumed.Header.Get("X-Trunkgate-Resume"), sid)
		}
		resumed.Expect(t, "connected")
		again := resumed.Expect(t, "start")
		if again.Start == nil || !again.Start.Resumed || again.StreamSid != sid || again.Start.CallSid != start.Start.CallSid {
			t.Fatalf("resumed start %s; want resumed:true for stream %s", again.Raw, sid)
		}
		if drop == 0 {
			if m := resumed.Expect(t, "mark"); m.Mark.Name != "before-the-drop" || m.Mark.Status != "played" {
				t.Fatalf("mark %s, want before-the-drop played", m.Raw)
			}
		}
		_, before := conn.Media()
		all = append(all, before...)
		// The held frames are the gap's audio: media timestamps from the
		// first on the new socket to as long after it as the app was away.
		gap := again.At.Sub(killed)
		var first int
		var m []Msg
		waitFor(t, 5*time.Second, "the held audio and live audio after it", func() bool {
			if _, m = resumed.Media(); len(m) == 0 {
				return false
			}
			first, _ = strconv.Atoi(m[0].Media.Timestamp)
			last, _ := strconv.Atoi(m[len(m)-1].Media.Timestamp)
			return last >= first+int(gap.Milliseconds())
		})
		held := 0
		for _, f := range m {
			if ts, _ := strconv.Atoi(f.Media.Timestamp); ts < first+int(gap.Milliseconds()) {
				held++
			}
		}
		t.Logf("drop %d after %d frames: %d redials refused; resumed start %v after the drop; %d held frames replayed",
			drop+1, len(before), refused, gap.Round(time.Millisecond), held)
		if refused > 0 && held < 10 {
			t.Errorf("only %d frames replayed from the hold", held)
		}
		sockets = append(sockets, resumed)
	}
	last := sockets[len(sockets)-1]
	stop := last.Expect(t, "stop")
	res := run.Wait(t).MustPass(t)
	if stop.Stop.Reason != "caller hung up" {
		t.Fatalf("stop %s", stop.Raw)
	}
	_, tailFrames := last.Media()
	all = append(all, tailFrames...)
	for i, m := range all {
		chunk, _ := strconv.Atoi(m.Media.Chunk)
		ts, _ := strconv.Atoi(m.Media.Timestamp)
		if chunk != i+1 || ts != 20*i {
			t.Fatalf("frame %d has chunk %d, timestamp %d: want %d, %d\nedge:\n%s", i, chunk, ts, i+1, 20*i, tail(e.Logs(), 30))
		}
	}
	// The first click the app saw tells where the caller's packets began.
	first := -1
	for i, m := range all {
		if c := clickAt(m); c >= 0 {
			if first < 0 {
				first = i - c
			}
			if want := (i - first) % 160; c != want && i-first < 250 {
				t.Fatalf("frame %d has the click of packet %d, want %d: audio lost or repeated", i, c, want)
			}
		}
	}
	// While the app was away the caller heard its queued tone, then the
	// hold tone's beep.
	beeps := 0
	for _, r := range peer.Received() {
		if x := pcm(r.Pkt.Payload, false); rms(x) > 1000 && toneShare(x, 425, 8000) > 0.8 {
			beeps++
		}
	}
	if beeps < 5 || beeps > 15 {
		t.Errorf("the caller heard %d packets of the hold tone, want one 200 ms beep (the first gap; the second was too short for one)", beeps)
	}
	cdrs := e.WaitCDRs(k.Key.ID, 1)
	if len(cdrs) != 1 || cdrs[0].HangupSide != "carrier" || cdrs[0].BilledSeconds != ceilSeconds(cdrs[0].DurationMS) || cdrs[0].DurationMS < 6000 {
		t.Fatalf("CDRs %+v, want one call of 6.5 s ended by the caller\n%s", cdrs, tail(res.Messages, 40))
	}
	e.WaitGoroutines(before)
}

// TestDroppedSocketWithoutGraceHangsUp: without a grace window a socket
// that dies ends the call at once, as a Twilio app expects.
func TestDroppedSocketWithoutGraceHangsUp(t *testing.T) {
	e, app, k := setup(t, keys.Limits{}, "+15556491", nil)
	run := Call{Number: "+15556491", Hangup: "callee", WaitByeMS: 10000}.Start(t, e)
	conn := app.Next(t)
	app.WaitDialling(t) // the first handshake
	conn.Expect(t, "start")
	conn.Kill()
	run.Wait(t).MustPass(t)
	if c := e.WaitCDRs(k.Key.ID, 1)[0]; c.HangupSide != "app" || c.HangupCause != "app closed the stream" {
		t.Fatalf("CDR side %q cause %q", c.HangupSide, c.HangupCause)
	}
	select {
	case <-app.dialling:
		t.Fatal("the edge redialled without a grace window")
	default:
	}
}

// TestOutboundStreamResumes: an app that placed its call on the stream
// endpoint comes back with resume=streamSid and its key; another key, or a
// stream that is not there, gets 404 no_stream.
func TestOutboundStreamResumes(t *testing.T) {
	e := StartEdge(t)
	gw := StartGateway(t, Gateway{Echo: true})
	k := e.NewKey("resume", keys.Limits{}, "calls:outbound")
	other := e.NewKey("other", keys.Limits{}, "calls:outbound")
	e.NewOutboundTrunk(k.Key.ID, map[string]any{"caller_id": "+15550100"}, gw.URI)

	if _, refused := e.DialStream(t, k.APIKey, url.Values{"to": {"+15551230000"}, "resume_grace": {"61"}}); refused == nil || refused.Status != 400 {
		t.Fatalf("resume_grace=61: %+v", refused)
	}
	app, refused := e.DialStream(t, k.APIKey, url.Values{"to": {"+15551230000"}, "resume_grace": {"5"}})
	if refused != nil {
		t.Fatalf("refused: %+v", refused)
	}
	start := app.Expect(t, "start")
	sid := start.StreamSid
	app.Kill()
	for _, tt := range []struct {
		key, sid string
	}{{other.APIKey, sid}, {k.APIKey, "MZ00000000000000000000000000000000"}} {
		if _, refused := e.DialStream(t, tt.key, url.Values{"resume": {tt.sid}}); refused == nil || refused.Status != 404 || refused.Code != "no_stream" {
			t.Fatalf("resume of %s with another key or sid: %+v", tt.sid, refused)
		}
	}
	back, refused := e.DialStream(t, k.APIKey, url.Values{"resume": {sid}})
	if refused != nil {
		t.Fatalf("resume refused: %+v", refused)
	}
	back.Expect(t, "connected")
	again := back.Expect(t, "start")
	if !again.Start.Resumed || again.StreamSid != sid || again.Start.CallSid != start.Start.CallSid {
		t.Fatalf("resumed start %s", again.Raw)
	}
	back.SendAudio(t, sid, ulawTone(1000, 8000, 8000))
	waitFor(t, 10*time.Second, "the app's tone back through the gateway's echo", func() bool {
		n, _ := toneFrames(back, 1000)
		return n >= 20
	})
	back.Close()
	gw.Wait(t)
	if cdrs := e.WaitCDRs(k.Key.ID, 1); len(cdrs) != 1 || cdrs[0].HangupSide != "app" {
		t.Fatalf("CDRs %+v", cdrs)
	}
}
