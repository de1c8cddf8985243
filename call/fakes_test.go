package call

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"trunkgate/billing"
	"trunkgate/bridge"
	"trunkgate/keys"
	"trunkgate/ledger"
	"trunkgate/media"
	"trunkgate/metrics"
	"trunkgate/refusal"
	"trunkgate/sip"
	"trunkgate/trunks"
)

// Fakes of every part a call drives. Each records what was done to it, so
// that a test can check the outcome value by value.

type fakeDialog struct {
	done    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	byes    []string // Reason headers of BYEs sent
	panicky bool     // Done panics: a bug inside a running call
}

func newFakeDialog() *fakeDialog { return &fakeDialog{done: make(chan struct{})} }

func (d *fakeDialog) Done() <-chan struct{} {
	if d.panicky {
		panic("fake dialog: bug")
	}
	return d.done
}

func (d *fakeDialog) Hangup(_ context.Context, reason string) error {
	d.mu.Lock()
	d.byes = append(d.byes, reason)
	d.mu.Unlock()
	d.remoteBye()
	return nil
}

func (d *fakeDialog) OnDTMF(func(byte))    {}
func (d *fakeDialog) RemoteTarget() string { return "sip:carrier@198.51.100.7:5060" }
func (d *fakeDialog) Refer(context.Context, string, sip.TransferProgress) (int, error) {
	return 501, errors.New("fake dialogs do not transfer")
}

// remoteBye is the far end hanging up.
func (d *fakeDialog) remoteBye() { d.once.Do(func() { close(d.done) }) }

func (d *fakeDialog) sentByes() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.byes...)
}

var _ Dialog = (*fakeDialog)(nil)

type fakeMedia struct {
	done    chan struct{}
	err     error
	mu      sync.Mutex
	started bool
	closed  int
	codec   media.Codec
	remote  netip.AddrPort
	cfg     media.Config // as NewSession was given it
	latency media.Latency
}

func (m *fakeMedia) Play([]int16, time.Time)               {}
func (m *fakeMedia) SampleRate() int                       { return 8000 }
func (m *fakeMedia) ToCarrierLatency() *media.Latency      { return &m.latency }
func (m *fakeMedia) Mark(string)                           {}
func (m *fakeMedia) Clear() (time.Duration, time.Duration) { return 0, 0 }
func (m *fakeMedia) SendDTMF(string, time.Duration) error  { return nil }
func (m *fakeMedia) LocalPort() int                        { return 40000 }
func (m *fakeMedia) SetRemote(rtp, _ netip.AddrPort)       { m.remote = rtp }
func (m *fakeMedia) SetPayloadTypes(uint8, uint8)          {}
func (m *fakeMedia) SetDirection(media.Direction)          {}
func (m *fakeMedia) SetCodec(c media.Codec, _ int)         { m.codec = c }
func (m *fakeMedia) SetSRTP(*media.SRTP)                   {}
func (m *fakeMedia) Done() <-chan struct{}                 { return m.done }
func (m *fakeMedia) Err() error                            { return m.err }
func (m *fakeMedia) Stats() media.Stats                    { return media.Stats{PacketsIn: 10, PacketsOut: 12} }
func (m *fakeMedia) Queued() int                           { return 0 }
func (m *fakeMedia) timeout()                              { m.err = media.ErrRTPTimeout; close(m.done) }
func (m *fakeMedia) Start()                                { m.mu.Lock(); m.started = true; m.mu.Unlock() }
func (m *fakeMedia) Close() error                          { m.mu.Lock(); m.closed++; m.mu.Unlock(); return nil }
func (m *fakeMedia) state() (started bool, closed int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.started, m.closed
}
func (f *fakeFactory) NewSession(cfg media.Config) (Media, error) {
	m, err := f.next()
	if err == nil {
		m.(*fakeMedia).cfg = cfg
	}
	return m, err
}

var _ Media = (*fakeMedia)(nil)

type fakeFactory struct {
	mu       sync.Mutex
	sessions []*fakeMedia
	err      error
}

