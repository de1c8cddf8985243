package keys

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"trunkgate/refusal"
)

// Direction of a call relative to the edge.
type Direction string

const (
	Inbound  Direction = "inbound"  // carrier → edge → AI app
	Outbound Direction = "outbound" // AI app → edge → carrier
)

// Request is what a call asks admission for.
type Request struct {
	KeyID       string
	Direction   Direction
	Destination string // the dialled number, checked against prefix rules on outbound calls
	// TrunkID and TrunkChannels put the call under its trunk's own channel
	// cap as well as the key's (0 = none): outbound trunks have one.
	TrunkID       string
	TrunkChannels int
}

// SpendReader tells admission how much a key has spent this calendar month,
// live calls included. billing implements it.
type SpendReader interface {
	MonthToDate(keyID string) int64
}

// Admitter decides, per call, whether a key may place or take it, and holds
// the channel leases of live calls. Keys are cached in memory: admission
// reads no database, and Put makes a changed key effective at the next
// admission.
type Admitter struct {
	store    Store
	spend    SpendReader
	now      func() time.Time
	draining atomic.Bool

	mu     sync.Mutex
	keys   map[string]*keyState
	trunks map[string]int // live calls per trunk with a channel cap
}

type keyState struct {
	key    *Key // immutable snapshot; replaced, never changed
	active int
	bucket tokenBucket
	leases map[*Lease]struct{}
}

// NewAdmitter makes an admitter over store; spend may be nil (no caps).
func NewAdmitter(store Store, spend SpendReader) *Admitter {
	return &Admitter{store: store, spend: spend, now: time.Now, keys: map[string]*keyState{}, trunks: map[string]int{}}
}

// SetSpendReader wires billing in after construction (billing needs keys'
// limits, keys need billing's spend: one of them has to come second).
func (a *Admitter) SetSpendReader(s SpendReader) {
	a.mu.Lock()
	a.spend = s
	a.mu.Unlock()
}

// Load fills the cache with every stored key.
func (a *Admitter) Load(ctx context.Context) error {
	all, err := a.store.ListKeys(ctx)
	if err != nil {
		return err
	}
	for _, k := range all {
		a.Put(k)
	}
	return nil
}

// Put installs k (a copy) as the current version of its key.
func (a *Admitter) Put(k *Key) {
	k = k.Clone()
	a.mu.Lock()
	defer a.mu.Unlock()
	if st, ok := a.keys[k.ID]; ok {
		st.key = k
		return
	}
	a.keys[k.ID] = &keyState{key: k, leases: map[*Lease]struct{}{}}
}

// Key returns the cached key, loading it from the store on a miss (a key
// created by the CLI directly in the database).
func (a *Admitter) Key(ctx context.Context, id string) (*Key, error) {
	st, err := a.state(ctx, id)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return st.key, nil
}

func (a *Admitter) state(ctx context.Context, id string) (*keyState, error) {
	a.mu.Lock()
	st, ok := a.keys[id]
	a.mu.Unlock()
	if ok {
		return st, nil
	}
	if !ValidID(id) {
		return nil, fmt.Errorf("key: no such key id: %w", ErrNotFound)
	}
	k, err := a.store.GetKey(ctx, id)
	if err != nil {
		return nil, err
	}
	a.Put(k)
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.keys[id], nil
}

// SetDraining makes every later admission fail with refusal.Draining.
func (a *Admitter) SetDraining(on bool) { a.draining.Store(on) }

