package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"trunkgate/internal/sqldb"
	"trunkgate/keys"
	"trunkgate/trunks"
)

// demoInfo is what --demo seeded.
type demoInfo struct {
	number  string
	keyID   string
	keyText string // a test key: safe to print, kept beside the database
	trunkID string
	secret  string
}

// secretFor lets the demo app check the edge's signature on its calls.
func (d *demoInfo) secretFor(*http.Request) string { return d.secret }

const demoKeyName = "demo"

// seedDemo makes (once) a test key and an inbound trunk for number pointed
// at the built-in echo app, open to loopback callers. The key's text is
// kept in keyFile, so that every start can print it: it is a test key,
// which reaches only the sandbox carrier and is rated at zero.
func seedDemo(ctx context.Context, e *edge, number, echoURL, keyFile string, log *slog.Logger) (*demoInfo, error) {
	by := keys.Actor{KeyID: keys.ActorSystem}
	if t, ok := e.trunks.ByNumber(number); ok {
		k, err := e.manager.Get(ctx, t.KeyID)
		if err != nil {
			return nil, fmt.Errorf("%w: demo trunk's key: %w", errDemo, err)
		}
		if t.AIURL != echoURL {
			// The HTTP address changed since the demo was seeded: re-point it.
			if err := e.trunks.Delete(ctx, t.ID); err != nil {
				return nil, fmt.Errorf("%w: %w", errDemo, err)
			}
		} else {
			text, err := demoKeyText(ctx, e, k, keyFile)
			if err != nil {
				return nil, err
			}
			return &demoInfo{number: number, keyID: k.ID, keyText: text, trunkID: t.ID, secret: k.SigningSecret}, nil
		}
	}
	var key *keys.Key
	all, err := e.manager.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, k := range all {
		if k.Name == demoKeyName && k.Status == keys.Active {
			key = k
		}
	}
	var text string
	if key == nil {
		limits := keys.DefaultLimits()
		c, err := e.manager.Create(ctx, by, keys.CreateSpec{Name: demoKeyName, Mode: keys.Test, Limits: &limits,
			Scopes: []string{string(keys.ScopeCallsInbound), string(keys.ScopeCallsOutbound), string(keys.ScopeUsageRead)}})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errDemo, err)
		}
		key, text = c.Key, c.Text
		if err := os.WriteFile(keyFile, []byte(text+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("%w: %w", errDemo, err)
		}
		log.Info("demo key created", "key_id", key.ID, "text_in", keyFile)
	} else if text, err = demoKeyText(ctx, e, key, keyFile); err != nil {
		return nil, err
	}
	t, err := e.trunks.Create(ctx, trunks.Spec{KeyID: key.ID, Name: "demo echo", Numbers: []string{number},
		AIURL: echoURL, AllowedSources: []string{"127.0.0.0/8", "::1/128"},
		Params: map[string]string{"demo": "echo"}})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errDemo, err)
	}
	log.Info("demo trunk created", "trunk_id", t.ID, "number", number)
	return &demoInfo{number: number, keyID: key.ID, keyText: text, trunkID: t.ID, secret: key.SigningSecret}, nil
}

// demoKeyText reads the demo key's text from keyFile; when the file is
// gone or holds another key, it rotates the demo key (no grace: nobody
// else can hold its old text) and keeps the new text.
func demoKeyText(ctx context.Context, e *edge, k *keys.Key, keyFile string) (string, error) {
	if b, err := os.ReadFile(keyFile); err == nil {
		text := strings.TrimSpace(string(b))
		if _, err := e.manager.Authenticate(ctx, text); err == nil {
			if p, _ := keys.Parse(text); p.ID == k.ID {
				return text, nil
			}
		}
	}
	c, err := e.manager.Rotate(ctx, keys.Actor{KeyID: keys.ActorSystem}, k.ID, 0)
	if err != nil {
		return "", fmt.Errorf("%w: a new text for the demo key: %w", errDemo, err)
	}
	if err := os.WriteFile(keyFile, []byte(c.Text+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("%w: %w", errDemo, err)
	}
	return c.Text, nil
}

func printBanner(w io.Writer, sipHostPort, httpURL string, c serveConfig, demo *demoInfo) {
	fmt.Fprintf(w, "\ntrunkgate is up\n  SIP   %s (UDP and TCP)\n  HTTP  %s  (REST /v1/, /metrics, /healthz)\n  RTP   ports %s\n  DB    %s\n",
		sipHostPort, httpURL, c.rtpPorts, sqldb.Redact(c.dbPath))
	if demo == nil {
		fmt.Fprintln(w)
		return
	}
	dir := filepath.Join("testdata", "sipp")
	fmt.Fprintf(w, `
Demo test key (reaches only the built-in sandbox carrier, rated at zero):

  export TRUNKGATE_API_KEY=%[7]s

  Place an outbound call from the terminal (+15005550006 answers and echoes):
    ./bin/trunkgate call --server %[8]s --to +15005550006
  or open the stream as an AI app does (README: "Your first outbound call"):
    %[9]s/v1/calls/stream?to=%%2B15005550006   with  Authorization: Bearer $TRUNKGATE_API_KEY

Demo: %[1]s rings the built-in echo app (key %[2]s, test mode; trunk %[3]s).

  Call it with SIPp: it plays a G.711 sample and presses 5; the echo app
  sends the audio back (run "make call" to see that RTP and the CDR):
    sipp %[4]s -sf %[5]s/uac_demo.xml -s %[1]s -m 1 -i 127.0.0.1 -mi 127.0.0.1 -mp 16000 -d 5000

  Call it with baresip: it sends a 440 Hz tone and records the echo it
  hears into data/baresip/dump-*-dec.wav:
    mkdir -p data/baresip && baresip -f testdata/baresip -e "/dial sip:%[1]s@%[4]s" -t 8

  Then see the call's record:
    ./bin/trunkgate cdrs --db %[6]s

`, demo.number, demo.keyID, demo.trunkID, sipHostPort, dir, sqldb.Redact(c.dbPath), demo.keyText, httpURL, "ws"+strings.TrimPrefix(httpURL, "http"))
}
