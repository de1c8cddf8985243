package sip

import (
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"
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
	n := newNonces(nil)
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
	other := newNonces(nil)
	if ours, _ := other.check(nonce, "call-1@carrier"); ours {
		t.Fatal("another process's nonce accepted")
	}
	// Edges sharing a key accept each other's nonces.
	a, b := newNonces([]byte("cluster secret")), newNonces([]byte("cluster secret"))
	if ours, fresh := b.check(a.issue("call-3@carrier"), "call-3@carrier"); !ours || !fresh {
		t.Fatal("a nonce issued under the shared key is refused by another edge")
	}
}

// FuzzCheckDigest: whatever a carrier puts in Authorization, checking it
// neither panics nor lets a call through; only a response computed from
// the trunk's HA1 and the edge's nonce would.
func FuzzCheckDigest(f *testing.F) {
	s := &Server{nonces: newNonces(nil)}
	nonce := s.nonces.issue("digest-fuzz")
	f.Add(`Digest username="carrier", realm="trunkgate", nonce="` + nonce + `", uri="sip:+15550100@127.0.0.1", response="00000000000000000000000000000000", qop=auth, nc=00000001, cnonce="x"`)
	f.Add(`Digest username="carrier", realm="trunkgate", nonce="` + nonce + `", uri="sip:a@b", response="x", algorithm=SHA-256`)
	f.Add(`NoOneKnowsThisScheme opaque-data=here`)
	f.Add(`Digest realm="trunkgate", nc=zz, qop="auth,auth-int"`)
	f.Fuzz(func(t *testing.T, authorization string) {
		raw := "INVITE sip:+15550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d\r\n" +
			"From: <sip:a@127.0.0.1>;tag=f\r\nTo: <sip:+15550100@127.0.0.1>\r\nCall-ID: digest-fuzz\r\nCSeq: 2 INVITE\r\n" +
			"Authorization: " + authorization + "\r\nContent-Length: 0\r\n\r\n"
		msg, err := gosip.NewParser().ParseSIP([]byte(raw))
		if err != nil {
			return
		}
		inv := &Invite{srv: s, req: msg.(*gosip.Request)}
		if got := inv.CheckDigest("trunkgate", "carrier", md5hex("carrier:trunkgate:secret")); got == DigestOK || got == DigestStale {
			t.Fatalf("random credentials accepted (%v): %q", got, authorization)
		}
	})
}

// FuzzAuthorize: whatever challenge a gateway sends, answering it
// neither panics nor sends a request without its CSeq moved on.
func FuzzAuthorize(f *testing.F) {
	f.Add(401, `Digest realm="carrier", nonce="abc", qop="auth", algorithm=MD5`)
	f.Add(407, `Digest realm="carrier", nonce="abc", algorithm=SHA-256, stale=true`)
	f.Add(401, `Basic realm="x"`)
	f.Add(407, `Digest qop="auth-int,auth", nonce=`)
	f.Fuzz(func(t *testing.T, code int, challenge string) {
		if code != 401 && code != 407 {
			code = 401 + 6*(code&1)
		}
		req := gosip.NewRequest(gosip.INVITE, gosip.Uri{Scheme: "sip", User: "+15550100", Host: "127.0.0.1"})
		req.AppendHeader(&gosip.CSeqHeader{SeqNo: 1, MethodName: gosip.INVITE})
		res := gosip.NewResponse(code, "Unauthorized")
		name := "WWW-Authenticate"
		if code == 407 {
			name = "Proxy-Authenticate"
		}
		res.AppendHeader(gosip.NewHeader(name, challenge))
		if err := authorize(req, res, "user", "secret"); err == nil && req.CSeq().SeqNo != 2 {
			t.Fatalf("answered %q with CSeq %d", challenge, req.CSeq().SeqNo)
		}
	})
}
