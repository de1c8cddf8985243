package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"trunkgate/billing"
	"trunkgate/bridge"
	"trunkgate/call"
	"trunkgate/keys"
	"trunkgate/refusal"
	"trunkgate/trunks"
)

// --- calls ---

func (a *API) listCalls(w http.ResponseWriter, r *http.Request, p principal) {
	writeJSON(w, 200, map[string]any{"calls": a.cfg.Calls.List()})
}

// callEvents streams the live calls as server-sent events: a "calls"
// event with the same body as GET /v1/calls at once and every
// CallEventsEvery, until the client goes (the console's live view).
func (a *API) callEvents(w http.ResponseWriter, r *http.Request, p principal) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	tick := time.NewTicker(CallEventsEvery)
	defer tick.Stop()
	for {
		b, err := json.Marshal(map[string]any{"calls": a.cfg.Calls.List()})
		if err != nil {
			return
		}
		if _, err := fmt.Fprintf(w, "event: calls\ndata: %s\n\n", b); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

// CallEventsEvery is how often /v1/calls/events sends the live calls.
const CallEventsEvery = time.Second

func (a *API) hangupCall(w http.ResponseWriter, r *http.Request, p principal) {
	id := r.PathValue("id")
	err := a.cfg.Calls.Hangup(id)
	e := keys.AuditEntry{Actor: p.key.ID, Action: "call.hangup", Target: id, Outcome: "ok", Source: p.source}
	if err != nil {
		e.Outcome, e.Detail = "error", err.Error()
	}
	if werr := a.cfg.Audit.Write(r.Context(), e); werr != nil {
		a.cfg.Log.Error("audit write failed", "error", werr)
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"call_id": id, "status": "hanging up"})
}

// CallState is GET /v1/calls/{id}: a call being set up or live (from the
// call itself), or ended (from its CDR).
type CallState struct {
	call.Info
	FinalCode   int    `json:"final_code,omitempty"`
	HangupSide  string `json:"hangup_side,omitempty"`
	HangupCause string `json:"hangup_cause,omitempty"`
}

// StateEnded is the state of a call that has its CDR.
const StateEnded = "ended"

func (a *API) getCall(w http.ResponseWriter, r *http.Request, p principal) {
	id := r.PathValue("id")
	admin := p.key.HasScope(keys.ScopeKeysAdmin)
	if info, ok := a.cfg.Calls.Get(id); ok && (admin || info.KeyID == p.key.ID) {
		writeJSON(w, 200, CallState{Info: info})
		return
	}
	c, err := a.cfg.CDRs.GetCDR(r.Context(), id)
	if err == nil && !admin && c.KeyID != p.key.ID {
		err = billing.ErrNotFound
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, cdrState(c))
}

func cdrState(c *billing.CDR) CallState {
	s := CallState{FinalCode: c.FinalCode, HangupSide: c.HangupSide, HangupCause: c.HangupCause}
	s.Info = call.Info{CallID: c.CallID, SIPCallID: c.SIPCallID, KeyID: c.KeyID, TrunkID: c.TrunkID, Gateway: c.Gateway,
		Direction: c.Direction, State: StateEnded, From: c.From, To: c.To, Codec: c.Codec, DurationMS: c.DurationMS,
		Media: c.Media, Stream: map[string]int{}}
	s.SetupAt = time.UnixMilli(c.SetupMS).UTC()
	if c.AnswerMS > 0 {
		s.AnswerAt = time.UnixMilli(c.AnswerMS).UTC()
	}
	return s
}

// outboundRequest reads what both ways of placing a call share.
func outboundRequest(p principal, to, from, trunkID, format, rate string) (call.OutboundRequest, error) {
	req := call.OutboundRequest{Key: p.key, To: to, From: from, TrunkID: trunkID, Source: p.source,
		Format: bridge.Format{Kind: bridge.FormatTwilio, SampleRate: 8000}}
	switch format {
	case "", bridge.FormatTwilio:
	case bridge.FormatL16:
		req.Format.Kind = bridge.FormatL16
		switch rate {
		case "", "8000":
		case "16000":
			req.Format.SampleRate = 16000
		default:
			return req, errors.New("rate must be 8000 or 16000")
		}
	default:
		return req, errors.New("format must be twilio or l16")
	}
	if to == "" {
		return req, errors.New("to is required (E.164, e.g. +15551230000)")
	}
	return req, nil
}

