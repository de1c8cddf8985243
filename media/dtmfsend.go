package media

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// ErrNoTelephoneEvent: the far end did not negotiate RFC 4733
// telephone-event, so digits cannot be sent in the media.
var ErrNoTelephoneEvent = errors.New("the carrier did not negotiate telephone-event")

// ErrBadDigit: a digit outside 0-9, *, #, A-D.
var ErrBadDigit = errors.New("not a DTMF digit")

// ErrDTMFQueueFull: too many digits are waiting to be sent.
var ErrDTMFQueueFull = errors.New("too many DTMF digits waiting")

// DTMF timing toward the carrier (RFC 4733 §2.5, and what SBCs and IVRs
// expect): a digit lasts DefaultDTMFDuration unless the application says
// otherwise, within [MinDTMFDuration, MaxDTMFDuration]; digits are
// separated by dtmfGap of ordinary audio; the end packet goes out three
// times (§2.5.1.4) in case one is lost.
const (
	DefaultDTMFDuration = 100 * time.Millisecond
	MinDTMFDuration     = 40 * time.Millisecond
	MaxDTMFDuration     = 5 * time.Second
	dtmfGap             = 60 * time.Millisecond
	dtmfEndPackets      = 3
	dtmfVolume          = 10 // -10 dBm0
	maxQueuedDigits     = 64
)

// dtmfEvent maps a digit to its RFC 4733 event code: its place in the
// detector's table (a-d as A-D).
func dtmfEvent(d byte) (byte, bool) {
	if d >= 'a' && d <= 'd' {
		d -= 'a' - 'A'
	}
	i := strings.IndexByte(dtmfDigits, d)
	return byte(i), i >= 0
}

type queuedDigit struct {
	event    byte
	duration uint32 // samples
}

// dtmfSender turns queued digits into telephone-event packets on the
// session clock. SendDTMF queues from the application's goroutine; the
// rest runs on the clock goroutine (under the session's tickMu).
type dtmfSender struct {
	mu    sync.Mutex
	queue []queuedDigit

	// The digit on the wire, clock goroutine only.
	active  bool
	cur     queuedDigit
	startTS uint32 // RTP timestamp of the event: where it began
	elapsed uint32 // samples of the event covered so far
	ends    int    // end packets sent
	gap     uint32 // samples of audio still due before the next digit
}

// SendDTMF queues digits to send to the carrier as RFC 4733 events, each
// lasting duration (0: DefaultDTMFDuration). The session's ordinary audio
// pauses while a digit plays and resumes after it.
func (s *Session) SendDTMF(digits string, duration time.Duration) error {
	if s.dtmfPT.Load() == 0 {
		return ErrNoTelephoneEvent
	}
	if duration == 0 {
		duration = DefaultDTMFDuration
	}
	duration = min(max(duration, MinDTMFDuration), MaxDTMFDuration)
	q := make([]queuedDigit, 0, len(digits))
	for i := 0; i < len(digits); i++ {
		ev, ok := dtmfEvent(digits[i])
		if !ok {
			return fmt.Errorf("%w: %q", ErrBadDigit, digits[i])
		}
		q = append(q, queuedDigit{event: ev, duration: uint32(duration * ClockRate / time.Second)})
	}
	d := &s.dtmfOut
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.queue)+len(q) > maxQueuedDigits {
		return ErrDTMFQueueFull
	}
	d.queue = append(d.queue, q...)
	return nil
}

// next fills payload with the next telephone-event packet's 4 bytes when a
// digit is due at timestamp ts, for a packet of n samples. It reports
// false when this packet carries audio; marker is set on an event's first
// packet.
func (d *dtmfSender) next(payload []byte, ts, n uint32) (ok, marker bool) {
	if !d.active {
		if d.gap > 0 {
			d.gap -= min(d.gap, n)
			return false, false
		}
		d.mu.Lock()
		if len(d.queue) == 0 {
			d.mu.Unlock()
			return false, false
		}
		d.cur = d.queue[0]
		d.queue = append(d.queue[:0], d.queue[1:]...)
		d.mu.Unlock()
		d.active, d.startTS, d.elapsed, d.ends = true, ts, 0, 0
		marker = true
	}
	d.elapsed = min(d.elapsed+n, d.cur.duration)
	end := d.elapsed == d.cur.duration
	payload[0] = d.cur.event
	payload[1] = dtmfVolume
	if end {
		payload[1] |= 0x80
		d.ends++
		if d.ends == dtmfEndPackets {
			d.active = false
			d.gap = uint32(dtmfGap * ClockRate / time.Second)
		}
	}
	binary.BigEndian.PutUint16(payload[2:], uint16(min(d.elapsed, 0xffff)))
	return true, marker
}
