package e2e

import (
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"trunkgate/keys"
)

// The protocol extensions (DESIGN: "Extensions beyond Twilio's protocol"),
// driven by SIPp as the carrier's signalling and a Go RTP peer as its
// media, so that every packet the edge sends is counted.

// tonePackets counts the packets at the carrier that carry the test tone.
func tonePackets(rs []Received) int {
	n := 0
	for _, r := range rs {
		if r.Pkt.PayloadType == 0 && rms(pcm(r.Pkt.Payload, false)) > 3000 {
			n++
		}
	}
	return n
}

// TestClearSaysWhatWasHeard: with the extensions, a clear mid-utterance is
// answered with the milliseconds of audio that never reached the carrier
// (checked against the packets the carrier got, within one frame) and the
// media timestamp where playout stopped; marks say played or cleared.
func TestClearSaysWhatWasHeard(t *testing.T) {
	e, app, _ := setup(t, keys.Limits{}, "+15556410", map[string]any{"protocol_extensions": true})
	// The carrier talks too, so that media timestamps run.
	run, conn, start, peer := talkingCaller(t, e, app, Call{Number: "+15556410", Steps: []Step{{PauseMS: 6000}}},
		150, func(int) []byte { return ulawTone(400, 160, 3000) })
	sid := start.StreamSid

	// 0.5 s, a mark, 2.5 s more, a mark; clear after about a second.
	const sentMs = 3000
	conn.SendAudio(t, sid, ulawTone(1000, 4000, 10000))
	conn.Send(t, map[string]any{"event": "mark", "streamSid": sid, "mark": map[string]string{"name": "half-second"}})
	conn.SendAudio(t, sid, ulawTone(1000, 20000, 10000))
	conn.Send(t, map[string]any{"event": "mark", "streamSid": sid, "mark": map[string]string{"name": "the-end"}})
	first := conn.Expect(t, "mark")
	if first.Mark.Name != "half-second" || first.Mark.Status != "played" {
		t.Fatalf("first mark %s, want half-second played", first.Raw)
	}
	waitFor(t, 5*time.Second, "a second of the tone at the carrier", func() bool { return tonePackets(peer.Received()) >= 50 })
	var lastMediaTS int64
	for _, m := range conn.All() {
		if m.Event == "media" {
			lastMediaTS, _ = strconv.ParseInt(m.Media.Timestamp, 10, 64)
		}
	}
	conn.Send(t, map[string]any{"event": "clear", "streamSid": sid})
	cleared := conn.Expect(t, "cleared")
	end := conn.Expect(t, "mark")
	if end.Mark.Name != "the-end" || end.Mark.Status != "cleared" {
		t.Fatalf("second mark %s, want the-end cleared", end.Raw)
	}
	if cleared.Cleared == nil {
		t.Fatalf("cleared %s", cleared.Raw)
	}
	// Let anything in flight arrive, then count what the caller heard.
	atClear := peer.Len()
	waitFor(t, 2*time.Second, "200 ms more of packets at the carrier", func() bool { return peer.Len() >= atClear+10 })
	heardMs := int64(tonePackets(peer.Received()) * 20)
	t.Logf("cleared %s; the carrier heard %d ms of the %d sent", cleared.Raw, heardMs, sentMs)
	if d := sentMs - heardMs - cleared.Cleared.DroppedMs; d < -20 || d > 20 {
		t.Fatalf("droppedMs %d, but the carrier heard %d of %d ms (off by %d ms)", cleared.Cleared.DroppedMs, heardMs, sentMs, d)
	}
	until, err := strconv.ParseInt(cleared.Cleared.PlayedUntil, 10, 64)
	if err != nil || until < lastMediaTS || until > lastMediaTS+200 {
		t.Fatalf("playedUntil %q, want just after the last media timestamp the app had seen (%d)", cleared.Cleared.PlayedUntil, lastMediaTS)
	}
	run.Wait(t).MustPass(t)
}

