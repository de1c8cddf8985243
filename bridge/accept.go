package bridge

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/coder/websocket"
)

// AcceptConfig is what the edge needs to take an outbound call's
// WebSocket from the application that opened it.
type AcceptConfig struct {
	Format  Format
	Options Options
	Start   Start
	Log     *slog.Logger
}

// Accept upgrades the application's request to the call's WebSocket. The
// caller has already authenticated and admitted the call: every refusal
// is an HTTP answer before this point. The stream is connected (connected
// sent, the application read) at once; Begin sends start when the far end
// answers.
func Accept(w http.ResponseWriter, r *http.Request, cfg AcceptConfig) (*Stream, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	s := newStream(conn, cfg.Format, cfg.Options, cfg.Start, cfg.Log)
	s.Connect()
	return s, nil
}
