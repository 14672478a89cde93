// Package relay is the node-to-node relay: an edge node serves a stream
// that another node (its owner, the origin) publishes, by any read
// protocol, through one HTTP(S) stream of hub units per stream per edge,
// shared by every local reader.
//
// The relay carries every track in its original codec with its
// parameters (SPS/PPS, VPS, AudioSpecificConfig, Opus channels) and the
// units' timestamps, and for an RTP source (WHIP, a WHEP pull) the RTP
// packets, so an AAC source is transcoded once, at the edge that needs
// Opus, and a WHIP source reaches the edge's WHEP viewers without being
// repacketized. The wire format (wire.go) is versioned and length-prefixed;
// one Encoder and one Decoder serve both sides.
//
// The origin side is Origin, an http.Handler for
// GET /cluster/v1/relay/{path...} authenticated with the cluster token;
// the edge side is Puller, which publishes the stream in the local hub as
// a publisher of kind access.KindRelay. The node runs a Puller as an
// on-demand pull (node/pull.go): started by the first local reader of a
// path a Source says another node owns, ended when the last one has left.
package relay

import (
	"context"
	"net/http"
	"sync/atomic"
)

// Source tells an edge which node owns path: the base URL other nodes
// reach it at (cluster.internal_url, e.g. "http://10.0.0.1:8080"), and
// true; false when no other node does (the path is this node's, or
// nobody's). It must be quick and safe for concurrent use; ctx bounds a
// lookup that goes over the network.
type Source func(ctx context.Context, path string) (base string, ok bool)

// Static is the Source of a node whose every stream it does not publish
// itself lives on one other node, at base (tests; a two-node setup
// without a registry).
func Static(base string) Source {
	return func(context.Context, string) (string, bool) { return base, base != "" }
}

// Counters count a node's relays, both ways, for the metrics
// (bridge_relays{direction}, bridge_relay_bytes_total{direction}). The
// zero value is ready; a nil *Counters counts nothing. Safe for
// concurrent use.
type Counters struct {
	in, out           atomic.Int64
	bytesIn, bytesOut atomic.Uint64
}

// Stats are the counters at one moment.
type Stats struct {
	// In and Out are the relays running now: pulled from an origin, and
	// served to edges.
	In, Out int
	// BytesIn and BytesOut are the relay stream bytes received and sent
	// since start.
	BytesIn, BytesOut uint64
}

// Stats returns the counters now.
func (c *Counters) Stats() Stats {
	if c == nil {
		return Stats{}
	}
	return Stats{In: int(c.in.Load()), Out: int(c.out.Load()), BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load()}
}

func (c *Counters) relay(in bool, delta int64) {
	switch {
	case c == nil:
	case in:
		c.in.Add(delta)
	default:
		c.out.Add(delta)
	}
}

func (c *Counters) bytes(in bool, n int) {
	switch {
	case c == nil:
	case in:
		c.bytesIn.Add(uint64(n))
	default:
		c.bytesOut.Add(uint64(n))
	}
}

// Edge is what a node needs to serve, by relay, the streams other nodes
// own. The zero value relays nothing.
type Edge struct {
	// Source says which node owns a path; nil relays nothing.
	Source Source
	// Token returns the cluster token (read at each relay's start, so a
	// reload applies to the next one).
	Token func() string
	// Client makes the relay requests; nil means the Puller's default.
	Client *http.Client
	// Counters counts the relays (direction "in").
	Counters *Counters
}
