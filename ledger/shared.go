package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"trunkgate/refusal"
)

// Table is the ledger's rows in a database several edges share
// (cluster.LedgerTable): one row per live call, naming the node that
// holds it.
type Table interface {
	// Insert adds the call's row unless caps refuse it (a refusal.Reason):
	// the check and the insert are one atomic step across every node, in
	// one round trip.
	Insert(ctx context.Context, e Entry, caps Caps) error
	Answer(ctx context.Context, callID string, at time.Time) error
	Delete(ctx context.Context, callID string) error
	// Order asks the node holding a call to end it with cause; false if
	// there is no such call.
	Order(ctx context.Context, callID string, cause refusal.Reason) (bool, error)
	// Sync records that a node is alive and holds its calls, frees the
	// rows of silent nodes (SyncRequest.ReapAfter) and returns every row.
	Sync(ctx context.Context, req SyncRequest) (Synced, error)
	// Leave removes node and its rows.
	Leave(ctx context.Context, node string) error
	// LastSeen is how long ago node last heartbeat (false: never, or it
	// left).
	LastSeen(ctx context.Context, node string) (time.Duration, bool, error)
	// Orders calls wake soon after another node orders one of node's
	// calls to end, until ctx ends; lost is told when it cannot listen.
	Orders(ctx context.Context, node string, wake func(), lost func(error))
}

// SyncRequest is one node's sync.
type SyncRequest struct {
	Node string
	// Local are the calls the node holds: its other rows admitted before
	// Since are dropped, and if its node row was gone (others took it for
	// dead) these rows are put back.
	Local []Entry
	Since time.Time
	// ReapAfter frees the rows of nodes silent for longer; 0 reaps none
	// (this node has not been in sync long enough to judge others).
	ReapAfter time.Duration
}

// Row is a live call in a shared table, with any order to end it.
type Row struct {
	Entry
	End refusal.Reason // 0: none
}

// Synced is what a Sync found.
type Synced struct {
	Rows []Row
	// Dead are the nodes this sync found silent and freed the calls of:
	// this node alone (the one whose sync freed them) closes their bills.
	Dead []string
	// Alive are the nodes that heartbeat, this one included.
	Alive []string
	// Rejoined: the node's row was gone, so others had taken it for dead
	// and freed its calls' rows; the sync put them back.
	Rejoined bool
}

// Shared is the ledger of an edge that shares a database with others: its
// own calls are held in memory as in Memory (their contexts, answers and
// ends), and every call of every node is a row in the Table, which alone
// decides admission. Reads (Calls, Count, ...) see this node's calls as
// they are and other nodes' as of the last sync, at most SyncEvery old.
type Shared struct {
	local *Memory
	table Table
	log   *slog.Logger
	// OnDead is told of each node whose calls a sync freed (their bills
	// are still open); set it before Run. It is called from the sync and
	// must not block.
	OnDead func(node string)
	// OnSynced is called after each sync that succeeded (the meter reads
	// the month's spend then); set it before Run.
	OnSynced func(ctx context.Context)
	// DeadAfter is how long another node may miss its heartbeats before
	// this one frees its calls (default DeadAfter); set it before Run.
	DeadAfter time.Duration

	mu     sync.Mutex
	remote []Entry   // other nodes' calls at the last sync
	alive  []string  // nodes heartbeating at the last sync
	inSync time.Time // since when every sync has succeeded, on time (zero: the last failed)
	last   time.Time // the last sync that succeeded

	syncFailures atomic.Uint64
	deadNodes    atomic.Uint64
}

// Stats is what this node knows of the others.
type Stats struct {
	Nodes        int    // nodes heartbeating at the last sync, this one included
	SyncFailures uint64 // syncs that failed
	DeadNodes    uint64 // silent nodes whose calls this node freed
}

// Stats reports the node's view of the cluster.
func (s *Shared) Stats() Stats {
	s.mu.Lock()
	n := len(s.alive)
	s.mu.Unlock()
	return Stats{Nodes: n, SyncFailures: s.syncFailures.Load(), DeadNodes: s.deadNodes.Load()}
}

// Timing of a shared ledger.
const (
	// SyncEvery is how often a node heartbeats and reads every node's
	// calls: how stale another node's calls look, and how soon an order
	// to end a call reaches its holder.
	SyncEvery = 250 * time.Millisecond
	// DeadAfter is how long a node may miss its heartbeats, by default,
	// before another frees its channels and closes its calls' bills: long
	// enough for a database fail-over or a long pause of the process.
	DeadAfter = 15 * time.Second
	// tableTimeout bounds one database call: admission fails (overloaded)
	// rather than waits on a database that does not answer.
	tableTimeout = 2 * time.Second
)

