package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"trunkgate/refusal"
)

func TestCaps(t *testing.T) {
	m := NewMemory("edge-1")
	open := func(id, key, trunk string, caps Caps) error {
		_, err := m.Open(Entry{CallID: id, KeyID: key, TrunkID: trunk}, caps)
		return err
	}
	tests := []struct {
		name            string
		id, key, trunk  string
		caps            Caps
		want            error
		keyLive, trLive int
	}{
		{"first call", "c1", "k1", "t1", Caps{Key: 2, Trunk: 1}, nil, 1, 1},
		{"trunk full", "c2", "k1", "t1", Caps{Key: 2, Trunk: 1}, refusal.TrunkChannelCap, 1, 1},
		{"another trunk", "c3", "k1", "t2", Caps{Key: 2, Trunk: 1}, nil, 2, 1},
		{"key full", "c4", "k1", "t3", Caps{Key: 2}, refusal.ChannelCap, 2, 1},
		{"another key", "c5", "k2", "", Caps{Key: 1}, nil, 1, 1},
		{"no caps", "c6", "k3", "", Caps{}, nil, 1, 1},
		{"the same call twice", "c6", "k3", "", Caps{}, refusal.Internal, 1, 1},
	}
	for _, tt := range tests {
		err := open(tt.id, tt.key, tt.trunk, tt.caps)
		if !errors.Is(err, tt.want) && !(err == nil && tt.want == nil) {
			t.Fatalf("%s: Open = %v, want %v", tt.name, err, tt.want)
		}
		if got := m.Count(tt.key); got != tt.keyLive {
			t.Fatalf("%s: key %s has %d live calls, want %d", tt.name, tt.key, got, tt.keyLive)
		}
	}
	if got := m.Counts(); fmt.Sprint(got) != "map[k1:2 k2:1 k3:1]" {
		t.Fatalf("Counts = %v", got)
	}
}

func TestCloseFreesChannelsOnce(t *testing.T) {
	m := NewMemory("edge-1")
	h, err := m.Open(Entry{CallID: "c1", KeyID: "k1", TrunkID: "t1"}, Caps{Key: 1, Trunk: 1})
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	h.Close() // twice is harmless
	if m.Count("k1") != 0 || len(m.Calls()) != 0 {
		t.Fatalf("after close: %d live, %v", m.Count("k1"), m.Calls())
	}
	if _, err := m.Open(Entry{CallID: "c2", KeyID: "k1", TrunkID: "t1"}, Caps{Key: 1, Trunk: 1}); err != nil {
		t.Fatalf("channel not freed: %v", err)
	}
	if !errors.Is(context.Cause(h.Context()), context.Canceled) {
		t.Fatalf("a closed hold's context: %v", context.Cause(h.Context()))
	}
}

func TestAnswerEndAndSpendCap(t *testing.T) {
	m := NewMemory("edge-1")
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	a, _ := m.Open(Entry{CallID: "a", KeyID: "k1", AdmittedAt: t0, SpendCap: 100}, Caps{})
	b, _ := m.Open(Entry{CallID: "b", KeyID: "k1", AdmittedAt: t0.Add(time.Second), SpendCap: 100}, Caps{})
	c, _ := m.Open(Entry{CallID: "c", KeyID: "k2", AdmittedAt: t0.Add(2 * time.Second)}, Caps{})
	a.Answer(t0.Add(3 * time.Second))
	a.Answer(t0.Add(9 * time.Second)) // the first answer counts
	if e, _ := m.Get("a"); !e.AnsweredAt.Equal(t0.Add(3*time.Second)) || e.Node != "edge-1" {
		t.Fatalf("entry %+v", e)
	}
	m.SetSpendCap("k1", 50)
	for _, e := range m.KeyCalls("k1") {
		if e.SpendCap != 50 {
			t.Fatalf("spend cap of %s = %d after SetSpendCap", e.CallID, e.SpendCap)
		}
	}
	if ids := fmt.Sprint(callIDs(m.Calls())); ids != "[a b c]" {
		t.Fatalf("Calls in admission order: %s", ids)
	}
	if n := m.End("k1", refusal.KeyRevoked); n != 2 {
		t.Fatalf("End told %d calls", n)
	}
	for _, h := range []*Hold{a, b} {
		if !errors.Is(context.Cause(h.Context()), refusal.KeyRevoked) {
			t.Fatalf("%s: cause %v", h.CallID(), context.Cause(h.Context()))
		}
	}
	if c.Context().Err() != nil {
		t.Fatal("another key's call was ended")
	}
	// Ending is an order: the calls stay in the ledger until they close.
	if m.Count("k1") != 2 {
		t.Fatalf("k1 has %d calls before they closed", m.Count("k1"))
	}
	if !m.EndCall("c", refusal.OperatorHangup) || m.EndCall("nope", refusal.OperatorHangup) {
		t.Fatal("EndCall")
	}
	if !errors.Is(context.Cause(c.Context()), refusal.OperatorHangup) {
		t.Fatalf("c: %v", context.Cause(c.Context()))
	}
	if n := m.EndAll(refusal.Draining); n != 3 {
		t.Fatalf("EndAll told %d", n)
	}
}

