package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"trunkgate/media"
)

// runCall places one outbound call from the terminal, the way an AI
// application does: it opens /v1/calls/stream with the key, plays a tone
// once the call is answered, prints every event and the level of the
// audio that came back, and exits with the call's outcome (0 when the call
// was answered and ended normally).
func runCall(args []string) error {
	fs := newFlags("call", "call --to +E164 [--from +E164] [--key KEY] [--seconds N]")
	server := fs.String("server", "http://127.0.0.1:8080", "edge URL (the stream goes to ws://…/v1/calls/stream, wss:// for https://)")
	ca := fs.String("ca", "", "PEM CA bundle to verify an https:// --server against (default: the system's roots)")
	keyText := fs.String("key", "", "the API key to call with (default $TRUNKGATE_API_KEY); a test key reaches the sandbox")
	to := fs.String("to", "", "number to call, E.164; sandbox: +15005550006 echoes, …0001 404, …0002 busy, …0003 no answer")
	from := fs.String("from", "", "caller id, E.164 (a test key accepts any)")
	trunk := fs.String("trunk", "", "outbound trunk id (default: the key's first)")
	seconds := fs.Float64("seconds", 5, "how long to stay on the line once answered, in seconds")
	tone := fs.Float64("tone", 440, "frequency of the tone to play, Hz")
	progress := fs.Bool("progress", true, "ask for ringing and early-media events (progress=1)")
	pos, err := parseFlags(fs, args)
	if err == nil {
		err = noArgs(pos)
	}
	if err != nil {
		return err
	}
	if *keyText == "" {
		*keyText = os.Getenv("TRUNKGATE_API_KEY")
	}
	if *keyText == "" || *to == "" {
		return errors.New("call: need --to and a key (--key or TRUNKGATE_API_KEY; `make run` prints a demo test key)")
	}
	u, err := url.Parse(strings.TrimRight(*server, "/") + "/v1/calls/stream")
	if err != nil {
		return fmt.Errorf("--server: %w", err)
	}
	u.Scheme = map[string]string{"https": "wss"}[u.Scheme]
	if u.Scheme == "" {
		u.Scheme = "ws"
	}
	q := url.Values{"to": {*to}}
	if *from != "" {
		q.Set("from", *from)
	}
	if *trunk != "" {
		q.Set("trunk", *trunk)
	}
	if *progress {
		q.Set("progress", "1")
	}
	u.RawQuery = q.Encode()
	hc, err := httpClient(*ca, 0)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return placeCall(ctx, os.Stdout, hc, u.String(), *keyText, time.Duration(*seconds*float64(time.Second)), *tone)
}

// callEvent is what the CLI reads of the edge's messages.
type callEvent struct {
	Event          string `json:"event"`
	SequenceNumber string `json:"sequenceNumber"`
	StreamSid      string `json:"streamSid"`
	Start          *struct {
		CallSid          string            `json:"callSid"`
		CustomParameters map[string]string `json:"customParameters"`
	} `json:"start"`
	Progress *struct {
		Status  string `json:"status"`
		SIPCode int    `json:"sipCode"`
	} `json:"progress"`
	Media *struct {
		Payload string `json:"payload"`
	} `json:"media"`
	DTMF *struct {
		Digit string `json:"digit"`
	} `json:"dtmf"`
	Stop *struct {
		Reason  string `json:"reason"`
		SIPCode int    `json:"sipCode"`
	} `json:"stop"`
}

// errCallFailed carries a call's failure to the exit status.
var errCallFailed = errors.New("call failed")

