package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"trunkgate/alerts"
	"trunkgate/api"
	"trunkgate/billing"
	"trunkgate/call"
	"trunkgate/internal/sqldb"
	"trunkgate/internal/tlsconf"
	"trunkgate/keys"
	"trunkgate/trunks"
)

// backend is what operator commands need; the REST API or the database.
type backend interface {
	CreateKey(ctx context.Context, spec keys.CreateSpec) (api.CreatedKey, error)
	ListKeys(ctx context.Context) ([]api.KeyView, error)
	GetKey(ctx context.Context, id string) (api.KeyView, error)
	SetLimits(ctx context.Context, id string, p keys.LimitsPatch) (api.KeyView, error)
	Rotate(ctx context.Context, id string, grace time.Duration) (api.CreatedKey, error)
	Revoke(ctx context.Context, id string) (int, error)
	CreateTrunk(ctx context.Context, spec trunks.Spec) (*trunks.Trunk, error)
	ListTrunks(ctx context.Context) ([]*trunks.Trunk, error)
	GetTrunk(ctx context.Context, id string) (*trunks.Trunk, error)
	DeleteTrunk(ctx context.Context, id string) error
	ListCalls(ctx context.Context) ([]call.Info, error)
	Hangup(ctx context.Context, id string) error
	ListCDRs(ctx context.Context, q url.Values) ([]billing.CDR, error)
	Audit(ctx context.Context, q url.Values) ([]keys.AuditEntry, error)
	ListRates(ctx context.Context, keyID string) ([]billing.Rate, error)
	PutRate(ctx context.Context, r billing.Rate) (billing.Rate, error)
	DeleteRate(ctx context.Context, keyID, prefix string) error
	ImportRates(ctx context.Context, keyID string, deck io.Reader) (int, error)
	// Usage runs a usage report: as CSV streamed to csvOut, or, with
	// csvOut nil, returned whole.
	Usage(ctx context.Context, q url.Values, csvOut io.Writer) (*api.UsageReport, error)
	SetAlerts(ctx context.Context, id string, c keys.AlertConfig) (api.KeyView, error)
	Resume(ctx context.Context, id string) (api.KeyView, error)
	ListAlerts(ctx context.Context, f alerts.Filter) ([]alerts.Alert, error)
	Close() error
}

// clientFlags are the flags every operator command shares.
type clientFlags struct {
	server string
	ca     string
	db     string
	json   bool
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", "http://127.0.0.1:8080", "edge REST API URL (key in TRUNKGATE_ADMIN_KEY)")
	fs.StringVar(&c.ca, "ca", "", "PEM CA bundle to verify an https:// --server against (default: the system's roots)")
	fs.StringVar(&c.db, "db", "", "operate on this SQLite database directly instead of the REST API")
	fs.BoolVar(&c.json, "json", false, "print JSON")
}

func (c *clientFlags) open(ctx context.Context) (backend, error) {
	if c.db != "" {
		return openDBBackend(ctx, c.db)
	}
	key := os.Getenv("TRUNKGATE_ADMIN_KEY")
	if key == "" {
		return nil, errors.New("set TRUNKGATE_ADMIN_KEY to an admin key (printed at the first serve), or use --db PATH")
	}
	hc, err := httpClient(c.ca, 30*time.Second)
	if err != nil {
		return nil, err
	}
	return &httpBackend{base: strings.TrimRight(c.server, "/"), key: key, hc: hc}, nil
}

// httpClient is the CLI's HTTP client, verifying https:// servers against
// the CA bundle in caFile ("" for the system's roots).
func httpClient(caFile string, timeout time.Duration) (*http.Client, error) {
	cfg, err := tlsconf.ClientConfig(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Timeout: timeout, Transport: tr}, nil
}

// httpBackend talks to the REST API.
type httpBackend struct {
	base string
	key  string
	hc   *http.Client
}

func (h *httpBackend) Close() error { return nil }

