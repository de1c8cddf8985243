package sip

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func sdp(lines ...string) []byte { return []byte(strings.Join(lines, "\r\n") + "\r\n") }

var sippOffer = sdp("v=0", "o=user1 53655765 2353687637 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
	"m=audio 6000 RTP/AVP 8 0 101", "a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000",
	"a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=ptime:30")

func TestNegotiate(t *testing.T) {
	tests := []struct {
		name  string
		body  []byte
		codec string
		pt    uint8
		dtmf  uint8
		ptime int
		dir   string
		err   error
		// wideband: the trunk's app takes 16 kHz (Policy.Wideband).
		wideband bool
	}{
		{name: "first listed codec wins (PCMA)", body: sippOffer, codec: "PCMA", pt: 8, dtmf: 101, ptime: 30, dir: "sendrecv"},
		{name: "PCMU first, static, no rtpmap", codec: "PCMU", pt: 0, ptime: 20, dir: "sendrecv",
			body: sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0", "m=audio 4000 RTP/AVP 0 8")},
		{name: "unsupported codecs skipped", codec: "PCMU", pt: 0, dtmf: 96, ptime: 20, dir: "recvonly",
			body: sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
				"m=audio 4000 RTP/AVP 18 9 0 96", "a=rtpmap:18 G729/8000", "a=rtpmap:9 G722/8000",
				"a=rtpmap:96 telephone-event/8000", "a=sendonly")},
		{name: "dynamic payload type for PCMU", codec: "PCMU", pt: 97, ptime: 20, dir: "sendrecv",
			body: sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
				"m=audio 4000 RTP/AVP 97", "a=rtpmap:97 pcmu/8000")},
		{name: "no common codec", err: ErrNoCommonCodec,
			body: sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
				"m=audio 4000 RTP/AVP 18 3", "a=rtpmap:18 G729/8000")},
		{name: "G.722 first, a 16 kHz app: wideband", codec: "G722", pt: 9, dtmf: 101, ptime: 20, dir: "sendrecv", wideband: true,
			body: sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
				"m=audio 4000 RTP/AVP 9 8 0 101", "a=rtpmap:9 G722/8000", "a=rtpmap:101 telephone-event/8000")},
		{name: "G.722 first, an 8 kHz app: G.711 spares the transcoding", codec: "PCMA", pt: 8, dtmf: 101, ptime: 20, dir: "sendrecv",
			body: sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
				"m=audio 4000 RTP/AVP 9 8 0 101", "a=rtpmap:9 G722/8000", "a=rtpmap:101 telephone-event/8000")},
		{name: "G.722 alone (static, no rtpmap), an 8 kHz app: the last resort", codec: "G722", pt: 9, ptime: 20, dir: "sendrecv",
			body: sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0", "m=audio 4000 RTP/AVP 18 9")},
		{name: "G.722 after PCMU, a 16 kHz app: the offer's order", codec: "PCMU", pt: 0, ptime: 20, dir: "sendrecv", wideband: true,
			body: sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0", "m=audio 4000 RTP/AVP 0 9")},
		{name: "G.722 at 16000 in rtpmap is not RFC 3551's G.722", codec: "PCMU", pt: 0, ptime: 20, dir: "sendrecv", wideband: true,
			body: sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0", "m=audio 4000 RTP/AVP 96 0", "a=rtpmap:96 G722/16000")},
		{name: "rejected stream (port 0)", err: ErrNoCommonCodec,
			body: sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0", "m=audio 0 RTP/AVP 0")},
		{name: "SRTP is not offered media we speak", err: ErrNoCommonCodec,
			body: sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0", "m=audio 4000 RTP/SAVP 0")},
		{name: "video first, audio second", codec: "PCMA", pt: 8, ptime: 20, dir: "inactive",
			body: sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
				"m=video 5000 RTP/AVP 96", "m=audio 4000 RTP/AVP 8", "a=inactive")},
	}
	for _, tt := range tests {
		offer, err := ParseSDP(tt.body)
		if err != nil {
			t.Fatalf("%s: parse: %v", tt.name, err)
		}
		n, err := Policy{Encryption: EncryptionAllow, Wideband: tt.wideband}.Negotiate(offer)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("%s: err %v, want %v", tt.name, err, tt.err)
			}
			continue
		}
		if err != nil || n.Codec != tt.codec || n.PayloadType != tt.pt || n.DTMFType != tt.dtmf || n.PtimeMS != tt.ptime || n.Direction != tt.dir {
			t.Errorf("%s: got %+v, %v", tt.name, n, err)
		}
	}
}

