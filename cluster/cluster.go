// Package cluster joins bridge nodes through a Redis registry, so that
// several bridges behind one name behave as one: which node owns each
// stream path (claims), which nodes are alive and how loaded they are
// (registrations), and which node runs each pull (leases).
//
// A Cluster is the node's collaborator. It follows the hub's events
// (media.Registry.Subscribe): a path that gets a publisher is claimed for
// this node, a path whose stream ended is released. Every heartbeat it
// refreshes its registration, its claims (with the publisher's state: live,
// or gone and waiting in grace, which another node may take over) and its
// leases; an entry not refreshed for config.ClusterExpiryHeartbeats
// heartbeats expires, so a dead node's streams are free soon after. The
// node asks it Claim (may this node's new publisher have the path?), Owner
// (where is the stream a reader wants?) and LeastLoaded (where to send a
// client this node cannot take).
//
// When Redis cannot be reached the node keeps serving what it has: the
// Cluster logs it once, reports "degraded" (Status, the
// bridge_cluster_redis_up metric), answers lookups with ErrUnavailable at
// once, and admits new publishers locally. When Redis is back it
// re-registers everything; two nodes that accepted the same path meanwhile
// agree that the publisher that started earlier keeps it, and the other
// node is told through Options.OnLost.
//
// Everything is bounded: each Redis call by a timeout derived from the
// heartbeat, the claims, leases and listed nodes by named limits, every key
// by the length of a stream path or node name.
package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/metrics"
)

// Limits.
const (
	// MaxClaims bounds the paths one node claims: each is refreshed every
	// heartbeat (one pipelined script call), and a node serves far fewer
	// published streams than this; a publisher beyond it is served
	// locally but not registered (logged).
	MaxClaims = 4096
	// MaxLeases bounds the leases one node holds (one per pull route).
	MaxLeases = 1024
	// MaxNodes bounds the nodes Nodes lists and LeastLoaded considers: a
	// cluster of bridges has tens of nodes; listing more every heartbeat
	// would cost each node O(nodes) reads.
	MaxNodes = 256
	// MaxStreamsListed bounds Streams (the API's cluster-wide list).
	MaxStreamsListed = 10000
	// maxValue bounds a registry value read back (a claim or a node's
	// registration): ours are a few hundred bytes; a bigger one is not
	// ours and is ignored rather than decoded.
	maxValue = 16 << 10
	// maxLeaseName bounds a lease's name (a route's path, a pull's id).
	maxLeaseName = 512
	// maxCodecs bounds the codecs listed in a claim (tracks of a stream).
	maxCodecs = 16
	// maxOpTimeout and minOpTimeout bound one Redis call: half a
	// heartbeat, so a heartbeat's work fits in it, but at least 100 ms
	// (a round trip to a loaded Redis) and at most 1 s (a caller, such as
	// a WHEP POST locating its stream, must not wait longer on Redis).
	maxOpTimeout = time.Second
	minOpTimeout = 100 * time.Millisecond
	// zsetSlack keeps index entries this long past their expiry before
	// pruning them, so a node whose clock is behind does not prune entries
	// of a node whose clock is ahead (key TTLs, held by Redis, decide what
	// is alive; the index only lists candidates).
	zsetSlack = time.Minute
)

// ErrUnavailable: Redis cannot be reached (the cluster is degraded), so
// the registry cannot answer. Lookups return it at once while degraded.
var ErrUnavailable = errors.New("cluster registry unavailable (redis unreachable)")

// State is the cluster's health as Status, the API and /readyz report it.
type State string

// The states.
const (
	// StateOK: Redis answers; registrations and claims are current.
	StateOK State = "ok"
	// StateDegraded: Redis cannot be reached; the node serves what it has.
	StateDegraded State = "degraded"
)

// PublisherState is a claim's publisher: connected, or gone and waited for
// (media grace), when another node's publisher may take the path over.
type PublisherState string

// The publisher states.
const (
	PublisherLive  PublisherState = "live"
	PublisherGrace PublisherState = "grace"
)

// Load is what a node tells the others about its load.
type Load struct {
	Sessions    int     `json:"sessions"`     // WHIP/WHEP sessions
	MaxSessions int     `json:"max_sessions"` // limits.webrtc_sessions; 0: unknown
	Viewers     int     `json:"viewers"`      // readers of every stream
	CPU         float64 `json:"cpu"`          // share of the machine's CPUs over the last heartbeat, 0-1
	Draining    bool    `json:"draining"`     // takes no new sessions
}

// NodeInfo is a node's registration.
type NodeInfo struct {
	Name        string `json:"node"`
	PublicURL   string `json:"public_url"`
	InternalURL string `json:"internal_url"`
	Mode        string `json:"mode"`
	// Routes is a hash of the node's routes: nodes that differ route the
	// same path differently (logged, listed in Status).
	Routes string `json:"routes"`
	Load   Load   `json:"load"`
	// Started is when the node's Cluster started.
	Started time.Time `json:"started"`
}

