package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/redirectsig"
	"github.com/wishbridge/bridge/rtc"
)

// The HTTP side of a cluster: where a new WHIP or WHEP session goes.
//
//   - In redirect mode (cluster.mode: redirect) a WHEP viewer of a stream
//     another node owns is sent there with a 307.
//   - A node at its WebRTC session limit (limits.webrtc_sessions), or
//     drained by an operator (DrainSessions), sends a new WHIP or WHEP
//     client to the least loaded node that can take it with a 307, or
//     answers 503 with Retry-After when none can.
//
// Every 307 carries a cluster_redirect parameter signed for the target node
// (package internal/redirectsig): the target accepts it in place of the
// client's bearer token, which this node checked (browsers drop
// Authorization on a cross-origin redirect), and never redirects that
// request again, so a client is redirected at most once.
//
// The node asks the registry through Cluster; session requests for other
// nodes are forwarded by ForwardSessions (sessionforward.go).

// Peer is another node of the cluster as the registry lists it.
type Peer struct {
	Name string
	// PublicURL is the base URL clients reach the node at (307 targets);
	// InternalURL the one other nodes use (forwarded session requests).
	PublicURL, InternalURL string
}

// Cluster is what the node asks the cluster's registry (package cluster,
// adapted by the process's wiring). Each call is bounded by the registry;
// an error means it cannot answer now (Redis unreachable), and the node
// then serves the client itself if it can.
type Cluster interface {
	// Owner returns the node whose publisher holds path (this one
	// included); false when no node does.
	Owner(ctx context.Context, path string) (Peer, bool, error)
	// Pick returns the least loaded other node that can take a new
	// session: alive, not draining, under its session limit; false when
	// none can.
	Pick(ctx context.Context) (Peer, bool, error)
	// Node returns the live node named name; false when there is none.
	Node(ctx context.Context, name string) (Peer, bool, error)
}

// clusterLookupWait bounds one registry lookup made for a POST: the
// registry bounds its own calls (at most 1 s); this covers a registry
// without that bound.
const clusterLookupWait = 2 * time.Second

// drained is the state DrainSessions sets: why new sessions go elsewhere,
// nil while they are taken.
type drained struct {
	reason string
	since  time.Time
}

// DrainSessions stops (on) or resumes (off) new WHIP and WHEP sessions on
// this node, for a rolling upgrade: while drained, a new client is sent to
// another node that can take it (307) or refused with 503, the sessions
// running go on, and Ready reports not ready so load balancers send new
// clients elsewhere. RTMP and SRT, relays and the node's pulls and forwards
// are not affected. It reports whether the state changed.
func (n *Node) DrainSessions(on bool, reason string) bool {
	if !on {
		return n.drain.Swap(nil) != nil
	}
	if reason == "" {
		reason = "drained by an operator"
	}
	return n.drain.CompareAndSwap(nil, &drained{reason: reason, since: time.Now()})
}

// SessionsDrained returns why new sessions are sent elsewhere and since
// when (DrainSessions); ok false while they are taken.
func (n *Node) SessionsDrained() (reason string, since time.Time, ok bool) {
	d := n.drain.Load()
	if d == nil {
		return "", time.Time{}, false
	}
	return d.reason, d.since, true
}

// Ready is the node's readiness check (/readyz): an error while drained
// by DrainSessions.
func (n *Node) Ready() error {
	if reason, since, ok := n.SessionsDrained(); ok {
		return fmt.Errorf("new sessions go to other nodes since %s: %s", since.UTC().Format(time.RFC3339), reason)
	}
	return nil
}

// Load is what the node tells the cluster of its load, for other nodes'
// choice of where to send a client (Cluster.Pick).
type Load struct {
	// Sessions are the WHIP and WHEP sessions; MaxSessions is
	// limits.webrtc_sessions.
	Sessions, MaxSessions int
	// Viewers are the readers of every stream, all protocols.
	Viewers int
	// Draining: DrainSessions stopped new sessions.
	Draining bool
}

// Load returns the node's load now.
func (n *Node) Load() Load {
	l := Load{MaxSessions: n.Config().Limits.WithDefaults().WebRTCSessions}
	if n.sessions != nil {
		l.Sessions = n.sessions.Len()
	}
	for _, p := range n.reg.Paths() {
		if st, ok := n.reg.Get(p); ok {
			l.Viewers += st.Readers()
		}
	}
	_, _, l.Draining = n.SessionsDrained()
	return l
}

// drainState is Node.drain's type.
type drainState = atomic.Pointer[drained]

