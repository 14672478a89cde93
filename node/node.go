// Package node is the route runtime between the protocol adapters and the
// hub: it implements the access contract (package access) every adapter
// asks before it lets a client publish or read, locates a reader's stream
// (local, or pulled on demand), answers the per-path policy (Policy),
// runs the routes' pulls and forwards, reloads the config, reports the
// status the metrics read (Streams, Pulls, Forwards, PublicPaths) and
// guards the metrics with their token (MetricsHandler). Adapters import access, never this package; the
// node imports the adapters whose clients it runs (pulls, forwards, RTMP
// play, SRT read).
//
// The routes come from one *config.Config, replaced whole by Reload and
// read per request, so a reload applies to the next request. A Node is
// made with New, started with Start and stopped with Drain then Stop;
// there are no package globals, so a process (a test) may run several.
package node

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wishbridge/bridge/config"
	ingestsrt "github.com/wishbridge/bridge/ingest/srt"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/relay"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/transcode"
)

// Options are the parts of the process a Node works with.
type Options struct {
	// Registry is the hub. Required.
	Registry *media.Registry
	// Engine makes the PeerConnections of WHEP pulls and WHIP forwards.
	// Required for routes that have them.
	Engine *rtc.Engine
	// AAC shares one Opus -> AAC transcode per stream among the RTMP and
	// SRT readers and forwards that need it; nil makes one.
	AAC *transcode.AACViews
	// Reencoders is the process's one cap on B-frame re-encoders, shared
	// by WHEP viewers and WHIP forwards (re-encoders are CPU, whatever
	// the protocol); nil makes one with transcode.DefaultReencoders.
	Reencoders *transcode.ReencodeSlots
	// SRTStats returns the statistics of the SRT listener's connection
	// publishing path (ingest/srt.Server.Stats), for Streams; nil: none.
	SRTStats func(path string) (ingestsrt.Stats, bool)
	// StreamWait bounds how long a reader waits for its stream's tracks
	// (an on-demand pull starting, a publisher in its handshake); 0 means
	// DefaultStreamWait.
	StreamWait time.Duration
	// Relay serves readers of the paths other nodes own through a relay
	// from the owner (relay.go); the zero value relays nothing.
	Relay relay.Edge
	// Cluster is the cluster's registry, for where new WHIP and WHEP
	// sessions go and where sessions of other nodes live (cluster.go);
	// nil outside a cluster.
	Cluster Cluster
	// Sessions is the WHIP and WHEP sessions table, whose size against
	// limits.webrtc_sessions sends new sessions to other nodes in a
	// cluster; nil: never full.
	Sessions *rtc.Sessions
	// Ownership is the cluster's registry of who publishes each path and
	// runs each pull (ownership.go); nil outside a cluster.
	Ownership Ownership
	// Log receives the node's events; nil means slog.Default().
	Log *slog.Logger
}

// DefaultStreamWait is how long a reader waits for a stream that is
// starting: an on-demand pull's connect and first keyframe take a second or
// two; a player gives up after about 10 s.
const DefaultStreamWait = 5 * time.Second

