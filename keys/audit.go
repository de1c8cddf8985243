package keys

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// AuditEntry is one line of the audit log: who did what to what, and how
// it went. Refused calls are entries too (action "call.refuse"). No entry
// ever holds key text; actors and targets are key ids.
type AuditEntry struct {
	ID      int64     `json:"id"`
	At      time.Time `json:"at"`
	Actor   string    `json:"actor"`   // key id of the operator, or "system", "cli", "carrier"
	Action  string    `json:"action"`  // key.create, key.rotate, key.set, key.revoke, call.refuse, ...
	Target  string    `json:"target"`  // key id, trunk id or call id acted on
	Outcome string    `json:"outcome"` // ok, denied, error
	Detail  string    `json:"detail"`  // e.g. refusal reason, changed fields
	Source  string    `json:"source"`  // remote address the request came from
}

// AuditFilter narrows ListAudit.
type AuditFilter struct {
	Target string // matches target or actor
	Action string
	Since  time.Time
	Limit  int
}

// Actors that are not keys.
const (
	ActorSystem = "system"
	ActorCLI    = "cli"
)

// Auditor writes audit entries. Operator actions are written before the
// operation returns (Write); refusals, which an attacker can cause at line
// rate, are queued and written in batches (Record) so that a flood of bad
// INVITEs costs one transaction per batch, not one per INVITE.
type Auditor struct {
	store   Store
	log     *slog.Logger
	queue   chan auditItem
	dropped atomic.Int64
	wg      sync.WaitGroup
	stop    chan struct{}
	once    sync.Once
}

// NewAuditor starts the background batch writer; Close flushes and stops it.
func NewAuditor(store Store, log *slog.Logger) *Auditor {
	a := &Auditor{store: store, log: log, queue: make(chan auditItem, 4096), stop: make(chan struct{})}
	a.wg.Add(1)
	go a.run()
	return a
}

// redact keeps key text out of the log whatever a caller put in an entry.
func (e *AuditEntry) redact() {
	e.Actor, e.Target, e.Detail, e.Source = Redact(e.Actor), Redact(e.Target), Redact(e.Detail), Redact(e.Source)
}

// Write stores e now.
func (a *Auditor) Write(ctx context.Context, e AuditEntry) error {
	e.redact()
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	return a.store.InsertAudit(ctx, []AuditEntry{e})
}

// Record queues e for the batch writer; when the queue is full the entry is
// dropped and counted rather than slowing the SIP path.
func (a *Auditor) Record(e AuditEntry) {
	e.redact()
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	select {
	case a.queue <- auditItem{entry: e}:
	default:
		a.dropped.Add(1)
	}
}

// auditItem is a queued entry, or a flush request when flushed is set.
type auditItem struct {
	entry   AuditEntry
	flushed chan struct{}
}

// Dropped is how many queued entries were lost to a full queue.
func (a *Auditor) Dropped() int64 { return a.dropped.Load() }

func (a *Auditor) run() {
	defer a.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	batch := make([]AuditEntry, 0, 256)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := a.store.InsertAudit(ctx, batch); err != nil {
			a.log.Error("audit write failed", "entries", len(batch), "error", err)
		}
		cancel()
		batch = batch[:0]
	}
	for {
		select {
		case it := <-a.queue:
			if it.flushed != nil {
				flush()
				close(it.flushed)
				continue
			}
			batch = append(batch, it.entry)
			if len(batch) == cap(batch) {
				flush()
			}
		case <-tick.C:
			flush()
		case <-a.stop:
			var waiting []chan struct{}
			for {
				select {
				case it := <-a.queue:
					if it.flushed != nil {
						waiting = append(waiting, it.flushed)
						continue
					}
					batch = append(batch, it.entry)
				default:
					flush()
					for _, w := range waiting {
						close(w)
					}
					return
				}
			}
		}
	}
}

// Flush returns once everything recorded before the call is written.
func (a *Auditor) Flush(ctx context.Context) {
	done := make(chan struct{})
	select {
	case a.queue <- auditItem{flushed: done}:
	case <-ctx.Done():
		return
	case <-a.stop:
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// Close flushes the queue and stops the writer.
func (a *Auditor) Close() {
	a.once.Do(func() { close(a.stop) })
	a.wg.Wait()
}
