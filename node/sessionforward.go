package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/rtc"
)

// Forwarded session requests. A WHIP or WHEP session lives on the node
// that made it, and its id names that node (rtc.Sessions.SetNode). A
// client that sends its PATCH or DELETE to another node (it kept a
// Location from before a load balancer moved it, or its Location names
// the cluster rather than the node) is served through this node: the
// request is forwarded to the session's node at its internal URL, with the
// cluster token as bearer token, and the answer passed back. A request
// that arrives forwarded (that bearer token) is never forwarded again, so
// two nodes that disagree about a name cannot bounce a request between
// them.

// Bounds of forwarded session requests.
const (
	// maxForwarding bounds the forwarded requests in flight: each is a
	// PATCH or DELETE of a few KiB answered within milliseconds, so 64
	// at once is far beyond the trickle of real clients; over it a
	// client gets 503 and retries.
	maxForwarding = 64
	// forwardTimeout bounds one forwarded request, answer included: a
	// node answers a PATCH at once; an ICE restart takes a few hundred
	// milliseconds; a node that has not answered in 5 s is not serving.
	forwardTimeout = 5 * time.Second
	// forwardDialTimeout bounds the connection to the session's node.
	forwardDialTimeout = 2 * time.Second
)

// forwardedHeaders are the request headers a session resource reads;
// answeredHeaders those of its answers. Nothing else crosses, in either
// direction (no cookies, no hop-by-hop headers).
var (
	forwardedHeaders = []string{"Content-Type", "If-Match", "Accept"}
	answeredHeaders  = []string{"Content-Type", "ETag", "Accept-Patch", "Retry-After", "WWW-Authenticate", "Link"}
)

// sessionForwarder forwards session requests; its zero value is ready.
type sessionForwarder struct {
	once     sync.Once
	client   *http.Client // made by once
	inflight atomic.Int64
	// refusals logs failed forwards, one line per client per interval.
	refusals ratelog.Limiter
}

func (f *sessionForwarder) httpClient() *http.Client {
	f.once.Do(func() {
		f.client = &http.Client{
			Timeout: forwardTimeout,
			Transport: &http.Transport{
				DialContext:           (&net.Dialer{Timeout: forwardDialTimeout}).DialContext,
				TLSHandshakeTimeout:   forwardDialTimeout,
				ResponseHeaderTimeout: forwardTimeout,
				MaxIdleConnsPerHost:   4,
				IdleConnTimeout:       time.Minute,
			},
			// A session's node answers; it does not send us on.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	})
	return f.client
}

// ForwardSessions wraps next, the handler serving the WebRTC session
// resources (rtc.Sessions.Register): a request for a session another node
// of the cluster made is forwarded there (see above) and answered as that
// node answers, or:
//
//	404  the session's node is not in the cluster (any more)
//	413  the body is larger than rtc.MaxSDPSize
//	502  the session's node did not answer within 5 s
//	503  the registry cannot be reached, or this node forwards 64
//	     requests already (Retry-After)
//
// Every other request goes to next. Outside a cluster it is next.
func (n *Node) ForwardSessions(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutPrefix(r.URL.Path, rtc.SessionPathPrefix)
		if !ok || n.cluster == nil || strings.Contains(id, "/") {
			next.ServeHTTP(w, r)
			return
		}
		cl := n.Config().Cluster
		owner := rtc.SessionNode(id)
		if owner == "" || owner == cl.NodeName() || fromNode(r, cl) {
			next.ServeHTTP(w, r)
			return
		}
		if err := n.forwardSession(w, r, owner, cl); err != nil {
			log := n.log.With("component", "session forward", "peer", r.RemoteAddr, "node", owner)
			if ok, suppressed := n.forward.refusals.Allow(addrlimit.AddrOf(r.RemoteAddr).String()); ok {
				log.Info("session request not forwarded", "method", r.Method, "error", err, "suppressed", suppressed)
			}
			rtc.WriteError(w, err)
		}
	})
}

// fromNode reports whether r was forwarded by a node of the cluster: its
// bearer token is the cluster token (compared in constant time; a token of
// its own, so no client's key can equal it).
func fromNode(r *http.Request, cl config.Cluster) bool {
	return cl.Token != "" && secretEqual(rtc.BearerToken(r), cl.Token)
}

// forwardSession forwards r to node owner and copies its answer to w; an
// error wrapping the *rtc.Error to answer when there is none to copy.
func (n *Node) forwardSession(w http.ResponseWriter, r *http.Request, owner string, cl config.Cluster) error {
	f := &n.forward
	if f.inflight.Add(1) > maxForwarding {
		f.inflight.Add(-1)
		e := rtc.Errorf(http.StatusServiceUnavailable, "this node forwards %d session requests to other nodes already, try again", maxForwarding)
		e.RetryAfter = time.Second
		return e
	}
	defer f.inflight.Add(-1)
	var body []byte
	if r.Body != nil {
		var err error
		if body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, rtc.MaxSDPSize)); err != nil {
			if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
				return rtc.Errorf(http.StatusRequestEntityTooLarge, "the body is larger than %d bytes", rtc.MaxSDPSize)
			}
			return rtc.Errorf(http.StatusBadRequest, "reading the body: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), forwardTimeout)
	defer cancel()
	peer, ok, err := n.cluster.Node(ctx, owner)
	switch {
	case err != nil:
		e := rtc.Errorf(http.StatusServiceUnavailable, "the session lives on node %q and the cluster's registry cannot be reached to find it, try again", owner)
		e.RetryAfter = retryElsewhere
		return e
	case !ok || peer.InternalURL == "":
		return rtc.Errorf(http.StatusNotFound, "no such session: it lived on node %q, which is not in the cluster any more", owner)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, strings.TrimSuffix(peer.InternalURL, "/")+r.URL.EscapedPath(), bytes.NewReader(body))
	if err != nil {
		return rtc.Errorf(http.StatusBadGateway, "node %q has an unusable internal URL", owner)
	}
	for _, h := range forwardedHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	req.Header.Set("Authorization", "Bearer "+cl.Token)
	req.Header.Set("User-Agent", "bridge/"+cl.NodeName()+" (session request forwarded)")
	resp, err := f.httpClient().Do(req)
	if err != nil {
		// The cause names the node's internal address: logged, not told
		// (WriteError writes the *rtc.Error's message only).
		return fmt.Errorf("%w (%v)", rtc.Errorf(http.StatusBadGateway, "the session lives on node %q, which did not answer", owner), err)
	}
	defer resp.Body.Close()
	for _, h := range answeredHeaders {
		if v := resp.Header.Values(h); len(v) > 0 {
			w.Header()[h] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	// A node's answers are an sdpfrag or an error line; bounded anyway.
	_, _ = io.Copy(w, io.LimitReader(resp.Body, rtc.MaxSDPSize))
	return nil
}
