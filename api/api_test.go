package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"trunkgate/alerts"
	"trunkgate/billing"
	"trunkgate/call"
	"trunkgate/internal/sqldb/sqldbtest"
	"trunkgate/keys"
	"trunkgate/ledger"
	"trunkgate/refusal"
	"trunkgate/trunks"
)

// noCalls is a live-call registry with nothing up.
type noCalls struct{}

func (noCalls) List() []call.Info            { return nil }
func (noCalls) Get(string) (call.Info, bool) { return call.Info{}, false }
func (noCalls) Place(context.Context, call.OutboundRequest) (string, error) {
	return "", refusal.NoOutboundTrunk
}
func (noCalls) PlaceStream(http.ResponseWriter, *http.Request, call.OutboundRequest) error {
	return refusal.NoOutboundTrunk
}
func (noCalls) ResumeStream(http.ResponseWriter, *http.Request, *keys.Key, string) error {
	return refusal.NoStream
}
func (noCalls) Hangup(id string) error {
	return fmt.Errorf("call %s: %w", id, call.ErrNoCall)
}

type fixture struct {
	api   *API
	admin string // admin key text
	keyID string // an ordinary key's id
}

// newFixture serves the API over real SQLite stores, as serve wires them.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	db := sqldbtest.Open(t)
	ks, err := keys.NewSQLStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := trunks.NewSQLStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := billing.NewSQLStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	live := ledger.NewMemory("test")
	meter, err := billing.NewMeter(ctx, cs, live, log)
	if err != nil {
		t.Fatal(err)
	}
	admitter := keys.NewAdmitter(ks, live, meter, nil)
	audit := keys.NewAuditor(ks, log)
	t.Cleanup(audit.Close)
	dir, err := trunks.NewDirectory(ctx, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := keys.NewManager(ks, admitter, audit, nil)
	by := keys.Actor{KeyID: "test", Source: "test"}
	admin, err := m.Create(ctx, by, keys.CreateSpec{Name: "admin", Mode: keys.Live, Scopes: []string{"keys:admin", "usage:read", "calls:outbound"}})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := m.Create(ctx, by, keys.CreateSpec{Name: "plain", Mode: keys.Live, Scopes: []string{"calls:inbound"}})
	if err != nil {
		t.Fatal(err)
	}
	rates, err := billing.NewRates(ctx, cs, audit, nil)
	if err != nil {
		t.Fatal(err)
	}
	as, err := alerts.NewSQLStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	a := New(Config{Keys: m, Admitter: admitter, Audit: audit, Trunks: dir, Calls: noCalls{}, CDRs: cs, Rates: rates, Usage: cs,
		Spend: meter, Alerts: as, Log: log})
	a.SetReady(true)
	return &fixture{api: a, admin: admin.Text, keyID: plain.Key.ID}
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// do sends one request as the admin and checks what every answer must be:
// JSON, and for an error a code and a message.
func (f *fixture) do(t testing.TB, method, path, body string) (int, errorBody) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.admin)
	rec := httptest.NewRecorder()
	f.api.ServeHTTP(rec, req)
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") && !(rec.Code == 200 && strings.HasPrefix(ct, "text/csv")) {
		t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	var e errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("%s %s: body %q is not JSON: %v", method, path, rec.Body, err)
	}
	if rec.Code >= 400 && (e.Error.Code == "" || e.Error.Message == "") {
		t.Fatalf("%s %s: %d with body %q: no error code and message", method, path, rec.Code, rec.Body)
	}
	return rec.Code, e
}

