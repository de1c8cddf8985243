package call

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"trunkgate/internal/textsafe"
	"trunkgate/refusal"
	"trunkgate/trunks"
)

// Blind transfer at the application's request: the edge sends REFER to
// the carrier, tells the application how it goes (accepted, then
// succeeded or failed, with the SIP code), and hangs up once the far end
// has reached the target. A transfer that fails leaves the call as it
// was.

// transferTimeout bounds a transfer from REFER to the final NOTIFY.
const transferTimeout = 60 * time.Second

// errBadTransferTarget: the target is not a SIP URI or an E.164 number.
var errBadTransferTarget = errors.New("transfer target must be a sip: or sips: URI or an E.164 number")

// transferTarget is the Refer-To URI for to: a SIP URI as given, or an
// E.164 number at the carrier's host.
func transferTarget(to, remoteTarget string) (string, error) {
	if len(to) > 256 {
		return "", errBadTransferTarget
	}
	lower := strings.ToLower(to)
	if strings.HasPrefix(lower, "sip:") || strings.HasPrefix(lower, "sips:") {
		_, rest, _ := strings.Cut(to, ":")
		if rest == "" || strings.ContainsAny(to, " \t\r\n<>\"") || textsafe.HasControl(to) {
			return "", errBadTransferTarget
		}
		return to, nil
	}
	number, ok := trunks.NormaliseNumber(to)
	if !ok {
		return "", errBadTransferTarget
	}
	scheme, rest, found := strings.Cut(remoteTarget, ":")
	if !found {
		return "", fmt.Errorf("%w: the carrier's contact %q has no host", errBadTransferTarget, remoteTarget)
	}
	if _, host, at := strings.Cut(rest, "@"); at {
		rest = host
	}
	return scheme + ":" + number + "@" + rest, nil
}

// transfer starts a transfer to to; it returns at once (the REFER and
// its NOTIFYs run on their own goroutine, which ends with the transfer).
func (c *Call) transfer(to string) error {
	target, err := transferTarget(to, c.dialog.RemoteTarget())
	if err != nil {
		return err
	}
	c.log.Info("app asked to transfer the call", "to", target)
	go func() {
		ctx, cancel := context.WithTimeout(c.lease.Context(), transferTimeout)
		defer cancel()
		finished := make(chan struct{})
		// The outcome waits for accepted to be told first: the far end's
		// NOTIFY may overtake its answer to the REFER on the way here.
		answered := make(chan struct{})
		var once sync.Once // NOTIFYs may come on several goroutines
		code, err := c.dialog.Refer(ctx, target, func(code int, final bool) {
			if !final {
				return
			}
			select {
			case <-answered:
			case <-ctx.Done():
				return
			}
			once.Do(func() {
				defer close(finished)
				if code >= 200 && code < 300 {
					c.stream.TransferStatus("succeeded", code)
					c.m.cfg.Ledger.EndCall(c.id, refusal.Transferred)
					return
				}
				c.stream.TransferStatus("failed", code)
			})
		})
		if err != nil {
			c.log.Warn("transfer refused", "to", target, "code", code, "error", err)
			c.stream.TransferStatus("failed", code)
			return // answered stays open: a stray NOTIFY reports nothing
		}
		c.stream.TransferStatus("accepted", code)
		close(answered)
		select {
		case <-finished:
		case <-ctx.Done():
			c.stream.TransferStatus("failed", 0)
		}
	}()
	return nil
}
