package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// sipLogger keeps sipgo's per-message logging at warn and above unless the
// edge itself runs at debug, and caps it at a few lines a second: sipgo
// logs every unparsable datagram, so garbage sent at line rate must not
// become log lines at line rate.
func sipLogger(log *slog.Logger) *slog.Logger {
	h := log.Handler()
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		h = levelFloor{Handler: h, min: slog.LevelWarn}
	}
	return slog.New(&rateLimited{Handler: parseFailures{h}, state: &rateState{perSecond: 10, burst: 50}})
}

// parseFailures turns "failed to parse" records (sipgo's, and the sip
// package's for the UDP requests it answers 400) — at ERROR, with
// the whole raw datagram or stream chunk — into a WARN with a short
// excerpt (which the handler escapes): what an attacker sends must not
// fill the logs or reach an operator's terminal raw.
type parseFailures struct{ slog.Handler }

// excerptBytes of a bad message are kept in its log line.
const excerptBytes = 120

func (p parseFailures) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Message == "Read error" && idleTimeout(rec) {
		// --sip-tcp-idle closing a quiet connection is routine, not an error.
		if !p.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		out := slog.NewRecord(rec.Time, slog.LevelDebug, "idle SIP TCP connection closed", rec.PC)
		return p.Handler.Handle(ctx, out)
	}
	if rec.Message != "failed to parse" {
		return p.Handler.Handle(ctx, rec)
	}
	out := slog.NewRecord(rec.Time, slog.LevelWarn, "unparsable SIP message", rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "data" {
			raw := a.Value.String()
			if len(raw) > excerptBytes {
				raw = raw[:excerptBytes]
			}
			// The text and JSON handlers escape control characters.
			out.AddAttrs(slog.String("excerpt", strings.ToValidUTF8(raw, "?")), slog.Int("bytes", len(a.Value.String())))
			return true
		}
		out.AddAttrs(a)
		return true
	})
	return p.Handler.Handle(ctx, out)
}

func idleTimeout(rec slog.Record) bool {
	timeout := false
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			timeout = strings.Contains(a.Value.String(), "i/o timeout")
			return false
		}
		return true
	})
	return timeout
}

func (p parseFailures) WithAttrs(a []slog.Attr) slog.Handler {
	return parseFailures{p.Handler.WithAttrs(a)}
}
func (p parseFailures) WithGroup(n string) slog.Handler { return parseFailures{p.Handler.WithGroup(n)} }

// rateLimited passes at most perSecond records a second (burst burst) and
// reports how many it dropped once it passes records again.
type rateLimited struct {
	slog.Handler
	state *rateState
}

type rateState struct {
	mu         sync.Mutex
	perSecond  float64
	burst      float64
	tokens     float64
	last       time.Time
	suppressed int
}

func (r *rateLimited) Handle(ctx context.Context, rec slog.Record) error {
	st := r.state
	st.mu.Lock()
	now := time.Now()
	if st.last.IsZero() {
		st.tokens = st.burst
	}
	st.tokens = min(st.burst, st.tokens+now.Sub(st.last).Seconds()*st.perSecond)
	st.last = now
	if st.tokens < 1 {
		st.suppressed++
		st.mu.Unlock()
		return nil
	}
	st.tokens--
	dropped := st.suppressed
	st.suppressed = 0
	st.mu.Unlock()
	if dropped > 0 {
		rec.AddAttrs(slog.Int("log_lines_suppressed", dropped))
	}
	return r.Handler.Handle(ctx, rec)
}

func (r *rateLimited) WithAttrs(a []slog.Attr) slog.Handler {
	return &rateLimited{Handler: r.Handler.WithAttrs(a), state: r.state}
}

func (r *rateLimited) WithGroup(n string) slog.Handler {
	return &rateLimited{Handler: r.Handler.WithGroup(n), state: r.state}
}

type levelFloor struct {
	slog.Handler
	min slog.Level
}

func (l levelFloor) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.Handler.Enabled(ctx, lv)
}

func (l levelFloor) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFloor{Handler: l.Handler.WithAttrs(a), min: l.min}
}

func (l levelFloor) WithGroup(n string) slog.Handler {
	return levelFloor{Handler: l.Handler.WithGroup(n), min: l.min}
}
