package e2e

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"

	"github.com/pion/rtp"
	"github.com/zaf/g711"
)

// pcapRTP reads the RTP packets of a pcap file (Ethernet or Linux cooked
// capture, IPv4, UDP), as SIPp's play_pcap_audio sends them.
func pcapRTP(path string) ([]rtp.Packet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) < 24 {
		return nil, fmt.Errorf("%s: short pcap", path)
	}
	var order binary.ByteOrder = binary.LittleEndian
	switch binary.LittleEndian.Uint32(data) {
	case 0xa1b2c3d4, 0xa1b23c4d:
	case 0xd4c3b2a1, 0x4d3cb2a1:
		order = binary.BigEndian
	default:
		return nil, fmt.Errorf("%s: not a pcap file", path)
	}
	linkType := order.Uint32(data[20:])
	var out []rtp.Packet
	for off := 24; off+16 <= len(data); {
		capLen := int(order.Uint32(data[off+8:]))
		off += 16
		if off+capLen > len(data) {
			break
		}
		frame := data[off : off+capLen]
		off += capLen
		var ip []byte
		switch linkType {
		case 1: // Ethernet
			if len(frame) < 14 || binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
				continue
			}
			ip = frame[14:]
		case 113: // Linux cooked
			if len(frame) < 16 {
				continue
			}
			ip = frame[16:]
		case 101: // raw IP
			ip = frame
		default:
			return nil, fmt.Errorf("%s: link type %d", path, linkType)
		}
		if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != 17 {
			continue
		}
		ihl := int(ip[0]&0x0f) * 4
		if len(ip) < ihl+8 {
			continue
		}
		var p rtp.Packet
		if err := p.Unmarshal(ip[ihl+8:]); err != nil {
			continue
		}
		p.Payload = append([]byte(nil), p.Payload...)
		out = append(out, p)
	}
	return out, nil
}

// pcm decodes G.711 to 16-bit PCM.
func pcm(g711bytes []byte, alaw bool) []float64 {
	out := make([]float64, len(g711bytes))
	for i, b := range g711bytes {
		if alaw {
			out[i] = float64(g711.DecodeAlawFrame(b))
		} else {
			out[i] = float64(g711.DecodeUlawFrame(b))
		}
	}
	return out
}

func rms(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v * v
	}
	if len(x) == 0 {
		return 0
	}
	return math.Sqrt(s / float64(len(x)))
}

// bestMatch slides needle over haystack and returns the offset and the
// normalised correlation of the best alignment.
func bestMatch(haystack, needle []float64, maxOffset int) (int, float64) {
	best, bestAt := -2.0, 0
	for off := 0; off <= maxOffset && off+len(needle) <= len(haystack); off++ {
		var dot, a, b float64
		for i, v := range needle {
			h := haystack[off+i]
			dot += h * v
			a += h * h
			b += v * v
		}
		if a == 0 || b == 0 {
			continue
		}
		if c := dot / math.Sqrt(a*b); c > best {
			best, bestAt = c, off
		}
	}
	return bestAt, best
}

// goertzel is the power of one frequency in a block, relative to the
// block's total power (1 = a pure tone).
func toneShare(x []float64, freq, rate float64) float64 {
	k := 2 * math.Cos(2*math.Pi*freq/rate)
	var s1, s2 float64
	for _, v := range x {
		s := v + k*s1 - s2
		s2, s1 = s1, s
	}
	power := s1*s1 + s2*s2 - k*s1*s2
	var total float64
	for _, v := range x {
		total += v * v
	}
	if total == 0 {
		return 0
	}
	return 2 * power / (float64(len(x)) * total)
}

// ulawTone is n samples of a sine at freq, μ-law encoded.
func ulawTone(freq float64, n int, amp float64) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = g711.EncodeUlawFrame(int16(amp * math.Sin(2*math.Pi*freq*float64(i)/8000)))
	}
	return out
}
