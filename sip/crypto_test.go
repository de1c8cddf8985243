package sip

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseCrypto(t *testing.T) {
	key30 := "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz" // 30 bytes
	key28 := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==" // 28 bytes
	tests := []struct {
		name, value string
		suite       string
		tag         int
		ok          bool
	}{
		{"80", "1 AES_CM_128_HMAC_SHA1_80 inline:" + key30, SuiteAESCM128HMACSHA1_80, 1, true},
		{"32 with lifetime", "2 AES_CM_128_HMAC_SHA1_32 inline:" + key30 + "|2^31", SuiteAESCM128HMACSHA1_32, 2, true},
		{"gcm", "3 AEAD_AES_128_GCM inline:" + key28, SuiteAEADAES128GCM, 3, true},
		{"unpadded", "1 AEAD_AES_128_GCM inline:" + strings.TrimRight(key28, "="), SuiteAEADAES128GCM, 1, true},
		{"unknown suite", "1 F8_128_HMAC_SHA1_80 inline:" + key30, "", 0, false},
		{"key too short", "1 AES_CM_128_HMAC_SHA1_80 inline:" + key28, "", 0, false},
		{"gcm key too long", "1 AEAD_AES_128_GCM inline:" + key30, "", 0, false},
		{"MKI", "1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^20|1:4", "", 0, false},
		{"two keys", "1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + ";inline:" + key30, "", 0, false},
		{"session parameter", "1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + " UNENCRYPTED_SRTCP", "", 0, false},
		{"not inline", "1 AES_CM_128_HMAC_SHA1_80 uri:" + key30, "", 0, false},
		{"not base64", "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", "", 0, false},
		{"bad tag", "x AES_CM_128_HMAC_SHA1_80 inline:" + key30, "", 0, false},
		{"too few fields", "1 AES_CM_128_HMAC_SHA1_80", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCrypto(tt.value)
			if !tt.ok {
				if !errors.Is(err, ErrBadCrypto) {
					t.Fatalf("ParseCrypto(%q) = %+v, %v; want ErrBadCrypto", tt.value, c, err)
				}
				if strings.Contains(err.Error(), key30[:8]) {
					t.Fatalf("the error repeats the key: %v", err)
				}
				return
			}
			if err != nil || c.Suite != tt.suite || c.Tag != tt.tag {
				t.Fatalf("ParseCrypto(%q) = %+v, %v", tt.value, c, err)
			}
			again, err := ParseCrypto(c.Attribute())
			if err != nil || !bytes.Equal(again.Key, c.Key) || again.Suite != c.Suite || again.Tag != c.Tag {
				t.Fatalf("round trip of %q: %+v, %v", c.Attribute(), again, err)
			}
			if len(c.MasterKey()) != 16 || len(c.MasterKey())+len(c.MasterSalt()) != len(c.Key) {
				t.Fatalf("key %d and salt %d bytes", len(c.MasterKey()), len(c.MasterSalt()))
			}
		})
	}
}

func TestNewAndChooseCrypto(t *testing.T) {
	a, err := NewCrypto(1, SuiteAESCM128HMACSHA1_80)
	if err != nil || len(a.Key) != 30 {
		t.Fatalf("NewCrypto: %d-byte key, %v", len(a.Key), err)
	}
	b, _ := NewCrypto(1, SuiteAESCM128HMACSHA1_80)
	if bytes.Equal(a.Key, b.Key) {
		t.Fatal("two fresh keys are equal")
	}
	if _, err := NewCrypto(1, "NULL"); !errors.Is(err, ErrBadCrypto) {
		t.Fatalf("NewCrypto of an unknown suite: %v", err)
	}
	g, _ := NewCrypto(5, SuiteAEADAES128GCM)
	s32, _ := NewCrypto(1, SuiteAESCM128HMACSHA1_32)
	s80a, _ := NewCrypto(3, SuiteAESCM128HMACSHA1_80)
	s80b, _ := NewCrypto(2, SuiteAESCM128HMACSHA1_80)
	for _, tt := range []struct {
		offer []Crypto
		want  Crypto
	}{
		{[]Crypto{s32, s80a, g}, g},
		{[]Crypto{s32, s80a, s80b}, s80b},
		{[]Crypto{s32}, s32},
	} {
		if got, ok := ChooseCrypto(tt.offer); !ok || got.Tag != tt.want.Tag || got.Suite != tt.want.Suite {
			t.Errorf("ChooseCrypto chose %d %s, want %d %s", got.Tag, got.Suite, tt.want.Tag, tt.want.Suite)
		}
	}
	if _, ok := ChooseCrypto(nil); ok {
		t.Error("ChooseCrypto of nothing found one")
	}
}

// An SRTP offer's usable keys are read; one the edge cannot use is
// skipped without refusing the offer.
func TestSDPCrypto(t *testing.T) {
	offer := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio 4000 RTP/SAVP 8\r\na=rtpmap:8 PCMA/8000\r\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31\r\n" +
		"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n" +
		"a=crypto:3 F8_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
	sdp, err := ParseSDP([]byte(offer))
	if err != nil {
		t.Fatal(err)
	}
	m := sdp.Media[0]
	if m.Proto != "RTP/SAVP" || len(m.Crypto) != 1 || m.Crypto[0].Tag != 1 {
		t.Fatalf("media %s with crypto %+v; want RTP/SAVP with tag 1 only", m.Proto, m.Crypto)
	}
}

// FuzzParseCrypto: whatever a peer sends in a=crypto, parsing neither
// panics nor accepts a key of the wrong length, and what it accepts it
// writes back the same.
func FuzzParseCrypto(f *testing.F) {
	f.Add("1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31")
	f.Add("3 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==")
	f.Add("1 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4")
	f.Fuzz(func(t *testing.T, value string) {
		c, err := ParseCrypto(value)
		if err != nil {
			return
		}
		if suite := suites[c.Suite]; len(c.Key) != suite.keyLen+suite.saltLen {
			t.Fatalf("accepted a %d-byte key for %s", len(c.Key), c.Suite)
		}
		again, err := ParseCrypto(c.Attribute())
		if err != nil || !bytes.Equal(again.Key, c.Key) || again.Suite != c.Suite || again.Tag != c.Tag {
			t.Fatalf("round trip of %q failed: %v", value, err)
		}
	})
}

func TestOfferCrypto(t *testing.T) {
	offered, err := OfferCrypto()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{SuiteAEADAES128GCM, SuiteAESCM128HMACSHA1_80, SuiteAESCM128HMACSHA1_32}
	keyLen := []int{16 + 12, 16 + 14, 16 + 14} // master key and salt (RFC 7714, RFC 3711)
	if len(offered) != len(want) {
		t.Fatalf("%d keys offered, want %d", len(offered), len(want))
	}
	for i, c := range offered {
		if c.Tag != i+1 || c.Suite != want[i] || len(c.Key) != keyLen[i] {
			t.Fatalf("key %d: %v, want tag %d %s", i, c, i+1, want[i])
		}
	}
	if best, _ := ChooseCrypto(offered); best.Suite != SuiteAEADAES128GCM {
		t.Fatalf("the edge's own offer chooses %s", best.Suite)
	}
}
