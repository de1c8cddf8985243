package trunks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"trunkgate/internal/sqldb/sqldbtest"
)

func TestParseGateway(t *testing.T) {
	tests := []struct {
		in        string
		uri       string
		prio, wgt int
		ok        bool
	}{
		{"sip:gw.example", "sip:gw.example:5060;transport=udp", 1, 10, true},
		{"sip:10.0.0.1:5080;transport=tcp;priority=2;weight=30", "sip:10.0.0.1:5080;transport=tcp", 2, 30, true},
		{" sip:10.0.0.1;TRANSPORT=UDP ", "sip:10.0.0.1:5060;transport=udp", 1, 10, true},
		{"sip:[2001:db8::1]:5062", "sip:[2001:db8::1]:5062;transport=udp", 1, 10, true},
		{"sip:[2001:db8::1]", "sip:[2001:db8::1]:5060;transport=udp", 1, 10, true},
		{"sip:::::", "", 0, 0, false},
		{"sip:-gw.example", "", 0, 0, false},
		{"sip:gw.example;weight=0", "sip:gw.example:5060;transport=udp", 1, 0, true},
		{"gw.example", "", 0, 0, false},
		{"sips:gw.example", "sip:gw.example:5061;transport=tls", 1, 10, true},
		{"sips:gw.example;transport=tcp", "", 0, 0, false},
		{"sip:user@gw.example", "", 0, 0, false},
		{"sip:gw.example:0", "", 0, 0, false},
		{"sip:gw.example:70000", "", 0, 0, false},
		{"sip:gw.example;transport=tls", "sip:gw.example:5061;transport=tls", 1, 10, true},
		{"sip:10.0.0.1:5071;transport=TLS", "sip:10.0.0.1:5071;transport=tls", 1, 10, true},
		{"sip:gw.example;transport=sctp", "", 0, 0, false},
		{"sip:gw.example;priority=-1", "", 0, 0, false},
		{"sip:gw.example;lr", "", 0, 0, false},
		{"sip:", "", 0, 0, false},
		{"sip:gw example", "", 0, 0, false},
		{"sip:gw\r\nVia: x", "", 0, 0, false},
	}
	for _, tt := range tests {
		g, err := ParseGateway(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseGateway(%q) error %v, want ok %v", tt.in, err, tt.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseGateway(%q): %v is not ErrInvalid", tt.in, err)
			}
			continue
		}
		if g.URI != tt.uri || g.Priority != tt.prio || g.Weight != tt.wgt {
			t.Errorf("ParseGateway(%q) = %+v", tt.in, g)
		}
	}
}

func outboundSpec() Spec {
	return Spec{KeyID: "AAAAAAAAAAAA", Direction: Outbound, Gateways: []GatewaySpec{{URI: "sip:gw1.example"}},
		CallerID: "+15550100"}
}

