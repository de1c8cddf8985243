package bridge

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"time"

	"github.com/coder/websocket"

	"trunkgate/media"
)

// reader reads the application's messages on conn until it closes. Audio,
// marks and clears that come before Begin (an outbound call still ringing)
// have no player yet and are dropped.
func (s *Stream) reader(conn *websocket.Conn) {
	defer s.readers.Done()
	defer s.survive("reader")
	ctx := context.Background()
	var (
		buf    = make([]byte, 0, 4096)
		msg    AppMessage
		ulaw   = make([]byte, 0, 1024)
		pcm    = make([]int16, decodeChunk)
		half   = make([]int16, decodeChunk/2)
		double = make([]int16, 2*decodeChunk)
		down   media.Downsampler
		up     media.Upsampler
	)
	// playAt plays samples at rate (8000 or 16000) at the player's own
	// rate: 16 kHz on a G.722 call, else 8 kHz.
	playAt := func(p Player, samples []int16, rate int, at time.Time) {
		switch want := p.SampleRate(); {
		case rate == want:
		case rate > want:
			samples = down.Process(half, samples[:len(samples)&^1])
		default:
			samples = up.Process(double, samples)
		}
		s.play(p, samples, at)
	}
	for {
		typ, r, err := conn.Reader(ctx)
		if err == nil {
			buf, err = readAll(buf[:0], r)
		}
		if err != nil {
			s.readFailed(conn, err)
			return
		}
		at := time.Now()
		player := s.player.Load()
		if typ == websocket.MessageBinary {
			if s.format.Kind != FormatL16 {
				s.warnOnce("binary", "binary frame ignored in twilio format")
				continue
			}
			if player == nil {
				s.warnOnce("early-audio", "audio before the call was answered ignored")
				continue
			}
			if s.format.SampleRate == 16000 && len(buf)%4 != 0 {
				s.warnOnce("l16-odd", "L16 16 kHz frame with an odd number of samples; the last one is dropped")
			}
			// In pieces, so that a message of any size fits the buffers.
			for off := 0; off+1 < len(buf); off += 2 * decodeChunk {
				n := min(decodeChunk, (len(buf)-off)/2)
				for i := range n {
					pcm[i] = int16(binary.LittleEndian.Uint16(buf[off+2*i:]))
				}
				playAt(player.p, pcm[:n], s.format.SampleRate, at)
			}
			continue
		}
		if err := ParseAppMessage(buf, &msg); err != nil {
			s.warnOnce("malformed", "malformed message from application ignored", "error", err)
			continue
		}
		if string(msg.StreamSid) != s.start.StreamSid {
			s.warnOnce("streamSid", "message with missing or wrong streamSid accepted")
		}
		switch string(msg.Event) {
		case "media", "mark", "clear":
			if player == nil {
				s.warnOnce("early-"+string(msg.Event), "message before the call was answered ignored", "event", string(msg.Event))
				continue
			}
		}
		switch string(msg.Event) {
		case "media":
			ulaw = ulaw[:0]
			ulaw, err = base64.StdEncoding.AppendDecode(ulaw, msg.Payload)
			if err != nil {
				s.warnOnce("payload", "media payload is not base64; ignored")
				continue
			}
			for off := 0; off < len(ulaw); off += decodeChunk {
				n := min(decodeChunk, len(ulaw)-off)
				media.DecodeUlaw(pcm[:n], ulaw[off:off+n])
				playAt(player.p, pcm[:n], media.ClockRate, at)
			}
		case "mark":
			if len(msg.MarkName) > maxMarkName {
				s.warnOnce("mark-name", "mark name longer than 256 bytes ignored", "bytes", len(msg.MarkName))
				continue
			}
			s.stats.marks.Add(1)
			player.p.Mark(string(msg.MarkName))
		case "clear":
			s.stats.clears.Add(1)
			s.clear(player.p)
		case "dtmf", "hangup", "transfer":
			var p Player
			if player != nil {
				p = player.p
			}
			s.control(string(msg.Event), buf, p)
		default:
			s.warnOnce("event:"+string(msg.Event), "unknown event from application ignored", "event", string(msg.Event))
		}
	}
}

// readFailed ends the stream when its socket closes: the application hung
// up (a close frame), or the socket failed and no resume is allowed.
func (s *Stream) readFailed(conn *websocket.Conn, err error) {
	if !s.isCurrent(conn) {
		return // an old socket: the stream went on without it
	}
	if websocket.CloseStatus(err) == -1 && s.lost(conn) {
		return
	}
	s.byApp.Store(!s.closing.Load())
	s.finish()
}

func (s *Stream) play(p Player, pcm []int16, at time.Time) {
	if len(pcm) == 0 {
		return
	}
	s.stats.framesIn.Add(1)
	s.stats.samplesIn.Add(int64(len(pcm)))
	p.Play(pcm, at)
}

// readAll reads a message into buf, growing it only when a message is
// larger than any before.
func readAll(buf []byte, r io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