// TestRaceForTheLastChannel: many calls racing for a key's channels get
// exactly the cap, never more.
func TestRaceForTheLastChannel(t *testing.T) {
	m := NewMemory("edge-1")
	const callers, limit = 64, 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.Open(Entry{CallID: fmt.Sprint("c", i), KeyID: "k1", TrunkID: "t1"}, Caps{Key: limit, Trunk: limit + 1}); err == nil {
				mu.Lock()
				admitted++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if admitted != limit || m.Count("k1") != limit {
		t.Fatalf("%d admitted, %d in the ledger; want %d", admitted, m.Count("k1"), limit)
	}
}

func callIDs(es []Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.CallID
	}
	return out
}

// BenchmarkOpenClose is one call's admission and end in the ledger.
func BenchmarkOpenClose(b *testing.B) {
	m := NewMemory("edge-1")
	for i := range 200 { // other keys' live calls
		if _, err := m.Open(Entry{CallID: fmt.Sprint("bg", i), KeyID: fmt.Sprint("k", i%20)}, Caps{}); err != nil {
			b.Fatal(err)
		}
	}
	e := Entry{CallID: "c", KeyID: "k1", TrunkID: "t1"}
	b.ReportAllocs()
	for b.Loop() {
		h, err := m.Open(e, Caps{Key: 100, Trunk: 100})
		if err != nil {
			b.Fatal(err)
		}
		h.Close()
	}
}

func TestTokenBucket(t *testing.T) {
	var b Bucket
	t0 := time.Unix(0, 0)
	// cps 2: burst of 2, then one more every 500 ms.
	got := []bool{b.Take(t0, 2), b.Take(t0, 2), b.Take(t0, 2), b.Take(t0.Add(499*time.Millisecond), 2),
		b.Take(t0.Add(500*time.Millisecond), 2), b.Take(t0.Add(500*time.Millisecond), 2)}
	want := []bool{true, true, false, false, true, false}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("take #%d = %v, want %v (all: %v)", i, got[i], want[i], got)
		}
	}
	// cps 0.5: burst is still 1.
	var slow Bucket
	if !slow.Take(t0, 0.5) || slow.Take(t0.Add(time.Second), 0.5) || !slow.Take(t0.Add(2*time.Second), 0.5) {
		t.Fatal("cps 0.5 should allow one call every 2 s")
	}
	// cps 0: no limit.
	var none Bucket
	for range 1000 {
		if !none.Take(t0, 0) {
			t.Fatal("cps 0 refused")
		}
	}
}

func TestOpenCallRate(t *testing.T) {
	m := NewMemory("n1")
	t0 := time.Unix(1000, 0)
	caps := Caps{Key: 10, CPS: 2}
	var got []error
	for i, at := range []time.Duration{0, 0, 0, 500 * time.Millisecond} {
		_, err := m.Open(Entry{CallID: fmt.Sprint("c", i), KeyID: "k", AdmittedAt: t0.Add(at)}, caps)
		got = append(got, err)
	}
	want := []error{nil, nil, refusal.CallRate, nil}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("open #%d = %v, want %v", i, got[i], want[i])
		}
	}
	if n := m.Count("k"); n != 3 {
		t.Fatalf("a call refused for its rate holds no channel: count %d, want 3", n)
	}
}