// TestAppSendsDTMF: digits from the app reach the carrier as RFC 4733
// events with the duration asked for; no opt-in is needed.
func TestAppSendsDTMF(t *testing.T) {
	e, app, _ := setup(t, keys.Limits{}, "+15556420", nil)
	peer := NewRTPPeer(t)
	run := Call{Number: "+15556420", SDPPort: peer.Port(), Codecs: "0 101", Steps: []Step{{PauseMS: 3000}}}.Start(t, e)
	conn := app.Next(t)
	sid := conn.Expect(t, "start").StreamSid
	peer.WaitEdge(t)
	conn.Send(t, map[string]any{"event": "dtmf", "streamSid": sid, "dtmf": map[string]any{"digit": "1234#", "durationMs": 160}})

	type event struct {
		code      byte
		ts        uint32
		marker    bool
		durations []uint16
		ends      int
	}
	var events []*event
	waitFor(t, 5*time.Second, "five digits at the carrier", func() bool {
		events = events[:0]
		for _, r := range peer.Received() {
			p := r.Pkt
			if p.PayloadType != 101 || len(p.Payload) != 4 {
				continue
			}
			if len(events) == 0 || events[len(events)-1].ts != p.Timestamp {
				events = append(events, &event{code: p.Payload[0], ts: p.Timestamp, marker: p.Marker})
			}
			ev := events[len(events)-1]
			ev.durations = append(ev.durations, binary.BigEndian.Uint16(p.Payload[2:]))
			if p.Payload[1]&0x80 != 0 {
				ev.ends++
			}
		}
		return len(events) == 5 && events[4].ends == 3
	})
	for i, ev := range events {
		want := []byte{1, 2, 3, 4, 11}[i]
		last := ev.durations[len(ev.durations)-1]
		if ev.code != want || !ev.marker || ev.ends != 3 || last != 160*8 || len(ev.durations) != 8+2 {
			t.Fatalf("digit %d: event %d, marker %v, %d end packets, durations %v; want event %d, marker, 3 ends, 8 packets to 1280 and 2 repeats",
				i, ev.code, ev.marker, ev.ends, ev.durations, want)
		}
	}
	run.Wait(t).MustPass(t)
}

// TestAppHangsUpAfterPlayout: hangup with afterPlayout lets the queued
// audio play to the end, then the edge hangs up, sends stop and bills
// one call ended by the app.
func TestAppHangsUpAfterPlayout(t *testing.T) {
	e, app, k := setup(t, keys.Limits{}, "+15556430", nil)
	peer := NewRTPPeer(t)
	run := Call{Number: "+15556430", SDPPort: peer.Port(), Codecs: "0", Hangup: "callee", WaitByeMS: 10000}.Start(t, e)
	conn := app.Next(t)
	sid := conn.Expect(t, "start").StreamSid
	peer.WaitEdge(t)
	conn.SendAudio(t, sid, ulawTone(1000, 8000, 10000))
	conn.Send(t, map[string]any{"event": "hangup", "streamSid": sid, "hangup": map[string]any{"afterPlayout": true}})
	stop := conn.Expect(t, "stop")
	if n := tonePackets(peer.Received()); n < 49 {
		t.Fatalf("the call ended after %d of the 50 packets of audio queued before hangup", n)
	}
	run.Wait(t).MustPass(t)
	c := e.WaitCDRs(k.Key.ID, 1)[0]
	if c.HangupSide != "app" || c.HangupCause != "app closed the stream" || stop.Stop == nil || stop.Stop.Reason != "app closed the stream" {
		t.Fatalf("CDR side %q cause %q, stop %s", c.HangupSide, c.HangupCause, stop.Raw)
	}
}

