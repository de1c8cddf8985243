package media

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ErrRTPTimeout ends a session when the far end has sent no RTP for the
// configured time while it should be sending.
var ErrRTPTimeout = errors.New("rtp timeout")

// Listener receives a session's audio and events. Audio and MarkDone are
// called from the session clock, DTMF from the RTP reader; none may block
// or call Session.Close.
type Listener interface {
	// Audio is 20 ms of 8 kHz PCM from the carrier; pcm is reused after
	// the call returns. frame is the media clock's 20 ms tick since Start
	// (frame n starts n·20 ms into the session): stamps taken from it step
	// by exactly 20 ms between consecutive frames and by more only where
	// the clock really had no audio to give. arrived, when not zero, is
	// when the RTP packet whose audio starts in this frame came in.
	Audio(pcm []int16, frame int64, arrived time.Time)
	// DTMF is one key press ('0'-'9', '*', '#', 'A'-'D').
	DTMF(digit byte)
	// MarkDone reports that the audio queued before a mark was played,
	// or (cleared) dropped by Clear.
	MarkDone(name string, cleared bool)
}

// Direction is the media direction from the edge's side (RFC 3264).
type Direction int

const (
	SendRecv Direction = iota
	SendOnly           // the far end holds receive-only: we send, expect nothing
	RecvOnly           // the far end put us on hold: we receive, send nothing
	Inactive
)

func (d Direction) sends() bool    { return d == SendRecv || d == SendOnly }
func (d Direction) receives() bool { return d == SendRecv || d == RecvOnly }

// Config describes one call's media.
type Config struct {
	Codec Codec
	// PtimeMS is the packetisation toward the carrier: 10 to 60 ms in
	// steps of 10; 0 means 20.
	PtimeMS int
	// DTMFPayloadType is the telephone-event payload type; 0 means none.
	DTMFPayloadType uint8
	// Remote is where the far end's SDP says to send RTP; RemoteRTCP its
	// RTCP (zero: Remote's port + 1). Both are replaced by the source of
	// the first packets that arrive (symmetric RTP).
	Remote     netip.AddrPort
	RemoteRTCP netip.AddrPort
	// RTPTimeout ends the session when no RTP arrives for this long while
	// the far end should be sending; 0 means 30 s.
	RTPTimeout time.Duration
	// RTCPInterval between reports; 0 means 5 s.
	RTCPInterval time.Duration
	Listener     Listener
	Log          *slog.Logger
	// SRTP, when set, protects what the session sends and checks what it
	// receives (RTP and RTCP); a packet that fails the check is dropped
	// before it can move the latch.
	SRTP *SRTP
}

// Session is one call's RTP/RTCP media.
type Session struct {
	cfg      Config
	pool     *PortPool
	port     int
	rtpConn  *net.UDPConn
	rtcpConn *net.UDPConn
	epoch    time.Time
	log      *slog.Logger

	remote     atomic.Pointer[netip.AddrPort]
	latched    atomic.Bool
	remoteRTCP atomic.Pointer[netip.AddrPort]
	rtcpLatch  atomic.Bool
	dir        atomic.Int32
	codecPT    atomic.Uint32 // payload type of the codec, both ways
	dtmfPT     atomic.Uint32 // telephone-event payload type; 0 = none
	lastRx     atomic.Int64  // ns since epoch of the last RTP packet

	// codec decodes on the reader goroutine and encodes on the clock's;
	// spt is its PCM samples per RTP clock tick. Both are set before
	// Start (SetCodec), with the jitter buffer and playout queue sized
	// for them.
	codec transcoder
	spt   int

	rxMu sync.Mutex // guards jb, rx, lastSR*
	jb   *JitterBuffer
	rx   rxStats
	// From the far end's last sender report, for our reception report.
	lastSR   uint32
	lastSRAt time.Time

	dtmf      DTMFDetector
	dtmfCount atomic.Int64
	dtmfOut   dtmfSender
	// toCarrier is the edge's delay from an application's audio arriving
	// into an empty queue to its first packet leaving.
	toCarrier Latency
	badPkts   atomic.Uint64
	playout   *Playout

	// Sender state, owned by the clock goroutine.
	ssrc    uint32
	seq     uint16
	ts      uint32
	talking bool
	sent    atomic.Uint64
	octets  atomic.Uint64

	statsMu      sync.Mutex
	rttMS        float64
	remoteLost   int64
	remoteJitter float64

	// The clock: start is the instant its timeline counts from (on the
	// hub's grid), clk what carries over between ticks.
	start  time.Time
	tickMu sync.Mutex
	clk    clockState

	ended     chan struct{}
	endErr    error
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once
}

