package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"trunkgate/media"
)

// Player is where the application's audio goes: media.Session.
type Player interface {
	// SampleRate is the rate Play takes: 8000, or 16000 on a G.722 call.
	SampleRate() int
	// Play queues audio that came from the application at at.
	Play(pcm []int16, at time.Time)
	Mark(name string)
	// Clear drops the queued audio; it returns how much it dropped and
	// when, on the media clock (time since media started).
	Clear() (dropped, at time.Duration)
	// SendDTMF sends digits to the carrier (RFC 4733).
	SendDTMF(digits string, duration time.Duration) error
	// Stats is the call's media quality, for the stats event.
	Stats() media.Stats
}

// Options are a stream's opt-in extensions of the Twilio protocol.
type Options struct {
	// Progress sends progress events (ringing, early media) before start
	// on outbound calls (DESIGN: progress=1).
	Progress bool
	// Extensions turns on what the edge adds to the protocol's messages
	// (DESIGN: protocol_extensions, extensions=1): mark.status, cleared.
	Extensions bool
	// Ping is the interval of WebSocket pings, and how long the
	// application has to answer each; 0 sends none (liveness.go).
	Ping time.Duration
	// StatsEvery is the interval of stats events (with Extensions; 0:
	// none).
	StatsEvery time.Duration
	// FirstAudio is how long after Begin the application may take to
	// send its first audio before the stream ends (0: no deadline).
	FirstAudio time.Duration
	// ResumeGrace is how long an answered call outlives its socket when
	// the socket drops without a close handshake (resume.go); 0 ends the
	// call at once, as a Twilio app expects.
	ResumeGrace time.Duration
	// HoldTone beeps to the caller while the stream waits for a resume
	// (resume.go); off, the caller hears silence.
	HoldTone bool
}

// Stream is one call's WebSocket to its AI application. It implements
// media.Listener: carrier audio in, and marks and DTMF as events.
//
// A stream goes through three steps: Connect sends connected and starts
// reading the application (an outbound call's stream connects as soon as
// the handshake is done, while the far end still rings); Begin sends start
// and lets audio flow both ways (at answer); Close sends stop with the
// reason and closes the socket with a code that says why.
type Stream struct {
	format Format
	opts   Options
	start  Start
	log    *slog.Logger

	player atomic.Pointer[playerRef] // nil until Begin

	// Carrier audio: slots cycle between free and audio, so a frame costs
	// no allocation; when the application falls behind, frames are
	// dropped (and counted) rather than delaying the call's clock. Slots
	// are made as the queue first needs them (a writer that keeps up
	// cycles two or three), up to audioSlots; slotsMade is the clock's.
	free      chan *audioSlot
	audio     chan *audioSlot
	slotsMade int

	// Events (marks, DTMF, stop) are never dropped: a bounded queue whose
	// overflow means the application stopped reading, which ends the call.
	evMu   sync.Mutex
	events []event
	wake   chan struct{}

	// The socket: one at a time, replaced when the application resumes
	// (resume.go). conn is nil while the stream waits for a resume; gen
	// counts the sockets, so that the writer sees a new one; changed
	// wakes the writer when either changes.
	connMu     sync.Mutex
	conn       *websocket.Conn
	gen        uint64
	changed    chan struct{}
	detachedAt time.Time
	graceTimer *time.Timer
	holdTimer  *time.Timer                                        // the hold tone's next beep
	redial     func(ctx context.Context) (*websocket.Conn, error) // nil: the application resumes by itself
	// life ends with the stream: it stops a redial under way.
	life    context.Context
	endLife context.CancelFunc

	stopWriter  chan struct{}
	writerDone  chan struct{}
	readers     sync.WaitGroup // one reader per socket
	redials     sync.WaitGroup
	done        chan struct{}
	doneOnce    sync.Once
	connectOnce sync.Once
	closeOnce   sync.Once
	connected   atomic.Bool
	begun       atomic.Bool
	closing     atomic.Bool
	byApp       atomic.Bool

	warned sync.Map // what has been logged once for this call

	// firstFrame is the media clock frame of the first audio sent: media
	// timestamps count from it (chunk n at (n-1)·20 ms while no frame is
	// missing). Only the media clock's goroutine touches it, through Audio.
	firstFrame int64
	anyFrame   bool
	// mediaOrigin is 1 + the media clock time (ms) at which media
	// timestamps start, 0 before the first frame: for a clear's
	// playedUntil, which the reader computes.
	mediaOrigin atomic.Int64

	stats     streamStats
	toApp     media.Latency // RTP in to its frame written to the socket
	timersMu  sync.Mutex    // guards the two timers below
	pingTimer *time.Timer   // liveness.go
	audioDue  *time.Timer   // liveness.go: the first-audio deadline
	noAudio   atomic.Bool

	ctlMu      sync.Mutex
	onTransfer func(to string) error
}

