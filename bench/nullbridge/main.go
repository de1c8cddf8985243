// Command nullbridge is the load harness's floor, not a product: it
// answers the same SIP calls as the edge and moves the same packets through
// the same kinds of sockets — one UDP socket per call with an RTP read per
// packet, one WebSocket per call to the app with a frame each way every
// 20 ms, an RTP packet written to the carrier every ptime, all paced by one
// clock goroutine — but does nothing to the audio: no admission, no CDR, no
// G.711, no jitter buffer, no JSON or base64 (the app gets the carrier's
// bytes as binary frames, which trunkgate's echo app sends back as they
// came). `BRIDGE=null scripts/loadtest.sh N` runs it in the edge's place;
// the edge's CPU beside its CPU says how much of the edge's cost is the
// per-packet I/O itself, which only fewer system calls can lower.
//
// It serves, on --http-addr, the few metrics the load script reads under
// the edge's names.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof" // on --debug-addr, as the edge's
	"net/netip"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/emiago/sipgo"
	gosip "github.com/emiago/sipgo/sip"

	"trunkgate/sip"
)

// frameBytes is 20 ms of G.711 at 8 kHz, the app frame of the edge.
const frameBytes = 160

// maxQueued bounds each direction's queue at 1 s of audio.
const maxQueued = 8000

func main() {
	sipAddr := flag.String("sip-addr", "127.0.0.1:5070", "SIP UDP listen address")
	httpAddr := flag.String("http-addr", "127.0.0.1:8091", "metrics listen address")
	appURL := flag.String("app", "ws://127.0.0.1:9091/", "the echo app's WebSocket URL")
	debugAddr := flag.String("debug-addr", "", "pprof listen address (off when empty)")
	flag.Parse()
	if *debugAddr != "" {
		go http.ListenAndServe(*debugAddr, nil)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	b := &bridge{app: *appURL, calls: map[string]*call{}}
	if err := b.run(ctx, *sipAddr, *httpAddr); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

type bridge struct {
	app string

	mu    sync.Mutex
	calls map[string]*call // by Call-ID

	framesToApp atomic.Int64
}

// call is one answered call: its RTP socket, its WebSocket and the bytes
// waiting in each direction.
type call struct {
	rtp    *net.UDPConn
	remote *net.UDPAddr
	ws     *websocket.Conn
	ptime  int // ms
	pt     uint8
	cancel context.CancelFunc

	mu         sync.Mutex
	toApp      []byte // carrier payloads, sent 160 bytes a frame
	toCarrier  []byte // app frames, sent ptime a packet
	nextFrame  time.Time
	nextPacket time.Time
	seq        uint16
	ts         uint32
	packet     []byte
}

func (b *bridge) run(ctx context.Context, sipAddr, httpAddr string) error {
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("nullbridge"))
	if err != nil {
		return err
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		return err
	}
	srv.OnInvite(b.onInvite)
	srv.OnAck(func(*gosip.Request, gosip.ServerTransaction) {})
	srv.OnBye(b.onBye)
	go b.clock(ctx)
	go func() {
		mux := http.NewServeMux()
		mux.HandleFunc("/metrics", b.metrics)
		mux.HandleFunc("/readyz", func(http.ResponseWriter, *http.Request) {})
		hs := &http.Server{Addr: httpAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { <-ctx.Done(); hs.Close() }()
		hs.ListenAndServe()
	}()
	return srv.ListenAndServe(ctx, "udp", sipAddr)
}

func (b *bridge) onInvite(req *gosip.Request, tx gosip.ServerTransaction) {
	reply := func(code int, reason string) {
		tx.Respond(gosip.NewResponseFromRequest(req, code, reason, nil))
	}
	offer, err := sip.ParseSDP(req.Body())
	if err != nil {
		reply(400, "Bad SDP")
		return
	}
	neg, err := sip.Negotiate(offer, sip.EncryptionOff)
	if err != nil {
		reply(488, "Not Acceptable Here")
		return
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		reply(503, "No Ports")
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	ws, _, err := websocket.Dial(ctx, b.app, nil)
	if err != nil {
		cancel()
		conn.Close()
		reply(502, "App Unreachable")
		return
	}
	now := time.Now()
	c := &call{rtp: conn, remote: net.UDPAddrFromAddrPort(neg.Remote), ws: ws, ptime: neg.PtimeMS, pt: neg.PayloadType,
		cancel: cancel, nextFrame: now.Add(20 * time.Millisecond), nextPacket: now.Add(20 * time.Millisecond),
		packet: make([]byte, 12+neg.PtimeMS*8)}
	b.mu.Lock()
	b.calls[req.CallID().Value()] = c
	b.mu.Unlock()
	go c.readRTP()
	go c.readApp(ctx)

	port := conn.LocalAddr().(*net.UDPAddr).Port
	body := sip.BuildAnswer(sip.AnswerSpec{SessionID: "1", Version: 1, Addr: netip.MustParseAddr("127.0.0.1"), Port: port, Media: neg})
	res := gosip.NewResponseFromRequest(req, 200, "OK", body)
	res.AppendHeader(gosip.NewHeader("Content-Type", "application/sdp"))
	res.AppendHeader(gosip.NewHeader("Contact", "<sip:nullbridge@"+req.Destination()+">"))
	tx.Respond(res)
}

func (b *bridge) onBye(req *gosip.Request, tx gosip.ServerTransaction) {
	b.mu.Lock()
	c := b.calls[req.CallID().Value()]
	delete(b.calls, req.CallID().Value())
	b.mu.Unlock()
	if c == nil {
		tx.Respond(gosip.NewResponseFromRequest(req, 481, "Call Does Not Exist", nil))
		return
	}
	c.cancel()
	c.rtp.Close()
	c.ws.CloseNow()
	tx.Respond(gosip.NewResponseFromRequest(req, 200, "OK", nil))
}

// readRTP queues each packet's payload for the app (header skipped, not
// parsed further).
func (c *call) readRTP() {
	buf := make([]byte, 1500)
	for {
		n, err := c.rtp.Read(buf)
		if err != nil {
			return
		}
		if n <= 12 || buf[1]&0x7f != c.pt {
			continue
		}
		c.mu.Lock()
		c.toApp = appendBounded(c.toApp, buf[12:n])
		c.mu.Unlock()
	}
}

// readApp queues each of the app's frames for the carrier.
func (c *call) readApp(ctx context.Context) {
	buf := make([]byte, 4096)
	for {
		_, r, err := c.ws.Reader(ctx)
		if err != nil {
			return
		}
		n, err := io.ReadFull(r, buf)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return
		}
		c.mu.Lock()
		c.toCarrier = appendBounded(c.toCarrier, buf[:n])
		c.mu.Unlock()
	}
}

func appendBounded(q, p []byte) []byte {
	if len(q)+len(p) > maxQueued {
		q = q[:copy(q, q[len(q)+len(p)-maxQueued:])]
	}
	return append(q, p...)
}

// clock serves every call every 10 ms, as the edge's media clock does: a
// frame to the app each 20 ms and a packet to the carrier each ptime.
func (b *bridge) clock(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	var due []*call
	frame := make([]byte, frameBytes)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due = due[:0]
			b.mu.Lock()
			for _, c := range b.calls {
				due = append(due, c)
			}
			b.mu.Unlock()
			for _, c := range due {
				if c.tick(ctx, now, frame) {
					b.framesToApp.Add(1)
				}
			}
		}
	}
}

