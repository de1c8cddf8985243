package trunks

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// Health tracks which gateways answer. A gateway that fails
// (DownAfter) calls in a row is marked down: dialling tries it only after
// every gateway that is up, and Probe asks it with OPTIONS until it
// answers, which brings it back. A call it carries also brings it back.
// It knows nothing of SIP: the prober is given a Pinger.
type Health struct {
	downAfter int
	log       *slog.Logger

	mu       sync.Mutex
	gateways map[string]*gatewayState // by Gateway.URI
}

type gatewayState struct {
	gw       Gateway
	failures int // in a row
	down     bool
	since    time.Time
}

// GatewayStatus is one gateway's health, for operators.
type GatewayStatus struct {
	URI      string    `json:"uri"`
	Up       bool      `json:"up"`
	Failures int       `json:"failures_in_a_row"`
	Since    time.Time `json:"since,omitzero"`
}

// NewHealth marks a gateway down after downAfter failures in a row (3 by
// DESIGN).
func NewHealth(downAfter int, log *slog.Logger) *Health {
	if downAfter < 1 {
		downAfter = 3
	}
	if log == nil {
		log = slog.Default()
	}
	return &Health{downAfter: downAfter, log: log, gateways: map[string]*gatewayState{}}
}

func (h *Health) state(g Gateway) *gatewayState {
	st, ok := h.gateways[g.URI]
	if !ok {
		st = &gatewayState{gw: g}
		h.gateways[g.URI] = st
	}
	return st
}

// Failed records a failure of g (timeout, 408, 5xx, transport error).
func (h *Health) Failed(g Gateway) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.state(g)
	st.failures++
	if !st.down && st.failures >= h.downAfter {
		st.down, st.since = true, time.Now()
		h.log.Warn("gateway marked down", "gateway", g.URI, "failures", st.failures)
	}
}

// Succeeded records that g answered; a down gateway is up again.
func (h *Health) Succeeded(g Gateway) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.state(g)
	if st.down {
		h.log.Info("gateway up again", "gateway", g.URI)
		st.since = time.Now()
	}
	st.failures, st.down = 0, false
}

// Up reports whether g is not marked down.
func (h *Health) Up(g Gateway) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	st, ok := h.gateways[g.URI]
	return !ok || !st.down
}

// Arrange moves the down gateways of an ordered list behind the up ones,
// keeping each group's order: a down gateway is tried only as a last
// resort.
func (h *Health) Arrange(order []Gateway) []Gateway {
	out := make([]Gateway, 0, len(order))
	var down []Gateway
	for _, g := range order {
		if h.Up(g) {
			out = append(out, g)
		} else {
			down = append(down, g)
		}
	}
	return append(out, down...)
}

// Status lists the gateways the health tracker has seen, by URI.
func (h *Health) Status() []GatewayStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]GatewayStatus, 0, len(h.gateways))
	for uri, st := range h.gateways {
		out = append(out, GatewayStatus{URI: uri, Up: !st.down, Failures: st.failures, Since: st.since})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].URI < out[j].URI })
	return out
}

// Pinger asks a gateway whether it is there (SIP OPTIONS). It reports the
// response code, or an error when nothing answered.
type Pinger interface {
	Ping(ctx context.Context, g Gateway) (code int, err error)
}

// Probe pings every down gateway each interval until ctx ends. Any answer
// but 408 or 5xx means the gateway is back.
func (h *Health) Probe(ctx context.Context, p Pinger, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.mu.Lock()
		var down []Gateway
		for _, st := range h.gateways {
			if st.down {
				down = append(down, st.gw)
			}
		}
		h.mu.Unlock()
		for _, g := range down {
			pctx, cancel := context.WithTimeout(ctx, min(interval, 5*time.Second))
			code, err := p.Ping(pctx, g)
			cancel()
			if err == nil && code != 408 && code < 500 {
				h.Succeeded(g)
			} else {
				h.log.Debug("gateway still down", "gateway", g.URI, "code", code, "error", err)
			}
		}
	}
}
