package bridge

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trunkgate/media"
)

// rawPeer is a WebSocket server done by hand on a TCP socket: after the
// handshake it either discards what the edge sends or sends pre-built
// frames, allocating nothing per frame, so a benchmark counts only the
// edge's allocations.
type rawPeer struct {
	ln   net.Listener
	conn chan net.Conn
}

func newRawPeer(tb testing.TB) *rawPeer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &rawPeer{ln: ln, conn: make(chan net.Conn, 1)}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			c.Close()
			return
		}
		h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			base64.StdEncoding.EncodeToString(h[:])+"\r\n\r\n")
		p.conn <- c
	}()
	tb.Cleanup(func() { ln.Close() })
	return p
}

func (p *rawPeer) dial(tb testing.TB, format Format) *Stream {
	s, err := Dial(context.Background(), DialConfig{URL: "ws://" + p.ln.Addr().String() + "/", Format: format,
		Start: Start{CallSid: NewSid("CA"), StreamSid: NewSid("MZ")}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// serverFrame is an unmasked server-to-client text or binary frame.
func serverFrame(opcode byte, payload []byte) []byte {
	f := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		f = append(f, byte(n))
	case n < 65536:
		f = append(f, 126, byte(n>>8), byte(n))
	default:
		f = append(f, 127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	return append(f, payload...)
}

// countingPlayer counts the audio it is given and records the rest.
type countingPlayer struct {
	samples atomic.Int64
	mu      sync.Mutex
	marks   []string
	dtmf    []string
	clears  int
	// dropped and at are what Clear reports.
	dropped, at time.Duration
	rate        int // 0: 8000
}

func (c *countingPlayer) SampleRate() int {
	if c.rate == 0 {
		return 8000
	}
	return c.rate
}

func (c *countingPlayer) Play(pcm []int16, _ time.Time) { c.samples.Add(int64(len(pcm))) }
func (c *countingPlayer) Stats() media.Stats {
	return media.Stats{PacketsIn: 100, PacketsLost: 2, Expected: 102}
}
func (c *countingPlayer) Mark(name string) {
	c.mu.Lock()
	c.marks = append(c.marks, name)
	c.mu.Unlock()
}
func (c *countingPlayer) Clear() (time.Duration, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clears++
	return c.dropped, c.at
}
func (c *countingPlayer) SendDTMF(digits string, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dtmf = append(c.dtmf, digits+"/"+d.String())
	return nil
}

// BenchmarkCarrierToApp is one 20 ms frame from the media clock to the
// application's socket: queue, μ-law encode, JSON media message, WebSocket
// frame, write.
func BenchmarkCarrierToApp(b *testing.B) {
	for _, f := range []Format{{Kind: FormatTwilio, SampleRate: 8000}, {Kind: FormatL16, SampleRate: 16000}} {
		b.Run(f.Kind+"-"+itoa(f.SampleRate), func(b *testing.B) {
			peer := newRawPeer(b)
			s := peer.dial(b, f)
			conn := <-peer.conn
			var read atomic.Int64
			go func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := conn.Read(buf)
					read.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
			s.Begin(&countingPlayer{}, Leg{})
			pcm := make([]int16, 160)
			for i := range pcm {
				pcm[i] = int16(i * 50)
			}
			// Warm up: connected, start, and the writer's buffers.
			for i := range 100 {
				s.Audio(pcm, int64(i), time.Time{})
				waitSent(b, s, int64(i+1))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				s.Audio(pcm, int64(100+i), time.Time{})
				waitSent(b, s, int64(100+i+1))
			}
			b.StopTimer()
			if d := s.Counters().FramesDropped; d != 0 {
				b.Fatalf("%d frames dropped", d)
			}
			conn.Close()
			s.Close(End{})
		})
	}
}

func waitSent(b *testing.B, s *Stream, n int64) {
	deadline := time.Now().Add(5 * time.Second)
	for c := s.Counters(); c.FramesOut < n; c = s.Counters() {
		if c.FramesDropped > 0 || time.Now().After(deadline) {
			b.Fatalf("sent %d of %d frames, dropped %d", c.FramesOut, n, c.FramesDropped)
		}
		runtime.Gosched()
	}
}

// BenchmarkAppToCarrier is one 20 ms media message from the application's
// socket to the playout queue: WebSocket frame read, JSON parse, base64
// and μ-law decode, Play.
func BenchmarkAppToCarrier(b *testing.B) {
	peer := newRawPeer(b)
	s := peer.dial(b, Format{Kind: FormatTwilio, SampleRate: 8000})
	conn := <-peer.conn
	go io.Copy(io.Discard, conn)
	player := &countingPlayer{}
	s.Begin(player, Leg{})
	msg := []byte(`{"event":"media","streamSid":"` + s.start.StreamSid + `","media":{"payload":"` +
		base64.StdEncoding.EncodeToString(make([]byte, 160)) + `"}}`)
	frame := serverFrame(1, msg)
	batch := make([]byte, 0, len(frame)*64)
	for range 64 {
		batch = append(batch, frame...)
	}
	send := func(n int) {
		for n >= 64 {
			conn.Write(batch)
			n -= 64
		}
		if n > 0 {
			conn.Write(batch[:n*len(frame)])
		}
	}
	send(100)
	waitPlayed(b, player, 100*160)
	b.ReportAllocs()
	b.ResetTimer()
	total := int64(100 * 160)
	for b.Loop() {
		send(1)
		total += 160
		waitPlayed(b, player, total)
	}
	b.StopTimer()
	conn.Close()
	s.Close(End{})
}

func waitPlayed(b *testing.B, p *countingPlayer, n int64) {
	deadline := time.Now().Add(5 * time.Second)
	for p.samples.Load() < n {
		if time.Now().After(deadline) {
			b.Fatalf("played %d of %d samples", p.samples.Load(), n)
		}
		runtime.Gosched()
	}
}

func itoa(n int) string { return fmtInt(n) }

func fmtInt(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
