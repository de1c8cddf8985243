// Package ledger owns the edge's live calls, one entry per call from
// admission to its end: the channel it holds on its key (and on its trunk,
// when the trunk has a cap), when it was answered, at what rate, and the
// spend cap it runs under. Admission counts channels here, billing reads
// running costs, enforces spend caps and checkpoints from here,
// revocation and operator hang-ups end calls through here, and the calls
// list is read from here: no other package keeps a count of live calls.
//
// Memory keeps the ledger of one edge. Each entry names the node that
// holds the call, so that a ledger in a database shared by several edges
// can keep the same entries (one row per live call) behind the same
// methods; the order to end a call is always carried out by the node that
// holds it.
//
// The ledger knows nothing of SIP, media, keys' secrets or SQL.
package ledger

import (
	"context"
	"sort"
	"sync"
	"time"

	"trunkgate/refusal"
)

// Entry is one live call.
type Entry struct {
	CallID      string
	KeyID       string
	TrunkID     string
	Direction   string // "inbound" or "outbound"
	Destination string // the called number
	Node        string // the edge that holds the call
	AdmittedAt  time.Time
	AnsweredAt  time.Time // zero until the call is answered
	// RatePerMinute is what a minute of this call costs (currency micros).
	RatePerMinute int64
	// SpendCap is the key's monthly spend cap (0 = none), kept current by
	// SetSpendCap while the call lasts.
	SpendCap int64
}

// Answered reports whether the call has been answered.
func (e Entry) Answered() bool { return !e.AnsweredAt.IsZero() }

// Caps limit the live calls a new call may join (0 = no cap).
type Caps struct {
	Key   int // the key's max_channels
	Trunk int // the call's trunk's max_channels (outbound trunks)
	// CPS is the key's call rate (new calls a second, 0 = no limit): a
	// token bucket holding up to max(1, CPS) calls, refilled at CPS.
	CPS float64
}

// Memory is the ledger of one edge, in memory.
type Memory struct {
	node string

	mu      sync.Mutex
	calls   map[string]*held
	byKey   map[string]map[string]*held
	byTrunk map[string]int // live calls per trunk with a cap
	buckets map[string]*Bucket
}

type held struct {
	entry  Entry
	ctx    context.Context
	cancel context.CancelCauseFunc
	capped bool // counted in byTrunk
}

// NewMemory makes an empty ledger for the edge called node.
func NewMemory(node string) *Memory {
	return &Memory{node: node, calls: map[string]*held{}, byKey: map[string]map[string]*held{}, byTrunk: map[string]int{}, buckets: map[string]*Bucket{}}
}

// Open records an admitted call, unless its key already has caps.Key live
// calls (refusal.ChannelCap), its trunk caps.Trunk (TrunkChannelCap) or
// its key's call rate is spent (CallRate): the checks and the insert are
// one step, so two calls racing for the last channel cannot both get it.
// The call rate is measured at e.AdmittedAt. The entry's CallID must be
// unique.
func (m *Memory) Open(e Entry, caps Caps) (*Hold, error) {
	if e.Node == "" {
		e.Node = m.node
	}
	if e.AdmittedAt.IsZero() {
		e.AdmittedAt = time.Now()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if caps.Key > 0 && len(m.byKey[e.KeyID]) >= caps.Key {
		return nil, refusal.ChannelCap
	}
	if caps.Trunk > 0 && m.byTrunk[e.TrunkID] >= caps.Trunk {
		return nil, refusal.TrunkChannelCap
	}
	if _, dup := m.calls[e.CallID]; dup {
		return nil, refusal.Internal
	}
	if caps.CPS > 0 {
		b := m.buckets[e.KeyID]
		if b == nil {
			b = &Bucket{}
			m.buckets[e.KeyID] = b
		}
		if !b.Take(e.AdmittedAt, caps.CPS) {
			return nil, refusal.CallRate
		}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	h := &held{entry: e, ctx: ctx, cancel: cancel, capped: caps.Trunk > 0}
	m.calls[e.CallID] = h
	if m.byKey[e.KeyID] == nil {
		m.byKey[e.KeyID] = map[string]*held{}
	}
	m.byKey[e.KeyID][e.CallID] = h
	if h.capped {
		m.byTrunk[e.TrunkID]++
	}
	return &Hold{owner: m, id: e.CallID, ctx: ctx}, nil
}

// Node is the name of the edge this ledger belongs to.
func (m *Memory) Node() string { return m.node }

// Local lists the live calls this edge holds: all of them.
func (m *Memory) Local() []Entry { return m.Calls() }

func (m *Memory) answer(id string, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h, ok := m.calls[id]; ok && h.entry.AnsweredAt.IsZero() {
		h.entry.AnsweredAt = at
	}
}

func (m *Memory) close(id string) {
	m.mu.Lock()
	h, ok := m.calls[id]
	if ok {
		delete(m.calls, id)
		k := h.entry.KeyID
		delete(m.byKey[k], id)
		if len(m.byKey[k]) == 0 {
			delete(m.byKey, k)
		}
		if h.capped {
			if m.byTrunk[h.entry.TrunkID]--; m.byTrunk[h.entry.TrunkID] <= 0 {
				delete(m.byTrunk, h.entry.TrunkID)
			}
		}
	}
	m.mu.Unlock()
	if ok {
		h.cancel(context.Canceled)
	}
}

// Calls lists every live call, oldest admission first.
func (m *Memory) Calls() []Entry {
	m.mu.Lock()
	out := make([]Entry, 0, len(m.calls))
	for _, h := range m.calls {
		out = append(out, h.entry)
	}
	m.mu.Unlock()
	sortEntries(out)
	return out
}

// KeyCalls lists one key's live calls, oldest admission first.
func (m *Memory) KeyCalls(keyID string) []Entry {
	m.mu.Lock()
	out := make([]Entry, 0, len(m.byKey[keyID]))
	for _, h := range m.byKey[keyID] {
		out = append(out, h.entry)
	}
	m.mu.Unlock()
	sortEntries(out)
	return out
}

// Count is how many live calls a key has.
func (m *Memory) Count(keyID string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byKey[keyID])
}

// Counts is every key's number of live calls (keys with none are absent).
func (m *Memory) Counts() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int, len(m.byKey))
	for k, calls := range m.byKey {
		out[k] = len(calls)
	}
	return out
}