// Admit checks the key against every limit in DESIGN.md's order and, when
// all pass, takes a channel lease. Refusals are refusal.Reason errors.
func (a *Admitter) Admit(ctx context.Context, req Request) (*Lease, error) {
	if a.draining.Load() {
		return nil, refusal.Draining
	}
	st, err := a.state(ctx, req.KeyID)
	if errors.Is(err, ErrNotFound) {
		return nil, refusal.KeyUnknown
	}
	if err != nil {
		return nil, fmt.Errorf("admit: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	k := st.key
	if k.Status == Revoked {
		return nil, refusal.KeyRevoked
	}
	need := ScopeCallsInbound
	if req.Direction == Outbound {
		need = ScopeCallsOutbound
	}
	if !k.HasScope(need) {
		return nil, refusal.ScopeMissing
	}
	if req.Direction == Outbound && !k.Limits.DestinationAllowed(req.Destination) {
		return nil, refusal.DestinationBlocked
	}
	if limit := k.Limits.MonthlySpendCap; limit > 0 && a.spend != nil && a.spend.MonthToDate(k.ID) >= limit {
		return nil, refusal.SpendCap
	}
	if limit := k.Limits.MaxChannels; limit > 0 && st.active >= limit {
		return nil, refusal.ChannelCap
	}
	if req.TrunkChannels > 0 && a.trunks[req.TrunkID] >= req.TrunkChannels {
		return nil, refusal.TrunkChannelCap
	}
	if !st.bucket.take(a.now(), k.Limits.CPS) {
		return nil, refusal.CallRate
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	l := &Lease{key: k, Direction: req.Direction, a: a, ctx: ctx, cancel: cancel}
	st.active++
	st.leases[l] = struct{}{}
	if req.TrunkChannels > 0 {
		l.trunkID = req.TrunkID
		a.trunks[req.TrunkID]++
	}
	return l, nil
}

// EndCalls orders every live call of the key to hang up with cause (for
// example refusal.KeyRevoked or refusal.SpendCap) and returns how many.
func (a *Admitter) EndCalls(keyID string, cause error) int {
	a.mu.Lock()
	st, ok := a.keys[keyID]
	var leases []*Lease
	if ok {
		for l := range st.leases {
			leases = append(leases, l)
		}
	}
	a.mu.Unlock()
	for _, l := range leases {
		l.cancel(cause)
	}
	return len(leases)
}

// Usage is one key's channel use, for metrics and the calls API.
type Usage struct {
	KeyID       string
	Active      int
	MaxChannels int
}

// Usage lists channel use of every cached key, sorted by id.
func (a *Admitter) Usage() []Usage {
	a.mu.Lock()
	out := make([]Usage, 0, len(a.keys))
	for id, st := range a.keys {
		out = append(out, Usage{KeyID: id, Active: st.active, MaxChannels: st.key.Limits.MaxChannels})
	}
	a.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out
}

// Active is the number of live leases of one key.
func (a *Admitter) Active(keyID string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st, ok := a.keys[keyID]; ok {
		return st.active
	}
	return 0
}

// Lease is one admitted call's hold on a channel of its key. The call must
// Release it when it ends, whatever way it ends; Done closes when the edge
// orders the call to end (key revoked, spend cap), with Cause saying why.
type Lease struct {
	key       *Key
	Direction Direction

	a        *Admitter
	trunkID  string // counted against this trunk's cap, if set
	ctx      context.Context
	cancel   context.CancelCauseFunc
	released atomic.Bool
}

// Key is the key as it was at admission: limits for this call are read
// from here (max_call_seconds, rate).
func (l *Lease) Key() *Key { return l.key }

// Done is closed when the call must end.
func (l *Lease) Done() <-chan struct{} { return l.ctx.Done() }

// Context is done when the call must end; its cause says why.
func (l *Lease) Context() context.Context { return l.ctx }

// Cause says why Done closed (a refusal.Reason), or nil.
func (l *Lease) Cause() error {
	if l.ctx.Err() == nil {
		return nil
	}
	return context.Cause(l.ctx)
}

// Release frees the channel. It is safe to call more than once.
func (l *Lease) Release() {
	if !l.released.CompareAndSwap(false, true) {
		return
	}
	l.cancel(context.Canceled)
	a := l.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if st, ok := a.keys[l.key.ID]; ok {
		if _, held := st.leases[l]; held {
			delete(st.leases, l)
			st.active--
		}
	}
	if l.trunkID != "" {
		if a.trunks[l.trunkID]--; a.trunks[l.trunkID] <= 0 {
			delete(a.trunks, l.trunkID)
		}
	}
}

// tokenBucket limits the rate of new calls. The rate is read at each take,
// so a changed cps applies at the next admission.
type tokenBucket struct {
	tokens float64
	last   time.Time
	primed bool
}

func (b *tokenBucket) take(now time.Time, rate float64) bool {
	if rate <= 0 {
		return true // no limit
	}
	burst := max(1, rate)
	if !b.primed {
		b.tokens, b.last, b.primed = burst, now, true
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(burst, b.tokens+dt*rate)
		b.last = now
	}
	b.tokens = min(b.tokens, burst) // the operator may have lowered cps
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
