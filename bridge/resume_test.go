package bridge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"trunkgate/media"
)

// resumeApp is an application the edge dials (and redials): each socket
// it accepts is handed to the test.
type resumeApp struct {
	url     string
	conns   chan *websocket.Conn
	resumes chan string // X-Trunkgate-Resume of each handshake
	refuse  atomic.Bool // answer 503 instead of upgrading
}

func newResumeApp(t *testing.T) *resumeApp {
	a := &resumeApp{conns: make(chan *websocket.Conn, 4), resumes: make(chan string, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.resumes <- r.Header.Get("X-Trunkgate-Resume")
		if a.refuse.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		a.conns <- c
	}))
	t.Cleanup(srv.Close)
	a.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	return a
}

func (a *resumeApp) next(t *testing.T) *websocket.Conn {
	t.Helper()
	select {
	case c := <-a.conns:
		t.Cleanup(func() { c.CloseNow() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the edge did not dial the app")
		return nil
	}
}

type wireMsg struct {
	Event          string `json:"event"`
	SequenceNumber string `json:"sequenceNumber"`
	StreamSid      string `json:"streamSid"`
	Start          *struct {
		Resumed bool `json:"resumed"`
	} `json:"start"`
	Media *struct{ Chunk, Timestamp, Payload string } `json:"media"`
	Mark  *struct{ Name, Status string }              `json:"mark"`
	Stop  *struct{ Reason string }                    `json:"stop"`
}

func readMsg(t *testing.T, c *websocket.Conn) wireMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("app read: %v", err)
	}
	var m wireMsg
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// frameOf is frame i's audio: a click at sample i says which frame it is.
func frameOf(i int) []int16 {
	pcm := make([]int16, media.FrameSamples)
	pcm[i%media.FrameSamples] = 8000
	return pcm
}

// frameIndex finds frameOf's click in a media message.
func frameIndex(t *testing.T, m wireMsg) int {
	t.Helper()
	ulaw, err := base64.StdEncoding.DecodeString(m.Media.Payload)
	if err != nil || len(ulaw) != media.FrameSamples {
		t.Fatalf("media payload %q", m.Media.Payload)
	}
	pcm := make([]int16, media.FrameSamples)
	media.DecodeUlaw(pcm, ulaw)
	for i, v := range pcm {
		if v > 4000 {
			return i
		}
	}
	t.Fatal("media payload without a click")
	return -1
}

func waitDetached(t *testing.T, s *Stream) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, _ := s.current(); c == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the stream never noticed the dropped socket")
		}
		time.Sleep(time.Millisecond)
	}
}