// NewShared makes the ledger of node over table.
func NewShared(node string, table Table, log *slog.Logger) *Shared {
	return &Shared{local: NewMemory(node), table: table, log: log, DeadAfter: DeadAfter}
}

// Node is the name of this edge.
func (s *Shared) Node() string { return s.local.node }

// Open admits a call if the shared table has room for it under caps,
// across every node, in one round trip. A database that fails refuses
// the call as overloaded.
func (s *Shared) Open(e Entry, caps Caps) (*Hold, error) {
	if e.Node == "" {
		e.Node = s.local.node
	}
	if e.AdmittedAt.IsZero() {
		e.AdmittedAt = time.Now()
	}
	// Held here first, so that a sync running meanwhile keeps its row.
	h, err := s.local.Open(e, Caps{})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), tableTimeout)
	defer cancel()
	if err := s.table.Insert(ctx, e, caps); err != nil {
		s.local.close(e.CallID)
		if _, ok := refusal.As(err); ok {
			return nil, err
		}
		s.log.Error("shared ledger: admission failed", "call_id", e.CallID, "error", err)
		return nil, fmt.Errorf("%w: %w", refusal.Overloaded, err)
	}
	h.owner = s
	return h, nil
}

func (s *Shared) answer(callID string, at time.Time) {
	s.local.answer(callID, at)
	ctx, cancel := context.WithTimeout(context.Background(), tableTimeout)
	defer cancel()
	if err := s.table.Answer(ctx, callID, at); err != nil {
		s.log.Error("shared ledger: recording an answer failed", "call_id", callID, "error", err)
	}
}

func (s *Shared) close(callID string) {
	if _, ok := s.local.Get(callID); !ok {
		return // closed before
	}
	s.local.close(callID)
	ctx, cancel := context.WithTimeout(context.Background(), tableTimeout)
	defer cancel()
	if err := s.table.Delete(ctx, callID); err != nil {
		// The next sync drops the row: it is not among this node's calls.
		s.log.Error("shared ledger: freeing a channel failed", "call_id", callID, "error", err)
	}
}

// Local lists the calls this node holds.
func (s *Shared) Local() []Entry { return s.local.Calls() }

// Calls lists every node's live calls, oldest admission first.
func (s *Shared) Calls() []Entry {
	out := s.local.Calls()
	s.mu.Lock()
	out = append(out, s.remote...)
	s.mu.Unlock()
	sortEntries(out)
	return out
}

// KeyCalls lists one key's live calls on every node.
func (s *Shared) KeyCalls(keyID string) []Entry {
	out := s.local.KeyCalls(keyID)
	s.mu.Lock()
	for _, e := range s.remote {
		if e.KeyID == keyID {
			out = append(out, e)
		}
	}
	s.mu.Unlock()
	sortEntries(out)
	return out
}

// Count is how many live calls a key has on every node.
func (s *Shared) Count(keyID string) int {
	n := s.local.Count(keyID)
	s.mu.Lock()
	for _, e := range s.remote {
		if e.KeyID == keyID {
			n++
		}
	}
	s.mu.Unlock()
	return n
}

// Counts is every key's number of live calls on every node.
func (s *Shared) Counts() map[string]int {
	out := s.local.Counts()
	s.mu.Lock()
	for _, e := range s.remote {
		out[e.KeyID]++
	}
	s.mu.Unlock()
	return out
}

