package e2e

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"trunkgate/alerts"
	"trunkgate/keys"
)

// hookReceiver is a key's alert endpoint: every POST must carry a valid
// signature; the first fail posts are answered 503.
type hookReceiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string
	mu     sync.Mutex
	fail   int
	posts  int
	got    []alerts.Payload
}

func newHookReceiver(t *testing.T, fail int) *hookReceiver {
	h := &hookReceiver{t: t, fail: fail}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.posts++
		if want := alerts.Sign(h.secret, h.srv.URL+r.URL.RequestURI(), r.Header.Get(alerts.HeaderTimestamp), body); want != r.Header.Get(alerts.HeaderSignature) {
			t.Errorf("alert webhook with a bad signature: %s", body)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if h.posts <= h.fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var p alerts.Payload
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("alert webhook body %s: %v", body, err)
		}
		h.got = append(h.got, p)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) url() string { return h.srv.URL + "/hooks/alerts" }

// rules is what was delivered, as "rule period", sorted.
func (h *hookReceiver) rules() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, p := range h.got {
		out = append(out, p.Rule+" "+p.Period)
	}
	sort.Strings(out)
	return out
}

func (h *hookReceiver) waitFor(t *testing.T, n int) []string {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d alert webhooks", n), func() bool { return len(h.rules()) >= n })
	return h.rules()
}

// keyView is GET /v1/keys/{id} as a test reads it.
type keyView struct {
	ChannelsInUse int    `json:"channels_in_use"`
	Suspended     string `json:"suspended"`
	Spend         struct {
		MonthToDate int64  `json:"month_to_date_micros"`
		Live        int64  `json:"live_cost_micros"`
		Remaining   *int64 `json:"remaining_micros"`
	} `json:"spend"`
}

