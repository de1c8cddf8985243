package bridge

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/coder/websocket"

	"trunkgate/media"
)

// writer owns the socket's writes and the sequence numbers: connected
// carries none, start is "1" (as Twilio sends them). While the stream
// waits for a resume it holds the caller's audio, and on the new socket it
// goes on where the old one stopped (resume.go).
func (s *Stream) writer() {
	defer close(s.writerDone)
	defer s.survive("writer")
	ctx := context.Background() // the connection is closed to stop a write
	conn, gen := s.current()
	var (
		seq     int64
		chunk   int64
		started bool
		failed  bool // the socket failed and the stream ends
		held    heldAudio
		buf     = make([]byte, 0, 512)
		ulaw    = make([]byte, media.FrameSamples)
		l16     = make([]byte, 0, 4*media.FrameSamples)
		wide    = make([]int16, 2*media.FrameSamples)
		narrow  = make([]int16, media.FrameSamples)
		up      media.Upsampler
		down    media.Downsampler
		evs     []event
	)
	// write sends one message. On failure the socket is gone: conn is
	// nil, and failed says whether the stream ends or waits for a resume.
	write := func(typ websocket.MessageType, p []byte) bool {
		if conn == nil {
			return false
		}
		if err := conn.Write(ctx, typ, p); err != nil {
			if !s.lost(conn) {
				failed = true
				s.finish()
			}
			conn = nil
			s.signal() // a resume may have come already
			return false
		}
		return true
	}
	// text numbers a message; a message that was not written takes no
	// number.
	text := func(render func(int64) []byte) bool {
		if !write(websocket.MessageText, render(seq+1)) {
			return false
		}
		seq++
		return true
	}
	// frame sends 20 ms of the caller at the stream's rate: 8 kHz audio
	// goes up for a 16 kHz stream, a G.722 call's 16 kHz audio down for
	// an 8 kHz one.
	frame := func(pcm []int16, ms int64) bool {
		at16k := len(pcm) == 2*media.FrameSamples
		if s.format.Kind == FormatL16 {
			samples := pcm
			switch {
			case s.format.SampleRate == 16000 && !at16k:
				samples = up.Process(wide, samples)
			case s.format.SampleRate != 16000 && at16k:
				samples = down.Process(narrow, samples)
			}
			l16 = l16[:0]
			for _, v := range samples {
				l16 = binary.LittleEndian.AppendUint16(l16, uint16(v))
			}
			if !write(websocket.MessageBinary, l16) {
				return false
			}
		} else {
			if at16k {
				pcm = down.Process(narrow, pcm)
			}
			media.EncodeUlaw(ulaw, pcm)
			buf = AppendMedia(buf[:0], seq+1, chunk+1, ms, s.start.StreamSid, ulaw)
			if !write(websocket.MessageText, buf) {
				return false
			}
			seq++
		}
		chunk++
		s.stats.framesOut.Add(1)
		return true
	}
	flushEvents := func() (stopped bool, ok bool) {
		s.evMu.Lock()
		evs = append(evs[:0], s.events...)
		s.events = s.events[:0]
		s.evMu.Unlock()
		for i, e := range evs {
			switch e.kind {
			case evStart:
				if e.leg.SIPTransport != "" {
					s.start.SIPTransport = e.leg.SIPTransport
				}
				if e.leg.MediaEncryption != "" {
					s.start.MediaEncryption = e.leg.MediaEncryption
				}
				ok = text(func(n int64) []byte { return renderStart(n, &s.start, s.format, false) })
				started = started || ok
			case evProgress:
				ok = started || text(func(n int64) []byte { return renderProgress(n, &s.start, e.name, e.code) })
			case evMark:
				status := ""
				if s.opts.Extensions {
					status = markStatus(e.flag)
				}
				ok = text(func(n int64) []byte { return renderMark(n, &s.start, e.name, status) })
			case evCleared:
				ok = text(func(n int64) []byte { return renderCleared(n, &s.start, e.ms, e.at) })
			case evHold:
				ok = text(func(n int64) []byte { return renderHold(n, &s.start, e.flag) })
			case evTransfer:
				ok = text(func(n int64) []byte { return renderTransfer(n, &s.start, e.name, e.code) })
			case evDTMF:
				ok = text(func(n int64) []byte { return renderDTMF(n, &s.start, e.digit) })
			case evStop:
				return true, text(func(n int64) []byte { return renderStop(n, &s.start, e.end) })
			}
			if !ok {
				s.requeue(evs[i:]) // for the resumed socket
				return false, false
			}
		}
		return false, true
	}
	// resume goes on over a new socket: connected, start again (when the
	// old socket had it), the events that waited, the held audio. It
	// reports whether stop was among the events.
	resume := func() (stopped bool) {
		if !write(websocket.MessageText, renderConnected()) {
			return false
		}
		if started && !text(func(n int64) []byte { return renderStart(n, &s.start, s.format, true) }) {
			return false
		}
		if stopped, ok := flushEvents(); stopped || !ok {
			return stopped
		}
		for f := held.peek(); f != nil; f = held.peek() {
			if !frame(f.pcm[:f.n], f.ms) {
				return false
			}
			held.pop()
		}
		return false
	}
	var statsTick <-chan time.Time // nil: never
	if s.opts.Extensions && s.opts.StatsEvery > 0 {
		t := time.NewTicker(s.opts.StatsEvery)
		defer t.Stop()
		statsTick = t.C
	}
	write(websocket.MessageText, renderConnected()) // a failure ends the loop or waits for a resume
	for !failed {
		select {
		case slot := <-s.audio:
			arrived := slot.arrived
			if conn == nil || !frame(slot.pcm[:slot.n], slot.ms) {
				if !failed && !held.hold(slot.pcm[:slot.n], slot.ms) {
					s.stats.framesDropped.Add(1)
				}
				arrived = time.Time{}
			}
			s.free <- slot
			if !arrived.IsZero() {
				s.toApp.Add(time.Since(arrived))
			}
		case <-s.changed:
			c, g := s.current()
			switch {
			case c == nil:
				conn = nil
			case g != gen:
				conn, gen = c, g
				if resume() {
					return
				}
			}
		case <-s.wake:
			if conn == nil {
				continue // the events wait for a resume
			}
			if stopped, _ := flushEvents(); stopped {
				return
			}
		case <-statsTick:
			if player := s.player.Load(); player != nil && started && conn != nil {
				text(func(n int64) []byte { return renderStats(n, &s.start, player.p.Stats(), s.toApp.Summary()) })
			}
		case <-s.stopWriter:
			if conn != nil {
				flushEvents()
			}
			return
		}
	}
}

// requeue puts events that were not written back in front of the queue.
func (s *Stream) requeue(evs []event) {
	s.evMu.Lock()
	s.events = append(append(make([]event, 0, len(evs)+len(s.events)), evs...), s.events...)
	s.evMu.Unlock()
}