func (f *fakeFactory) next() (Media, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	m := &fakeMedia{done: make(chan struct{})}
	f.sessions = append(f.sessions, m)
	return m, nil
}

func (f *fakeFactory) last() *fakeMedia {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions[len(f.sessions)-1]
}

type fakeStream struct {
	done     chan struct{}
	once     sync.Once
	byApp    bool
	mu       sync.Mutex
	begun    bool
	progress []string
	ends     []bridge.End
}

func newFakeStream() *fakeStream { return &fakeStream{done: make(chan struct{})} }

func (s *fakeStream) Audio([]int16, int64, time.Time) {}
func (s *fakeStream) DTMF(byte)                       {}
func (s *fakeStream) MarkDone(string, bool)           {}
func (s *fakeStream) Hold(bool)                       {}
func (s *fakeStream) OnTransfer(func(string) error)   {}
func (s *fakeStream) TransferStatus(string, int)      {}
func (s *fakeStream) NoAudio() bool                   { return false }
func (s *fakeStream) ToAppLatency() *media.Latency    { return new(media.Latency) }
func (s *fakeStream) Begin(bridge.Player, bridge.Leg) { s.mu.Lock(); s.begun = true; s.mu.Unlock() }
func (s *fakeStream) Progress(status string, code int) {
	s.mu.Lock()
	s.progress = append(s.progress, status)
	s.mu.Unlock()
}
func (s *fakeStream) Done() <-chan struct{} { return s.done }
func (s *fakeStream) ClosedByApp() bool     { return s.byApp }
func (s *fakeStream) Close(end bridge.End) {
	s.mu.Lock()
	s.ends = append(s.ends, end)
	s.mu.Unlock()
	s.once.Do(func() { close(s.done) })
}
func (s *fakeStream) Counters() bridge.Counters { return bridge.Counters{FramesOut: 50} }
func (s *fakeStream) StreamSid() string         { return "MZfake" }
func (s *fakeStream) ResumeOn(http.ResponseWriter, *http.Request) error {
	return bridge.ErrNotResumable
}

// appHangsUp is the application closing its socket (or it failing).
func (s *fakeStream) appHangsUp(byApp bool) {
	s.byApp = byApp
	s.once.Do(func() { close(s.done) })
}

func (s *fakeStream) closedWith() []bridge.End {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bridge.End(nil), s.ends...)
}

var _ Stream = (*fakeStream)(nil)

type fakeApps struct {
	mu      sync.Mutex
	streams []*fakeStream
	err     error
	block   bool // wait for ctx: an app that never answers the handshake
	panics  bool
	dialled chan struct{}
}

func (a *fakeApps) Dial(ctx context.Context, cfg bridge.DialConfig) (Stream, error) {
	if a.dialled != nil {
		a.dialled <- struct{}{}
	}
	if a.panics {
		panic("fake app dialer: bug")
	}
	if a.block {
		<-ctx.Done()
		return nil, bridge.ErrDial
	}
	if a.err != nil {
		return nil, a.err
	}
	s := newFakeStream()
	a.mu.Lock()
	a.streams = append(a.streams, s)
	a.mu.Unlock()
	return s, nil
}

func (a *fakeApps) last() *fakeStream {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.streams[len(a.streams)-1]
}

// fakeLease is a lease on the real ledger (the harness's), counting its
// releases.
type fakeLease struct {
	key      *keys.Key
	hold     *ledger.Hold
	ledger   *ledger.Memory
	mu       sync.Mutex
	released int
}

func (l *fakeLease) Key() *keys.Key           { return l.key }
func (l *fakeLease) Context() context.Context { return l.hold.Context() }
func (l *fakeLease) RatePerMinute() int64 {
	if l.key.Mode == keys.Test {
		return 0 // as keys.Admitter rates test keys
	}
	return l.key.Limits.RatePerMinute
}
func (l *fakeLease) RatePrefix() string  { return "" }
func (l *fakeLease) Answer(at time.Time) { l.hold.Answer(at) }
func (l *fakeLease) Release() {
	l.mu.Lock()
	l.released++
	l.mu.Unlock()
	l.hold.Close()
}
func (l *fakeLease) releases() int { l.mu.Lock(); defer l.mu.Unlock(); return l.released }