type playerRef struct{ p Player }

// streamStats counts a stream's traffic.
type streamStats struct {
	framesOut     atomic.Int64
	framesDropped atomic.Int64
	framesIn      atomic.Int64
	samplesIn     atomic.Int64
	marks         atomic.Int64
	clears        atomic.Int64
	dtmfOut       atomic.Int64
	pingsMissed   atomic.Int64
	resumes       atomic.Int64
}

// Counters is a snapshot of a stream's traffic.
type Counters struct {
	FramesOut     int64 // carrier audio frames sent to the application
	FramesDropped int64 // frames dropped because the application read too slowly
	FramesIn      int64 // audio messages from the application
	SamplesIn     int64 // samples played from the application, at the call's rate
	Marks         int64
	Clears        int64
	DTMFOut       int64 // digits the application sent to the carrier
	Resumes       int64 // sockets the application resumed the stream on
	// ToApp is the edge's delay from an RTP packet arriving to the
	// frame that starts with its audio written to the application.
	ToApp media.LatencySummary
}

// ToAppLatency is the histogram behind Counters().ToApp.
func (s *Stream) ToAppLatency() *media.Latency { return &s.toApp }

// Counters returns the stream's counts now.
func (s *Stream) Counters() Counters {
	return Counters{
		FramesOut: s.stats.framesOut.Load(), FramesDropped: s.stats.framesDropped.Load(),
		FramesIn: s.stats.framesIn.Load(), SamplesIn: s.stats.samplesIn.Load(),
		Marks: s.stats.marks.Load(), Clears: s.stats.clears.Load(), DTMFOut: s.stats.dtmfOut.Load(), Resumes: s.stats.resumes.Load(),
		ToApp: s.toApp.Summary(),
	}
}

type audioSlot struct {
	pcm     [2 * media.FrameSamples]int16 // 20 ms at 8 or 16 kHz (a G.722 call)
	n       int
	ms      int64     // the frame's media timestamp, ms since the media clock started
	arrived time.Time // when the RTP packet that starts in it came in; zero: none does
}

const (
	audioSlots = 50 // 1 s of audio in flight toward the application
	// decodeChunk samples of application audio are decoded at a time.
	decodeChunk = 1024
	// maxMarkName bounds what the edge keeps of a mark until it is played.
	maxMarkName = 256
	// maxEvents pending toward the application: an application that has
	// stopped reading its socket for this long has failed.
	maxEvents = 4096
	// closeGrace is how long Close waits for stop to be written.
	closeGrace = time.Second
	// maxMessage bounds one message from the application.
	maxMessage = 1 << 20
)