func TestNegotiateAddresses(t *testing.T) {
	offer, err := ParseSDP(sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
		"m=audio 4000 RTP/AVP 0", "c=IN IP4 192.0.2.7", "a=rtcp:4005"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := Negotiate(offer, EncryptionAllow)
	if n.Remote != netip.MustParseAddrPort("192.0.2.7:4000") || n.RemoteRTCP != netip.MustParseAddrPort("192.0.2.7:4005") {
		t.Fatalf("media-level c= and a=rtcp not used: %+v", n)
	}
}

func TestNegotiateKeeping(t *testing.T) {
	first, _ := Negotiate(mustParse(t, sippOffer), EncryptionOff)
	// A re-INVITE listing PCMU first still keeps PCMA.
	again := mustParse(t, sdp("v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
		"m=audio 6002 RTP/AVP 0 8", "a=sendonly"))
	n, err := NegotiateKeeping(again, first)
	if err != nil || n.Codec != "PCMA" || n.PayloadType != 8 || n.Direction != "recvonly" || n.Remote.Port() != 6002 {
		t.Fatalf("got %+v, %v", n, err)
	}
	drop := mustParse(t, sdp("v=0", "o=- 1 3 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0", "m=audio 6002 RTP/AVP 0"))
	if _, err := NegotiateKeeping(drop, first); !errors.Is(err, ErrNoCommonCodec) {
		t.Fatalf("codec change accepted: %v", err)
	}
}

func mustParse(t *testing.T, b []byte) *SDP {
	t.Helper()
	s, err := ParseSDP(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseSDPRejects(t *testing.T) {
	for name, body := range map[string]string{
		"no version":    "o=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\n",
		"bad version":   "v=1\r\n",
		"not type=val":  "v=0\r\nhello\r\n",
		"bad port":      "v=0\r\nm=audio 99999 RTP/AVP 0\r\n",
		"bad pt":        "v=0\r\nm=audio 1000 RTP/AVP 300\r\n",
		"bad rtpmap":    "v=0\r\nm=audio 1000 RTP/AVP 0\r\na=rtpmap:x PCMU/8000\r\n",
		"bad ptime":     "v=0\r\nm=audio 1000 RTP/AVP 0\r\na=ptime:-20\r\n",
		"bad c=":        "v=0\r\nc=IN IP9 1.2.3.4\r\n",
		"short o=":      "v=0\r\no=- 1\r\n",
		"too many m=":   "v=0\r\n" + strings.Repeat("m=audio 1000 RTP/AVP 0\r\n", 9),
		"huge":          "v=0\r\n" + strings.Repeat("a=x\r\n", 5000),
		"many formats":  "v=0\r\nm=audio 1000 RTP/AVP" + strings.Repeat(" 0", 40) + "\r\n",
		"rtcp port bad": "v=0\r\nm=audio 1000 RTP/AVP 0\r\na=rtcp:0\r\n",
	} {
		if _, err := ParseSDP([]byte(body)); !errors.Is(err, ErrBadSDP) {
			t.Errorf("%s: err %v, want ErrBadSDP", name, err)
		}
	}
}

func TestBuildAnswerRoundTrip(t *testing.T) {
	n, _ := Negotiate(mustParse(t, sippOffer), EncryptionOff)
	ans := BuildAnswer(AnswerSpec{SessionID: "42", Version: 3, Addr: netip.MustParseAddr("192.0.2.1"), Port: 10002, Media: n})
	back := mustParse(t, ans)
	m := back.Media[0]
	if back.Origin.Version != 3 || back.ConnAddr != netip.MustParseAddr("192.0.2.1") || m.Port != 10002 ||
		len(m.Formats) != 2 || m.Formats[0] != 8 || m.Formats[1] != 101 || m.Ptime != 30 || m.Direction != "sendrecv" ||
		m.RTPMap[8].Name != "PCMA" || m.RTPMap[101].Name != "telephone-event" {
		t.Fatalf("answer %q parsed as %+v", ans, back)
	}
	if !strings.Contains(string(ans), "\r\n") || strings.Contains(strings.ReplaceAll(string(ans), "\r\n", ""), "\n") {
		t.Fatal("answer lines must end in CRLF")
	}
}

func FuzzParseSDP(f *testing.F) {
	f.Add(sippOffer)
	f.Add([]byte("v=0\nm=audio 1 RTP/AVP 0 8 101\na=rtpmap:101 telephone-event/8000\na=sendonly\nc=IN IP6 ::1\n"))
	f.Add([]byte("v=0\r\nm=audio 4000/2 RTP/AVP 97\r\na=rtpmap:97 PCMU/8000/1\r\na=rtcp:4001 IN IP4 1.2.3.4\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := ParseSDP(body)
		if err != nil {
			if !errors.Is(err, ErrBadSDP) {
				t.Fatalf("error %v does not wrap ErrBadSDP", err)
			}
			return
		}
		n, err := Negotiate(s, EncryptionAllow)
		if err != nil {
			return
		}
		// Whatever is negotiated must render an answer that parses back.
		ans := BuildAnswer(AnswerSpec{SessionID: "1", Version: 1, Addr: netip.MustParseAddr("127.0.0.1"), Port: 10000, Media: n})
		back, err := ParseSDP(ans)
		if err != nil {
			t.Fatalf("answer %q does not parse: %v", ans, err)
		}
		if again, err := Negotiate(back, EncryptionAllow); err != nil || again.Codec != n.Codec {
			t.Fatalf("answer %q renegotiates to %+v, %v", ans, again, err)
		}
	})
}
