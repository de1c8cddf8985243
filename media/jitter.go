package media

// JitterBuffer turns RTP audio as it arrives — late, early, out of order,
// duplicated, lost, in packets of any ptime — into a steady stream of 20 ms
// frames for the application. It keeps a timeline of decoded samples
// indexed by RTP timestamp, plays from a read point that trails the newest
// audio by an adaptive delay of 20 to 100 ms, drops what comes too late,
// and conceals short gaps by repeating the last frame with falling gain.
//
// It is not safe for concurrent use; Session serialises Push and Pop.
type JitterBuffer struct {
	// ring holds a sample per tick of the RTP clock; wide, for G.722
	// (16 kHz audio on an 8 kHz clock), holds spt samples per tick
	// instead. Positions, delays and the have bits count ticks.
	ring [ringSize]int16
	wide []int16
	spt  int
	have ringBits // which ring ticks hold audio

	state    jbState
	ssrc     uint32
	lastExt  int64 // unwrapped timestamp of the newest packet, for unwrapping the next
	next     int64 // timeline position of the next sample to play
	end      int64 // end of the newest audio written
	target   int64 // playout delay we aim for, in samples
	stalled  bool  // the last Pop found nothing to play
	minDepth int64 // smallest depth seen in the current shrink window
	window   int   // pops in the current shrink window

	// Interarrival jitter estimate (RFC 3550 §6.4.1), in samples.
	jitter      float64
	lastArrival int64 // arrival of the previous packet, in samples
	lastTS      int64

	last   [2 * FrameSamples]int16 // the last frame played, for concealment
	plcRun int                     // consecutive frames concealed

	// starts remembers where the last packets' audio begins on the
	// timeline and when they arrived, so that Pop can say when the
	// audio it plays came in (the edge's own latency).
	starts [8]packetStart
	nStart int
	// FrameArrival is, after a Pop that played the start of a packet,
	// that packet's arrival in samples (as given to Push); -1 otherwise.
	FrameArrival int64

	Stats JitterStats
}

type packetStart struct{ pos, arrival int64 }

// JitterStats counts what the buffer did.
type JitterStats struct {
	Late       uint64 // packets that came after their audio was played
	Duplicates uint64
	Concealed  uint64 // 20 ms frames (or parts) made up for lost audio
	Resyncs    uint64 // timeline restarts: new SSRC, timestamp jumps
	Dropped    uint64 // frames skipped to bring the delay back down
}

// ringBits is one bit per ring sample (512 bytes instead of 4 KiB of bools
// in every call's buffer).
type ringBits [ringSize / 64]uint64

func (b *ringBits) get(i int64) bool { return b[i>>6]&(1<<(i&63)) != 0 }
func (b *ringBits) set(i int64)      { b[i>>6] |= 1 << (i & 63) }
func (b *ringBits) unset(i int64)    { b[i>>6] &^= 1 << (i & 63) }

type jbState int

const (
	jbIdle      jbState = iota // no packet yet
	jbBuffering                // filling up to the target delay
	jbPlaying
)

const (
	ringSize   = 4096 // samples: 512 ms of timeline
	ringMask   = ringSize - 1
	minDelay   = FrameSamples     // 20 ms
	maxDelay   = 5 * FrameSamples // 100 ms
	shrinkStep = FrameSamples / 2 // 10 ms
	// shrinkWindow pops (1 s) in which the buffer never ran below
	// target+shrinkStep let us shed 10 ms of delay.
	shrinkWindow = 50
	// maxConceal frames are concealed by repetition; after that, silence.
	maxConceal = 3
)

// NewJitterBuffer returns an empty buffer for 8 kHz audio.
func NewJitterBuffer() *JitterBuffer { return newJitterBuffer(1) }

// newJitterBuffer returns an empty buffer of spt samples per clock tick.
func newJitterBuffer(spt int) *JitterBuffer {
	jb := &JitterBuffer{spt: spt, target: minDelay, minDepth: 1 << 62}
	if spt > 1 {
		jb.wide = make([]int16, ringSize*spt)
	}
	return jb
}

// Target is the current playout delay in samples.
func (jb *JitterBuffer) Target() int { return int(jb.target) }

