// Package call ties one call's parts together — the SIP dialog, the RTP
// media session, the WebSocket stream to the AI application, the key's
// channel lease and the billing meter — and runs both call flows: inbound
// (match the trunk, check the source, admit, dial the application, answer)
// and outbound (admit the application's request, dial the trunk's gateways
// with failover, start the stream at answer). Both share one lifecycle
// (lifecycle.go): a call is registered at admission, goes live at answer,
// and is torn down and recorded the same way however it ends — a panic
// included. Each part is reached only through the small interfaces below;
// adapt.go turns the concrete parts into them.
package call

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
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

// Dialog is an established call's SIP side (*sip.Dialog).
type Dialog interface {
	// Done closes when the far end hung up (or Hangup returned).
	Done() <-chan struct{}
	// Hangup sends BYE with a Reason header value and waits for its answer.
	Hangup(ctx context.Context, reason string) error
	// OnDTMF receives digits the far end sends as SIP INFO.
	OnDTMF(f func(digit byte))
	// Refer asks the far end to transfer the call (blind, RFC 3515).
	Refer(ctx context.Context, target string, progress sip.TransferProgress) (int, error)
	// RemoteTarget is the far end's Contact URI.
	RemoteTarget() string
}

// Media is the call's RTP session (*media.Session).
type Media interface {
	bridge.Player
	LocalPort() int
	SetRemote(rtp, rtcp netip.AddrPort)
	SetPayloadTypes(codec, dtmf uint8)
	SetDirection(d media.Direction)
	// SetCodec sets the codec and ptime the far end answered with; before
	// Start.
	SetCodec(c media.Codec, ptimeMS int)
	// SetSRTP protects the media with the keys the far end answered
	// with; before Start.
	SetSRTP(s *media.SRTP)
	Start()
	Close() error
	// Done closes when media ends on its own (RTP timeout); Err says why.
	Done() <-chan struct{}
	Err() error
	Stats() media.Stats
	Queued() int
	// ToCarrierLatency is the edge's delay toward the carrier, for the
	// latency histograms at the call's end.
	ToCarrierLatency() *media.Latency
}

// MediaFactory opens RTP sessions (media.PortPool, through Ports).
type MediaFactory interface {
	NewSession(cfg media.Config) (Media, error)
}

// Stream is the call's WebSocket to its AI application (*bridge.Stream).
type Stream interface {
	media.Listener
	Begin(player bridge.Player, leg bridge.Leg)
	Progress(status string, sipCode int)
	// OnTransfer sets who carries out the application's transfer
	// requests; TransferStatus tells the application how one goes.
	OnTransfer(f func(to string) error)
	TransferStatus(status string, sipCode int)
	// Hold tells the application the carrier put the call on hold or
	// took it off.
	Hold(held bool)
	Done() <-chan struct{}
	ClosedByApp() bool
	// NoAudio reports that the application sent no audio by the
	// first-audio deadline.
	NoAudio() bool
	Close(end bridge.End)
	Counters() bridge.Counters
	ToAppLatency() *media.Latency
	// StreamSid names the stream; ResumeOn carries it on over the
	// application's request to resume it.
	StreamSid() string
	ResumeOn(w http.ResponseWriter, r *http.Request) error
}

// AppDialer opens an inbound call's stream to its application (bridge.Dial,
// through Apps).
type AppDialer interface {
	Dial(ctx context.Context, cfg bridge.DialConfig) (Stream, error)
}

// Lease is an admitted call's place in the ledger (*keys.Lease).
type Lease interface {
	// Key is the key as it was at admission.
	Key() *keys.Key
	// Context is done when the edge orders the call to end (revocation,
	// spend cap, an operator's hang-up, the end of a drain); its cause is
	// the refusal.Reason.
	Context() context.Context
	// RatePerMinute is what a minute of the call costs, rated at admission,
	// and RatePrefix the rate table prefix that said so ("" for the key's
	// own rate).
	RatePerMinute() int64
	RatePrefix() string
	// Answer records the answer: the call costs from then on.
	Answer(at time.Time)
	Release()
}

