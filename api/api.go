// Package api is the operator REST API under /v1/ (keys, limits, trunks,
// live calls, CDRs, audit) plus /healthz, /readyz and /metrics. Every /v1/
// request authenticates with an API key (Authorization: Bearer) and needs
// a scope; bodies and errors are JSON. Key text appears only in the body
// of the response that creates or rotates a key.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"trunkgate/billing"
	"trunkgate/call"
	"trunkgate/keys"
	"trunkgate/refusal"
	"trunkgate/trunks"
)

// Calls runs calls (call.Manager).
type Calls interface {
	List() []call.Info
	Get(callID string) (call.Info, bool)
	Hangup(callID string) error
	PlaceStream(w http.ResponseWriter, r *http.Request, req call.OutboundRequest) error
	ResumeStream(w http.ResponseWriter, r *http.Request, key *keys.Key, streamSid string) error
	Place(ctx context.Context, req call.OutboundRequest) (string, error)
}

// Gateways reports gateway health (trunks.Health).
type Gateways interface {
	Status() []trunks.GatewayStatus
}

// CDRs reads call records (billing.SQLStore).
type CDRs interface {
	ListCDRs(ctx context.Context, f billing.Filter) ([]billing.CDR, error)
	GetCDR(ctx context.Context, callID string) (*billing.CDR, error)
}

// Config wires the API.
type Config struct {
	Keys     *keys.Manager
	Admitter *keys.Admitter
	Audit    *keys.Auditor
	Trunks   *trunks.Directory
	Calls    Calls
	Gateways Gateways
	CDRs     CDRs
	Rates    *billing.Rates
	Usage    billing.UsageStore
	Spend    SpendMeter
	Alerts   AlertList
	Metrics  http.Handler
	// Sessions, when set, authenticates requests from the web console by
	// its session cookie where they carry no Authorization header.
	Sessions Sessions
	Log      *slog.Logger
}

// Sessions finds the key behind a console session (console.Console):
// ok is false when the request has no session; err refuses a write
// without the session's CSRF token.
type Sessions interface {
	KeyText(r *http.Request) (text string, ok bool, err error)
}

// API is the HTTP handler.
type API struct {
	cfg      Config
	mux      *http.ServeMux
	ready    atomic.Bool
	draining atomic.Bool
}

// New builds the routes.
func New(cfg Config) *API {
	a := &API{cfg: cfg, mux: http.NewServeMux()}
	m := a.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	m.HandleFunc("GET /readyz", a.readyz)
	if cfg.Metrics != nil {
		m.Handle("GET /metrics", cfg.Metrics)
	}
	admin := keys.ScopeKeysAdmin
	m.HandleFunc("POST /v1/keys", a.auth(admin, a.createKey))
	m.HandleFunc("GET /v1/keys", a.auth(admin, a.listKeys))
	m.HandleFunc("GET /v1/keys/{id}", a.auth("", a.getKey))
	m.HandleFunc("PATCH /v1/keys/{id}/limits", a.auth(admin, a.setLimits))
	m.HandleFunc("POST /v1/keys/{id}/rotate", a.auth(admin, a.rotateKey))
	m.HandleFunc("POST /v1/keys/{id}/revoke", a.auth(admin, a.revokeKey))
	m.HandleFunc("PUT /v1/keys/{id}/alerts", a.auth(admin, a.setAlerts))
	m.HandleFunc("POST /v1/keys/{id}/resume", a.auth(admin, a.resumeKey))
	m.HandleFunc("GET /v1/alerts", a.auth(admin, a.listAlerts))
	m.HandleFunc("GET /v1/trunks", a.auth(admin, a.listTrunks))
	m.HandleFunc("POST /v1/trunks", a.auth(admin, a.createTrunk))
	m.HandleFunc("GET /v1/trunks/{id}", a.auth(admin, a.getTrunk))
	m.HandleFunc("DELETE /v1/trunks/{id}", a.auth(admin, a.deleteTrunk))
	m.HandleFunc("GET /v1/calls", a.auth(admin, a.listCalls))
	m.HandleFunc("GET /v1/calls/events", a.auth(admin, a.callEvents))
	m.HandleFunc("POST /v1/calls", a.auth(keys.ScopeCallsOutbound, a.placeCall))
	m.HandleFunc("GET /v1/calls/stream", a.auth(keys.ScopeCallsOutbound, a.streamCall))
	m.HandleFunc("GET /v1/calls/{id}", a.auth("", a.getCall))
	m.HandleFunc("POST /v1/calls/{id}/hangup", a.auth(admin, a.hangupCall))
	m.HandleFunc("GET /v1/gateways", a.auth(admin, a.listGateways))
	m.HandleFunc("GET /v1/cdrs", a.auth(keys.ScopeUsageRead, a.listCDRs))
	m.HandleFunc("GET /v1/cdrs/{id}", a.auth(keys.ScopeUsageRead, a.getCDR))
	m.HandleFunc("GET /v1/audit", a.auth(admin, a.listAudit))
	m.HandleFunc("GET /v1/usage", a.auth(keys.ScopeUsageRead, a.usage))
	m.HandleFunc("GET /v1/rates", a.auth(admin, a.listRates))
	m.HandleFunc("PUT /v1/rates", a.auth(admin, a.putRate))
	m.HandleFunc("DELETE /v1/rates/{prefix}", a.auth(admin, a.deleteRate))
	m.HandleFunc("POST /v1/rates/import", a.auth(admin, a.importRates))
	m.HandleFunc("/v1/", a.noRoute)
	return a
}

// noRoute answers what no route took: 405 with Allow when the path exists
// under other methods, else 404; JSON either way, like every /v1 answer.
func (a *API) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		probe := &http.Request{Method: method, URL: r.URL, Host: r.Host}
		if _, pattern := a.mux.Handler(probe); pattern != "" && pattern != "/v1/" {
			allow = append(allow, method)
		}
	}
	if len(allow) == 0 {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
		return
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" not allowed here; use "+strings.Join(allow, ", "))
}

// SetReady flips /readyz once the edge serves SIP.
func (a *API) SetReady(ok bool) { a.ready.Store(ok) }

// SetDraining makes /readyz fail while the edge drains.
func (a *API) SetDraining(ok bool) { a.draining.Store(ok) }

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	switch {
	case a.draining.Load():
		writeError(w, http.StatusServiceUnavailable, "draining", "edge draining")
	case !a.ready.Load():
		writeError(w, http.StatusServiceUnavailable, "starting", "edge starting")
	default:
		writeJSON(w, 200, map[string]string{"status": "ready"})
	}
}

// ServeHTTP logs each request (never its headers: they carry keys).
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: 200}
	defer func() {
		if v := recover(); v != nil {
			a.cfg.Log.Error("panic in API handler", "path", keys.Redact(r.URL.Path), "panic", fmt.Sprint(v))
			writeError(rec, http.StatusInternalServerError, "internal", "internal error")
		}
		if strings.HasPrefix(r.URL.Path, "/v1/") {
			a.cfg.Log.Info("api", "method", r.Method, "path", keys.Redact(r.URL.Path), "status", rec.status,
				"ms", time.Since(start).Milliseconds(), "remote", r.RemoteAddr)
		}
	}()
	a.mux.ServeHTTP(rec, r)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets the stream endpoint's WebSocket upgrade reach the
// connection (http.ResponseController and coder/websocket look for it).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

type principal struct {
	key    *keys.Key
	source string
}

func (p principal) actor() keys.Actor { return keys.Actor{KeyID: p.key.ID, Source: p.source} }

type handler func(w http.ResponseWriter, r *http.Request, p principal)

