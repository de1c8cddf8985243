package bridge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"trunkgate/media"
)

// Resume (DESIGN: extensions, a resumed stream): when an answered call's
// socket drops without a close handshake and Options.ResumeGrace is set,
// the stream outlives the socket. The call, its media and its bill go on;
// the caller hears the queued audio, then silence; the caller's audio is
// held (the last maxHeld frames); and the application gets the stream back
// on a new socket — the edge redials an application it dialled, and an
// application that dialled the edge resumes with ResumeOn. The new socket
// gets connected, a start with "resumed":true under the same streamSid,
// the events that waited (marks played meanwhile among them), the held
// audio in order, then live audio: media chunks and timestamps go on from
// where the old socket stopped. A close frame from the application is a
// hang-up, as always; only a socket that fails is waited for.
//
// One socket at a time: a resume on a new socket while the edge still
// writes to the old one (whose failure it has not seen yet) takes over.

// maxHeld bounds the caller's audio held while the stream waits for a
// resume: 5 s; older frames are dropped (and counted) first.
const maxHeld = 250

// The hold tone (Options.HoldTone): a 200 ms beep of 425 Hz (ITU-T E.180's
// tone frequency) every 2 s, at -20 dBFS, queued behind whatever the app
// had queued; the first after half a second, so that an app that is back
// at once is not heard to have gone.
const (
	holdBeepAfter = 500 * time.Millisecond
	holdBeepEvery = 2 * time.Second
	holdBeepHz    = 425
)

var holdBeeps = map[int][]int16{8000: beep(8000), 16000: beep(16000)}

// beep is 200 ms of the hold tone at rate, faded in and out over 10 ms.
func beep(rate int) []int16 {
	pcm := make([]int16, rate/5)
	fade := rate / 100
	for i := range pcm {
		gain := min(1, float64(min(i, len(pcm)-1-i))/float64(fade))
		pcm[i] = int16(3277 * gain * math.Sin(2*math.Pi*holdBeepHz*float64(i)/float64(rate)))
	}
	return pcm
}

// ErrNotResumable is a resume for a stream that has ended or that cannot
// be resumed (no grace window, not answered yet).
var ErrNotResumable = errors.New("stream cannot be resumed")

// current is the socket and its generation; nil while waiting for a
// resume.
func (s *Stream) current() (*websocket.Conn, uint64) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return s.conn, s.gen
}

func (s *Stream) isCurrent(conn *websocket.Conn) bool {
	c, _ := s.current()
	return c == conn
}

// signal wakes the writer to look at the socket again.
func (s *Stream) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// lost is a socket that failed under the reader, the writer or a ping:
// it reports whether the stream goes on (waiting for a resume, or on a
// newer socket already) rather than ending.
func (s *Stream) lost(conn *websocket.Conn) bool {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.conn != conn {
		return true // detached already, or replaced by a resume
	}
	if s.opts.ResumeGrace <= 0 || !s.begun.Load() || s.closing.Load() || s.ended() {
		return false
	}
	s.conn = nil
	conn.CloseNow()
	s.detachedAt = time.Now()
	s.graceTimer = time.AfterFunc(s.opts.ResumeGrace, s.graceExpired)
	if s.opts.HoldTone {
		s.holdTimer = time.AfterFunc(holdBeepAfter, s.holdBeep)
	}
	s.signal()
	s.log.Warn("application's socket dropped; holding the call for a resume", "grace", s.opts.ResumeGrace)
	if s.redial != nil {
		s.redials.Add(1)
		go s.redialUntil(s.detachedAt.Add(s.opts.ResumeGrace))
	}
	return true
}

// holdBeep queues a beep for the caller and the next one after it, while
// the stream waits for a resume.
func (s *Stream) holdBeep() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.conn != nil || s.closing.Load() || s.ended() {
		return
	}
	if p := s.player.Load(); p != nil {
		p.p.Play(holdBeeps[p.p.SampleRate()], time.Time{}) // no time: not a reply whose delay the edge measures
	}
	s.holdTimer.Reset(holdBeepEvery)
}

func (s *Stream) stopHoldTone() {
	if s.holdTimer != nil {
		s.holdTimer.Stop()
	}
}

