package keys

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"trunkgate/ledger"
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
	// CallID names the call in the ledger.
	CallID      string
	KeyID       string
	Direction   Direction
	Destination string // the dialled number, checked against prefix rules on outbound calls
	// TrunkID and TrunkChannels put the call under its trunk's own channel
	// cap as well as the key's (0 = none): outbound trunks have one.
	TrunkID       string
	TrunkChannels int
}

// SpendChecker tells admission whether a key can afford a new call.
// billing implements it: the spend rule lives there.
type SpendChecker interface {
	CanAfford(keyID string, spendCap, ratePerMinute int64) bool
}

// Rater prices a call before it is admitted (billing's rate tables): the
// rate per minute for the call and the table prefix that gave it ("" for
// the key's own rate).
type Rater interface {
	Rate(keyID, direction, destination string, keyRate int64) (ratePerMinute int64, prefix string)
}

// Ledger is where admitted calls are held (ledger.Memory): the one count
// of a key's and a trunk's live calls.
type Ledger interface {
	Open(e ledger.Entry, caps ledger.Caps) (*ledger.Hold, error)
	Count(keyID string) int
	Counts() map[string]int
	End(keyID string, cause error) int
	SetSpendCap(keyID string, spendCap int64)
}

// Admitter decides, per call, whether a key may place or take it, and
// holds admitted calls in the ledger. Keys are cached in memory: admission
// reads no database, and Put makes a changed key effective at the next
// admission.
type Admitter struct {
	store    Store
	ledger   Ledger
	spend    SpendChecker
	rater    Rater
	now      func() time.Time
	draining atomic.Bool

	mu   sync.Mutex
	keys map[string]*keyState
}

type keyState struct {
	key *Key // immutable snapshot; replaced, never changed
}

// NewAdmitter makes an admitter over store that holds calls in l; spend
// may be nil (no caps), rater nil (each key's own rates).
func NewAdmitter(store Store, l Ledger, spend SpendChecker, rater Rater) *Admitter {
	return &Admitter{store: store, ledger: l, spend: spend, rater: rater, now: time.Now, keys: map[string]*keyState{}}
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
		if st.key.Limits.MonthlySpendCap != k.Limits.MonthlySpendCap {
			a.ledger.SetSpendCap(k.ID, k.Limits.MonthlySpendCap)
		}
		st.key = k
		return
	}
	a.keys[k.ID] = &keyState{key: k}
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

// Refresh reloads a key another edge (or the CLI) changed: the change is
// in force here at the next admission, and a revocation ends the key's
// live calls held here.
func (a *Admitter) Refresh(ctx context.Context, id string) error {
	k, err := a.store.GetKey(ctx, id)
	if err != nil {
		return err
	}
	a.Put(k)
	if k.Status == Revoked {
		a.EndCalls(id, refusal.KeyRevoked)
	}
	return nil
}

// Cached lists every cached key. Keys are immutable snapshots: the
// caller must not change them.
func (a *Admitter) Cached() []*Key {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*Key, 0, len(a.keys))
	for _, st := range a.keys {
		out = append(out, st.key)
	}
	return out
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
	if k.Suspended != "" {
		return nil, refusal.KeySuspended
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
	rate, prefix := a.rate(k, req)
	// A call the key cannot afford one billed second of is refused before
	// answer, not answered and dropped at once.
	if limit := k.Limits.MonthlySpendCap; limit > 0 && a.spend != nil && !a.spend.CanAfford(k.ID, limit, rate) {
		return nil, refusal.SpendCap
	}
	hold, err := a.ledger.Open(ledger.Entry{CallID: req.CallID, KeyID: k.ID, TrunkID: req.TrunkID, Direction: string(req.Direction),
		Destination: req.Destination, AdmittedAt: a.now(), RatePerMinute: rate, SpendCap: k.Limits.MonthlySpendCap},
		ledger.Caps{Key: k.Limits.MaxChannels, Trunk: req.TrunkChannels, CPS: k.Limits.CPS})
	if err != nil {
		return nil, err
	}
	return &Lease{key: k, Direction: req.Direction, hold: hold, rate: rate, ratePrefix: prefix}, nil
}

// rate is what a minute of the call costs: nothing for a test key.
func (a *Admitter) rate(k *Key, req Request) (int64, string) {
	if k.Mode == Test {
		return 0, ""
	}
	own := k.Limits.Rate(req.Direction)
	if a.rater == nil {
		return own, ""
	}
	return a.rater.Rate(k.ID, string(req.Direction), req.Destination, own)
}

// EndCalls orders every live call of the key to hang up with cause (for
// example refusal.KeyRevoked) and returns how many.
func (a *Admitter) EndCalls(keyID string, cause error) int {
	return a.ledger.End(keyID, cause)
}

// Usage is one key's channel use, for metrics and the calls API.
type Usage struct {
	KeyID       string
	Active      int
	MaxChannels int
	SpendCap    int64
}

// Usage lists channel use of every cached key, sorted by id.
//
// Revoked keys without live calls are left out: a dashboard of channels
// and spend shows the keys in service.
func (a *Admitter) Usage() []Usage {
	live := a.ledger.Counts()
	a.mu.Lock()
	out := make([]Usage, 0, len(a.keys))
	for id, st := range a.keys {
		if st.key.Status == Revoked && live[id] == 0 {
			continue // gone from the per-key gauges once its last call has ended
		}
		out = append(out, Usage{KeyID: id, Active: live[id], MaxChannels: st.key.Limits.MaxChannels,
			SpendCap: st.key.Limits.MonthlySpendCap})
	}
	a.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out
}

// Active is the number of live calls of one key.
func (a *Admitter) Active(keyID string) int { return a.ledger.Count(keyID) }

// Lease is one admitted call's hold on a channel of its key. The call must
// Release it when it ends, whatever way it ends; Context is done when the
// edge orders the call to end (key revoked, spend cap, operator), with
// its cause saying why.
type Lease struct {
	key        *Key
	Direction  Direction
	hold       *ledger.Hold
	rate       int64
	ratePrefix string
}

// RatePerMinute is what a minute of the call costs, as rated at admission.
func (l *Lease) RatePerMinute() int64 { return l.rate }

// RatePrefix is the rate table prefix the call was rated by ("" for the
// key's own rate).
func (l *Lease) RatePrefix() string { return l.ratePrefix }

// Key is the key as it was at admission: limits for this call are read
// from here (max_call_seconds, rate).
func (l *Lease) Key() *Key { return l.key }

// CallID is the call's id in the ledger.
func (l *Lease) CallID() string { return l.hold.CallID() }

// Context is done when the call must end; its cause says why.
func (l *Lease) Context() context.Context { return l.hold.Context() }

// Answer records the answer in the ledger: the call costs from now on.
func (l *Lease) Answer(at time.Time) { l.hold.Answer(at) }

// Release frees the channel. It is safe to call more than once.
func (l *Lease) Release() { l.hold.Close() }
