package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/streampath"
)

// Claim asks whether this node's new publisher of path may have it, and
// claims it if so (admission calls it before accepting a publisher). It is
// refused with *OwnedError while another node's publisher of path is live;
// a path whose owner's publisher is in grace is taken over (that node is
// told through its OnLost). While Redis is unreachable the publisher is
// admitted and the path held locally, to be registered when Redis is back.
// One Redis call, bounded by the cluster's call timeout.
func (c *Cluster) Claim(ctx context.Context, path string) error {
	if err := streampath.Check(path); err != nil {
		return fmt.Errorf("cluster: claim %q: %w", path, err)
	}
	c.noteClaim(path)
	c.mu.Lock()
	lc, ok := c.claims[path]
	var since int64
	if ok {
		since = lc.since
	}
	c.mu.Unlock()
	if !ok || c.degraded() {
		return nil // over MaxClaims (logged), or degraded: served locally
	}
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	cmds, err := c.runScripts(ctx, claimScript, []scriptCall{c.claimCall(path, since, modeClaim)})
	if err != nil {
		c.log.Warn("claim not registered: redis did not answer; serving the publisher here", "stream", path, "error", err)
		return nil
	}
	set, cur, err := claimResult(cmds[0])
	if err != nil {
		return nil
	}
	if !set {
		c.mu.Lock()
		if c.claims[path] == lc {
			delete(c.claims, path)
		}
		c.mu.Unlock()
		return &OwnedError{Owner: cur}
	}
	c.mu.Lock()
	lc.registered = true
	c.mu.Unlock()
	c.tookOver(path, cur)
	return nil
}

// tookOver logs a claim taken from another node (its publisher was in
// grace, or started later, after an outage).
func (c *Cluster) tookOver(path string, prev Claim) {
	if prev.Node != "" && prev.Node != c.self {
		c.log.Info("took the stream over from another node", "stream", path, "from", prev.Node, "their_state", string(prev.State))
	}
}

