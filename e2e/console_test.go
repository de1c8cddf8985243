package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"trunkgate/keys"
)

// Browser is a headless Chromium (Debian's) driven over the DevTools
// protocol, one tab per test. Each step's page can be saved as a
// screenshot; a failing test saves one of where it stood.
type Browser struct {
	t    *testing.T
	ctx  context.Context
	dir  string // screenshots
	base string // the edge's URL
}

// NewBrowser starts Chromium for e. Screenshots go to
// $TRUNKGATE_SCREENSHOTS when set (to keep them), else a temporary
// directory.
func NewBrowser(t *testing.T, e *Edge) *Browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: run make deps (Debian package chromium)")
	}
	dir := os.Getenv("TRUNKGATE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1400, 900), chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(t.TempDir()))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	b := &Browser{t: t, ctx: ctx, dir: dir, base: e.HTTP}
	t.Cleanup(func() {
		if t.Failed() {
			b.Shot("failure")
		}
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Run(ctx); err != nil { // starts the browser
		t.Fatalf("chromium: %v", err)
	}
	return b
}

// Run runs actions, each step bounded so that a missing element fails
// the test instead of hanging it.
func (b *Browser) Run(what string, actions ...chromedp.Action) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		b.Shot("failure-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

// Shot saves a full-page screenshot as name.png and logs its path.
func (b *Browser) Shot(name string) string {
	var png []byte
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(b.dir, "console-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	b.t.Logf("screenshot: %s", path)
	return path
}

// Page opens one of the console's pages.
func (b *Browser) Page(name, ready string) {
	b.t.Helper()
	b.Run("open "+name, chromedp.Navigate(b.base+"/#"+name), chromedp.WaitVisible("#page-"+name, chromedp.ByQuery),
		chromedp.WaitVisible(ready, chromedp.ByQuery))
}

// TestConsoleInBrowser drives the web console in Chromium as an operator
// would: log in with the admin key, create a key and see its secret once,
// watch a SIPp call appear in the live calls (pushed, no reload) and hang
// it up from the page, then find its CDR, the usage chart and the audit
// entry; a usage:read key gets the read-only view of its own data; a write
// without the CSRF token is refused.
func TestConsoleInBrowser(t *testing.T) {
	e := StartEdge(t)
	app := StartApp(t)
	k := e.NewKey("carrier traffic", keys.Limits{RatePerMinute: 60_000, MonthlySpendCap: 50_000_000})
	e.NewTrunk(k.Key.ID, "+15557300", app.URL, map[string]any{"media_encryption": "allow"})
	b := NewBrowser(t, e)

	b.Run("log in", chromedp.Navigate(e.HTTP+"/"), chromedp.WaitVisible("#login-key", chromedp.ByQuery),
		chromedp.SendKeys("#login-key", "tg_live_not_a_key", chromedp.ByQuery), chromedp.Click("#login-form button[type=submit]", chromedp.ByQuery),
		chromedp.WaitVisible("#login-error", chromedp.ByQuery))
	var loginError string
	b.Run("read the refusal", chromedp.Poll(`document.querySelector("#login-error").textContent`, &loginError,
		chromedp.WithPollingTimeout(5*time.Second)))
	if !strings.Contains(loginError, "cannot log in") {
		t.Fatalf("login with a bad key: %q", loginError)
	}
	b.Shot("login")
	b.Run("log in", chromedp.SetValue("#login-key", e.AdminKey, chromedp.ByQuery), chromedp.Click("#login-form button[type=submit]", chromedp.ByQuery),
		chromedp.WaitVisible("#page-calls", chromedp.ByQuery), chromedp.WaitVisible("#calls-empty", chromedp.ByQuery))

	// Keys: a new key's text is shown once.
	b.Page("keys", `tr[data-key="`+k.Key.ID+`"]`)
	var secret string
	b.Run("create a key", chromedp.SendKeys("#key-name", "made in the browser", chromedp.ByQuery),
		chromedp.Click("#key-create button[type=submit]", chromedp.ByQuery), chromedp.WaitVisible("#key-secret", chromedp.ByQuery),
		chromedp.Text("#key-secret-text", &secret, chromedp.ByQuery))
	created := regexp.MustCompile(`^tg_test_([A-Za-z0-9]{12})_[A-Za-z0-9]{32}$`).FindStringSubmatch(secret)
	if created == nil {
		t.Fatalf("the new key's text: %q", secret)
	}
	b.Run("see it listed", chromedp.WaitVisible(`tr[data-key="`+created[1]+`"]`, chromedp.ByQuery))
	b.Shot("keys-created")
	var after string
	b.Run("dismiss and reload", chromedp.Click("#key-secret-done", chromedp.ByQuery), chromedp.Reload(),
		chromedp.WaitVisible(`tr[data-key="`+created[1]+`"]`, chromedp.ByQuery),
		chromedp.Evaluate(`document.body.innerText`, &after))
	if strings.Contains(after, secret) {
		t.Fatal("the key's text is shown again after a reload")
	}
	// Limits edited inline take effect.
	b.Run("edit max_channels", chromedp.SetValue(`tr[data-key="`+k.Key.ID+`"] input[data-field="max_channels"]`, "7", chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelector('tr[data-key="`+k.Key.ID+`"] input[data-field="max_channels"]').dispatchEvent(new Event("change"))`, nil))
	waitFor(t, 5*time.Second, "max_channels 7 through the API", func() bool {
		var v struct{ Limits keys.Limits }
		e.MustAPI(200, "GET", "/v1/keys/"+k.Key.ID, nil, &v)
		return v.Limits.MaxChannels == 7
	})

	// Live calls: a SIPp call appears without a reload; hang it up.
	b.Page("calls", "#calls-empty")
	run := Call{Number: "+15557300", Hangup: "callee", WaitByeMS: 30000, Steps: []Step{{PauseMS: 500}}}.Start(t, e)
	app.Next(t).Expect(t, "start")
	b.Run("see the call", chromedp.WaitVisible(`#calls-table tr[data-call]`, chromedp.ByQuery))
	var callRow string
	b.Run("read its row", chromedp.Text(`#calls-table tbody`, &callRow, chromedp.ByQuery))
	if !strings.Contains(callRow, k.Key.ID) || !strings.Contains(callRow, "+15557300") || !strings.Contains(callRow, "UDP/none") {
		t.Fatalf("live call row: %q", callRow)
	}
	b.Shot("calls-live")
	b.Run("hang up", chromedp.Evaluate(`window.confirm = () => true`, nil),
		chromedp.Click(`#calls-table button.danger`, chromedp.ByQuery), chromedp.WaitVisible("#calls-empty", chromedp.ByQuery))
	run.Wait(t).MustPass(t)
	cdr := e.WaitCDRs(k.Key.ID, 1)[0]
	if cdr.HangupSide != "edge" || cdr.HangupCause != "operator hangup" {
		t.Fatalf("CDR of the call hung up from the console: %+v", cdr)
	}

	// Usage: the chart and the table have the call.
	b.Page("usage", "#chart-calls canvas")
	var calls float64
	b.Run("read the chart", chromedp.Poll(`(() => { const c = window.trunkgate.charts.calls; return c ? c.data[1].reduce((a, b) => a + b, 0) : 0 })()`,
		&calls, chromedp.WithPollingTimeout(5*time.Second)))
	if calls < 1 {
		t.Fatalf("the calls chart sums %v calls", calls)
	}
	var usage string
	b.Run("read the CDRs", chromedp.WaitVisible(`#usage-cdrs tbody tr`, chromedp.ByQuery), chromedp.Text("#usage-cdrs", &usage, chromedp.ByQuery))
	if !strings.Contains(usage, cdr.CallID) {
		t.Fatalf("usage page without the call %s:\n%s", cdr.CallID, usage)
	}
	var csvHref string
	b.Run("CSV link", chromedp.AttributeValue("#usage-csv", "href", &csvHref, nil, chromedp.ByQuery))
	if !strings.Contains(csvHref, "format=csv") {
		t.Fatalf("CSV link %q", csvHref)
	}
	b.Shot("usage")

	// Audit: the hang-up is there, by filter.
	b.Page("audit", "#audit-form")
	var audit string
	b.Run("filter", chromedp.SendKeys("#audit-action", "call.hangup", chromedp.ByQuery), chromedp.Click("#audit-form button[type=submit]", chromedp.ByQuery),
		chromedp.WaitVisible(`#audit-table tbody tr`, chromedp.ByQuery), chromedp.Text("#audit-table tbody", &audit, chromedp.ByQuery))
	if !strings.Contains(audit, "call.hangup") || !strings.Contains(audit, cdr.CallID) {
		t.Fatalf("audit page:\n%s", audit)
	}
	b.Shot("audit")
	b.Page("trunks", `#trunks-in tbody tr`)
	b.Shot("trunks")
	b.Page("health", `#health-refusals`)
	var answered string
	b.Run("health figures", chromedp.Poll(`(t => t !== "–" && t)(document.querySelector("#health-answered").textContent)`, &answered,
		chromedp.WithPollingTimeout(5*time.Second)))
	if answered != "1" {
		t.Fatalf("health: %q calls answered, want 1", answered)
	}
	b.Shot("health")

	// A write without the CSRF token is refused, even with the cookie.
	var status float64
	b.Run("forged write", chromedp.Evaluate(`fetch("/v1/keys/`+k.Key.ID+`/revoke", {method: "POST", credentials: "same-origin"}).then(r => r.status)`,
		&status, func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
	if status != 403 {
		t.Fatalf("a write without the CSRF token: %v, want 403", status)
	}

	// Read-only: a usage:read key sees its own key and usage, nothing else.
	reader := e.NewKey("reader", keys.Limits{}, "usage:read")
	b.Run("log out", chromedp.Click("#logout", chromedp.ByQuery), chromedp.WaitVisible("#login-key", chromedp.ByQuery),
		chromedp.SetValue("#login-key", reader.APIKey, chromedp.ByQuery), chromedp.Click("#login-form button[type=submit]", chromedp.ByQuery),
		chromedp.WaitVisible("#page-usage", chromedp.ByQuery))
	var nav string
	b.Run("read-only nav", chromedp.Evaluate(`[...document.querySelectorAll("nav a")].filter(a => !a.hidden).map(a => a.textContent).join(",")`, &nav))
	if nav != "Keys,Usage" {
		t.Fatalf("read-only console shows %q", nav)
	}
	b.Page("keys", `tr[data-key="`+reader.Key.ID+`"]`)
	var rows float64
	b.Run("own key only", chromedp.Evaluate(`document.querySelectorAll("#keys-table tbody tr").length`, &rows))
	if rows != 1 {
		t.Fatalf("read-only keys page lists %v keys", rows)
	}
	b.Shot("read-only")
	// Through REST too: its own record, not another key's.
	if own, other := e.API("GET", "/v1/keys/"+reader.Key.ID, reader.APIKey, nil, nil),
		e.API("GET", "/v1/keys/"+k.Key.ID, reader.APIKey, nil, nil); own != 200 || other != 403 {
		t.Fatalf("a usage:read key reading keys: own %d, another %d; want 200, 403", own, other)
	}
}
