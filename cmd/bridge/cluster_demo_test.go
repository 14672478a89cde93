package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// demoPorts is how many ports above its PORT_BASE packaging/cluster-demo.sh
// uses: redis-server's, then 10 per node (3 nodes, 4 ports each).
const demoPorts = 34

// demoPortBase picks a PORT_BASE below Linux's ephemeral range whose
// ports the script uses are free now, TCP and UDP.
func demoPortBase(t *testing.T) int {
	t.Helper()
	free := func(base int) bool {
		var held []io.Closer
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for p := base; p <= base+demoPorts; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				return false
			}
			held = append(held, l)
			u, err := net.ListenPacket("udp", fmt.Sprintf(":%d", p))
			if err != nil {
				return false
			}
			held = append(held, u)
		}
		return true
	}
	for range 50 {
		if base := 20000 + 100*rand.IntN(120); free(base) {
			return base
		}
	}
	t.Fatal("no free block of ports in 20000-31999 for the demo cluster")
	return 0
}

// TestClusterDemoScript runs packaging/cluster-demo.sh (docs/cluster.md's
// three nodes and Redis on loopback) with the bridge built from this tree:
// once it says the cluster is ready, ffmpeg publishes on node a and a WHEP
// viewer's POST on node b is answered 201 (a relay from a); SIGTERM stops
// the script, which stops every process it started: it exits 0 and node
// a's HTTP port is closed. The node config of packaging/cluster-compose.yml
// (not run: no Docker engine here) passes bridge -check.
func TestClusterDemoScript(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not found: install it with `apt-get install redis-server` (packaging/setup.sh does)")
	}
	bin := buildBinary(t)
	base := demoPortBase(t)
	script := exec.Command("bash", "../../packaging/cluster-demo.sh", bin)
	script.Env = append(script.Environ(), fmt.Sprintf("PORT_BASE=%d", base), "WORKDIR="+t.TempDir())
	script.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := script.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	script.Stderr = &stderr
	if err := script.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		exited <- script.Wait()
	}()
	t.Cleanup(func() { _ = syscall.Kill(-script.Process.Pid, syscall.SIGKILL) }) // its group, if the test failed midway

	timeout := time.After(60 * time.Second)
	for ready := false; !ready; {
		select {
		case l := <-lines:
			ready = strings.HasPrefix(l, "cluster ready:")
		case err := <-exited:
			t.Fatalf("cluster-demo.sh exited (%v) before the cluster was ready:\n%s", err, stderr.String())
		case <-timeout:
			t.Fatalf("cluster-demo.sh did not say the cluster was ready within 60 s:\n%s", stderr.String())
		}
	}

	publish(t, "h264-aac.flv", fmt.Sprintf("rtmp://127.0.0.1:%d/live/demo", base+11))
	onB := fmt.Sprintf("http://127.0.0.1:%d/whep/live/demo", base+20)
	began := time.Now()
	waitFor(t, 30*time.Second, "a 201 for a WHEP viewer on node b", func() bool {
		status, _, _ := postOffer(t, noRedirects, onB, nil)
		return status == http.StatusCreated
	})
	t.Logf("WHEP POST on b answered 201 %v after the publisher started", time.Since(began).Round(time.Millisecond))

	t.Run("compose config", func(t *testing.T) { checkComposeConfig(t, bin) })

	if err := syscall.Kill(script.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("cluster-demo.sh after SIGTERM: %v, want exit 0:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cluster-demo.sh did not stop within 30 s of SIGTERM")
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", base+10), time.Second); err == nil {
		c.Close()
		t.Error("node a still listens after the script stopped")
	}
}

// checkComposeConfig runs bin -check on the node config of
// packaging/cluster-compose.yml, as Compose hands it to node a: "$$"
// unescaped to "$", the bridge expanding ${NAME} from node a's
// environment.
func checkComposeConfig(t *testing.T, bin string) {
	raw, err := os.ReadFile("../../packaging/cluster-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Configs map[string]struct {
			Content string `yaml:"content"`
		} `yaml:"configs"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("cluster-compose.yml: %v", err)
	}
	content := compose.Configs["node"].Content
	if content == "" {
		t.Fatal("cluster-compose.yml has no configs.node.content")
	}
	file := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(content, "$$", "$")), 0o600); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(bin, "-check", "-config", file)
	check.Env = append(check.Environ(), "NODE_NAME=a", "PUBLIC_URL=http://203.0.113.7:8081", "PUBLIC_IP=203.0.113.7",
		"CLUSTER_TOKEN=compose-example-token-0123456789", "WEBRTC_PORT=8189")
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("bridge -check on cluster-compose.yml's node config: %v\n%s", err, out)
	}
}