func dialResumable(t *testing.T, a *resumeApp, grace time.Duration) *Stream {
	t.Helper()
	s, err := Dial(context.Background(), DialConfig{URL: a.url, Format: Format{Kind: FormatTwilio, SampleRate: 8000},
		Options: Options{ResumeGrace: grace, Extensions: true}, Log: slog.New(slog.DiscardHandler),
		Start: Start{CallSid: "CA1", StreamSid: "MZ1", AccountSid: "AC1"}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRedialResumesTheStream: a socket that drops is redialled with the
// streamSid; the new socket gets connected, a start that says resumed, the
// events that waited, then the caller's audio held meanwhile and live
// audio, numbered on from the old socket with no frame lost or repeated.
func TestRedialResumesTheStream(t *testing.T) {
	a := newResumeApp(t)
	s := dialResumable(t, a, 5*time.Second)
	if got := <-a.resumes; got != "" {
		t.Fatalf("first dial says it resumes %q", got)
	}
	old := a.next(t)
	s.Begin(&countingPlayer{}, Leg{})
	defer s.Close(End{Reason: "test over"})
	if m := readMsg(t, old); m.Event != "connected" {
		t.Fatalf("first message %s", m.Event)
	}
	if m := readMsg(t, old); m.Event != "start" || m.SequenceNumber != "1" || m.Start.Resumed {
		t.Fatalf("start %+v", m)
	}
	frame := 0
	for ; frame < 5; frame++ {
		s.Audio(frameOf(frame), int64(frame), time.Time{})
		if m := readMsg(t, old); m.Media.Chunk != strconv.Itoa(frame+1) {
			t.Fatalf("chunk %s, want %d", m.Media.Chunk, frame+1)
		}
	}

	a.refuse.Store(true) // the app is away for a while
	old.CloseNow()       // no close handshake: the socket failed
	waitDetached(t, s)
	if got := <-a.resumes; got != "MZ1" {
		t.Fatalf("redial says it resumes %q, want MZ1", got)
	}
	for ; frame < 40; frame++ { // 700 ms of the caller held
		s.Audio(frameOf(frame), int64(frame), time.Time{})
	}
	s.MarkDone("said-while-away", false)
	select {
	case <-s.Done():
		t.Fatal("the stream ended inside its grace window")
	default:
	}
	a.refuse.Store(false)
	resumed := a.next(t)
	if m := readMsg(t, resumed); m.Event != "connected" {
		t.Fatalf("resumed socket's first message %s", m.Event)
	}
	m := readMsg(t, resumed)
	if m.Event != "start" || m.Start == nil || !m.Start.Resumed || m.StreamSid != "MZ1" || m.SequenceNumber != "7" {
		t.Fatalf("resumed start %+v, want resumed, MZ1, sequence 7", m)
	}
	if m := readMsg(t, resumed); m.Event != "mark" || m.Mark.Name != "said-while-away" || m.Mark.Status != "played" {
		t.Fatalf("after start %+v, want the mark that waited", m)
	}
	s.Audio(frameOf(frame), int64(frame), time.Time{}) // live
	for want := 5; want <= frame; want++ {
		m := readMsg(t, resumed)
		if m.Event != "media" {
			t.Fatalf("got %s, want media", m.Event)
		}
		if got := frameIndex(t, m); got != want || m.Media.Chunk != strconv.Itoa(want+1) || m.Media.Timestamp != strconv.Itoa(20*want) {
			t.Fatalf("frame %d chunk %s timestamp %s, want frame %d chunk %d timestamp %d", got, m.Media.Chunk, m.Media.Timestamp, want, want+1, 20*want)
		}
	}
	if n := s.Counters().Resumes; n != 1 {
		t.Fatalf("%d resumes counted", n)
	}
	go drain(resumed) // answers the close handshake
}

func drain(c *websocket.Conn) {
	for {
		if _, _, err := c.Read(context.Background()); err != nil {
			return
		}
	}
}

// TestResumeGraceRunsOut: an application that never comes back ends the
// call when the window closes, as a failure, not a hang-up.
func TestResumeGraceRunsOut(t *testing.T) {
	a := newResumeApp(t)
	s := dialResumable(t, a, 300*time.Millisecond)
	<-a.resumes
	old := a.next(t)
	s.Begin(&countingPlayer{}, Leg{})
	defer s.Close(End{})
	readMsg(t, old)
	readMsg(t, old)
	a.refuse.Store(true)
	dropped := time.Now()
	old.CloseNow()
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the stream outlived its grace window")
	}
	if took := time.Since(dropped); took < 300*time.Millisecond {
		t.Fatalf("ended %v after the drop, inside the window", took)
	}
	if s.ClosedByApp() {
		t.Fatal("a socket that never came back counted as the app hanging up")
	}
}

// TestNoResumeWithoutGraceOrForACloseFrame: without a window a dropped
// socket ends the call as before; with one, a close frame is still the
// app hanging up.
func TestNoResumeWithoutGraceOrForACloseFrame(t *testing.T) {
	for _, tt := range []struct {
		name  string
		grace time.Duration
		drop  func(c *websocket.Conn)
	}{
		{"no grace, socket fails", 0, func(c *websocket.Conn) { c.CloseNow() }},
		{"grace, close frame", 5 * time.Second, func(c *websocket.Conn) { c.Close(websocket.StatusNormalClosure, "bye") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newResumeApp(t)
			s := dialResumable(t, a, tt.grace)
			<-a.resumes
			c := a.next(t)
			s.Begin(&countingPlayer{}, Leg{})
			defer s.Close(End{})
			readMsg(t, c)
			readMsg(t, c)
			go tt.drop(c)
			select {
			case <-s.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the stream did not end")
			}
			if !s.ClosedByApp() {
				t.Fatal("not counted as the app hanging up")
			}
			select {
			case got := <-a.resumes:
				t.Fatalf("the edge redialled (%q)", got)
			default:
			}
		})
	}
}

// TestResumeOnTakesOver: an application that dialled the edge resumes on
// a new request, even before the edge has seen the old socket fail.
func TestResumeOnTakesOver(t *testing.T) {
	streams := make(chan *Stream, 1)
	var first atomic.Pointer[Stream]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := first.Load(); s != nil {
			if err := s.ResumeOn(w, r); err != nil {
				t.Error(err)
			}
			return
		}
		s, err := Accept(w, r, AcceptConfig{Format: Format{Kind: FormatTwilio, SampleRate: 8000},
			Options: Options{ResumeGrace: 5 * time.Second}, Log: slog.New(slog.DiscardHandler),
			Start: Start{CallSid: "CA1", StreamSid: "MZ1", AccountSid: "AC1"}})
		if err != nil {
			t.Error(err)
			return
		}
		first.Store(s)
		streams <- s
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	old, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer old.CloseNow()
	s := <-streams
	s.Begin(&countingPlayer{}, Leg{})
	defer s.Close(End{})
	readMsg(t, old) // connected
	readMsg(t, old) // start
	s.Audio(frameOf(0), 0, time.Time{})
	readMsg(t, old)

	// The old socket is still up as far as the edge knows.
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if m := readMsg(t, c); m.Event != "connected" {
		t.Fatalf("first message %s", m.Event)
	}
	if m := readMsg(t, c); m.Event != "start" || !m.Start.Resumed || m.SequenceNumber != "3" {
		t.Fatalf("start %+v", m)
	}
	s.Audio(frameOf(1), 1, time.Time{})
	if m := readMsg(t, c); m.Media == nil || m.Media.Chunk != "2" {
		t.Fatalf("media %+v, want chunk 2", m)
	}
	select {
	case <-s.Done():
		t.Fatal("the takeover ended the stream")
	default:
	}
}

// TestHoldToneWhileAway: with the hold tone, a caller whose app has gone
// hears a beep (200 ms of 425 Hz at the call's rate) half a second later.
func TestHoldToneWhileAway(t *testing.T) {
	for _, rate := range []int{8000, 16000} {
		a := newResumeApp(t)
		s, err := Dial(context.Background(), DialConfig{URL: a.url, Format: Format{Kind: FormatTwilio, SampleRate: 8000},
			Options: Options{ResumeGrace: 5 * time.Second, HoldTone: true}, Log: slog.New(slog.DiscardHandler),
			Start: Start{CallSid: "CA1", StreamSid: "MZ1", AccountSid: "AC1"}})
		if err != nil {
			t.Fatal(err)
		}
		<-a.resumes
		c := a.next(t)
		player := &countingPlayer{rate: rate}
		s.Begin(player, Leg{})
		readMsg(t, c)
		readMsg(t, c)
		a.refuse.Store(true)
		c.CloseNow()
		deadline := time.Now().Add(5 * time.Second)
		for player.samples.Load() < int64(rate/5) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := player.samples.Load(); got != int64(rate/5) {
			t.Fatalf("%d Hz: the caller got %d samples while the app was away, want one beep of %d", rate, got, rate/5)
		}
		if b := holdBeeps[rate]; toneAt(b, holdBeepHz, rate) < 0.9 {
			t.Fatalf("the beep is not a %d Hz tone", holdBeepHz)
		}
		s.Close(End{})
	}
}

// toneAt is the share of x's energy at freq (Goertzel).
func toneAt(x []int16, freq float64, rate int) float64 {
	var s1, s2, total float64
	k := 2 * math.Cos(2*math.Pi*freq/float64(rate))
	for _, v := range x {
		f := float64(v)
		s1, s2 = f+k*s1-s2, s1
		total += f * f
	}
	return 2 * (s1*s1 + s2*s2 - k*s1*s2) / (float64(len(x)) * total)
}