// Get returns one live call held by any node.
func (s *Shared) Get(callID string) (Entry, bool) {
	if e, ok := s.local.Get(callID); ok {
		return e, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.remote {
		if e.CallID == callID {
			return e, true
		}
	}
	return Entry{}, false
}

// SetSpendCap changes the spend cap of the key's calls on this node
// (every node applies the same change from the cluster's change log).
func (s *Shared) SetSpendCap(keyID string, cap int64) { s.local.SetSpendCap(keyID, cap) }

// End ends the key's calls on this node. Every node ends its own for the
// same reason: a revocation reaches each through the change log, and each
// holds the key's calls on every node against its spend cap.
func (s *Shared) End(keyID string, cause error) int { return s.local.End(keyID, cause) }

// EndAll ends this node's calls (the end of its drain).
func (s *Shared) EndAll(cause error) int { return s.local.EndAll(cause) }

// EndCall ends a call held by any node: the holder ends it at its next
// sync.
func (s *Shared) EndCall(callID string, cause error) bool {
	if s.local.EndCall(callID, cause) {
		return true
	}
	r, ok := refusal.As(cause)
	if !ok {
		r = refusal.Internal
	}
	ctx, cancel := context.WithTimeout(context.Background(), tableTimeout)
	defer cancel()
	found, err := s.table.Order(ctx, callID, r)
	if err != nil {
		s.log.Error("shared ledger: ordering a call to end failed", "call_id", callID, "error", err)
	}
	return found
}

// ErrNodeNameInUse is returned by Join when another running edge has
// this node's name: the two would take each other's calls for their own.
var ErrNodeNameInUse = errors.New("node name in use by a running edge")

// inUseWithin is how recent a heartbeat under this node's name must be
// to mean another edge is running under it (at most DeadAfter): twenty
// syncs, so that a stalled edge is not taken for gone, yet short enough
// for a crashed edge to be restarted under its name by a supervisor.
const inUseWithin = 5 * time.Second

// Join clears what an earlier run of this node left in the table (its
// rows: a node restarted under the same name holds none of them) and
// syncs once; call it before taking calls. It refuses a name another
// running edge heartbeats under.
func (s *Shared) Join(ctx context.Context) error {
	age, seen, err := s.table.LastSeen(ctx, s.local.node)
	if err != nil {
		return fmt.Errorf("shared ledger: %w", err)
	}
	if seen && age < min(inUseWithin, s.DeadAfter) {
		return fmt.Errorf("shared ledger: %q (heartbeat %v ago): %w; give this edge another --node-name",
			s.local.node, age.Round(time.Millisecond), ErrNodeNameInUse)
	}
	if err := s.table.Leave(ctx, s.local.node); err != nil {
		return fmt.Errorf("shared ledger: %w", err)
	}
	return s.Sync(ctx)
}

// Leave takes this node out of the table (a clean stop, after its calls
// ended).
func (s *Shared) Leave(ctx context.Context) error { return s.table.Leave(ctx, s.local.node) }

// Sync heartbeats this node, ends the calls other nodes ordered to end,
// frees dead nodes' channels and refreshes the view of other nodes' calls.
//
// A node judges others dead only once its own syncs have succeeded, on
// time, for longer than DeadAfter: after a database outage or a pause of
// its own, every other node's heartbeat looks old, but only because this
// one could not see them.
func (s *Shared) Sync(ctx context.Context) error {
	started := time.Now()
	local := s.local.Calls()
	s.mu.Lock()
	if s.last.IsZero() || started.Sub(s.last) > 4*SyncEvery {
		s.inSync = started // a gap: judge others afresh
	}
	var reapAfter time.Duration
	if !s.inSync.IsZero() && started.Sub(s.inSync) >= s.DeadAfter {
		reapAfter = s.DeadAfter
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, tableTimeout)
	defer cancel()
	// Rows admitted after the local list was taken are not dropped.
	got, err := s.table.Sync(ctx, SyncRequest{Node: s.local.node, Local: local, Since: started.Add(-time.Second), ReapAfter: reapAfter})
	if err != nil {
		s.syncFailures.Add(1)
		s.mu.Lock()
		s.inSync = time.Time{}
		s.mu.Unlock()
		return fmt.Errorf("shared ledger: %w", err)
	}
	remote := make([]Entry, 0, len(got.Rows))
	for _, r := range got.Rows {
		if r.Node != s.local.node {
			remote = append(remote, r.Entry)
			continue
		}
		if r.End != 0 {
			s.local.EndCall(r.CallID, r.End)
		}
	}
	s.mu.Lock()
	s.remote, s.alive, s.last = remote, got.Alive, started
	s.mu.Unlock()
	if got.Rejoined && len(local) > 0 {
		s.log.Warn("other edges took this edge for dead (it could not sync); its live calls are counted again", "calls", len(local))
	}
	if s.OnSynced != nil {
		s.OnSynced(ctx)
	}
	for _, node := range got.Dead {
		s.deadNodes.Add(1)
		s.log.Warn("edge node stopped heartbeating; its channels are freed", "node", node)
		if s.OnDead != nil {
			s.OnDead(node)
		}
	}
	return nil
}

// Alive lists the nodes that heartbeat at the last sync.
func (s *Shared) Alive() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.alive...)
}

// Run syncs every SyncEvery, and at once when another node orders one of
// this node's calls to end, until ctx ends.
func (s *Shared) Run(ctx context.Context) {
	t := time.NewTicker(SyncEvery)
	defer t.Stop()
	wake := make(chan struct{}, 1)
	listenCtx, stop := context.WithCancel(ctx)
	listening := make(chan struct{})
	defer func() { stop(); <-listening }()
	go func() {
		defer close(listening)
		s.table.Orders(listenCtx, s.local.node, func() {
			select {
			case wake <- struct{}{}:
			default:
			}
		}, func(err error) {
			s.log.Warn("shared ledger: orders to end calls arrive at the next sync", "error", err)
		})
	}()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		err := s.Sync(ctx)
		switch {
		case err != nil && !failing && !errors.Is(err, context.Canceled):
			s.log.Error("shared ledger", "error", err)
			failing = true
		case err == nil && failing:
			s.log.Info("shared ledger in sync again")
			failing = false
		}
	}
}
