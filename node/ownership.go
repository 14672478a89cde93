package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// What runs where in a cluster (Options.Ownership; nothing changes
// without it):
//
//   - One publisher per path cluster-wide. Authorize claims the path for a
//     publisher it admits; a path whose publisher is live on another node
//     is refused (*PublishedElsewhere: WHIP 409, RTMP and SRT rejections
//     naming the owner node) or, for WHIP in redirect mode, sent to the
//     owner with a 307. The claim ends with the stream (after its grace).
//     A node told that another node owns a path it publishes (LostPath:
//     the earlier publisher wins after a Redis outage, or another node's
//     publisher took the path over in grace) ends its own publisher, and
//     its readers wait in grace for a relay from the owner.
//   - Forwards run on the node that holds the path's claim (ownership is
//     their lease): elsewhere they stop, and the scan looks again every
//     ownershipRecheck.
//   - A pull runs under a lease named leaseName(path): an always-on pull
//     waits on every node until one takes the lease, and when that node
//     dies (its lease expires after three heartbeats) another one takes it
//     within a heartbeat more. An on-demand pull is started by the node
//     whose reader asks, under the same lease; readers at other nodes are
//     served by a relay from it (relay.go) once it publishes.

// Ownership is the cluster's registry as the node's publishers, forwards
// and pulls ask it (package cluster, adapted by the process's wiring).
// Each call is bounded by the registry.
type Ownership interface {
	// ClaimPublisher claims path for a new publisher on this node. ok
	// false: another node's publisher of path is live, owner says which;
	// an error means the registry cannot answer now (the publisher is
	// served here).
	ClaimPublisher(ctx context.Context, path string) (owner Peer, ok bool, err error)
	// Holds reports whether this node holds path's claim (without
	// contacting Redis).
	Holds(path string) bool
	// AcquireLease takes or renews lease name for this node: false when
	// another node holds it; an error when the registry cannot answer
	// (then no node may start what the lease guards).
	AcquireLease(ctx context.Context, name string) (bool, error)
	// ReleaseLease gives lease name up.
	ReleaseLease(ctx context.Context, name string) error
}

// PublishedElsewhere refuses a publisher: another node of the cluster has
// the path's live publisher. It is a media.ErrPublisherExists (RTMP
// answers it as NetStream.Publish.BadName, SRT as 1409 REJX_CONFLICT, each
// with this message).
type PublishedElsewhere struct {
	Path, Node string
}

func (e *PublishedElsewhere) Error() string {
	return fmt.Sprintf("stream %q is already published on node %q of the cluster", e.Path, e.Node)
}

// Is makes it a media.ErrPublisherExists.
func (e *PublishedElsewhere) Is(target error) bool { return target == media.ErrPublisherExists }

// ownershipRecheck is how often the forward manager looks at ownership
// in a cluster: a claim changes hands at a heartbeat (2 s by default), so
// a forward starts or stops within a second of it.
const ownershipRecheck = time.Second

// leaseName is the cluster lease of path's pull.
func leaseName(path string) string { return "pull:" + path }

// claim claims the path of an admitted publisher in the cluster (nil
// outside one): nil when this node may have it (or the registry cannot
// say: the publisher is served here), else the refusal, or, for WHIP in
// redirect mode, an *access.Elsewhere to the owner's WHIP endpoint. A
// relay of the path running here stops when the publisher is admitted: it
// takes the stream over, with its local readers (stopRelay).
//
// A redirected publisher gets no signed cluster_redirect: a route with a
// publish key needs it at the owner as here (the WHIP client sends its
// bearer token again, as a redirected WHIP client that keeps
// Authorization does), and a route without one needs nothing; a signature
// standing for the key would let the redirect replace a key the owner
// checks itself.
func (n *Node) claim(req access.Request) error {
	if n.ownership == nil || req.Action != access.Publish {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterLookupWait)
	defer cancel()
	owner, ok, err := n.ownership.ClaimPublisher(ctx, req.Path)
	switch {
	case err != nil:
		n.log.Debug("claim not checked: the cluster's registry cannot answer; serving the publisher here", "stream", req.Path, "peer", req.Remote, "error", err)
		n.pulls.stopRelay(req.Path) // relay.go: the publisher takes the stream here
		return nil
	case ok:
		n.pulls.stopRelay(req.Path)
		return nil
	}
	refusal := &PublishedElsewhere{Path: req.Path, Node: owner.Name}
	if req.Protocol != access.WHIP {
		return refusal
	}
	if n.Config().Cluster.ModeOrDefault() == config.ClusterRedirect && owner.PublicURL != "" {
		return &access.Elsewhere{Location: whipURL(owner, req.Path)}
	}
	return &rtc.Error{Status: http.StatusConflict, Msg: refusal.Error()}
}