// cancel orders the call to end, as revocation or the spend cap would.
func (l *fakeLease) cancel(cause error) { l.ledger.EndCall(l.hold.CallID(), cause) }

type fakeAdmitter struct {
	refuse error
	key    *keys.Key
	ledger *ledger.Memory
	mu     sync.Mutex
	leases []*fakeLease
	reqs   []keys.Request
}

func (a *fakeAdmitter) Admit(_ context.Context, req keys.Request) (Lease, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reqs = append(a.reqs, req)
	if a.refuse != nil {
		return nil, a.refuse
	}
	hold, err := a.ledger.Open(ledger.Entry{CallID: req.CallID, KeyID: a.key.ID, Direction: string(req.Direction),
		RatePerMinute: a.key.Limits.RatePerMinute}, ledger.Caps{})
	if err != nil {
		return nil, err
	}
	l := &fakeLease{key: a.key, hold: hold, ledger: a.ledger}
	a.leases = append(a.leases, l)
	return l, nil
}

func (a *fakeAdmitter) last() *fakeLease {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.leases[len(a.leases)-1]
}

type fakeMeter struct {
	mu       sync.Mutex
	answered []billing.CDR
	finished []billing.CDR
	done     chan billing.CDR
}

func (m *fakeMeter) Answer(_ context.Context, c *billing.CDR) error {
	m.mu.Lock()
	m.answered = append(m.answered, *c)
	m.mu.Unlock()
	return nil
}

func (m *fakeMeter) Finish(_ context.Context, c *billing.CDR) error {
	m.mu.Lock()
	m.finished = append(m.finished, *c)
	m.mu.Unlock()
	m.done <- *c
	return nil
}

// cdr waits for the next finished CDR.
func (m *fakeMeter) cdr(t *testing.T) billing.CDR {
	t.Helper()
	select {
	case c := <-m.done:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no CDR written")
		return billing.CDR{}
	}
}

type fakeAudit struct {
	mu      sync.Mutex
	entries []keys.AuditEntry
}

func (a *fakeAudit) Record(e keys.AuditEntry) {
	a.mu.Lock()
	a.entries = append(a.entries, e)
	a.mu.Unlock()
}

type fakeMetrics struct {
	mu      sync.Mutex
	refused []refusal.Reason
	ended   []string
}

func (m *fakeMetrics) Admitted(string, string) {}
func (m *fakeMetrics) Refused(_ string, r refusal.Reason) {
	m.mu.Lock()
	m.refused = append(m.refused, r)
	m.mu.Unlock()
}
func (m *fakeMetrics) Answered(time.Duration, string, string)     {}
func (m *fakeMetrics) RTP(uint64, uint64)                         {}
func (m *fakeMetrics) EdgeLatency(metrics.Delays, metrics.Delays) {}
func (m *fakeMetrics) Ended(_, side string, _ time.Duration, _, _, _ int64) {
	m.mu.Lock()
	m.ended = append(m.ended, side)
	m.mu.Unlock()
}

type fakeTrunks struct {
	inbound  map[string]*trunks.Trunk
	outbound *trunks.Trunk
	numbers  []string
}

func (f *fakeTrunks) ByNumber(n string) (*trunks.Trunk, bool) { t, ok := f.inbound[n]; return t, ok }
func (f *fakeTrunks) AllowingSource(a netip.Addr) []*trunks.Trunk {
	var out []*trunks.Trunk
	for _, t := range f.inbound {
		if t.AllowsSource(a) {
			out = append(out, t)
		}
	}
	return out
}
func (f *fakeTrunks) Outbound(keyID, trunkID string) (*trunks.Trunk, bool) {
	if f.outbound == nil || f.outbound.KeyID != keyID || trunkID != "" && trunkID != f.outbound.ID {
		return nil, false
	}
	return f.outbound, true
}
func (f *fakeTrunks) Numbers(string) []string { return f.numbers }

