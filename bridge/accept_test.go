package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestOutboundStreamLifecycle walks an outbound call's stream as an
// application sees it: connected at once (no sequence number), progress
// only when opted in, start "1" at answer, audio stamped from the media
// clock, then stop with the reason and the close code that says why.
func TestOutboundStreamLifecycle(t *testing.T) {
	for _, progress := range []bool{false, true} {
		t.Run(map[bool]string{false: "twilio", true: "progress=1"}[progress], func(t *testing.T) {
			streams := make(chan *Stream, 1)
			logs := &logLines{lines: make(chan string, 16)}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s, err := Accept(w, r, AcceptConfig{Format: Format{Kind: FormatTwilio, SampleRate: 8000},
					Options: Options{Progress: progress}, Log: slog.New(logs),
					Start: Start{CallSid: "CA1", StreamSid: "MZ1", AccountSid: "AC1", Direction: "outbound"}})
				if err != nil {
					t.Error(err)
					return
				}
				streams <- s
			}))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			s := <-streams
			next := func() map[string]any {
				t.Helper()
				_, data, err := conn.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var m map[string]any
				if err := json.Unmarshal(data, &m); err != nil {
					t.Fatal(err)
				}
				return m
			}
			if m := next(); m["event"] != "connected" || m["sequenceNumber"] != nil {
				t.Fatalf("first message %v", m)
			}
			// Media from the app while the far end rings has nowhere to go.
			if err := conn.Write(ctx, websocket.MessageText, []byte(`{"event":"media","streamSid":"MZ1","media":{"payload":"AAAA"}}`)); err != nil {
				t.Fatal(err)
			}
			if line := <-logs.lines; !strings.Contains(line, "before the call was answered") {
				t.Fatalf("log %q", line)
			}
			s.Progress("ringing", 180)
			player := &countingPlayer{}
			s.Begin(player, Leg{})
			seq := 1
			if progress {
				m := next()
				p, _ := m["progress"].(map[string]any)
				if m["event"] != "progress" || m["sequenceNumber"] != "1" || p["status"] != "ringing" || p["sipCode"] != 180.0 {
					t.Fatalf("progress %v", m)
				}
				seq = 2
			}
			if m := next(); m["event"] != "start" || m["sequenceNumber"] != itoa(seq) {
				t.Fatalf("want start %d, got %v", seq, m)
			}
			for i := range 3 {
				s.Audio(make([]int16, 160), int64(7+i), time.Time{})
				m := next()
				media, _ := m["media"].(map[string]any)
				if m["event"] != "media" || media["chunk"] != itoa(i+1) || media["timestamp"] != itoa(20*i) {
					t.Fatalf("media %d: %v", i, m)
				}
			}
			// A frame the clock had no audio for shows as a 40 ms step.
			s.Audio(make([]int16, 160), 11, time.Time{})
			if m := next(); m["media"].(map[string]any)["timestamp"] != "80" {
				t.Fatalf("after a missing frame: %v", m)
			}
			if player.samples.Load() != 0 {
				t.Fatalf("audio from before the answer was played: %d samples", player.samples.Load())
			}
			go s.Close(End{Reason: "callee hung up", SIPCode: 200, CloseCode: 1000})
			m := next()
			stop, _ := m["stop"].(map[string]any)
			if m["event"] != "stop" || stop["reason"] != "callee hung up" || stop["sipCode"] != 200.0 || stop["callSid"] != "CA1" {
				t.Fatalf("stop %v", m)
			}
			_, _, err = conn.Read(ctx)
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusNormalClosure {
				t.Fatalf("close: %v", err)
			}
		})
	}
}

// TestFailedStreamCloseCode: a call that never connects its far end ends
// with stop and 4000 + the SIP final code (DESIGN: 4486 busy).
func TestFailedStreamCloseCode(t *testing.T) {
	streams := make(chan *Stream, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := Accept(w, r, AcceptConfig{Format: Format{Kind: FormatTwilio, SampleRate: 8000}, Log: slog.New(slog.DiscardHandler),
			Start: Start{CallSid: "CA1", StreamSid: "MZ1"}})
		if err == nil {
			streams <- s
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	s := <-streams
	go s.Close(End{Reason: "Busy Here", SIPCode: 486, CloseCode: 4486})
	var events []string
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 4486 || ce.Reason != "Busy Here" {
				t.Fatalf("close: %v", err)
			}
			break
		}
		var m struct {
			Event string
			Stop  struct{ SIPCode int }
		}
		json.Unmarshal(data, &m)
		events = append(events, m.Event)
		if m.Event == "stop" && m.Stop.SIPCode != 486 {
			t.Fatalf("stop %s", data)
		}
	}
	if strings.Join(events, ",") != "connected,stop" {
		t.Fatalf("events %v", events)
	}
}

// logLines is a slog handler that hands each message to the test.
type logLines struct{ lines chan string }

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.lines <- r.Message
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }
