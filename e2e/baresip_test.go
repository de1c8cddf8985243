package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Baresip is one run of baresip (Debian's baresip-core, 1.0.0) as a
// carrier's phone: it dials one call over SIP (TLS when the URI says so),
// plays wav as its microphone, records what it hears, and hangs up when
// the file ends. It is an independent SIP and SRTP implementation (libre,
// libsrtp-free SRTP of its own) for the edge to meet.
type Baresip struct {
	// SRTP makes SRTP mandatory (mediaenc=srtp-mand, SDES).
	SRTP bool
	// ClientCert is a PEM file holding a certificate and then its key,
	// presented for mutual TLS.
	ClientCert string
	// Seconds is how long the tone plays (the call's length).
	Seconds int
	// Freq is the tone's frequency.
	Freq float64
	// G722 makes G.722 the only codec baresip offers (its g722 module,
	// spandsp's codec): the tone is played at 16 kHz.
	G722 bool
}

// BaresipRun is what a finished run left behind.
type BaresipRun struct {
	Log string
	// Heard is what baresip decoded from the edge, mono at HeardRate
	// (8 kHz, 16 kHz for G.722).
	Heard     []float64
	HeardRate int
}

// BaresipCall is a baresip run under way.
type BaresipCall struct {
	rec    string
	out    *lockedBuffer
	done   chan struct{}
	cancel context.CancelFunc
}

// Start dials uri; Wait waits for baresip to finish (it quits a few
// seconds after the file ends). baresip exits 0 whatever happened to the
// call, so the caller judges by the log and the recording.
func (b Baresip) Start(t *testing.T, uri string) *BaresipCall {
	t.Helper()
	if _, err := exec.LookPath("baresip"); err != nil {
		t.Fatal("baresip is not installed: run make deps (Debian package baresip-core)")
	}
	dir := t.TempDir()
	wav := filepath.Join(dir, "tone.wav")
	rate, codecs, codecModule := 8000, "PCMU,PCMA", "g711.so"
	if b.G722 {
		rate, codecs, codecModule = 16000, "G722", "g722.so"
	}
	writeToneWAVAt(t, wav, b.Freq, b.Seconds, rate)
	rec := filepath.Join(dir, "rec")
	if err := os.Mkdir(rec, 0o755); err != nil {
		t.Fatal(err)
	}
	config := strings.Join([]string{
		"poll_method epoll", "net_interface 127.0.0.1", "sip_listen 127.0.0.1:0",
		"call_local_timeout 30", "call_max_calls 1",
		"audio_player aubridge,nil", "audio_source aufile," + wav, "audio_alert aubridge,nil", "audio_level no",
		"rtcp_mux no", "rtp_stats yes", "module_path /usr/lib/baresip/modules",
		"module " + codecModule, "module aufile.so", "module aubridge.so", "module sndfile.so", "module srtp.so",
		"module_tmp account.so", "module_app menu.so", "snd_path " + rec,
	}, "\n") + "\n"
	if b.ClientCert != "" {
		config += "sip_certificate " + b.ClientCert + "\n"
	}
	account := "<sip:carrier@127.0.0.1>;regint=0;audio_codecs=" + codecs + ";answermode=manual"
	if b.SRTP {
		account += ";mediaenc=srtp-mand"
	}
	for name, body := range map[string]string{"config": config, "accounts": account + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// -t quits a little after the file ends and baresip hangs up; the
	// context is the backstop for a handshake that never completes.
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(b.Seconds+20)*time.Second)
	cmd := exec.CommandContext(ctx, "baresip", "-f", dir, "-s", "-t", fmt.Sprint(b.Seconds+3), "-e", "/dial "+uri)
	c := &BaresipCall{rec: rec, out: &lockedBuffer{}, done: make(chan struct{}), cancel: cancel}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

// Wait waits for baresip to exit and reads its recording.
func (c *BaresipCall) Wait(t *testing.T) BaresipRun {
	t.Helper()
	<-c.done
	run := BaresipRun{Log: c.out.String()}
	if heard, _ := filepath.Glob(filepath.Join(c.rec, "*-dec.wav")); len(heard) == 1 {
		run.Heard, run.HeardRate = readWAVAt(t, heard[0])
	}
	return run
}

// Tail is the end of baresip's log, for a failing test.
func (r BaresipRun) Tail() string { return tail(r.Log, 80) }

// writeToneWAV writes seconds of a sine at freq, 8 kHz 16-bit mono PCM.
func writeToneWAV(t *testing.T, path string, freq float64, seconds int) {
	t.Helper()
	writeToneWAVAt(t, path, freq, seconds, 8000)
}

// writeToneWAVAt writes seconds of a sine at freq, 16-bit mono PCM at rate.
func writeToneWAVAt(t *testing.T, path string, freq float64, seconds, rate int) {
	t.Helper()
	n := rate * seconds
	b := make([]byte, 44+2*n)
	copy(b, "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+2*n))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], 1) // PCM
	binary.LittleEndian.PutUint16(b[22:], 1) // mono
	binary.LittleEndian.PutUint32(b[24:], uint32(rate))
	binary.LittleEndian.PutUint32(b[28:], uint32(2*rate))
	binary.LittleEndian.PutUint16(b[32:], 2)
	binary.LittleEndian.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(2*n))
	for i := range n {
		v := int16(12000 * math.Sin(2*math.Pi*freq*float64(i)/float64(rate)))
		binary.LittleEndian.PutUint16(b[44+2*i:], uint16(v))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readWAV reads the samples of a 16-bit PCM WAV file, walking its chunks.
func readWAV(t *testing.T, path string) []float64 {
	t.Helper()
	x, _ := readWAVAt(t, path)
	return x
}

// readWAVAt reads the samples and the sample rate of a 16-bit PCM WAV file.
func readWAVAt(t *testing.T, path string) ([]float64, int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 12 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		t.Fatalf("%s: not a WAV file", path)
	}
	rate := 8000
	for off := 12; off+8 <= len(b); {
		id, size := string(b[off:off+4]), int(binary.LittleEndian.Uint32(b[off+4:]))
		off += 8
		if id == "fmt " && off+8 <= len(b) {
			rate = int(binary.LittleEndian.Uint32(b[off+4:]))
		}
		if id == "data" {
			data := b[off:min(off+size, len(b))]
			x := make([]float64, len(data)/2)
			for i := range x {
				x[i] = float64(int16(binary.LittleEndian.Uint16(data[2*i:])))
			}
			return x, rate
		}
		off += size + size%2
	}
	t.Fatal(errors.New(path + ": no data chunk"))
	return nil, 0
}

// toneSeconds counts the 20 ms frames of x (8 kHz) at freq (loud, and
// most of their energy at freq), in seconds.
func toneSeconds(x []float64, freq float64) float64 { return toneSecondsAt(x, freq, 8000) }

// toneSecondsAt is toneSeconds for audio at rate.
func toneSecondsAt(x []float64, freq float64, rate int) float64 {
	n, frame := 0, rate/50
	for i := 0; i+frame <= len(x); i += frame {
		f := x[i : i+frame]
		if rms(f) > 1000 && toneShare(f, freq, float64(rate)) > 0.8 {
			n++
		}
	}
	return float64(n) * 0.02
}
