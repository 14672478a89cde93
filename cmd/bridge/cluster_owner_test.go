package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// Ownership in a cluster of bridges joined through a real redis-server:
// one publisher per path, pulls on exactly one node, and what happens when
// a node or Redis dies. Heartbeats are ownerHeartbeat (entries expire
// after three); timing bounds are generous (10 heartbeats, 3x TTL) and the
// measured times are logged.

const (
	ownerHeartbeat = 200 * time.Millisecond
	ownerTTL       = 3 * ownerHeartbeat
	ownerToken     = "owner-test-cluster-token-0123"
)

// startOwnerNode starts bridge name in the cluster on r; edit, if set,
// changes its config first.
func startOwnerNode(t *testing.T, r *testkit.Redis, name string, edit func(*config.Config)) *Bridge {
	t.Helper()
	cfg := config.Default()
	public := clusterListen(t, cfg)
	cfg.Cluster = config.Cluster{Redis: r.URL, Node: name, PublicURL: public, Token: ownerToken, Heartbeat: ownerHeartbeat}
	if edit != nil {
		edit(cfg)
	}
	return startListeningWith(t, cfg, Options{IncludeLoopback: true}, testLog(t))
}

// ownerOf is path's owner as b's registry sees it ("" for none or while
// Redis cannot be reached).
func ownerOf(b *Bridge, path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	cl, ok, err := b.cluster.Owner(ctx, path)
	if err != nil || !ok {
		return ""
	}
	return cl.Node
}

// withGrace sets every route's grace to d.
func withGrace(d time.Duration) func(*config.Config) {
	return func(cfg *config.Config) {
		for i := range cfg.Routes {
			cfg.Routes[i].Grace = &d
		}
	}
}

// TestClusterOnePublisher: ffmpeg publishes live/one over RTMP on A. A
// second publisher of the same path on C is refused while A owns it: an
// RTMP publish with ffmpeg fails, its reason naming node "a", and a WHIP
// POST on B gets 409 naming "a" (307 to A's WHIP URL in redirect mode).
// Once A's publisher stops and its grace has run out, the path is free:
// C's publisher gets it.
func TestClusterOnePublisher(t *testing.T) {
	r := testkit.StartRedis(t)
	grace := 2 * time.Second
	a := startOwnerNode(t, r, "a", withGrace(grace))
	b := startOwnerNode(t, r, "b", withGrace(grace))
	c := startOwnerNode(t, r, "c", withGrace(grace))
	_, stopA := publish(t, "h264-aac.flv", "rtmp://"+a.RTMPAddr().String()+"/live/one")
	waitStream(t, a, "live/one")
	waitFor(t, 10*ownerHeartbeat, "A's claim of live/one", func() bool { return ownerOf(c, "live/one") == "a" })

	// RTMP on C: refused, naming the owner.
	ff := testkit.StartFFmpeg(t, "-re", "-i", fixture(t, "h264-aac.flv"), "-c", "copy", "-f", "flv",
		"rtmp://"+c.RTMPAddr().String()+"/live/one")
	if err := ff.Wait(t, 20*time.Second); err == nil {
		t.Fatal("ffmpeg published live/one on C while A owns it")
	}
	if out := ff.Stderr.String(); !strings.Contains(out, `node "a"`) {
		t.Errorf("ffmpeg's error does not name the owner node: %q", out)
	}
	if _, ok := c.registry.Get("live/one"); ok {
		t.Error("C's hub has live/one")
	}

	// WHIP on B: 409 naming the owner.
	status, body, _ := postOffer(t, noRedirects, "http://"+b.HTTPAddr().String()+"/whip/live/one", nil)
	if status != http.StatusConflict || !strings.Contains(body, `node "a"`) {
		t.Errorf("WHIP POST on B for A's path: %d %q, want 409 naming node \"a\"", status, body)
	}
	if got := ownerOf(b, "live/one"); got != "a" {
		t.Fatalf("owner after the refusals: %q, want a", got)
	}

	// A's publisher stops: after its grace the path is free for C.
	stopA()
	stopped := time.Now()
	waitFor(t, grace+3*ownerTTL, "A's claim released", func() bool { return ownerOf(c, "live/one") == "" })
	t.Logf("A's claim gone %v after its publisher stopped (grace %v)", time.Since(stopped).Round(time.Millisecond), grace)
	publish(t, "h264-aac.flv", "rtmp://"+c.RTMPAddr().String()+"/live/one")
	waitStream(t, c, "live/one")
	waitFor(t, 10*ownerHeartbeat, "C's claim of live/one", func() bool { return ownerOf(a, "live/one") == "c" })
}

