package bridge

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"trunkgate/media"
)

// Player is where the application's audio goes: media.Session.
type Player interface {
	Play(pcm []int16) // 8 kHz
	Mark(name string)
	Clear()
}

// Stream is one call's WebSocket to its AI application. It implements
// media.Listener: carrier audio in, and marks and DTMF as events.
type Stream struct {
	conn   *websocket.Conn
	format Format
	start  Start
	log    *slog.Logger
	player Player
	began  time.Time

	// Carrier audio: fixed slots cycle between free and audio, so a frame
	// costs no allocation; when the application falls behind, frames are
	// dropped (and counted) rather than delaying the call's clock.
	free  chan *audioSlot
	audio chan *audioSlot

	// Events (marks, DTMF, stop) are never dropped: a bounded queue whose
	// overflow means the application stopped reading, which ends the call.
	evMu   sync.Mutex
	events []event
	wake   chan struct{}

	stopWriter chan struct{}
	writerDone chan struct{}
	readerDone chan struct{}
	done       chan struct{}
	doneOnce   sync.Once
	closeOnce  sync.Once
	begun      atomic.Bool
	closing    atomic.Bool
	byApp      atomic.Bool

	warned sync.Map // what has been logged once for this call

	Stats StreamStats
}

// StreamStats counts a stream's traffic.
type StreamStats struct {
	FramesOut     atomic.Int64 // carrier audio frames sent to the application
	FramesDropped atomic.Int64 // frames dropped because the application read too slowly
	FramesIn      atomic.Int64 // audio messages from the application
	SamplesIn     atomic.Int64 // 8 kHz samples played from the application
	Marks         atomic.Int64
	Clears        atomic.Int64
}

type audioSlot struct {
	pcm [media.FrameSamples]int16
	ms  int64 // when the frame was produced, ms since stream start
}

type eventKind uint8

const (
	evMark eventKind = iota + 1
	evDTMF
	evStop
)

type event struct {
	kind  eventKind
	name  string
	digit byte
}

const (
	audioSlots = 50 // 1 s of audio in flight toward the application
	// decodeChunk samples of application audio are decoded at a time.
	decodeChunk = 4096
	// maxMarkName bounds what the edge keeps of a mark until it is played.
	maxMarkName = 256
	// maxEvents pending toward the application: an application that has
	// stopped reading its socket for this long has failed.
	maxEvents = 4096
)

func newStream(conn *websocket.Conn, format Format, start Start, log *slog.Logger) *Stream {
	s := &Stream{
		conn: conn, format: format, start: start, log: log,
		free: make(chan *audioSlot, audioSlots), audio: make(chan *audioSlot, audioSlots),
		wake: make(chan struct{}, 1), stopWriter: make(chan struct{}), writerDone: make(chan struct{}),
		readerDone: make(chan struct{}), done: make(chan struct{}),
	}
	for range audioSlots {
		s.free <- &audioSlot{}
	}
	conn.SetReadLimit(1 << 20)
	return s
}

// Begin sends connected and start, then runs the stream: application audio
// goes to player until the stream closes.
func (s *Stream) Begin(player Player) {
	s.player = player
	s.began = time.Now()
	s.begun.Store(true)
	go s.writer()
	go s.reader()
}

// Done is closed when the WebSocket is gone: the application closed it,
// it failed, or Close was called.
func (s *Stream) Done() <-chan struct{} { return s.done }

// ClosedByApp reports whether the application, not the edge, ended the
// stream.
func (s *Stream) ClosedByApp() bool { return s.byApp.Load() }

func (s *Stream) finish() { s.doneOnce.Do(func() { close(s.done) }) }

// Audio queues 20 ms of carrier audio for the application (media.Listener).
func (s *Stream) Audio(pcm []int16) {
	var slot *audioSlot
	select {
	case slot = <-s.free:
	default:
		s.Stats.FramesDropped.Add(1)
		return
	}
	copy(slot.pcm[:], pcm)
	slot.ms = time.Since(s.began).Milliseconds()
	s.audio <- slot // never blocks: there are only audioSlots slots
}

// DTMF sends a dtmf event (media.Listener).
func (s *Stream) DTMF(digit byte) { s.event(event{kind: evDTMF, digit: digit}) }

// MarkPlayed echoes a mark whose audio has been played (media.Listener).
func (s *Stream) MarkPlayed(name string) { s.event(event{kind: evMark, name: name}) }

