package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wishbridge/bridge/cluster"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// clusterBenchEnv runs TestClusterNumbers: BENCH_CLUSTER=N takes each p50
// over N runs (make bench: 10).
const clusterBenchEnv = "BENCH_CLUSTER"

// benchClusterToken is the node-to-node credential of the benchmark.
const benchClusterToken = "bench-cluster-token-0123456789"

// TestClusterNumbers is a benchmark, skipped unless BENCH_CLUSTER=N: the
// cluster's numbers of issue 16, on this machine, with the default
// heartbeat (config.DefaultClusterHeartbeat), so the failover times are
// those an operator gets. Node A, the origin, is a bridge process (its CPU
// and bytes are its own, read from /proc and its metrics); the edges B and
// C run in the test's process; ffmpeg publishes over RTMP on A. It logs
// and prints:
//
//   - relay setup: N times, a WHEP viewer joins on B a stream A owns while
//     B has no relay of it (B finds A through Redis): the time from its
//     POST to its first whole frame;
//   - origin cost: with the publisher alone, then with 10 and 100 WHEP
//     viewers per edge (cmd/loadtest: pion viewers reading RTP without
//     decoding), A's CPU and the bytes it sends (relay bytes from
//     bridge_relay_bytes_total, and every byte it wrote to sockets and
//     files, /proc/PID/io wchar) over 15 s, its relays (one per edge),
//     and the registry's traffic per node (Redis's INFO stats);
//   - Redis restarted (empty): N times, the time from Redis answering again
//     to every node's registration and A's claim being back;
//   - a node killed: N times, a bridge process publishing a stream (a
//     claim) and running an always-on pull (a lease) is killed with
//     SIGKILL: the time until its registration expires, its claim is free
//     for a publisher at another node, and another node pulls.
func TestClusterNumbers(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv(clusterBenchEnv))
	if runs <= 0 {
		t.Skip("a benchmark: set " + clusterBenchEnv + "=N runs (make bench)")
	}
	needFFmpeg(t)
	r := testkit.StartRedis(t)
	bin := buildBinary(t)
	a := startClusterProcess(t, bin, r, "a", "")
	b, c := startBenchEdge(t, r, "b"), startBenchEdge(t, r, "c")
	publish(t, "h264-aac.flv", "rtmp://"+a.rtmp+"/live/bench")
	waitFor(t, 30*time.Second, "B's registry naming A the owner of live/bench", func() bool { return ownerOf(b, "live/bench") == "a" })

	var summary []string
	report := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		t.Log(line)
		summary = append(summary, line)
	}
	t.Cleanup(func() {
		fmt.Printf("cluster numbers (%s=%d):\n  %s\n", clusterBenchEnv, runs, strings.Join(summary, "\n  "))
	})

	first := benchRelaySetup(t, b, runs)
	report("relay setup: first frame at an edge's WHEP viewer of a stream owned elsewhere p50 %v max %v over %d runs", p50(first), slices.Max(first).Round(time.Millisecond), runs)

	lt := buildLoadtest(t)
	for _, n := range []int{0, 10, 100} {
		report("%s", benchOriginCost(t, a, []*Bridge{b, c}, r, lt, n))
	}

	back := benchRedisRestart(t, r, b, 3, runs)
	report("Redis restarted (empty): registrations and claims back p50 %v max %v after it answered, over %d runs (heartbeat %v)",
		p50(back), slices.Max(back).Round(time.Millisecond), runs, config.DefaultClusterHeartbeat)

	expired, free, pulled := benchNodeKilled(t, bin, r, a, b, runs)
	report("node killed (SIGKILL), over %d runs (TTL %v): registration expired p50 %v max %v; claim free for another node's publisher p50 %v max %v; pull taken over p50 %v max %v",
		runs, config.ClusterExpiryHeartbeats*config.DefaultClusterHeartbeat,
		p50(expired), slices.Max(expired).Round(time.Millisecond), p50(free), slices.Max(free).Round(time.Millisecond),
		p50(pulled), slices.Max(pulled).Round(time.Millisecond))
}