// fakeInvite is an inbound INVITE.
type fakeInvite struct {
	called   string
	source   netip.AddrPort
	offer    *sip.SDP
	digest   sip.DigestResult
	ctx      context.Context
	cancel   context.CancelCauseFunc
	dialog   *fakeDialog
	answerAt chan struct{}
	noAck    bool
	// transport is "UDP" unless set; certs the TLS client chain.
	transport string
	certs     []*x509.Certificate
	headers   map[string]string

	mu        sync.Mutex
	refusals  []refusal.Reason
	challenge bool
	answered  bool
	answer    []byte
	dropped   bool
}

func (i *fakeInvite) Drop() { i.mu.Lock(); i.dropped = true; i.mu.Unlock() }

func (i *fakeInvite) Header(name string) string { return i.headers[name] }

func newFakeInvite(called string) *fakeInvite {
	ctx, cancel := context.WithCancelCause(context.Background())
	offer, err := sip.ParseSDP([]byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio 6000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"))
	if err != nil {
		panic(err)
	}
	return &fakeInvite{called: called, source: netip.MustParseAddrPort("198.51.100.7:5060"), offer: offer,
		ctx: ctx, cancel: cancel, dialog: newFakeDialog()}
}

func (i *fakeInvite) Context() context.Context { return i.ctx }
func (i *fakeInvite) CallID() string           { return "sip-call-1" }
func (i *fakeInvite) CalledUser() string       { return i.called }
func (i *fakeInvite) From() sip.Party          { return sip.Party{User: "+15557654321"} }
func (i *fakeInvite) To() sip.Party            { return sip.Party{User: i.called} }
func (i *fakeInvite) Source() netip.AddrPort   { return i.source }
func (i *fakeInvite) Transport() string {
	if i.transport != "" {
		return i.transport
	}
	return "UDP"
}
func (i *fakeInvite) PeerCertificates() []*x509.Certificate { return i.certs }
func (i *fakeInvite) Received() time.Time                   { return time.Now().Add(-5 * time.Millisecond) }
func (i *fakeInvite) Offer() (*sip.SDP, error) {
	if i.offer == nil {
		return nil, errors.New("no SDP")
	}
	return i.offer, nil
}
func (i *fakeInvite) CheckDigest(string, string, string) sip.DigestResult { return i.digest }
func (i *fakeInvite) Challenge(string, bool) error {
	i.mu.Lock()
	i.challenge = true
	i.mu.Unlock()
	return nil
}
func (i *fakeInvite) Trying() error { return nil }
func (i *fakeInvite) Refuse(r refusal.Reason) error {
	i.mu.Lock()
	i.refusals = append(i.refusals, r)
	i.mu.Unlock()
	return nil
}
func (i *fakeInvite) Answer(sdp []byte, _ sip.ReinviteFunc) (Dialog, error) {
	i.mu.Lock()
	i.answer = sdp
	i.mu.Unlock()
	if i.answerAt != nil {
		<-i.answerAt
	}
	if err := context.Cause(i.ctx); err != nil {
		return nil, err
	}
	if i.noAck {
		return nil, sip.ErrNoAck
	}
	i.mu.Lock()
	i.answered = true
	i.mu.Unlock()
	return i.dialog, nil
}

func (i *fakeInvite) answerSDP() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.answer
}

func (i *fakeInvite) refused() []refusal.Reason {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]refusal.Reason(nil), i.refusals...)
}

// fakeCarrier plays the carrier's gateways: per gateway host, what it
// answers.
type fakeCarrier struct {
	mu      sync.Mutex
	answers map[string]func(ctx context.Context, r sip.DialRequest) (Dialog, []byte, error)
	tried   []string
}

func (c *fakeCarrier) Dial(ctx context.Context, r sip.DialRequest) (Dialog, []byte, error) {
	c.mu.Lock()
	c.tried = append(c.tried, r.Target.Host)
	f := c.answers[r.Target.Host]
	c.mu.Unlock()
	if f == nil {
		return nil, nil, sip.ErrNoResponse
	}
	return f(ctx, r)
}

