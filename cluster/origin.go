package cluster

import "context"

// RelayOrigin is the relay edge's Source (package relay): the
// internal_url of the node whose publisher of path is live, when that is
// another node; false when the path is this node's, nobody's, its owner's
// publisher is in grace (a publisher may take it over at any node: the
// edge's readers wait, as the owner's do), or Redis cannot be reached (a
// running relay goes on from the origin it has). One bounded Redis call.
func (c *Cluster) RelayOrigin(ctx context.Context, path string) (string, bool) {
	cl, ok, err := c.Owner(ctx, path)
	if err != nil || !ok || cl.Node == c.self || cl.State != PublisherLive || cl.InternalURL == "" {
		return "", false
	}
	return cl.InternalURL, true
}