// startClusterProcess runs the bridge binary as cluster node name on r
// (relay mode, default heartbeat, metrics on, every path published and
// read) with extraRoutes (YAML list items) before the catch-all route.
func startClusterProcess(t *testing.T, bin string, r *testkit.Redis, name, extraRoutes string) *bridgeProcess {
	t.Helper()
	p := newProcess(t)
	p.rewrite(t, fmt.Sprintf(`cluster:
  redis: %q
  node: %s
  public_url: "http://%s"
  token: %q
metrics:
  enabled: true
routes:
%s  - path: "{path...}"
`, r.URL, name, p.http, benchClusterToken, extraRoutes))
	p.start(t, bin, nil)
	return p
}

// startBenchEdge runs cluster node name on r in this process: relay mode,
// default heartbeat, the viewer limits raised for a load from one address
// (as cmd/loadtest/bench.sh does), routes without grace (a relayed stream
// leaves the edge with its last viewer), warnings logged only.
func startBenchEdge(t *testing.T, r *testkit.Redis, name string) *Bridge {
	t.Helper()
	cfg := config.Default()
	public := clusterListen(t, cfg)
	cfg.Cluster = config.Cluster{Redis: r.URL, Node: name, PublicURL: public, Token: benchClusterToken}
	cfg.Metrics.Enabled = true
	cfg.Limits.WebRTCSessions, cfg.Limits.WebRTCSessionsPerAddress = 10000, 10000
	cfg.Limits.WebRTCPending, cfg.Limits.WebRTCPendingPerAddress = 2000, 2000
	cfg.Limits.ReadersPerStream = 10000
	for i := range cfg.Routes {
		cfg.Routes[i].Grace = noGrace()
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return startListeningWith(t, cfg, Options{IncludeLoopback: true}, log)
}

// benchRelaySetup measures, runs times, the time from a WHEP POST on edge
// to the viewer's first whole frame, edge having no relay of the stream.
func benchRelaySetup(t *testing.T, edge *Bridge, runs int) []time.Duration {
	t.Helper()
	api := newViewerAPI(t)
	var first []time.Duration
	for range runs {
		waitFor(t, 30*time.Second, "the edge's previous relay to end", func() bool {
			_, ok := edge.registry.Get("live/bench")
			return !ok && edge.relays.Stats().In == 0
		})
		start := time.Now()
		v := joinURL(t, noRedirects, api, whepURL(edge, "live/bench"), nil)
		v.waitFrames(t, 1, 20*time.Second)
		first = append(first, v.frames()[0].at.Sub(start))
		deleteViewer(t, v)
	}
	return first
}

// loadtestResult is what TestClusterNumbers reads of cmd/loadtest's JSON.
type loadtestResult struct {
	Connected int     `json:"connected"`
	Failed    int     `json:"failed"`
	FPSAvg    float64 `json:"video_fps_per_viewer_avg"`
	Kbps      float64 `json:"bitrate_kbps_per_viewer_avg"`
}

// buildLoadtest builds cmd/loadtest into the test's temporary directory.
func buildLoadtest(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "loadtest")
	if out, err := exec.Command("go", "build", "-o", bin, "../loadtest").CombinedOutput(); err != nil {
		t.Fatalf("go build ../loadtest: %v\n%s", err, out)
	}
	return bin
}

// originWindow is how long the origin's CPU and bytes are read at full
// load: 15 s of a 30 fps source averages out its GOPs (2 s).
const originWindow = 15 * time.Second