func TestOutboundSpecValidation(t *testing.T) {
	prio := 3
	tests := []struct {
		name   string
		mutate func(*Spec)
		ok     bool
	}{
		{"valid", func(*Spec) {}, true},
		{"priority by field", func(s *Spec) { s.Gateways[0].Priority = &prio }, true},
		{"no gateways", func(s *Spec) { s.Gateways = nil }, false},
		{"same gateway twice", func(s *Spec) { s.Gateways = append(s.Gateways, GatewaySpec{URI: "sip:gw1.example:5060"}) }, false},
		{"numbers on an outbound trunk", func(s *Spec) { s.Numbers = []string{"+15550100"} }, false},
		{"ai_url on an outbound trunk", func(s *Spec) { s.AIURL = "ws://a/b" }, false},
		{"auth", func(s *Spec) { s.AuthUsername, s.AuthPassword = "acme", "secret" }, true},
		{"auth user only", func(s *Spec) { s.AuthUsername = "acme" }, false},
		{"auth password with a quote", func(s *Spec) { s.AuthUsername, s.AuthPassword = "acme", `a"b` }, false},
		{"caller id not a number", func(s *Spec) { s.CallerID = "acme" }, false},
		{"no caller id (the app's own)", func(s *Spec) { s.CallerID = "" }, true},
		{"channels", func(s *Spec) { s.MaxChannels = 5 }, true},
		{"negative channels", func(s *Spec) { s.MaxChannels = -1 }, false},
		{"header", func(s *Spec) { s.Headers = map[string]string{"X-Account": "acme 7"} }, true},
		{"header injection", func(s *Spec) { s.Headers = map[string]string{"X-A": "b\r\nVia: x"} }, false},
		{"header the edge writes", func(s *Spec) { s.Headers = map[string]string{"Via": "x"} }, false},
		{"header name not a token", func(s *Spec) { s.Headers = map[string]string{"X A": "x"} }, false},
		{"header too long", func(s *Spec) { s.Headers = map[string]string{"X-A": string(make([]byte, 300))} }, false},
		{"ring timeout", func(s *Spec) { s.RingTimeoutSeconds = 45 }, true},
		{"ring timeout too long", func(s *Spec) { s.RingTimeoutSeconds = 3600 }, false},
		{"unknown direction", func(s *Spec) { s.Direction = "sideways" }, false},
	}
	for _, tt := range tests {
		s := outboundSpec()
		tt.mutate(&s)
		tr, err := s.build(time.Now())
		if (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if err == nil && tt.name == "priority by field" && tr.Gateways[0].Priority != 3 {
			t.Errorf("priority %d", tr.Gateways[0].Priority)
		}
	}
	// Outbound settings on an inbound trunk are refused, not ignored.
	in := validSpec()
	in.Gateways = []GatewaySpec{{URI: "sip:gw1.example"}}
	if _, err := in.build(time.Now()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("gateways on an inbound trunk: %v", err)
	}
}

// TestOutboundDirectory: outbound trunks round-trip through the store,
// the key's oldest is its default, a trunk id must be the key's, and the
// key's numbers are its inbound trunks' numbers.
func TestOutboundDirectory(t *testing.T) {
	ctx := context.Background()
	store, err := NewSQLStore(ctx, openDB(t))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := NewDirectory(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec := outboundSpec()
	spec.AuthUsername, spec.AuthPassword = "acme", "secret-1"
	spec.Headers = map[string]string{"X-Account": "acme"}
	first, err := dir.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	dir.now = func() time.Time { return time.Now().UTC().Add(time.Minute) }
	second, err := dir.Create(ctx, outboundSpec())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dir.Create(ctx, validSpec()); err != nil {
		t.Fatal(err)
	}
	again, err := NewDirectory(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := again.Outbound("AAAAAAAAAAAA", "")
	if !ok || got.ID != first.ID || got.AuthPassword != "secret-1" || got.Headers["X-Account"] != "acme" ||
		len(got.Gateways) != 1 || got.Gateways[0].URI != "sip:gw1.example:5060;transport=udp" || got.CallerID != "+15550100" {
		t.Fatalf("default outbound trunk %+v", got)
	}
	if got, ok := again.Outbound("AAAAAAAAAAAA", second.ID); !ok || got.ID != second.ID {
		t.Fatalf("by id: %+v %v", got, ok)
	}
	if _, ok := again.Outbound("BBBBBBBBBBBB", second.ID); ok {
		t.Fatal("another key's trunk by id")
	}
	if n := again.Numbers("AAAAAAAAAAAA"); fmt.Sprint(n) != "[+15550100]" {
		t.Fatalf("numbers %v", n)
	}
	if _, ok := again.ByNumber("+15550100"); !ok {
		t.Fatal("inbound trunk lost")
	}
}

// TestOrder: lower priority first; at equal priority, weight decides how
// often a gateway comes first; weight 0 comes last.
func TestOrder(t *testing.T) {
	gws := []Gateway{
		{URI: "a", Priority: 1, Weight: 30}, {URI: "b", Priority: 1, Weight: 10}, {URI: "z", Priority: 1, Weight: 0},
		{URI: "c", Priority: 2, Weight: 10}, {URI: "p0", Priority: 0, Weight: 1},
	}
	r := rand.New(rand.NewPCG(1, 2))
	firsts := map[string]int{}
	for range 4000 {
		o := Order(gws, r)
		if o[0].URI != "p0" || o[3].URI != "z" || o[4].URI != "c" {
			t.Fatalf("order %v", o)
		}
		firsts[o[1].URI]++
	}
	// a has 3/4 of the weight of priority 1.
	if share := float64(firsts["a"]) / 4000; share < 0.72 || share > 0.78 {
		t.Fatalf("a first in %.2f of orders, want 0.75 (%v)", share, firsts)
	}
}

func TestHealth(t *testing.T) {
	h := NewHealth(3, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a, b := Gateway{URI: "a"}, Gateway{URI: "b"}
	h.Failed(a)
	h.Failed(a)
	if !h.Up(a) {
		t.Fatal("down after 2 failures")
	}
	h.Succeeded(a) // a success resets the count
	h.Failed(a)
	h.Failed(a)
	if !h.Up(a) {
		t.Fatal("down after a success and 2 failures")
	}
	h.Failed(a)
	if h.Up(a) {
		t.Fatal("up after 3 failures in a row")
	}
	if got := h.Arrange([]Gateway{a, b}); got[0].URI != "b" || got[1].URI != "a" {
		t.Fatalf("arranged %v", got)
	}
	// The prober brings it back once it answers anything but 408/5xx.
	p := &fakePinger{codes: []int{503, 408, 404}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.Probe(ctx, p, time.Millisecond); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for !h.Up(a) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if !h.Up(a) || p.pings() != 3 {
		t.Fatalf("up %v after %d pings", h.Up(a), p.pings())
	}
}

type fakePinger struct {
	codes []int
	n     int
}

func (p *fakePinger) Ping(context.Context, Gateway) (int, error) {
	if p.n >= len(p.codes) {
		return 0, errors.New("no more answers")
	}
	p.n++
	return p.codes[p.n-1], nil
}

func (p *fakePinger) pings() int { return p.n }

// FuzzParseGateway: operator input never panics, and what parses
// normalises to itself.
func FuzzParseGateway(f *testing.F) {
	for _, s := range []string{"sip:gw.example", "sip:10.0.0.1:5080;transport=tcp;priority=2;weight=30", "sip:[::1]:1;weight=0",
		"sip:a;b;c=;=d", "sip:\x00", "sip::::", "sip:::0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseGateway(s)
		if err != nil {
			return
		}
		again, err := ParseGateway(g.URI)
		if err != nil || again.URI != g.URI || again.Host != g.Host || again.Port != g.Port {
			t.Fatalf("%q → %q does not parse back to itself: %+v, %v", s, g.URI, again, err)
		}
	})
}

func TestMain(m *testing.M) { sqldbtest.Main(m) }