func (s *Stream) graceExpired() {
	s.connMu.Lock()
	expired := s.conn == nil && !s.closing.Load()
	s.connMu.Unlock()
	if expired {
		s.log.Warn("application did not resume its stream within the grace window; ending the call", "grace", s.opts.ResumeGrace)
		s.finish()
	}
}

// attach makes conn the stream's socket: after a drop, or taking over
// from a socket the edge still thinks alive.
func (s *Stream) attach(conn *websocket.Conn) error {
	conn.SetReadLimit(maxMessage)
	s.connMu.Lock()
	if s.closing.Load() || s.ended() || !s.begun.Load() {
		s.connMu.Unlock()
		return ErrNotResumable
	}
	gap := time.Duration(0)
	if old := s.conn; old != nil {
		old.CloseNow()
	} else {
		gap = time.Since(s.detachedAt)
		s.graceTimer.Stop()
		s.stopHoldTone()
	}
	s.conn = conn
	s.gen++
	s.readers.Add(1)
	s.connMu.Unlock()
	s.stats.resumes.Add(1)
	s.signal()
	go s.reader(conn)
	s.log.Info("application resumed its stream", "gap_ms", gap.Milliseconds())
	return nil
}

// closeSocketSide marks the stream closing, so that no socket attaches
// from now on, and returns the socket (nil while waiting for a resume).
func (s *Stream) closeSocketSide() *websocket.Conn {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.closing.Store(true)
	if s.graceTimer != nil {
		s.graceTimer.Stop()
	}
	s.stopHoldTone()
	s.endLife() // a redial under way gives up
	return s.conn
}

// resumable reports whether a socket may take the stream over now.
func (s *Stream) resumable() bool {
	return s.opts.ResumeGrace > 0 && s.begun.Load() && !s.closing.Load() && !s.ended()
}

// ResumeOn upgrades r, the application's request to resume (authenticated
// by the caller), and carries the stream on over it.
func (s *Stream) ResumeOn(w http.ResponseWriter, r *http.Request) error {
	if !s.resumable() {
		return ErrNotResumable
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return fmt.Errorf("websocket upgrade: %w", err)
	}
	if err := s.attach(conn); err != nil {
		conn.CloseNow() // the call ended in between
		return nil      // the upgrade has answered the request
	}
	return nil
}

// redialUntil dials the application again, backing off, until it answers
// or the grace window closes (then graceExpired ends the call).
func (s *Stream) redialUntil(deadline time.Time) {
	defer s.redials.Done()
	ctx, cancel := context.WithDeadline(s.life, deadline)
	defer cancel()
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		conn, err := s.redial(ctx)
		if err == nil {
			if s.attach(conn) != nil {
				conn.CloseNow()
			}
			return
		}
		s.log.Info("application not reached again yet", "attempt", attempt, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// heldAudio is the caller's audio held while the stream waits for a
// resume: a ring of the newest maxHeld frames, made at the first drop and
// let go once it has been sent, so that a call never resumed pays nothing.
type heldAudio struct {
	frames   []heldFrame
	first, n int
}

type heldFrame struct {
	pcm [2 * media.FrameSamples]int16
	n   int
	ms  int64
}

// hold keeps a frame; it reports false when the oldest had to go.
func (h *heldAudio) hold(pcm []int16, ms int64) bool {
	if h.frames == nil {
		h.frames = make([]heldFrame, maxHeld)
	}
	kept := true
	if h.n == maxHeld {
		h.first = (h.first + 1) % maxHeld
		h.n--
		kept = false
	}
	f := &h.frames[(h.first+h.n)%maxHeld]
	f.n, f.ms = copy(f.pcm[:], pcm), ms
	h.n++
	return kept
}

// peek is the oldest held frame, nil when none is.
func (h *heldAudio) peek() *heldFrame {
	if h.n == 0 {
		return nil
	}
	return &h.frames[h.first]
}

// pop drops the oldest frame, once it has been sent; the ring goes once
// it is empty.
func (h *heldAudio) pop() {
	h.first = (h.first + 1) % maxHeld
	h.n--
	if h.n == 0 {
		*h = heldAudio{}
	}
}
