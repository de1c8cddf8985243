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
	s.pingMu.Lock()
	s.pingTimer = time.AfterFunc(s.opts.Ping, s.ping)
	s.pingMu.Unlock()
}

func (s *Stream) ping() {
	select {
	case <-s.done:
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Ping)
	err := s.conn.Ping(ctx)
	cancel()
	select {
	case <-s.done:
		return // the stream ended meanwhile: the failed ping says nothing
	default:
	}
	if err != nil {
		s.stats.pingsMissed.Add(1)
		s.log.Warn("application did not answer a WebSocket ping; ending the call", "timeout", s.opts.Ping, "error", err)
		s.finish()
		return
	}
	s.pingMu.Lock()
	s.pingTimer.Reset(s.opts.Ping)
	s.pingMu.Unlock()
}

func (s *Stream) stopLiveness() {
	s.pingMu.Lock()
	if s.pingTimer != nil {
		s.pingTimer.Stop()
	}
	s.pingMu.Unlock()
}
