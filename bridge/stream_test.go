package bridge

import (
	"encoding/base64"
	"testing"
	"time"
)

// TestLargeApplicationMessages: a TTS engine may send seconds of audio in
// one message; all of it is played, in any format.
func TestLargeApplicationMessages(t *testing.T) {
	tests := []struct {
		name    string
		format  Format
		frame   []byte
		samples int64 // at 8 kHz
	}{
		{"twilio 3 s in one media message", Format{Kind: FormatTwilio, SampleRate: 8000},
			serverFrame(1, []byte(`{"event":"media","media":{"payload":"`+base64.StdEncoding.EncodeToString(make([]byte, 24000))+`"}}`)), 24000},
		{"l16 8 kHz, 2 s in one frame", Format{Kind: FormatL16, SampleRate: 8000}, serverFrame(2, make([]byte, 32000)), 16000},
		{"l16 16 kHz, 2 s in one frame", Format{Kind: FormatL16, SampleRate: 16000}, serverFrame(2, make([]byte, 64000)), 16000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer := newRawPeer(t)
			s := peer.dial(t, tt.format)
			conn := <-peer.conn
			player := &countingPlayer{}
			s.Begin(player, Leg{})
			defer func() {
				conn.Close() // the raw peer does no close handshake
				s.Close(End{})
			}()
			if _, err := conn.Write(tt.frame); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for player.samples.Load() < tt.samples && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if got := player.samples.Load(); got != tt.samples {
				t.Fatalf("played %d samples, want %d", got, tt.samples)
			}
			select {
			case <-s.Done():
				t.Fatal("the stream ended")
			default:
			}
		})
	}
}
