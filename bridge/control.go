package bridge

import (
	"encoding/json"
	"fmt"
	"time"

	"trunkgate/media"
)

// Call control from the application (DESIGN: extensions): messages a
// Twilio app never sends, accepted without opt-in, rare enough to be parsed
// with encoding/json rather than by the media path's parser.

// controlMsg is a dtmf, hangup or transfer message from the application.
type controlMsg struct {
	DTMF struct {
		Digit      string `json:"digit"`
		DurationMs *int   `json:"durationMs"`
	} `json:"dtmf"`
	Hangup struct {
		AfterPlayout bool `json:"afterPlayout"`
	} `json:"hangup"`
	Transfer struct {
		To string `json:"to"`
	} `json:"transfer"`
}

// maxDTMFDigits bounds the digits one dtmf message may carry.
const maxDTMFDigits = 32

// hangupMark is the mark a hangup after playout places behind the queued
// audio: its echo ends the call instead of reaching the application. An
// application that names a mark so ("\u0000hangup") hangs its own call up,
// which it may do anyway.
const hangupMark = "\x00hangup"

func parseControl(data []byte) (controlMsg, error) {
	var m controlMsg
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	return m, nil
}

// control handles a dtmf, hangup or transfer message; player is nil before the call
// is answered.
func (s *Stream) control(event string, data []byte, player Player) {
	m, err := parseControl(data)
	if err != nil {
		s.warnOnce("malformed-"+event, "malformed "+event+" message ignored", "error", err)
		return
	}
	switch event {
	case "dtmf":
		if player == nil {
			s.warnOnce("early-dtmf", "dtmf before the call was answered ignored")
			return
		}
		var d time.Duration
		if m.DTMF.DurationMs != nil {
			d = time.Duration(*m.DTMF.DurationMs) * time.Millisecond
			if d < media.MinDTMFDuration || d > media.MaxDTMFDuration {
				s.warnOnce("dtmf-duration", "dtmf durationMs out of range; clamped",
					"duration_ms", *m.DTMF.DurationMs, "min_ms", media.MinDTMFDuration.Milliseconds(), "max_ms", media.MaxDTMFDuration.Milliseconds())
			}
		}
		if m.DTMF.Digit == "" || len(m.DTMF.Digit) > maxDTMFDigits {
			s.warnOnce("dtmf-digit", "dtmf message needs 1 to 32 digits in dtmf.digit; ignored")
			return
		}
		if err := player.SendDTMF(m.DTMF.Digit, d); err != nil {
			s.warnOnce("dtmf-send", "dtmf not sent", "error", err)
			return
		}
		s.stats.dtmfOut.Add(int64(len(m.DTMF.Digit)))
	case "transfer":
		s.ctlMu.Lock()
		transfer := s.onTransfer
		s.ctlMu.Unlock()
		if transfer == nil {
			s.warnOnce("early-transfer", "transfer before the call was answered ignored")
			s.TransferStatus("failed", 0)
			return
		}
		if err := transfer(m.Transfer.To); err != nil {
			s.warnOnce("transfer", "transfer refused", "error", err)
			s.TransferStatus("failed", 0)
		}
	case "hangup":
		if m.Hangup.AfterPlayout && player != nil {
			player.Mark(hangupMark)
			return
		}
		s.hangup()
	}
}

// hangup ends the call as the application asked: like closing the socket,
// except that the edge still sends stop before it closes it.
func (s *Stream) hangup() {
	s.byApp.Store(true)
	s.finish()
}

// clear drops the queued audio and, for a stream that opted in, says how
// much: droppedMs, and playedUntil on the timeline of media.timestamp.
// The marks the clear drops reach the application after cleared: the
// clock that echoes them waits for the queue while the clear holds it.
func (s *Stream) clear(player Player) {
	if !s.opts.Extensions {
		player.Clear()
		return
	}
	s.eventAfter(func(e *event) {
		dropped, at := player.Clear()
		e.ms = dropped.Milliseconds()
		if origin := s.mediaOrigin.Load(); origin != 0 {
			e.at = max(at.Milliseconds()-(origin-1), 0)
		}
	}, event{kind: evCleared})
}

// Hold tells an application that opted in that the carrier put the call
// on hold (re-INVITE sendonly or inactive) or took it off; the call and
// the stream go on either way.
func (s *Stream) Hold(held bool) {
	if s.opts.Extensions {
		s.event(event{kind: evHold, flag: held})
	}
}

// OnTransfer sets who carries out the application's transfer requests
// (the call, once answered).
func (s *Stream) OnTransfer(f func(to string) error) {
	s.ctlMu.Lock()
	s.onTransfer = f
	s.ctlMu.Unlock()
}

// TransferStatus tells the application how its transfer goes: accepted,
// succeeded or failed, with the SIP code (0 when there is none). It
// answers the application's own request, so it needs no opt-in.
func (s *Stream) TransferStatus(status string, sipCode int) {
	s.event(event{kind: evTransfer, name: status, code: sipCode})
}
