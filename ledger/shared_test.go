package ledger

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"trunkgate/refusal"
)

// downTable is a shared table whose database does not answer.
type downTable struct{}

var errDown = errors.New("connection refused")

func (downTable) Insert(context.Context, Entry, Caps) error           { return errDown }
func (downTable) Answer(context.Context, string, time.Time) error     { return errDown }
func (downTable) Delete(context.Context, string) error                { return errDown }
func (downTable) Leave(context.Context, string) error                 { return errDown }
func (downTable) Orders(context.Context, string, func(), func(error)) {}
func (downTable) Order(context.Context, string, refusal.Reason) (bool, error) {
	return false, errDown
}
func (downTable) LastSeen(context.Context, string) (time.Duration, bool, error) {
	return 0, false, errDown
}
func (downTable) Sync(context.Context, SyncRequest) (Synced, error) {
	return Synced{}, errDown
}

// With its database down, a shared ledger refuses calls as overloaded
// (503, the carrier may retry elsewhere), holds nothing for them, and
// says where the failure came from.
func TestSharedDatabaseDown(t *testing.T) {
	s := NewShared("a", downTable{}, slog.New(slog.DiscardHandler))
	_, err := s.Open(Entry{CallID: "c1", KeyID: "k", Direction: "inbound"}, Caps{Key: 5})
	if r, ok := refusal.As(err); !ok || r != refusal.Overloaded || !errors.Is(err, errDown) {
		t.Fatalf("open with the database down: %v, want overloaded wrapping the cause", err)
	}
	if n := s.Count("k"); n != 0 || len(s.Local()) != 0 {
		t.Fatalf("a refused call holds a channel: count %d, local %d", n, len(s.Local()))
	}
	if err := s.Sync(context.Background()); !errors.Is(err, errDown) {
		t.Fatalf("sync: %v", err)
	}
	if s.EndCall("elsewhere", refusal.OperatorHangup) {
		t.Fatal("an order to end an unknown call reported done with the database down")
	}
}
