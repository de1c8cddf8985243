package flood

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestGuard(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	var mu sync.Mutex
	var bans []netip.Addr
	trusted := netip.MustParsePrefix("198.51.100.0/24")
	g := New(Config{Requests: 5, Window: time.Second, Ban: 10 * time.Second, Trusted: trusted.Contains,
		OnBan: func(a netip.Addr, n int, until time.Time) {
			mu.Lock()
			bans = append(bans, a)
			mu.Unlock()
			if n != 6 || !until.Equal(c.t.Add(10*time.Second)) {
				t.Errorf("ban of %s: %d requests, until %v", a, n, until)
			}
		}})
	g.now = c.now
	scanner, carrier, other := netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.10")
	for i := range 5 {
		if !g.Allow(scanner) {
			t.Fatalf("request %d refused under the limit", i+1)
		}
	}
	if g.Allow(scanner) {
		t.Fatal("the 6th request in the window was allowed")
	}
	for range 100 { // banned: refused, counted nowhere, banned once
		if g.Allow(scanner) {
			t.Fatal("allowed while banned")
		}
	}
	if len(bans) != 1 || bans[0] != scanner || len(g.Banned()) != 1 {
		t.Fatalf("bans %v, banned now %v", bans, g.Banned())
	}
	for range 1000 { // trusted: never counted
		if !g.Allow(carrier) {
			t.Fatal("a trusted source was refused")
		}
	}
	if !g.Allow(other) {
		t.Fatal("another source suffered for the scanner")
	}
	// A new window resets the count; the ban outlives it.
	c.advance(2 * time.Second)
	if g.Allow(scanner) {
		t.Fatal("unbanned before the ban ended")
	}
	c.advance(9 * time.Second)
	if !g.Allow(scanner) {
		t.Fatal("still banned after the ban ended")
	}
	// A steady source at the limit is never banned.
	for range 10 {
		for range 5 {
			if !g.Allow(other) {
				t.Fatal("a source at exactly the limit was banned")
			}
		}
		c.advance(time.Second)
	}
}

// TestGuardBoundedMemory: a flood from spoofed sources cannot grow the
// table past MaxSources once their windows pass.
func TestGuardBoundedMemory(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	g := New(Config{Requests: 5, Window: time.Second, MaxSources: 100})
	g.now = c.now
	for i := range 10_000 {
		g.Allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		if i%100 == 99 {
			c.advance(time.Second)
		}
	}
	if n := len(g.sources); n > 200 {
		t.Fatalf("%d sources kept", n)
	}
}

func BenchmarkAllow(b *testing.B) {
	g := New(Config{Requests: 1 << 30})
	a := netip.MustParseAddr("203.0.113.9")
	b.ReportAllocs()
	for b.Loop() {
		g.Allow(a)
	}
}