// TestHungAppIsHungUp: an app that accepts the stream and then answers no
// WebSocket ping is hung up after one ping interval: the carrier gets BYE
// and the CDR says the app's stream failed.
func TestHungAppIsHungUp(t *testing.T) {
	e := StartEdge(t, "--app-ping", "300ms")
	app := StartApp(t)
	app.Hang = make(chan struct{})
	t.Cleanup(func() { close(app.Hang) })
	k := e.NewKey("hung", keys.Limits{})
	e.NewTrunk(k.Key.ID, "+15556440", app.URL, nil)
	started := time.Now()
	run := Call{Number: "+15556440", Hangup: "callee", WaitByeMS: 5000}.Start(t, e)
	app.Next(t)
	run.Wait(t).MustPass(t)
	took := time.Since(started)
	c := e.WaitCDRs(k.Key.ID, 1)[0]
	if c.HangupSide != "app" || c.HangupCause != "app stream failed" {
		t.Fatalf("CDR side %q cause %q", c.HangupSide, c.HangupCause)
	}
	// Two intervals: the ping goes out after one, its pong is due by the second.
	if took > 3*time.Second {
		t.Fatalf("hung app noticed after %v; want about 600 ms", took)
	}
	t.Logf("hung app hung up %v after the INVITE", took.Round(time.Millisecond))
}

// TestSIPHeadersToTheApp: the INVITE headers an inbound trunk passes reach
// the app in start.customParameters under their names; others do not.
func TestSIPHeadersToTheApp(t *testing.T) {
	e, app, _ := setup(t, keys.Limits{}, "+15556450", map[string]any{
		"sip_headers": []string{"X-Customer-Id", "Diversion", "User-to-User", "X-Absent"}, "params": map[string]string{"agent": "sales"}})
	run := Call{Number: "+15556450", Steps: []Step{{PauseMS: 200}}, Headers: []string{
		"X-Customer-Id: 4711",
		"Diversion: <sip:+15550199@carrier.example>;reason=unconditional",
		"User-to-User: 56a390f3d2b7310023a2;encoding=hex",
		"X-Not-Passed: secret",
	}}.Start(t, e)
	conn := app.Next(t)
	p := conn.Expect(t, "start").Start.CustomParameters
	want := map[string]string{"X-Customer-Id": "4711", "Diversion": "<sip:+15550199@carrier.example>;reason=unconditional",
		"User-to-User": "56a390f3d2b7310023a2;encoding=hex", "agent": "sales"}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("customParameters[%q] = %q, want %q", k, p[k], v)
		}
	}
	if _, ok := p["X-Not-Passed"]; ok {
		t.Errorf("a header the trunk does not pass reached the app: %v", p)
	}
	if _, ok := p["X-Absent"]; ok {
		t.Errorf("a header the INVITE lacks is in customParameters: %v", p)
	}
	run.Wait(t).MustPass(t)
}

