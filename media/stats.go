package media

// rxStats follows RFC 3550 appendix A.1 and A.8: extended highest sequence
// number with wrap cycles, expected versus received packets, and the
// interarrival jitter, for the call's statistics and RTCP reports. Unlike
// the appendix it does not count duplicates as received (a window of
// recent sequence numbers spots them), so that loss is real loss.
type rxStats struct {
	started    bool
	ssrc       uint32
	baseSeq    uint32
	maxSeq     uint16
	cycles     uint32
	received   uint64
	duplicates uint64
	octets     uint64
	window     [seqWindow]uint32 // extended sequence number + 1, by ext % seqWindow

	expectedPrior uint32
	receivedPrior uint64

	transit int64
	jitter  float64 // in timestamp units

	// What the sources before this one (another SSRC: a DTMF burst from
	// another stream, a restarted sender) received, lost and expected:
	// the call's totals count every source, RTCP reports this one.
	earlierReceived uint64
	earlierLost     int64
	earlierExpected int64
}

const maxDropout, maxMisorder = 3000, 100

const seqWindow = 512

func (s *rxStats) reset(ssrc uint32, seq uint16) {
	if s.started {
		s.earlierReceived += s.received
		s.earlierLost += max(0, s.lost())
		s.earlierExpected += s.expected()
	}
	s.started, s.ssrc = true, ssrc
	s.baseSeq, s.maxSeq, s.cycles = uint32(seq), seq, 0
	s.received, s.duplicates, s.expectedPrior, s.receivedPrior = 0, 0, 0, 0
	s.transit, s.jitter = 0, 0
	clear(s.window[:])
}

// update accounts one packet; arrival is in timestamp units (8 kHz).
func (s *rxStats) update(ssrc uint32, seq uint16, ts uint32, arrival int64, octets int) {
	if !s.started || ssrc != s.ssrc {
		s.reset(ssrc, seq)
	}
	delta := seq - s.maxSeq
	switch {
	case delta < maxDropout:
		if seq < s.maxSeq {
			s.cycles += 1 << 16
		}
		s.maxSeq = seq
	case delta <= 65535-maxMisorder:
		// A large jump: the sender restarted; start over from here.
		s.reset(ssrc, seq)
	default:
		// A packet from before maxSeq: reordered or duplicated.
	}
	ext := s.cycles + uint32(seq)
	if seq > s.maxSeq && s.cycles > 0 && delta > 65535-maxMisorder {
		ext -= 1 << 16 // from before the last wrap
	}
	if s.window[ext%seqWindow] == ext+1 {
		s.duplicates++
		return
	}
	s.window[ext%seqWindow] = ext + 1
	if ext < s.baseSeq && s.baseSeq-ext < maxMisorder {
		s.baseSeq = ext // the first packet to arrive was not the first sent
	}
	s.received++
	s.octets += uint64(octets)
	transit := arrival - int64(ts)
	if s.received > 1 {
		d := transit - s.transit
		if d < 0 {
			d = -d
		}
		s.jitter += (float64(d) - s.jitter) / 16
	}
	s.transit = transit
}

func (s *rxStats) extMax() uint32 { return s.cycles + uint32(s.maxSeq) }

func (s *rxStats) expected() int64 {
	if !s.started {
		return 0
	}
	return int64(s.extMax()) - int64(s.baseSeq) + 1
}

// lost is expected minus received; duplicates can make it negative.
func (s *rxStats) lost() int64 { return s.expected() - int64(s.received) }

// Totals over every source of the call: received, lost, expected.
func (s *rxStats) totalReceived() uint64 { return s.earlierReceived + s.received }
func (s *rxStats) totalLost() int64      { return s.earlierLost + max(0, s.lost()) }
func (s *rxStats) totalExpected() int64  { return s.earlierExpected + s.expected() }

// interval returns RTCP's fraction lost since the last call (8-bit fixed
// point) and moves the interval on.
func (s *rxStats) interval() uint8 {
	exp := uint32(s.expected())
	expInt := exp - s.expectedPrior
	recvInt := s.received - s.receivedPrior
	s.expectedPrior, s.receivedPrior = exp, s.received
	lostInt := int64(expInt) - int64(recvInt)
	if expInt == 0 || lostInt <= 0 {
		return 0
	}
	return uint8((lostInt << 8) / int64(expInt))
}