func (s *Stream) event(e event) {
	s.evMu.Lock()
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

func (s *Stream) writer() {
	defer close(s.writerDone)
	defer s.survive("writer")
	ctx := context.Background() // the connection is closed to stop a write
	var (
		seq   int64
		chunk int64
		buf   = make([]byte, 0, 512)
		ulaw  = make([]byte, media.FrameSamples)
		l16   = make([]byte, 0, 4*media.FrameSamples)
		wide  = make([]int16, 2*media.FrameSamples)
		up    media.Upsampler
		evs   []event
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
	if !text(renderConnected) || !text(func(n int64) []byte { return renderStart(n, &s.start, s.format) }) {
		return
	}
	flushEvents := func() (stopped bool, ok bool) {
		s.evMu.Lock()
		evs = append(evs[:0], s.events...)
		s.events = s.events[:0]
		s.evMu.Unlock()
		for _, e := range evs {
			switch e.kind {
			case evMark:
				ok = text(func(n int64) []byte { return renderMark(n, &s.start, e.name) })
			case evDTMF:
				ok = text(func(n int64) []byte { return renderDTMF(n, &s.start, e.digit) })
			case evStop:
				return true, text(func(n int64) []byte { return renderStop(n, &s.start) })
			}
			if !ok {
				return false, false
			}
		}
		return false, true
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
			s.free <- slot
			if !ok {
				return
			}
			s.Stats.FramesOut.Add(1)
		case <-s.wake:
			if stopped, ok := flushEvents(); stopped || !ok {
				return
			}
		case <-s.stopWriter:
			flushEvents()
			return
		}
	}
}

// survive turns a panic in a stream goroutine into the end of this call
// alone, logged, instead of the end of the process.
func (s *Stream) survive(where string) {
	if v := recover(); v != nil {
		s.log.Error("panic in stream "+where+"; ending the call", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		s.finish()
		s.conn.CloseNow()
	}
}

func (s *Stream) reader() {
	defer close(s.readerDone)
	defer s.finish()
	defer s.survive("reader")
	ctx := context.Background()
	var (
		buf  = make([]byte, 0, 4096)
		msg  AppMessage
		ulaw = make([]byte, 0, 1024)
		pcm  = make([]int16, decodeChunk)
		half = make([]int16, decodeChunk/2)
		down media.Downsampler
	)
	for {
		typ, r, err := s.conn.Reader(ctx)
		if err != nil {
			s.byApp.Store(!s.closing.Load())
			return
		}
		buf, err = readAll(buf[:0], r)
		if err != nil {
			s.byApp.Store(!s.closing.Load())
			return
		}
		if typ == websocket.MessageBinary {
			if s.format.Kind != FormatL16 {
				s.warnOnce("binary", "binary frame ignored in twilio format")
				continue
			}
			if s.format.SampleRate == 16000 && len(buf)%4 != 0 {
				s.warnOnce("l16-odd", "L16 16 kHz frame with an odd number of samples; the last one is dropped")
			}
			// In pieces, so that a message of any size fits the buffers.
			for off := 0; off+1 < len(buf); off += 2 * decodeChunk {
				n := min(decodeChunk, (len(buf)-off)/2)
				for i := range n {
					pcm[i] = int16(binary.LittleEndian.Uint16(buf[off+2*i:]))
				}
				samples := pcm[:n]
				if s.format.SampleRate == 16000 {
					samples = down.Process(half, samples[:n&^1])
				}
				s.play(samples)
			}
			continue
		}
		if err := ParseAppMessage(buf, &msg); err != nil {
			s.warnOnce("malformed", "malformed message from application ignored", "error", err)
			continue
		}
		if string(msg.StreamSid) != s.start.StreamSid {
			s.warnOnce("streamSid", "message with missing or wrong streamSid accepted")
		}
		switch string(msg.Event) {
		case "media":
			ulaw = ulaw[:0]
			ulaw, err = base64.StdEncoding.AppendDecode(ulaw, msg.Payload)
			if err != nil {
				s.warnOnce("payload", "media payload is not base64; ignored")
				continue
			}
			for off := 0; off < len(ulaw); off += decodeChunk {
				n := min(decodeChunk, len(ulaw)-off)
				media.DecodeUlaw(pcm[:n], ulaw[off:off+n])
				s.play(pcm[:n])
			}
		case "mark":
			if len(msg.MarkName) > maxMarkName {
				s.warnOnce("mark-name", "mark name longer than 256 bytes ignored", "bytes", len(msg.MarkName))
				continue
			}
			s.Stats.Marks.Add(1)
			s.player.Mark(string(msg.MarkName))
		case "clear":
			s.Stats.Clears.Add(1)
			s.player.Clear()
		default:
			s.warnOnce("event:"+string(msg.Event), "unknown event from application ignored", "event", string(msg.Event))
		}
	}
}

func (s *Stream) play(pcm []int16) {
	if len(pcm) == 0 {
		return
	}
	s.Stats.FramesIn.Add(1)
	s.Stats.SamplesIn.Add(int64(len(pcm)))
	s.player.Play(pcm)
}

// readAll reads a message into buf, growing it only when a message is
// larger than any before.
func readAll(buf []byte, r io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (s *Stream) warnOnce(key, msg string, args ...any) {
	if _, seen := s.warned.LoadOrStore(key, true); seen {
		return
	}
	s.log.Warn(msg, append([]any{"call_sid", s.start.CallSid}, args...)...)
}

// Close sends stop, closes the WebSocket normally and waits for the
// stream's goroutines. It is safe to call more than once.
func (s *Stream) Close(reason string) {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		if !s.begun.Load() {
			s.conn.CloseNow()
			s.finish()
			return
		}
		s.event(event{kind: evStop})
		select {
		case <-s.writerDone:
		case <-time.After(time.Second):
		}
		close(s.stopWriter)
		_ = s.conn.Close(websocket.StatusNormalClosure, reason)
		s.conn.CloseNow()
		<-s.writerDone
		<-s.readerDone
		s.finish()
	})
}