// Get returns one live call.
func (m *Memory) Get(callID string) (Entry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.calls[callID]
	if !ok {
		return Entry{}, false
	}
	return h.entry, true
}

// SetSpendCap changes the spend cap the key's live calls run under (an
// operator changed the key's limits).
func (m *Memory) SetSpendCap(keyID string, cap int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range m.byKey[keyID] {
		h.entry.SpendCap = cap
	}
}

// End orders every live call of the key to end with cause (a
// refusal.Reason) and returns how many were told.
func (m *Memory) End(keyID string, cause error) int {
	m.mu.Lock()
	hs := make([]*held, 0, len(m.byKey[keyID]))
	for _, h := range m.byKey[keyID] {
		hs = append(hs, h)
	}
	m.mu.Unlock()
	return endAll(hs, cause)
}

// EndCall orders one live call to end with cause; false if there is none.
func (m *Memory) EndCall(callID string, cause error) bool {
	m.mu.Lock()
	h, ok := m.calls[callID]
	m.mu.Unlock()
	if ok {
		h.cancel(cause)
	}
	return ok
}

// EndAll orders every live call to end with cause (the end of a drain).
func (m *Memory) EndAll(cause error) int {
	m.mu.Lock()
	hs := make([]*held, 0, len(m.calls))
	for _, h := range m.calls {
		hs = append(hs, h)
	}
	m.mu.Unlock()
	return endAll(hs, cause)
}

func endAll(hs []*held, cause error) int {
	for _, h := range hs {
		h.cancel(cause)
	}
	return len(hs)
}

func sortEntries(es []Entry) {
	sort.Slice(es, func(i, j int) bool {
		if !es[i].AdmittedAt.Equal(es[j].AdmittedAt) {
			return es[i].AdmittedAt.Before(es[j].AdmittedAt)
		}
		return es[i].CallID < es[j].CallID
	})
}

// Hold is one call's place in the ledger, held by the call from admission
// until it ends.
type Hold struct {
	owner holder
	id    string
	ctx   context.Context
}

// holder is the ledger a Hold belongs to.
type holder interface {
	answer(callID string, at time.Time)
	close(callID string)
}

// CallID is the call's id.
func (h *Hold) CallID() string { return h.id }

// Context is done when the edge orders the call to end (End, EndCall,
// EndAll); its cause says why.
func (h *Hold) Context() context.Context { return h.ctx }

// Answer records when the call was answered: from then on it costs money.
func (h *Hold) Answer(at time.Time) { h.owner.answer(h.id, at) }

// Close takes the call out of the ledger, freeing its channel. It is safe
// to call more than once.
func (h *Hold) Close() { h.owner.close(h.id) }

// Bucket is a token bucket that limits the rate of new calls. The rate is
// given at each take, so a changed cps applies at the next admission; a
// full bucket holds max(1, rate) calls.
type Bucket struct {
	Tokens float64
	Last   time.Time
	primed bool
}

// Take spends a token at now if there is one; rate <= 0 means no limit.
func (b *Bucket) Take(now time.Time, rate float64) bool {
	if rate <= 0 {
		return true
	}
	burst := max(1, rate)
	if !b.primed {
		b.Tokens, b.Last, b.primed = burst, now, true
	}
	if dt := now.Sub(b.Last).Seconds(); dt > 0 {
		b.Tokens = min(burst, b.Tokens+dt*rate)
		b.Last = now
	}
	b.Tokens = min(b.Tokens, burst) // the operator may have lowered cps
	if b.Tokens < 1 {
		return false
	}
	b.Tokens--
	return true
}
