package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"trunkgate/keys"
)

// TestScalingOutDeployment runs the README's "Scaling out" walk-through:
// deploy/cluster.sh starts PostgreSQL, the echo app, two edges and the
// Kamailio dispatcher; calls to the balancer are spread over both edges;
// with one edge killed, every call goes to the other.
func TestScalingOutDeployment(t *testing.T) {
	state := t.TempDir()
	ports := map[string]int{}
	for _, name := range []string{"LB_PORT", "EDGE_A_SIP", "EDGE_B_SIP", "EDGE_A_HTTP", "EDGE_B_HTTP", "PG_PORT", "APP"} {
		ports[name] = freePort(t)
	}
	aLo, aHi := rtpRange(t)
	bLo, bHi := rtpRange(t)
	script := exec.Command(filepathFromRoot("deploy/cluster.sh"))
	script.Env = append(os.Environ(), "STATE="+state, "TRUNKGATE_BIN="+edgeBinary, "NODE_TIMEOUT=2s",
		fmt.Sprintf("LB_PORT=%d", ports["LB_PORT"]), fmt.Sprintf("EDGE_A_SIP=%d", ports["EDGE_A_SIP"]),
		fmt.Sprintf("EDGE_B_SIP=%d", ports["EDGE_B_SIP"]), fmt.Sprintf("EDGE_A_HTTP=%d", ports["EDGE_A_HTTP"]),
		fmt.Sprintf("EDGE_B_HTTP=%d", ports["EDGE_B_HTTP"]), fmt.Sprintf("PG_PORT=%d", ports["PG_PORT"]),
		fmt.Sprintf("APP_ADDR=127.0.0.1:%d", ports["APP"]),
		fmt.Sprintf("EDGE_A_RTP=%d-%d", aLo, aHi), fmt.Sprintf("EDGE_B_RTP=%d-%d", bLo, bHi))
	out := &lockedBuffer{}
	script.Stdout, script.Stderr = out, out
	if err := script.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- script.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		script.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			script.Process.Kill()
			t.Errorf("deploy/cluster.sh did not stop on SIGTERM")
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("deploy/cluster.sh:\n%s", tail(out.String(), 40))
			for _, f := range []string{"edge-a.log", "edge-b.log", "kamailio.log"} {
				b, _ := os.ReadFile(filepath.Join(state, f))
				t.Logf("%s:\n%s", f, tail(string(b), 30))
			}
		}
	})
	waitFor(t, 60*time.Second, "deploy/cluster.sh to come up", func() bool {
		_, err := os.Stat(filepath.Join(state, "ready"))
		return err == nil
	})
	admin, _ := os.ReadFile(filepath.Join(state, "admin-key"))
	keyID, _ := os.ReadFile(filepath.Join(state, "key-id"))
	edgeB := &Edge{t: t, HTTP: fmt.Sprintf("http://127.0.0.1:%d", ports["EDGE_B_HTTP"]), AdminKey: strings.TrimSpace(string(admin))}
	key := strings.TrimSpace(string(keyID))

	scenario, err := filepath.Abs(filepathFromRoot("testdata/sipp/uac_demo.xml"))
	if err != nil {
		t.Fatal(err)
	}
	calls := func(n int) {
		t.Helper()
		sipPort, mediaPort := sippPorts(t)
		dir := t.TempDir()
		cmd := exec.Command("sipp", fmt.Sprintf("127.0.0.1:%d", ports["LB_PORT"]), "-sf", scenario,
			"-s", "+15550100", "-m", strconv.Itoa(n), "-r", "4", "-d", "300", "-i", "127.0.0.1", "-p", strconv.Itoa(sipPort),
			"-mi", "127.0.0.1", "-mp", strconv.Itoa(mediaPort), "-nostdin", "-timeout", "60s", "-timeout_error")
		cmd.Dir = dir
		var screen bytes.Buffer
		cmd.Stdout, cmd.Stderr = &screen, &screen
		if err := cmd.Run(); err != nil {
			t.Fatalf("SIPp through the balancer: %v\n%s", err, tail(screen.String(), 30))
		}
	}
	byNode := func() map[string]int {
		out := map[string]int{}
		for _, c := range edgeB.CDRs(key) {
			if c.FinalCode == 200 && c.HangupCause == "caller hung up" {
				out[c.Node]++
			}
		}
		return out
	}
	calls(6)
	waitFor(t, 5*time.Second, "six CDRs", func() bool { n := byNode(); return n["edge-a"]+n["edge-b"] == 6 })
	if n := byNode(); n["edge-a"] != 3 || n["edge-b"] != 3 {
		t.Fatalf("calls by node %v, want 3 on each edge (round robin)", n)
	}
	// A key's call rate is the cluster's: Kamailio does not retry a call
	// an edge refused for it on the other edge (it would be refused there
	// too, at twice the cost).
	edgeA := &Edge{t: t, HTTP: fmt.Sprintf("http://127.0.0.1:%d", ports["EDGE_A_HTTP"]), AdminKey: edgeB.AdminKey}
	edgeB.MustAPI(200, "PATCH", "/v1/keys/"+key+"/limits", map[string]any{"cps": 1}, nil)
	waitFor(t, 2*time.Second, "cps 1 on edge A", func() bool {
		var kv struct{ Limits keys.Limits }
		edgeA.MustAPI(200, "GET", "/v1/keys/"+key, nil, &kv)
		return kv.Limits.CPS == 1
	})
	// (The balancer passes the edges' 503 on as 500, as RFC 3261 §16.7
	// tells a proxy to.)
	rateRun := startEither(t, &Edge{SIPPort: ports["LB_PORT"]}, "+15550100", 6, 20, 100)
	outcomes := rateRun.outcomes(t)
	refusedRate := refusals(key, "call_rate", edgeA, edgeB)
	t.Logf("cps 1 through the balancer: %v; call_rate refusals on the edges: %v", outcomes, refusedRate)
	if outcomes[500] == 0 || outcomes[200]+outcomes[500] != 6 || refusedRate != float64(outcomes[500]) {
		t.Fatalf("outcomes %v, %v call_rate refusals counted by the edges: want every refused call refused once (no retry on the other edge)",
			outcomes, refusedRate)
	}
	edgeB.MustAPI(200, "PATCH", "/v1/keys/"+key+"/limits", map[string]any{"cps": 0}, nil)

	before := byNode()
	pid, _ := os.ReadFile(filepath.Join(state, "edge-a.pid"))
	p, _ := strconv.Atoi(strings.TrimSpace(string(pid)))
	if err := syscall.Kill(p, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	calls(4)
	t.Logf("edge-a killed: 4 calls through the balancer took %v (the first waits 2 s for edge-a, then it is marked down)",
		time.Since(start).Round(time.Millisecond))
	total := before["edge-a"] + before["edge-b"]
	waitFor(t, 5*time.Second, "four more CDRs", func() bool { n := byNode(); return n["edge-a"]+n["edge-b"] == total+4 })
	if n := byNode(); n["edge-b"] != before["edge-b"]+4 {
		t.Fatalf("calls by node %v after edge-a died (before: %v), want the 4 new ones on edge-b", n, before)
	}
	stop()
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports["PG_PORT"])); err == nil {
		c.Close()
		t.Errorf("PostgreSQL still running after the script stopped")
	}
	if _, err := os.Stat(filepath.Join(state, "kamailio.pid")); err == nil {
		if b, _ := os.ReadFile(filepath.Join(state, "kamailio.pid")); len(b) > 0 {
			kp, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if syscall.Kill(kp, 0) == nil {
				t.Errorf("Kamailio still running after the script stopped")
			}
		}
	}
}
