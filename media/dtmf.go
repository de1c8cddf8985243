package media

// RFC 4733 telephone-event payload: event (8 bits), E (end) bit, R bit,
// volume (6 bits), duration (16 bits). A key press is sent as many packets
// with the same RTP timestamp (the event's start), the last ones with E set
// and usually three times over.

// DTMFDetector turns telephone-event packets into one digit per key press.
type DTMFDetector struct {
	seen   bool
	lastTS uint32
	lastEv byte
}

// dtmfDigits maps RFC 4733 event codes 0-15 to their characters.
const dtmfDigits = "0123456789*#ABCD"

// Packet inspects one telephone-event payload with its RTP timestamp and
// returns the digit when the packet starts a new key press. Retransmitted
// and continuation packets of the same press return ok == false.
func (d *DTMFDetector) Packet(ts uint32, payload []byte) (digit byte, ok bool) {
	if len(payload) < 4 {
		return 0, false
	}
	ev := payload[0]
	if int(ev) >= len(dtmfDigits) {
		return 0, false // flash, tones and other events are not digits
	}
	if d.seen && ts == d.lastTS && ev == d.lastEv {
		return 0, false
	}
	d.seen, d.lastTS, d.lastEv = true, ts, ev
	return dtmfDigits[ev], true
}