// LostPath is told that another node (owner) owns path now, which this
// node published (package cluster's OnLost): the earlier publisher wins
// once Redis is back after an outage, or another node's publisher took
// the path over while this one's was in grace. A live publisher of path
// here is ended through the first of tables that has it; its readers wait
// in the path's grace, and a relay from owner is started for them when
// Options.Relay can find it. A stream relayed here is not this node's to
// end.
func (n *Node) LostPath(path, owner string, tables ...SessionTable) {
	st, ok := n.reg.Get(path)
	if !ok || st.PublisherKind() == access.KindRelay {
		return
	}
	reason := fmt.Sprintf("node %q of the cluster owns the stream", owner)
	if st.Live() {
		ended := false
		for _, tab := range tables {
			for _, s := range tab.Sessions() {
				if s.Stream == path && s.Kind.Publishes() && tab.EndSession(s.ID, reason) {
					ended = true
					n.log.Warn("publisher ended: another node owns the stream", "stream", path, "session", s.ID, "peer", s.Peer, "owner", owner)
					break
				}
			}
			if ended {
				break
			}
		}
		if !ended {
			n.log.Warn("another node owns the stream, and its publisher here was not found to end", "stream", path, "owner", owner)
		}
	}
	if st.Readers() > 0 {
		panics.Go("relay after a lost path", n.log, func() { n.pulls.demandRelay(context.Background(), path) })
	}
}

// SessionTable is one adapter's sessions, as LostPath ends a publisher
// through it (the RTMP and SRT servers and the WebRTC sessions table are
// ones).
type SessionTable interface {
	Sessions() []access.Session
	EndSession(id, reason string) bool
}

// StreamLive reports whether path has a live local publisher, or no
// stream yet: a claim Authorize just made is for a publisher on its way,
// and registering it as in grace would let another node take the path in
// the meantime. It is what the cluster registers as the claim's state
// (package cluster's Options.Live).
func (n *Node) StreamLive(path string) bool {
	st, ok := n.reg.Get(path)
	return !ok || st.Live()
}

// ownedOnly drops from configured the forwards of paths this node does not
// own in the cluster, and returns those paths (nil outside a cluster).
func (n *Node) ownedOnly(configured map[forwardSpec]bool) map[string]bool {
	if n.ownership == nil {
		return nil
	}
	elsewhere := map[string]bool{}
	for spec := range configured {
		if !n.ownership.Holds(spec.path) {
			elsewhere[spec.path] = true
			delete(configured, spec)
		}
	}
	return elsewhere
}

// leases are the cluster leases of the running pulls: LeaseLost stops the
// pull whose lease another node took. Safe for concurrent use; the zero
// value is ready.
type leases struct {
	mu   sync.Mutex
	held map[string]context.CancelCauseFunc // guarded by mu: lease name -> stops the pull holding it
}

// errLeaseLost stops a pull whose lease another node holds now.
var errLeaseLost = errors.New("pull stopped: another node of the cluster took its lease (it runs there)")

// LeaseLost is told that another node holds lease name now (package
// cluster's OnLeaseLost): the pull it guarded stops here and waits for
// the lease again.
func (n *Node) LeaseLost(name string) {
	n.leases.mu.Lock()
	stop := n.leases.held[name]
	n.leases.mu.Unlock()
	if stop != nil {
		stop(errLeaseLost)
	}
}

// leased runs a pull's runner only while this node holds the pull's
// lease (in a cluster; run itself outside one, and for relays, which a
// reader here asked for): it waits for the lease, taking it within a
// heartbeat of it being free, runs the pull until ctx ends or the lease
// is lost, and gives it back when ctx ends.
func (n *Node) leased(spec pullSpec, run func(context.Context), log *slog.Logger) func(context.Context) {
	if n.ownership == nil || spec.kind == pullRelay {
		return run
	}
	name := leaseName(spec.path)
	return func(ctx context.Context) {
		retry := n.Config().Cluster.HeartbeatOrDefault()
		t := time.NewTimer(0)
		defer t.Stop()
		waiting := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			actx, cancel := context.WithTimeout(ctx, clusterLookupWait)
			ok, err := n.ownership.AcquireLease(actx, name)
			cancel()
			if !ok {
				if !waiting {
					log.Info("pull waits: another node of the cluster runs it (or the registry cannot be reached)", "lease", name, "error", err)
					waiting = true
				}
				t.Reset(retry)
				continue
			}
			waiting = false
			log.Info("pull lease taken: the pull runs on this node", "lease", name)
			pctx, stop := context.WithCancelCause(ctx)
			n.leases.mu.Lock()
			if n.leases.held == nil {
				n.leases.held = map[string]context.CancelCauseFunc{}
			}
			n.leases.held[name] = stop
			n.leases.mu.Unlock()
			run(pctx)
			n.leases.mu.Lock()
			delete(n.leases.held, name)
			n.leases.mu.Unlock()
			stop(nil)
			if ctx.Err() != nil {
				rctx, cancel := context.WithTimeout(context.Background(), clusterLookupWait)
				_ = n.ownership.ReleaseLease(rctx, name)
				cancel()
				return
			}
			t.Reset(retry) // lost: another node runs it; look again later
		}
	}
}

// leaseFree reports whether an on-demand pull of path may start here:
// outside a cluster, or when this node takes (or holds) its lease. When
// another node holds it the reader is served by a relay from that node.
func (n *Node) leaseFree(ctx context.Context, path string) bool {
	if n.ownership == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, clusterLookupWait)
	defer cancel()
	ok, _ := n.ownership.AcquireLease(ctx, leaseName(path))
	return ok
}

// whipURL is peer's WHIP endpoint for path.
func whipURL(peer Peer, path string) string {
	return strings.TrimSuffix(peer.PublicURL, "/") + (&url.URL{Path: "/whip/" + path}).EscapedPath()
}
