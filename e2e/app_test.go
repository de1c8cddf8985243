package e2e

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"trunkgate/internal/tlsconf/tlstest"
)

// App is an AI application: a WebSocket server the edge dials for each
// inbound call. Each accepted stream is handed to the test as an AppConn.
type App struct {
	URL      string
	conns    chan *AppConn
	dialling chan struct{} // a handshake request arrived
	srv      *http.Server
	// Reject, when set, refuses the handshake with this HTTP status.
	Reject int
	// Away, while true, refuses handshakes with 503 (an app restarting).
	Away atomic.Bool
	// HandshakeDelay holds each handshake this long (a slow app).
	HandshakeDelay time.Duration
	// Hang, when set, makes the app accept the WebSocket and then read
	// nothing (so it answers no ping) until Hang is closed: a hung process
	// behind a live TCP connection.
	Hang chan struct{}
}

// Msg is one message from the edge, as the app saw it.
type Msg struct {
	Event          string                         `json:"event"`
	SequenceNumber string                         `json:"sequenceNumber"`
	StreamSid      string                         `json:"streamSid"`
	Protocol       string                         `json:"protocol"`
	Start          *StartBody                     `json:"start"`
	Media          *MediaBody                     `json:"media"`
	Mark           *struct{ Name, Status string } `json:"mark"`
	Cleared        *struct {
		DroppedMs   int64  `json:"droppedMs"`
		PlayedUntil string `json:"playedUntil"`
	} `json:"cleared"`
	DTMF *struct {
		Track string `json:"track"`
		Digit string `json:"digit"`
	} `json:"dtmf"`
	Stop *struct {
		AccountSid string `json:"accountSid"`
		CallSid    string `json:"callSid"`
		Reason     string `json:"reason"`
		SIPCode    int    `json:"sipCode"`
	} `json:"stop"`
	Progress *StatusBody `json:"progress"`
	Transfer *StatusBody `json:"transfer"`
	Binary   []byte      `json:"-"` // an L16 frame
	Raw      []byte      `json:"-"` // the text frame as it came
	At       time.Time   `json:"-"`
}

// StatusBody is progress.progress and transfer.transfer.
type StatusBody struct {
	Status  string `json:"status"`
	SIPCode int    `json:"sipCode"`
}

// StartBody is start.start.
type StartBody struct {
	AccountSid       string            `json:"accountSid"`
	StreamSid        string            `json:"streamSid"`
	CallSid          string            `json:"callSid"`
	Tracks           []string          `json:"tracks"`
	CustomParameters map[string]string `json:"customParameters"`
	MediaFormat      struct {
		Encoding   string `json:"encoding"`
		SampleRate int    `json:"sampleRate"`
		Channels   int    `json:"channels"`
		ByteOrder  string `json:"byteOrder"`
	} `json:"mediaFormat"`
	Resumed bool `json:"resumed"`
}

// MediaBody is media.media.
type MediaBody struct {
	Track     string `json:"track"`
	Chunk     string `json:"chunk"`
	Timestamp string `json:"timestamp"`
	Payload   string `json:"payload"`
}

// Audio decodes the payload.
func (m *MediaBody) Audio() []byte {
	b, _ := base64.StdEncoding.DecodeString(m.Payload)
	return b
}

// AppConn is one call's stream on the app side.
type AppConn struct {
	t       testing.TB
	conn    *websocket.Conn
	Header  http.Header
	URL     string
	msgs    chan Msg
	mu      sync.Mutex
	all     []Msg
	closed  chan struct{}
	readErr error // why the read loop ended; a websocket.CloseError for a close frame
	writeMu sync.Mutex
}

// StartApp serves an app on 127.0.0.1; it stops at cleanup.
func StartApp(t testing.TB) *App {
	t.Helper()
	return startApp(t, nil)
}

// StartTLSApp serves an app over wss:// with a certificate for 127.0.0.1
// from ca.
func StartTLSApp(t testing.TB, ca *tlstest.CA) *App {
	t.Helper()
	pair := ca.Issue(t, t.TempDir(), "app", "127.0.0.1")
	cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return startApp(t, &tls.Config{Certificates: []tls.Certificate{cert}})
}

func startApp(t testing.TB, tlsConfig *tls.Config) *App {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scheme := "ws://"
	if tlsConfig != nil {
		ln, scheme = tls.NewListener(ln, tlsConfig), "wss://"
	}
	a := &App{URL: scheme + ln.Addr().String() + "/agent", conns: make(chan *AppConn, 16), dialling: make(chan struct{}, 16)}
	a.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case a.dialling <- struct{}{}:
		default:
		}
		if a.HandshakeDelay > 0 {
			select {
			case <-time.After(a.HandshakeDelay):
			case <-r.Context().Done():
				return
			}
		}
		if a.Reject != 0 {
			http.Error(w, "no", a.Reject)
			return
		}
		if a.Away.Load() {
			http.Error(w, "restarting", http.StatusServiceUnavailable)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		c.SetReadLimit(1 << 20)
		ac := &AppConn{t: t, conn: c, Header: r.Header.Clone(), URL: "ws://" + r.Host + r.URL.RequestURI(),
			msgs: make(chan Msg, 10000), closed: make(chan struct{})}
		a.conns <- ac
		if a.Hang != nil {
			<-a.Hang
			c.CloseNow()
			close(ac.closed)
			return
		}
		ac.readLoop()
	})}
	go a.srv.Serve(ln)
	t.Cleanup(func() { a.srv.Close() })
	return a
}