// Node is one bridge's route runtime. Safe for concurrent use.
type Node struct {
	reg        *media.Registry
	engine     *rtc.Engine
	aac        *transcode.AACViews
	reencoders *transcode.ReencodeSlots
	srtStats   func(string) (ingestsrt.Stats, bool)
	streamWait time.Duration
	relay      relay.Edge
	log        *slog.Logger

	cfg     atomic.Pointer[config.Config]
	closing atomic.Bool // set by Drain: publishers leaving now get no grace

	pulls pulls
	fwd   forwards
	bans  bans // operators' bans and evictions (Evict)
	// cluster and sessions are Options'; drain is DrainSessions' state
	// and forward the session requests forwarded to other nodes
	// (cluster.go, sessionforward.go).
	cluster  Cluster
	sessions *rtc.Sessions
	drain    drainState
	forward  sessionForwarder
	// ownership is Options'; leases the pulls' cluster leases
	// (ownership.go).
	ownership Ownership
	leases    leases
	// sessionSeq numbers the forward and pull sessions (sessions.go).
	sessionSeq atomic.Uint64
	// stop ends the pulls and forwards (Stop); wg waits for the forward
	// manager.
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// New returns a node serving cfg's routes over o.Registry. It sets the
// registry's grace policy (each route's grace; none once draining). Start
// starts its pulls and forwards.
func New(cfg *config.Config, o Options) *Node {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.AAC == nil {
		o.AAC = transcode.NewAACViews(o.Log)
	}
	if o.StreamWait <= 0 {
		o.StreamWait = DefaultStreamWait
	}
	if o.Reencoders == nil {
		o.Reencoders = &transcode.ReencodeSlots{}
	}
	n := &Node{reg: o.Registry, engine: o.Engine, aac: o.AAC, reencoders: o.Reencoders, srtStats: o.SRTStats, streamWait: o.StreamWait, relay: o.Relay, log: o.Log}
	n.cluster, n.sessions = o.Cluster, o.Sessions
	n.ownership = o.Ownership
	n.cfg.Store(cfg)
	n.pulls.n, n.fwd.n = n, n
	n.reg.SetGrace(func(path string) time.Duration { return n.Policy(path).Grace })
	return n
}

// Config returns the running config. It is never modified: Reload
// replaces it.
func (n *Node) Config() *config.Config { return n.cfg.Load() }

// Start starts the routes' pulls (those not on demand) and the forward
// manager. Call it once, before the adapters serve (a reader may ask for an
// on-demand pull at once).
func (n *Node) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	n.stop = cancel
	n.pulls.start(ctx)
	n.fwd.start(ctx, &n.wg)
}

// Drain gives publishers that leave from now on no grace: at shutdown,
// their readers end with them.
func (n *Node) Drain() { n.closing.Store(true) }

// Stop stops the pulls and forwards and waits for them to end (after
// Start). The streams they published end without grace once Drain was
// called.
func (n *Node) Stop() {
	if n.stop == nil {
		return
	}
	n.stop()
	n.pulls.wait()
	n.wg.Wait()
}

// Policy is what the routes say about one path: the one lookup every
// per-path setting of the adapters, pulls and forwards comes from. The
// zero Route means no route serves the path.
type Policy struct {
	Route *config.Route // the route matching the path; nil if none
	// OpusBitrate and AACBitrate are the bit/s of audio transcoded for
	// WebRTC readers and for RTMP/SRT readers; 0 means the transcoder's
	// default.
	OpusBitrate, AACBitrate int
	// BFrames is the route's B-frame policy for WebRTC readers
	// (config.BFramesReencode, BFramesPassthrough or BFramesReject).
	BFrames string
	// Passphrase is the SRT passphrase the path requires; "" for none.
	Passphrase string
	// Grace is how long the stream outlives its publisher; 0 while the
	// node drains, and for a publisher an operator evicts (Evict).
	Grace time.Duration
	// MaxReaders is the limit of readers of the stream across every read
	// protocol: the route's max_readers, or limits.readers_per_stream.
	MaxReaders int
	// Private streams are listed (index page, metrics without the token)
	// only to holders of a credential: the route has a read key, or no
	// route matches (a stream left from a route removed by a reload).
	Private bool
}

// Policy returns path's policy under the running config.
func (n *Node) Policy(path string) Policy {
	cfg := n.Config()
	r, ok := cfg.Match(path)
	if !ok {
		return Policy{BFrames: config.BFramesReencode, MaxReaders: cfg.Limits.WithDefaults().ReadersPerStream, Private: true}
	}
	p := Policy{Route: r, OpusBitrate: r.OpusBitrate(), AACBitrate: r.AACBitrate(), BFrames: r.BFramesPolicy(),
		Passphrase: r.Passphrase, Grace: r.GraceDuration(), MaxReaders: r.MaxReaders, Private: r.Private()}
	if n.closing.Load() || n.bans.evicted(path, time.Now()) {
		p.Grace = 0
	}
	if p.MaxReaders <= 0 {
		p.MaxReaders = cfg.Limits.WithDefaults().ReadersPerStream
	}
	return p
}

// The policy's fields as the adapters' per-path hooks take them.

func (n *Node) OpusBitrate(path string) int   { return n.Policy(path).OpusBitrate }
func (n *Node) BFrames(path string) string    { return n.Policy(path).BFrames }
func (n *Node) Passphrase(path string) string { return n.Policy(path).Passphrase }
func (n *Node) MaxReaders(path string) int    { return n.Policy(path).MaxReaders }