// Depth is how much audio is buffered ahead of the read point, in samples.
func (jb *JitterBuffer) Depth() int {
	if jb.state == jbIdle || jb.end < jb.next {
		return 0
	}
	return int(jb.end - jb.next)
}

// JitterSamples is the RFC 3550 interarrival jitter estimate in samples.
func (jb *JitterBuffer) JitterSamples() float64 { return jb.jitter }

func (jb *JitterBuffer) unwrap(ts uint32) int64 {
	// The nearest 64-bit timeline value to the previous one: handles the
	// 32-bit wrap in both directions.
	return jb.lastExt + int64(int32(ts-uint32(jb.lastExt)))
}

// Push adds one packet's decoded samples, stamped with its RTP timestamp
// and SSRC. arrival is the receive time in clock ticks (ns * 8000 / 1e9).
func (jb *JitterBuffer) Push(ssrc, ts uint32, samples []int16, arrival int64) {
	n := int64(len(samples))
	if jb.spt > 1 {
		n /= int64(jb.spt)
	}
	if n == 0 || n > ringSize/2 {
		return
	}
	if jb.state == jbIdle || ssrc != jb.ssrc {
		jb.restart(ssrc, int64(ts))
	}
	ext := jb.unwrap(ts)
	if ext > jb.lastExt {
		jb.lastExt = ext
	}
	// A jump far from the read point (the sender restarted its clock, or
	// resumed after a long pause) restarts the timeline at this packet.
	if ext-jb.next >= ringSize-n || jb.next-ext > ringSize || (jb.stalled && ext-jb.next > jb.target+n) {
		jb.Stats.Resyncs++
		jb.restart(ssrc, ext)
	}
	if jb.state == jbBuffering && ext < jb.next && jb.next-ext <= maxDelay {
		// Still filling: an earlier packet that came second extends the
		// start instead of being late.
		jb.next = ext
	}
	if ext+n <= jb.next {
		jb.Stats.Late++
		jb.raiseTarget()
		return
	}
	if jb.stalled && ext <= jb.next {
		// The audio we stalled for came after all: it was late, not lost.
		jb.raiseTarget()
	}
	if ext >= jb.next && jb.have.get(ext&ringMask) {
		jb.Stats.Duplicates++
		return
	}
	jb.updateJitter(ext, arrival)
	jb.starts[jb.nStart%len(jb.starts)] = packetStart{pos: ext, arrival: arrival}
	jb.nStart++
	// The head of a late packet, already played, is skipped.
	if spt := int64(jb.spt); spt == 1 {
		for i := max(jb.next-ext, 0); i < n; i++ {
			pos := (ext + i) & ringMask
			jb.ring[pos] = samples[i]
			jb.have.set(pos)
		}
	} else {
		for i := max(jb.next-ext, 0); i < n; i++ {
			pos := (ext + i) & ringMask
			copy(jb.wide[pos*spt:(pos+1)*spt], samples[i*spt:])
			jb.have.set(pos)
		}
	}
	if ext+n > jb.end {
		jb.end = ext + n
	}
}

// raiseTarget answers late audio with more delay, up to maxDelay.
func (jb *JitterBuffer) raiseTarget() {
	jb.target = min(maxDelay, jb.target+FrameSamples/2)
}

func (jb *JitterBuffer) restart(ssrc uint32, ext int64) {
	if jb.state != jbIdle {
		clear(jb.have[:])
	}
	jb.ssrc = ssrc
	jb.lastExt, jb.next, jb.end = ext, ext, ext
	jb.state = jbBuffering
	jb.stalled = false
	jb.lastArrival, jb.lastTS = 0, 0
	jb.resetWindow()
}

func (jb *JitterBuffer) updateJitter(ext, arrival int64) {
	if jb.lastArrival != 0 {
		d := (arrival - jb.lastArrival) - (ext - jb.lastTS)
		if d < 0 {
			d = -d
		}
		jb.jitter += (float64(d) - jb.jitter) / 16
	}
	jb.lastArrival, jb.lastTS = arrival, ext
}

