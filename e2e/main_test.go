// Package e2e drives the real trunkgate binary over loopback: SIPp is the
// carrier, a Go WebSocket server is the AI application, Go UDP sockets are
// RTP peers where a test must measure the audio itself, and the REST API
// and CLI are the operator.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"trunkgate/internal/sqldb/sqldbtest"
)

var (
	edgeBinary string // the trunkgate binary under test
	repoRoot   string
	tmpDir     string

	timingBinaryOnce sync.Once
	timingBinary     string
	timingBinaryErr  error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Dir(filepath.Dir(file))
	dir, err := os.MkdirTemp("", "trunkgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	defer sqldbtest.Stop()
	tmpDir = dir
	edgeBinary = filepath.Join(dir, "trunkgate")
	if err := buildEdge(edgeBinary, raceEnabled); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building trunkgate:", err)
		return 1
	}
	if _, err := exec.LookPath("sipp"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: sipp not found; `make test` installs it (Debian package sip-tester)")
		return 1
	}
	return m.Run()
}

func buildEdge(out string, race bool) error {
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/trunkgate")
	build := exec.Command("go", args...)
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	return build.Run()
}

// timingEdgeBinary is trunkgate as it ships, without the race detector.
// Tests that measure time on the wire (pacing, latency) run it: race
// instrumentation slows the edge several times over and, on two cores,
// delays its media clock by milliseconds, which is the detector's cost,
// not the edge's. Every other test runs the race build.
func timingEdgeBinary(t *testing.T) string {
	t.Helper()
	if !raceEnabled {
		return edgeBinary
	}
	timingBinaryOnce.Do(func() {
		timingBinary = filepath.Join(tmpDir, "trunkgate-norace")
		timingBinaryErr = buildEdge(timingBinary, false)
	})
	if timingBinaryErr != nil {
		t.Fatalf("building trunkgate without -race: %v", timingBinaryErr)
	}
	return timingBinary
}
