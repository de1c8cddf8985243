package bridge

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// EchoApp is the built-in demo AI application: it answers every call by
// sending the caller's audio straight back, so that a newcomer hears the
// edge work before writing any code. It checks the edge's signature when
// it knows the secret.
//
// It is also the load harness's application (trunkgate echo-app), where
// it must cost little beside the edge: a media message comes back as it
// came, byte for byte (the edge's media message is a valid message from
// an application too: streamSid, media.payload, and fields the edge
// ignores), and so does a binary L16 frame; only the rare other events
// are parsed.
type EchoApp struct {
	// Secret returns the signing secret for a request, or "" to skip the
	// check.
	Secret func(r *http.Request) string
	Log    *slog.Logger
}

// ServeHTTP accepts the edge's WebSocket and echoes media until it closes.
func (a *EchoApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := a.Log
	if log == nil {
		log = slog.Default()
	}
	if a.Secret != nil {
		if secret := a.Secret(r); secret != "" {
			url := "ws://" + r.Host + r.URL.RequestURI()
			ts := r.Header.Get("X-Trunkgate-Timestamp")
			t, err := strconv.ParseInt(ts, 10, 64)
			if err != nil || time.Since(time.Unix(t, 0)).Abs() > 5*time.Minute ||
				!Verify(secret, url, ts, r.Header.Get("X-Trunkgate-Signature")) {
				http.Error(w, "bad signature", http.StatusUnauthorized)
				return
			}
		}
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctx := r.Context()
	var streamSid string
	data := make([]byte, 0, 4096)
	for {
		typ, rd, err := conn.Reader(ctx)
		if err != nil {
			return
		}
		if data, err = readAll(data[:0], rd); err != nil {
			return
		}
		if typ == websocket.MessageBinary || bytes.HasPrefix(data, echoMedia) {
			if err := conn.Write(ctx, typ, data); err != nil {
				return
			}
			continue
		}
		var msg struct {
			Event     string `json:"event"`
			StreamSid string `json:"streamSid"`
			Media     struct {
				Payload string `json:"payload"`
			} `json:"media"`
			DTMF struct {
				Digit string `json:"digit"`
			} `json:"dtmf"`
		}
		if json.Unmarshal(data, &msg) != nil {
			continue
		}
		switch msg.Event {
		case "start":
			streamSid = msg.StreamSid
			log.Info("demo app: call started", "stream_sid", streamSid)
		case "media":
			out, _ := json.Marshal(map[string]any{"event": "media", "streamSid": streamSid,
				"media": map[string]string{"payload": msg.Media.Payload}})
			if err := conn.Write(ctx, websocket.MessageText, out); err != nil {
				return
			}
		case "dtmf":
			log.Info("demo app: caller pressed a key", "digit", msg.DTMF.Digit)
		case "stop":
			conn.Close(websocket.StatusNormalClosure, "call ended")
			return
		}
	}
}

// echoMedia starts every media message the edge renders.
var echoMedia = []byte(`{"event":"media",`)

var _ http.Handler = (*EchoApp)(nil)