// NewSession binds an RTP/RTCP port pair for a call. Start begins media;
// Close releases the ports.
func (p *PortPool) NewSession(cfg Config) (*Session, error) {
	if cfg.PtimeMS == 0 {
		cfg.PtimeMS = 20
	}
	if cfg.PtimeMS < 10 || cfg.PtimeMS > 60 || cfg.PtimeMS%10 != 0 {
		cfg.PtimeMS = 20
	}
	if cfg.RTPTimeout == 0 {
		cfg.RTPTimeout = 30 * time.Second
	}
	if cfg.RTCPInterval == 0 {
		cfg.RTCPInterval = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	rtpConn, rtcpConn, port, err := p.open()
	if err != nil {
		return nil, err
	}
	s := &Session{
		cfg: cfg, pool: p, port: port, rtpConn: rtpConn, rtcpConn: rtcpConn, log: cfg.Log,
		epoch: time.Now(),
		ssrc:  rand.Uint32(), seq: uint16(rand.Uint32()), ts: rand.Uint32(),
		ended: make(chan struct{}),
	}
	s.useCodec(cfg.Codec)
	s.SetRemote(cfg.Remote, cfg.RemoteRTCP)
	s.SetPayloadTypes(cfg.Codec.PayloadType, cfg.DTMFPayloadType)
	return s, nil
}

// LocalPort is the RTP port to put in the SDP answer.
func (s *Session) LocalPort() int { return s.port }

// Codec is the negotiated codec.
func (s *Session) Codec() Codec { return s.cfg.Codec }

// SetRemote points media at a new address from an SDP offer (re-INVITE);
// the session latches again on the first packets from the far end.
func (s *Session) SetRemote(rtpAddr, rtcpAddr netip.AddrPort) {
	if rtpAddr.IsValid() && !rtpAddr.Addr().IsUnspecified() {
		a := rtpAddr
		s.remote.Store(&a)
		if !rtcpAddr.IsValid() {
			rtcpAddr = netip.AddrPortFrom(rtpAddr.Addr(), rtpAddr.Port()+1)
		}
	}
	if rtcpAddr.IsValid() && !rtcpAddr.Addr().IsUnspecified() {
		b := rtcpAddr
		s.remoteRTCP.Store(&b)
	}
	s.latched.Store(false)
	s.rtcpLatch.Store(false)
}

// SetCodec sets the codec and packetisation the far end answered with,
// on a session whose offer listed several (outbound calls). It must come
// before Start.
func (s *Session) SetCodec(c Codec, ptimeMS int) {
	s.cfg.Codec = c
	if ptimeMS >= 10 && ptimeMS <= 60 && ptimeMS%10 == 0 {
		s.cfg.PtimeMS = ptimeMS
	}
	s.codecPT.Store(uint32(c.PayloadType))
	s.useCodec(c)
}

// useCodec sets up the codec's state and, for its sample rate, the jitter
// buffer and the playout queue.
func (s *Session) useCodec(c Codec) {
	s.codec = newTranscoder(c)
	if spt := c.perTick(); spt != s.spt {
		s.spt = spt
		s.jb, s.playout = newJitterBuffer(spt), newPlayout(spt)
	}
}

// SampleRate is the rate of the PCM the session hands its listener and
// takes from Play: 16000 on a G.722 call, else 8000.
func (s *Session) SampleRate() int { return s.cfg.Codec.SampleRate() }

// SetPayloadTypes changes the payload types of the codec and of
// telephone-event, as a re-INVITE's answer may map them anew.
func (s *Session) SetPayloadTypes(codec, dtmf uint8) {
	s.codecPT.Store(uint32(codec))
	s.dtmfPT.Store(uint32(dtmf))
}

// SetDirection changes who sends (hold and unhold by re-INVITE).
func (s *Session) SetDirection(d Direction) {
	old := Direction(s.dir.Swap(int32(d)))
	if !old.receives() && d.receives() {
		// The far end starts sending again: give it a fresh timeout.
		s.lastRx.Store(int64(time.Since(s.epoch)))
	}
}

// Direction is the current media direction.
func (s *Session) Direction() Direction { return Direction(s.dir.Load()) }

// SetSRTP protects the session's media with srtp (an outbound call learns
// the far end's key from its answer); before Start.
func (s *Session) SetSRTP(srtp *SRTP) { s.cfg.SRTP = srtp }

// Start begins reading, the playout clock and RTCP.
func (s *Session) Start() {
	s.startOnce.Do(func() {
		s.lastRx.Store(s.now())
		s.initClock()
		s.wg.Add(1)
		go s.readRTP()
		s.pool.clock.register(s)
	})
}

// Play queues PCM (8 kHz) for the carrier; at is when it came from the
// application (zero: not known).
func (s *Session) Play(pcm []int16, at time.Time) { s.playout.Write(pcm, at) }

// Mark reports name through the listener once the audio queued before it
// has been played. Marks are handed out by the session clock only, so they
// reach the listener in order, at most one tick after they are due. Past
// MaxPendingMarks waiting marks, the mark is dropped and logged.
func (s *Session) Mark(name string) {
	if !s.playout.Mark(name) {
		s.log.Warn("too many marks pending; mark dropped", "pending", MaxPendingMarks)
	}
}

// Clear drops the queued audio at once (barge-in); pending marks are
// reported as cleared at the next tick. It returns how much audio it
// dropped and when, on the session's media clock (time since Start).
func (s *Session) Clear() (dropped, at time.Duration) {
	n := s.playout.Clear()
	return time.Duration(n) * time.Second / time.Duration(s.SampleRate()), time.Since(s.start)
}

// deliverMarks runs on the clock goroutine only.
func (s *Session) deliverMarks(buf []DoneMark) []DoneMark {
	buf = s.playout.TakeMarks(buf[:0])
	for _, m := range buf {
		s.cfg.Listener.MarkDone(m.Name, m.Cleared)
	}
	return buf
}

// ToCarrierLatency is the histogram behind Stats().ToCarrier.
func (s *Session) ToCarrierLatency() *Latency { return &s.toCarrier }

// Queued is the application audio waiting to be played, in samples.
func (s *Session) Queued() int { return s.playout.Queued() }

// Done closes when media ends on its own (RTP timeout); Err says why.
func (s *Session) Done() <-chan struct{} { return s.ended }

// Err is the reason Done closed.
func (s *Session) Err() error {
	select {
	case <-s.ended:
		return s.endErr
	default:
		return nil
	}
}

// Close stops the session's goroutines and releases its ports. It is safe
// to call more than once, but not from a Listener callback.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.pool.clock.unregister(s)
		s.tickMu.Lock() // waits out a tick under way
		s.clk.halted = true
		s.tickMu.Unlock()
		s.rtpConn.Close()
		s.rtcpConn.Close()
		s.wg.Wait()
		s.pool.release(s.port)
	})
	return nil
}

