package cluster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// hb is the tests' heartbeat: entries expire after 3 of them (600 ms).
const hb = 200 * time.Millisecond

// patience bounds every wait for something the heartbeat does: 10
// heartbeats, generous against a loaded machine.
const patience = 10 * hb

// member is one node of a test cluster: its hub, its Cluster (with a
// client of its own) and what its callbacks were told.
type member struct {
	reg  *media.Registry
	c    *Cluster
	logs *testkit.LogBuf

	mu       sync.Mutex
	lost     []Claim  // OnLost's owners
	lostPath []string // OnLost's paths
	leases   []string // OnLeaseLost's names
	grace    atomic.Bool
}

// join starts node name on r (one Redis server); opts may change the
// Options before New.
func join(t testing.TB, r *testkit.Redis, name string, heartbeat time.Duration, opts func(*Options)) *member {
	t.Helper()
	return joinWith(t, config.Cluster{Redis: r.URL}, name, heartbeat, opts)
}

// joinWith is join with cfg's way to Redis.
func joinWith(t testing.TB, cfg config.Cluster, name string, heartbeat time.Duration, opts func(*Options)) *member {
	t.Helper()
	log, logs := testkit.NamedLog(t, name)
	m := &member{reg: media.NewRegistry(log), logs: logs}
	o := Options{
		Registry: m.reg,
		Live:     func(string) bool { return !m.grace.Load() },
		OnLost: func(path string, owner Claim) {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.lost, m.lostPath = append(m.lost, owner), append(m.lostPath, path)
		},
		OnLeaseLost: func(name string) {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.leases = append(m.leases, name)
		},
		Log: log,
	}
	if opts != nil {
		opts(&o)
	}
	cfg.Node, cfg.PublicURL, cfg.Token, cfg.Heartbeat = name, "http://127.0.0.1:1/"+name, "0123456789abcdef-token", heartbeat
	c, err := New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(c.Stop)
	m.c = c
	return m
}

func (m *member) lostTo() ([]string, []Claim) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.lostPath...), append([]Claim(nil), m.lost...)
}

