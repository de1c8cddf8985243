package sip

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	gosip "github.com/emiago/sipgo/sip"
)

// Blind transfer (RFC 3515): the edge asks the far end to call someone
// else with REFER, and learns how that goes from the NOTIFYs of the
// implicit subscription, each carrying the status line of the far end's
// INVITE as message/sipfrag (RFC 3420).

// TransferProgress hears each NOTIFY's status code; final is true for the
// last one (a final status, or Subscription-State: terminated).
type TransferProgress func(code int, final bool)

// Refer sends REFER to target (a SIP URI) and waits for its answer: the
// status code, and an error unless it is 2xx (202 Accepted). Progress
// then comes through progress, on the goroutine that handles each NOTIFY.
func (d *Dialog) Refer(ctx context.Context, target string, progress TransferProgress) (int, error) {
	if d.ended() {
		return 0, fmt.Errorf("REFER: %w", errDialogEnded)
	}
	d.mu.Lock()
	d.onTransfer = progress
	d.mu.Unlock()
	req := d.newRequest(gosip.REFER, d.localSeq.Add(1))
	req.AppendHeader(gosip.NewHeader("Refer-To", "<"+target+">"))
	res, err := d.request(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("REFER: %w", err)
	}
	if !res.IsSuccess() {
		return res.StatusCode, fmt.Errorf("REFER answered %d", res.StatusCode)
	}
	return res.StatusCode, nil
}

// transferNotify hands a NOTIFY of the refer subscription to the
// transfer's progress.
func (d *Dialog) transferNotify(req *gosip.Request) {
	d.mu.Lock()
	progress := d.onTransfer
	d.mu.Unlock()
	if progress == nil {
		return
	}
	code, ok := sipfragStatus(req.Body())
	if !ok {
		return
	}
	state := ""
	if h := req.GetHeader("Subscription-State"); h != nil {
		state = strings.ToLower(strings.TrimSpace(h.Value()))
	}
	progress(code, code >= 200 || strings.HasPrefix(state, "terminated"))
}

// sipfragStatus reads the status code of a message/sipfrag body's status
// line ("SIP/2.0 200 OK").
func sipfragStatus(body []byte) (int, bool) {
	line, _, _ := strings.Cut(string(body), "\n")
	f := strings.Fields(line)
	if len(f) < 2 || !strings.EqualFold(f[0], "SIP/2.0") {
		return 0, false
	}
	code, err := strconv.Atoi(f[1])
	if err != nil || code < 100 || code > 699 {
		return 0, false
	}
	return code, true
}

// onNotify accepts the NOTIFYs of a transfer's subscription, in a dialog.
func (s *Server) onNotify(req *gosip.Request, tx gosip.ServerTransaction) {
	d := s.inDialog(req, tx)
	if d == nil {
		return
	}
	s.accept(tx, req)
	if ev := req.GetHeader("Event"); ev != nil && strings.HasPrefix(strings.ToLower(strings.TrimSpace(ev.Value())), "refer") {
		d.transferNotify(req)
	}
}
