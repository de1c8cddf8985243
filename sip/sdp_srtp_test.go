package sip

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// savpOffer is an SRTP offer of one suite, as baresip sends it.
func savpOffer(t *testing.T, suites ...string) ([]byte, []Crypto) {
	t.Helper()
	lines := []string{"v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
		"m=audio 7000 RTP/SAVP 8 0 101", "a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000"}
	var keys []Crypto
	for i, s := range suites {
		c, err := NewCrypto(i+1, s)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, c)
		lines = append(lines, "a=crypto:"+c.Attribute())
	}
	return sdp(lines...), keys
}

func TestNegotiateEncryption(t *testing.T) {
	savp, _ := savpOffer(t, SuiteAESCM128HMACSHA1_80)
	savpNoKey, _ := savpOffer(t)
	// Best-effort SRTP (RFC 4568 §6.2 aside): a plain stream, then an SRTP one.
	both := []byte(string(sippOffer) + "m=audio" + strings.SplitN(string(savp), "m=audio", 2)[1])
	tests := []struct {
		name   string
		offer  []byte
		enc    Encryption
		err    error
		secure bool
	}{
		{"plain to off", sippOffer, EncryptionOff, nil, false},
		{"plain to allow", sippOffer, EncryptionAllow, nil, false},
		{"plain to require", sippOffer, EncryptionRequire, ErrSRTPRequired, false},
		{"srtp to off", savp, EncryptionOff, ErrSRTPOff, false},
		{"srtp to allow", savp, EncryptionAllow, nil, true},
		{"srtp to require", savp, EncryptionRequire, nil, true},
		{"srtp without a usable key", savpNoKey, EncryptionRequire, ErrNoCommonCodec, false},
		{"both streams to require", both, EncryptionRequire, nil, true},
		{"both streams to off", both, EncryptionOff, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := Negotiate(mustParse(t, tt.offer), tt.enc)
			if !errors.Is(err, tt.err) || (err == nil && n.Secure() != tt.secure) {
				t.Fatalf("Negotiate = secure %v, %v; want secure %v, %v", n.Secure(), err, tt.secure, tt.err)
			}
			if err != nil {
				return
			}
			answer := string(BuildAnswer(AnswerSpec{SessionID: "1", Version: 1, Addr: n.Remote.Addr(), Port: 9000, Media: n}))
			if tt.secure {
				if n.LocalCrypto.Tag != n.RemoteCrypto.Tag || n.LocalCrypto.Suite != n.RemoteCrypto.Suite ||
					bytes.Equal(n.LocalCrypto.Key, n.RemoteCrypto.Key) {
					t.Fatalf("local key %v for remote %v: want the same tag and suite, a key of the edge's own", n.LocalCrypto, n.RemoteCrypto)
				}
				if !strings.Contains(answer, "m=audio 9000 RTP/SAVP ") || !strings.Contains(answer, "a=crypto:"+n.LocalCrypto.Attribute()+"\r\n") {
					t.Fatalf("answer:\n%s", answer)
				}
			} else if !strings.Contains(answer, "RTP/AVP") || strings.Contains(answer, "crypto") {
				t.Fatalf("plain answer:\n%s", answer)
			}
		})
	}
}

func TestNegotiateAnswerToSRTPOffer(t *testing.T) {
	offer := BuildOffer(OfferSpec{SessionID: "1", Version: 1, Addr: mustParse(t, sippOffer).ConnAddr, Port: 9000})
	if strings.Contains(string(offer), "SAVP") {
		t.Fatalf("plain offer:\n%s", offer)
	}
	var offered []Crypto
	for i, s := range []string{SuiteAEADAES128GCM, SuiteAESCM128HMACSHA1_80} {
		c, _ := NewCrypto(i+1, s)
		offered = append(offered, c)
	}
	offer = BuildOffer(OfferSpec{SessionID: "1", Version: 1, Addr: mustParse(t, sippOffer).ConnAddr, Port: 9000, Crypto: offered})
	if !strings.Contains(string(offer), "RTP/SAVP 0 8 101") || strings.Count(string(offer), "a=crypto:") != 2 {
		t.Fatalf("SRTP offer:\n%s", offer)
	}
	// The carrier picks tag 2 (AES-CM-80) and sends its own key.
	theirs, _ := NewCrypto(2, SuiteAESCM128HMACSHA1_80)
	answer := sdp("v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
		"m=audio 7000 RTP/SAVP 0", "a=crypto:"+theirs.Attribute())
	n, err := NegotiateAnswer(mustParse(t, answer), OfferSpec{Crypto: offered})
	if err != nil || !bytes.Equal(n.LocalCrypto.Key, offered[1].Key) || !bytes.Equal(n.RemoteCrypto.Key, theirs.Key) {
		t.Fatalf("NegotiateAnswer = %v/%v, %v: want our tag 2 key and theirs", n.LocalCrypto, n.RemoteCrypto, err)
	}
	// A tag that was never offered, and a plain answer, are refused.
	wrong, _ := NewCrypto(7, SuiteAESCM128HMACSHA1_80)
	bad := bytes.Replace(answer, []byte(theirs.Attribute()), []byte(wrong.Attribute()), 1)
	if _, err := NegotiateAnswer(mustParse(t, bad), OfferSpec{Crypto: offered}); !errors.Is(err, ErrBadCrypto) {
		t.Fatalf("answer with tag 7: %v", err)
	}
	if _, err := NegotiateAnswer(mustParse(t, sippOffer), OfferSpec{Crypto: offered}); !errors.Is(err, ErrSRTPRequired) {
		t.Fatalf("plain answer to an SRTP offer: %v", err)
	}
}

func TestReinviteKeepsKeys(t *testing.T) {
	offer, keys := savpOffer(t, SuiteAESCM128HMACSHA1_80)
	first, err := Negotiate(mustParse(t, offer), EncryptionRequire)
	if err != nil {
		t.Fatal(err)
	}
	hold := bytes.Replace(offer, []byte("a=rtpmap:101"), []byte("a=sendonly\r\na=rtpmap:101"), 1)
	again, err := NegotiateKeeping(mustParse(t, hold), first)
	if err != nil || !bytes.Equal(again.LocalCrypto.Key, first.LocalCrypto.Key) || again.Direction != "recvonly" {
		t.Fatalf("hold re-INVITE: %v, %v; want the same keys, recvonly", again.LocalCrypto, err)
	}
	rekey, _ := NewCrypto(1, SuiteAESCM128HMACSHA1_80)
	changed := bytes.Replace(offer, []byte(keys[0].Attribute()), []byte(rekey.Attribute()), 1)
	if _, err := NegotiateKeeping(mustParse(t, changed), first); !errors.Is(err, ErrRekey) {
		t.Fatalf("re-INVITE with a new key: %v, want ErrRekey", err)
	}
	if _, err := NegotiateKeeping(mustParse(t, sippOffer), first); !errors.Is(err, ErrSRTPRequired) {
		t.Fatalf("re-INVITE dropping SRTP: %v", err)
	}
}

func TestCryptoPrintsNoKey(t *testing.T) {
	c, _ := NewCrypto(1, SuiteAESCM128HMACSHA1_80)
	n := Negotiated{RemoteCrypto: c, LocalCrypto: c}
	key := c.Attribute()[len("1 AES_CM_128_HMAC_SHA1_80 inline:"):]
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v", n), fmt.Sprintf("%+v", n), fmt.Sprintf("%#v", n), c.String()} {
		if strings.Contains(s, key) || strings.Contains(s, fmt.Sprint(c.Key[:4])) {
			t.Fatalf("key material printed: %s", s)
		}
	}
}