// checkRedirect checks the signed redirect req carries, if any: nil
// without one or with a valid one; otherwise a 403 for the client, saying
// why.
func (n *Node) checkRedirect(req access.Request) error {
	if req.Redirect == "" {
		return nil
	}
	cl := n.Config().Cluster
	if cl.Token == "" {
		return rtc.Errorf(http.StatusForbidden, "%s is only accepted within a cluster", access.RedirectParam)
	}
	err := redirectsig.Verify(cl.Token, req.Redirect, redirectAction(req.Action), cl.NodeName(), req.Path, time.Now())
	if err != nil {
		return rtc.Errorf(http.StatusForbidden, "%v", err)
	}
	return nil
}

// redirectAction is what a signed redirect admits for action.
func redirectAction(a access.Action) redirectsig.Action {
	if a == access.Publish {
		return redirectsig.Publish
	}
	return redirectsig.Read
}

// steer decides where an admitted WHIP or WHEP client's new session goes:
// nil to serve it here, an *access.Elsewhere naming the node to ask
// instead, or a 503 when this node cannot take it and no other can. A
// client that arrived with a signed redirect, a dashboard preview and the
// other protocols are always served here.
func (n *Node) steer(req access.Request) error {
	if req.Redirect != "" || req.Preview || req.Protocol != access.WHIP && req.Protocol != access.WHEP {
		return nil
	}
	cfg := n.Config()
	ctx, cancel := context.WithTimeout(context.Background(), clusterLookupWait)
	defer cancel()
	if n.cluster != nil && req.Action == access.Read && cfg.Cluster.ModeOrDefault() == config.ClusterRedirect && !n.PublishedHere(req.Path) {
		owner, ok, err := n.cluster.Owner(ctx, req.Path)
		switch {
		case err != nil:
			// The registry cannot say: serve it here if the node can
			// (Locate answers when it cannot).
			n.log.Debug("owner lookup failed; serving the viewer here", "stream", req.Path, "peer", req.Remote, "error", err)
		case ok && owner.Name != cfg.Cluster.NodeName():
			return n.elsewhere(cfg, owner, req)
		}
	}
	why := n.full(cfg)
	if why == "" {
		return nil
	}
	if n.cluster != nil {
		peer, ok, err := n.cluster.Pick(ctx)
		if err == nil && ok && peer.Name != cfg.Cluster.NodeName() {
			return n.elsewhere(cfg, peer, req)
		}
		if err != nil {
			why += ", and the cluster's registry cannot be reached"
		} else {
			why += ", and no other node can take it"
		}
	}
	e := rtc.Errorf(http.StatusServiceUnavailable, "%s: try again later", why)
	e.RetryAfter = retryElsewhere
	return e
}

// retryElsewhere is the Retry-After of a 503 when no node can take a
// session: about a heartbeat or two for the registry to learn of a node
// that has room again, and what rtc answers at its own limits.
const retryElsewhere = 10 * time.Second

// full says why this node takes no new WebRTC session ("" when it does):
// drained, or, in a cluster, at limits.webrtc_sessions (the sessions table
// would refuse the session with a 503).
func (n *Node) full(cfg *config.Config) string {
	if reason, _, ok := n.SessionsDrained(); ok {
		return "this node takes no new sessions (" + reason + ")"
	}
	if n.cluster == nil || n.sessions == nil {
		return "" // on its own, the sessions table answers its limit
	}
	if max := cfg.Limits.WithDefaults().WebRTCSessions; n.sessions.Len() >= max {
		return fmt.Sprintf("this node is at its WebRTC session limit (%d)", max)
	}
	return ""
}

// PublishedHere reports whether path's stream has a publisher of this
// node's own (not a relay from another node): a path the node may claim.
func (n *Node) PublishedHere(path string) bool {
	st, ok := n.reg.Get(path)
	return ok && st.PublisherKind() != access.KindRelay
}

// elsewhere is the 307 that sends req's client to peer: peer's WHIP or
// WHEP URL for the path, with a redirect signed for peer.
func (n *Node) elsewhere(cfg *config.Config, peer Peer, req access.Request) error {
	endpoint := "/whep/"
	if req.Protocol == access.WHIP {
		endpoint = "/whip/"
	}
	u := strings.TrimSuffix(peer.PublicURL, "/") + (&url.URL{Path: endpoint + req.Path}).EscapedPath()
	sig := redirectsig.Sign(cfg.Cluster.Token, redirectAction(req.Action), peer.Name, req.Path, time.Now().Add(redirectsig.TTL))
	return &access.Elsewhere{Location: u + "?" + url.Values{access.RedirectParam: {sig}}.Encode()}
}

// errNoCluster is ForwardSessions' answer for a session of another node
// when the node has no registry to find it.
var errNoCluster = errors.New("no cluster registry")