// Claim is the registry's entry of a path: who owns it and how to reach
// the stream.
type Claim struct {
	Path        string         `json:"path"`
	Node        string         `json:"node"`
	PublicURL   string         `json:"public_url"`
	InternalURL string         `json:"internal_url"`
	Codecs      []string       `json:"codecs,omitempty"`
	State       PublisherState `json:"state"`
	// Since is when the node's publisher took the path, Unix ms on the
	// node's clock: after an outage the earlier one keeps it.
	Since   int64 `json:"since"`
	Readers int   `json:"readers"` // on the owner
}

// SinceTime is Since as a time.
func (c Claim) SinceTime() time.Time { return time.UnixMilli(c.Since) }

// OwnedError refuses a claim: another node's publisher is live on the
// path. The node answers it as WHIP 409 (or 307 to Owner.PublicURL in
// redirect mode) and RTMP/SRT rejections.
type OwnedError struct{ Owner Claim }

func (e *OwnedError) Error() string {
	return fmt.Sprintf("stream %q is published on node %q", e.Owner.Path, e.Owner.Node)
}

// Options are what a Cluster works with. Registry is required.
type Options struct {
	// Registry is the hub: its events drive claims, its streams give the
	// claims' codecs and reader counts.
	Registry *media.Registry
	// Routes returns the running routes, hashed into the registration;
	// nil: no hash (never reported as differing).
	Routes func() []config.Route
	// Load returns the node's load (CPU is measured here); nil counts the
	// registry's readers as viewers and nothing else.
	Load func() Load
	// Live reports whether path's publisher is connected (false: it left
	// and its readers wait in grace, so another node may take the path
	// over); nil counts every stream in the registry as live.
	Live func(path string) bool
	// Relayed reports whether path's local stream is relayed from the
	// node that owns it (package relay publishes it into the hub like any
	// publisher): such a stream is never claimed, lest an edge take the
	// path from its owner. Asked at each heartbeat, so a relay's publisher
	// kind, set just after its Published event, is known by then), with
	// the Cluster's lock held: it must not call the Cluster. nil: no
	// stream is relayed.
	Relayed func(path string) bool
	// OnLost is told that this node lost path to owner: another node's
	// publisher took it over during grace, or, after a Redis outage, had
	// started earlier. The node should end its own publisher of path (its
	// readers then read from owner). Called on the Cluster's goroutine;
	// it must not block.
	OnLost func(path string, owner Claim)
	// OnLeaseLost is told that another node holds lease name now (this
	// node's renewals stopped long enough for it to expire): stop what
	// the lease guarded. Called on the Cluster's goroutine; must not block.
	OnLeaseLost func(name string)
	// Log receives the cluster's events; nil means slog.Default().
	Log *slog.Logger
}

// Cluster is one node's membership in the cluster. Make it with New, then
// Start, and Stop it at shutdown. Safe for concurrent use.
type Cluster struct {
	cfg       config.Cluster
	self      string
	heartbeat time.Duration
	ttl       time.Duration // ClusterExpiryHeartbeats heartbeats
	opTimeout time.Duration
	rdb       redis.UniversalClient
	o         Options
	log       *slog.Logger
	started   time.Time
	cpu       cpuMeter // used by the loop goroutine only

	// mu guards the fields below. It is never held during a Redis call:
	// the loop and the callers copy what they send, and apply the answer
	// afterwards.
	mu       sync.Mutex
	claims   map[string]*localClaim // paths this node has a publisher of
	releases map[string]bool        // paths to release at the next step
	leases   map[string]bool        // leases this node holds
	state    State
	stateErr string    // why degraded
	changed  time.Time // when state last changed
	differ   []string  // nodes whose routes hash differs from ours
	seen     int       // nodes listed at the last heartbeat
	public   []string  // their public URLs (PublicURLs), this node's included
	reassert bool      // a step failed: the next one registers the claims with modeReassert

	kick     chan struct{} // wakes the loop (a claim or release waits); cap 1
	stop     context.CancelFunc
	done     chan struct{}
	unsub    func()
	stopOnce sync.Once
}

// localClaim is a path this node has a publisher of.
type localClaim struct {
	since      int64 // Unix ms the publisher took the path
	registered bool  // the registry holds it for this node
}

