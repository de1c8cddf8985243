package sandbox

import (
	"errors"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"

	"trunkgate/media"
	"trunkgate/sip"
)

// callMedia is one sandbox call's RTP: it sends back every packet the
// edge sends (echo), or plays a 1 kHz tone paced at 20 ms and ignores
// what comes in.
type callMedia struct {
	conn   *net.UDPConn
	codec  media.Codec
	remote netip.AddrPort // from the edge's SDP, until its packets arrive
	tone   bool

	lastRx  atomic.Int64 // unix ns of the last packet from the edge
	quiet   chan struct{}
	stop    chan struct{}
	done    sync.WaitGroup
	closeMu sync.Once
}

func newMedia(ip netip.Addr, neg sip.Negotiated, tone bool) (*callMedia, error) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return nil, err
	}
	m := &callMedia{conn: conn, codec: media.Codec{Name: neg.Codec, PayloadType: neg.PayloadType}, remote: neg.Remote,
		tone: tone, quiet: make(chan struct{}), stop: make(chan struct{})}
	m.lastRx.Store(time.Now().UnixNano())
	return m, nil
}

func (m *callMedia) port() int { return m.conn.LocalAddr().(*net.UDPAddr).Port }

// silent closes when the edge has sent nothing for defaultRTPTimeout.
func (m *callMedia) silent() <-chan struct{} { return m.quiet }

func (m *callMedia) run() {
	m.done.Add(2)
	go m.read()
	go m.watch()
	if m.tone {
		m.done.Add(1)
		go m.play()
	}
}

// read echoes (or, for a tone call, drops) the edge's packets.
func (m *callMedia) read() {
	defer m.done.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := m.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m.lastRx.Store(time.Now().UnixNano())
		if !m.tone {
			_, _ = m.conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}
}

func (m *callMedia) watch() {
	defer m.done.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			if time.Since(time.Unix(0, m.lastRx.Load())) > defaultRTPTimeout {
				close(m.quiet)
				return
			}
		}
	}
}

// play sends a 1 kHz tone at -6 dBFS, one 20 ms packet per tick.
func (m *callMedia) play() {
	defer m.done.Done()
	var (
		pcm     [media.FrameSamples]int16
		payload = make([]byte, media.FrameSamples)
		wire    = make([]byte, 12+media.FrameSamples)
		pkt     = rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: m.codec.PayloadType, SSRC: 0x5a4db0c5, Marker: true}}
		phase   float64
	)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		for i := range pcm {
			pcm[i] = int16(16000 * math.Sin(phase))
			phase += 2 * math.Pi * 1000 / media.ClockRate
		}
		phase = math.Mod(phase, 2*math.Pi)
		m.codec.Encode(payload, pcm[:])
		pkt.Payload = payload
		n, err := pkt.MarshalTo(wire)
		if err == nil && m.remote.IsValid() {
			_, _ = m.conn.WriteToUDPAddrPort(wire[:n], m.remote)
		}
		pkt.Marker = false
		pkt.SequenceNumber++
		pkt.Timestamp += media.FrameSamples
	}
}

func (m *callMedia) close() {
	m.closeMu.Do(func() {
		close(m.stop)
		m.conn.Close()
		m.done.Wait()
	})
}
