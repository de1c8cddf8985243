package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestParseFailuresLoggedSafely: sipgo's "failed to parse" record, at
// ERROR with the whole raw datagram, comes out at WARN with a short,
// escaped excerpt; a flood of them is cut to a few lines a second.
func TestParseFailuresLoggedSafely(t *testing.T) {
	var out bytes.Buffer
	log := sipLogger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})))
	raw := "INVITE \x1b[2J\x1bcRESET\x07 " + strings.Repeat("A", 10000)
	for range 1000 {
		log.Error("failed to parse", "data", raw, "error", "bad request line")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) > 60 {
		t.Fatalf("%d lines logged for a burst of 1000 bad messages", len(lines))
	}
	first := lines[0]
	if !strings.Contains(first, "level=WARN") || !strings.Contains(first, "unparsable SIP message") ||
		!strings.Contains(first, "bytes=10020") || strings.ContainsAny(first, "\x1b\x07") || len(first) > 600 {
		t.Fatalf("logged %q", first)
	}
	if !strings.Contains(first, `\x1b[2J`) {
		t.Fatalf("the excerpt is not escaped: %q", first)
	}
}

// TestIdleTCPCloseIsNotAnError: sipgo logs --sip-tcp-idle closing a quiet
// connection as "Read error" at ERROR; it is routine, so it shows only at
// debug. Other read errors stay errors.
func TestIdleTCPCloseIsNotAnError(t *testing.T) {
	for _, tt := range []struct {
		level slog.Level
		err   string
		want  string
	}{
		{slog.LevelInfo, "read tcp 127.0.0.1:5060->127.0.0.1:4000: i/o timeout", ""},
		{slog.LevelDebug, "read tcp 127.0.0.1:5060->127.0.0.1:4000: i/o timeout", "level=DEBUG msg=\"idle SIP TCP connection closed\""},
		{slog.LevelInfo, "connection reset by peer", "level=ERROR msg=\"Read error\""},
	} {
		var out bytes.Buffer
		log := sipLogger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: tt.level})))
		log.Error("Read error", "error", tt.err)
		if got := out.String(); (tt.want == "" && got != "") || !strings.Contains(got, tt.want) {
			t.Errorf("level %v, %q: logged %q, want %q", tt.level, tt.err, got, tt.want)
		}
	}
}