func TestErrorsAreJSON(t *testing.T) {
	f := newFixture(t)
	trunk := func(extra string) string {
		return `{"key_id":"` + f.keyID + `","numbers":["+15550100"],"ai_url":"ws://127.0.0.1:1/a","allowed_sources":["127.0.0.1/32"]` + extra + `}`
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"create key", "POST", "/v1/keys", `{"name":"x","scopes":["usage:read"],"limits":{"max_channels":2}}`, 201, ""},
		{"malformed JSON", "POST", "/v1/keys", `{"name":`, 400, "bad_request"},
		{"body too deep", "POST", "/v1/keys", strings.Repeat("[", 100000), 400, "bad_request"},
		{"null body", "POST", "/v1/keys", `null`, 400, "invalid"},
		{"no scopes", "POST", "/v1/keys", `{"name":"x"}`, 400, "invalid"},
		{"mode unknown", "POST", "/v1/keys", `{"name":"x","mode":"prod","scopes":["usage:read"]}`, 400, "invalid"},
		{"name with newline", "POST", "/v1/keys", `{"name":"a\nb","scopes":["usage:read"]}`, 400, "invalid"},
		{"limits patch", "PATCH", "/v1/keys/" + f.keyID + "/limits", `{"max_channels":4}`, 200, ""},
		{"limits on a malformed id", "PATCH", "/v1/keys/x/limits", `{"max_channels":4}`, 404, "not_found"},
		{"rotate with no body", "POST", "/v1/keys/" + f.keyID + "/rotate", ``, 200, ""},
		{"rotate with grace too long", "POST", "/v1/keys/" + f.keyID + "/rotate", `{"grace_seconds":99999999}`, 400, "invalid"},
		{"create trunk", "POST", "/v1/trunks", trunk(""), 201, ""},
		{"same number twice", "POST", "/v1/trunks", trunk(""), 409, "conflict"},
		{"bad CIDR", "POST", "/v1/trunks", strings.Replace(trunk(""), "127.0.0.1/32", "127.0.0.1/33", 1), 400, "invalid"},
		{"bad format", "POST", "/v1/trunks", strings.Replace(trunk(`,"format":"opus"`), "+15550100", "+15550101", 1), 400, "invalid"},
		{"digest without password", "POST", "/v1/trunks", strings.Replace(trunk(`,"digest_username":"pbx"`), "+15550100", "+15550102", 1), 400, "invalid"},
		{"unknown trunk", "GET", "/v1/trunks/tr_nothing", ``, 404, "not_found"},
		{"hangup unknown call", "POST", "/v1/calls/CAnothing/hangup", ``, 404, "not_found"},
		{"unknown CDR", "GET", "/v1/cdrs/CAnothing", ``, 404, "not_found"},
		{"audit limit too big", "GET", "/v1/audit?limit=100000000000000000000", ``, 400, "bad_request"},
		{"wrong method", "DELETE", "/v1/keys", ``, 405, "method_not_allowed"},
		{"put a rate", "PUT", "/v1/rates", `{"prefix":"+44","rate_per_minute":12000}`, 200, ""},
		{"rate with a bad prefix", "PUT", "/v1/rates", `{"prefix":"+44x","rate_per_minute":1}`, 400, "invalid"},
		{"rate of an unknown key", "PUT", "/v1/rates", `{"key_id":"KEYnothing00","prefix":"+44","rate_per_minute":1}`, 404, "not_found"},
		{"rate deck", "POST", "/v1/rates/import?key_id=" + f.keyID, "prefix,rate\n+33,0.02\n", 200, ""},
		{"rate deck with bad lines", "POST", "/v1/rates/import", "prefix,rate\n+33,x\n", 400, "invalid"},
		{"rate deck of an unknown key", "POST", "/v1/rates/import?key_id=nope", "prefix,rate\n", 404, "not_found"},
		{"delete a missing rate", "DELETE", "/v1/rates/+999", ``, 404, "not_found"},
		{"usage", "GET", "/v1/usage?month=2026-11&by=day,key", ``, 200, ""},
		{"alert config", "PUT", "/v1/keys/" + f.keyID + "/alerts", `{"url":"https://ops.example/alerts","spend_thresholds":[50,100],"actions":{"new_destination":"suspend"}}`, 200, ""},
		{"alert config, unknown rule", "PUT", "/v1/keys/" + f.keyID + "/alerts", `{"actions":{"bad_weather":"notify"}}`, 400, "invalid"},
		{"alert config, not http", "PUT", "/v1/keys/" + f.keyID + "/alerts", `{"url":"ftp://x/y"}`, 400, "invalid"},
		{"resume", "POST", "/v1/keys/" + f.keyID + "/resume", ``, 200, ""},
		{"alerts", "GET", "/v1/alerts?key_id=" + f.keyID, ``, 200, ""},
		{"alerts, bad limit", "GET", "/v1/alerts?limit=0", ``, 400, "bad_request"},
		{"usage by week", "GET", "/v1/usage?by=week", ``, 400, "bad_request"},
		{"usage in no time zone", "GET", "/v1/usage?tz=Mars/Olympus", ``, 400, "bad_request"},
		{"usage backwards", "GET", "/v1/usage?since=2026-11-02&until=2026-11-01", ``, 400, "bad_request"},
		{"healthz", "GET", "/healthz", ``, 200, ""},
		{"readyz", "GET", "/readyz", ``, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, e := f.do(t, tt.method, tt.path, tt.body)
			if st != tt.status || e.Error.Code != tt.code {
				t.Fatalf("%d %q (%s), want %d %q", st, e.Error.Code, e.Error.Message, tt.status, tt.code)
			}
		})
	}
}