// publish publishes path on m's hub (as an ingest would).
func (m *member) publish(t *testing.T, path string) *media.Publication {
	t.Helper()
	p, err := m.reg.Publish(path, "test publisher")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// owner is path's owner as node m sees it ("" for none).
func (m *member) owner(t *testing.T, path string) string {
	t.Helper()
	cl, ok, err := m.c.Owner(context.Background(), path)
	if err != nil {
		t.Fatalf("Owner(%q) on %s: %v", path, m.c.Self(), err)
	}
	if !ok {
		return ""
	}
	return cl.Node
}

// TestClaimsExclusive: two nodes, each with its own Redis client: a path
// published on a is a's in the registry; b's Claim of it is refused with
// the owner, and a publisher that reached b's hub anyway is told to end
// (OnLost). Once a's publisher ends the path is released and b gets it.
func TestClaimsExclusive(t *testing.T) {
	r := testkit.StartRedis(t)
	a := join(t, r, "a", hb, nil)
	b := join(t, r, "b", hb, nil)

	pub := a.publish(t, "live/x")
	testkit.WaitFor(t, patience, "b sees a own live/x", func() bool { return b.owner(t, "live/x") == "a" })
	err := b.c.Claim(context.Background(), "live/x")
	var owned *OwnedError
	if !errors.As(err, &owned) || owned.Owner.Node != "a" || owned.Owner.PublicURL != "http://127.0.0.1:1/a" || owned.Owner.State != PublisherLive {
		t.Fatalf("b's claim of a's live stream: %v (want *OwnedError naming a)", err)
	}
	if !strings.Contains(err.Error(), `stream "live/x" is published on node "a"`) {
		t.Errorf("refusal says %q", err)
	}

	// A publisher that reached b's hub without asking (admission is not
	// wired to Claim yet) is claimed by b's heartbeat, refused, and b is
	// told to end it; a keeps the path.
	b.publish(t, "live/x")
	testkit.WaitFor(t, patience, "b told it lost live/x", func() bool { p, _ := b.lostTo(); return len(p) > 0 })
	if paths, owners := b.lostTo(); paths[0] != "live/x" || owners[0].Node != "a" {
		t.Errorf("b's OnLost: %v %v (want live/x owned by a)", paths, owners)
	}
	if got := a.owner(t, "live/x"); got != "a" {
		t.Fatalf("owner after b's attempt: %q (want a)", got)
	}
	streams, err := b.c.Streams(context.Background())
	if err != nil || len(streams) != 1 || streams[0].Path != "live/x" || streams[0].Node != "a" {
		t.Errorf("cluster-wide streams: %+v, %v", streams, err)
	}

	pub.Close() // no tracks: the stream ends at once, without grace
	testkit.WaitFor(t, patience, "live/x released", func() bool { return b.owner(t, "live/x") == "" })
	if err := b.c.Claim(context.Background(), "live/x"); err != nil {
		t.Fatalf("b's claim of the released path: %v", err)
	}
	if got := a.owner(t, "live/x"); got != "b" {
		t.Errorf("owner after b's claim: %q (want b)", got)
	}
}

// TestHeartbeatExpiry: a node's registration and claims are kept alive by
// its heartbeat well past their TTL (3 heartbeats), and expire once it
// stops refreshing them (a crash: nothing released), as seen by another
// node.
func TestHeartbeatExpiry(t *testing.T) {
	r := testkit.StartRedis(t)
	a := join(t, r, "a", hb, nil)
	b := join(t, r, "b", hb, nil)
	a.publish(t, "live/e")
	testkit.WaitFor(t, patience, "a's claim", func() bool { return b.owner(t, "live/e") == "a" })

	// The entries' TTL is 3 heartbeats, at most.
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	for _, k := range []string{nodeKey("a"), streamKey("live/e")} {
		if ttl := rdb.PTTL(context.Background(), k).Val(); ttl <= 0 || ttl > 3*hb {
			t.Errorf("%s: TTL %v (want 0 < TTL <= %v)", k, ttl, 3*hb)
		}
	}
	time.Sleep(2 * 3 * hb) // two TTLs: only the refreshes keep them
	nodes, err := b.c.Nodes(context.Background())
	if err != nil || len(nodes) != 2 || nodes[0].Name != "a" || nodes[1].Name != "b" || b.owner(t, "live/e") != "a" {
		t.Fatalf("after two TTLs with refreshes: nodes %+v (%v), owner %q", nodes, err, b.owner(t, "live/e"))
	}
	if nodes[0].PublicURL != "http://127.0.0.1:1/a" || nodes[0].InternalURL != nodes[0].PublicURL || nodes[0].Mode != config.ClusterRelay {
		t.Errorf("a's registration: %+v", nodes[0])
	}

	stopped := time.Now()
	a.c.halt(false) // crash: no release
	testkit.WaitFor(t, patience, "a's claim expired", func() bool { return b.owner(t, "live/e") == "" })
	testkit.WaitFor(t, patience, "a's registration expired", func() bool {
		nodes, err := b.c.Nodes(context.Background())
		return err == nil && len(nodes) == 1 && nodes[0].Name == "b"
	})
	t.Logf("a's entries expired %v after its last heartbeat (TTL %v)", time.Since(stopped).Round(time.Millisecond), 3*hb)
	testkit.WaitFor(t, patience, "b counts one node", func() bool { return b.c.Status().Nodes == 1 })
}

// TestLeaseTakeover: a lease is exclusive while its holder renews it, is
// taken by another node once the holder stops renewing (after its TTL),
// and is free at once when released.
func TestLeaseTakeover(t *testing.T) {
	r := testkit.StartRedis(t)
	a := join(t, r, "a", hb, nil)
	b := join(t, r, "b", hb, nil)
	ctx := context.Background()
	if ok, err := a.c.AcquireLease(ctx, "pull:live/p"); !ok || err != nil {
		t.Fatalf("a's lease: %v %v", ok, err)
	}
	if ok, err := a.c.AcquireLease(ctx, "pull:live/p"); !ok || err != nil {
		t.Fatalf("a's lease again (its own): %v %v", ok, err)
	}
	if ok, err := b.c.AcquireLease(ctx, "pull:live/p"); ok || err != nil {
		t.Fatalf("b took a's lease: %v %v", ok, err)
	}
	time.Sleep(2 * 3 * hb) // two TTLs: a's renewals keep it
	if ok, _ := b.c.AcquireLease(ctx, "pull:live/p"); ok {
		t.Fatal("b took the lease a renews")
	}
	a.c.halt(false) // a crashes
	start := time.Now()
	testkit.WaitFor(t, patience, "b takes the lease over", func() bool {
		ok, err := b.c.AcquireLease(ctx, "pull:live/p")
		return ok && err == nil
	})
	t.Logf("lease taken over %v after its holder stopped (TTL %v)", time.Since(start).Round(time.Millisecond), 3*hb)

	// Released: free at once for another node.
	c := join(t, r, "c", hb, nil)
	if err := b.c.ReleaseLease(ctx, "pull:live/p"); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.c.AcquireLease(ctx, "pull:live/p"); !ok || err != nil {
		t.Fatalf("c's lease after b released it: %v %v", ok, err)
	}
	// b lost nothing it held; a lease b held and c took is reported lost
	// to b at b's next renewal.
	if ok, _ := b.c.AcquireLease(ctx, "pull:live/q"); !ok {
		t.Fatal("b's lease q")
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	rdb.Set(ctx, leaseKey("pull:live/q"), "c", 0) // c took it (b's renewals were late)
	testkit.WaitFor(t, patience, "b told it lost lease q", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.leases) == 1 && b.leases[0] == "pull:live/q"
	})
}