// TestEdgeLatencyAgreesWithTheWire: the edge's own delay each way, as its
// CDR and stats events give it, agrees within 2 ms with the same delay
// measured outside it: from the carrier's send to the app's read (carrier
// to app), and from the app's write to the kernel's receive stamp at the
// carrier of the first packet of a spurt of speech (app to carrier).
func TestEdgeLatencyAgreesWithTheWire(t *testing.T) {
	e := StartTimingEdge(t, "--app-stats-interval", "1s")
	app := StartApp(t)
	k := e.NewKey("latency", keys.Limits{})
	e.NewTrunk(k.Key.ID, "+15556460", app.URL, map[string]any{"protocol_extensions": true})
	peer := NewRTPPeer(t)
	run := Call{Number: "+15556460", SDPPort: peer.Port(), Codecs: "0", Steps: []Step{{PauseMS: 9000}}}.Start(t, e)
	conn := app.Next(t)
	sid := conn.Expect(t, "start").StreamSid
	edge := peer.WaitEdge(t)

	// Carrier to app: 3 s of tone in 20 ms packets; frame k at the app
	// starts with packet k.
	tone := ulawTone(1000, 160, 10000)
	var sent []time.Time
	start := time.Now()
	for i := range 150 {
		time.Sleep(time.Until(start.Add(time.Duration(i) * 20 * time.Millisecond)))
		sent = append(sent, time.Now())
		peer.Send(t, edge, Packet{Seq: uint16(i), TS: uint32(i * 160), PT: 0, Payload: tone, Marker: i == 0})
	}
	var toApp []time.Duration
	waitFor(t, 3*time.Second, "the tone's frames at the app", func() bool {
		toApp = toApp[:0]
		k := 0
		for _, m := range conn.All() {
			if m.Event == "media" && rms(pcm(m.Media.Audio(), false)) > 3000 && k < len(sent) {
				toApp = append(toApp, m.At.Sub(sent[k]))
				k++
			}
		}
		return k >= 140
	})

	// App to carrier: spurts of 200 ms, each into an empty queue.
	var toCarrier []time.Duration
	for range 7 {
		before := peer.Len()
		wrote := time.Now()
		conn.SendAudio(t, sid, ulawTone(1000, 1600, 10000))
		waitFor(t, 2*time.Second, "the spurt at the carrier", func() bool { return tonePackets(peer.Received()[before:]) >= 10 })
		for _, r := range peer.Received()[before:] {
			if r.Pkt.PayloadType == 0 && rms(pcm(r.Pkt.Payload, false)) > 3000 {
				toCarrier = append(toCarrier, r.At.Sub(wrote))
				break
			}
		}
		time.Sleep(150 * time.Millisecond) // a pause in the conversation: the queue is empty again
	}
	stats := conn.Expect(t, "stats")
	run.Wait(t).MustPass(t)
	c := e.WaitCDRs(k.Key.ID, 1)[0]
	if c.Media.EdgeToApp == nil || c.Media.EdgeToCarrier == nil {
		t.Fatalf("CDR media %+v", c.Media)
	}
	median := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[len(s)/2].Microseconds()) / 1000
	}
	outApp, outCarrier := median(toApp[5:]), median(toCarrier)
	t.Logf("carrier to app: edge p50 %.1f ms p95 %.1f max %.1f, outside median %.2f ms (%d frames); "+
		"app to carrier: edge p50 %.1f ms p95 %.1f max %.1f, outside median %.2f ms (%d spurts); stats %s",
		c.Media.EdgeToApp.P50MS, c.Media.EdgeToApp.P95MS, c.Media.EdgeToApp.MaxMS, outApp, len(toApp),
		c.Media.EdgeToCarrier.P50MS, c.Media.EdgeToCarrier.P95MS, c.Media.EdgeToCarrier.MaxMS, outCarrier, len(toCarrier), stats.Raw)
	if d := c.Media.EdgeToApp.P50MS - outApp; d < -2 || d > 2 {
		t.Errorf("carrier to app: the edge says p50 %.1f ms, the wire %.2f ms", c.Media.EdgeToApp.P50MS, outApp)
	}
	if d := c.Media.EdgeToCarrier.P50MS - outCarrier; d < -2 || d > 2 {
		t.Errorf("app to carrier: the edge says p50 %.1f ms, the wire %.2f ms", c.Media.EdgeToCarrier.P50MS, outCarrier)
	}
}

// TestFirstAudioDeadline: with --app-first-audio, a call whose app sends
// no audio in time is hung up (BYE with the reason, CDR saying why); an
// app that talks in time keeps its call.
func TestFirstAudioDeadline(t *testing.T) {
	e := StartEdge(t, "--app-first-audio", "400ms")
	app := StartApp(t)
	k := e.NewKey("first audio", keys.Limits{})
	e.NewTrunk(k.Key.ID, "+15556470", app.URL, nil)

	res := RunSIPp(t, e, Call{Number: "+15556470", Hangup: "callee", WaitByeMS: 5000}).MustPass(t)
	if got := res.Logged(t, `BYE REASON=(.*)`)[1]; got != `Q.850;cause=41;text="app sent no audio"` {
		t.Fatalf("BYE Reason %q", got)
	}
	if c := e.WaitCDRs(k.Key.ID, 1)[0]; c.HangupSide != "app" || c.HangupCause != "app sent no audio" {
		t.Fatalf("CDR side %q cause %q", c.HangupSide, c.HangupCause)
	}
	app.Next(t) // the first call's stream

	run := Call{Number: "+15556470", Steps: []Step{{PauseMS: 1200}}}.Start(t, e)
	conn := app.Next(t)
	sid := conn.Expect(t, "start").StreamSid
	conn.SendAudio(t, sid, ulawTone(1000, 800, 8000))
	run.Wait(t).MustPass(t)
	if c := e.WaitCDRs(k.Key.ID, 2)[0]; c.HangupSide != "carrier" {
		t.Fatalf("a call whose app talked in time ended by %q: %q", c.HangupSide, c.HangupCause)
	}
}

