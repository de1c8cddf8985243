package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"trunkgate/alerts"
	"trunkgate/cluster"

	"trunkgate/billing"
	"trunkgate/call"
	"trunkgate/internal/sqldb"
	"trunkgate/keys"
	"trunkgate/ledger"
	"trunkgate/metrics"
	"trunkgate/trunks"
)

// edge is the edge's state on its database: stores, caches, the ledger,
// the meter and the audit log, opened the same way for serve and for the
// CLI's --db mode.
type edge struct {
	db      *dbHandle
	node    string
	changes *cluster.Log
	ledger  liveLedger
	// shared is the ledger when edges share a PostgreSQL (nil on SQLite,
	// and in the CLI's --db mode, which holds no calls).
	shared   *ledger.Shared
	rates    *billing.Rates
	admitter *keys.Admitter
	manager  *keys.Manager
	audit    *keys.Auditor
	trunks   *trunks.Directory
	meter    *billing.Meter
	cdrs     *billing.SQLStore
	alerts   *alerts.SQLStore
}

// liveLedger is the ledger of live calls as the edge's parts read it:
// ledger.Memory for one edge, ledger.Shared for edges on one PostgreSQL.
type liveLedger interface {
	keys.Ledger
	billing.Ledger
	call.Ledger
	alerts.Live
}

// timedAdmission measures each admission for trunkgate_admission_seconds.
type timedAdmission struct {
	next call.Admitter
	met  *metrics.Metrics
}

func (t timedAdmission) Admit(ctx context.Context, req keys.Request) (call.Lease, error) {
	start := time.Now()
	l, err := t.next.Admit(ctx, req)
	t.met.AdmissionTook(time.Since(start))
	return l, err
}

// keyUsage adapts the admitter and the meter to the metrics collector.
type keyUsage struct {
	a *keys.Admitter
	m *billing.Meter
}

func (u keyUsage) KeyUsage() []metrics.KeyUsage {
	usage := u.a.Usage()
	out := make([]metrics.KeyUsage, len(usage))
	for i, x := range usage {
		s := u.m.Spend(x.KeyID, x.SpendCap)
		out[i] = metrics.KeyUsage{KeyID: x.KeyID, Active: x.Active, Limit: x.MaxChannels, SpendMicros: s.MonthToDate,
			RemainingMicros: s.Remaining}
	}
	return out
}