func newStream(conn *websocket.Conn, format Format, opts Options, start Start, log *slog.Logger) *Stream {
	s := &Stream{
		conn: conn, gen: 1, changed: make(chan struct{}, 1), format: format, opts: opts, start: start, log: log,
		free: make(chan *audioSlot, audioSlots), audio: make(chan *audioSlot, audioSlots),
		wake: make(chan struct{}, 1), stopWriter: make(chan struct{}), writerDone: make(chan struct{}),
		done: make(chan struct{}),
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	conn.SetReadLimit(maxMessage)
	return s
}

// StreamSid is the stream's "MZ…" id.
func (s *Stream) StreamSid() string { return s.start.StreamSid }

// Connect sends connected and starts reading the application. It is safe
// to call more than once.
func (s *Stream) Connect() {
	s.connectOnce.Do(func() {
		s.connected.Store(true)
		conn, _ := s.current()
		s.readers.Add(1)
		go s.writer()
		go s.reader(conn)
		s.startLiveness()
	})
}

// Leg is what protected the carrier leg of a call, for start: an
// outbound call learns it only at answer. Empty fields leave Start's.
type Leg struct{ SIPTransport, MediaEncryption string }

// Begin sends start and lets audio flow: the application's audio goes to
// player until the stream closes. It connects first if Connect was not
// called.
func (s *Stream) Begin(player Player, leg Leg) {
	s.player.Store(&playerRef{p: player})
	s.begun.Store(true)
	s.event(event{kind: evStart, leg: leg})
	s.Connect()
	s.startFirstAudioDeadline()
}

// Progress tells an application that opted in (Options.Progress) that the
// far end rings ("ringing", 180) or sends early media ("early_media",
// 183). Without the opt-in it sends nothing: a Twilio client sees
// connected then start.
func (s *Stream) Progress(status string, sipCode int) {
	if s.opts.Progress {
		s.event(event{kind: evProgress, name: status, code: sipCode})
	}
}

// Done is closed when the WebSocket is gone: the application closed it,
// it failed, or Close was called.
func (s *Stream) Done() <-chan struct{} { return s.done }

// ClosedByApp reports whether the application, not the edge, ended the
// stream.
func (s *Stream) ClosedByApp() bool { return s.byApp.Load() }

func (s *Stream) finish() {
	s.doneOnce.Do(func() {
		close(s.done)
		s.endLife()
	})
}

func (s *Stream) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Audio queues 20 ms of carrier audio for the application
// (media.Listener): 160 samples, or 320 on a G.722 call. Its media
// timestamp is 20 ms per clock frame since the first frame: a step of more
// than 20 ms means frames really were missing.
func (s *Stream) Audio(pcm []int16, frame int64, arrived time.Time) {
	var slot *audioSlot
	select {
	case slot = <-s.free:
	default:
		if s.slotsMade == audioSlots {
			s.stats.framesDropped.Add(1)
			return
		}
		slot = new(audioSlot)
		s.slotsMade++
	}
	if !s.anyFrame {
		s.firstFrame, s.anyFrame = frame, true
		s.mediaOrigin.Store(1 + frame*(media.FrameSamples*1000/media.ClockRate))
	}
	slot.n = copy(slot.pcm[:], pcm)
	slot.arrived = arrived
	slot.ms = (frame - s.firstFrame) * (media.FrameSamples * 1000 / media.ClockRate)
	s.audio <- slot // never blocks: there are at most audioSlots slots
}

// DTMF sends a dtmf event (media.Listener).
func (s *Stream) DTMF(digit byte) { s.event(event{kind: evDTMF, digit: digit}) }

// MarkDone echoes a mark whose audio has been played or cleared
// (media.Listener); the mark a hangup after playout placed ends the call.
func (s *Stream) MarkDone(name string, cleared bool) {
	if name == hangupMark {
		s.hangup()
		return
	}
	s.event(event{kind: evMark, name: name, flag: cleared})
}

// survive turns a panic in a stream goroutine into the end of this call
// alone, logged, instead of the end of the process.
func (s *Stream) survive(where string) {
	if v := recover(); v != nil {
		s.log.Error("panic in stream "+where+"; ending the call", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		s.finish()
		if conn, _ := s.current(); conn != nil {
			conn.CloseNow()
		}
	}
}

func (s *Stream) warnOnce(key, msg string, args ...any) {
	if _, seen := s.warned.LoadOrStore(key, true); seen {
		return
	}
	s.log.Warn(msg, append([]any{"call_sid", s.start.CallSid}, args...)...)
}

// Close sends stop (with end's reason and SIP code), closes the WebSocket
// with end's close code and waits for the stream's goroutines. It is safe
// to call more than once; only the first end counts.
func (s *Stream) Close(end End) {
	s.closeOnce.Do(func() {
		conn := s.closeSocketSide() // resume.go: no resume from now on
		s.stopLiveness()
		s.stopFirstAudioDeadline()
		if !s.connected.Load() {
			if conn != nil {
				conn.CloseNow()
			}
			s.finish()
			return
		}
		s.event(event{kind: evStop, end: end})
		if conn != nil { // a stream waiting for a resume has no one to tell
			select {
			case <-s.writerDone:
			case <-time.After(closeGrace):
			}
		}
		close(s.stopWriter)
		if conn != nil {
			code := websocket.StatusCode(end.CloseCode)
			if code == 0 {
				code = websocket.StatusNormalClosure
			}
			_ = conn.Close(code, closeReason(end.Reason))
			conn.CloseNow()
		}
		<-s.writerDone
		s.readers.Wait()
		s.redials.Wait()
		s.finish()
	})
}

// closeReason fits a reason into a close frame (at most 123 bytes),
// cutting on a character boundary.
func closeReason(r string) string {
	if len(r) <= 123 {
		return r
	}
	n := 123
	for n > 0 && !utf8.RuneStart(r[n]) {
		n--
	}
	return r[:n]
}
