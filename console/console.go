// Package console is the operator's web console, served by the edge at
// "/": its pages, scripts and the vendored charting library are embedded
// in the binary (no build step, no CDN), and it owns console sessions. An
// operator logs in with an API key (keys:admin for everything, usage:read
// for a read-only view of that key's own data); the key text stays on the
// server, and the browser holds only an HttpOnly, SameSite=Strict session
// cookie. Every write must also carry the session's CSRF token. The pages
// call the REST API under /v1/ like any client: the console adds no
// operation of its own, and knows nothing of SIP, media or SQL.
package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"trunkgate/keys"
)

//go:embed web
var webFS embed.FS

// Cookie and header names.
const (
	SessionCookie = "tg_session"
	CSRFHeader    = "X-CSRF-Token"
)

// Session lifetimes: idle, and at most, whatever the activity.
const (
	idleTimeout = 2 * time.Hour
	maxLifetime = 12 * time.Hour
	maxSessions = 10000
)

// ErrCSRF is a write without the session's CSRF token.
var ErrCSRF = errors.New("missing or wrong " + CSRFHeader)

// Authenticator checks a key's text (keys.Manager).
type Authenticator interface {
	Authenticate(ctx context.Context, text string) (*keys.Key, error)
}

// Console serves the pages and the login.
type Console struct {
	auth   Authenticator
	log    *slog.Logger
	static http.Handler
	now    func() time.Time

	mu       sync.Mutex
	sessions map[string]*session
}

type session struct {
	keyText string
	keyID   string
	csrf    string
	created time.Time
	used    time.Time
}

// New makes the console.
func New(auth Authenticator, log *slog.Logger) *Console {
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err) // the embed is part of the binary
	}
	return &Console{auth: auth, log: log, static: http.FileServerFS(sub), now: time.Now, sessions: map[string]*session{}}
}

// Register adds the console's routes to mux: the page at "/", its assets
// and the session endpoints under /console/.
func (c *Console) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", c.page)
	mux.Handle("GET /console/assets/", http.StripPrefix("/console/assets", c.secured(c.static)))
	mux.HandleFunc("POST /console/login", c.login)
	mux.HandleFunc("POST /console/logout", c.logout)
	mux.HandleFunc("GET /console/session", c.current)
}

// securityHeaders keep the console out of frames and its scripts to its
// own files.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "+
		"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

func (c *Console) secured(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		h.ServeHTTP(w, r)
	})
}

func (c *Console) page(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	w.Header().Set("Cache-Control", "no-store")
	http.ServeFileFS(w, r, webFS, "web/index.html")
}

// Who is the key behind a console session, for the pages.
type Who struct {
	KeyID     string   `json:"key_id"`
	Name      string   `json:"name"`
	Mode      string   `json:"mode"`
	Scopes    []string `json:"scopes"`
	Admin     bool     `json:"admin"`
	CSRFToken string   `json:"csrf_token"`
}

func who(k *keys.Key, csrf string) Who {
	w := Who{KeyID: k.ID, Name: k.Name, Mode: string(k.Mode), Admin: k.HasScope(keys.ScopeKeysAdmin), CSRFToken: csrf}
	for _, s := range k.Scopes {
		w.Scopes = append(w.Scopes, string(s))
	}
	return w
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Key string `json:"key"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	if err := dec.Decode(&body); err != nil || body.Key == "" {
		writeError(w, http.StatusBadRequest, "bad_request", `want {"key": "tg_..."}`)
		return
	}
	if !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "cross_origin", "login from another site")
		return
	}
	k, err := c.auth.Authenticate(r.Context(), body.Key)
	if err != nil {
		c.log.Info("console login refused", "remote", r.RemoteAddr, "reason", err.Error())
		writeError(w, http.StatusUnauthorized, "unauthorized", "this key cannot log in: unknown, revoked or expired")
		return
	}
	if !k.HasScope(keys.ScopeKeysAdmin) && !k.HasScope(keys.ScopeUsageRead) {
		writeError(w, http.StatusForbidden, "scope_missing", "the console needs a key with keys:admin or usage:read")
		return
	}
	sid, csrf := token(), token()
	now := c.now()
	c.mu.Lock()
	c.expireLocked(now)
	if len(c.sessions) >= maxSessions {
		c.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "overloaded", "too many console sessions")
		return
	}
	c.sessions[sid] = &session{keyText: body.Key, keyID: k.ID, csrf: csrf, created: now, used: now}
	c.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: sid, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(maxLifetime.Seconds())})
	c.log.Info("console login", "key_id", k.ID, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, who(k, csrf))
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(SessionCookie); err == nil {
		c.mu.Lock()
		delete(c.sessions, ck.Value)
		c.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	w.WriteHeader(http.StatusNoContent)
}

// current tells a reloaded page who is logged in, and its CSRF token
// (SameSite=Strict keeps other sites' requests from carrying the cookie,
// and CORS from reading the answer).
func (c *Console) current(w http.ResponseWriter, r *http.Request) {
	s, ok := c.lookup(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "unauthorized", "not logged in")
		return
	}
	k, err := c.auth.Authenticate(r.Context(), s.keyText)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "unauthorized", "the session's key is no longer valid")
		return
	}
	writeJSON(w, http.StatusOK, who(k, s.csrf))
}

// KeyText is the key text of the request's console session, for the
// REST API's authentication: ok is false without a session cookie (or
// with an expired one). A request that changes something must carry the
// session's CSRF token and come from the console's own origin: else
// ErrCSRF.
func (c *Console) KeyText(r *http.Request) (string, bool, error) {
	s, ok := c.lookup(r)
	if !ok {
		return "", false, nil
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(s.csrf)) != 1 || !sameOrigin(r) {
			return "", true, ErrCSRF
		}
	}
	return s.keyText, true, nil
}

func (c *Console) lookup(r *http.Request) (session, bool) {
	ck, err := r.Cookie(SessionCookie)
	if err != nil || ck.Value == "" {
		return session{}, false
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.sessions[ck.Value]
	if !ok || now.Sub(s.used) > idleTimeout || now.Sub(s.created) > maxLifetime {
		delete(c.sessions, ck.Value)
		return session{}, false
	}
	s.used = now
	return *s, true
}

// expireLocked drops sessions past their time (c.mu held).
func (c *Console) expireLocked(now time.Time) {
	for id, s := range c.sessions {
		if now.Sub(s.used) > idleTimeout || now.Sub(s.created) > maxLifetime {
			delete(c.sessions, id)
		}
	}
}

// sameOrigin: a browser names the page's origin on a write; it must be
// this server's. A request without Origin is not a browser's cross-site
// one (curl, the CLI).
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	return origin == scheme+r.Host
}

func token() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("console: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}
