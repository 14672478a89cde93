package testkit

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Redis is a redis-server process a test started (StartRedis): a real
// server on a free loopback port, keeping nothing on disk, killed when the
// test ends.
type Redis struct {
	// Addr is "127.0.0.1:port"; URL is "redis://127.0.0.1:port/0".
	Addr, URL string

	t       testing.TB
	bin     string
	dir     string
	cluster bool      // a one-node Redis Cluster holding every slot
	cmd     *exec.Cmd // nil while stopped
}

// redisStartTimeout bounds how long a fresh redis-server takes to answer
// PING: it starts in milliseconds; 10 s covers a machine under load.
const redisStartTimeout = 10 * time.Second

// StartRedis starts redis-server on a free port of 127.0.0.1, in
// t.TempDir(), without persistence (--save "" --appendonly no), and stops
// it at the test's end. A missing redis-server fails the test with how to
// install it.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	return startRedis(t, false)
}

// StartRedisCluster is StartRedis in Redis Cluster mode: one node that
// holds all 16384 slots, for clients in cluster mode (MOVED/ASK handling,
// keys of one slot in a script). Its slots survive Stop and Start (the
// cluster's node file stays in its directory), its data does not.
func StartRedisCluster(t testing.TB) *Redis {
	t.Helper()
	return startRedis(t, true)
}

func startRedis(t testing.TB, cluster bool) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is required for this test (%v): apt-get install redis-server", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	r := &Redis{Addr: addr, URL: "redis://" + addr + "/0", t: t, bin: bin, dir: t.TempDir(), cluster: cluster}
	t.Cleanup(r.Stop)
	r.Start()
	return r
}

// Start starts the server again after Stop, on the same port and empty
// (as a restarted server without persistence is). It fails the test if the
// server does not answer PING within redisStartTimeout.
func (r *Redis) Start() {
	r.t.Helper()
	if r.cmd != nil {
		r.t.Fatalf("redis-server on %s is already running", r.Addr)
	}
	_, port, _ := net.SplitHostPort(r.Addr)
	cmd := exec.Command(r.bin, "--port", port, "--bind", "127.0.0.1", "--dir", r.dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning")
	if r.cluster {
		cmd.Args = append(cmd.Args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(redisStartTimeout)
	for {
		err := r.ping()
		if err == nil && r.cluster {
			err = r.clusterReady()
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.Stop()
			r.t.Fatalf("redis-server on %s did not answer PING within %v: %v; its output:\n%s", r.Addr, redisStartTimeout, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: as a crash, nothing is saved) and waits
// for it to exit. Safe to call when it is stopped.
func (r *Redis) Stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// ping sends PING and expects +PONG.
func (r *Redis) ping() error {
	line, _, err := r.command("PING")
	if err == nil && line != "+PONG" {
		err = fmt.Errorf("PING answered %q", line)
	}
	return err
}

// clusterReady gives the node every slot (an error once it has them:
// after a restart) and reports whether the cluster's state is ok.
func (r *Redis) clusterReady() error {
	if _, _, err := r.command("CLUSTER ADDSLOTSRANGE 0 16383"); err != nil {
		return err
	}
	_, body, err := r.command("CLUSTER INFO")
	if err == nil && !strings.Contains(body, "cluster_state:ok") {
		err = fmt.Errorf("cluster not ready: %q", body)
	}
	return err
}

// command sends one inline command and reads its answer: the first line
// and, for a bulk string ($n), its body.
func (r *Redis) command(cmd string) (line, body string, err error) {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		return "", "", err
	}
	br := bufio.NewReader(c)
	line, err = br.ReadString('\n')
	line = strings.TrimSuffix(line, "\r\n")
	if err != nil || !strings.HasPrefix(line, "$") {
		return line, "", err
	}
	var n int
	if _, err := fmt.Sscanf(line, "$%d", &n); err != nil || n < 0 || n > 1<<20 {
		return line, "", fmt.Errorf("%s answered %q", cmd, line)
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(br, b); err != nil {
		return line, "", err
	}
	return line, string(b[:n]), nil
}

// Sentinel is a redis-sentinel process a test started (StartSentinel),
// monitoring one master, killed when the test ends.
type Sentinel struct {
	// Addr is "127.0.0.1:port"; Master is the name the master is
	// monitored under (the client's redis_master).
	Addr, Master string
}

// StartSentinel starts redis-sentinel on a free port of 127.0.0.1
// monitoring master under the name master (quorum 1), and waits until it
// answers with the master's address. A missing redis-sentinel fails the
// test with how to install it.
func StartSentinel(t testing.TB, master *Redis, name string) *Sentinel {
	t.Helper()
	bin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		t.Fatalf("redis-sentinel is required for this test (%v): apt-get install redis-sentinel", err)
	}
	port := FreeTCPPort(t)
	host, mport, _ := net.SplitHostPort(master.Addr)
	dir := t.TempDir()
	// Sentinel rewrites its config file: it must be its own, writable.
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nsentinel monitor %s %s %s 1\n", port, dir, name, host, mport)
	file := dir + "/sentinel.conf"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd := exec.Command(bin, file, "--loglevel", "warning")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-sentinel: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	s := &Sentinel{Addr: fmt.Sprintf("127.0.0.1:%d", port), Master: name}
	probe := &Redis{Addr: s.Addr, t: t}
	deadline := time.Now().Add(redisStartTimeout)
	for {
		// The master's address as the sentinel reports it: a multi-bulk
		// reply, whose first line is enough to know it knows the master.
		line, _, err := probe.command("SENTINEL get-master-addr-by-name " + name)
		if err == nil && line == "*2" {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-sentinel on %s did not report master %q within %v (%q, %v); its output:\n%s", s.Addr, name, redisStartTimeout, line, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
