package media

import (
	"sync"
	"time"
)

// One clock for every session of a pool. A session's clock work (the next
// packet toward the carrier, the next frame toward the application, marks,
// RTCP, the RTP timeout) used to run on a goroutine and a timer of its
// own: two wake-ups per call every 20 ms, most of the edge's CPU under
// load (futex and netpoll, not arithmetic). The hub wakes once per
// tickPeriod and runs every due session in turn, in a stable order, so
// that each session's packets still leave exactly every ptime.
//
// Sessions' deadlines sit half a tick after the hub's grid instants: a
// deadline never races the tick that serves it (a deadline on the grid
// itself would be served now or a whole tick late by a microsecond's
// difference, and the gap on the wire would flip between 10 and 30 ms).

// tickPeriod divides every ptime (10 to 60 ms) and the 20 ms frame.
const tickPeriod = 10 * time.Millisecond

type clockHub struct {
	mu       sync.Mutex
	sessions []*Session // in registration order: the order packets leave in
	running  bool
	origin   time.Time // the grid: origin + k·tickPeriod
	done     chan struct{}
	batch    []*Session // the goroutine's copy of sessions
}

// register adds s and sets its start on the grid, half a tick after the
// next tick; the hub's goroutine starts with its first session.
func (h *clockHub) register(s *Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if !h.running {
		if h.done != nil {
			<-h.done // the last goroutine has seen its last session go
		}
		h.running, h.origin, h.done = true, now, make(chan struct{})
		go h.run(h.origin, h.done)
	}
	k := now.Sub(h.origin)/tickPeriod + 1
	s.start = h.origin.Add(k*tickPeriod - tickPeriod/2)
	h.sessions = append(h.sessions, s)
}

// unregister removes s; its tick may be running, which the caller waits
// out with the session's own lock.
func (h *clockHub) unregister(s *Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, x := range h.sessions {
		if x == s {
			h.sessions = append(h.sessions[:i], h.sessions[i+1:]...)
			return
		}
	}
}

// run ticks until no session is left. After a stall (a paused process)
// it does not replay the ticks it missed: each session catches up from
// its own clock.
func (h *clockHub) run(origin time.Time, done chan struct{}) {
	defer close(done)
	timer := time.NewTimer(tickPeriod)
	defer timer.Stop()
	for k := time.Duration(1); ; k++ {
		next := origin.Add(k * tickPeriod)
		if late := time.Since(next); late > tickPeriod {
			k += late / tickPeriod
			next = origin.Add(k * tickPeriod)
		}
		timer.Reset(time.Until(next))
		<-timer.C
		h.mu.Lock()
		if len(h.sessions) == 0 {
			h.running = false
			h.mu.Unlock()
			return
		}
		h.batch = append(h.batch[:0], h.sessions...)
		h.mu.Unlock()
		now := time.Now()
		for _, s := range h.batch {
			s.tick(now)
		}
		clear(h.batch)
	}
}