// WaitDialling waits until the edge's next handshake request has reached
// the app (which may still be holding it, see HandshakeDelay).
func (a *App) WaitDialling(t testing.TB) {
	t.Helper()
	select {
	case <-a.dialling:
	case <-time.After(10 * time.Second):
		t.Fatal("the edge never dialled the app")
	}
}

// Next waits for the edge to open the next call's stream.
func (a *App) Next(t testing.TB) *AppConn {
	t.Helper()
	select {
	case c := <-a.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("the edge never dialled the app")
		return nil
	}
}

func (c *AppConn) readLoop() {
	defer close(c.closed)
	for {
		typ, data, err := c.conn.Read(context.Background())
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			return
		}
		m := Msg{At: time.Now(), Raw: data}
		if typ == websocket.MessageBinary {
			m.Event, m.Binary = "binary", data
		} else if err := json.Unmarshal(data, &m); err != nil {
			c.t.Errorf("edge sent invalid JSON %q: %v", data, err)
			continue
		}
		c.mu.Lock()
		c.all = append(c.all, m)
		c.mu.Unlock()
		select {
		case c.msgs <- m:
		default:
		}
	}
}

// Expect waits for the next message with this event, skipping media,
// connected, progress and stats unless the event asked for is one of them.
func (c *AppConn) Expect(t testing.TB, event string) Msg {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-c.msgs:
			if m.Event == event {
				return m
			}
			if m.Event != "media" && m.Event != "binary" && m.Event != "connected" && m.Event != "progress" && m.Event != "stats" && event != "any" {
				t.Fatalf("got %q while waiting for %q", m.Event, event)
			}
		case <-deadline:
			t.Fatalf("no %q message from the edge", event)
		case <-c.closed:
			// Messages read before the close are still queued.
			for {
				select {
				case m := <-c.msgs:
					if m.Event == event {
						return m
					}
					continue
				default:
				}
				break
			}
			t.Fatalf("stream closed while waiting for %q", event)
		}
	}
}

// All is every message so far.
func (c *AppConn) All() []Msg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Msg(nil), c.all...)
}

// CloseCode waits for the stream to close and returns the close code the
// edge sent (-1 if it sent no close frame).
func (c *AppConn) CloseCode(t testing.TB) (websocket.StatusCode, string) {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(15 * time.Second):
		t.Fatal("the stream never closed")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var ce websocket.CloseError
	if errors.As(c.readErr, &ce) {
		return ce.Code, ce.Reason
	}
	return -1, ""
}

// Closed is closed when the edge closes the stream.
func (c *AppConn) Closed() <-chan struct{} { return c.closed }

// Send writes a JSON message.
func (c *AppConn) Send(t testing.TB, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.conn.Write(context.Background(), websocket.MessageText, data); err != nil {
		t.Fatalf("app write: %v", err)
	}
}

// SendRaw writes a text frame as is.
func (c *AppConn) SendRaw(t testing.TB, typ websocket.MessageType, data []byte) {
	t.Helper()
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.conn.Write(context.Background(), typ, data); err != nil {
		t.Fatalf("app write: %v", err)
	}
}

// SendAudio sends μ-law audio in media messages of 20 ms.
func (c *AppConn) SendAudio(t testing.TB, streamSid string, ulaw []byte) {
	t.Helper()
	for i := 0; i < len(ulaw); i += 160 {
		end := min(i+160, len(ulaw))
		c.Send(t, map[string]any{"event": "media", "streamSid": streamSid,
			"media": map[string]string{"payload": base64.StdEncoding.EncodeToString(ulaw[i:end])}})
	}
}

// Close closes the stream from the app side (the caller hangs up).
func (c *AppConn) Close() {
	c.conn.Close(websocket.StatusNormalClosure, "app done")
}

// Kill drops the socket without a close handshake (the app's process or
// its network died).
func (c *AppConn) Kill() { c.conn.CloseNow() }

// Media returns the decoded audio of every media message so far.
func (c *AppConn) Media() (frames [][]byte, msgs []Msg) {
	for _, m := range c.All() {
		if m.Event == "media" && m.Media != nil {
			frames = append(frames, m.Media.Audio())
			msgs = append(msgs, m)
		}
	}
	return frames, msgs
}

func hasPrefix(s, p string) bool { return strings.HasPrefix(s, p) }
