package bridge

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/coder/websocket"

	"trunkgate/media"
)

// writer owns the socket's writes and the sequence numbers: connected
// carries none, start is "1" (as Twilio sends them).
func (s *Stream) writer() {
	defer close(s.writerDone)
	defer s.survive("writer")
	ctx := context.Background() // the connection is closed to stop a write
	var (
		seq     int64
		chunk   int64
		started bool
		buf     = make([]byte, 0, 512)
		ulaw    = make([]byte, media.FrameSamples)
		l16     = make([]byte, 0, 4*media.FrameSamples)
		wide    = make([]int16, 2*media.FrameSamples)
		up      media.Upsampler
		evs     []event
	)
	write := func(typ websocket.MessageType, p []byte) bool {
		if err := s.conn.Write(ctx, typ, p); err != nil {
			s.finish()
			return false
		}
		return true
	}
	text := func(render func(int64) []byte) bool {
		seq++
		return write(websocket.MessageText, render(seq))
	}
	if !write(websocket.MessageText, renderConnected()) {
		return
	}
	flushEvents := func() (stopped bool, ok bool) {
		s.evMu.Lock()
		evs = append(evs[:0], s.events...)
		s.events = s.events[:0]
		s.evMu.Unlock()
		for _, e := range evs {
			switch e.kind {
			case evStart:
				started = true
				if e.leg.SIPTransport != "" {
					s.start.SIPTransport = e.leg.SIPTransport
				}
				if e.leg.MediaEncryption != "" {
					s.start.MediaEncryption = e.leg.MediaEncryption
				}
				ok = text(func(n int64) []byte { return renderStart(n, &s.start, s.format) })
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
				return false, false
			}
		}
		return false, true
	}
	var statsTick <-chan time.Time // nil: never
	if s.opts.Extensions && s.opts.StatsEvery > 0 {
		t := time.NewTicker(s.opts.StatsEvery)
		defer t.Stop()
		statsTick = t.C
	}
	for {
		select {
		case slot := <-s.audio:
			chunk++
			var ok bool
			if s.format.Kind == FormatL16 {
				pcm := slot.pcm[:]
				if s.format.SampleRate == 16000 {
					pcm = up.Process(wide, pcm)
				}
				l16 = l16[:0]
				for _, v := range pcm {
					l16 = binary.LittleEndian.AppendUint16(l16, uint16(v))
				}
				ok = write(websocket.MessageBinary, l16)
			} else {
				media.EncodeUlaw(ulaw, slot.pcm[:])
				seq++
				buf = AppendMedia(buf[:0], seq, chunk, slot.ms, s.start.StreamSid, ulaw)
				ok = write(websocket.MessageText, buf)
			}
			arrived := slot.arrived
			s.free <- slot
			if !ok {
				return
			}
			if !arrived.IsZero() {
				s.toApp.Add(time.Since(arrived))
			}
			s.stats.framesOut.Add(1)
		case <-s.wake:
			if stopped, ok := flushEvents(); stopped || !ok {
				return
			}
		case <-statsTick:
			if player := s.player.Load(); player != nil && started {
				if !text(func(n int64) []byte { return renderStats(n, &s.start, player.p.Stats(), s.toApp.Summary()) }) {
					return
				}
			}
		case <-s.stopWriter:
			flushEvents()
			return
		}
	}
}
