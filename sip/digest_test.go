package sip

import (
	"testing"
	"time"

	"github.com/icholy/digest"
)

// TestDigestResponse: RFC 2617 §3.5's example.
func TestDigestResponse(t *testing.T) {
	creds, err := digest.ParseCredentials(`Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"`)
	if err != nil {
		t.Fatal(err)
	}
	ha1 := md5hex("Mufasa:testrealm@host.com:Circle Of Life")
	if ha1 != "939e7578ed9e3c518a452acee763bce9" {
		t.Fatalf("HA1 %s", ha1)
	}
	if got, ok := digestResponse(ha1, "GET", creds); !ok || got != creds.Response {
		t.Fatalf("response %s, want %s", got, creds.Response)
	}
	creds.QOP = "auth-int"
	if _, ok := digestResponse(ha1, "GET", creds); ok {
		t.Fatal("auth-int is not offered, so not accepted")
	}
}

func TestNonces(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	n := newNonces()
	n.now = func() time.Time { return now }
	nonce := n.issue("call-1@carrier")
	tests := []struct {
		name        string
		nonce, call string
		after       time.Duration
		ours, fresh bool
	}{
		{"just issued", nonce, "call-1@carrier", 0, true, true},
		{"four minutes on", nonce, "call-1@carrier", 4 * time.Minute, true, true},
		{"expired", nonce, "call-1@carrier", 6 * time.Minute, true, false},
		{"another call", nonce, "call-2@carrier", 0, false, false},
		{"tampered", nonce[:47] + "0", "call-1@carrier", 0, nonce[47] == '0', nonce[47] == '0'},
		{"not hex", "zz" + nonce[2:], "call-1@carrier", 0, false, false},
		{"short", nonce[:20], "call-1@carrier", 0, false, false},
		{"empty", "", "call-1@carrier", 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n.now = func() time.Time { return now.Add(tt.after) }
			if ours, fresh := n.check(tt.nonce, tt.call); ours != tt.ours || fresh != tt.fresh {
				t.Fatalf("check = %v, %v; want %v, %v", ours, fresh, tt.ours, tt.fresh)
			}
		})
	}
	other := newNonces()
	if ours, _ := other.check(nonce, "call-1@carrier"); ours {
		t.Fatal("another process's nonce accepted")
	}
}