// Owner returns path's claim, if any node holds one (this node's own
// included: compare Claim.Node with Self). While degraded it returns
// ErrUnavailable at once. One Redis call, bounded.
func (c *Cluster) Owner(ctx context.Context, path string) (Claim, bool, error) {
	if c.degraded() {
		return Claim{}, false, ErrUnavailable
	}
	if streampath.Check(path) != nil {
		return Claim{}, false, nil // never claimed
	}
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	v, err := c.rdb.Get(ctx, streamKey(path)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return Claim{}, false, nil
	case err != nil:
		return Claim{}, false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var cl Claim
	if !decode(v, &cl) {
		return Claim{}, false, nil
	}
	return cl, true, nil
}

// Streams lists the claims of the whole cluster (at most
// MaxStreamsListed), by path.
func (c *Cluster) Streams(ctx context.Context) ([]Claim, error) {
	var out []Claim
	err := c.list(ctx, keyStreams, streamKey, MaxStreamsListed, func(v string) {
		var cl Claim
		if decode(v, &cl) {
			out = append(out, cl)
		}
	})
	slices.SortFunc(out, func(a, b Claim) int { return cmp.Compare(a.Path, b.Path) })
	return out, err
}

// Nodes lists the live nodes (at most MaxNodes), this one included, by
// name.
func (c *Cluster) Nodes(ctx context.Context) ([]NodeInfo, error) {
	var out []NodeInfo
	err := c.list(ctx, keyNodes, nodeKey, MaxNodes, func(v string) {
		var n NodeInfo
		if decode(v, &n) {
			out = append(out, n)
		}
	})
	slices.SortFunc(out, func(a, b NodeInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out, err
}

// LeastLoaded returns the least loaded other node that can take a new
// session: alive, not draining, under its session limit, with the same
// routes as this node. false when there is none.
func (c *Cluster) LeastLoaded(ctx context.Context) (NodeInfo, bool, error) {
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return NodeInfo{}, false, err
	}
	mine := c.routesHash()
	var best NodeInfo
	found := false
	for _, n := range nodes {
		l := n.Load
		if n.Name == c.self || l.Draining || l.MaxSessions > 0 && l.Sessions >= l.MaxSessions || n.Routes != mine {
			continue
		}
		if !found || loadScore(l) < loadScore(best.Load) {
			best, found = n, true
		}
	}
	return best, found, nil
}

// loadScore orders nodes for LeastLoaded: the fuller of their session
// slots and their CPU.
func loadScore(l Load) float64 {
	s := l.CPU
	if l.MaxSessions > 0 {
		s = max(s, float64(l.Sessions)/float64(l.MaxSessions))
	}
	return s
}

// list reads the entries indexed in the sorted set index (those not past
// their expiry), at most limit, in batches; each live value goes to add.
// ErrUnavailable at once while degraded.
func (c *Cluster) list(ctx context.Context, index string, key func(string) string, limit int, add func(string)) error {
	if c.degraded() {
		return ErrUnavailable
	}
	return c.listNow(ctx, index, key, limit, add)
}

// listNow is list, asking Redis whatever the state (the heartbeat, which
// decides the state).
func (c *Cluster) listNow(ctx context.Context, index string, key func(string) string, limit int, add func(string)) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	names, err := c.rdb.ZRangeByScore(ctx, index, &redis.ZRangeBy{
		Min: strconv.FormatInt(time.Now().UnixMilli(), 10), Max: "+inf", Count: int64(limit),
	}).Result()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	const batch = 512 // MGET of at most this many keys: a few hundred KB
	for len(names) > 0 {
		n := min(batch, len(names))
		keys := make([]string, n)
		for i, name := range names[:n] {
			keys[i] = key(name)
		}
		names = names[n:]
		vals, err := c.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		for _, v := range vals {
			if s, ok := v.(string); ok {
				add(s)
			}
		}
	}
	return nil
}

// AcquireLease takes lease name (a pull's, say) for this node, or reports
// that another node holds it. A lease taken is renewed every heartbeat
// until ReleaseLease; a node that stops renewing loses it after
// config.ClusterExpiryHeartbeats heartbeats, and another node may take it.
// While degraded it is ErrUnavailable: without Redis no node may start
// what a lease guards.
func (c *Cluster) AcquireLease(ctx context.Context, name string) (bool, error) {
	if name == "" || len(name) > maxLeaseName {
		return false, fmt.Errorf("cluster: lease name of %d bytes (expected 1-%d)", len(name), maxLeaseName)
	}
	if c.degraded() {
		return false, ErrUnavailable
	}
	c.mu.Lock()
	held, full := c.leases[name], len(c.leases) >= MaxLeases
	c.mu.Unlock()
	if !held && full {
		return false, fmt.Errorf("cluster: lease %q: this node holds %d leases already (the maximum)", name, MaxLeases)
	}
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	cmds, err := c.runScripts(ctx, leaseScript, []scriptCall{c.leaseCall(name)})
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if n, _ := cmds[0].Int(); n != 1 {
		return false, nil
	}
	c.mu.Lock()
	c.leases[name] = true
	c.mu.Unlock()
	return true, nil
}

// ReleaseLease gives lease name up, if this node holds it.
func (c *Cluster) ReleaseLease(ctx context.Context, name string) error {
	c.mu.Lock()
	held := c.leases[name]
	delete(c.leases, name)
	c.mu.Unlock()
	if !held {
		return nil
	}
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	_, err := c.runScripts(ctx, unleaseScript, []scriptCall{{keys: []string{leaseKey(name)}, args: []any{c.self}}})
	return err
}

// scriptCall is one call of a script in a pipeline.
type scriptCall struct {
	keys []string
	args []any
}

// runScripts runs calls of s in one pipeline (one round trip for every
// claim of a heartbeat), by hash; a Redis that lost its scripts (it
// restarted) gets s loaded and the pipeline once more.
func (c *Cluster) runScripts(ctx context.Context, s *redis.Script, calls []scriptCall) ([]*redis.Cmd, error) {
	for attempt := 0; ; attempt++ {
		pipe := c.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(calls))
		for i, call := range calls {
			cmds[i] = s.EvalSha(ctx, pipe, call.keys, call.args...)
		}
		_, err := pipe.Exec(ctx)
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") && attempt == 0 {
			if err := s.Load(ctx, c.rdb).Err(); err != nil {
				return nil, err
			}
			continue
		}
		return cmds, err
	}
}