// TestSpendCapTwoLiveCalls: a key whose cap pays for 10.5 seconds of
// talk, two calls up at once: both are hung up together as the cap is
// reached, the total never passes the cap, a third call is refused 402
// before it rings, and all the while the ledger, the calls list, the key's
// channels and the metric agree. The key's spend thresholds (50 %, 90 %)
// each reach its webhook once, signed.
func TestSpendCapTwoLiveCalls(t *testing.T) {
	e := StartEdge(t, "--alert-check-interval", "200ms")
	app := StartApp(t)
	hooks := newHookReceiver(t, 0)
	const unit = 1_000_000 // a second of talk at 60 units a minute
	k := e.NewKey("capped", keys.Limits{RatePerMinute: 60 * unit, MonthlySpendCap: 10*unit + unit/2})
	hooks.secret = k.SigningSecret
	e.MustAPI(200, "PUT", "/v1/keys/"+k.Key.ID+"/alerts", keys.AlertConfig{URL: hooks.url(), SpendThresholds: []int{50, 90}}, nil)
	e.NewTrunk(k.Key.ID, "+15556000", app.URL, nil)

	run := Call{Number: "+15556000", Calls: 2, Rate: 10, Hangup: "callee", WaitByeMS: 20000}.Start(t, e)
	for range 2 {
		app.Next(t).Expect(t, "start")
	}
	agree := func(want int) {
		t.Helper()
		var calls struct {
			Calls []struct {
				KeyID string `json:"key_id"`
			}
		}
		var kv keyView
		e.MustAPI(200, "GET", "/v1/calls", nil, &calls)
		e.MustAPI(200, "GET", "/v1/keys/"+k.Key.ID, nil, &kv)
		metric, _ := e.Metric(`trunkgate_channels_in_use{key_id="` + k.Key.ID + `"}`)
		if len(calls.Calls) != want || kv.ChannelsInUse != want || int(metric) != want {
			t.Fatalf("calls list %d, key channels %d, metric %v; want %d each", len(calls.Calls), kv.ChannelsInUse, metric, want)
		}
	}
	agree(2)
	var kv keyView
	waitFor(t, 5*time.Second, "live spend", func() bool {
		e.MustAPI(200, "GET", "/v1/keys/"+k.Key.ID, nil, &kv)
		return kv.Spend.Live > 0
	})
	if kv.Spend.MonthToDate != kv.Spend.Live || kv.Spend.Remaining == nil || *kv.Spend.Remaining != 10*unit+unit/2-kv.Spend.MonthToDate {
		t.Fatalf("spend view while live: %+v", kv.Spend)
	}
	res := run.Wait(t).MustPass(t)
	if n := strings.Count(res.Log, `text="monthly spend cap reached"`); n != 2 {
		t.Fatalf("%d BYEs with the spend cap's Reason, want 2:\n%s", n, res.Log)
	}
	cdrs := e.WaitCDRs(k.Key.ID, 2)
	total := cdrs[0].CostMicros + cdrs[1].CostMicros
	gap := cdrs[0].EndAt.Sub(cdrs[1].EndAt)
	t.Logf("two calls: %d and %d ms, billed %d+%d s, %d micros against a cap of %d; ended %v apart",
		cdrs[0].DurationMS, cdrs[1].DurationMS, cdrs[0].BilledSeconds, cdrs[1].BilledSeconds, total, 10*unit+unit/2, gap.Abs())
	if total != 10*unit || gap.Abs() > time.Second {
		t.Fatalf("CDRs cost %d in all (want 10 s = %d, the most under the cap) and ended %v apart", total, 10*unit, gap)
	}
	for _, c := range cdrs {
		if c.HangupSide != "edge" || c.HangupCause != "monthly spend cap reached" || c.CostMicros != c.BilledSeconds*unit {
			t.Fatalf("CDR %+v", c)
		}
	}
	agree(0)
	e.MustAPI(200, "GET", "/v1/keys/"+k.Key.ID, nil, &kv)
	if kv.Spend.MonthToDate != total || kv.Spend.Live != 0 || *kv.Spend.Remaining != unit/2 {
		t.Fatalf("spend view after: %+v", kv.Spend)
	}
	// Half a second of talk left: a call could not pay its first second.
	refused := RunSIPp(t, e, Call{Number: "+15556000", Expect: 402}).MustPass(t)
	if got := refused.Logged(t, `REASON=(.*) RETRY`)[1]; got != `SIP;cause=402;text="monthly spend cap reached"` {
		t.Fatalf("Reason %q", got)
	}
	got := hooks.waitFor(t, 2)
	month := time.Now().UTC().Format("2006-01")
	if want := fmt.Sprintf("[spend %s/50%% spend %s/90%%]", month, month); fmt.Sprint(got) != want {
		t.Fatalf("webhooks %v, want %s", got, want)
	}
}