// tick sends what is due; it reports whether a frame went to the app.
func (c *call) tick(ctx context.Context, now time.Time, frame []byte) (sentFrame bool) {
	c.mu.Lock()
	sendFrame := !now.Before(c.nextFrame) && len(c.toApp) >= frameBytes
	if !now.Before(c.nextFrame) {
		c.nextFrame = c.nextFrame.Add(20 * time.Millisecond)
	}
	if sendFrame {
		copy(frame, c.toApp)
		c.toApp = c.toApp[:copy(c.toApp, c.toApp[frameBytes:])]
	}
	sendPacket := false
	if !now.Before(c.nextPacket) {
		c.nextPacket = c.nextPacket.Add(time.Duration(c.ptime) * time.Millisecond)
		if n := len(c.packet) - 12; len(c.toCarrier) >= n {
			sendPacket = true
			c.packet[0], c.packet[1] = 0x80, c.pt
			binary.BigEndian.PutUint16(c.packet[2:], c.seq)
			binary.BigEndian.PutUint32(c.packet[4:], c.ts)
			binary.BigEndian.PutUint32(c.packet[8:], 0x6e756c6c)
			copy(c.packet[12:], c.toCarrier)
			c.toCarrier = c.toCarrier[:copy(c.toCarrier, c.toCarrier[n:])]
			c.seq++
			c.ts += uint32(n)
		}
	}
	c.mu.Unlock()
	if sendPacket {
		c.rtp.WriteToUDP(c.packet, c.remote)
	}
	if sendFrame {
		if c.ws.Write(ctx, websocket.MessageBinary, frame) == nil {
			return true
		}
	}
	return false
}

func (b *bridge) metrics(w http.ResponseWriter, _ *http.Request) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.mu.Lock()
	n := len(b.calls)
	b.mu.Unlock()
	fmt.Fprintf(w, "trunkgate_channels_in_use %d\ngo_goroutines %d\ngo_memstats_heap_inuse_bytes %d\n", n, runtime.NumGoroutine(), ms.HeapInuse)
	fmt.Fprintf(w, "trunkgate_app_frames_sent_total %d\ntrunkgate_app_frames_dropped_total 0\ntrunkgate_rtp_packets_lost_total 0\n", b.framesToApp.Load())
}