// New builds the cluster from cfg (which must be Enabled and valid) without
// contacting Redis; Start does.
func New(cfg config.Cluster, o Options) (*Cluster, error) {
	if !cfg.Enabled() {
		return nil, errors.New("cluster: not configured (expected cluster.redis or cluster.redis_addrs)")
	}
	if o.Registry == nil {
		return nil, errors.New("cluster: Options.Registry is required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	self := cfg.NodeName()
	if err := config.CheckNodeName(self); err != nil {
		return nil, fmt.Errorf("cluster: node name (cluster.node, default the host name) %w", err)
	}
	hb := cfg.HeartbeatOrDefault()
	opTimeout := min(max(hb/2, minOpTimeout), maxOpTimeout)
	opts, err := universalOptions(cfg, opTimeout)
	if err != nil {
		return nil, err
	}
	quietRedisLog()
	return &Cluster{
		cfg: cfg, self: self, heartbeat: hb, ttl: hb * config.ClusterExpiryHeartbeats, opTimeout: opTimeout,
		rdb: redis.NewUniversalClient(opts), o: o, log: o.Log.With("component", "cluster", "node", self),
		claims: map[string]*localClaim{}, releases: map[string]bool{}, leases: map[string]bool{},
		state: StateOK, kick: make(chan struct{}, 1), done: make(chan struct{}),
	}, nil
}

// universalOptions turns the configuration into the client's options:
// one server (redis), Sentinels (redis_addrs with redis_master) or a Redis
// Cluster (redis_addrs alone). Every call is bounded by opTimeout and not
// retried: the heartbeat is the retry.
func universalOptions(cfg config.Cluster, opTimeout time.Duration) (*redis.UniversalOptions, error) {
	u := &redis.UniversalOptions{}
	if cfg.Redis != "" {
		o, err := redis.ParseURL(cfg.Redis)
		if err != nil {
			return nil, fmt.Errorf("cluster.redis: %w", err)
		}
		u.Addrs, u.DB, u.Username, u.Password, u.TLSConfig = []string{o.Addr}, o.DB, o.Username, o.Password, o.TLSConfig
	} else {
		for _, a := range cfg.RedisAddrs {
			raw := a
			if !strings.Contains(a, "://") {
				raw = "redis://" + a
			}
			o, err := redis.ParseURL(raw)
			if err != nil {
				return nil, fmt.Errorf("cluster.redis_addrs: %w", err)
			}
			u.Addrs = append(u.Addrs, o.Addr)
			u.Username, u.Password, u.TLSConfig = o.Username, o.Password, o.TLSConfig
		}
		u.MasterName = cfg.RedisMaster
		if u.MasterName != "" {
			u.SentinelUsername, u.SentinelPassword = u.Username, u.Password
		} else {
			u.IsClusterMode = true // even with one seed address
		}
	}
	u.ClientName = "bridge"
	u.DialTimeout, u.ReadTimeout, u.WriteTimeout, u.PoolTimeout = opTimeout, opTimeout, opTimeout, opTimeout
	u.ContextTimeoutEnabled = true
	u.MaxRetries = -1 // no retries: the next heartbeat is the retry
	u.PoolSize = 8    // the loop, and lookups of concurrent requests
	u.DisableIdentity = true
	u.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return u, nil
}

// Self is this node's name.
func (c *Cluster) Self() string { return c.self }

// Mode is config.ClusterRelay or config.ClusterRedirect.
func (c *Cluster) Mode() string { return c.cfg.ModeOrDefault() }

// Start registers the node (bounded by one call's timeout: with Redis
// down it starts degraded and keeps trying), subscribes to the registry's
// events and starts the heartbeat. Call it once.
func (c *Cluster) Start() {
	c.started = time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	c.unsub = c.o.Registry.Subscribe(c.onEvent)
	for _, p := range c.o.Registry.Paths() { // published before Start
		c.noteClaim(p)
	}
	c.step(ctx)
	go c.loop(ctx)
}

// Stop stops the heartbeat and removes what this node registered (its
// claims, leases and registration), so the others need not wait for them
// to expire; bounded by a few calls' timeouts. Safe to call more than once.
func (c *Cluster) Stop() { c.halt(true) }

// halt stops the heartbeat; with release, it removes this node's entries
// too (without, as a crashed node would, they expire).
func (c *Cluster) halt(release bool) {
	c.stopOnce.Do(func() {
		if c.stop == nil { // never started
			_ = c.rdb.Close()
			return
		}
		c.unsub()
		c.stop()
		<-c.done
		if release {
			c.releaseAll()
		}
		_ = c.rdb.Close()
	})
}

// loop runs a step every heartbeat, and at once when a claim or release
// waits (kick).
func (c *Cluster) loop(ctx context.Context) {
	defer close(c.done)
	defer panics.Recover("cluster heartbeat", c.log, nil)
	t := time.NewTicker(c.heartbeat)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
			// Publishers coming and going wake the loop; steps stay at
			// least a quarter heartbeat apart, so churn costs Redis at most
			// 4 steps a heartbeat (a kick's work waits that long at most).
			if wait := time.Until(last.Add(c.heartbeat / 4)); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		last = time.Now()
		// One bad step (a panic) must not end the heartbeat: the node's
		// entries would expire while it still serves.
		panics.Do("cluster heartbeat", c.log, func() { c.step(ctx) })
	}
}

func (c *Cluster) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// onEvent follows the hub: a published path is claimed, an ended one
// released, both by the loop (a Redis call must not hold up a publisher).
func (c *Cluster) onEvent(e media.Event) {
	defer panics.Recover("cluster registry events", c.log, nil)
	switch e.Kind {
	case media.Published:
		c.noteClaim(e.Path)
	case media.Ended:
		c.mu.Lock()
		if _, ok := c.claims[e.Path]; ok {
			delete(c.claims, e.Path)
			c.releases[e.Path] = true
		}
		c.mu.Unlock()
	}
	c.wake()
}

// noteClaim records that this node has a publisher of path, to be claimed
// by the next step (unless Claim did it already).
func (c *Cluster) noteClaim(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.releases, path)
	if _, ok := c.claims[path]; ok {
		return
	}
	if len(c.claims) >= MaxClaims {
		c.log.Warn("too many claimed paths: this one is served here but not registered", "stream", path, "max", MaxClaims)
		return
	}
	c.claims[path] = &localClaim{since: time.Now().UnixMilli()}
}