// Ledger is where live calls are listed and ended (ledger.Memory):
// Manager keeps no count of its own.
type Ledger interface {
	Calls() []ledger.Entry
	Local() []ledger.Entry
	EndCall(callID string, cause error) bool
	EndAll(cause error) int
}

// Admitter admits calls against keys (keys.Admitter, through Admission).
type Admitter interface {
	Admit(ctx context.Context, req keys.Request) (Lease, error)
}

// TrunkFinder finds trunks (trunks.Directory).
type TrunkFinder interface {
	ByNumber(number string) (*trunks.Trunk, bool)
	AllowingSource(addr netip.Addr) []*trunks.Trunk
	Outbound(keyID, trunkID string) (*trunks.Trunk, bool)
	Numbers(keyID string) []string
}

// Meter bills answered calls (billing.Meter).
type Meter interface {
	Answer(ctx context.Context, c *billing.CDR) error
	Finish(ctx context.Context, c *billing.CDR) error
}

// Watcher hears of every call attempt of a key, admitted (refused 0) or
// refused (alerts.Engine). It must not block.
type Watcher interface {
	Attempt(keyID, direction, destination string, refused refusal.Reason)
}

// Auditor records refusals (keys.Auditor).
type Auditor interface {
	Record(e keys.AuditEntry)
}

// Metrics counts what calls do (metrics.Metrics).
type Metrics interface {
	Admitted(keyID, direction string)
	Refused(keyID string, r refusal.Reason)
	Answered(setup time.Duration, transport, media string)
	Ended(keyID, side string, d time.Duration, framesOut, framesDropped, lost int64)
	RTP(in, out uint64)
	EdgeLatency(toApp, toCarrier metrics.Delays)
}

// Config wires a Manager.
type Config struct {
	Trunks   TrunkFinder
	Admitter Admitter
	Ledger   Ledger
	Media    MediaFactory
	Apps     AppDialer
	Meter    Meter
	Audit    Auditor
	Metrics  Metrics
	// Watch hears of call attempts (alerts); nil: nobody.
	Watch Watcher
	// Carrier places outbound calls (sip.Server); nil: inbound only.
	Carrier Carrier
	// Sandbox is the built-in carrier of test keys' outbound calls.
	Sandbox *trunks.Trunk
	// Gateways tracks gateway health for failover.
	Gateways *trunks.Health
	// BlockedPrefixes are destinations no key may call (toll fraud).
	BlockedPrefixes []string
	// UnknownSourceReply answers an INVITE from a source no trunk allows
	// with 403 (the same for every number); by default it gets no answer.
	UnknownSourceReply bool
	// RingTimeout is how long an outbound call may ring when its trunk
	// sets no ring timeout of its own; 0 means 30 s.
	RingTimeout time.Duration
	// GatewayTimeout is how long a gateway may stay silent before the next
	// is tried; 0 means FirstResponseTimeout.
	GatewayTimeout time.Duration
	// MediaIP is the address put in SDP offers and answers.
	MediaIP    netip.Addr
	RTPTimeout time.Duration
	// DialTimeout bounds the WebSocket handshake with the application.
	DialTimeout time.Duration
	// AppPing is the interval of WebSocket pings to applications, and
	// how long each has to answer; 0 sends none.
	AppPing time.Duration
	// StatsEvery is the interval of stats events to applications that
	// opted in to the extensions; 0 sends none.
	StatsEvery time.Duration
	// FirstAudio is how long after the answer an application may take
	// to send its first audio; 0: as long as it likes.
	FirstAudio time.Duration
	// ResumeHoldTone beeps to callers whose app's stream waits for a
	// resume; off, they hear silence.
	ResumeHoldTone bool
	Log            *slog.Logger
}

