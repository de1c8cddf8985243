package bridge

import (
	"context"
	"time"
)

// Liveness: a WebSocket ping every Options.Ping; an application that does
// not answer with a pong within that time has failed (a hung process
// behind a live TCP connection would otherwise take the call's audio into
// its socket buffers for minutes). Control frames only: the messages a
// Twilio app reads are unchanged, and every WebSocket library answers
// pings by itself. No goroutine waits between pings: a timer runs each
// one on a goroutine of its own that ends with it.

func (s *Stream) startLiveness() {
	if s.opts.Ping <= 0 {
		return
	}
	s.timersMu.Lock()
	s.pingTimer = time.AfterFunc(s.opts.Ping, s.ping)
	s.timersMu.Unlock()
}

func (s *Stream) ping() {
	select {
	case <-s.done:
		return
	default:
	}
	conn, _ := s.current()
	var err error
	if conn != nil { // nil: waiting for a resume
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Ping)
		err = conn.Ping(ctx)
		cancel()
	}
	select {
	case <-s.done:
		return // the stream ended meanwhile: the failed ping says nothing
	default:
	}
	if err != nil && !s.lost(conn) {
		s.stats.pingsMissed.Add(1)
		s.log.Warn("application did not answer a WebSocket ping; ending the call", "timeout", s.opts.Ping, "error", err)
		s.finish()
		return
	}
	s.timersMu.Lock()
	s.pingTimer.Reset(s.opts.Ping)
	s.timersMu.Unlock()
}

func (s *Stream) stopLiveness() {
	s.timersMu.Lock()
	if s.pingTimer != nil {
		s.pingTimer.Stop()
	}
	s.timersMu.Unlock()
}

// The first-audio deadline: an application that has sent no audio this
// long after the call was answered has failed to start (a crashed model
// behind a live socket), and the caller should not sit in silence.

func (s *Stream) startFirstAudioDeadline() {
	if s.opts.FirstAudio <= 0 {
		return
	}
	s.timersMu.Lock()
	defer s.timersMu.Unlock()
	s.audioDue = time.AfterFunc(s.opts.FirstAudio, func() {
		if s.stats.framesIn.Load() == 0 && !s.closing.Load() {
			s.noAudio.Store(true)
			s.log.Warn("application sent no audio by the first-audio deadline; ending the call", "deadline", s.opts.FirstAudio)
			s.finish()
		}
	})
}

func (s *Stream) stopFirstAudioDeadline() {
	s.timersMu.Lock()
	defer s.timersMu.Unlock()
	if s.audioDue != nil {
		s.audioDue.Stop()
	}
}

// NoAudio reports that the stream ended because the application sent no
// audio by the first-audio deadline.
func (s *Stream) NoAudio() bool { return s.noAudio.Load() }
