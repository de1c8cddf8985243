package bridge

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// appPeer is an application's side of one stream, and the edge's Stream.
type appPeer struct {
	t    *testing.T
	conn *websocket.Conn
	s    *Stream
	ctx  context.Context
}

func newAppPeer(t *testing.T, opts Options) *appPeer {
	t.Helper()
	streams := make(chan *Stream, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := Accept(w, r, AcceptConfig{Format: Format{Kind: FormatTwilio, SampleRate: 8000}, Options: opts,
			Log: slog.New(slog.DiscardHandler), Start: Start{CallSid: "CA1", StreamSid: "MZ1", AccountSid: "AC1"}})
		if err != nil {
			t.Error(err)
			return
		}
		streams <- s
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return &appPeer{t: t, conn: conn, s: <-streams, ctx: ctx}
}

func (p *appPeer) next() (map[string]any, string) {
	p.t.Helper()
	_, data, err := p.conn.Read(p.ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		p.t.Fatal(err)
	}
	return m, string(data)
}

func (p *appPeer) send(msg string) {
	p.t.Helper()
	if err := p.conn.Write(p.ctx, websocket.MessageText, []byte(msg)); err != nil {
		p.t.Fatal(err)
	}
}

// TestClearAndMarkStatus: with the extensions a clear is answered with
// what it dropped and where playout stopped on the media timeline, and
// marks carry their status; without them the app sees Twilio's messages.
func TestClearAndMarkStatus(t *testing.T) {
	for _, ext := range []bool{false, true} {
		t.Run(map[bool]string{false: "twilio", true: "extensions"}[ext], func(t *testing.T) {
			p := newAppPeer(t, Options{Extensions: ext})
			p.next() // connected
			player := &countingPlayer{dropped: 1460 * time.Millisecond, at: 5400 * time.Millisecond}
			p.s.Begin(player, Leg{})
			p.next()                                      // start
			p.s.Audio(make([]int16, 160), 4, time.Time{}) // media timestamps start at 80 ms of the media clock
			p.next()
			p.send(`{"event":"clear","streamSid":"MZ1"}`)
			waitUntil(t, "the clear reached the player", func() bool {
				player.mu.Lock()
				defer player.mu.Unlock()
				return player.clears == 1
			})
			p.s.MarkDone("reply-1", true) // as the clock does after a clear
			p.s.MarkDone("reply-0", false)
			var got []string
			for range 2 + map[bool]int{false: 0, true: 1}[ext] {
				_, raw := p.next()
				got = append(got, raw)
			}
			want := []string{
				`{"event":"mark","mark":{"name":"reply-1"},"sequenceNumber":"3","streamSid":"MZ1"}`,
				`{"event":"mark","mark":{"name":"reply-0"},"sequenceNumber":"4","streamSid":"MZ1"}`,
			}
			if ext {
				want = []string{
					`{"cleared":{"droppedMs":1460,"playedUntil":"5320"},"event":"cleared","sequenceNumber":"3","streamSid":"MZ1"}`,
					`{"event":"mark","mark":{"name":"reply-1","status":"cleared"},"sequenceNumber":"4","streamSid":"MZ1"}`,
					`{"event":"mark","mark":{"name":"reply-0","status":"played"},"sequenceNumber":"5","streamSid":"MZ1"}`,
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			p.s.Hold(true)
			p.s.MarkDone("after-hold", false)
			if m, raw := p.next(); ext && m["event"] != "hold" || !ext && m["event"] != "mark" {
				t.Fatalf("after Hold: %s", raw)
			}
		})
	}
}

// TestAppControl: dtmf reaches the player with its duration; hangup ends
// the stream as the app's doing, at once or once the queued audio played.
func TestAppControl(t *testing.T) {
	p := newAppPeer(t, Options{})
	p.next()
	player := &countingPlayer{}
	p.s.Begin(player, Leg{})
	p.next()
	p.send(`{"event":"dtmf","streamSid":"MZ1","dtmf":{"digit":"1234#","durationMs":160}}`)
	p.send(`{"event":"dtmf","streamSid":"MZ1","dtmf":{"digit":"9"}}`)
	p.send(`{"event":"dtmf","streamSid":"MZ1","dtmf":{"digit":""}}`)
	p.send(`{"event":"hangup","streamSid":"MZ1","hangup":{"afterPlayout":true}}`)
	waitUntil(t, "the hangup's mark", func() bool {
		player.mu.Lock()
		defer player.mu.Unlock()
		return len(player.marks) == 1
	})
	if !slices.Equal(player.dtmf, []string{"1234#/160ms", "9/0s"}) || player.marks[0] != hangupMark {
		t.Fatalf("dtmf %q, marks %q", player.dtmf, player.marks)
	}
	select {
	case <-p.s.Done():
		t.Fatal("hung up before the queued audio played")
	default:
	}
	p.s.MarkDone(hangupMark, false) // the clock: the audio before it has played
	select {
	case <-p.s.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("no hangup after playout")
	}
	if !p.s.ClosedByApp() {
		t.Fatal("hangup not counted as the app's")
	}
	if c := p.s.Counters(); c.DTMFOut != 6 {
		t.Fatalf("DTMFOut %d", c.DTMFOut)
	}
}

// TestPingsAHungApp: an app that reads nothing answers no ping, and the
// stream ends after the ping interval; one that reads is left alone.
func TestPingsAHungApp(t *testing.T) {
	p := newAppPeer(t, Options{Ping: 50 * time.Millisecond})
	select {
	case <-p.s.Done():
		if p.s.ClosedByApp() || p.s.stats.pingsMissed.Load() != 1 {
			t.Fatalf("ended, by app %v, pings missed %d", p.s.ClosedByApp(), p.s.stats.pingsMissed.Load())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a hung app was not noticed")
	}

	live := newAppPeer(t, Options{Ping: 50 * time.Millisecond})
	reading := make(chan struct{})
	go func() {
		defer close(reading)
		for {
			if _, _, err := live.conn.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	select {
	case <-live.s.Done():
		t.Fatal("a live app was hung up")
	case <-time.After(300 * time.Millisecond):
	}
	live.s.Close(End{Reason: "done", CloseCode: 1000})
	<-reading
}

// waitUntil polls cond until it holds, failing after two seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