func (s *Session) now() int64 { return int64(time.Since(s.epoch)) }

// samplesAt converts ns since epoch to 8 kHz timestamp units.
func samplesAt(ns int64) int64 { return ns / (int64(time.Second) / ClockRate) }

// Stats is a snapshot of the session's quality counters.
type Stats struct {
	PacketsIn      uint64
	PacketsOut     uint64
	PacketsLost    int64
	Expected       int64
	JitterMS       float64
	RTTMS          float64
	RemoteLost     int64
	RemoteJitterMS float64
	DTMFEvents     int
	BadPackets     uint64
	Jitter         JitterStats
	PlayoutDelayMS float64 // the jitter buffer's current target
	PlayoutOver    uint64  // application samples refused by a full queue
	// ToCarrier is the edge's delay from application audio (arriving into
	// an empty queue) to its first RTP packet on the wire.
	ToCarrier LatencySummary
}

// LossPercent is the share of the far end's packets that never came.
func (st Stats) LossPercent() float64 {
	if st.Expected <= 0 {
		return 0
	}
	return 100 * float64(st.PacketsLost) / float64(st.Expected)
}

// Stats returns the counters now.
func (s *Session) Stats() Stats {
	s.rxMu.Lock()
	st := Stats{
		PacketsIn: s.rx.totalReceived(), PacketsLost: s.rx.totalLost(), Expected: s.rx.totalExpected(),
		JitterMS: s.rx.jitter / (ClockRate / 1000), Jitter: s.jb.Stats,
		PlayoutDelayMS: float64(s.jb.Target()) / (ClockRate / 1000),
	}
	s.rxMu.Unlock()
	s.statsMu.Lock()
	st.RTTMS, st.RemoteLost, st.RemoteJitterMS = s.rttMS, s.remoteLost, s.remoteJitter
	s.statsMu.Unlock()
	st.PacketsOut = s.sent.Load()
	st.DTMFEvents = int(s.dtmfCount.Load())
	st.BadPackets = s.badPkts.Load()
	st.ToCarrier = s.toCarrier.Summary()
	s.playout.mu.Lock()
	st.PlayoutOver = s.playout.Over
	s.playout.mu.Unlock()
	return st
}
