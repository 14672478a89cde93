package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/wishbridge/bridge/admin"
	"github.com/wishbridge/bridge/cluster"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/node"
)

// clusterOwnership is the cluster's registry as the node's publishers,
// forwards and pulls ask it (node.Ownership).
type clusterOwnership struct{ *cluster.Cluster }

// ClaimPublisher claims path, turning the registry's *cluster.OwnedError
// into the owner the node names.
func (o clusterOwnership) ClaimPublisher(ctx context.Context, path string) (node.Peer, bool, error) {
	err := o.Claim(ctx, path)
	var owned *cluster.OwnedError
	if errors.As(err, &owned) {
		return node.Peer{Name: owned.Owner.Node, PublicURL: owned.Owner.PublicURL, InternalURL: owned.Owner.InternalURL}, false, nil
	}
	return node.Peer{}, err == nil, err
}

// ownership is the node's Options.Ownership: nil outside a cluster.
func (b *Bridge) ownership() node.Ownership {
	if b.cluster == nil {
		return nil
	}
	return clusterOwnership{b.cluster}
}

// lostPath is the cluster's OnLost: the node ends its own publisher of
// path, off the cluster's goroutine (an adapter's session end may take a
// moment).
func (b *Bridge) lostPath(path string, owner cluster.Claim) {
	panics.Go("cluster lost path", b.log, func() {
		b.node.LostPath(path, owner.Node, b.sessions, b.rtmpSrv, b.srtSrv)
	})
}

// clusterAPI is the admin API's view of the cluster: nil outside one.
func (b *Bridge) clusterAPI() admin.Cluster {
	if b.cluster == nil {
		return nil
	}
	return b.cluster
}

// clusterHealth reports the cluster's Redis in /readyz's body ("cluster":
// degraded while it cannot be reached) without failing readiness: every
// node shares the outage, and each still serves what it has.
func (b *Bridge) clusterHealth() {
	if b.cluster == nil {
		return
	}
	b.health.RegisterInfo("cluster", func() error {
		if st := b.cluster.Status(); st.State != cluster.StateOK {
			return fmt.Errorf("%s: %s", st.State, st.Error)
		}
		return nil
	})
}