// claimCall is the claim script's call for path on behalf of this node.
func (c *Cluster) claimCall(path string, since int64, mode string) scriptCall {
	cl := Claim{Path: path, Node: c.self, PublicURL: c.cfg.PublicURL, InternalURL: c.cfg.InternalURLOrDefault(),
		State: PublisherLive, Since: since}
	if st, ok := c.o.Registry.Get(path); ok {
		for _, t := range st.Tracks() {
			if len(cl.Codecs) < maxCodecs && t.Codec != nil {
				cl.Codecs = append(cl.Codecs, t.Codec.Name())
			}
		}
		cl.Readers = st.Readers()
	}
	if c.o.Live != nil && !c.o.Live(path) {
		cl.State = PublisherGrace
	}
	v, _ := json.Marshal(cl)
	expiry := time.Now().Add(c.ttl).UnixMilli()
	return scriptCall{keys: []string{streamKey(path), keyStreams},
		args: []any{c.self, string(v), c.ttl.Milliseconds(), since, mode, expiry, path, string(cl.State)}}
}

func (c *Cluster) leaseCall(name string) scriptCall {
	return scriptCall{keys: []string{leaseKey(name)}, args: []any{c.self, c.ttl.Milliseconds()}}
}

// claimResult reads the claim script's answer: whether it set the claim,
// and the claim that was there (the holder's when not set).
func claimResult(cmd *redis.Cmd) (set bool, cur Claim, err error) {
	res, err := cmd.Slice()
	if err != nil {
		return false, Claim{}, err
	}
	if len(res) != 2 {
		return false, Claim{}, fmt.Errorf("claim script answered %d values (expected 2)", len(res))
	}
	n, _ := res[0].(int64)
	if s, ok := res[1].(string); ok && s != "" {
		decode(s, &cur)
	}
	return n == 1, cur, nil
}

// decode reads a registry value into v; false for one too big or not
// ours.
func decode(s string, v any) bool {
	return len(s) <= maxValue && json.Unmarshal([]byte(s), v) == nil
}

// step is one heartbeat: if degraded, see whether Redis is back; then
// register the node, release ended paths, claim or refresh this node's
// paths, renew its leases and look at the other nodes. Any Redis error
// makes the cluster degraded until a later step succeeds.
func (c *Cluster) step(ctx context.Context) {
	if c.degraded() {
		pctx, cancel := c.opCtx(ctx)
		err := c.rdb.Ping(pctx).Err()
		cancel()
		if err != nil {
			return
		}
	}
	// Back only once the whole step worked: a Redis Cluster that answers
	// PING may still refuse commands (CLUSTERDOWN) while it recovers.
	c.setState(c.sync(ctx))
}

// sync does the step's Redis work.
func (c *Cluster) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 4*c.opTimeout) // four round trips below, at most
	defer cancel()
	if err := c.register(ctx); err != nil {
		return err
	}
	if err := c.syncClaims(ctx); err != nil {
		return err
	}
	if err := c.renewLeases(ctx); err != nil {
		return err
	}
	return c.watchNodes(ctx)
}