// TestAppTransfersTheCall: the app's transfer becomes a REFER to the
// carrier; the app hears accepted, then the outcome from the carrier's
// NOTIFY; a transfer that succeeds ends the call (the edge's BYE, the CDR
// saying so), one that fails leaves it up.
func TestAppTransfersTheCall(t *testing.T) {
	e, app, k := setup(t, keys.Limits{}, "+15556480", nil)

	// Success: the carrier puts the caller through to the target, a
	// second SIPp that answers and later gets the caller's BYE.
	target := StartGateway(t, Gateway{Name: "transfer-target"})
	run := Call{Number: "+15556480", Transfer: &TransferTarget{Port: target.Port, Code: 200, Phrase: "OK"}, Hangup: "callee", WaitByeMS: 5000}.Start(t, e)
	conn := app.Next(t)
	sid := conn.Expect(t, "start").StreamSid
	conn.Send(t, map[string]any{"event": "transfer", "streamSid": sid, "transfer": map[string]string{"to": "+1 555 0199"}})
	accepted := conn.Expect(t, "transfer")
	succeeded := conn.Expect(t, "transfer")
	res := run.Wait(t).MustPass(t)
	target.Wait(t)
	if got := res.Logged(t, `REFER TO=(.*)`)[1]; !strings.HasPrefix(got, "<sip:+15550199@") {
		t.Fatalf("Refer-To %q", got)
	}
	if !strings.Contains(target.Log(), "INVITE RURI=sip:+15550199@127.0.0.1") {
		t.Fatalf("the transfer target saw %s", target.Log())
	}
	if accepted.Transfer == nil || accepted.Transfer.Status != "accepted" || accepted.Transfer.SIPCode != 202 ||
		succeeded.Transfer == nil || succeeded.Transfer.Status != "succeeded" || succeeded.Transfer.SIPCode != 200 {
		t.Fatalf("transfer events %s, %s", accepted.Raw, succeeded.Raw)
	}
	if c := e.WaitCDRs(k.Key.ID, 1)[0]; c.HangupCause != "call transferred" || c.HangupSide != "app" {
		t.Fatalf("CDR side %q cause %q", c.HangupSide, c.HangupCause)
	}

	// Failure: the target is busy; the edge does not hang up, the caller
	// does (SIPp's BYE after its NOTIFY).
	busy := StartGateway(t, Gateway{Name: "busy-target", Code: 486, Phrase: "Busy Here"})
	run = Call{Number: "+15556480", Transfer: &TransferTarget{Port: busy.Port, Code: 486, Phrase: "Busy Here"}}.Start(t, e)
	conn = app.Next(t)
	sid = conn.Expect(t, "start").StreamSid
	conn.Send(t, map[string]any{"event": "transfer", "streamSid": sid, "transfer": map[string]string{"to": "sip:desk@pbx.example"}})
	conn.Expect(t, "transfer") // accepted
	failed := conn.Expect(t, "transfer")
	run.Wait(t).MustPass(t)
	busy.Wait(t)
	if !strings.Contains(busy.Log(), "INVITE RURI=sip:desk@127.0.0.1") {
		t.Fatalf("the busy target saw %s", busy.Log())
	}
	if failed.Transfer == nil || failed.Transfer.Status != "failed" || failed.Transfer.SIPCode != 486 {
		t.Fatalf("failed transfer: %s", failed.Raw)
	}
	if c := e.WaitCDRs(k.Key.ID, 2)[0]; c.HangupSide != "carrier" {
		t.Fatalf("after a failed transfer the call ended by %q: %q", c.HangupSide, c.HangupCause)
	}
}
