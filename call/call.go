// Package call ties one call's parts together — the SIP dialog, the RTP
// media session, the WebSocket stream to the AI application, the key's
// channel lease and the billing meter — and runs the inbound call flow:
// match the trunk, check the source, admit, dial the application, answer,
// and tear everything down the same way however the call ends. Each part
// is reached only through the small interfaces below.
package call

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	"trunkgate/billing"
	"trunkgate/bridge"
	"trunkgate/keys"
	"trunkgate/media"
	"trunkgate/refusal"
	"trunkgate/sip"
	"trunkgate/trunks"
)

// TrunkFinder matches a called number to its trunk (trunks.Directory).
type TrunkFinder interface {
	ByNumber(number string) (*trunks.Trunk, bool)
}

// Admitter admits calls against keys (keys.Admitter).
type Admitter interface {
	Admit(ctx context.Context, req keys.Request) (*keys.Lease, error)
}

// MediaFactory opens RTP sessions (media.PortPool).
type MediaFactory interface {
	NewSession(cfg media.Config) (*media.Session, error)
}

// Meter bills answered calls (billing.Meter).
type Meter interface {
	Answer(ctx context.Context, c *billing.CDR) error
	Finish(ctx context.Context, c *billing.CDR) error
}

// Auditor records refusals (keys.Auditor).
type Auditor interface {
	Record(e keys.AuditEntry)
}

// Metrics counts what calls do (metrics.Metrics).
type Metrics interface {
	Admitted(keyID, direction string)
	Refused(keyID string, r refusal.Reason)
	Answered(setup time.Duration)
	Ended(keyID, side string, d time.Duration, framesOut, framesDropped, lost int64)
}

// Config wires a Manager.
type Config struct {
	Trunks   TrunkFinder
	Admitter Admitter
	Media    MediaFactory
	Meter    Meter
	Audit    Auditor
	Metrics  Metrics
	// MediaIP is the address put in SDP answers.
	MediaIP    netip.Addr
	RTPTimeout time.Duration
	// DialTimeout bounds the WebSocket handshake with the application.
	DialTimeout time.Duration
	Log         *slog.Logger
}

// Manager runs calls and keeps the list of live ones.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	live   map[string]*Call                  // answered
	setups map[*Call]context.CancelCauseFunc // admitted, not answered yet
	// active counts calls from admission to their CDR; idle is closed
	// whenever it is zero (Wait).
	active int
	idle   chan struct{}
}

// NewManager makes a Manager; it is the sip.InviteHandler of the edge.
func NewManager(cfg Config) *Manager {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	idle := make(chan struct{})
	close(idle)
	return &Manager{cfg: cfg, log: cfg.Log, live: map[string]*Call{}, setups: map[*Call]context.CancelCauseFunc{}, idle: idle}
}

func (m *Manager) callStarted() {
	m.mu.Lock()
	if m.active == 0 {
		m.idle = make(chan struct{})
	}
	m.active++
	m.mu.Unlock()
}

func (m *Manager) callDone() {
	m.mu.Lock()
	m.active--
	if m.active == 0 {
		close(m.idle)
	}
	m.mu.Unlock()
}

func (m *Manager) beginSetup(c *Call, cancel context.CancelCauseFunc) {
	m.mu.Lock()
	m.setups[c] = cancel
	m.mu.Unlock()
}

func (m *Manager) endSetup(c *Call) {
	m.mu.Lock()
	delete(m.setups, c)
	m.mu.Unlock()
}

var _ sip.InviteHandler = (*Manager)(nil)

// Info describes a live call for operators.
type Info struct {
	CallID     string         `json:"call_id"`
	SIPCallID  string         `json:"sip_call_id"`
	KeyID      string         `json:"key_id"`
	TrunkID    string         `json:"trunk_id"`
	Direction  string         `json:"direction"`
	From       string         `json:"from"`
	To         string         `json:"to"`
	Codec      string         `json:"codec"`
	SetupAt    time.Time      `json:"setup_at"`
	AnswerAt   time.Time      `json:"answer_at"`
	DurationMS int64          `json:"duration_ms"`
	Media      billing.Media  `json:"media"`
	Stream     map[string]int `json:"stream"`
}

