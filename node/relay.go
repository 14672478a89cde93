package node

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/relay"
)

// Relays from other nodes: a reader of a path no local publisher or pull
// serves, which Options.Relay's Source says another node owns, starts a
// relay of it (package relay) as an on-demand pull of kind pullRelay, so
// one relay per stream serves every local reader, and it ends when the
// last one has left (relayIdle). The route's read policy (keys,
// protocols, max_readers) applies to the local readers as to any.

// pullRelay is the pullSpec kind of a relay; its url is the owner's base
// URL.
const pullRelay = "relay"

// relayIdle is how long a relay runs with no local reader: long enough for
// a player that reloads the page to find it still running, short enough
// that the origin stops sending to an edge nobody watches on within a few
// seconds (a stream stays in the local registry for its grace after that,
// and a reader coming back within it starts the relay again).
const relayIdle = 3 * time.Second

// relaySourceWait bounds the lookup of a path's owner (a Redis round trip).
const relaySourceWait = 2 * time.Second

// demandRelay starts a relay of path from the node that owns it, unless
// one runs already, and reports whether one runs now (the reader waits for
// it). It relays nothing without a Source, for a path another node does
// not own, or for a route with a pull of its own.
func (p *pulls) demandRelay(ctx context.Context, path string) bool {
	src := p.n.relay.Source
	if src == nil {
		return false
	}
	if r, ok := p.n.Config().Match(path); !ok || r.Pull != "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, relaySourceWait)
	defer cancel()
	base, ok := src(ctx, path)
	if !ok {
		return false
	}
	p.run(pullSpec{path: path, url: base, kind: pullRelay, onDemand: true})
	return true
}

// relayWanted reports whether a running relay of path may go on under cfg:
// a route still matches the path and has no pull of its own.
func relayWanted(cfg *config.Config, path string) bool {
	r, ok := cfg.Match(path)
	return ok && r.Pull == ""
}

// newRelay builds the runner of a relay pull.
func (n *Node) newRelay(spec pullSpec, log *slog.Logger) func(context.Context) {
	token := ""
	if n.relay.Token != nil {
		token = n.relay.Token()
	}
	return relay.NewPuller(relay.PullConfig{Registry: n.reg, Path: spec.path, Base: spec.url, Source: n.relay.Source,
		Token: token, Client: n.relay.Client, Counters: n.relay.Counters, Log: log}).Run
}

// relayStopWait bounds how long a publisher admitted here waits for the
// relay of its path to leave the stream (the relay's HTTP body is closed
// and its publication left: milliseconds).
const relayStopWait = 2 * time.Second

// errPublishedHere stops a relay: a publisher of the path was admitted on
// this node.
var errPublishedHere = errors.New("relay stopped: a publisher of the stream was admitted on this node")

// stopRelay stops path's relay, if one runs, so that a publisher admitted
// here (it took the path over while the owner's publisher was in grace)
// finds the stream waiting in grace and attaches to it, and the local
// readers go on with it. It waits for the relay to leave, at most
// relayStopWait.
func (p *pulls) stopRelay(path string) {
	p.mu.Lock()
	run, ok := p.running[path]
	if ok && run.spec.kind == pullRelay {
		delete(p.running, path)
	}
	p.mu.Unlock()
	if !ok || run.spec.kind != pullRelay {
		return
	}
	run.stop(errPublishedHere)
	t := time.NewTimer(relayStopWait)
	defer t.Stop()
	select {
	case <-run.done:
	case <-t.C:
		p.n.log.Warn("the relay of a stream published here now did not stop in time", "stream", path, "session", run.session.ID, "waited", relayStopWait)
	}
}

// idleOf is how long an on-demand pull of kind runs with nobody reading.
func idleOf(kind string) time.Duration {
	if kind == pullRelay {
		return relayIdle
	}
	return pullIdle
}

// locate starts what brings path's stream here when it is not published
// locally: the route's on-demand pull, or a relay. A stream relayed here
// before, waiting in its grace period because its relay stopped with its
// last reader, has its relay started again. It reports whether the reader
// should wait for the stream.
func (n *Node) locate(ctx context.Context, path string) bool {
	st, ok := n.reg.Get(path)
	switch {
	case !ok:
		return n.pulls.demand(path) || n.pulls.demandRelay(ctx, path)
	case st.PublisherKind() == access.KindRelay:
		n.pulls.demandRelay(ctx, path)
	}
	return true
}
