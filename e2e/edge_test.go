package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"trunkgate/internal/sqldb"
	"trunkgate/internal/sqldb/sqldbtest"
	"trunkgate/internal/tlsconf"
	"trunkgate/internal/tlsconf/tlstest"
	"trunkgate/keys"
)

// Edge is a running trunkgate binary.
type Edge struct {
	t       *testing.T
	SIPPort int
	// SIPTLSPort is the SIP over TLS port of an edge with a certificate.
	SIPTLSPort int
	// RTPLo and RTPHi bound its RTP ports.
	RTPLo, RTPHi int
	HTTP         string // http://127.0.0.1:port
	AdminKey     string
	DB           string
	// CA is the CA bundle of an edge serving HTTPS (StartTLSEdge), and
	// client the HTTP client that trusts it.
	CA     string
	TLS    tlstest.Pair // its certificate and key files
	client *http.Client
	cmd    *exec.Cmd
	stdout *lockedBuffer
	stderr *lockedBuffer
	exited chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type edgeOpts struct {
	args []string
	env  []string
}

// StartEdge runs trunkgate serve on loopback with a fresh database and an
// imported admin key, and stops it (SIGTERM, then waits) at cleanup.
func StartEdge(t *testing.T, extraArgs ...string) *Edge {
	t.Helper()
	return startEdge(t, edgeBinary, "", extraArgs...)
}

// startEdgeAs starts an edge whose admin key is admin: a second edge on
// another's database.
func startEdgeAs(t *testing.T, admin string, extraArgs ...string) *Edge {
	t.Helper()
	return startEdge(t, edgeBinary, admin, extraArgs...)
}

// StartTimingEdge is StartEdge with the binary built without the race
// detector, for tests that measure time on the wire.
func StartTimingEdge(t *testing.T, extraArgs ...string) *Edge {
	t.Helper()
	return startEdge(t, timingEdgeBinary(t), "", extraArgs...)
}

// upLine is the edge's log line that gives its real SIP and HTTP addresses.
var upLine = regexp.MustCompile(`msg="trunkgate up" sip=127\.0\.0\.1:(\d+) http=(https?://127\.0\.0\.1:\d+)`)

// tlsUpLine gives the SIP over TLS port, when the edge has one.
var tlsUpLine = regexp.MustCompile(`msg="trunkgate up" .*sip_tls=127\.0\.0\.1:(\d+)`)

func startEdge(t *testing.T, binary, admin string, extraArgs ...string) *Edge {
	t.Helper()
	return startEdgeTLS(t, binary, admin, "", nil, extraArgs...)
}

// StartTLSEdge starts an edge serving HTTPS and WSS with a certificate
// for 127.0.0.1 from ca.
func StartTLSEdge(t *testing.T, ca *tlstest.CA, extraArgs ...string) *Edge {
	t.Helper()
	pair := ca.Issue(t, t.TempDir(), "edge", "127.0.0.1")
	pool, err := tlsconf.CAPool(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	e := startEdgeTLS(t, edgeBinary, "", ca.File, &http.Client{Transport: tr},
		append([]string{"--tls-cert", pair.CertFile, "--tls-key", pair.KeyFile, "--sip-tls-addr", "127.0.0.1:0"}, extraArgs...)...)
	e.TLS = pair
	return e
}

func startEdgeTLS(t *testing.T, binary, admin, ca string, client *http.Client, extraArgs ...string) *Edge {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	dir := t.TempDir()
	if admin == "" {
		_, admin = keys.NewText(keys.Live)
	}
	lo, hi := rtpRange(t)
	e := &Edge{t: t, AdminKey: admin, DB: filepath.Join(dir, "edge.db"), CA: ca, client: client, RTPLo: lo, RTPHi: hi + 1,
		stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	if sqldbtest.Engine() == sqldb.Postgres {
		e.DB = sqldbtest.PostgresURL(t)
	}
	for i, a := range extraArgs { // a test's own --db: edges sharing one database
		if a == "--db" && i+1 < len(extraArgs) {
			e.DB = extraArgs[i+1]
		}
	}
	// SIP and HTTP bind port 0: the kernel picks free ports, and the edge
	// says which in its "trunkgate up" line.
	args := append([]string{"serve",
		"--sip-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0",
		"--rtp-ports", fmt.Sprintf("%d-%d", lo, hi),
		"--db", e.DB, "--log-level", "debug", "--drain-timeout", "2s",
	}, extraArgs...)
	e.cmd = exec.Command(binary, args...)
	e.cmd.Env = append(os.Environ(), "TRUNKGATE_ADMIN_KEY="+admin)
	e.cmd.Stdout, e.cmd.Stderr = e.stdout, e.stderr
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		e.cmd.Wait()
		close(e.exited)
	}()
	t.Cleanup(e.Stop)
	// The edge says where it listens, then answers /readyz.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := upLine.FindStringSubmatch(e.stderr.String()); e.HTTP == "" && m != nil {
			e.SIPPort, _ = strconv.Atoi(m[1])
			e.HTTP = m[2]
			if m := tlsUpLine.FindStringSubmatch(e.stderr.String()); m != nil {
				e.SIPTLSPort, _ = strconv.Atoi(m[1])
			}
		}
		if e.HTTP != "" {
			if res, err := e.httpClient().Get(e.HTTP + "/readyz"); err == nil {
				res.Body.Close()
				if res.StatusCode == 200 {
					break
				}
			}
		}
		select {
		case <-e.exited:
			t.Fatalf("trunkgate exited at start:\n%s", e.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("trunkgate not ready:\n%s", e.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return e
}

// Stop drains the edge with SIGTERM and waits for it to exit.
func (e *Edge) Stop() {
	if e.cmd.Process == nil {
		return
	}
	// A test may have stopped it already (a drain test): its log and the
	// race check still count.
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(20 * time.Second):
		e.cmd.Process.Kill()
		<-e.exited
		e.t.Errorf("trunkgate did not stop on SIGTERM")
	}
	if e.t.Failed() {
		e.t.Logf("trunkgate stderr:\n%s", tail(e.stderr.String(), 120))
	}
	if strings.Contains(e.stderr.String(), "DATA RACE") {
		e.t.Errorf("the race detector fired in trunkgate:\n%s", e.stderr.String())
	}
}

// CPU is the processor time the edge has used so far (user + system),
// from /proc (Linux; clock ticks of 10 ms).
func (e *Edge) CPU() time.Duration {
	e.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.cmd.Process.Pid))
	if err != nil {
		e.t.Fatal(err)
	}
	// Fields after the command name (which is in parentheses): state is
	// field 3, utime 14, stime 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// Logs is everything the edge wrote so far (stderr: logs; stdout: banner).
func (e *Edge) Logs() string { return e.stdout.String() + e.stderr.String() }

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// API calls the REST API with key (admin if empty) and decodes the JSON
// answer into out when out is not nil. It returns the status.
func (e *Edge) API(method, path, key string, body any, out any) int {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.HTTP+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if key == "" {
		key = e.AdminKey
	}
	if key != "none" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := e.httpClient().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: %d %s: %v", method, path, res.StatusCode, data, err)
		}
	}
	return res.StatusCode
}

