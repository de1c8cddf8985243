package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// DialConfig is what the edge needs to reach an inbound call's application.
type DialConfig struct {
	URL           string
	SigningSecret string // signs the request; empty sends no signature
	Format        Format
	Options       Options
	Start         Start
	Log           *slog.Logger
	// Timeout bounds the handshake; 0 means 5 s.
	Timeout time.Duration
	// HTTPClient makes the handshake (its TLS settings verify a wss://
	// application); nil is http.DefaultClient.
	HTTPClient *http.Client
}

// ErrDial wraps every failure to reach the application.
var ErrDial = errors.New("AI application unreachable")

// Dial opens the call's WebSocket to the application with a signed
// request. The stream starts (connected, start) on Stream.Begin. With a
// resume grace window, the stream dials again the same way when the socket
// drops (resume.go).
func Dial(ctx context.Context, cfg DialConfig) (*Stream, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	conn, err := dial(ctx, cfg, false)
	if err != nil {
		return nil, err
	}
	s := newStream(conn, cfg.Format, cfg.Options, cfg.Start, cfg.Log)
	if cfg.Options.ResumeGrace > 0 {
		s.redial = func(ctx context.Context) (*websocket.Conn, error) { return dial(ctx, cfg, true) }
	}
	return s, nil
}

// dial makes one signed handshake; a redial says which stream it resumes
// (X-Trunkgate-Resume: the streamSid), so that the application can send it
// to the worker that had it.
func dial(ctx context.Context, cfg DialConfig, resume bool) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	hdr := http.Header{}
	hdr.Set("User-Agent", "trunkgate")
	if cfg.SigningSecret != "" {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		hdr.Set("X-Trunkgate-Timestamp", ts)
		hdr.Set("X-Trunkgate-Signature", Sign(cfg.SigningSecret, cfg.URL, ts))
	}
	hdr.Set("X-Trunkgate-Call-Sid", cfg.Start.CallSid)
	if resume {
		hdr.Set("X-Trunkgate-Resume", cfg.Start.StreamSid)
	}
	conn, resp, err := websocket.Dial(ctx, cfg.URL, &websocket.DialOptions{HTTPHeader: hdr, HTTPClient: cfg.HTTPClient})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w: HTTP %d", ErrDial, resp.StatusCode)
		}
		return nil, fmt.Errorf("%w: %w", ErrDial, err)
	}
	return conn, nil
}
