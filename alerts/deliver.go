package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"trunkgate/internal/signature"
)

// Payload is the body of an alert webhook.
type Payload struct {
	ID      int64     `json:"id"`
	KeyID   string    `json:"key_id"`
	Rule    string    `json:"rule"`
	Period  string    `json:"period"`
	FiredAt time.Time `json:"fired_at"`
	Action  string    `json:"action"`
	Detail  string    `json:"detail"`
}

// Webhook headers. The signature is hex HMAC-SHA256 with the key's
// signing secret over the URL, the timestamp and the body, joined by
// newlines (the WebSocket handshake's scheme, with the body).
const (
	HeaderTimestamp = "X-Trunkgate-Timestamp"
	HeaderSignature = "X-Trunkgate-Signature"
)

// Sign is the signature of one webhook (the receiver recomputes it).
func Sign(secret, url, timestamp string, body []byte) string {
	return signature.Sign(secret, []byte(url), []byte(timestamp), body)
}

// goDeliver posts the alert on its own goroutine until it is taken (2xx),
// the retries run out, or the engine stops (it stays pending, and the
// next run resumes it).
func (e *Engine) goDeliver(ctx context.Context, a Alert, secret string) {
	e.deliveries.Add(1)
	go func() {
		defer e.deliveries.Done()
		e.deliver(ctx, a, secret)
	}()
}

func (e *Engine) deliver(ctx context.Context, a Alert, secret string) {
	body, err := json.Marshal(Payload{ID: a.ID, KeyID: a.KeyID, Rule: a.Rule, Period: a.Period, FiredAt: a.FiredAt,
		Action: a.Action, Detail: a.Detail})
	if err != nil {
		return
	}
	for {
		err := e.post(ctx, a.URL, body, secret)
		if ctx.Err() != nil {
			return
		}
		a.Attempts++
		switch {
		case err == nil:
			a.Delivery, a.LastError, a.DeliveredAt = DeliveryDelivered, "", e.now().UTC()
		case a.Attempts > len(e.cfg.Retry):
			a.Delivery, a.LastError = DeliveryFailed, err.Error()
			e.log.Warn("alert webhook failed", "alert_id", a.ID, "key_id", a.KeyID, "attempts", a.Attempts, "error", err)
		default:
			a.LastError = err.Error()
		}
		// A fresh context: the outcome is written even as the engine stops.
		if err := e.cfg.Store.UpdateDelivery(context.WithoutCancel(ctx), &a); err != nil {
			e.log.Error("alerts: update delivery", "alert_id", a.ID, "error", err)
		}
		if a.Delivery != DeliveryPending {
			return
		}
		wait := time.NewTimer(e.cfg.Retry[a.Attempts-1])
		select {
		case <-ctx.Done():
			wait.Stop()
			return
		case <-wait.C:
		}
	}
}

func (e *Engine) post(ctx context.Context, url string, body []byte, secret string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	ts := strconv.FormatInt(e.now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "trunkgate-alerts")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(secret, url, ts, body))
	res, err := e.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("HTTP %d", res.StatusCode)
	}
	return nil
}