// MustAPI is API that fails the test unless the status is want.
func (e *Edge) MustAPI(want int, method, path string, body, out any) {
	e.t.Helper()
	var raw json.RawMessage
	got := e.API(method, path, "", body, &raw)
	if got != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, got, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatal(err)
		}
	}
}

// CreatedKey is the API's answer to a key creation.
type CreatedKey struct {
	Key struct {
		ID     string
		Limits keys.Limits
	}
	APIKey        string `json:"api_key"`
	SigningSecret string `json:"signing_secret"`
}

// NewKey creates a key through the API.
func (e *Edge) NewKey(name string, limits keys.Limits, scopes ...string) CreatedKey {
	e.t.Helper()
	if len(scopes) == 0 {
		scopes = []string{"calls:inbound", "usage:read"}
	}
	var c CreatedKey
	e.MustAPI(201, "POST", "/v1/keys", map[string]any{"name": name, "mode": "live", "scopes": scopes, "limits": limits}, &c)
	return c
}

// NewTrunk creates an inbound trunk through the API and returns its id.
func (e *Edge) NewTrunk(keyID, number, aiURL string, extra map[string]any) string {
	e.t.Helper()
	spec := map[string]any{"key_id": keyID, "numbers": []string{number}, "ai_url": aiURL, "allowed_sources": []string{"127.0.0.0/8"}}
	for k, v := range extra {
		spec[k] = v
	}
	var tr struct{ ID string }
	e.MustAPI(201, "POST", "/v1/trunks", spec, &tr)
	return tr.ID
}

// ceilSeconds is what a call of ms milliseconds is billed: whole seconds,
// rounded up.
func ceilSeconds(ms int64) int64 { return (ms + 999) / 1000 }

