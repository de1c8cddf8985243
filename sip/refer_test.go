package sip

import (
	"strconv"
	"strings"
	"testing"
)

func TestSipfragStatus(t *testing.T) {
	for _, tt := range []struct {
		body string
		code int
		ok   bool
	}{
		{"SIP/2.0 200 OK\r\n", 200, true},
		{"SIP/2.0 100 Trying", 100, true},
		{"sip/2.0 486 Busy Here\r\nContent-Length: 0\r\n", 486, true},
		{"SIP/2.0 99 Nope\r\n", 0, false},
		{"SIP/3.0 200 OK\r\n", 0, false},
		{"INVITE sip:a@b SIP/2.0\r\n", 0, false},
		{"", 0, false},
	} {
		code, ok := sipfragStatus([]byte(tt.body))
		if code != tt.code || ok != tt.ok {
			t.Errorf("sipfragStatus(%q) = %d, %v", tt.body, code, ok)
		}
	}
}

// FuzzSipfragStatus: a NOTIFY body is the carrier's to write; reading its
// status line never panics and gives only a real status code.
func FuzzSipfragStatus(f *testing.F) {
	for _, s := range []string{"SIP/2.0 200 OK\r\n", "SIP/2.0 603 Decline\r\nX: y\r\n", "SIP/2.0  180", "\n\n", "SIP/2.0 2000 OK"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		code, ok := sipfragStatus(body)
		if ok && (code < 100 || code > 699) {
			t.Fatalf("code %d from %q", code, body)
		}
		if ok && !strings.Contains(string(body), strconv.Itoa(code)) {
			t.Fatalf("code %d not in %q", code, body)
		}
	})
}
