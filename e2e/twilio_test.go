package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"trunkgate/keys"
)

// keyShape is a JSON value's object keys, nested ("media.payload"), for
// comparing a message's shape with Twilio's.
func keyShape(t *testing.T, raw []byte) []string {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	var keys []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			keys = append(keys, prefix+k)
			if sub, ok := v.(map[string]any); ok && k != "customParameters" {
				walk(prefix+k+".", sub)
			}
		}
	}
	walk("", v)
	slices.Sort(keys)
	return keys
}

// TestTwilioClientSeesOnlyTwilio: a client that opts into nothing, on an
// edge with every extension's machinery running (stats every 200 ms, a
// resume-capable build, hold by the carrier, a clear), gets exactly
// Twilio's messages: only connected, start, media, mark and stop, each
// with Twilio's fields and no others (stop's reason and sipCode, which
// every stream carries, aside).
func TestTwilioClientSeesOnlyTwilio(t *testing.T) {
	e, app, _ := setup(t, keys.Limits{}, "+15556500", nil, "--app-stats-interval", "200ms")
	run, conn, start, _ := talkingCaller(t, e, app, Call{Number: "+15556500", Steps: []Step{
		{PauseMS: 800}, {Reinvite: "sendonly", PauseMS: 400}, {Reinvite: "sendrecv", PauseMS: 800}}},
		60, func(int) []byte { return ulawTone(400, 160, 3000) })
	sid := start.StreamSid
	conn.SendAudio(t, sid, ulawTone(1000, 2000, 8000))
	conn.Send(t, map[string]any{"event": "mark", "streamSid": sid, "mark": map[string]string{"name": "a"}})
	conn.Expect(t, "mark")
	conn.SendAudio(t, sid, ulawTone(1000, 16000, 8000))
	conn.Send(t, map[string]any{"event": "mark", "streamSid": sid, "mark": map[string]string{"name": "b"}})
	conn.Send(t, map[string]any{"event": "clear", "streamSid": sid})
	conn.Expect(t, "mark")
	conn.Expect(t, "stop")
	run.Wait(t).MustPass(t)

	twilio := map[string]string{
		"connected": "event protocol version",
		"start": "event sequenceNumber start start.accountSid start.callSid start.customParameters start.mediaFormat " +
			"start.mediaFormat.channels start.mediaFormat.encoding start.mediaFormat.sampleRate start.streamSid start.tracks streamSid",
		"media": "event media media.chunk media.payload media.timestamp media.track sequenceNumber streamSid",
		"mark":  "event mark mark.name sequenceNumber streamSid",
		"stop":  "event sequenceNumber stop stop.accountSid stop.callSid stop.reason stop.sipCode streamSid",
	}
	seen := map[string]int{}
	for _, m := range conn.All() {
		want, ok := twilio[m.Event]
		if !ok {
			t.Fatalf("a %q message, which Twilio never sends: %s", m.Event, m.Raw)
		}
		if got := strings.Join(keyShape(t, m.Raw), " "); got != want {
			t.Fatalf("%s has fields %q, Twilio's are %q", m.Raw, got, want)
		}
		seen[m.Event]++
	}
	t.Logf("messages: %v", seen)
	if seen["media"] < 50 || seen["mark"] != 2 || seen["stop"] != 1 {
		t.Fatalf("messages %v: want media, both marks, one stop", seen)
	}
}