// TestGraceTakeover: while a's publisher is live, b may not claim the
// path; once it left and its readers wait in grace, b's publisher takes
// the path over and a is told it lost it to b.
func TestGraceTakeover(t *testing.T) {
	r := testkit.StartRedis(t)
	a := join(t, r, "a", hb, nil)
	b := join(t, r, "b", hb, nil)
	a.publish(t, "live/g")
	testkit.WaitFor(t, patience, "a's claim", func() bool { return b.owner(t, "live/g") == "a" })
	if err := b.c.Claim(context.Background(), "live/g"); err == nil {
		t.Fatal("b claimed a's live stream")
	}

	a.grace.Store(true) // a's publisher left; its readers wait
	testkit.WaitFor(t, patience, "a's claim in grace", func() bool {
		cl, ok, err := b.c.Owner(context.Background(), "live/g")
		return err == nil && ok && cl.State == PublisherGrace
	})
	if err := b.c.Claim(context.Background(), "live/g"); err != nil {
		t.Fatalf("b's claim of a stream in grace: %v", err)
	}
	if got := a.owner(t, "live/g"); got != "b" {
		t.Fatalf("owner after the takeover: %q (want b)", got)
	}
	testkit.WaitFor(t, patience, "a told it lost live/g", func() bool { p, _ := a.lostTo(); return len(p) > 0 })
	if paths, owners := a.lostTo(); paths[0] != "live/g" || owners[0].Node != "b" || owners[0].State != PublisherLive {
		t.Errorf("a's OnLost: %v %+v (want live/g owned by b, live)", paths, owners)
	}
	b.logs.WaitLog(t, patience, "took the stream over from another node", "stream=live/g", "from=a")
	time.Sleep(2 * hb) // a's heartbeats go on: they must not take it back
	if got := b.owner(t, "live/g"); got != "b" {
		t.Errorf("owner two heartbeats later: %q (want b)", got)
	}
}