// CDR is the part of a CDR the tests read.
type CDR struct {
	CallID    string `json:"call_id"`
	SIPCallID string `json:"sip_call_id"`
	KeyID     string `json:"key_id"`
	TrunkID   string `json:"trunk_id"`
	Direction string `json:"direction"`
	Gateway   string `json:"gateway"`
	Transport string `json:"transport"`
	Codec     string `json:"codec"`
	// MediaEncryption is "srtp" or "none".
	MediaEncryption string    `json:"media_encryption"`
	TestKey         bool      `json:"test_key"`
	Sandbox         bool      `json:"sandbox"`
	RatePerMinute   int64     `json:"rate_per_minute"`
	RatePrefix      string    `json:"rate_prefix"`
	Country         string    `json:"country"`
	From            string    `json:"from"`
	To              string    `json:"to"`
	SetupAt         time.Time `json:"setup_at"`
	AnswerAt        time.Time `json:"answer_at"`
	EndAt           time.Time `json:"end_at"`
	DurationMS      int64     `json:"duration_ms"`
	BilledSeconds   int64     `json:"billed_seconds"`
	CostMicros      int64     `json:"cost_micros"`
	FinalCode       int       `json:"final_code"`
	HangupSide      string    `json:"hangup_side"`
	HangupCause     string    `json:"hangup_cause"`
	Status          string    `json:"status"`
	Node            string    `json:"node"`
	Media           struct {
		PacketsIn   uint64  `json:"packets_in"`
		PacketsOut  uint64  `json:"packets_out"`
		PacketsLost int64   `json:"packets_lost"`
		JitterMS    float64 `json:"jitter_ms"`
		RTTMS       float64 `json:"rtt_ms"`
		DTMFEvents  int     `json:"dtmf_events"`
		// The edge's own delays (absent when nothing was measured).
		EdgeToApp     *Latency `json:"edge_to_app"`
		EdgeToCarrier *Latency `json:"edge_to_carrier"`
	} `json:"media"`
}

// Latency is a CDR's digest of the edge's delay one way.
type Latency struct {
	P50MS float64 `json:"p50_ms"`
	P95MS float64 `json:"p95_ms"`
	MaxMS float64 `json:"max_ms"`
}

// CDRs lists the CDRs of a key.
func (e *Edge) CDRs(keyID string) []CDR {
	e.t.Helper()
	var out struct{ CDRs []CDR }
	e.MustAPI(200, "GET", "/v1/cdrs?key_id="+keyID, nil, &out)
	return out.CDRs
}

// WaitCDRs polls until the key has n CDRs that are not live.
func (e *Edge) WaitCDRs(keyID string, n int) []CDR {
	e.t.Helper()
	var cdrs []CDR
	waitFor(e.t, 10*time.Second, fmt.Sprintf("%d CDRs of key %s", n, keyID), func() bool {
		cdrs = cdrs[:0]
		for _, c := range e.CDRs(keyID) {
			if c.Status != "live" {
				cdrs = append(cdrs, c)
			}
		}
		return len(cdrs) >= n
	})
	return cdrs
}

// Scrape is the whole /metrics text.
func (e *Edge) Scrape() string {
	e.t.Helper()
	res, err := e.httpClient().Get(e.HTTP + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

// Metric reads one sample from /metrics (name with its labels, as printed).
func (e *Edge) Metric(series string) (float64, bool) {
	e.t.Helper()
	res, err := e.httpClient().Get(e.HTTP + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(line[len(series):]), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// Goroutines is the edge's goroutine count, from the Go collector.
func (e *Edge) Goroutines() int {
	v, ok := e.Metric("go_goroutines")
	if !ok {
		e.t.Fatal("no go_goroutines metric")
	}
	return int(v)
}

// WaitGoroutines polls until the edge is back to at most n goroutines (its
// calls' goroutines have all ended).
func (e *Edge) WaitGoroutines(n int) {
	e.t.Helper()
	var got int
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got = e.Goroutines(); got <= n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("edge has %d goroutines, want at most %d: calls left goroutines behind", got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitLog polls the edge's logs for a regular expression.
func (e *Edge) WaitLog(pattern string) []string {
	e.t.Helper()
	re := regexp.MustCompile(pattern)
	var m []string
	waitFor(e.t, 10*time.Second, "log line "+pattern, func() bool {
		m = re.FindStringSubmatch(e.Logs())
		return m != nil
	})
	return m
}

// waitFor polls cond every 10 ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %v waiting for %s", d, what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// httpClient is the client that trusts the edge's HTTPS certificate, if it
// has one.
func (e *Edge) httpClient() *http.Client {
	if e.client == nil {
		return http.DefaultClient
	}
	return e.client
}