// Holds reports whether this node holds path's claim: the registry has
// it for this node, or, while Redis is unreachable, this node has the
// path's publisher (degraded mode serves locally). What only the owner of
// a path may run (its forwards) asks it; a claim waiting for its first
// registration is not held yet.
func (c *Cluster) Holds(path string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	lc, ok := c.claims[path]
	return ok && (lc.registered || c.state == StateDegraded)
}

// Status is the cluster's state for the API and /readyz.
type Status struct {
	State State  `json:"state"`
	Node  string `json:"node"`
	Mode  string `json:"mode"`
	// Error says why the state is degraded.
	Error string `json:"error,omitempty"`
	// Since is when the state last changed.
	Since time.Time `json:"since"`
	// Nodes counts the live nodes at the last heartbeat, this one included.
	Nodes int `json:"nodes"`
	// Claims counts the paths this node owns (or holds locally while
	// degraded).
	Claims int `json:"claims"`
	// RoutesDiffer lists the nodes whose routes differ from this node's.
	RoutesDiffer []string `json:"routes_differ,omitempty"`
}

// Status reports the state without contacting Redis.
func (c *Cluster) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Status{State: c.state, Node: c.self, Mode: c.Mode(), Error: c.stateErr, Since: c.changed,
		Nodes: c.seen, Claims: len(c.claims), RoutesDiffer: append([]string(nil), c.differ...)}
}

// routesHash is an HMAC of the routes with the cluster token: equal
// routes give equal hashes on every node, and the hash reveals nothing of
// the keys in them to whoever reads Redis.
func (c *Cluster) routesHash() string {
	if c.o.Routes == nil {
		return ""
	}
	b, err := json.Marshal(c.o.Routes())
	if err != nil {
		return ""
	}
	m := hmac.New(sha256.New, []byte(c.cfg.Token))
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// setState records how the step's Redis work went; a change of state is
// logged once. After any failure the next successful step registers every
// claim again with modeReassert: Redis may have lost them (a restart) or
// another node may have claimed the same path meanwhile.
func (c *Cluster) setState(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if err != nil {
		c.reassert = true
		for _, lc := range c.claims {
			lc.registered = false
		}
	}
	switch {
	case err != nil && c.state == StateOK:
		c.state, c.stateErr, c.changed = StateDegraded, err.Error(), now
		c.log.Warn("redis unreachable: serving what this node has, registry lookups unavailable until it is back", "error", err)
	case err == nil && c.state == StateDegraded:
		down := now.Sub(c.changed)
		c.state, c.stateErr, c.changed = StateOK, "", now
		c.log.Info("redis is back: this node, its streams and leases are registered again", "down", down.Round(time.Millisecond).String())
	case c.changed.IsZero():
		c.changed = now
	}
}

// degraded reports whether Redis is known unreachable.
func (c *Cluster) degraded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == StateDegraded
}

// opCtx bounds one Redis call.
func (c *Cluster) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opTimeout)
}

// Metrics returns the cluster's collector (bridge_cluster_redis_up and
// the registry gauges), to register with metrics.Metrics.Register.
func (c *Cluster) Metrics() *metrics.Cluster {
	return metrics.NewCluster(func() metrics.ClusterStats {
		s := c.Status()
		return metrics.ClusterStats{RedisUp: s.State == StateOK, Nodes: s.Nodes, Claims: s.Claims, RoutesDiffer: len(s.RoutesDiffer)}
	})
}
