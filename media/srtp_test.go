package media

import (
	"bytes"
	"crypto/rand"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

var srtpSuites = []string{"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"}

// srtpPair is the edge's and the carrier's SRTP for one call: each sends
// with its own key and receives with the other's.
func srtpPair(t testing.TB, suite string) (edge, carrier *SRTP) {
	t.Helper()
	k := newSRTPKeys(suite)
	return k.edge(t), k.carrier(t)
}

// srtpKeys are the master keys and salts of one call: a the edge's, b
// the carrier's.
type srtpKeys struct {
	suite                    string
	keyA, saltA, keyB, saltB []byte
}

func newSRTPKeys(suite string) srtpKeys {
	saltLen := 14
	if suite == "AEAD_AES_128_GCM" {
		saltLen = 12
	}
	k := srtpKeys{suite, make([]byte, 16), make([]byte, saltLen), make([]byte, 16), make([]byte, saltLen)}
	for _, b := range [][]byte{k.keyA, k.saltA, k.keyB, k.saltB} {
		rand.Read(b)
	}
	return k
}

// edge sends with a and receives b; carrier the other way round.
func (k srtpKeys) edge(t testing.TB) *SRTP    { return k.srtp(t, k.keyA, k.saltA, k.keyB, k.saltB) }
func (k srtpKeys) carrier(t testing.TB) *SRTP { return k.srtp(t, k.keyB, k.saltB, k.keyA, k.saltA) }

func (k srtpKeys) srtp(t testing.TB, sendKey, sendSalt, recvKey, recvSalt []byte) *SRTP {
	t.Helper()
	s, err := NewSRTP(k.suite, sendKey, sendSalt, recvKey, recvSalt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// g711Packet is a 20 ms PCMA packet, as the edge sends them.
func g711Packet(t testing.TB, seq uint16) []byte {
	t.Helper()
	payload := bytes.Repeat([]byte{0xd5}, 160)
	pkt, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 8, SequenceNumber: seq, Timestamp: uint32(seq) * 160,
		SSRC: 0x1234abcd}, Payload: payload}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

// Each suite carries RTP and RTCP both ways; the payload on the wire is
// not the audio; a replayed, forged or foreign packet is refused.
func TestSRTPBothWays(t *testing.T) {
	for _, suite := range srtpSuites {
		t.Run(suite, func(t *testing.T) {
			edge, carrier := srtpPair(t, suite)
			buf, out := make([]byte, 1500), make([]byte, 1500)
			for seq := uint16(1); seq <= 3; seq++ {
				pkt := g711Packet(t, seq)
				wire, err := edge.ProtectRTP(buf, pkt)
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Contains(wire[12:], bytes.Repeat([]byte{0xd5}, 16)) {
					t.Fatal("the audio crossed the wire in clear")
				}
				got, err := carrier.UnprotectRTP(out, wire)
				if err != nil || !bytes.Equal(got, pkt) {
					t.Fatalf("packet %d: %v", seq, err)
				}
				if _, err := carrier.UnprotectRTP(out, wire); err == nil {
					t.Fatal("a replayed packet was accepted")
				}
				forged := append([]byte(nil), wire...)
				forged[len(forged)-1] ^= 1
				if _, err := edge.UnprotectRTP(out, forged); err == nil {
					t.Fatal("a forged packet was accepted")
				}
			}
			report, _ := (&rtcp.ReceiverReport{SSRC: 0x1234abcd}).Marshal()
			wire, err := carrier.ProtectRTCP(buf, report)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := edge.UnprotectRTCP(out, wire); err != nil || !bytes.Equal(got, report) {
				t.Fatalf("RTCP: %v", err)
			}
		})
	}
	if _, err := NewSRTP("NULL", nil, nil, nil, nil); !errors.Is(err, ErrSuite) {
		t.Fatalf("an unknown suite: %v", err)
	}
}

// BenchmarkRTPPacketPath is the per-packet cost of protecting and
// unprotecting a 20 ms G.711 packet, beside the plain path (a copy, which
// is all plain RTP costs here beyond the socket).
func BenchmarkRTPPacketPath(b *testing.B) {
	pkt := g711Packet(b, 1)
	buf, out := make([]byte, 1500), make([]byte, 1500)
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			copy(buf, pkt)
			copy(out, buf[:len(pkt)])
		}
	})
	for _, suite := range srtpSuites {
		b.Run(suite, func(b *testing.B) {
			edge, carrier := srtpPair(b, suite)
			b.ReportAllocs()
			for i := range b.N {
				// A new sequence number each time: the replay window refuses repeats.
				pkt[2], pkt[3] = byte(i>>8), byte(i)
				wire, err := edge.ProtectRTP(buf, pkt)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := carrier.UnprotectRTP(out, wire); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A session with SRTP: the carrier's protected packets are heard, a forged
// one (a foreign key) is dropped and does not move the latch, and what
// the session sends decrypts to the audio it played.
func TestSessionWithSRTP(t *testing.T) {
	pool := newTestPool(t)
	car := newCarrier(t)
	forger := newCarrier(t)
	rec := newRecorder()
	edge, carrierSRTP := srtpPair(t, "AES_CM_128_HMAC_SHA1_80")
	_, foreign := srtpPair(t, "AES_CM_128_HMAC_SHA1_80")
	s, err := pool.NewSession(Config{Codec: PCMU, Remote: car.addr(), Listener: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetSRTP(edge)
	s.Start()
	ulaw := make([]byte, 160)
	EncodeUlaw(ulaw, tone(1000, 8000, 160, 8000))
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.LocalPort()))
	send := func(c *carrier, ctx *SRTP) {
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: c.seq, Timestamp: c.ts, SSRC: 0xabc}, Payload: ulaw}
		b, _ := p.Marshal()
		wire, err := ctx.ProtectRTP(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.conn.WriteToUDPAddrPort(wire, to); err != nil {
			t.Fatal(err)
		}
		c.seq++
		c.ts += 160
	}
	send(forger, foreign)
	waitFor(t, 2*time.Second, "the forged packet counted as bad", func() bool { return s.badPkts.Load() == 1 })
	if s.latched.Load() {
		t.Fatal("a packet that failed SRTP authentication moved the latch")
	}
	for range 10 {
		send(car, carrierSRTP)
	}
	waitFor(t, 2*time.Second, "the carrier's audio", func() bool { frames, _, _ := rec.snapshot(); return len(frames) >= 5 })
	s.Play(tone(600, 8000, 8000, 8000), time.Now())
	buf := make([]byte, 1500)
	heard := 0
	for range 30 {
		car.conn.SetReadDeadline(time.Now().Add(time.Second))
		n, err := car.conn.Read(buf)
		if err != nil {
			t.Fatalf("no packet from the session: %v", err)
		}
		clear, err := carrierSRTP.UnprotectRTP(nil, buf[:n])
		if err != nil {
			t.Fatalf("the session's packet does not verify: %v", err)
		}
		var p rtp.Packet
		if err := p.Unmarshal(clear); err != nil || len(p.Payload) != 160 || n != 12+160+10 {
			t.Fatalf("packet of %d bytes on the wire: %v", n, err)
		}
		pcm := make([]int16, 160)
		PCMU.Decode(pcm, p.Payload)
		if rms(pcm) > 4000 {
			heard++
		}
	}
	if heard < 20 {
		t.Fatalf("%d of 30 packets carry the played tone (loud audio, not comfort silence)", heard)
	}
}
