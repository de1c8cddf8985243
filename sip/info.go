package sip

import (
	"strings"

	gosip "github.com/emiago/sipgo/sip"
)

// parseDTMFRelay reads a digit from an INFO body of type
// application/dtmf-relay ("Signal=5\r\nDuration=160") or application/dtmf.
func parseDTMFRelay(req *gosip.Request) (byte, bool) {
	ct := req.ContentType()
	if ct == nil {
		return 0, false
	}
	body := string(req.Body())
	switch strings.ToLower(strings.TrimSpace(ct.Value())) {
	case "application/dtmf-relay":
		for _, line := range strings.Split(body, "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "signal") {
				return dtmfChar(strings.TrimSpace(v))
			}
		}
	case "application/dtmf":
		return dtmfChar(strings.TrimSpace(body))
	}
	return 0, false
}

func dtmfChar(s string) (byte, bool) {
	if len(s) != 1 {
		// RFC 4733 event numbers 10 and 11 are * and #.
		switch s {
		case "10":
			return '*', true
		case "11":
			return '#', true
		}
		return 0, false
	}
	c := s[0]
	switch {
	case c >= '0' && c <= '9', c == '*', c == '#':
		return c, true
	case c >= 'A' && c <= 'D':
		return c, true
	case c >= 'a' && c <= 'd':
		return c - 'a' + 'A', true
	}
	return 0, false
}