// auth authenticates the bearer key and checks the scope.
func (a *API) auth(scope keys.Scope, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		text, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if (!ok || text == "") && a.cfg.Sessions != nil && r.Header.Get("Authorization") == "" {
			t, has, err := a.cfg.Sessions.KeyText(r)
			if err != nil {
				a.denied(r, "", "console: "+err.Error())
				writeError(w, http.StatusForbidden, "csrf", err.Error())
				return
			}
			text, ok = t, has
		}
		if !ok || text == "" {
			a.denied(r, "", "missing API key")
			w.Header().Set("WWW-Authenticate", `Bearer realm="trunkgate"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing API key: send Authorization: Bearer <key>")
			return
		}
		key, err := a.cfg.Keys.Authenticate(r.Context(), strings.TrimSpace(text))
		if err != nil {
			reason, isRefusal := refusal.As(err)
			if !isRefusal {
				a.cfg.Log.Error("authentication failed", "error", err)
				writeError(w, http.StatusInternalServerError, "internal", "internal error")
				return
			}
			id := ""
			if p, perr := keys.Parse(strings.TrimSpace(text)); perr == nil {
				id = p.ID
			}
			a.denied(r, id, reason.Label())
			w.Header().Set("WWW-Authenticate", `Bearer realm="trunkgate"`)
			writeError(w, reason.HTTP(), reason.Label(), reason.Text())
			return
		}
		if scope != "" && !key.HasScope(scope) {
			a.denied(r, key.ID, "scope_missing:"+string(scope))
			writeError(w, http.StatusForbidden, refusal.ScopeMissing.Label(), fmt.Sprintf("key lacks the scope %s", scope))
			return
		}
		h(w, r, principal{key: key, source: r.RemoteAddr})
	}
}

func (a *API) denied(r *http.Request, keyID, why string) {
	a.cfg.Audit.Record(keys.AuditEntry{Actor: keyID, Action: "api.refuse", Target: r.Method + " " + r.URL.Path,
		Outcome: "denied", Detail: why, Source: r.RemoteAddr})
}

// --- JSON in and out ---

const maxBody = 1 << 20

// decode reads exactly one JSON value with no unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg := err.Error()
		if errors.Is(err, io.EOF) {
			msg = "empty body: a JSON object is required"
		}
		writeError(w, http.StatusBadRequest, "bad_request", "invalid JSON body: "+msg)
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "bad_request", "invalid JSON body: trailing data after the object")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ErrorBody is every error response.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	var body ErrorBody
	body.Error.Code, body.Error.Message = code, keys.Redact(message)
	if (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, body)
}

// fail maps an error from a lower package to its status. The message
// drops the error kind it starts with ("invalid: ..."): the code says it.
func (a *API) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, keys.ErrInvalid), errors.Is(err, trunks.ErrInvalid), errors.Is(err, billing.ErrInvalidRate),
		errors.Is(err, billing.ErrInvalidQuery):
		writeError(w, http.StatusBadRequest, "invalid", withoutKind(err))
	case errors.Is(err, keys.ErrNotFound), errors.Is(err, trunks.ErrNotFound), errors.Is(err, billing.ErrNotFound),
		errors.Is(err, call.ErrNoCall):
		writeError(w, http.StatusNotFound, "not_found", withoutKind(err))
	case errors.Is(err, trunks.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", withoutKind(err))
	case errors.Is(err, keys.ErrAlreadyRevoked):
		writeError(w, http.StatusConflict, "already_revoked", err.Error())
	default:
		a.cfg.Log.Error("api internal error", "error", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error")
	}
}

// withoutKind is err's text without the sentinel it starts with.
func withoutKind(err error) string {
	msg := err.Error()
	for _, kind := range []error{keys.ErrInvalid, trunks.ErrInvalid, billing.ErrInvalidRate, billing.ErrInvalidQuery,
		trunks.ErrConflict, keys.ErrNotFound, trunks.ErrNotFound, billing.ErrNotFound} {
		if rest, ok := strings.CutPrefix(msg, kind.Error()+": "); ok {
			return rest
		}
	}
	return msg
}

// --- keys ---

// KeyView is a key as the API shows it: with its live channels and what
// it has spent this month.
type KeyView struct {
	*keys.Key
	ChannelsInUse int           `json:"channels_in_use"`
	Spend         billing.Spend `json:"spend"`
}

// SpendMeter tells what keys spend (billing.Meter).
type SpendMeter interface {
	Spend(keyID string, spendCap int64) billing.Spend
}

// ViewKey is how REST and the CLI's --db mode show a key.
func ViewKey(k *keys.Key, channels int, m SpendMeter) KeyView {
	return KeyView{Key: k, ChannelsInUse: channels, Spend: m.Spend(k.ID, k.Limits.MonthlySpendCap)}
}

func (a *API) view(k *keys.Key) KeyView {
	return ViewKey(k, a.cfg.Admitter.Active(k.ID), a.cfg.Spend)
}

// CreatedKey is the one response that carries key text.
type CreatedKey struct {
	Key           KeyView `json:"key"`
	APIKey        string  `json:"api_key"`
	SigningSecret string  `json:"signing_secret,omitempty"`
}

func (a *API) createKey(w http.ResponseWriter, r *http.Request, p principal) {
	var spec keys.CreateSpec
	if !decode(w, r, &spec) {
		return
	}
	c, err := a.cfg.Keys.Create(r.Context(), p.actor(), spec)
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, CreatedKey{Key: a.view(c.Key), APIKey: c.Text, SigningSecret: c.SigningSecret})
}

func (a *API) listKeys(w http.ResponseWriter, r *http.Request, p principal) {
	all, err := a.cfg.Keys.List(r.Context())
	if err != nil {
		a.fail(w, err)
		return
	}
	out := make([]KeyView, 0, len(all))
	for _, k := range all {
		out = append(out, a.view(k))
	}
	writeJSON(w, 200, map[string]any{"keys": out})
}

// getKey shows a key to an admin, or a key with usage:read its own.
func (a *API) getKey(w http.ResponseWriter, r *http.Request, p principal) {
	id := r.PathValue("id")
	if !p.key.HasScope(keys.ScopeKeysAdmin) && !(id == p.key.ID && p.key.HasScope(keys.ScopeUsageRead)) {
		a.denied(r, p.key.ID, "scope_missing:"+string(keys.ScopeKeysAdmin))
		writeError(w, http.StatusForbidden, refusal.ScopeMissing.Label(),
			fmt.Sprintf("key lacks the scope %s (a key with %s may read only its own record)", keys.ScopeKeysAdmin, keys.ScopeUsageRead))
		return
	}
	k, err := a.cfg.Keys.Get(r.Context(), id)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, a.view(k))
}

func (a *API) setLimits(w http.ResponseWriter, r *http.Request, p principal) {
	var patch keys.LimitsPatch
	if !decode(w, r, &patch) {
		return
	}
	if patch.Empty() {
		writeError(w, http.StatusBadRequest, "bad_request", "no limit to change")
		return
	}
	k, err := a.cfg.Keys.SetLimits(r.Context(), p.actor(), r.PathValue("id"), patch)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, a.view(k))
}

// RotateRequest sets the grace of the old key text.
type RotateRequest struct {
	GraceSeconds *int64 `json:"grace_seconds"`
}

func (a *API) rotateKey(w http.ResponseWriter, r *http.Request, p principal) {
	var req RotateRequest
	if r.ContentLength != 0 && !decode(w, r, &req) {
		return
	}
	grace := keys.DefaultGrace
	if req.GraceSeconds != nil {
		if *req.GraceSeconds < 0 || *req.GraceSeconds > 90*24*3600 {
			writeError(w, http.StatusBadRequest, "invalid", "grace_seconds must be between 0 and 7776000")
			return
		}
		grace = time.Duration(*req.GraceSeconds) * time.Second
	}
	c, err := a.cfg.Keys.Rotate(r.Context(), p.actor(), r.PathValue("id"), grace)
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, 200, CreatedKey{Key: a.view(c.Key), APIKey: c.Text})
}

func (a *API) revokeKey(w http.ResponseWriter, r *http.Request, p principal) {
	id := r.PathValue("id")
	n, err := a.cfg.Keys.Revoke(r.Context(), p.actor(), id)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"id": id, "status": keys.Revoked, "live_calls_ended": n})
}

// --- trunks ---

func (a *API) listTrunks(w http.ResponseWriter, r *http.Request, p principal) {
	writeJSON(w, 200, map[string]any{"trunks": a.cfg.Trunks.List()})
}

func (a *API) createTrunk(w http.ResponseWriter, r *http.Request, p principal) {
	var spec trunks.Spec
	if !decode(w, r, &spec) {
		return
	}
	t, err := a.cfg.Trunks.Create(r.Context(), spec)
	a.auditTrunk(r.Context(), p, "trunk.create", t, spec.KeyID, err)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, t)
}

func (a *API) getTrunk(w http.ResponseWriter, r *http.Request, p principal) {
	t, ok := a.cfg.Trunks.Get(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such trunk")
		return
	}
	writeJSON(w, 200, t)
}

func (a *API) deleteTrunk(w http.ResponseWriter, r *http.Request, p principal) {
	id := r.PathValue("id")
	t, _ := a.cfg.Trunks.Get(id)
	err := a.cfg.Trunks.Delete(r.Context(), id)
	a.auditTrunk(r.Context(), p, "trunk.delete", t, "", err)
	if err != nil {
		a.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) auditTrunk(ctx context.Context, p principal, action string, t *trunks.Trunk, keyID string, err error) {
	e := keys.AuditEntry{Actor: p.key.ID, Action: action, Outcome: "ok", Source: p.source}
	if t != nil {
		e.Target, e.Detail = t.ID, "key_id="+t.KeyID+" numbers="+strings.Join(t.Numbers, ",")
	} else if keyID != "" {
		e.Detail = "key_id=" + keyID
	}
	if err != nil {
		e.Outcome, e.Detail = "error", strings.TrimSpace(e.Detail+" error="+err.Error())
	}
	if werr := a.cfg.Audit.Write(ctx, e); werr != nil {
		a.cfg.Log.Error("audit write failed", "action", action, "error", werr)
	}
}

// --- CDRs and audit ---

func parseTimeParam(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%s: want RFC 3339 time or YYYY-MM-DD", name)
}

func parseLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 10000 {
		return 0, errors.New("limit: want 1 to 10000")
	}
	return n, nil
}

func (a *API) listCDRs(w http.ResponseWriter, r *http.Request, p principal) {
	f := billing.Filter{KeyID: r.URL.Query().Get("key_id")}
	var err error
	if f.Since, err = parseTimeParam(r, "since"); err == nil {
		if f.Until, err = parseTimeParam(r, "until"); err == nil {
			f.Limit, err = parseLimit(r)
		}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	// Without keys:admin a key sees only its own calls; an admin asking
	// for a key that does not exist is told so, not shown an empty list.
	if !p.key.HasScope(keys.ScopeKeysAdmin) {
		f.KeyID = p.key.ID
	} else if f.KeyID != "" {
		if _, err := a.cfg.Keys.Get(r.Context(), f.KeyID); err != nil {
			a.fail(w, err)
			return
		}
	}
	cdrs, err := a.cfg.CDRs.ListCDRs(r.Context(), f)
	if err != nil {
		a.fail(w, err)
		return
	}
	if cdrs == nil {
		cdrs = []billing.CDR{}
	}
	writeJSON(w, 200, map[string]any{"cdrs": cdrs})
}

func (a *API) getCDR(w http.ResponseWriter, r *http.Request, p principal) {
	c, err := a.cfg.CDRs.GetCDR(r.Context(), r.PathValue("id"))
	if err == nil && !p.key.HasScope(keys.ScopeKeysAdmin) && c.KeyID != p.key.ID {
		err = billing.ErrNotFound
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, c)
}

func (a *API) listAudit(w http.ResponseWriter, r *http.Request, p principal) {
	f := keys.AuditFilter{Target: r.URL.Query().Get("target"), Action: r.URL.Query().Get("action")}
	var err error
	if f.Since, err = parseTimeParam(r, "since"); err == nil {
		f.Limit, err = parseLimit(r)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	a.cfg.Audit.Flush(r.Context())
	entries, err := a.cfg.Keys.AuditLog(r.Context(), f)
	if err != nil {
		a.fail(w, err)
		return
	}
	if entries == nil {
		entries = []keys.AuditEntry{}
	}
	writeJSON(w, 200, map[string]any{"audit": entries})
}
