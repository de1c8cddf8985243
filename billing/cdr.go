// Package billing owns what a call costs: the meter that runs from answer
// to hang-up, rating (per-key rate per minute, per billed second, in
// currency micros), month-to-date spend for admission's spend cap, the CDR
// store, and crash recovery of calls that were live when the edge died.
// It knows nothing of SIP or media; callers hand it CDR values.
package billing

import (
	"encoding/json"
	"time"
)

// Hangup sides: who ended the call.
const (
	SideCarrier = "carrier" // BYE or CANCEL from the SIP side
	SideApp     = "app"     // the AI application closed its WebSocket
	SideEdge    = "edge"    // trunkgate ended it (revocation, limits, timeouts, drain)
)

// CDR statuses.
const (
	StatusLive      = "live"      // answered, not ended yet
	StatusDone      = "done"      // ended and rated
	StatusRecovered = "recovered" // closed at its last checkpoint after a crash
)

// CDR is one call's detail record. Times are milliseconds since the Unix
// epoch, UTC; money is currency micros.
type CDR struct {
	CallID    string `json:"call_id"`
	SIPCallID string `json:"sip_call_id"`
	KeyID     string `json:"key_id"`
	TrunkID   string `json:"trunk_id"`
	Direction string `json:"direction"`
	From      string `json:"from"`
	To        string `json:"to"`
	TestKey   bool   `json:"test_key"`
	// Sandbox marks a test key's outbound call, carried by the built-in
	// sandbox carrier.
	Sandbox bool `json:"sandbox"`
	// Gateway is the carrier gateway that carried an outbound call (the
	// last one tried, if none answered).
	Gateway string `json:"gateway,omitempty"`
	// Transport is the SIP transport toward the carrier: UDP, TCP or TLS.
	Transport string `json:"transport,omitempty"`
	// MediaEncryption is "srtp" or "none" (RTP in clear): what protected
	// the carrier leg's media.
	MediaEncryption string `json:"media_encryption,omitempty"`
	// Node is the edge that held the call.
	Node string `json:"node,omitempty"`
	// SetupMS, AnswerMS and EndMS are instants in Unix milliseconds (0:
	// never answered, not ended); JSON shows them as setup_at, answer_at
	// and end_at in RFC 3339 (see MarshalJSON).
	SetupMS       int64 `json:"-"`
	AnswerMS      int64 `json:"-"`
	EndMS         int64 `json:"-"`
	DurationMS    int64 `json:"duration_ms"`
	BilledSeconds int64 `json:"billed_seconds"`
	RatePerMinute int64 `json:"rate_per_minute"`
	// RatePrefix is the rate table prefix the call was rated by ("" for
	// the key's own rate); Country is the called number's E.164 country
	// code ("+44"): reports group by both.
	RatePrefix  string `json:"rate_prefix,omitempty"`
	Country     string `json:"country,omitempty"`
	CostMicros  int64  `json:"cost_micros"`
	FinalCode   int    `json:"final_code"`
	HangupSide  string `json:"hangup_side"`
	HangupCause string `json:"hangup_cause"`
	Status      string `json:"status"`
	Codec       string `json:"codec"`
	Media       Media  `json:"media"`
}

// Media is the call's RTP/RTCP quality, as the edge measured it.
type Media struct {
	PacketsIn    uint64  `json:"packets_in"`
	PacketsOut   uint64  `json:"packets_out"`
	PacketsLost  int64   `json:"packets_lost"`
	LossPercent  float64 `json:"loss_percent"`
	JitterMS     float64 `json:"jitter_ms"`
	RTTMS        float64 `json:"rtt_ms"`
	RemoteLost   int64   `json:"remote_lost"` // what the far end reported losing of ours (RTCP)
	RemoteJitter float64 `json:"remote_jitter_ms"`
	DTMFEvents   int     `json:"dtmf_events"`
	// The edge's own delay each way (absent when nothing was measured):
	// RTP in to its frame written to the app, and app audio (into an
	// empty queue) to its first RTP packet out.
	EdgeToApp     *Latency `json:"edge_to_app,omitempty"`
	EdgeToCarrier *Latency `json:"edge_to_carrier,omitempty"`
}

// Latency is a call's delay digest, in milliseconds.
type Latency struct {
	P50MS float64 `json:"p50_ms"`
	P95MS float64 `json:"p95_ms"`
	MaxMS float64 `json:"max_ms"`
}

// Answered reports whether the call was ever answered.
func (c *CDR) Answered() bool { return c.AnswerMS > 0 }

// Close fills the end time, exact duration, billed seconds (duration rounded
// up to whole seconds; 0 if never answered) and cost.
func (c *CDR) Close(end time.Time) {
	c.EndMS = end.UnixMilli()
	c.DurationMS = 0
	if c.Answered() && c.EndMS > c.AnswerMS {
		c.DurationMS = c.EndMS - c.AnswerMS
	}
	c.BilledSeconds = BilledSeconds(c.DurationMS)
	c.CostMicros = Cost(c.BilledSeconds, c.RatePerMinute)
	c.Status = StatusDone
}

// BilledSeconds rounds a duration up to whole seconds (1/1 increments).
func BilledSeconds(durationMS int64) int64 {
	if durationMS <= 0 {
		return 0
	}
	return (durationMS + 999) / 1000
}

// Cost rates billed seconds at a per-minute rate, rounding the last micro
// up so that a call is never billed less than its seconds are worth.
func Cost(billedSeconds, ratePerMinute int64) int64 {
	if billedSeconds <= 0 || ratePerMinute <= 0 {
		return 0
	}
	return (billedSeconds*ratePerMinute + 59) / 60
}

// cdrFields is CDR without its JSON methods.
type cdrFields CDR

// cdrJSON is a CDR as JSON has it: instants in RFC 3339 (UTC), an
// unanswered or live call without answer_at or end_at.
type cdrJSON struct {
	*cdrFields
	SetupAt  time.Time `json:"setup_at"`
	AnswerAt time.Time `json:"answer_at,omitzero"`
	EndAt    time.Time `json:"end_at,omitzero"`
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func timeMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// MarshalJSON writes the instants in RFC 3339, as every time in the API.
func (c CDR) MarshalJSON() ([]byte, error) {
	return json.Marshal(cdrJSON{cdrFields: (*cdrFields)(&c), SetupAt: msTime(c.SetupMS), AnswerAt: msTime(c.AnswerMS), EndAt: msTime(c.EndMS)})
}

// UnmarshalJSON reads what MarshalJSON writes (the CLI reads CDRs from
// the API).
func (c *CDR) UnmarshalJSON(b []byte) error {
	v := cdrJSON{cdrFields: (*cdrFields)(c)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	c.SetupMS, c.AnswerMS, c.EndMS = timeMS(v.SetupAt), timeMS(v.AnswerAt), timeMS(v.EndAt)
	return nil
}