// TestRedisRestartSinceWins: Redis killed and restarted empty. Meanwhile
// both nodes keep serving, and b admits a publisher of the path a
// published first. When Redis is back both register again within a few
// heartbeats; the earlier publisher (a's) keeps the path and b is told to
// end its own.
func TestRedisRestartSinceWins(t *testing.T) {
	r := testkit.StartRedis(t)
	// b's heartbeat is shorter, so b (the later publisher) usually
	// registers first after the restart: the earlier since must win anyway.
	a := join(t, r, "a", 3*hb, nil)
	b := join(t, r, "b", hb, nil)
	a.publish(t, "live/s")
	a.publish(t, "live/only-a")
	testkit.WaitFor(t, 3*patience, "a's claims", func() bool { return b.owner(t, "live/s") == "a" })

	r.Stop()
	for _, m := range []*member{a, b} {
		testkit.WaitFor(t, 3*patience, m.c.Self()+" degraded", func() bool { return m.c.Status().State == StateDegraded })
	}
	time.Sleep(5 * time.Millisecond) // b's publisher starts strictly later
	if err := b.c.Claim(context.Background(), "live/s"); err != nil {
		t.Fatalf("b's claim while degraded: %v (want admitted locally)", err)
	}
	b.publish(t, "live/s")

	r.Start()
	back := time.Now()
	for _, m := range []*member{a, b} {
		testkit.WaitFor(t, 3*patience, m.c.Self()+" registered again", func() bool {
			nodes, err := m.c.Nodes(context.Background())
			return err == nil && len(nodes) == 2
		})
	}
	t.Logf("both registrations back %v after Redis restarted (heartbeats %v and %v)", time.Since(back).Round(time.Millisecond), 3*hb, hb)
	testkit.WaitFor(t, 3*patience, "b told it lost live/s", func() bool { p, _ := b.lostTo(); return len(p) > 0 })
	if paths, owners := b.lostTo(); len(paths) != 1 || paths[0] != "live/s" || owners[0].Node != "a" {
		t.Fatalf("b's OnLost: %v %+v (want live/s owned by a)", paths, owners)
	}
	testkit.WaitFor(t, 3*patience, "a owns both its paths", func() bool {
		return b.owner(t, "live/s") == "a" && b.owner(t, "live/only-a") == "a"
	})
	if p, _ := a.lostTo(); len(p) != 0 {
		t.Errorf("a was told it lost %v", p)
	}
	if a.logs.Count("redis unreachable") != 1 || b.logs.Count("redis unreachable") != 1 {
		t.Errorf("the outage logged %d times on a, %d on b (want once each)", a.logs.Count("redis unreachable"), b.logs.Count("redis unreachable"))
	}
}

// TestDegraded: with Redis down a node keeps working: its status says
// degraded (bridge_cluster_redis_up 0), lookups fail at once with
// ErrUnavailable, new publishers are admitted locally, nothing panics;
// all of it is back when Redis is.
func TestDegraded(t *testing.T) {
	r := testkit.StartRedis(t)
	a := join(t, r, "a", hb, nil)
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(a.c.Metrics())
	up := func() float64 {
		mfs, err := promReg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "bridge_cluster_redis_up" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	if s := a.c.Status(); s.State != StateOK || up() != 1 {
		t.Fatalf("status with Redis up: %+v, redis_up %v", s, up())
	}
	r.Stop()
	testkit.WaitFor(t, patience, "degraded", func() bool { return a.c.Status().State == StateDegraded })
	s := a.c.Status()
	if up() != 0 || s.Error == "" || s.Node != "a" {
		t.Errorf("degraded status: %+v, redis_up %v", s, up())
	}
	ctx := context.Background()
	calls := map[string]func() error{
		"Owner":        func() error { _, _, err := a.c.Owner(ctx, "live/d"); return err },
		"Nodes":        func() error { _, err := a.c.Nodes(ctx); return err },
		"Streams":      func() error { _, err := a.c.Streams(ctx); return err },
		"LeastLoaded":  func() error { _, _, err := a.c.LeastLoaded(ctx); return err },
		"AcquireLease": func() error { _, err := a.c.AcquireLease(ctx, "pull:x"); return err },
	}
	for name, call := range calls {
		start := time.Now()
		if err := call(); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s while degraded: %v (want ErrUnavailable)", name, err)
		}
		t.Logf("%s answered in %v while degraded", name, time.Since(start).Round(time.Microsecond))
	}
	if err := a.c.Claim(ctx, "live/d"); err != nil {
		t.Errorf("Claim while degraded: %v (want the publisher admitted locally)", err)
	}
	a.publish(t, "live/d")
	time.Sleep(3 * hb) // heartbeats while degraded
	if n := a.logs.Count("redis unreachable"); n != 1 {
		t.Errorf("the outage was logged %d times (want once)", n)
	}
	if n := panics.CountOf("cluster heartbeat") + panics.CountOf("cluster registry events"); n != 0 {
		t.Errorf("%d panics", n)
	}

	r.Start()
	testkit.WaitFor(t, patience, "back to ok", func() bool { return a.c.Status().State == StateOK })
	testkit.WaitFor(t, patience, "live/d registered", func() bool { return a.owner(t, "live/d") == "a" })
	if up() != 1 || a.logs.Count("redis is back") != 1 {
		t.Errorf("after Redis came back: redis_up %v, %d 'back' lines", up(), a.logs.Count("redis is back"))
	}
}