// do sends a request and decodes a JSON answer into out; API errors come
// back as Go errors with the API's message.
func (h *httpBackend) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	return h.send(ctx, method, path, "application/json", rd, out)
}

// send sends a request with a body of any type and decodes the JSON
// answer into out, or copies the answer to out if it is an io.Writer.
func (h *httpBackend) send(ctx context.Context, method, path, contentType string, rd io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+h.key)
	if rd != nil {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := h.hc.Do(req)
	if err != nil {
		return fmt.Errorf("reach %s: %w (is the edge running? use --db to work offline)", h.base, err)
	}
	defer res.Body.Close()
	if w, ok := out.(io.Writer); ok && res.StatusCode < 300 {
		_, err := io.Copy(w, res.Body) // a streamed answer (CSV)
		return err
	}
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return err
	}
	if res.StatusCode >= 300 {
		var e api.DeckRefused
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			if len(e.Lines) > 0 {
				return &billing.DeckError{Lines: e.Lines}
			}
			return fmt.Errorf("%s (HTTP %d, %s)", e.Error.Message, res.StatusCode, e.Error.Code)
		}
		return fmt.Errorf("HTTP %d", res.StatusCode)
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	return json.Unmarshal(data, out)
}

func (h *httpBackend) CreateKey(ctx context.Context, spec keys.CreateSpec) (api.CreatedKey, error) {
	var out api.CreatedKey
	return out, h.do(ctx, "POST", "/v1/keys", spec, &out)
}

func (h *httpBackend) ListKeys(ctx context.Context) ([]api.KeyView, error) {
	var out struct{ Keys []api.KeyView }
	return out.Keys, h.do(ctx, "GET", "/v1/keys", nil, &out)
}

func (h *httpBackend) GetKey(ctx context.Context, id string) (api.KeyView, error) {
	var out api.KeyView
	return out, h.do(ctx, "GET", "/v1/keys/"+url.PathEscape(id), nil, &out)
}

func (h *httpBackend) SetLimits(ctx context.Context, id string, p keys.LimitsPatch) (api.KeyView, error) {
	var out api.KeyView
	return out, h.do(ctx, "PATCH", "/v1/keys/"+url.PathEscape(id)+"/limits", p, &out)
}

func (h *httpBackend) Rotate(ctx context.Context, id string, grace time.Duration) (api.CreatedKey, error) {
	var out api.CreatedKey
	secs := int64(grace / time.Second)
	return out, h.do(ctx, "POST", "/v1/keys/"+url.PathEscape(id)+"/rotate", api.RotateRequest{GraceSeconds: &secs}, &out)
}

func (h *httpBackend) Revoke(ctx context.Context, id string) (int, error) {
	var out struct {
		LiveCallsEnded int `json:"live_calls_ended"`
	}
	return out.LiveCallsEnded, h.do(ctx, "POST", "/v1/keys/"+url.PathEscape(id)+"/revoke", nil, &out)
}

func (h *httpBackend) CreateTrunk(ctx context.Context, spec trunks.Spec) (*trunks.Trunk, error) {
	var out trunks.Trunk
	return &out, h.do(ctx, "POST", "/v1/trunks", spec, &out)
}

func (h *httpBackend) ListTrunks(ctx context.Context) ([]*trunks.Trunk, error) {
	var out struct{ Trunks []*trunks.Trunk }
	return out.Trunks, h.do(ctx, "GET", "/v1/trunks", nil, &out)
}

func (h *httpBackend) GetTrunk(ctx context.Context, id string) (*trunks.Trunk, error) {
	var out trunks.Trunk
	return &out, h.do(ctx, "GET", "/v1/trunks/"+url.PathEscape(id), nil, &out)
}

func (h *httpBackend) DeleteTrunk(ctx context.Context, id string) error {
	return h.do(ctx, "DELETE", "/v1/trunks/"+url.PathEscape(id), nil, nil)
}

