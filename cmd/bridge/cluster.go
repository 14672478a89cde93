package main

import (
	"context"
	"log/slog"

	"github.com/wishbridge/bridge/cluster"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/node"
	"github.com/wishbridge/bridge/relay"
)

// clusterHTTP joins the cluster cluster.* configures (made here, started by
// startCluster) and places the WebRTC sessions in it (ids that name this
// node, Locations on cluster.public_url). It returns the registry the node
// asks where new sessions go: Options.Cluster when set (tests), else the
// cluster's; nil outside a cluster.
func (b *Bridge) clusterHTTP(cfg *config.Config, opts Options, log *slog.Logger) (node.Cluster, error) {
	if !cfg.Cluster.Enabled() && opts.Cluster == nil {
		return nil, nil
	}
	b.sessions.SetNode(cfg.Cluster.NodeName(), cfg.Cluster.PublicURL)
	if opts.Cluster != nil {
		return opts.Cluster, nil
	}
	c, err := cluster.New(cfg.Cluster, cluster.Options{
		Registry:    b.registry,
		Routes:      func() []config.Route { return b.node.Config().Routes },
		Live:        func(path string) bool { return b.node.StreamLive(path) },
		Relayed:     func(path string) bool { return !b.node.PublishedHere(path) },
		OnLost:      b.lostPath,                                   // ownership.go
		OnLeaseLost: func(name string) { b.node.LeaseLost(name) }, // b.node is set after New
		Load: func() cluster.Load {
			l := b.node.Load()
			return cluster.Load{Sessions: l.Sessions, MaxSessions: l.MaxSessions, Viewers: l.Viewers, Draining: l.Draining}
		},
		Log: log,
	})
	if err != nil {
		return nil, err
	}
	b.cluster = c
	return clusterPeers{c}, nil
}

// relaySource is the relay edge's Source: Options.RelaySource when set
// (tests), else the registry's owner of a path (cluster.RelayOrigin); nil
// outside a cluster.
func (b *Bridge) relaySource(opts Options) relay.Source {
	switch {
	case opts.RelaySource != nil:
		return opts.RelaySource
	case b.cluster != nil:
		return b.cluster.RelayOrigin
	}
	return nil
}

// startCluster registers the node and starts its heartbeat (once the node
// is built: the registration reads its load).
func (b *Bridge) startCluster() {
	if b.cluster != nil {
		b.cluster.Start()
	}
}

// leaveCluster removes the node's registration and claims (at Close).
func (b *Bridge) leaveCluster() {
	if b.cluster != nil {
		b.cluster.Stop()
	}
}

// clusterPeers is the cluster's registry as the node asks it (node.Cluster).
type clusterPeers struct{ c *cluster.Cluster }

func (p clusterPeers) Owner(ctx context.Context, path string) (node.Peer, bool, error) {
	cl, ok, err := p.c.Owner(ctx, path)
	return node.Peer{Name: cl.Node, PublicURL: cl.PublicURL, InternalURL: cl.InternalURL}, ok, err
}

func (p clusterPeers) Pick(ctx context.Context) (node.Peer, bool, error) {
	n, ok, err := p.c.LeastLoaded(ctx)
	return peerOf(n), ok, err
}

// Node finds name among the live nodes (at most cluster.MaxNodes, one
// bounded read).
func (p clusterPeers) Node(ctx context.Context, name string) (node.Peer, bool, error) {
	nodes, err := p.c.Nodes(ctx)
	for _, n := range nodes {
		if n.Name == name {
			return peerOf(n), true, nil
		}
	}
	return node.Peer{}, false, err
}

func peerOf(n cluster.NodeInfo) node.Peer {
	return node.Peer{Name: n.Name, PublicURL: n.PublicURL, InternalURL: n.InternalURL}
}