// TestClusterWHIPPublisherRedirect: in redirect mode, a WHIP publisher of
// a path A owns that asks B is sent to A's WHIP endpoint with a 307.
func TestClusterWHIPPublisherRedirect(t *testing.T) {
	r := testkit.StartRedis(t)
	redirect := func(cfg *config.Config) { cfg.Cluster.Mode = config.ClusterRedirect }
	a := startOwnerNode(t, r, "a", redirect)
	b := startOwnerNode(t, r, "b", redirect)
	publish(t, "h264-aac.flv", "rtmp://"+a.RTMPAddr().String()+"/live/red")
	waitStream(t, a, "live/red")
	waitFor(t, 10*ownerHeartbeat, "A's claim", func() bool { return ownerOf(b, "live/red") == "a" })
	status, _, location := postOffer(t, noRedirects, "http://"+b.HTTPAddr().String()+"/whip/live/red", nil)
	if want := "http://" + a.HTTPAddr().String() + "/whip/live/red"; status != http.StatusTemporaryRedirect || location != want {
		t.Errorf("WHIP POST on B: %d Location %q, want 307 to %q", status, location, want)
	}
}

// TestClusterNodeKilled: an always-on pull route on three nodes runs on
// exactly one, A, a bridge process. A is killed with SIGKILL: its
// registration and claim expire within three heartbeats (its TTL) and
// another node takes the pull's lease over and pulls.
func TestClusterNodeKilled(t *testing.T) {
	r := testkit.StartRedis(t)
	source := startBridge(t, nil) // the pull's source, outside the cluster
	publish(t, "h264-aac.flv", "rtmp://"+source.RTMPAddr().String()+"/live/src")
	waitStream(t, source, "live/src")
	pullURL := "rtmp://" + source.RTMPAddr().String() + "/live/src"
	pullRoute := func(cfg *config.Config) {
		cfg.Routes = append([]config.Route{{Path: "live/pulled", Pull: pullURL}}, cfg.Routes...)
	}

	bin := buildBinary(t)
	a := startProcess(t, bin, nil, fmt.Sprintf(`cluster:
  redis: %q
  node: a
  public_url: "http://127.0.0.1:1"
  token: %q
  heartbeat: %s
routes:
  - path: live/pulled
    pull: %q
  - path: "{path...}"
`, r.URL, ownerToken, ownerHeartbeat, pullURL))
	a.log.WaitLog(t, 20*time.Second, "pull lease taken")

	b := startOwnerNode(t, r, "b", pullRoute)
	c := startOwnerNode(t, r, "c", pullRoute)
	waitFor(t, 10*ownerHeartbeat, "A's claim of live/pulled", func() bool { return ownerOf(b, "live/pulled") == "a" })
	time.Sleep(3 * ownerHeartbeat) // b and c wait for the lease a renews
	for _, n := range []*Bridge{b, c} {
		if _, ok := n.registry.Get("live/pulled"); ok {
			t.Fatalf("%s pulls live/pulled while A holds its lease", n.cluster.Self())
		}
	}

	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, 3*ownerTTL, "A's registration expired", func() bool {
		nodes, err := b.cluster.Nodes(context.Background())
		return err == nil && len(nodes) == 2
	})
	expired := time.Since(killed)
	var holder *Bridge
	waitFor(t, 3*ownerTTL+10*time.Second, "another node pulls live/pulled", func() bool {
		for _, n := range []*Bridge{b, c} {
			if s, ok := n.registry.Get("live/pulled"); ok && s.Tracks() != nil {
				holder = n
				return true
			}
		}
		return false
	})
	moved := time.Since(killed)
	waitFor(t, 10*ownerHeartbeat, "the new puller's claim", func() bool { return ownerOf(b, "live/pulled") == holder.cluster.Self() })
	t.Logf("after SIGKILL of A: its registration expired in %v (TTL %v); %s pulls live/pulled after %v, owns it after %v",
		expired.Round(time.Millisecond), ownerTTL, holder.cluster.Self(), moved.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	for _, n := range []*Bridge{b, c} {
		if n != holder {
			if _, ok := n.registry.Get("live/pulled"); ok {
				t.Errorf("both b and c pull live/pulled")
			}
		}
	}
}