func (h *httpBackend) ListCalls(ctx context.Context) ([]call.Info, error) {
	var out struct{ Calls []call.Info }
	return out.Calls, h.do(ctx, "GET", "/v1/calls", nil, &out)
}

func (h *httpBackend) Hangup(ctx context.Context, id string) error {
	return h.do(ctx, "POST", "/v1/calls/"+url.PathEscape(id)+"/hangup", nil, nil)
}

func (h *httpBackend) ListCDRs(ctx context.Context, q url.Values) ([]billing.CDR, error) {
	var out struct{ CDRs []billing.CDR }
	return out.CDRs, h.do(ctx, "GET", "/v1/cdrs?"+q.Encode(), nil, &out)
}

func (h *httpBackend) Audit(ctx context.Context, q url.Values) ([]keys.AuditEntry, error) {
	var out struct{ Audit []keys.AuditEntry }
	return out.Audit, h.do(ctx, "GET", "/v1/audit?"+q.Encode(), nil, &out)
}

func (h *httpBackend) ListRates(ctx context.Context, keyID string) ([]billing.Rate, error) {
	var out struct{ Rates []billing.Rate }
	return out.Rates, h.do(ctx, "GET", "/v1/rates?"+url.Values{"key_id": {keyID}}.Encode(), nil, &out)
}

func (h *httpBackend) PutRate(ctx context.Context, r billing.Rate) (billing.Rate, error) {
	var out billing.Rate
	return out, h.do(ctx, "PUT", "/v1/rates", r, &out)
}

func (h *httpBackend) DeleteRate(ctx context.Context, keyID, prefix string) error {
	return h.do(ctx, "DELETE", "/v1/rates/"+url.PathEscape(prefix)+"?"+url.Values{"key_id": {keyID}}.Encode(), nil, nil)
}

func (h *httpBackend) ImportRates(ctx context.Context, keyID string, deck io.Reader) (int, error) {
	var out struct{ Imported int }
	return out.Imported, h.send(ctx, "POST", "/v1/rates/import?"+url.Values{"key_id": {keyID}}.Encode(), "text/csv", deck, &out)
}

func (h *httpBackend) Usage(ctx context.Context, q url.Values, csvOut io.Writer) (*api.UsageReport, error) {
	if csvOut == nil {
		var out api.UsageReport
		return &out, h.do(ctx, "GET", "/v1/usage?"+q.Encode(), nil, &out)
	}
	q.Set("format", "csv")
	return nil, h.send(ctx, "GET", "/v1/usage?"+q.Encode(), "", nil, csvOut)
}

func (h *httpBackend) SetAlerts(ctx context.Context, id string, c keys.AlertConfig) (api.KeyView, error) {
	var out api.KeyView
	return out, h.do(ctx, "PUT", "/v1/keys/"+url.PathEscape(id)+"/alerts", c, &out)
}

func (h *httpBackend) Resume(ctx context.Context, id string) (api.KeyView, error) {
	var out api.KeyView
	return out, h.do(ctx, "POST", "/v1/keys/"+url.PathEscape(id)+"/resume", nil, &out)
}

func (h *httpBackend) ListAlerts(ctx context.Context, f alerts.Filter) ([]alerts.Alert, error) {
	q := url.Values{"key_id": {f.KeyID}, "rule": {f.Rule}}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out struct{ Alerts []alerts.Alert }
	return out.Alerts, h.do(ctx, "GET", "/v1/alerts?"+q.Encode(), nil, &out)
}

// dbBackend works on the database (a SQLite file or PostgreSQL); the
// actor in the audit log is "cli". Running edges on the same database
// apply its changes within a second, through the change log.
type dbBackend struct{ e *edge }

func openDBBackend(ctx context.Context, path string) (*dbBackend, error) {
	if _, err := os.Stat(path); err != nil && !sqldb.IsPostgres(path) {
		return nil, fmt.Errorf("--db %s: %w", path, err)
	}
	e, err := openEdge(ctx, path, "cli", false, discardLogger())
	if err != nil {
		return nil, err
	}
	return &dbBackend{e: e}, nil
}