// streamCall is GET /v1/calls/stream: the application's WebSocket for an
// outbound call, or (resume=streamSid) its return to a call whose socket
// dropped. Every check runs before the upgrade; a refusal is the HTTP
// status of DESIGN's table with a JSON body, and no INVITE leaves.
func (a *API) streamCall(w http.ResponseWriter, r *http.Request, p principal) {
	q := r.URL.Query()
	if !isWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		writeError(w, http.StatusUpgradeRequired, "upgrade_required", "this endpoint is a WebSocket: send Upgrade: websocket")
		return
	}
	if sid := q.Get("resume"); sid != "" {
		a.answerStream(w, a.cfg.Calls.ResumeStream(w, r, p.key, sid))
		return
	}
	req, err := outboundRequest(p, q.Get("to"), q.Get("from"), q.Get("trunk"), q.Get("format"), q.Get("rate"))
	if err == nil {
		req.Headers, err = streamHeaders(q["header"])
	}
	if err == nil {
		req.Options.ResumeGrace, err = resumeGrace(q.Get("resume_grace"))
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	req.Options.Progress, req.Options.Extensions = q.Get("progress") == "1", q.Get("extensions") == "1"
	a.answerStream(w, a.cfg.Calls.PlaceStream(w, r, req))
}

// resumeGrace reads a stream URL's resume_grace (seconds).
func resumeGrace(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err == nil {
		err = trunks.ValidResumeGrace(n)
	}
	if err != nil {
		return 0, fmt.Errorf("resume_grace must be 0 to %d seconds", trunks.MaxResumeGraceSeconds)
	}
	return time.Duration(n) * time.Second, nil
}

// answerStream answers a stream request that was not upgraded: a refusal,
// or a failure (a failed upgrade has answered already).
func (a *API) answerStream(w http.ResponseWriter, err error) {
	if reason, ok := refusal.As(err); ok {
		writeRefusal(w, reason)
		return
	}
	if err != nil && !errors.Is(err, call.ErrNotWebSocket) {
		a.fail(w, err)
	}
}

// isWebSocketUpgrade is checked before admission, so that a plain GET is
// told what to do instead of taking (and wasting) a channel.
func isWebSocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket") &&
		strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") &&
		r.Header.Get("Sec-WebSocket-Key") != ""
}

// PlaceRequest is POST /v1/calls.
type PlaceRequest struct {
	To      string            `json:"to"`
	From    string            `json:"from"`
	TrunkID string            `json:"trunk_id"`
	AIURL   string            `json:"ai_url"`
	Format  string            `json:"format"`
	Rate    int               `json:"sample_rate"`
	Params  map[string]string `json:"params"`
	// Extensions opts the stream the edge dials in to the protocol
	// extensions (DESIGN: extensions=1 on a stream URL).
	Extensions bool `json:"extensions"`
	// Headers are added to the INVITE: X- headers and User-to-User.
	Headers map[string]string `json:"headers"`
	// ResumeGraceSeconds holds the answered call this long when the
	// stream's socket drops, while the edge dials AIURL again.
	ResumeGraceSeconds int `json:"resume_grace_seconds"`
}

func (a *API) placeCall(w http.ResponseWriter, r *http.Request, p principal) {
	var body PlaceRequest
	if !decode(w, r, &body) {
		return
	}
	rate := ""
	if body.Rate != 0 {
		rate = strconv.Itoa(body.Rate)
	}
	req, err := outboundRequest(p, body.To, body.From, body.TrunkID, body.Format, rate)
	if err == nil {
		err = trunks.ValidAIURL(body.AIURL)
	}
	if err == nil {
		err = trunks.ValidParams(body.Params)
	}
	if err == nil {
		err = trunks.ValidAppHeaders(body.Headers)
	}
	if err == nil {
		err = trunks.ValidResumeGrace(body.ResumeGraceSeconds)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	req.AIURL, req.Params, req.Headers = body.AIURL, body.Params, body.Headers
	req.Options.Extensions = body.Extensions
	req.Options.ResumeGrace = time.Duration(body.ResumeGraceSeconds) * time.Second
	id, err := a.cfg.Calls.Place(r.Context(), req)
	if err != nil {
		if reason, ok := refusal.As(err); ok {
			writeRefusal(w, reason)
			return
		}
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"call_id": id, "state": call.StateSetup})
}

func (a *API) listGateways(w http.ResponseWriter, r *http.Request, p principal) {
	writeJSON(w, 200, map[string]any{"gateways": a.cfg.Gateways.Status()})
}

// writeRefusal answers a refusal with its HTTP status, Retry-After where
// the table has one, and a JSON error.
func writeRefusal(w http.ResponseWriter, r refusal.Reason) {
	if ra := r.RetryAfter(); ra > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ra))
	}
	writeError(w, r.HTTP(), r.Label(), r.Text())
}

// streamHeaders reads a stream URL's header=NAME:VALUE parameters, the
// SIP headers the application adds to its INVITE.
func streamHeaders(params []string) (map[string]string, error) {
	if len(params) == 0 {
		return nil, nil
	}
	h := make(map[string]string, len(params))
	for _, p := range params {
		name, value, ok := strings.Cut(p, ":")
		if !ok {
			return nil, fmt.Errorf("%w: header=%q: want NAME:VALUE", trunks.ErrInvalid, p)
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if _, dup := h[name]; dup {
			return nil, fmt.Errorf("%w: header %s given twice", trunks.ErrInvalid, name)
		}
		h[name] = value
	}
	return h, trunks.ValidAppHeaders(h)
}