// openEdge opens the database and the stores, caches and logs on it.
// node names this edge in the ledger and the change log; an edge that
// takes calls on PostgreSQL (takesCalls) keeps its ledger there.
func openEdge(ctx context.Context, path, node string, takesCalls bool, log *slog.Logger) (*edge, error) {
	db, err := openDB(ctx, path)
	if err != nil {
		return nil, err
	}
	e, err := newEdge(ctx, db, node, takesCalls, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	return e, nil
}

func newEdge(ctx context.Context, db *dbHandle, node string, takesCalls bool, log *slog.Logger) (*edge, error) {
	changes, err := cluster.Open(ctx, db.sql, log)
	if err != nil {
		return nil, err
	}
	changed := func(kind string) func(string) { return func(id string) { changes.Changed(kind, id) } }
	var live liveLedger = ledger.NewMemory(node)
	var shared *ledger.Shared
	if takesCalls && db.sql.Dialect == sqldb.Postgres {
		table, err := cluster.OpenLedgerTable(ctx, db.sql)
		if err != nil {
			return nil, err
		}
		shared = ledger.NewShared(node, table, log)
		live = shared
	}
	meter, err := billing.NewMeter(ctx, db.cdrs, live, log)
	if err != nil {
		return nil, err
	}
	if shared != nil {
		shared.OnSynced = func(ctx context.Context) {
			if err := meter.ReloadSpend(ctx); err != nil && ctx.Err() == nil {
				log.Error("reloading the month's spend", "error", err)
			}
		}
	}
	audit := keys.NewAuditor(db.keys, log)
	rates, err := billing.NewRates(ctx, db.cdrs, audit, changed(cluster.KindRates))
	if err == nil {
		admitter := keys.NewAdmitter(db.keys, live, meter, rates)
		if err = admitter.Load(ctx); err == nil {
			var dir *trunks.Directory
			if dir, err = trunks.NewDirectory(ctx, db.trunks, changed(cluster.KindTrunk)); err == nil {
				return &edge{db: db, node: node, changes: changes, ledger: live, shared: shared, rates: rates, admitter: admitter,
					manager: keys.NewManager(db.keys, admitter, audit, changed(cluster.KindKey)), audit: audit,
					trunks: dir, meter: meter, cdrs: db.cdrs, alerts: db.alerts}, nil
			}
		}
	}
	audit.Close()
	return nil, err
}

// runShared keeps this edge in the shared ledger until ctx ends: it syncs
// (ledger.Shared.Run) and closes the bills of edges that died: at once for
// the ones its syncs found dead, and every half minute for any live call
// whose edge is gone and that no other edge closed.
func (e *edge) runShared(ctx context.Context, log *slog.Logger) {
	dead := make(chan string, 64)
	e.shared.OnDead = func(node string) {
		select {
		case dead <- node:
		default: // the sweep closes it
		}
	}
	synced := make(chan struct{})
	go func() {
		defer close(synced)
		e.shared.Run(ctx)
	}()
	defer func() { <-synced }()
	sweep := time.NewTicker(30 * time.Second)
	defer sweep.Stop()
	report := func(recovered []billing.CDR, err error) {
		if err != nil && ctx.Err() == nil {
			log.Error("closing a dead edge's calls", "error", err)
		}
		for _, cdr := range recovered {
			log.Warn("closed a dead edge's call, billed to its last checkpoint", "node", cdr.Node,
				"call_id", cdr.CallID, "key_id", cdr.KeyID, "billed_seconds", cdr.BilledSeconds)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case node := <-dead:
			report(e.meter.Recover(ctx, node))
		case <-sweep.C:
			report(e.meter.RecoverOrphans(ctx, e.shared.Alive(), e.node, e.shared.DeadAfter))
		}
	}
}

// follow applies what other edges (or the CLI) change, until ctx ends.
func (e *edge) follow(ctx context.Context, f *cluster.Follower, log *slog.Logger) {
	// PostgreSQL notifies each change: its poll only covers a lost
	// notification. SQLite is watched by polling.
	every := 250 * time.Millisecond
	if e.db.sql.Dialect == sqldb.Postgres {
		every = time.Second
	}
	f.Run(ctx, every, func(c cluster.Change) {
		var err error
		switch c.Kind {
		case cluster.KindKey:
			err = e.admitter.Refresh(ctx, c.ID)
		case cluster.KindTrunk:
			err = e.trunks.Reload(ctx)
		case cluster.KindRates:
			err = e.rates.Reload(ctx)
		}
		if err != nil && ctx.Err() == nil {
			log.Error("applying a change from the cluster", "kind", c.Kind, "id", c.ID, "error", err)
		}
	})
}

// defaultNodeName names this process: the host name and a random suffix
// (two edges on one host are two nodes).
func defaultNodeName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "edge"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%x", h, b)
}

// dbHandle is the database with each component's store on it.
type dbHandle struct {
	sql    *sqldb.DB
	close  func() error
	keys   *keys.SQLStore
	trunks *trunks.SQLStore
	cdrs   *billing.SQLStore
	alerts *alerts.SQLStore
}

func (d *dbHandle) Close() error { return d.close() }

func openDB(ctx context.Context, path string) (*dbHandle, error) {
	db, err := sqldb.Open(path)
	if err != nil {
		return nil, err
	}
	ks, err := keys.NewSQLStore(ctx, db)
	if err == nil {
		var ts *trunks.SQLStore
		if ts, err = trunks.NewSQLStore(ctx, db); err == nil {
			var cs *billing.SQLStore
			if cs, err = billing.NewSQLStore(ctx, db); err == nil {
				var as *alerts.SQLStore
				if as, err = alerts.NewSQLStore(ctx, db); err == nil {
					return &dbHandle{sql: db, close: db.Close, keys: ks, trunks: ts, cdrs: cs, alerts: as}, nil
				}
			}
		}
	}
	db.Close()
	return nil, fmt.Errorf("database %s: %w", db.Where, err)
}

// dataDir is where the edge keeps its files beside the database: the
// SQLite file's directory, or data/ with PostgreSQL.
func dataDir(db string) string {
	if sqldb.IsPostgres(db) {
		return "data"
	}
	return filepath.Dir(db)
}