// Manager runs calls and keeps every call object from admission to its
// CDR. What is live, and for which key, is the ledger's to say.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	calls map[string]*Call // running call objects: admitted, not yet recorded
	// idle is closed whenever calls is empty (Wait).
	idle chan struct{}
}

// NewManager makes a Manager; it is the sip.InviteHandler of the edge.
func NewManager(cfg Config) *Manager {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.RingTimeout == 0 {
		cfg.RingTimeout = 30 * time.Second
	}
	if cfg.GatewayTimeout == 0 {
		cfg.GatewayTimeout = FirstResponseTimeout
	}
	idle := make(chan struct{})
	close(idle)
	return &Manager{cfg: cfg, log: cfg.Log, calls: map[string]*Call{}, idle: idle}
}

var _ sip.InviteHandler = (*Manager)(nil)

// SetCarrier gives the manager the SIP user agent outbound calls go
// through. The user agent needs the manager as its handler, so one of the
// two comes second; call it before the edge takes calls.
func (m *Manager) SetCarrier(c Carrier) { m.cfg.Carrier = c }

// HighCostPrefixes is the edge's default block list of outbound
// destinations (--blocked-prefixes): satellite and international
// networks and the small-island and premium ranges that international
// revenue share fraud (IRSF) pumps traffic to. An operator who needs one
// of them sets the flag to a list without it.
var HighCostPrefixes = []string{
	"+870", "+881", "+882", "+883", "+979", // Inmarsat, GMSS satellite, international networks, premium rate
	"+53",                                          // Cuba
	"+239", "+246", "+247", "+252", "+290", "+500", // São Tomé, Diego Garcia, Ascension, Somalia, St Helena, Falklands
	"+674", "+675", "+677", "+678", "+681", "+682", "+683", // Nauru, PNG, Solomon Is., Vanuatu, Wallis, Cook Is., Niue
	"+686", "+688", "+690", "+691", "+692", // Kiribati, Tuvalu, Tokelau, Micronesia, Marshall Is.
}

// Info describes a call for operators and for GET /v1/calls/{id}.
type Info struct {
	CallID    string `json:"call_id"`
	SIPCallID string `json:"sip_call_id"`
	KeyID     string `json:"key_id"`
	TrunkID   string `json:"trunk_id"`
	Gateway   string `json:"gateway,omitempty"`
	Direction string `json:"direction"`
	// Node is the edge that holds the call (edges sharing a database).
	Node  string `json:"node"`
	State string `json:"state"`
	From  string `json:"from"`
	To    string `json:"to"`
	Codec string `json:"codec"`
	// Transport (UDP, TCP, TLS) and MediaEncryption ("srtp", "none")
	// protect the carrier leg.
	Transport       string         `json:"transport,omitempty"`
	MediaEncryption string         `json:"media_encryption,omitempty"`
	SetupAt         time.Time      `json:"setup_at"`
	AnswerAt        time.Time      `json:"answer_at,omitzero"`
	DurationMS      int64          `json:"duration_ms"`
	Media           billing.Media  `json:"media"`
	Stream          map[string]int `json:"stream"`
}

// Call states, as Info shows them.
const (
	StateSetup    = "setup"    // admitted; dialling the application or the carrier
	StateRinging  = "ringing"  // the far end sent 180/183
	StateAnswered = "answered" // live
)

// List returns the answered calls in the ledger, oldest first, with
// what this edge knows of each.
func (m *Manager) List() []Info {
	out := []Info{}
	for _, e := range m.cfg.Ledger.Calls() {
		if !e.Answered() {
			continue
		}
		if info, ok := m.Get(e.CallID); ok {
			info.Node = e.Node
			out = append(out, info)
			continue
		}
		// Held by another node: what the ledger knows.
		out = append(out, Info{CallID: e.CallID, KeyID: e.KeyID, TrunkID: e.TrunkID, Direction: e.Direction, Node: e.Node,
			State: StateAnswered, To: e.Destination, SetupAt: e.AdmittedAt, AnswerAt: e.AnsweredAt,
			DurationMS: time.Since(e.AnsweredAt).Milliseconds()})
	}
	return out
}