var cliActor = keys.Actor{KeyID: keys.ActorCLI, Source: "local"}

func (d *dbBackend) Close() error {
	d.e.audit.Close()
	return d.e.db.Close()
}

func (d *dbBackend) view(k *keys.Key) api.KeyView { return api.ViewKey(k, 0, d.e.meter) }

func (d *dbBackend) CreateKey(ctx context.Context, spec keys.CreateSpec) (api.CreatedKey, error) {
	c, err := d.e.manager.Create(ctx, cliActor, spec)
	if err != nil {
		return api.CreatedKey{}, err
	}
	return api.CreatedKey{Key: d.view(c.Key), APIKey: c.Text, SigningSecret: c.SigningSecret}, nil
}

func (d *dbBackend) ListKeys(ctx context.Context) ([]api.KeyView, error) {
	all, err := d.e.manager.List(ctx)
	out := make([]api.KeyView, 0, len(all))
	for _, k := range all {
		out = append(out, d.view(k))
	}
	return out, err
}

func (d *dbBackend) GetKey(ctx context.Context, id string) (api.KeyView, error) {
	k, err := d.e.manager.Get(ctx, id)
	if err != nil {
		return api.KeyView{}, err
	}
	return d.view(k), nil
}

func (d *dbBackend) SetLimits(ctx context.Context, id string, p keys.LimitsPatch) (api.KeyView, error) {
	k, err := d.e.manager.SetLimits(ctx, cliActor, id, p)
	if err != nil {
		return api.KeyView{}, err
	}
	return d.view(k), nil
}

func (d *dbBackend) Rotate(ctx context.Context, id string, grace time.Duration) (api.CreatedKey, error) {
	c, err := d.e.manager.Rotate(ctx, cliActor, id, grace)
	if err != nil {
		return api.CreatedKey{}, err
	}
	return api.CreatedKey{Key: d.view(c.Key), APIKey: c.Text}, nil
}

func (d *dbBackend) Revoke(ctx context.Context, id string) (int, error) {
	return d.e.manager.Revoke(ctx, cliActor, id)
}

func (d *dbBackend) CreateTrunk(ctx context.Context, spec trunks.Spec) (*trunks.Trunk, error) {
	t, err := d.e.trunks.Create(ctx, spec)
	if err == nil {
		_ = d.e.audit.Write(ctx, keys.AuditEntry{Actor: keys.ActorCLI, Action: "trunk.create", Target: t.ID,
			Outcome: "ok", Detail: "key_id=" + t.KeyID, Source: "local"})
	}
	return t, err
}

func (d *dbBackend) ListTrunks(context.Context) ([]*trunks.Trunk, error) {
	return d.e.trunks.List(), nil
}

func (d *dbBackend) GetTrunk(_ context.Context, id string) (*trunks.Trunk, error) {
	t, ok := d.e.trunks.Get(id)
	if !ok {
		return nil, fmt.Errorf("trunk %s: %w", id, trunks.ErrNotFound)
	}
	return t, nil
}

func (d *dbBackend) DeleteTrunk(ctx context.Context, id string) error {
	err := d.e.trunks.Delete(ctx, id)
	if err == nil {
		_ = d.e.audit.Write(ctx, keys.AuditEntry{Actor: keys.ActorCLI, Action: "trunk.delete", Target: id, Outcome: "ok", Source: "local"})
	}
	return err
}

var errNeedServer = errors.New("live calls exist only in a running edge: use --server, not --db")

func (d *dbBackend) ListCalls(context.Context) ([]call.Info, error) { return nil, errNeedServer }
func (d *dbBackend) Hangup(context.Context, string) error           { return errNeedServer }