// FuzzRequestBodies: whatever an operator's script sends, the answer is
// JSON, an error says what was wrong, and nothing panics or answers 5xx.
func FuzzRequestBodies(f *testing.F) {
	routes := []struct{ method, path string }{
		{"POST", "/v1/keys"},
		{"PATCH", "/v1/keys/{id}/limits"},
		{"POST", "/v1/keys/{id}/rotate"},
		{"POST", "/v1/trunks"},
		{"GET", "/v1/cdrs?{body}"},
		{"GET", "/v1/audit?{body}"},
		{"POST", "/v1/calls"},
		{"GET", "/v1/calls/stream?{body}"},
		{"PUT", "/v1/rates"},
		{"POST", "/v1/rates/import?key_id={id}"},
		{"GET", "/v1/usage?{body}"},
		{"PUT", "/v1/keys/{id}/alerts"},
	}
	for i, body := range []string{
		`{"name":"a","scopes":["calls:inbound"],"limits":{"max_channels":1,"cps":2,"monthly_spend_cap":100}}`,
		`{"max_channels":3,"max_call_seconds":60,"blocked_prefixes":["+1900"]}`,
		`{"grace_seconds":60}`,
		`{"key_id":"{id}","numbers":["+15550100"],"ai_url":"wss://x/y","allowed_sources":["10.0.0.0/8"],"format":"l16","sample_rate":16000,"params":{"a":"b"}}`,
		`limit=5&since=2026-11-01T00:00:00Z`,
		`limit=-1&until=x`,
		`{"name":"\u0000","scopes":null}`,
		`{"max_channels":1e400}`,
		`{}{}`,
		"\xff\xfe",
		`{"key_id":"{id}","direction":"outbound","gateways":[{"uri":"sip:gw.example:5060;transport=tcp;weight=5","priority":2}],"auth_username":"u","auth_password":"p","caller_id":"+15550100","headers":{"X-A":"b"},"max_channels":3}`,
		`{"key_id":"{id}","direction":"outbound","gateways":[{"uri":"sip:a@b\r\nVia: x"}],"headers":{"Via":"x\r\ny"}}`,
		`{"to":"+15551230000","from":"+15550100","ai_url":"ws://a/b","format":"l16","sample_rate":16000,"params":{"x":"y"}}`,
		`to=%2B1555&format=opus&rate=7&progress=1`,
		`{"key_id":"{id}","prefix":"+44 20","rate_per_minute":12000,"description":"London"}`,
		"prefix,rate,description\n+44,0.0100,UK\n+44x,1\n\"",
		`month=2026-11&by=day,trunk,prefix&tz=Europe/Paris&key_id={id}`,
		`since=2026-11-01&until=2026-10-01&by=week&format=xml`,
		`{"url":"https://x.example/a","spend_thresholds":[80,100,0],"actions":{"spend":"suspend"},"rate_factor":-1}`,
	} {
		f.Add(uint8(i), body)
	}
	fx := newFixture(f)
	f.Fuzz(func(t *testing.T, route uint8, body string) {
		r := routes[int(route)%len(routes)]
		body = strings.ReplaceAll(body, "{id}", fx.keyID)
		path := strings.ReplaceAll(r.path, "{id}", fx.keyID)
		if strings.Contains(path, "{body}") {
			q := strings.Map(func(c rune) rune {
				if c <= ' ' || c == '#' || c == 0x7f || c > 0x7e {
					return -1
				}
				return c
			}, body)
			path, body = strings.ReplaceAll(path, "{body}", q), ""
		}
		st, e := fx.do(t, r.method, path, body)
		if st >= 500 {
			t.Fatalf("%s %s %q: %d %+v", r.method, path, body, st, e)
		}
	})
}

func TestMain(m *testing.M) { sqldbtest.Main(m) }
