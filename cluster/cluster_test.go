package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"trunkgate/internal/sqldb"
	"trunkgate/internal/sqldb/sqldbtest"
)

func TestMain(m *testing.M) { sqldbtest.Main(m) }

func TestFollowerFillsGaps(t *testing.T) {
	ctx := context.Background()
	db := sqldbtest.Open(t)
	l, err := Open(ctx, db, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	if err := l.Append(ctx, KindKey, "before"); err != nil { // before following: not applied
		t.Fatal(err)
	}
	var top int64
	db.QueryRow(`SELECT MAX(seq) FROM changes`).Scan(&top)
	f := &follower{low: top, seen: map[int64]bool{}, gaps: map[int64]time.Time{}}
	var got []string
	apply := func(c Change) { got = append(got, fmt.Sprintf("%d %s %s", c.Seq-top, c.Kind, c.ID)) }
	insert := func(seq int64, id string) {
		if _, err := db.Exec(`INSERT INTO changes (seq, kind, id, at_ms) VALUES (?, ?, ?, ?)`, top+seq, KindKey, id, now.UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}
	// Rows 2 and 4 commit first; 1 and 3 are still in flight.
	insert(2, "b")
	insert(4, "d")
	if err := l.poll(ctx, f, apply); err != nil {
		t.Fatal(err)
	}
	insert(1, "a")
	l.poll(ctx, f, apply)
	l.poll(ctx, f, apply) // nothing new: nothing applied twice
	if fmt.Sprint(got) != "[2 key b 4 key d 1 key a]" || f.low != top+2 {
		t.Fatalf("applied %v, low %d", got, f.low-top)
	}
	// Row 3 never commits (rolled back): after a while it is given up.
	now = now.Add(gapPatience + time.Second)
	l.poll(ctx, f, apply)
	if f.low != top+4 || len(f.seen) != 0 || len(f.gaps) != 0 {
		t.Fatalf("low %d, seen %v, gaps %v", f.low-top, f.seen, f.gaps)
	}
	insert(5, "e")
	l.poll(ctx, f, apply)
	if got[len(got)-1] != "5 key e" {
		t.Fatalf("applied %v", got)
	}
}

func TestFollow(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	db := sqldbtest.Open(t)
	l, err := Open(ctx, db, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	applied := make(chan Change, 4)
	fl, err := l.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { fl.Run(ctx, 10*time.Millisecond, func(c Change) { applied <- c }); close(done) }()
	l.Changed(KindTrunk, "tr_1")
	select {
	case c := <-applied:
		if c.Kind != KindTrunk || c.ID != "tr_1" {
			t.Fatalf("applied %+v", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the change never came")
	}
	cancel()
	<-done
}

func TestSecretIsSharedAndKept(t *testing.T) {
	ctx := context.Background()
	db := sqldbtest.Open(t)
	a, err := Open(ctx, db, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(ctx, db, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ka, err := a.Secret(ctx, "nonce")
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.Secret(ctx, "nonce")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := a.Secret(ctx, "other")
	if len(ka) != 32 || string(ka) != string(kb) || string(ka) == string(other) {
		t.Fatalf("secrets: %x, %x, %x", ka, kb, other)
	}
}

// TestFollowerIsNotified: on PostgreSQL a change reaches a follower at
// once, not at its next poll (an hour away here).
func TestFollowerIsNotified(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := sqldb.Open(sqldbtest.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l, err := Open(ctx, db, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan Change, 1)
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx, time.Hour, func(c Change) { got <- c }) }()
	defer func() { cancel(); <-done }()
	// Until the listener is connected nothing is applied (the poll is an
	// hour away): append until one change arrives. Its connection made,
	// the next change can only come by NOTIFY.
	deadline := time.After(5 * time.Second)
	for i := 0; ; i++ {
		if err := l.Append(ctx, KindKey, fmt.Sprint("k", i)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
		case <-time.After(200 * time.Millisecond):
			continue
		case <-deadline:
			t.Fatal("no change applied within 5 s with an hour between polls: the listener never connected")
		}
		break
	}
	sent := time.Now()
	if err := l.Append(ctx, KindKey, "notified"); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case c := <-got:
			if c.ID != "notified" {
				continue // a change appended while connecting
			}
			t.Logf("change applied %v after its append", time.Since(sent).Round(time.Microsecond))
			return
		case <-time.After(2 * time.Second):
			t.Fatal("a change appended after the listener connected was not applied within 2 s: no NOTIFY")
		}
	}
}
