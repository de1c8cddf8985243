package bridge

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendMediaIsTheTwilioShape(t *testing.T) {
	ulaw := []byte{0xff, 0x7f, 0x00, 0x10}
	b := AppendMedia(nil, 7, 3, 40, "MZ00112233445566778899aabbccddeeff", ulaw)
	var m struct {
		Event          string `json:"event"`
		SequenceNumber string `json:"sequenceNumber"`
		StreamSid      string `json:"streamSid"`
		Media          struct {
			Track     string `json:"track"`
			Chunk     string `json:"chunk"`
			Timestamp string `json:"timestamp"`
			Payload   string `json:"payload"`
		} `json:"media"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	got, _ := base64.StdEncoding.DecodeString(m.Media.Payload)
	if m.Event != "media" || m.SequenceNumber != "7" || m.Media.Chunk != "3" || m.Media.Timestamp != "40" ||
		m.Media.Track != "inbound" || m.StreamSid != "MZ00112233445566778899aabbccddeeff" || string(got) != string(ulaw) {
		t.Fatalf("decoded %+v", m)
	}
}

func TestControlMessages(t *testing.T) {
	s := &Start{CallSid: "CA1", AccountSid: "AC1", StreamSid: "MZ1", From: "+1555", To: "+1666", Direction: "inbound",
		KeyID: "k", TrunkID: "tr", Params: map[string]string{"lang": "en", "to": "spoofed"}}
	var start struct {
		Event, SequenceNumber, StreamSid string
		Start                            struct {
			AccountSid, StreamSid, CallSid string
			Tracks                         []string
			CustomParameters               map[string]string
			MediaFormat                    struct {
				Encoding   string
				SampleRate int
				Channels   int
			}
		}
	}
	if err := json.Unmarshal(renderStart(2, s, Format{Kind: FormatTwilio}, false), &start); err != nil {
		t.Fatal(err)
	}
	p := start.Start.CustomParameters
	if start.Event != "start" || start.SequenceNumber != "2" || start.Start.CallSid != "CA1" ||
		start.Start.MediaFormat.Encoding != "audio/x-mulaw" || start.Start.MediaFormat.SampleRate != 8000 ||
		p["lang"] != "en" || p["to"] != "+1666" || p["keyId"] != "k" || p["trunkId"] != "tr" || p["direction"] != "inbound" {
		t.Fatalf("start = %+v", start)
	}
	var dtmf struct {
		Event, SequenceNumber, StreamSid string
		DTMF                             struct{ Track, Digit string }
	}
	if err := json.Unmarshal(renderDTMF(5, s, '#'), &dtmf); err != nil || dtmf.DTMF.Digit != "#" ||
		dtmf.DTMF.Track != "inbound_track" || dtmf.SequenceNumber != "5" {
		t.Fatalf("dtmf = %+v, %v", dtmf, err)
	}
	var stop struct {
		Event string
		Stop  struct {
			AccountSid, CallSid, Reason string
			SIPCode                     int `json:"sipCode"`
		}
	}
	if err := json.Unmarshal(renderStop(9, s, End{Reason: "busy", SIPCode: 486}), &stop); err != nil || stop.Event != "stop" ||
		stop.Stop.CallSid != "CA1" || stop.Stop.Reason != "busy" || stop.Stop.SIPCode != 486 {
		t.Fatalf("stop = %+v, %v", stop, err)
	}
	// connected is Twilio's: no sequence number, nothing else.
	if got := string(renderConnected()); got != `{"event":"connected","protocol":"Call","version":"1.0.0"}` {
		t.Fatalf("connected = %s", got)
	}
	var progress struct {
		Event, SequenceNumber string
		Progress              struct {
			Status  string
			SIPCode int `json:"sipCode"`
		}
	}
	if err := json.Unmarshal(renderProgress(2, s, "ringing", 180), &progress); err != nil || progress.Event != "progress" ||
		progress.SequenceNumber != "2" || progress.Progress.Status != "ringing" || progress.Progress.SIPCode != 180 {
		t.Fatalf("progress = %+v, %v", progress, err)
	}
}

func TestParseAppMessage(t *testing.T) {
	tests := []struct {
		in                       string
		event, sid, payload, mrk string
		err                      bool
	}{
		{in: `{"event":"media","streamSid":"MZ1","media":{"payload":"AAEC"}}`, event: "media", sid: "MZ1", payload: "AAEC"},
		{in: ` { "media" : { "track":"outbound", "payload" : "/+8=" , "chunk": 3 }, "event" : "media" } `, event: "media", payload: "/+8="},
		{in: `{"event":"mark","streamSid":"MZ1","mark":{"name":"greeting done"}}`, event: "mark", sid: "MZ1", mrk: "greeting done"},
		{in: `{"event":"clear","streamSid":"MZ1"}`, event: "clear", sid: "MZ1"},
		{in: `{"event":"media","media":{"payload":"a\/b+"}}`, event: "media", payload: "a/b+"}, // escaped: slow path
		{in: `{"event":"mark","mark":{"name":"caf\u00e9"}}`, event: "mark", mrk: "café"},
		{in: `{"event":"x","extra":[1,2,{"a":[true,false,null,-1.5e3]}],"n":null}`, event: "x"},
		{in: `{"event":"media","media":null}`, event: "media"},
		{in: `{"event":"media","streamSid":null}`, event: "media"},
		{in: ``, err: true},
		{in: `{`, err: true},
		{in: `{"event":"media"`, err: true},
		{in: `{"event":"media"} trailing`, err: true},
		{in: `{"streamSid":"MZ1"}`, err: true},
		{in: `{"event":"a","x":[1,]}`, err: true},
		{in: `{"event":"a","x":01x}`, err: true},
		{in: `{"event":"a` + "\x01" + `"}`, err: true},
		{in: `["event","media"]`, err: true},
		{in: strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat(`}`, 100), err: true},
	}
	for _, tt := range tests {
		var m AppMessage
		err := ParseAppMessage([]byte(tt.in), &m)
		if (err != nil) != tt.err {
			t.Errorf("%q: err = %v, want error %v", tt.in, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if string(m.Event) != tt.event || string(m.StreamSid) != tt.sid || string(m.Payload) != tt.payload || string(m.MarkName) != tt.mrk {
			t.Errorf("%q: got event=%q sid=%q payload=%q mark=%q", tt.in, m.Event, m.StreamSid, m.Payload, m.MarkName)
		}
	}
}

func TestSignature(t *testing.T) {
	sig := Sign("tgsig_secret", "wss://app.example/stream?x=1", "1795465169")
	// Computed independently: printf 'wss://app.example/stream?x=1\n1795465169' | openssl dgst -sha256 -hmac tgsig_secret
	const want = "0f8b1504a5f953fdca54b3928e400c625c79237e87a056f7920edc4bc83bda50"
	if sig != want {
		t.Fatalf("signature %s, want %s", sig, want)
	}
	if !Verify("tgsig_secret", "wss://app.example/stream?x=1", "1795465169", sig) {
		t.Fatal("own signature does not verify")
	}
	for name, args := range map[string][3]string{
		"other secret": {"tgsig_other", "wss://app.example/stream?x=1", "1795465169"},
		"other url":    {"tgsig_secret", "wss://app.example/stream?x=2", "1795465169"},
		"other time":   {"tgsig_secret", "wss://app.example/stream?x=1", "1795465170"},
	} {
		if Verify(args[0], args[1], args[2], sig) {
			t.Errorf("%s: verified", name)
		}
	}
}

func TestSids(t *testing.T) {
	for _, p := range []string{"CA", "MZ"} {
		s := NewSid(p)
		if len(s) != 34 || !strings.HasPrefix(s, p) || strings.Trim(s[2:], "0123456789abcdef") != "" {
			t.Fatalf("NewSid(%q) = %q", p, s)
		}
	}
	if a, b := AccountSid("key1"), AccountSid("key1"); a != b || len(a) != 34 || a[:2] != "AC" || a == AccountSid("key2") {
		t.Fatalf("AccountSid not stable and distinct: %q %q", a, b)
	}
}

func FuzzParseAppMessage(f *testing.F) {
	for _, seed := range []string{
		`{"event":"media","streamSid":"MZ1","media":{"payload":"AAEC"}}`,
		`{"event":"mark","mark":{"name":"x"}}`,
		`{"event":"clear"}`,
		`{"event":"media","media":{"payload":"a\/b"}}`,
		`{"event":"x","y":[1,{"z":null}],"w":-0.5e-3}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m AppMessage
		err := ParseAppMessage(data, &m)
		if err != nil {
			return
		}
		// Whatever the fast parser accepts, encoding/json must accept too,
		// with the same event.
		var v struct {
			Event *string `json:"event"`
		}
		if jerr := json.Unmarshal(data, &v); jerr != nil {
			t.Fatalf("fast parser accepted invalid JSON %q: %v", data, jerr)
		}
		// (encoding/json replaces invalid UTF-8; the fast path keeps bytes.)
		if v.Event == nil || (utf8.Valid(m.Event) && *v.Event != string(m.Event)) {
			t.Fatalf("event %q, encoding/json says %v", m.Event, v.Event)
		}
	})
}

func BenchmarkAppendMedia(b *testing.B) {
	buf := make([]byte, 0, 512)
	ulaw := make([]byte, 160)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMedia(buf[:0], 12345, 12000, 240000, "MZ00112233445566778899aabbccddeeff", ulaw)
	}
}

func BenchmarkParseMedia(b *testing.B) {
	msg := []byte(`{"event":"media","streamSid":"MZ00112233445566778899aabbccddeeff","media":{"payload":"` +
		base64.StdEncoding.EncodeToString(make([]byte, 160)) + `"}}`)
	var m AppMessage
	out := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseAppMessage(msg, &m); err != nil {
			b.Fatal(err)
		}
		out, _ = base64.StdEncoding.AppendDecode(out[:0], m.Payload)
	}
}
