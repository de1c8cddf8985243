package media

import (
	"sync"
	"time"
)

// Playout is the queue of application audio waiting to go to the carrier,
// drained one packet per ptime by the session clock. Marks sit at positions
// in the queue and are reported when the audio before them has been
// played; Clear drops the queue at once (barge-in) and reports every
// pending mark as cleared.
//
// Write, Mark and Clear come from the application's goroutine, Read from
// the session clock; all are safe for concurrent use.
type Playout struct {
	mu      sync.Mutex
	buf     []int16 // ring; len is the capacity
	head    int     // index of the oldest queued sample
	size    int     // queued samples
	written int64   // samples ever queued
	played  int64   // samples ever dequeued (or cleared)
	marks   []pendingMark
	fired   []DoneMark // marks due, handed out by TakeMarks
	initial int        // the queue's size when idle; it shrinks back to it
	limit   int
	Over    uint64 // samples refused because the queue was at its limit
	// spurt is audio written into an empty queue: where it starts and
	// when it came, so that Read can say when its first sample leaves
	// (the edge's own latency toward the carrier; audio an application
	// queues ahead waits by its own choice and is not counted).
	spurt   int64
	spurtAt time.Time // zero: no spurt waiting
}

// DoneMark is a mark whose audio is done with: played, or dropped by a
// clear before it was played.
type DoneMark struct {
	Name    string
	Cleared bool
}

type pendingMark struct {
	at   int64 // stream position (written count) the mark follows
	name string
}

// Queue sizes: start at 160 ms (a live call's steady state, app audio
// arriving about as fast as it plays, needs no more), double on demand up
// to 120 s, which is longer than any single utterance a voice agent sends
// ahead, and go back to the start once a long burst has played out (when
// it has grown past 8 times): a quiet call holds 2.5 KB, not what its
// longest sentence needed. In samples at 8 kHz; twice as many at 16 kHz.
const (
	playoutInitial = ClockRate * 160 / 1000
	playoutLimit   = 120 * ClockRate
)

// NewPlayout returns an empty queue.
func NewPlayout() *Playout { return newPlayout(1) }

// newPlayout is a queue of samples at spt times the 8 kHz clock.
func newPlayout(spt int) *Playout {
	return &Playout{buf: make([]int16, playoutInitial*spt), initial: playoutInitial * spt, limit: playoutLimit * spt}
}

// Queued is the audio waiting, in samples.
func (p *Playout) Queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.size
}

// Write queues pcm, which came from the application at at (zero: not
// known). Audio past the queue limit is dropped and counted.
func (p *Playout) Write(pcm []int16, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.size == 0 && p.spurtAt.IsZero() && len(pcm) > 0 {
		p.spurt, p.spurtAt = p.written, at
	}
	if need := p.size + len(pcm); need > len(p.buf) {
		p.grow(need)
	}
	room := len(p.buf) - p.size
	if len(pcm) > room {
		p.Over += uint64(len(pcm) - room)
		pcm = pcm[:room]
	}
	tail := (p.head + p.size) % len(p.buf)
	n := copy(p.buf[tail:], pcm)
	copy(p.buf, pcm[n:])
	p.size += len(pcm)
	p.written += int64(len(pcm))
}

func (p *Playout) grow(need int) {
	c := len(p.buf)
	for c < need && c < p.limit {
		c *= 2
	}
	c = min(c, p.limit)
	if c == len(p.buf) {
		return
	}
	nb := make([]int16, c)
	n := copy(nb, p.buf[p.head:min(len(p.buf), p.head+p.size)])
	copy(nb[n:], p.buf[:p.size-n])
	p.buf, p.head = nb, 0
}

// MaxPendingMarks bounds the marks one call keeps waiting for their audio.
const MaxPendingMarks = 1024

// Mark places a named mark after the audio queued so far. If nothing is
// queued, the mark is due at once and the next TakeMarks hands it out. It
// reports false, keeping nothing, when MaxPendingMarks are waiting.
func (p *Playout) Mark(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.marks)+len(p.fired) >= MaxPendingMarks {
		return false
	}
	if p.written <= p.played {
		p.fired = append(p.fired, DoneMark{Name: name})
		return true
	}
	p.marks = append(p.marks, pendingMark{at: p.written, name: name})
	return true
}

// Clear drops all queued audio and makes every pending mark due as
// cleared; it returns how many samples it dropped.
func (p *Playout) Clear() (dropped int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	dropped = p.size
	p.spurtAt = time.Time{}
	p.played += int64(p.size)
	p.head, p.size = 0, 0
	for _, m := range p.marks {
		p.fired = append(p.fired, DoneMark{Name: m.name, Cleared: true})
	}
	p.marks = p.marks[:0]
	return dropped
}

// Read fills dst with the next queued audio, padding with silence, and
// returns how many samples were real audio; spurtAt, when not zero, is
// when the audio that starts in dst came into an empty queue.
func (p *Playout) Read(dst []int16) (n int, spurtAt time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n = min(len(dst), p.size)
	if !p.spurtAt.IsZero() && p.spurt < p.played+int64(n) {
		spurtAt, p.spurtAt = p.spurtAt, time.Time{}
	}
	first := copy(dst[:n], p.buf[p.head:min(len(p.buf), p.head+n)])
	copy(dst[first:n], p.buf[:n-first])
	clear(dst[n:])
	p.head = (p.head + n) % len(p.buf)
	p.size -= n
	p.played += int64(n)
	if p.size == 0 && len(p.buf) > 8*p.initial {
		p.buf, p.head = make([]int16, p.initial), 0 // once per long burst, not per packet
	}
	due := 0
	for due < len(p.marks) && p.marks[due].at <= p.played {
		p.fired = append(p.fired, DoneMark{Name: p.marks[due].name})
		due++
	}
	if due > 0 {
		p.marks = append(p.marks[:0], p.marks[due:]...)
	}
	return n, spurtAt
}

// TakeMarks appends the marks that are due to dst and forgets them; it
// returns dst. With a reused dst it does not allocate.
func (p *Playout) TakeMarks(dst []DoneMark) []DoneMark {
	p.mu.Lock()
	defer p.mu.Unlock()
	dst = append(dst, p.fired...)
	clear(p.fired)
	p.fired = p.fired[:0]
	return dst
}