// Get describes one call that is being set up or is live.
func (m *Manager) Get(callID string) (Info, bool) {
	m.mu.Lock()
	c, ok := m.calls[callID]
	m.mu.Unlock()
	if !ok {
		return Info{}, false
	}
	return c.info(), true
}

func (m *Manager) snapshot() []*Call {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Call, 0, len(m.calls))
	for _, c := range m.calls {
		out = append(out, c)
	}
	return out
}

// ErrNoCall is returned for an id that is not a live call.
var ErrNoCall = errors.New("no such live call")

// Hangup ends a call by an operator's order: a live call gets BYE, a call
// still being set up is abandoned (CANCEL or a refusal).
func (m *Manager) Hangup(callID string) error {
	if !m.cfg.Ledger.EndCall(callID, refusal.OperatorHangup) {
		return fmt.Errorf("call %s: %w", callID, ErrNoCall)
	}
	return nil
}

// HangupAll ends every call with r (live calls get BYE, calls being set
// up are refused or canceled) and returns how many: the end of a drain.
func (m *Manager) HangupAll(r refusal.Reason) int { return m.cfg.Ledger.EndAll(r) }

// Live is the number of answered calls this edge holds.
func (m *Manager) Live() int {
	n := 0
	for _, e := range m.cfg.Ledger.Local() {
		if e.Answered() {
			n++
		}
	}
	return n
}

// Wait blocks until every admitted call, answered or still being set up,
// has ended and been recorded, or ctx ends.
func (m *Manager) Wait(ctx context.Context) error {
	for {
		m.mu.Lock()
		idle, n := m.idle, len(m.calls)
		m.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (m *Manager) register(c *Call) {
	m.mu.Lock()
	if len(m.calls) == 0 {
		m.idle = make(chan struct{})
	}
	m.calls[c.id] = c
	m.mu.Unlock()
}

func (m *Manager) unregister(c *Call) {
	m.mu.Lock()
	if m.calls[c.id] == c {
		delete(m.calls, c.id)
		if len(m.calls) == 0 {
			close(m.idle)
		}
	}
	m.mu.Unlock()
}

// refused counts, audits and logs a refusal already answered.
// attempted tells the watcher of an attempt of a key.
func (m *Manager) attempted(keyID string, dir keys.Direction, destination string, r refusal.Reason) {
	if m.cfg.Watch != nil && keyID != "" {
		m.cfg.Watch.Attempt(keyID, string(dir), destination, r)
	}
}

func (m *Manager) refused(keyID string, r refusal.Reason, source, detail string) {
	m.cfg.Metrics.Refused(keyID, r)
	m.cfg.Audit.Record(keys.AuditEntry{
		Actor: "sip", Action: "call.refuse", Target: keyID, Outcome: "denied",
		Detail: "reason=" + r.Label() + " " + detail, Source: source,
	})
	m.log.Info("call refused", "reason", r.Label(), "key_id", keyID, "source", source)
}

func mediaStats(st media.Stats, toApp media.LatencySummary) billing.Media {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	lat := func(l media.LatencySummary) *billing.Latency {
		if l.Count == 0 {
			return nil
		}
		return &billing.Latency{P50MS: ms(l.P50), P95MS: ms(l.P95), MaxMS: ms(l.Max)}
	}
	return billing.Media{
		PacketsIn: st.PacketsIn, PacketsOut: st.PacketsOut, PacketsLost: st.PacketsLost, LossPercent: st.LossPercent(),
		JitterMS: st.JitterMS, RTTMS: st.RTTMS, RemoteLost: st.RemoteLost, RemoteJitter: st.RemoteJitterMS,
		DTMFEvents: st.DTMFEvents, EdgeToApp: lat(toApp), EdgeToCarrier: lat(st.ToCarrier),
	}
}