func (c *fakeCarrier) triedHosts() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.tried...)
}

// answerSDP is a carrier's answer choosing PCMA.
var answerSDP = []byte("v=0\r\no=- 2 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 7000 RTP/AVP 8\r\na=ptime:20\r\n")

func answers(d Dialog) func(context.Context, sip.DialRequest) (Dialog, []byte, error) {
	return func(context.Context, sip.DialRequest) (Dialog, []byte, error) { return d, answerSDP, nil }
}

func refuses(code int, phrase, reason string) func(context.Context, sip.DialRequest) (Dialog, []byte, error) {
	return func(context.Context, sip.DialRequest) (Dialog, []byte, error) {
		return nil, nil, &sip.FinalError{Code: code, Phrase: phrase, Reason: reason}
	}
}

func ringsForever(ctx context.Context, r sip.DialRequest) (Dialog, []byte, error) {
	r.OnProgress(180, nil)
	<-ctx.Done()
	return nil, nil, context.Cause(ctx)
}

// harness is a Manager wired to fakes.
type harness struct {
	m       *Manager
	trunks  *fakeTrunks
	admit   *fakeAdmitter
	media   *fakeFactory
	apps    *fakeApps
	meter   *fakeMeter
	audit   *fakeAudit
	metrics *fakeMetrics
	carrier *fakeCarrier
	health  *trunks.Health
}

const testKeyID = "KEY000000001"

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{
		trunks: &fakeTrunks{inbound: map[string]*trunks.Trunk{
			"+15550100": {ID: "tr_in", KeyID: testKeyID, Direction: trunks.Inbound, Numbers: []string{"+15550100"},
				AIURL: "ws://app.example/agent", AllowedSources: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
				Format: "twilio", SampleRate: 8000},
		}},
		admit: &fakeAdmitter{key: &keys.Key{ID: testKeyID, Mode: keys.Live, Limits: keys.Limits{RatePerMinute: 6000}},
			ledger: ledger.NewMemory("test")},
		media:   &fakeFactory{},
		apps:    &fakeApps{},
		meter:   &fakeMeter{done: make(chan billing.CDR, 16)},
		audit:   &fakeAudit{},
		metrics: &fakeMetrics{},
		carrier: &fakeCarrier{answers: map[string]func(context.Context, sip.DialRequest) (Dialog, []byte, error){}},
		health:  trunks.NewHealth(3, slog.New(slog.NewTextHandler(io.Discard, nil))),
	}
	h.m = NewManager(Config{
		Trunks: h.trunks, Admitter: h.admit, Ledger: h.admit.ledger, Media: h.media, Apps: h.apps, Meter: h.meter, Audit: h.audit,
		Metrics: h.metrics, Carrier: h.carrier, Gateways: h.health, MediaIP: netip.MustParseAddr("127.0.0.1"),
		BlockedPrefixes: []string{"+882"}, RingTimeout: time.Second,
		Sandbox: &trunks.Trunk{ID: "sandbox", Direction: trunks.Outbound, Sandbox: true,
			Gateways: []trunks.Gateway{{URI: "sip:sandbox:5060;transport=udp", Host: "sandbox", Port: 5060, Transport: "udp", Priority: 1, Weight: 10}}},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.m.Wait(ctx); err != nil {
			t.Errorf("calls still registered at the end of the test: %v", err)
		}
	})
	return h
}

// idle waits until every call has ended and been recorded.
func (h *harness) idle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.m.Wait(ctx); err != nil {
		t.Fatalf("calls did not end: %v", err)
	}
}

func (m *fakeMetrics) endedSides() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.ended...)
}

// waitLive polls until n calls are answered.
func (h *harness) waitLive(t *testing.T, n int) []Info {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l := h.m.List(); len(l) == n {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d live calls, have %d", n, len(h.m.List()))
		}
		time.Sleep(2 * time.Millisecond)
	}
}