// benchOriginCost opens n loadtest viewers on each edge (none for n 0),
// waits until they have joined, and reads the origin's CPU and bytes over
// originWindow; it returns the line to report.
func benchOriginCost(t *testing.T, origin *bridgeProcess, edges []*Bridge, r *testkit.Redis, lt string, n int) string {
	t.Helper()
	type run struct {
		cmd  *exec.Cmd
		out  bytes.Buffer
		json string
	}
	var lts []*run
	for i, e := range edges {
		if n == 0 {
			break
		}
		l := &run{json: filepath.Join(t.TempDir(), fmt.Sprintf("edge%d.json", i))}
		// Loopback candidates only: every packet stays on this machine.
		l.cmd = exec.Command(lt, "-q", "-whep", whepURL(e, "live/bench"), "-n", strconv.Itoa(n), "-rate", "20",
			"-duration", "25s", "-settle", "1s", "-loopback", "-ice-ip", "127.0.0.1", "-json", l.json)
		l.cmd.Stdout, l.cmd.Stderr = &l.out, &l.out
		if err := l.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.cmd.Process.Kill(); _ = l.cmd.Wait() })
		lts = append(lts, l)
	}
	for _, e := range edges {
		waitFor(t, 60*time.Second, fmt.Sprintf("%d viewers on %s", n, e.cluster.Self()), func() bool { return e.sessions.Len() >= n })
	}
	time.Sleep(3 * time.Second) // the last ones' ICE and DTLS, the relays' start
	pid := origin.cmd.Process.Pid
	metricsURL := "http://" + origin.http + "/metrics"
	cpu0, wchar0, relay0, redis0 := procCPU(t, pid), procWchar(t, pid), relayBytesOut(t, metricsURL), redisTraffic(t, r)
	start := time.Now()
	time.Sleep(originWindow)
	cpu1, wchar1, relay1, redis1 := procCPU(t, pid), procWchar(t, pid), relayBytesOut(t, metricsURL), redisTraffic(t, r)
	window := time.Since(start).Seconds()
	_, _, body := getMetrics(t, metricsURL, "")
	relays, _ := sampleValue(body, `bridge_relays{direction="out"}`)

	var viewers []string
	for i, l := range lts {
		if err := l.cmd.Wait(); err != nil {
			t.Fatalf("loadtest on edge %d: %v\n%s", i, err, l.out.String())
		}
		raw, err := os.ReadFile(l.json)
		if err != nil {
			t.Fatal(err)
		}
		var res loadtestResult
		if err := json.Unmarshal(raw, &res); err != nil {
			t.Fatalf("loadtest JSON %s: %v", l.json, err)
		}
		if res.Connected != n {
			t.Errorf("edge %d: %d of %d viewers connected (%d failed)", i, res.Connected, n, res.Failed)
		}
		viewers = append(viewers, fmt.Sprintf("%d connected, %.1f fps, %.0f kbit/s per viewer", res.Connected, res.FPSAvg, res.Kbps))
	}
	if n > 0 && relays != float64(len(edges)) {
		t.Errorf("%d viewers per edge: the origin serves %v relays, want one per edge (%d)", n, relays, len(edges))
	}
	line := fmt.Sprintf("origin, 1 publisher, %d edges, %d viewers per edge: CPU %.1f%% of a core, relays out %v, relay bytes out %.0f kbit/s, all bytes written %.0f kbit/s",
		len(edges), n, 100*(cpu1-cpu0).Seconds()/window, relays, 8*(relay1-relay0)/window/1000, 8*float64(wchar1-wchar0)/window/1000)
	nodes := float64(1 + len(edges))
	line += fmt.Sprintf("; registry traffic per node %.1f commands/s, %.0f B/s to Redis, %.0f B/s from it",
		float64(redis1.commands-redis0.commands)/window/nodes, float64(redis1.in-redis0.in)/window/nodes, float64(redis1.out-redis0.out)/window/nodes)
	if len(viewers) > 0 {
		line += " (viewers: " + strings.Join(viewers, "; ") + ")"
	}
	// The viewers have left; wait for the edges' relays to end, so the
	// next run starts from the publisher alone.
	for _, e := range edges {
		waitFor(t, 30*time.Second, "the edge's relay to end", func() bool { return e.sessions.Len() == 0 && e.relays.Stats().In == 0 })
	}
	return line
}

// procCPU returns the CPU time process pid has used (user and system),
// from /proc/PID/stat.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces), from field 3:
	// utime and stime are fields 14 and 15, in clock ticks (USER_HZ, 100
	// on Linux).
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// procWchar returns the bytes process pid has written (sockets, files,
// pipes), from /proc/PID/io.
func procWchar(t *testing.T, pid int) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatalf("/proc/%d/io has no wchar", pid)
	return 0
}

// redisCounters are Redis's own counters (INFO stats).
type redisCounters struct{ commands, in, out int64 }

// redisTraffic reads r's commands processed and network bytes in and out
// (the reading's own command and bytes count too: 1 command in 15 s).
func redisTraffic(t *testing.T, r *testkit.Redis) redisCounters {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := rdb.Info(ctx, "stats").Result()
	if err != nil {
		t.Fatalf("redis INFO stats: %v", err)
	}
	var c redisCounters
	for line := range strings.SplitSeq(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "total_commands_processed":
			c.commands = n
		case "total_net_input_bytes":
			c.in = n
		case "total_net_output_bytes":
			c.out = n
		}
	}
	return c
}

