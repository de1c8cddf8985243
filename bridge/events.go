package bridge

import "trunkgate/refusal"

// Events toward the application (marks, DTMF, progress, hold, transfer,
// cleared, start and stop) go through one bounded queue that the writer
// drains in order: never dropped, and a queue that overflows means the
// application stopped reading.

type eventKind uint8

const (
	evStart eventKind = iota + 1
	evProgress
	evMark
	evDTMF
	evCleared
	evHold
	evTransfer
	evStop
)

type event struct {
	kind  eventKind
	name  string // mark name, progress status
	flag  bool   // mark: its audio was dropped by a clear; hold: held
	digit byte
	code  int   // progress SIP code
	end   End   // stop
	leg   Leg   // start
	ms    int64 // cleared: droppedMs
	at    int64 // cleared: playedUntil, a media timestamp in ms
}

// End is how a stream ends: what stop says and how the socket closes.
type End struct {
	Reason    string // stop.reason: the refusal table's text or the carrier's reason
	SIPCode   int    // stop.sipCode: the call's SIP final code (200 when it was answered)
	CloseCode int    // the WebSocket close code (1000, or 4000 + SIP code)
}

// EndFor is the End of a call that the edge ends or refuses for r.
func EndFor(r refusal.Reason, answered bool) End {
	code, _ := r.SIP()
	if answered {
		code = 200
	}
	return End{Reason: r.Text(), SIPCode: code, CloseCode: r.CloseCode()}
}

func (s *Stream) event(e event) { s.eventAfter(nil, e) }

// eventAfter queues the event that before (when not nil) fills in, with
// no other event queued in between.
func (s *Stream) eventAfter(before func(*event), e event) {
	s.evMu.Lock()
	if before != nil {
		before(&e)
	}
	if len(s.events) >= maxEvents && e.kind != evStop {
		s.evMu.Unlock()
		s.warnOnce("events", "application stopped reading: too many events pending; ending the stream")
		s.finish() // the call ends; Close tears the socket down
		return
	}
	s.events = append(s.events, e)
	s.evMu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
