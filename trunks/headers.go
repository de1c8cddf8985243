package trunks

import (
	"fmt"
	"strings"
)

// SIP headers between carriers and apps (issue 14). Inbound, a trunk names
// the INVITE headers its app sees in start.customParameters; outbound, an
// app may add its own headers to the INVITE. Both are held to an
// allowlist: X- headers, and the few standard ones that carry call
// context (who diverted the call, who the caller asserts to be, user to
// user data). An app may not set identity headers (P-Asserted-Identity
// and the like): the caller id is the edge's to check.

// MaxPassedHeaders bounds the headers one trunk passes, or one call adds.
const MaxPassedHeaders = 16

// MaxPassedHeaderValue is the longest value passed to an app; a longer
// one is left out (and logged), not cut.
const MaxPassedHeaderValue = 1024

// contextHeaders are the standard headers a trunk may pass to its app.
var contextHeaders = map[string]string{
	"user-to-user": "User-to-User", "diversion": "Diversion", "p-asserted-identity": "P-Asserted-Identity",
	"p-preferred-identity": "P-Preferred-Identity", "remote-party-id": "Remote-Party-ID", "history-info": "History-Info",
}

func isXHeader(name string) bool { return len(name) > 2 && strings.EqualFold(name[:2], "x-") }

// validToken reports whether name is a SIP header name (RFC 3261 token).
func validToken(name string) bool {
	return name != "" && len(name) <= 64 && strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-.!%*_+`'~", r))
	}) < 0
}

// passedHeaders validates the INVITE headers an inbound trunk passes to
// its app, keeping each once, in the spelling of the standard where it
// has one.
func (s Spec) passedHeaders(t *Trunk) error {
	if len(s.SIPHeaders) > MaxPassedHeaders {
		return fmt.Errorf("%w: at most %d sip_headers", ErrInvalid, MaxPassedHeaders)
	}
	seen := map[string]bool{}
	for _, name := range s.SIPHeaders {
		canonical, known := contextHeaders[strings.ToLower(name)]
		switch {
		case !validToken(name):
			return fmt.Errorf("%w: sip_headers: %q is not a header name", ErrInvalid, name)
		case known:
			name = canonical
		case !isXHeader(name):
			return fmt.Errorf("%w: sip_headers: %s is not passed to apps (X- headers, User-to-User, Diversion, P-Asserted-Identity, "+
				"P-Preferred-Identity, Remote-Party-ID, History-Info)", ErrInvalid, name)
		}
		if !seen[strings.ToLower(name)] {
			seen[strings.ToLower(name)] = true
			t.SIPHeaders = append(t.SIPHeaders, name)
		}
	}
	return nil
}

// ValidAppHeaders checks the headers an app adds to its outbound INVITE:
// X- headers and User-to-User only, as ValidHeader says (no CR, LF or
// other control characters, at most 256 bytes a value), at most
// MaxPassedHeaders.
func ValidAppHeaders(h map[string]string) error {
	if len(h) > MaxPassedHeaders {
		return fmt.Errorf("%w: at most %d headers", ErrInvalid, MaxPassedHeaders)
	}
	for name, value := range h {
		if !isXHeader(name) && !strings.EqualFold(name, "User-to-User") {
			return fmt.Errorf("%w: header %s: an app may add X- headers and User-to-User only", ErrInvalid, name)
		}
		if err := ValidHeader(name, value); err != nil {
			return err
		}
	}
	return nil
}