// TestLeastLoadedAndRoutes: the least loaded other node that can take a
// session is chosen (not draining, not full, same routes), and a node
// whose routes differ is listed and logged.
func TestLeastLoadedAndRoutes(t *testing.T) {
	r := testkit.StartRedis(t)
	routes := []config.Route{{Path: "live/{name}"}}
	other := []config.Route{{Path: "live/{name}", PublishKey: "k"}}
	node := func(name string, l Load, rs []config.Route) *member {
		return join(t, r, name, hb, func(o *Options) {
			o.Load = func() Load { return l }
			o.Routes = func() []config.Route { return rs }
		})
	}
	a := node("a", Load{Sessions: 1, MaxSessions: 100}, routes)
	node("b", Load{Sessions: 50, MaxSessions: 100}, routes)
	node("c", Load{Sessions: 10, MaxSessions: 100}, routes)
	node("d", Load{Sessions: 0, MaxSessions: 100, Draining: true}, routes)
	node("e", Load{Sessions: 100, MaxSessions: 100}, routes)
	node("f", Load{Sessions: 0, MaxSessions: 100}, other)
	testkit.WaitFor(t, patience, "a sees six nodes", func() bool { return a.c.Status().Nodes == 6 })
	n, ok, err := a.c.LeastLoaded(context.Background())
	if err != nil || !ok || n.Name != "c" || n.Load.Sessions != 10 {
		t.Errorf("least loaded: %+v %v %v (want c)", n, ok, err)
	}
	if d := a.c.Status().RoutesDiffer; len(d) != 1 || d[0] != "f" {
		t.Errorf("routes differ: %v (want [f])", d)
	}
	a.logs.WaitLog(t, patience, "routes differ", "other=f")
	// Where a's clients may be sent (its web pages' CSP): every node's
	// public URL, its own first, read without asking Redis.
	if got := a.c.PublicURLs(); len(got) != 7 || got[0] != "http://127.0.0.1:1/a" || !slices.Contains(got, "http://127.0.0.1:1/f") {
		t.Errorf("public URLs: %q, want a's then the six nodes'", got)
	}
}

// TestRedisClusterMode: with redis_addrs alone the client speaks Redis
// Cluster; the registry's keys share one slot (hash tag), so its scripts
// and multi-key reads work there: claims stay exclusive, nodes are listed,
// a lease is held, and a Redis restart is survived.
func TestRedisClusterMode(t *testing.T) {
	r := testkit.StartRedisCluster(t)
	cfg := config.Cluster{RedisAddrs: []string{r.Addr}}
	a := joinWith(t, cfg, "a", hb, nil)
	b := joinWith(t, cfg, "b", hb, nil)
	a.publish(t, "live/c")
	testkit.WaitFor(t, patience, "b sees a own live/c", func() bool { return b.owner(t, "live/c") == "a" })
	var owned *OwnedError
	if err := b.c.Claim(context.Background(), "live/c"); !errors.As(err, &owned) {
		t.Fatalf("b's claim of a's live stream: %v", err)
	}
	if nodes, err := b.c.Nodes(context.Background()); err != nil || len(nodes) != 2 {
		t.Fatalf("nodes: %+v, %v", nodes, err)
	}
	if ok, err := a.c.AcquireLease(context.Background(), "pull:live/c"); !ok || err != nil {
		t.Fatalf("lease: %v %v", ok, err)
	}
	r.Stop()
	testkit.WaitFor(t, patience, "a degraded", func() bool { return a.c.Status().State == StateDegraded })
	r.Start()
	testkit.WaitFor(t, 3*patience, "a's claim back", func() bool {
		cl, ok, err := b.c.Owner(context.Background(), "live/c")
		return err == nil && ok && cl.Node == "a"
	})
	if ok, _ := b.c.AcquireLease(context.Background(), "pull:live/c"); ok {
		t.Error("b took a's lease after the restart")
	}
	// A cluster that answers PING but refuses commands while it recovers
	// (CLUSTERDOWN) is still down: one outage, logged once.
	if n := a.logs.Count("redis unreachable"); n != 1 {
		t.Errorf("the outage was logged %d times on a (want once)", n)
	}
}
