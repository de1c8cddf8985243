package alerts

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"trunkgate/billing"
	"trunkgate/internal/sqldb/sqldbtest"
	"trunkgate/keys"
	"trunkgate/refusal"
)

type fakeKeys struct {
	mu   sync.Mutex
	keys map[string]*keys.Key
	susp map[string]string
}

func (f *fakeKeys) Cached() []*keys.Key {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*keys.Key
	for _, k := range f.keys {
		out = append(out, k)
	}
	return out
}

func (f *fakeKeys) Key(_ context.Context, id string) (*keys.Key, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if k, ok := f.keys[id]; ok {
		return k, nil
	}
	return nil, keys.ErrNotFound
}

func (f *fakeKeys) Suspend(_ context.Context, _ keys.Actor, id, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.susp[id] = reason
	return nil
}

type fakeSpend map[string]int64

func (f fakeSpend) Spend(id string, _ int64) billing.Spend { return billing.Spend{MonthToDate: f[id]} }

type fakeLive map[string]int

func (f fakeLive) Counts() map[string]int { return f }

type fakeAudit struct {
	mu      sync.Mutex
	entries []keys.AuditEntry
}

func (f *fakeAudit) Record(e keys.AuditEntry) {
	f.mu.Lock()
	f.entries = append(f.entries, e)
	f.mu.Unlock()
}

// receiver is a key's alert endpoint: it checks each signature and can
// fail the first deliveries.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string
	mu     sync.Mutex
	got    []Payload
	fails  int // answer 503 to this many first posts
	posts  int
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{t: t, secret: secret}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if Sign(r.secret, r.srv.URL+"/alerts", req.Header.Get(HeaderTimestamp), body) != req.Header.Get(HeaderSignature) {
			t.Errorf("bad signature on %s", body)
			w.WriteHeader(401)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.posts++
		if r.posts <= r.fails {
			w.WriteHeader(503)
			return
		}
		var p Payload
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("payload %s: %v", body, err)
		}
		r.got = append(r.got, p)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// rules lists what was delivered, sorted (deliveries run side by side).
func (r *receiver) rules() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, p := range r.got {
		out = append(out, p.Rule+" "+p.Period)
	}
	sort.Strings(out)
	return out
}

type harness struct {
	e      *Engine
	keys   *fakeKeys
	spend  fakeSpend
	live   fakeLive
	audit  *fakeAudit
	store  *SQLStore
	cdrs   *billing.SQLStore
	now    time.Time
	recv   *receiver
	ctx    context.Context
	cancel context.CancelFunc
}

const secret = "sekrit"

func newHarness(t *testing.T, cfg keys.AlertConfig) *harness {
	db := sqldbtest.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	store, err := NewSQLStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	cdrs, err := billing.NewSQLStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{keys: &fakeKeys{keys: map[string]*keys.Key{}, susp: map[string]string{}}, spend: fakeSpend{}, live: fakeLive{},
		audit: &fakeAudit{}, store: store, cdrs: cdrs, now: time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC), ctx: ctx, cancel: cancel}
	h.recv = newReceiver(t, secret)
	cfg.URL = h.recv.srv.URL + "/alerts"
	h.keys.keys["key1"] = &keys.Key{ID: "key1", Status: keys.Active, SigningSecret: secret, Alerts: cfg,
		Limits: keys.Limits{MonthlySpendCap: 1_000_000}}
	h.e = New(Config{Store: store, Keys: h.keys, Suspender: h.keys, Spend: h.spend, Live: h.live, Usage: cdrs, Audit: h.audit,
		Log: slog.New(slog.DiscardHandler), Retry: []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}})
	h.e.now = func() time.Time { return h.now }
	t.Cleanup(func() { cancel(); h.e.deliveries.Wait() })
	return h
}

// history stores n outbound calls of key1 to number over the last week.
func (h *harness) history(t *testing.T, n int, number, country string) {
	for i := range n {
		start := h.now.Add(-time.Duration(i+1) * time.Hour)
		c := billing.CDR{CallID: fmt.Sprintf("CA%s%d", country, i), KeyID: "key1", Direction: "outbound", To: number, Country: country,
			SetupMS: start.UnixMilli(), AnswerMS: start.UnixMilli(), RatePerMinute: 60}
		c.Close(start.Add(time.Minute))
		if err := h.cdrs.FinishCDR(h.ctx, &c); err != nil {
			t.Fatal(err)
		}
	}
	h.e.refreshHistory(h.ctx)
}

func (h *harness) settle() []string {
	h.e.deliveries.Wait()
	return h.recv.rules()
}