// relayBytesOut scrapes bridge_relay_bytes_total{direction="out"}.
func relayBytesOut(t *testing.T, metricsURL string) float64 {
	t.Helper()
	_, _, body := getMetrics(t, metricsURL, "")
	v, _ := sampleValue(body, `bridge_relay_bytes_total{direction="out"}`)
	return v
}

// benchRedisRestart stops Redis (empty when it starts again), waits until
// watcher is degraded, starts it and measures until watcher lists nodes
// nodes again and live/bench's owner; runs times.
func benchRedisRestart(t *testing.T, r *testkit.Redis, watcher *Bridge, nodes, runs int) []time.Duration {
	t.Helper()
	var back []time.Duration
	for range runs {
		r.Stop()
		waitFor(t, 30*time.Second, "the edge degraded", func() bool { return watcher.cluster.Status().State == "degraded" })
		r.Start()
		started := time.Now()
		waitFor(t, 30*time.Second, "registrations back", func() bool {
			ns, err := watcher.cluster.Nodes(context.Background())
			return err == nil && len(ns) == nodes && ownerOf(watcher, "live/bench") == "a"
		})
		back = append(back, time.Since(started))
	}
	return back
}

// benchNodeKilled runs, runs times, node k (a bridge process) that
// publishes live/k (ffmpeg) and runs the always-on pull live/pulled (from
// the origin's stream) under its lease, with node t in this process
// routing the same pull and waiting for the lease; k is killed with
// SIGKILL, and watcher measures until k's registration has expired and
// live/k is free, and t pulls.
func benchNodeKilled(t *testing.T, bin string, r *testkit.Redis, origin *bridgeProcess, watcher *Bridge, runs int) (expired, free, pulled []time.Duration) {
	t.Helper()
	pullURL := "rtmp://" + origin.rtmp + "/live/bench"
	for i := range runs {
		k := startClusterProcess(t, bin, r, "k", fmt.Sprintf("  - path: live/pulled\n    pull: %q\n", pullURL))
		k.log.WaitLog(t, 30*time.Second, "pull lease taken")
		_, stopPublisher := publish(t, "h264-aac.flv", "rtmp://"+k.rtmp+"/live/k")
		waitFor(t, 30*time.Second, "k's claim of live/k", func() bool { return ownerOf(watcher, "live/k") == "k" })
		taker := startOwnerNode(t, r, fmt.Sprintf("t%d", i), func(cfg *config.Config) {
			cfg.Cluster.Heartbeat = 0 // the default
			cfg.Cluster.Token = benchClusterToken
			cfg.Routes = append([]config.Route{{Path: "live/pulled", Pull: pullURL}}, cfg.Routes...)
		})
		time.Sleep(config.DefaultClusterHeartbeat) // the taker has tried the lease k holds
		if _, ok := taker.registry.Get("live/pulled"); ok {
			t.Fatal("the taker pulls live/pulled while k holds its lease")
		}

		k.signal(t, syscall.SIGKILL)
		killed := time.Now()
		stopPublisher()
		var gone, claimFree, pulling time.Duration
		waitFor(t, 60*time.Second, "k's registration expired, its claim free and the pull taken over", func() bool {
			since := time.Since(killed)
			if gone == 0 {
				if ns, err := watcher.cluster.Nodes(context.Background()); err == nil && !slices.ContainsFunc(ns, func(n cluster.NodeInfo) bool { return n.Name == "k" }) {
					gone = since
				}
			}
			if claimFree == 0 && ownerOf(watcher, "live/k") == "" {
				claimFree = since
			}
			if pulling == 0 {
				if s, ok := taker.registry.Get("live/pulled"); ok && s.Tracks() != nil {
					pulling = since
				}
			}
			return gone > 0 && claimFree > 0 && pulling > 0
		})
		expired, free, pulled = append(expired, gone), append(free, claimFree), append(pulled, pulling)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = taker.Close(ctx) // leaves the cluster: the lease is free for the next run's k
		cancel()
	}
	return expired, free, pulled
}

// p50 is the median of ds, rounded to the millisecond.
func p50(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(time.Millisecond)
}