// TestRatingUsageAndCSV: a carrier's rate deck goes in through the CLI
// (a bad deck refused by line), a key overrides one prefix; three
// outbound calls are billed at the longest prefix's rate; the usage report
// by prefix adds up to the CDRs as JSON, as the CLI's CSV and as its
// table; a usage:read key sees its own usage and not another key's.
func TestRatingUsageAndCSV(t *testing.T) {
	e := StartEdge(t)
	gw := StartGateway(t, Gateway{Calls: 3, ByeAfterMS: 1200})
	k := e.NewKey("rated", keys.Limits{OutboundRate: 6_000}, "calls:outbound", "usage:read")
	e.NewOutboundTrunk(k.Key.ID, map[string]any{"caller_id": "+15550100"}, gw.URI)
	dir := t.TempDir()
	deck := filepath.Join(dir, "deck.csv")
	os.WriteFile(deck, []byte("Destination,Prefix,Price\nUK,+44,0.012\nLondon,+4420,0.03x\nFrance,33,0.02\nUK again,+44,0.5\n"), 0o644)
	cmd := e.cliCmd("rates", "import", "--file", deck)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "deck.csv:3: rate \"0.03x\"") || !strings.Contains(string(out), "deck.csv:5: prefix +44 already on line 2") {
		t.Fatalf("a bad deck: %v\n%s", err, out)
	}
	os.WriteFile(deck, []byte("Destination,Prefix,Price\nUK,+44,0.012\nLondon,+4420,0.03\nFrance,33,0.02\n"), 0o644)
	if out := e.cli(t, "rates", "import", "--file", deck); !strings.Contains(out, "Imported 3 rates.") {
		t.Fatalf("import: %s", out)
	}
	e.cli(t, "rates", "set", "--key", k.Key.ID, "--prefix", "+33", "--rate", "0.01", "--description", "negotiated")

	want := map[string]struct {
		prefix string
		rate   int64
	}{
		"+442071234567": {"+4420", 30_000}, "+441611234567": {"+44", 12_000}, "+33123456789": {"+33", 10_000},
	}
	for to := range want {
		conn, refused := e.DialStream(t, k.APIKey, url.Values{"to": {to}})
		if refused != nil {
			t.Fatalf("call to %s refused: %+v", to, refused)
		}
		conn.Expect(t, "start")
		conn.Expect(t, "stop")
	}
	gw.Wait(t)
	cdrs := e.WaitCDRs(k.Key.ID, 3)
	var sum struct{ calls, answered, billed, cost int64 }
	byPrefix := map[string]int64{}
	for _, c := range cdrs {
		w := want[c.To]
		if c.RatePerMinute != w.rate || c.RatePrefix != w.prefix || c.CostMicros != (c.BilledSeconds*w.rate+59)/60 || c.BilledSeconds < 1 {
			t.Fatalf("call to %s: rated %d by %q, %d s cost %d; want %d by %q", c.To, c.RatePerMinute, c.RatePrefix,
				c.BilledSeconds, c.CostMicros, w.rate, w.prefix)
		}
		sum.calls++
		sum.answered++
		sum.billed += c.BilledSeconds
		sum.cost += c.CostMicros
		byPrefix[c.RatePrefix] += c.CostMicros
	}

	// JSON from REST.
	var rep struct {
		Rows []struct {
			Prefix     string
			Calls      int64
			CostMicros int64 `json:"cost_micros"`
		}
		Totals struct {
			Calls         int64
			Answered      int64
			BilledSeconds int64 `json:"billed_seconds"`
			CostMicros    int64 `json:"cost_micros"`
		}
	}
	e.MustAPI(200, "GET", "/v1/usage?key_id="+k.Key.ID+"&by=prefix", nil, &rep)
	if rep.Totals.Calls != sum.calls || rep.Totals.Answered != sum.answered || rep.Totals.BilledSeconds != sum.billed ||
		rep.Totals.CostMicros != sum.cost || len(rep.Rows) != 3 {
		t.Fatalf("report %+v, want %+v", rep, sum)
	}
	for _, r := range rep.Rows {
		if r.CostMicros != byPrefix[r.Prefix] || r.Calls != 1 {
			t.Fatalf("row %+v, want cost %d", r, byPrefix[r.Prefix])
		}
	}
	// CSV from the CLI parses back to the same numbers.
	records, err := csv.NewReader(strings.NewReader(e.cli(t, "usage", "--key", k.Key.ID, "--by", "day,prefix", "--csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(records[0], ",") != "day,prefix,calls,answered,billed_seconds,cost_micros,avg_cost_micros" || len(records) != 4 {
		t.Fatalf("CSV %v", records)
	}
	var csvCost, csvBilled int64
	for _, r := range records[1:] {
		cost, _ := strconv.ParseInt(r[5], 10, 64)
		billed, _ := strconv.ParseInt(r[4], 10, 64)
		if cost != byPrefix[r[1]] || r[0] != time.Now().UTC().Format("2006-01-02") {
			t.Fatalf("CSV row %v", r)
		}
		csvCost += cost
		csvBilled += billed
	}
	if csvCost != sum.cost || csvBilled != sum.billed {
		t.Fatalf("CSV totals %d micros %d s, want %d, %d", csvCost, csvBilled, sum.cost, sum.billed)
	}
	if table := e.cli(t, "usage", "--key", k.Key.ID, "--by", "prefix"); !strings.Contains(table, "TOTAL") ||
		!strings.Contains(table, fmt.Sprintf("%d.%06d", sum.cost/1_000_000, sum.cost%1_000_000)) {
		t.Fatalf("usage table:\n%s", table)
	}
	// A key with usage:read only: its own usage, never another's.
	other := e.NewKey("reader", keys.Limits{}, "usage:read")
	if s := e.API("GET", "/v1/usage?key_id="+k.Key.ID, other.APIKey, nil, nil); s != 403 {
		t.Fatalf("another key's usage: %d", s)
	}
	var own struct {
		KeyID string `json:"key_id"`
	}
	if s := e.API("GET", "/v1/usage", other.APIKey, nil, &own); s != 200 || own.KeyID != other.Key.ID {
		t.Fatalf("own usage: %d %+v", s, own)
	}
}

// TestAlertsSuspendAndResume: a call to a blocked prefix suspends the key
// (its rule's action), so its next call is refused 403 with a clear
// reason until an operator resumes it; each alert reaches the key's
// webhook once, signed, even though the receiver failed the first time.
func TestAlertsSuspendAndResume(t *testing.T) {
	e := StartEdge(t)
	gw := StartGateway(t, Gateway{ByeAfterMS: 300})
	hooks := newHookReceiver(t, 1)
	k := e.NewKey("watched", keys.Limits{BlockedPrefixes: []string{"+53"}}, "calls:outbound")
	hooks.secret = k.SigningSecret
	e.NewOutboundTrunk(k.Key.ID, map[string]any{"caller_id": "+15550100"}, gw.URI)
	e.cli(t, "keys", "alerts", k.Key.ID, "--url", hooks.url(), "--action", "blocked_destination=suspend")

	if _, refused := e.DialStream(t, k.APIKey, url.Values{"to": {"+5371234567"}}); refused == nil || refused.Status != 403 ||
		refused.Code != "destination_blocked" {
		t.Fatalf("a blocked destination: %+v", refused)
	}
	var kv keyView
	waitFor(t, 5*time.Second, "the key suspended", func() bool {
		e.MustAPI(200, "GET", "/v1/keys/"+k.Key.ID, nil, &kv)
		return kv.Suspended != ""
	})
	if !strings.Contains(kv.Suspended, "blocked_destination") {
		t.Fatalf("suspended because %q", kv.Suspended)
	}
	to := url.Values{"to": {"+442071234567"}}
	if _, refused := e.DialStream(t, k.APIKey, to); refused == nil || refused.Status != 403 || refused.Code != "key_suspended" ||
		refused.Message != "key suspended by an alert" {
		t.Fatalf("a suspended key's call: %+v", refused)
	}
	if out := e.cli(t, "keys", "resume", k.Key.ID); !strings.Contains(out, "takes calls again") {
		t.Fatalf("resume: %s", out)
	}
	conn, refused := e.DialStream(t, k.APIKey, to)
	if refused != nil {
		t.Fatalf("after resume: %+v", refused)
	}
	conn.Expect(t, "start")
	conn.Expect(t, "stop")
	gw.Wait(t)

	got := hooks.waitFor(t, 3)
	hour := time.Now().UTC().Format("2006-01-02T15")
	want := fmt.Sprintf("[blocked_destination %s new_destination +44 new_destination +53]", hour)
	if fmt.Sprint(got) != want {
		// The hour may have turned between the call and now.
		t.Fatalf("webhooks %v, want %s", got, want)
	}
	out := e.cli(t, "alerts", "list", "--key", k.Key.ID)
	if strings.Count(out, "delivered") != 3 || !strings.Contains(out, "suspend") {
		t.Fatalf("alerts list:\n%s", out)
	}
	var audit struct{ Audit []keys.AuditEntry }
	e.MustAPI(200, "GET", "/v1/audit?target="+k.Key.ID+"&action=key.suspend", nil, &audit)
	if len(audit.Audit) != 1 || audit.Audit[0].Actor != keys.ActorSystem {
		t.Fatalf("suspension audit %+v", audit.Audit)
	}
}
