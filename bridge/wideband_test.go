package bridge

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWidebandCall: on a G.722 call (a 16 kHz player) the caller's 320
// samples per frame reach a 16 kHz L16 app untouched and an 8 kHz one
// (L16 or μ-law) halved; the app's audio reaches the call at 16 kHz
// whatever the app sends.
func TestWidebandCall(t *testing.T) {
	for _, tt := range []struct {
		name      string
		format    Format
		frameSize int    // bytes the app gets per 20 ms
		reply     []byte // what the app sends: 20 ms
		text      bool
	}{
		{"l16 16 kHz", Format{Kind: FormatL16, SampleRate: 16000}, 640, make([]byte, 640), false},
		{"l16 8 kHz", Format{Kind: FormatL16, SampleRate: 8000}, 320, make([]byte, 320), false},
		{"twilio", Format{Kind: FormatTwilio, SampleRate: 8000}, 160, make([]byte, 160), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newResumeApp(t)
			s, err := Dial(context.Background(), DialConfig{URL: a.url, Format: tt.format, Log: slog.New(slog.DiscardHandler),
				Start: Start{CallSid: "CA1", StreamSid: "MZ1", AccountSid: "AC1"}})
			if err != nil {
				t.Fatal(err)
			}
			<-a.resumes
			c := a.next(t)
			player := &countingPlayer{rate: 16000}
			s.Begin(player, Leg{})
			defer s.Close(End{})
			readMsg(t, c) // connected
			readMsg(t, c) // start
			pcm := make([]int16, 320)
			for i := range pcm {
				pcm[i] = int16(i * 50)
			}
			s.Audio(pcm, 0, time.Time{})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			typ, data, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			audio := data
			if typ == websocket.MessageText {
				var m wireMsg
				if err := json.Unmarshal(data, &m); err != nil || m.Media == nil {
					t.Fatalf("not media: %s", data)
				}
				audio, _ = base64.StdEncoding.DecodeString(m.Media.Payload)
			}
			if len(audio) != tt.frameSize {
				t.Fatalf("the app got %d bytes for 20 ms, want %d", len(audio), tt.frameSize)
			}
			if tt.format.SampleRate == 16000 {
				for i := range pcm {
					if got := int16(binary.LittleEndian.Uint16(audio[2*i:])); got != pcm[i] {
						t.Fatalf("sample %d is %d, want %d: 16 kHz went through a resampler", i, got, pcm[i])
					}
				}
			}

			typ = websocket.MessageBinary
			reply := tt.reply
			if tt.text {
				typ, reply = websocket.MessageText, []byte(`{"event":"media","streamSid":"MZ1","media":{"payload":"`+base64.StdEncoding.EncodeToString(tt.reply)+`"}}`)
			}
			if err := c.Write(ctx, typ, reply); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for player.samples.Load() < 320 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if got := player.samples.Load(); got != 320 {
				t.Fatalf("the call got %d samples of the app's 20 ms, want 320 (16 kHz)", got)
			}
			go drain(c)
		})
	}
}
