package admin

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/wishbridge/bridge/cluster"
)

// Cluster is the cluster's registry as the API reads it (package
// cluster's *Cluster); nil outside a cluster.
type Cluster interface {
	Status() cluster.Status
	Nodes(ctx context.Context) ([]cluster.NodeInfo, error)
	Streams(ctx context.Context) ([]cluster.Claim, error)
	Self() string
}

// clusterWait bounds the registry reads of one API call (each is bounded
// by the registry too, at most 1 s).
const clusterWait = 2 * time.Second

// ClusterView is GET /cluster's answer.
type ClusterView struct {
	// Redis is "ok", or "degraded" while Redis cannot be reached (the
	// node serves what it has; Nodes is then empty).
	Redis string        `json:"redis"`
	Error string        `json:"error,omitempty"` // why degraded
	Since time.Time     `json:"since"`           // when Redis last changed state
	Node  string        `json:"node"`            // this node
	Mode  string        `json:"mode"`            // relay or redirect
	Nodes []ClusterNode `json:"nodes"`
}

// ClusterNode is one live node of the cluster.
type ClusterNode struct {
	Name        string `json:"node"`
	PublicURL   string `json:"public_url"`
	InternalURL string `json:"internal_url"`
	Mode        string `json:"mode"`
	// Routes is the hash of the node's routes; RoutesDiffer says it is
	// not this node's (a path may be routed differently there).
	Routes       string       `json:"routes"`
	RoutesDiffer bool         `json:"routes_differ"`
	Load         cluster.Load `json:"load"`
	Started      time.Time    `json:"started"`
}

// serveCluster answers 200 with the ClusterView, or 404 outside a cluster.
// Redis unreachable is not an error: the view says "degraded".
func (h *Handler) serveCluster(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Cluster == nil {
		writeError(w, http.StatusNotFound, "this node is not in a cluster (no cluster.redis or cluster.redis_addrs)")
		return
	}
	st := h.cfg.Cluster.Status()
	v := ClusterView{Redis: string(st.State), Error: st.Error, Since: st.Since.UTC(), Node: st.Node, Mode: st.Mode, Nodes: []ClusterNode{}}
	ctx, cancel := context.WithTimeout(r.Context(), clusterWait)
	defer cancel()
	nodes, err := h.cfg.Cluster.Nodes(ctx)
	if err != nil && v.Redis == string(cluster.StateOK) {
		v.Redis, v.Error = string(cluster.StateDegraded), err.Error()
	}
	for _, n := range nodes {
		v.Nodes = append(v.Nodes, ClusterNode{Name: n.Name, PublicURL: n.PublicURL, InternalURL: n.InternalURL, Mode: n.Mode,
			Routes: n.Routes, RoutesDiffer: slices.Contains(st.RoutesDiffer, n.Name), Load: n.Load, Started: n.Started.UTC()})
	}
	writeJSON(w, http.StatusOK, v)
}

// withOwners adds each stream's owner node to out (the local streams),
// and the streams other nodes own, marked remote, when the node is in a
// cluster whose registry answers; sorted by path.
func (h *Handler) withOwners(ctx context.Context, out []Stream) []Stream {
	if h.cfg.Cluster == nil {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, clusterWait)
	defer cancel()
	claims, err := h.cfg.Cluster.Streams(ctx)
	if err != nil {
		return out // degraded: the local streams, as without a cluster
	}
	owner := make(map[string]string, len(claims))
	for _, c := range claims {
		owner[c.Path] = c.Node
	}
	local := make(map[string]bool, len(out))
	for i := range out {
		out[i].Owner = owner[out[i].Path]
		local[out[i].Path] = true
	}
	self := h.cfg.Cluster.Self()
	for _, c := range claims {
		if local[c.Path] || c.Node == self {
			continue
		}
		s := Stream{Path: c.Path, Private: h.cfg.Private(c.Path), Tracks: []Track{}, Readers: map[string]int{}, Owner: c.Node, Remote: true}
		for _, k := range readerKinds {
			s.Readers[k] = 0
		}
		for _, codec := range c.Codecs {
			s.Tracks = append(s.Tracks, Track{Codec: codec})
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Stream) int { return cmp.Compare(a.Path, b.Path) })
	return out
}
