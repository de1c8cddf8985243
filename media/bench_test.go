package media

import (
	"testing"
	"time"

	"github.com/pion/rtp"
)

// The per-packet paths. Each must report 0 allocs/op.

func BenchmarkDecodePCMA(b *testing.B) {
	src := make([]byte, 160)
	dst := make([]int16, 160)
	b.ReportAllocs()
	for b.Loop() {
		PCMA.Decode(dst, src)
	}
}

func BenchmarkEncodePCMU(b *testing.B) {
	src := tone(1000, 8000, 160, 9000)
	dst := make([]byte, 160)
	b.ReportAllocs()
	for b.Loop() {
		PCMU.Encode(dst, src)
	}
}

// BenchmarkReceivePath is one RTP packet from the wire to the jitter
// buffer and out as a 20 ms frame: unmarshal, decode, push, pop; with
// SRTP, first the check and decryption of the packet (each suite).
func BenchmarkReceivePath(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchReceive(b, "") })
	for _, suite := range srtpSuites {
		b.Run(suite, func(b *testing.B) { benchReceive(b, suite) })
	}
}

func benchReceive(b *testing.B, suite string) {
	jb := NewJitterBuffer()
	var pkt rtp.Packet
	pcm := make([]int16, 160)
	frame := make([]int16, 160)
	// A sequence number's worth of packets, protected beforehand: the
	// replay window refuses a packet twice, so the receiver starts afresh
	// (timer stopped) when they wrap.
	wire := make([][]byte, 1<<16)
	var edge, carrier *SRTP
	fresh := func() {}
	if suite != "" {
		keys := newSRTPKeys(suite)
		edge, carrier = keys.edge(b), keys.carrier(b)
		fresh = func() { edge = keys.edge(b) }
	}
	for i := range wire {
		raw, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 8, SSRC: 1, SequenceNumber: uint16(i),
			Timestamp: uint32(i) * 160}, Payload: make([]byte, 160)}).Marshal()
		if carrier != nil {
			raw, _ = carrier.ProtectRTP(nil, raw)
		}
		wire[i] = raw
	}
	clear := make([]byte, 1500)
	var n int
	b.ReportAllocs()
	for b.Loop() {
		raw := wire[n&0xffff]
		if edge != nil {
			var err error
			if raw, err = edge.UnprotectRTP(clear, raw); err != nil {
				b.Fatal(err)
			}
		}
		if err := pkt.Unmarshal(raw); err != nil {
			b.Fatal(err)
		}
		PCMA.Decode(pcm, pkt.Payload)
		jb.Push(pkt.SSRC, pkt.Timestamp, pcm, int64(pkt.Timestamp))
		jb.Pop(frame)
		if n++; n&0xffff == 0 {
			b.StopTimer()
			fresh()
			jb = NewJitterBuffer()
			b.StartTimer()
		}
	}
}

// BenchmarkSendPath is one packet toward the carrier: playout read,
// encode, RTP marshal; with SRTP, then its encryption in place, as the
// session's clock does it.
func BenchmarkSendPath(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchSend(b, nil) })
	for _, suite := range srtpSuites {
		b.Run(suite, func(b *testing.B) { edge, _ := srtpPair(b, suite); benchSend(b, edge) })
	}
}

func benchSend(b *testing.B, srtp *SRTP) {
	p := NewPlayout()
	in := tone(440, 8000, 160, 9000)
	pcm := make([]int16, 160)
	payload := make([]byte, 160)
	wire := make([]byte, 172+srtpOverhead)
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SSRC: 1}}
	b.ReportAllocs()
	for b.Loop() {
		p.Write(in, time.Time{})
		p.Read(pcm)
		PCMU.Encode(payload, pcm)
		pkt.Payload = payload
		pkt.SequenceNumber++
		pkt.Timestamp += 160
		n, err := pkt.MarshalTo(wire)
		if err != nil {
			b.Fatal(err)
		}
		if srtp != nil {
			if _, err := srtp.ProtectRTP(wire[:n], wire[:n]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkJitterBuffer(b *testing.B) {
	jb := NewJitterBuffer()
	pcm := make([]int16, 160)
	frame := make([]int16, 160)
	var ts uint32
	b.ReportAllocs()
	for b.Loop() {
		jb.Push(1, ts, pcm, int64(ts))
		jb.Pop(frame)
		ts += 160
	}
}

func BenchmarkUpsample(b *testing.B) {
	var u Upsampler
	in := tone(1000, 8000, 160, 9000)
	out := make([]int16, 320)
	b.ReportAllocs()
	for b.Loop() {
		u.Process(out, in)
	}
}

func BenchmarkDownsample(b *testing.B) {
	var d Downsampler
	in := tone(1000, 16000, 320, 9000)
	out := make([]int16, 160)
	b.ReportAllocs()
	for b.Loop() {
		d.Process(out, in)
	}
}
