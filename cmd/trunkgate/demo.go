package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"

	"trunkgate/keys"
	"trunkgate/trunks"
)

// demoInfo is what --demo seeded.
type demoInfo struct {
	number  string
	keyID   string
	trunkID string
	secret  string
}

// secretFor lets the demo app check the edge's signature on its calls.
func (d *demoInfo) secretFor(*http.Request) string { return d.secret }

const demoKeyName = "demo"

// seedDemo makes (once) a test key and an inbound trunk for number pointed
// at the built-in echo app, open to loopback callers.
func seedDemo(ctx context.Context, e *edge, number, echoURL string, log *slog.Logger) (*demoInfo, error) {
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
			return &demoInfo{number: number, keyID: k.ID, trunkID: t.ID, secret: k.SigningSecret}, nil
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
	if key == nil {
		limits := keys.DefaultLimits()
		c, err := e.manager.Create(ctx, by, keys.CreateSpec{Name: demoKeyName, Mode: keys.Test, Limits: &limits,
			Scopes: []string{string(keys.ScopeCallsInbound), string(keys.ScopeCallsOutbound), string(keys.ScopeUsageRead)}})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errDemo, err)
		}
		key = c.Key
		log.Info("demo key created", "key_id", key.ID)
	}
	t, err := e.trunks.Create(ctx, trunks.Spec{KeyID: key.ID, Name: "demo echo", Numbers: []string{number},
		AIURL: echoURL, AllowedSources: []string{"127.0.0.0/8", "::1/128"},
		Params: map[string]string{"demo": "echo"}})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errDemo, err)
	}
	log.Info("demo trunk created", "trunk_id", t.ID, "number", number)
	return &demoInfo{number: number, keyID: key.ID, trunkID: t.ID, secret: key.SigningSecret}, nil
}

func printBanner(w io.Writer, sipHostPort, httpURL string, c serveConfig, demo *demoInfo) {
	fmt.Fprintf(w, "\ntrunkgate is up\n  SIP   %s (UDP and TCP)\n  HTTP  %s  (REST /v1/, /metrics, /healthz)\n  RTP   ports %s\n  DB    %s\n",
		sipHostPort, httpURL, c.rtpPorts, c.dbPath)
	if demo == nil {
		fmt.Fprintln(w)
		return
	}
	dir := filepath.Join("testdata", "sipp")
	fmt.Fprintf(w, `
Demo: %[1]s rings the built-in echo app (key %[2]s, test mode; trunk %[3]s).

  Call it with SIPp: it plays a G.711 sample and presses 5; the echo app
  sends the audio back (run "make call" to see that RTP and the CDR):
    sipp %[4]s -sf %[5]s/uac_demo.xml -s %[1]s -m 1 -i 127.0.0.1 -mi 127.0.0.1 -mp 16000 -d 5000

  Call it with baresip: it sends a 440 Hz tone and records the echo it
  hears into data/baresip/dump-*-dec.wav:
    mkdir -p data/baresip && baresip -f testdata/baresip -e "/dial sip:%[1]s@%[4]s" -t 8

  Then see the call's record:
    ./bin/trunkgate cdrs --db %[6]s

`, demo.number, demo.keyID, demo.trunkID, sipHostPort, dir, c.dbPath)
}