// register writes this node's registration and prunes the index.
func (c *Cluster) register(ctx context.Context) error {
	l := Load{}
	if c.o.Load != nil {
		l = c.o.Load()
	} else {
		for _, p := range c.o.Registry.Paths() {
			if st, ok := c.o.Registry.Get(p); ok {
				l.Viewers += st.Readers()
			}
		}
	}
	l.CPU = c.cpu.sample()
	info := NodeInfo{Name: c.self, PublicURL: c.cfg.PublicURL, InternalURL: c.cfg.InternalURLOrDefault(),
		Mode: c.Mode(), Routes: c.routesHash(), Load: l, Started: c.started}
	v, _ := json.Marshal(info)
	now := time.Now()
	pipe := c.rdb.Pipeline()
	pipe.Set(ctx, nodeKey(c.self), v, c.ttl)
	pipe.ZAdd(ctx, keyNodes, redis.Z{Score: float64(now.Add(c.ttl).UnixMilli()), Member: c.self})
	prune := "(" + strconv.FormatInt(now.Add(-zsetSlack).UnixMilli(), 10)
	pipe.ZRemRangeByScore(ctx, keyNodes, "-inf", prune)
	pipe.ZRemRangeByScore(ctx, keyStreams, "-inf", prune)
	_, err := pipe.Exec(ctx)
	return err
}

// syncClaims releases the paths whose stream ended and claims (or
// refreshes) the others in one pipeline each; a path found held by another
// node is given up and OnLost told.
func (c *Cluster) syncClaims(ctx context.Context) error {
	c.mu.Lock()
	var released []string
	for p := range c.releases {
		released = append(released, p)
	}
	clear(c.releases)
	type pending struct {
		path string
		lc   *localClaim
		mode string
	}
	var todo []pending
	for p, lc := range c.claims {
		if c.o.Relayed != nil && c.o.Relayed(p) {
			// A relay from the owner: never this node's claim (registered
			// only if a step ran between the relay's Publish and its
			// SetKind: given back then).
			if lc.registered {
				c.releases[p] = true
			}
			delete(c.claims, p)
			continue
		}
		mode := modeRefresh
		switch {
		case c.reassert && !lc.registered:
			mode = modeReassert
		case !lc.registered:
			mode = modeClaim
		}
		todo = append(todo, pending{p, lc, mode})
	}
	reasserting := c.reassert
	c.mu.Unlock()

	if len(released) > 0 {
		calls := make([]scriptCall, len(released))
		for i, p := range released {
			calls[i] = scriptCall{keys: []string{streamKey(p), keyStreams}, args: []any{c.self, p}}
		}
		if _, err := c.runScripts(ctx, releaseScript, calls); err != nil {
			c.mu.Lock()
			for _, p := range released {
				if _, again := c.claims[p]; !again {
					c.releases[p] = true // retried at the next step
				}
			}
			c.mu.Unlock()
			return err
		}
	}
	if len(todo) > 0 {
		calls := make([]scriptCall, len(todo))
		for i, t := range todo {
			calls[i] = c.claimCall(t.path, t.lc.since, t.mode)
		}
		cmds, err := c.runScripts(ctx, claimScript, calls)
		if err != nil {
			return err
		}
		for i, t := range todo {
			set, cur, err := claimResult(cmds[i])
			if err != nil {
				return err
			}
			if set {
				c.mu.Lock()
				t.lc.registered = true
				c.mu.Unlock()
				c.tookOver(t.path, cur)
				continue
			}
			c.lost(t.path, t.lc, cur)
		}
	}
	if reasserting {
		c.mu.Lock()
		c.reassert = false
		c.mu.Unlock()
	}
	return nil
}

// lost gives path up to owner, which holds it in the registry.
func (c *Cluster) lost(path string, lc *localClaim, owner Claim) {
	c.mu.Lock()
	mine := c.claims[path] == lc
	if mine {
		delete(c.claims, path)
	}
	c.mu.Unlock()
	if !mine {
		return // ended or claimed again meanwhile
	}
	c.log.Warn("another node holds the stream: this node's publisher must end", "stream", path, "owner", owner.Node,
		"owner_since", owner.SinceTime().Format(time.RFC3339Nano), "owner_state", string(owner.State))
	if c.o.OnLost != nil {
		panics.Do("cluster OnLost", c.log, func() { c.o.OnLost(path, owner) })
	}
}