func TestSpendThresholdsOncePerMonth(t *testing.T) {
	h := newHarness(t, keys.AlertConfig{})
	h.spend["key1"] = 799_999
	h.e.check(h.ctx)
	if got := h.settle(); len(got) != 0 {
		t.Fatalf("under 80%%: %v", got)
	}
	h.spend["key1"] = 850_000
	h.e.check(h.ctx)
	h.e.check(h.ctx)
	if got := h.settle(); fmt.Sprint(got) != "[spend 2026-11/80%]" {
		t.Fatalf("at 85%%: %v", got)
	}
	h.spend["key1"] = 1_000_000
	h.e.check(h.ctx)
	if got := h.settle(); fmt.Sprint(got) != "[spend 2026-11/100% spend 2026-11/80%]" {
		t.Fatalf("at the cap: %v", got)
	}
	// A restart does not fire them again this month; December does.
	again := New(h.e.cfg)
	again.now = h.e.now
	again.check(h.ctx)
	h.now = time.Date(2026, 12, 1, 0, 0, 1, 0, time.UTC)
	again.check(h.ctx)
	again.deliveries.Wait()
	if got := h.recv.rules(); fmt.Sprint(got) != "[spend 2026-11/100% spend 2026-11/80% spend 2026-12/100% spend 2026-12/80%]" {
		t.Fatalf("after a restart and into December: %v", got)
	}
	if len(h.audit.entries) != 4 || h.audit.entries[0].Action != "alert.spend" || h.audit.entries[0].Target != "key1" ||
		h.audit.entries[0].Outcome != "notify" {
		t.Fatalf("audit %+v", h.audit.entries)
	}
}

func TestAnomalies(t *testing.T) {
	h := newHarness(t, keys.AlertConfig{RateFloor: 4, ConcurrencyFloor: 3})
	h.history(t, 168, "+442071234567", "+44") // one call an hour for a week: 0.17 per 10 minutes
	if b := h.e.baselines["key1"]; b.callsPer10Min < 0.16 || b.callsPer10Min > 0.17 || b.concurrency < 0.016 || b.concurrency > 0.017 {
		t.Fatalf("baseline %+v", b)
	}
	// A known country: no alert. Three calls in ten minutes: no spike yet.
	for range 3 {
		h.e.observe(h.ctx, attempt{at: h.now, keyID: "key1", direction: "outbound", destination: "+442071234567"})
		h.now = h.now.Add(time.Minute)
	}
	if got := h.settle(); len(got) != 0 {
		t.Fatalf("ordinary calls alerted: %v", got)
	}
	// The fourth in ten minutes is a spike; the fifth is the same hour's.
	h.e.observe(h.ctx, attempt{at: h.now, keyID: "key1", direction: "outbound", destination: "+442071234567"})
	h.e.observe(h.ctx, attempt{at: h.now, keyID: "key1", direction: "outbound", destination: "+442071234567"})
	// A first call to Cuba, refused for its prefix: new destination and
	// blocked destination, once each.
	for range 2 {
		h.e.observe(h.ctx, attempt{at: h.now, keyID: "key1", direction: "outbound", destination: "+5371234567", refused: refusal.DestinationBlocked})
	}
	// Live calls: 3 is the floor.
	h.live["key1"] = 3
	h.e.check(h.ctx)
	h.e.check(h.ctx)
	want := "[blocked_destination 2026-11-24T03 call_rate_spike 2026-11-24T03 concurrency_spike 2026-11-24T03 new_destination +53]"
	if got := h.settle(); fmt.Sprint(got) != want {
		t.Fatalf("alerts %v, want %s", got, want)
	}
	// Calls spread out again: the window empties.
	h.now = h.now.Add(11 * time.Minute)
	if n := h.e.recent["key1"].total(h.now); n != 0 {
		t.Fatalf("window after 11 quiet minutes: %d", n)
	}
}

func TestRetryAndSuspend(t *testing.T) {
	h := newHarness(t, keys.AlertConfig{Actions: map[string]string{keys.RuleBlockedDestination: keys.ActionSuspend,
		keys.RuleNewDestination: keys.ActionOff}})
	h.recv.fails = 2 // two 503s, then taken
	h.e.observe(h.ctx, attempt{at: h.now, keyID: "key1", direction: "outbound", destination: "+8821234", refused: refusal.DestinationBlocked})
	if got := h.settle(); fmt.Sprint(got) != "[blocked_destination 2026-11-24T03]" {
		t.Fatalf("alerts %v", got)
	}
	list, err := h.store.List(h.ctx, Filter{KeyID: "key1"})
	if err != nil || len(list) != 1 || list[0].Delivery != DeliveryDelivered || list[0].Attempts != 3 || list[0].Action != keys.ActionSuspend {
		t.Fatalf("stored %+v, %v", list, err)
	}
	if h.keys.susp["key1"] == "" {
		t.Fatal("the suspend action did not suspend the key")
	}
	// A receiver that never answers 2xx: three attempts, then failed.
	h.recv.fails = 1000
	h.keys.keys["key1"].Alerts.Actions[keys.RuleBlockedDestination] = keys.ActionNotify
	h.now = h.now.Add(time.Hour)
	h.e.observe(h.ctx, attempt{at: h.now, keyID: "key1", direction: "outbound", destination: "+8821234", refused: refusal.DestinationBlocked})
	h.settle()
	list, _ = h.store.List(h.ctx, Filter{KeyID: "key1"})
	if list[0].Delivery != DeliveryFailed || list[0].Attempts != 3 || list[0].LastError != "HTTP 503" {
		t.Fatalf("stored %+v", list[0])
	}
}

func TestAttemptNeverBlocks(t *testing.T) {
	h := newHarness(t, keys.AlertConfig{})
	start := time.Now()
	for range 10_000 { // nobody reads: the queue fills, the rest is dropped
		h.e.Attempt("key1", "inbound", "+15550100", 0)
	}
	if d := time.Since(start); d > time.Second || h.e.dropped.Load() != 10_000-4096 {
		t.Fatalf("10000 attempts took %v, %d dropped", d, h.e.dropped.Load())
	}
}

func TestMain(m *testing.M) { sqldbtest.Main(m) }
