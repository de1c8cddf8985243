package media

import (
	"testing"

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
// buffer and out as a 20 ms frame: unmarshal, decode, push, pop.
func BenchmarkReceivePath(b *testing.B) {
	jb := NewJitterBuffer()
	var pkt rtp.Packet
	raw, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 8, SSRC: 1}, Payload: make([]byte, 160)}).Marshal()
	pcm := make([]int16, 160)
	frame := make([]int16, 160)
	var seq uint16
	var ts uint32
	b.ReportAllocs()
	for b.Loop() {
		raw[2], raw[3] = byte(seq>>8), byte(seq)
		raw[4], raw[5], raw[6], raw[7] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
		if err := pkt.Unmarshal(raw); err != nil {
			b.Fatal(err)
		}
		PCMA.Decode(pcm, pkt.Payload)
		jb.Push(pkt.SSRC, pkt.Timestamp, pcm, int64(ts))
		jb.Pop(frame)
		seq++
		ts += 160
	}
}

// BenchmarkSendPath is one packet toward the carrier: playout read,
// encode, RTP marshal.
func BenchmarkSendPath(b *testing.B) {
	p := NewPlayout()
	in := tone(440, 8000, 160, 9000)
	pcm := make([]int16, 160)
	payload := make([]byte, 160)
	wire := make([]byte, 172)
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SSRC: 1}}
	b.ReportAllocs()
	for b.Loop() {
		p.Write(in)
		p.Read(pcm)
		PCMU.Encode(payload, pcm)
		pkt.Payload = payload
		pkt.SequenceNumber++
		pkt.Timestamp += 160
		if _, err := pkt.MarshalTo(wire); err != nil {
			b.Fatal(err)
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
