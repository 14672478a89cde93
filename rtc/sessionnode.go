package rtc

import (
	"net/http"
	"strings"
)

// Sessions in a cluster: ids that name their node, Locations on the node's
// public URL.

// SetNode places the table's sessions on node name of a cluster, reached
// by clients at publicURL (cluster.node, cluster.public_url): every new
// session id ends with "~" and the node's name (SessionNode reads it), so
// any node can tell where a session lives and forward a PATCH or DELETE
// there; and Location answers publicURL's session URL, which reaches this
// node whichever name the client used for the cluster. Call it before
// serving; "" for both (the zero value) is a bridge on its own.
func (t *Sessions) SetNode(name, publicURL string) {
	t.node, t.publicURL = name, strings.TrimSuffix(publicURL, "/")
}

// sessionNodeSep separates a session id's random part from the name of
// the node it lives on: "~" is not in any node name (letters, digits,
// "-._", config.CheckNodeName) and needs no escaping in a URL path.
const sessionNodeSep = "~"

// SessionNode returns the name of the node session id lives on ("" for an
// id made outside a cluster, or one that is not ours).
func SessionNode(id string) string {
	_, node, _ := strings.Cut(id, sessionNodeSep)
	return node
}

// Location returns the absolute URL of session id created by request r:
// on the node's public URL in a cluster (SetNode), else on the scheme and
// host r used (the function Location).
func (t *Sessions) Location(r *http.Request, id string) string {
	if t.publicURL != "" {
		return t.publicURL + SessionPathPrefix + id
	}
	return Location(r, id)
}