// Pop fills dst (FrameSamples ticks long: 160 samples, 320 for G.722)
// with the next 20 ms to play. It reports false before the first packet,
// when there is nothing to send at all. Once audio has started, every Pop
// yields a frame: audio, concealment of a gap, or silence while the sender
// is quiet.
func (jb *JitterBuffer) Pop(dst []int16) bool {
	spt := int64(jb.spt)
	dst = dst[:FrameSamples*spt]
	jb.FrameArrival = -1
	switch jb.state {
	case jbIdle:
		return false
	case jbBuffering:
		if jb.end-jb.next < jb.target {
			clear(dst)
			return true
		}
		jb.state = jbPlaying
	}
	depth := jb.end - jb.next
	if depth <= 0 {
		// Nothing to play: conceal, and hold the read point so that audio
		// arriving late is still played rather than dropped; Push raises
		// the target if it does arrive.
		jb.stalled = true
		jb.conceal(dst)
		jb.resetWindow()
		return true
	}
	jb.stalled = false
	if depth > maxDelay+FrameSamples {
		// Too far behind the sender: skip ahead to the target delay.
		skip := depth - jb.target
		for p := jb.next; p < jb.next+skip; p++ {
			jb.have.unset(p & ringMask)
		}
		jb.next += skip
		jb.Stats.Dropped += uint64(skip / FrameSamples)
		jb.resetWindow()
	}
	for _, st := range jb.starts {
		if st.pos >= jb.next && st.pos < jb.next+FrameSamples && st.arrival != 0 &&
			(jb.FrameArrival < 0 || st.arrival < jb.FrameArrival) && jb.have.get(st.pos&ringMask) {
			jb.FrameArrival = st.arrival
		}
	}
	missing := 0
	if spt == 1 {
		for i := range dst {
			idx := (jb.next + int64(i)) & ringMask
			if jb.have.get(idx) {
				dst[i] = jb.ring[idx]
				jb.have.unset(idx)
			} else {
				dst[i] = jb.last[i] / 2
				missing++
			}
		}
	} else {
		for i := range int64(FrameSamples) {
			idx := (jb.next + i) & ringMask
			if jb.have.get(idx) {
				copy(dst[i*spt:(i+1)*spt], jb.wide[idx*spt:])
				jb.have.unset(idx)
			} else {
				for k := i * spt; k < (i+1)*spt; k++ {
					dst[k] = jb.last[k] / 2
				}
				missing++
			}
		}
	}
	jb.next += FrameSamples
	switch {
	case missing == FrameSamples:
		jb.conceal(dst)
	case missing > 0:
		jb.Stats.Concealed++
		jb.plcRun = 0
		copy(jb.last[:], dst)
	default:
		jb.plcRun = 0
		copy(jb.last[:], dst)
	}
	jb.adapt(jb.end - jb.next)
	return true
}

// conceal makes up a frame: the last one at half, quarter, eighth gain,
// then silence.
func (jb *JitterBuffer) conceal(dst []int16) {
	jb.Stats.Concealed++
	jb.plcRun++
	if jb.plcRun > maxConceal {
		clear(dst)
		return
	}
	shift := uint(jb.plcRun)
	for i := range dst {
		dst[i] = jb.last[i] >> shift
	}
}

// adapt sheds delay slowly when the buffer has stayed deeper than needed
// for a whole window, and lowers the target toward what jitter requires.
func (jb *JitterBuffer) adapt(depth int64) {
	jb.minDepth = min(jb.minDepth, depth)
	jb.window++
	if jb.window < shrinkWindow {
		return
	}
	need := int64(3*jb.jitter) + minDelay
	need = (need + shrinkStep - 1) / shrinkStep * shrinkStep
	if need < jb.target {
		jb.target = max(minDelay, jb.target-shrinkStep)
	}
	if jb.minDepth > jb.target+shrinkStep {
		for p := jb.next; p < jb.next+shrinkStep; p++ {
			jb.have.unset(p & ringMask)
		}
		jb.next += shrinkStep
	}
	jb.resetWindow()
}

func (jb *JitterBuffer) resetWindow() {
	jb.window = 0
	jb.minDepth = 1 << 62
}
