// Package flood owns the edge's per-source request limit, after
// Kamailio's pike module: a source that sends more than Requests SIP
// requests in a Window is banned for Ban, during which its requests are
// dropped (or refused) before they cost anything. Trusted sources (the
// carriers' own networks) are never counted. It knows nothing of SIP:
// callers ask Allow for each request's source address.
package flood

import (
	"net/netip"
	"sync"
	"time"
)

// Config of a Guard. Zero values take the defaults in brackets.
type Config struct {
	Requests int           // requests a source may send in a window [60]
	Window   time.Duration // [2 s]
	Ban      time.Duration // how long a source over the limit stays banned [60 s]
	// Trusted sources are never counted (nil: none).
	Trusted func(netip.Addr) bool
	// OnBan is told once per ban: the source and what it sent in the
	// window that crossed the limit. It must not block.
	OnBan func(addr netip.Addr, requests int, until time.Time)
	// MaxSources bounds the memory a spoofing flood can take: past it,
	// sources that are neither banned nor in their current window are
	// forgotten [100 000].
	MaxSources int
}

// Guard counts requests per source address.
type Guard struct {
	cfg Config
	now func() time.Time

	mu      sync.Mutex
	sources map[netip.Addr]*source
	banned  int
}

type source struct {
	windowStart time.Time
	count       int
	bannedUntil time.Time
}

// New makes a Guard.
func New(cfg Config) *Guard {
	if cfg.Requests <= 0 {
		cfg.Requests = 60
	}
	if cfg.Window <= 0 {
		cfg.Window = 2 * time.Second
	}
	if cfg.Ban <= 0 {
		cfg.Ban = 60 * time.Second
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = 100_000
	}
	return &Guard{cfg: cfg, now: time.Now, sources: map[netip.Addr]*source{}}
}

// Allow counts one request from addr and reports whether it may be
// handled: false while addr is banned.
func (g *Guard) Allow(addr netip.Addr) bool {
	addr = addr.Unmap()
	if g.cfg.Trusted != nil && g.cfg.Trusted(addr) {
		return true
	}
	now := g.now()
	g.mu.Lock()
	s, ok := g.sources[addr]
	if !ok {
		if len(g.sources) >= g.cfg.MaxSources {
			g.sweepLocked(now)
		}
		s = &source{windowStart: now}
		g.sources[addr] = s
	}
	if now.Before(s.bannedUntil) {
		g.mu.Unlock()
		return false
	}
	if now.Sub(s.windowStart) >= g.cfg.Window {
		s.windowStart, s.count = now, 0
	}
	s.count++
	if s.count <= g.cfg.Requests {
		g.mu.Unlock()
		return true
	}
	s.bannedUntil = now.Add(g.cfg.Ban)
	count, until := s.count, s.bannedUntil
	s.windowStart, s.count = now, 0
	g.mu.Unlock()
	if g.cfg.OnBan != nil {
		g.cfg.OnBan(addr, count, until)
	}
	return false
}

// sweepLocked forgets sources that are not banned and whose window has
// passed.
func (g *Guard) sweepLocked(now time.Time) {
	for a, s := range g.sources {
		if !now.Before(s.bannedUntil) && now.Sub(s.windowStart) >= g.cfg.Window {
			delete(g.sources, a)
		}
	}
}

// Banned lists the sources banned now, for operators and metrics.
func (g *Guard) Banned() []netip.Addr {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []netip.Addr
	for a, s := range g.sources {
		if now.Before(s.bannedUntil) {
			out = append(out, a)
		}
	}
	return out
}