func (d *dbBackend) ListCDRs(ctx context.Context, q url.Values) ([]billing.CDR, error) {
	f, err := cdrFilter(q)
	if err != nil {
		return nil, err
	}
	if f.KeyID != "" { // as the API answers: the key must exist
		if _, err := d.e.manager.Get(ctx, f.KeyID); err != nil {
			return nil, err
		}
	}
	return d.e.cdrs.ListCDRs(ctx, f)
}

func (d *dbBackend) Audit(ctx context.Context, q url.Values) ([]keys.AuditEntry, error) {
	f := keys.AuditFilter{Target: q.Get("target"), Action: q.Get("action")}
	if v := q.Get("limit"); v != "" {
		fmt.Sscan(v, &f.Limit)
	}
	return d.e.manager.AuditLog(ctx, f)
}

func (d *dbBackend) ListRates(ctx context.Context, keyID string) ([]billing.Rate, error) {
	return d.e.rates.List(ctx, keyID)
}

func (d *dbBackend) PutRate(ctx context.Context, r billing.Rate) (billing.Rate, error) {
	return d.e.rates.Put(ctx, cliActor, r)
}

func (d *dbBackend) DeleteRate(ctx context.Context, keyID, prefix string) error {
	found, err := d.e.rates.Delete(ctx, cliActor, keyID, prefix)
	if err == nil && !found {
		err = fmt.Errorf("no rate for %s: %w", prefix, billing.ErrNotFound)
	}
	return err
}

func (d *dbBackend) ImportRates(ctx context.Context, keyID string, deck io.Reader) (int, error) {
	return d.e.rates.Import(ctx, cliActor, keyID, deck)
}

func (d *dbBackend) Usage(ctx context.Context, q url.Values, csvOut io.Writer) (*api.UsageReport, error) {
	uq, err := api.UsageQueryFrom(q, time.Now())
	if err != nil {
		return nil, err
	}
	if csvOut != nil {
		w, err := billing.NewUsageCSV(csvOut, uq)
		if err != nil {
			return nil, err
		}
		if _, err := billing.Report(ctx, d.e.cdrs, uq, w.Row); err != nil {
			return nil, err
		}
		return nil, w.Close()
	}
	rep := &api.UsageReport{Rows: []billing.UsageRow{}}
	rep.KeyID, rep.Since, rep.Until, rep.TZ, rep.By = uq.KeyID, uq.Since, uq.Until, uq.TZ.String(), uq.By
	rep.Totals, err = billing.Report(ctx, d.e.cdrs, uq, func(r billing.UsageRow) error {
		rep.Rows = append(rep.Rows, r)
		return nil
	})
	return rep, err
}

func (d *dbBackend) SetAlerts(ctx context.Context, id string, c keys.AlertConfig) (api.KeyView, error) {
	k, err := d.e.manager.SetAlerts(ctx, cliActor, id, c)
	if err != nil {
		return api.KeyView{}, err
	}
	return d.view(k), nil
}

func (d *dbBackend) Resume(ctx context.Context, id string) (api.KeyView, error) {
	k, err := d.e.manager.Resume(ctx, cliActor, id)
	if err != nil {
		return api.KeyView{}, err
	}
	return d.view(k), nil
}

func (d *dbBackend) ListAlerts(ctx context.Context, f alerts.Filter) ([]alerts.Alert, error) {
	return d.e.alerts.List(ctx, f)
}

func cdrFilter(q url.Values) (billing.Filter, error) {
	f := billing.Filter{KeyID: q.Get("key_id")}
	if v := q.Get("since"); v != "" {
		t, err := parseWhen(v)
		if err != nil {
			return f, err
		}
		f.Since = t
	}
	if v := q.Get("limit"); v != "" {
		if _, err := fmt.Sscan(v, &f.Limit); err != nil {
			return f, fmt.Errorf("--limit: %w", err)
		}
	}
	return f, nil
}

func parseWhen(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want RFC 3339 time or YYYY-MM-DD", v)
}