// renewLeases renews every lease this node holds; one another node holds
// now is dropped and OnLeaseLost told.
func (c *Cluster) renewLeases(ctx context.Context) error {
	c.mu.Lock()
	names := make([]string, 0, len(c.leases))
	for n := range c.leases {
		names = append(names, n)
	}
	c.mu.Unlock()
	if len(names) == 0 {
		return nil
	}
	calls := make([]scriptCall, len(names))
	for i, n := range names {
		calls[i] = c.leaseCall(n)
	}
	cmds, err := c.runScripts(ctx, leaseScript, calls)
	if err != nil {
		return err
	}
	for i, n := range names {
		if v, err := cmds[i].Int(); err != nil || v == 1 {
			continue
		}
		c.mu.Lock()
		held := c.leases[n]
		delete(c.leases, n)
		c.mu.Unlock()
		if !held {
			continue // released meanwhile
		}
		c.log.Warn("lease lost to another node", "lease", n)
		if c.o.OnLeaseLost != nil {
			panics.Do("cluster OnLeaseLost", c.log, func() { c.o.OnLeaseLost(n) })
		}
	}
	return nil
}

// watchNodes lists the nodes: their number, and those whose routes differ
// from this node's (each newly differing one logged once).
func (c *Cluster) watchNodes(ctx context.Context) error {
	var nodes []NodeInfo
	err := c.listNow(ctx, keyNodes, nodeKey, MaxNodes, func(v string) {
		var n NodeInfo
		if decode(v, &n) {
			nodes = append(nodes, n)
		}
	})
	if err != nil {
		return err
	}
	mine := c.routesHash()
	var differ []string
	public := make([]string, 0, len(nodes))
	for _, n := range nodes {
		if n.Name != c.self && n.Routes != mine {
			differ = append(differ, n.Name)
		}
		public = append(public, n.PublicURL)
	}
	slices.Sort(differ)
	c.mu.Lock()
	for _, n := range differ {
		if !slices.Contains(c.differ, n) {
			c.log.Warn("another node's routes differ from this node's: a path may be routed differently there", "other", n)
		}
	}
	c.differ, c.seen, c.public = differ, len(nodes), public
	c.mu.Unlock()
	return nil
}

// PublicURLs returns the public URLs of the nodes listed at the last
// heartbeat (at most MaxNodes) and this node's own: where a client of
// this node may be sent (307s, session Locations). It asks nothing of
// Redis, so a web page may ask it on every request; while Redis is
// unreachable it is the last list read.
func (c *Cluster) PublicURLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.public)+1)
	if c.cfg.PublicURL != "" {
		out = append(out, c.cfg.PublicURL)
	}
	return append(out, c.public...)
}

// releaseAll removes this node's claims, leases and registration (Stop).
func (c *Cluster) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*c.opTimeout)
	defer cancel()
	c.mu.Lock()
	var claims, leases []string
	for p := range c.claims {
		claims = append(claims, p)
	}
	for p := range c.releases {
		claims = append(claims, p)
	}
	for n := range c.leases {
		leases = append(leases, n)
	}
	clear(c.claims)
	clear(c.releases)
	clear(c.leases)
	c.mu.Unlock()
	var calls []scriptCall
	for _, p := range claims {
		calls = append(calls, scriptCall{keys: []string{streamKey(p), keyStreams}, args: []any{c.self, p}})
	}
	if len(calls) > 0 {
		_, _ = c.runScripts(ctx, releaseScript, calls)
	}
	calls = calls[:0]
	for _, n := range leases {
		calls = append(calls, scriptCall{keys: []string{leaseKey(n)}, args: []any{c.self}})
	}
	if len(calls) > 0 {
		_, _ = c.runScripts(ctx, unleaseScript, calls)
	}
	pipe := c.rdb.Pipeline()
	pipe.Del(ctx, nodeKey(c.self))
	pipe.ZRem(ctx, keyNodes, c.self)
	if _, err := pipe.Exec(ctx); err != nil {
		c.log.Info("could not remove this node's registration (it expires by itself)", "error", err)
	}
}