// TestClusterRedisRestart: Redis is killed and restarted (empty) while a
// WHEP viewer on A plays A's stream and one on B plays it through a relay
// from A (found in the registry): both keep getting frames,
// /readyz stays 200 and says cluster: degraded, GET /api/v1/cluster says
// redis: degraded, and both nodes and A's claim are registered again
// within two heartbeats of Redis answering. Before and after, the API
// lists the cluster's two nodes, and B's streams list has A's stream with
// its owner, marked remote.
func TestClusterRedisRestart(t *testing.T) {
	const token = "api-token-of-the-owner-tests"
	r := testkit.StartRedis(t)
	withAPI := func(cfg *config.Config) { cfg.API.Token = token }
	a := startOwnerNode(t, r, "a", withAPI)
	b := startOwnerNode(t, r, "b", withAPI)
	publish(t, "h264-aac.flv", "rtmp://"+a.RTMPAddr().String()+"/live/rr")
	waitStream(t, a, "live/rr")
	waitFor(t, 10*ownerHeartbeat, "A's claim", func() bool { return ownerOf(b, "live/rr") == "a" })

	type clusterView struct {
		Redis string `json:"redis"`
		Nodes []struct {
			Node         string `json:"node"`
			PublicURL    string `json:"public_url"`
			RoutesDiffer bool   `json:"routes_differ"`
		} `json:"nodes"`
	}
	var cv clusterView
	if code, body := apiCall(t, "GET", "http://"+b.HTTPAddr().String()+"/api/v1/cluster", token, &cv); code != 200 ||
		cv.Redis != "ok" || len(cv.Nodes) != 2 || cv.Nodes[0].Node != "a" || cv.Nodes[0].PublicURL != "http://"+a.HTTPAddr().String() || cv.Nodes[0].RoutesDiffer {
		t.Errorf("GET /api/v1/cluster on B: %d %s, want redis ok and nodes a and b with their URLs", code, body)
	}
	var streams struct {
		Streams []struct {
			Path   string `json:"path"`
			Owner  string `json:"owner"`
			Remote bool   `json:"remote"`
		} `json:"streams"`
	}
	if code, body := apiCall(t, "GET", "http://"+b.HTTPAddr().String()+"/api/v1/streams", token, &streams); code != 200 ||
		len(streams.Streams) != 1 || streams.Streams[0].Path != "live/rr" || streams.Streams[0].Owner != "a" || !streams.Streams[0].Remote {
		t.Errorf("GET /api/v1/streams on B: %d %s, want live/rr owned by a, remote", code, body)
	}
	v := joinURL(t, http.DefaultClient, newViewerAPI(t), whepURL(a, "live/rr"), nil)
	t.Cleanup(func() { _ = v.pc.Close() })
	v.waitFrames(t, 10, 20*time.Second)
	relayed := watch(t, b, "live/rr", nil) // through a relay from A
	relayed.waitFrames(t, 10, 20*time.Second)

	r.Stop()
	waitFor(t, 10*ownerHeartbeat, "A degraded", func() bool { return a.cluster.Status().State == "degraded" })
	before, beforeRelayed := len(v.frames()), len(relayed.frames())
	code, body := apiCall(t, "GET", "http://"+a.HTTPAddr().String()+"/readyz", "", nil)
	if code != http.StatusOK || !strings.Contains(body, `"name":"cluster","ok":false,"error":"degraded`) {
		t.Errorf("/readyz on A while Redis is down: %d %s, want 200 saying cluster: degraded", code, body)
	}
	if code, body := apiCall(t, "GET", "http://"+a.HTTPAddr().String()+"/api/v1/cluster", token, &cv); code != 200 || cv.Redis != "degraded" {
		t.Errorf("GET /api/v1/cluster on A while Redis is down: %d %s, want redis: degraded", code, body)
	}
	time.Sleep(5 * ownerHeartbeat)
	r.Start()
	back := time.Now()
	waitFor(t, 10*ownerHeartbeat, "registrations back", func() bool {
		nodes, err := b.cluster.Nodes(context.Background())
		return err == nil && len(nodes) == 2 && ownerOf(b, "live/rr") == "a"
	})
	took := time.Since(back)
	t.Logf("registrations and A's claim back %v after Redis answered (heartbeat %v)", took.Round(time.Millisecond), ownerHeartbeat)
	v.waitFrames(t, before+30, 10*time.Second) // still playing
	relayed.waitFrames(t, beforeRelayed+30, 10*time.Second)
	if n := b.relays.Stats().In; n != 1 {
		t.Errorf("B runs %d relays after Redis came back, want the one it had", n)
	}
}
