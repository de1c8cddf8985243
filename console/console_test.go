package console

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"trunkgate/keys"
)

// fakeKeys knows three keys by their text.
type fakeKeys map[string]*keys.Key

func (f fakeKeys) Authenticate(_ context.Context, text string) (*keys.Key, error) {
	if k, ok := f[text]; ok {
		return k, nil
	}
	return nil, errors.New("key unknown")
}

func newTestConsole() (*Console, *http.ServeMux) {
	c := New(fakeKeys{
		"tg_admin_text":  {ID: "AAAAAAAAAAAA", Name: "ops", Scopes: []keys.Scope{keys.ScopeKeysAdmin}},
		"tg_reader_text": {ID: "RRRRRRRRRRRR", Scopes: []keys.Scope{keys.ScopeUsageRead}},
		"tg_caller_text": {ID: "CCCCCCCCCCCC", Scopes: []keys.Scope{keys.ScopeCallsOutbound}},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	mux := http.NewServeMux()
	c.Register(mux)
	return c, mux
}

func login(t *testing.T, mux *http.ServeMux, key string) (*httptest.ResponseRecorder, Who) {
	t.Helper()
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("POST", "/console/login", strings.NewReader(`{"key":"`+key+`"}`)))
	var who Who
	_ = json.Unmarshal(w.Body.Bytes(), &who)
	return w, who
}

func TestLogin(t *testing.T) {
	_, mux := newTestConsole()
	for _, tt := range []struct {
		key    string
		status int
	}{{"tg_admin_text", 200}, {"tg_reader_text", 200}, {"tg_caller_text", 403}, {"nope", 401}, {"", 400}} {
		w, who := login(t, mux, tt.key)
		if w.Code != tt.status {
			t.Fatalf("login with %q: %d, want %d", tt.key, w.Code, tt.status)
		}
		if w.Code != 200 {
			if w.Header().Get("Set-Cookie") != "" {
				t.Fatalf("a refused login set a cookie")
			}
			continue
		}
		ck := w.Result().Cookies()[0]
		if ck.Name != SessionCookie || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Value == tt.key ||
			strings.Contains(w.Body.String(), tt.key+`"`) || who.CSRFToken == "" {
			t.Fatalf("session cookie %+v, body %s", ck, w.Body)
		}
		if who.Admin != (tt.key == "tg_admin_text") {
			t.Fatalf("%s: admin %v", tt.key, who.Admin)
		}
	}
}

func TestSessionKeyTextAndCSRF(t *testing.T) {
	c, mux := newTestConsole()
	w, who := login(t, mux, "tg_admin_text")
	ck := w.Result().Cookies()[0]
	req := func(method, csrf, origin string) *http.Request {
		r := httptest.NewRequest(method, "http://edge.example/v1/keys", nil)
		r.AddCookie(ck)
		if csrf != "" {
			r.Header.Set(CSRFHeader, csrf)
		}
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		return r
	}
	for _, tt := range []struct {
		name           string
		r              *http.Request
		ok             bool
		err            error
		wantKeyForRead bool
	}{
		{"read", req("GET", "", ""), true, nil, true},
		{"write with the token", req("POST", who.CSRFToken, "http://edge.example"), true, nil, true},
		{"write without it", req("POST", "", ""), true, ErrCSRF, false},
		{"write with another token", req("POST", "x"+who.CSRFToken, ""), true, ErrCSRF, false},
		{"write from another site", req("POST", who.CSRFToken, "https://evil.example"), true, ErrCSRF, false},
		{"no cookie", httptest.NewRequest("GET", "/v1/keys", nil), false, nil, false},
	} {
		text, ok, err := c.KeyText(tt.r)
		if ok != tt.ok || !errors.Is(err, tt.err) || (text == "tg_admin_text") != tt.wantKeyForRead {
			t.Errorf("%s: %q, %v, %v", tt.name, text, ok, err)
		}
	}
	// Idle sessions expire; logout ends one at once.
	c.now = func() time.Time { return time.Now().Add(idleTimeout + time.Minute) }
	if _, ok, _ := c.KeyText(req("GET", "", "")); ok {
		t.Fatal("an idle session still works")
	}
	c.now = time.Now
	w, _ = login(t, mux, "tg_admin_text")
	ck = w.Result().Cookies()[0]
	out := httptest.NewRequest("POST", "/console/logout", nil)
	out.AddCookie(ck)
	mux.ServeHTTP(httptest.NewRecorder(), out)
	if _, ok, _ := c.KeyText(req("GET", "", "")); ok {
		t.Fatal("a session outlived its logout")
	}
}

func TestPageAndAssets(t *testing.T) {
	_, mux := newTestConsole()
	for path, want := range map[string]string{"/": "text/html", "/console/assets/app.js": "javascript",
		"/console/assets/vendor/uPlot.iife.min.js": "javascript", "/console/assets/style.css": "text/css"} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != 200 || !strings.Contains(w.Header().Get("Content-Type"), want) ||
			!strings.Contains(w.Header().Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Errorf("%s: %d %q", path, w.Code, w.Header().Get("Content-Type"))
		}
	}
}