// List returns the live calls, oldest first.
func (m *Manager) List() []Info {
	m.mu.Lock()
	calls := make([]*Call, 0, len(m.live))
	for _, c := range m.live {
		calls = append(calls, c)
	}
	m.mu.Unlock()
	out := make([]Info, 0, len(calls))
	for _, c := range calls {
		out = append(out, c.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SetupAt.Before(out[j].SetupAt) })
	return out
}

// ErrNoCall is returned for an id that is not a live call.
var ErrNoCall = errors.New("no such live call")

// Hangup ends a live call from the edge with a BYE carrying reason.
func (m *Manager) Hangup(callID, reason string) error {
	m.mu.Lock()
	c, ok := m.live[callID]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("call %s: %w", callID, ErrNoCall)
	}
	c.requestHangup(reason)
	return nil
}

// HangupAll ends every live call with a BYE carrying reason, and refuses
// with 503 (draining) the calls still being set up: the end of a drain.
func (m *Manager) HangupAll(reason string) int {
	m.mu.Lock()
	calls := make([]*Call, 0, len(m.live))
	for _, c := range m.live {
		calls = append(calls, c)
	}
	for _, cancel := range m.setups {
		cancel(refusal.Draining)
	}
	n := len(calls) + len(m.setups)
	m.mu.Unlock()
	for _, c := range calls {
		c.requestHangup(reason)
	}
	return n
}

// Live is the number of answered calls not yet ended.
func (m *Manager) Live() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.live)
}

// Wait blocks until every admitted call, answered or still being set up,
// has ended and been recorded, or ctx ends.
func (m *Manager) Wait(ctx context.Context) error {
	for {
		m.mu.Lock()
		idle, active := m.idle, m.active
		m.mu.Unlock()
		if active == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Call is one live call.
type Call struct {
	m      *Manager
	id     string
	trunk  *trunks.Trunk
	lease  *keys.Lease
	dialog *sip.Dialog
	media  *media.Session
	stream *bridge.Stream
	neg    sip.Negotiated
	sdpID  string

	mu         sync.Mutex
	cdr        billing.CDR
	sdpVersion uint64

	hangup chan string
}

func (c *Call) requestHangup(reason string) {
	select {
	case c.hangup <- reason:
	default: // already asked
	}
}

func (c *Call) info() Info {
	c.mu.Lock()
	cdr := c.cdr
	c.mu.Unlock()
	st := c.media.Stats()
	answer := time.UnixMilli(cdr.AnswerMS).UTC()
	return Info{
		CallID: c.id, SIPCallID: cdr.SIPCallID, KeyID: cdr.KeyID, TrunkID: cdr.TrunkID, Direction: cdr.Direction,
		From: cdr.From, To: cdr.To, Codec: cdr.Codec, SetupAt: time.UnixMilli(cdr.SetupMS).UTC(), AnswerAt: answer,
		DurationMS: time.Since(answer).Milliseconds(), Media: mediaStats(st),
		Stream: map[string]int{
			"frames_out": int(c.stream.Stats.FramesOut.Load()), "frames_dropped": int(c.stream.Stats.FramesDropped.Load()),
			"frames_in": int(c.stream.Stats.FramesIn.Load()), "marks": int(c.stream.Stats.Marks.Load()),
			"clears": int(c.stream.Stats.Clears.Load()), "queued_samples": c.media.Queued(),
		},
	}
}

func mediaStats(st media.Stats) billing.Media {
	loss := 0.0
	if st.Expected > 0 {
		loss = 100 * float64(st.PacketsLost) / float64(st.Expected)
	}
	return billing.Media{
		PacketsIn: st.PacketsIn, PacketsOut: st.PacketsOut, PacketsLost: st.PacketsLost, LossPercent: loss,
		JitterMS: st.JitterMS, RTTMS: st.RTTMS, RemoteLost: st.RemoteLost, RemoteJitter: st.RemoteJitterMS,
		DTMFEvents: st.DTMFEvents,
	}
}

// reason header values for BYEs the edge sends (RFC 3326, Q.850 causes).
func byeReason(cause string) string {
	code := 16 // normal call clearing
	switch cause {
	case "rtp timeout":
		code = 102 // recovery on timer expiry
	case "edge draining":
		code = 41 // temporary failure
	}
	return "Q.850;cause=" + strconv.Itoa(code) + ";text=" + strconv.Quote(cause)
}