func placeCall(ctx context.Context, out io.Writer, hc *http.Client, streamURL, key string, hold time.Duration, freq float64) error {
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, res, err := websocket.Dial(dialCtx, streamURL, &websocket.DialOptions{HTTPClient: hc,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + key}}})
	if err != nil {
		if res != nil {
			body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
			res.Body.Close()
			var e struct {
				Error struct{ Code, Message string }
			}
			if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
				return fmt.Errorf("%w: refused with HTTP %d: %s (%s)", errCallFailed, res.StatusCode, e.Error.Message, e.Error.Code)
			}
			return fmt.Errorf("%w: refused with HTTP %d", errCallFailed, res.StatusCode)
		}
		return fmt.Errorf("reach the edge: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	fmt.Fprintf(out, "dialling %s\n", streamURL[:strings.Index(streamURL, "?")])

	var (
		streamSid string
		answered  time.Time
		frames    int
		energy    float64
		samples   int
		pcm       = make([]int16, 1024)
		stopped   *callEvent
		hungUp    atomic.Bool
	)
	playCtx, playCancel := context.WithCancel(ctx)
	defer playCancel()
	hangup := make(chan struct{})
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			code := websocket.StatusCode(-1)
			if errors.As(err, &ce) {
				code = ce.Code
				fmt.Fprintf(out, "closed: %d %s\n", ce.Code, ce.Reason)
			} else if ctx.Err() != nil {
				fmt.Fprintln(out, "interrupted")
			} else if !hungUp.Load() { // our own close ends the read too
				fmt.Fprintf(out, "stream lost: %v\n", err)
			}
			if hungUp.Load() {
				code = websocket.StatusNormalClosure
			}
			return callOutcome(out, answered, frames, energy, samples, stopped, code)
		}
		var ev callEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			continue
		}
		switch ev.Event {
		case "connected":
			fmt.Fprintln(out, "connected")
		case "progress":
			fmt.Fprintf(out, "progress: %s (%d)\n", ev.Progress.Status, ev.Progress.SIPCode)
		case "start":
			streamSid, answered = ev.StreamSid, time.Now()
			p := ev.Start.CustomParameters
			fmt.Fprintf(out, "answered: call %s, from %s to %s; playing a %.0f Hz tone for %v\n", ev.Start.CallSid,
				p["from"], p["to"], freq, hold)
			go playTone(playCtx, conn, streamSid, freq, hold, hangup)
			go func() {
				select {
				case <-hangup:
					fmt.Fprintln(out, "hanging up")
					hungUp.Store(true)
					conn.Close(websocket.StatusNormalClosure, "caller done")
				case <-playCtx.Done():
				}
			}()
		case "media":
			ulaw, err := base64.StdEncoding.DecodeString(ev.Media.Payload)
			if err != nil || len(ulaw) > len(pcm) {
				continue
			}
			media.DecodeUlaw(pcm[:len(ulaw)], ulaw)
			for _, v := range pcm[:len(ulaw)] {
				energy += float64(v) * float64(v)
			}
			samples += len(ulaw)
			frames++
		case "dtmf":
			fmt.Fprintf(out, "dtmf: %s\n", ev.DTMF.Digit)
		case "mark":
			fmt.Fprintln(out, "mark")
		case "stop":
			stopped = &ev
			fmt.Fprintf(out, "stop: %s (SIP %d)\n", ev.Stop.Reason, ev.Stop.SIPCode)
		}
	}
}

// playTone sends μ-law frames of a tone at 20 ms pace for d, then closes
// hangup (not when ctx ends first: the call ended some other way).
func playTone(ctx context.Context, conn *websocket.Conn, streamSid string, freq float64, d time.Duration, hangup chan<- struct{}) {
	pcm := make([]int16, media.FrameSamples)
	ulaw := make([]byte, media.FrameSamples)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	end := time.After(d)
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-end:
			close(hangup)
			return
		case <-t.C:
		}
		for i := range pcm {
			pcm[i] = int16(8000 * math.Sin(2*math.Pi*freq*float64(n)/media.ClockRate))
			n++
		}
		media.EncodeUlaw(ulaw, pcm)
		msg, _ := json.Marshal(map[string]any{"event": "media", "streamSid": streamSid,
			"media": map[string]string{"payload": base64.StdEncoding.EncodeToString(ulaw)}})
		if conn.Write(ctx, websocket.MessageText, msg) != nil {
			return
		}
	}
}

// callOutcome prints what came back and turns the call's end into the
// exit status.
func callOutcome(out io.Writer, answered time.Time, frames int, energy float64, samples int, stopped *callEvent, code websocket.StatusCode) error {
	if !answered.IsZero() {
		level := math.Inf(-1)
		if samples > 0 && energy > 0 {
			level = 20 * math.Log10(math.Sqrt(energy/float64(samples))/32768)
		}
		fmt.Fprintf(out, "audio back: %d frames (%.1f s), level %.1f dBFS\n", frames, float64(frames)/50, level)
	}
	switch {
	case answered.IsZero() && stopped != nil:
		return fmt.Errorf("%w: %s (SIP %d)", errCallFailed, stopped.Stop.Reason, stopped.Stop.SIPCode)
	case answered.IsZero():
		return fmt.Errorf("%w: the stream closed (%d) before an answer", errCallFailed, code)
	case code != websocket.StatusNormalClosure && code != -1 && code != websocket.StatusNoStatusRcvd:
		return fmt.Errorf("%w: ended with close code %d", errCallFailed, code)
	}
	fmt.Fprintf(out, "call done after %.1f s\n", time.Since(answered).Seconds())
	return nil
}
