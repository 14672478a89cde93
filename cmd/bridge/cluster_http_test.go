package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/redirectsig"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/node"
	"github.com/wishbridge/bridge/rtc"
)

// The HTTP side of a cluster, with bridges in this process and the
// registry as a table the test fills (staticCluster): which node owns a
// path is set by the test, the nodes' load is read from the bridges
// themselves, as the registry's heartbeat would.

const (
	tableClusterToken = "cluster-token-for-tests-0123"
	testViewerKey     = "viewer-secret"
)

// staticCluster is the registry of a test cluster.
type staticCluster struct {
	mu     sync.Mutex
	owners map[string]string // path -> node name; guarded by mu
	nodes  []*clusterNode    // in start order; guarded by mu
}

type clusterNode struct {
	name, public string
	b            *Bridge
}

func (c *staticCluster) own(path, nodeName string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.owners == nil {
		c.owners = map[string]string{}
	}
	c.owners[path] = nodeName
}

func (c *staticCluster) peer(name string) (node.Peer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.name == name {
			return node.Peer{Name: n.name, PublicURL: n.public, InternalURL: n.public}, true
		}
	}
	return node.Peer{}, false
}

// clusterView is the registry as node self sees it (a node.Cluster).
type clusterView struct {
	c    *staticCluster
	self string
}

func (v clusterView) Owner(_ context.Context, path string) (node.Peer, bool, error) {
	v.c.mu.Lock()
	name, ok := v.c.owners[path]
	v.c.mu.Unlock()
	if !ok {
		return node.Peer{}, false, nil
	}
	p, ok := v.c.peer(name)
	return p, ok, nil
}

// Pick is the registry's least loaded node: not self, not drained, under
// its session limit, fewest sessions.
func (v clusterView) Pick(context.Context) (node.Peer, bool, error) {
	v.c.mu.Lock()
	nodes := append([]*clusterNode(nil), v.c.nodes...)
	v.c.mu.Unlock()
	var best *clusterNode
	for _, n := range nodes {
		if n.name == v.self {
			continue
		}
		if _, _, drained := n.b.node.SessionsDrained(); drained {
			continue
		}
		if n.b.sessions.Len() >= n.b.node.Config().Limits.WithDefaults().WebRTCSessions {
			continue
		}
		if best == nil || n.b.sessions.Len() < best.b.sessions.Len() {
			best = n
		}
	}
	if best == nil {
		return node.Peer{}, false, nil
	}
	p, _ := v.c.peer(best.name)
	return p, true, nil
}

func (v clusterView) Node(_ context.Context, name string) (node.Peer, bool, error) {
	p, ok := v.c.peer(name)
	return p, ok, nil
}

// startTableNode starts bridge name in cluster c with cfg (nil: the
// defaults), its public URL its own HTTP address.
func startTableNode(t *testing.T, c *staticCluster, name, mode string, cfg *config.Config) *Bridge {
	t.Helper()
	if cfg == nil {
		cfg = config.Default()
	}
	public := clusterListen(t, cfg)
	cfg.Cluster = config.Cluster{Node: name, PublicURL: public, Token: tableClusterToken, Mode: mode}
	b := startListeningWith(t, cfg, Options{IncludeLoopback: true, Cluster: clusterView{c: c, self: name}}, testLog(t))
	c.mu.Lock()
	c.nodes = append(c.nodes, &clusterNode{name: name, public: public, b: b})
	c.mu.Unlock()
	return b
}

// clusterListen sets cfg's listeners to loopback ports, HTTP's chosen
// now, and returns the base URL of that one (the node's public URL).
func clusterListen(t *testing.T, cfg *config.Config) string {
	t.Helper()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreeTCPPort(t))
	cfg.Listen.HTTP, cfg.Listen.RTMP, cfg.Listen.WebRTCUDP, cfg.Listen.SRT = httpAddr, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	return "http://" + httpAddr
}

// browserClient follows redirects as a browser does a cross-origin one:
// the POST and its body are sent again (307), Authorization is not. The
// URLs it was sent to are appended to *via.
func browserClient(via *[]string) *http.Client {
	return &http.Client{
		Timeout: 20 * time.Second,
		CheckRedirect: func(req *http.Request, prior []*http.Request) error {
			if len(prior) > 3 {
				return errors.New("more than 3 redirects")
			}
			req.Header.Del("Authorization")
			*via = append(*via, req.URL.String())
			return nil
		},
	}
}

// noRedirects answers with the first response.
var noRedirects = &http.Client{
	Timeout:       20 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func whepURL(b *Bridge, path string) string {
	return "http://" + b.HTTPAddr().String() + "/whep/" + path
}

// postOffer POSTs a fresh recvonly offer to u with client and returns the
// status, the body and the Location.
func postOffer(t *testing.T, client *http.Client, u string, hdr map[string]string) (int, string, string) {
	t.Helper()
	pc, sdp := newOffer(t, newViewerAPI(t))
	t.Cleanup(func() { _ = pc.Close() })
	resp := postWith(t, client, u, "application/sdp", sdp, hdr)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, strings.TrimSpace(string(body)), resp.Header.Get("Location")
}

// TestClusterRedirectWHEP: in redirect mode, a WHEP viewer of a
// token-protected stream published on A that asks B is sent to A with a
// 307 carrying a signed cluster_redirect; following it as a browser does
// (no Authorization), it is admitted by the signature and plays from A.
// A tampered, expired or misdirected signature is refused with a reason;
// no signature and no token is a 401; a request with a valid signature is
// never redirected again.
func TestClusterRedirectWHEP(t *testing.T) {
	var tab staticCluster
	private := func() *config.Config {
		cfg := config.Default()
		cfg.Routes = append([]config.Route{{Path: "private/{name}", ReadKey: testViewerKey}}, cfg.Routes...)
		return cfg
	}
	a := startTableNode(t, &tab, "a", config.ClusterRedirect, private())
	b := startTableNode(t, &tab, "b", config.ClusterRedirect, private())
	publish(t, "h264-aac.flv", "rtmp://"+a.RTMPAddr().String()+"/private/cam")
	waitStream(t, a, "private/cam")
	tab.own("private/cam", "a")
	bearer := map[string]string{"Authorization": "Bearer " + testViewerKey}

	// What B answers.
	status, body, loc := postOffer(t, noRedirects, whepURL(b, "private/cam"), bearer)
	if status != http.StatusTemporaryRedirect {
		t.Fatalf("B answered %d %q, want 307 to A", status, body)
	}
	target, err := url.Parse(loc)
	if err != nil || target.Host != a.HTTPAddr().String() || target.Path != "/whep/private/cam" || target.Query().Get("cluster_redirect") == "" {
		t.Fatalf("307 Location = %q, want A's WHEP URL for private/cam with cluster_redirect", loc)
	}
	// B's key check comes first: a wrong token is not sent anywhere.
	if status, body, _ := postOffer(t, noRedirects, whepURL(b, "private/cam"), map[string]string{"Authorization": "Bearer wrong"}); status != http.StatusUnauthorized {
		t.Errorf("B with a wrong token: %d %q, want 401", status, body)
	}

	t.Run("ViewerFollowsAndPlays", func(t *testing.T) {
		var via []string
		v := joinURL(t, browserClient(&via), newViewerAPI(t), whepURL(b, "private/cam"), bearer)
		t.Cleanup(func() { _ = v.pc.Close() })
		if len(via) != 1 || !strings.HasPrefix(via[0], "http://"+a.HTTPAddr().String()+"/whep/private/cam?cluster_redirect=") {
			t.Fatalf("redirects followed: %q, want one to A", via)
		}
		if !strings.HasPrefix(v.location, "http://"+a.HTTPAddr().String()+rtc.SessionPathPrefix) || rtc.SessionNode(strings.TrimPrefix(v.location, "http://"+a.HTTPAddr().String()+rtc.SessionPathPrefix)) != "a" {
			t.Errorf("session Location %q: want A's public URL and an id naming node a", v.location)
		}
		v.waitFrames(t, 30, 20*time.Second)
		if n := b.sessions.Len(); n != 0 {
			t.Errorf("B holds %d sessions, want 0 (the viewer is A's)", n)
		}
	})

	t.Run("Refused", func(t *testing.T) {
		q := target.Query()
		sig := q.Get("cluster_redirect")
		exp, mac, _ := strings.Cut(sig, ".")
		with := func(v string) string {
			u := *target
			u.RawQuery = url.Values{"cluster_redirect": {v}}.Encode()
			return u.String()
		}
		flipped := []byte(mac)
		flipped[3] ^= 1
		for _, c := range []struct {
			name, url, want string
			status          int
		}{
			{"no token, no signature", whepURL(a, "private/cam"), "needs a bearer token", http.StatusUnauthorized},
			{"tampered signature", with(exp + "." + string(flipped)), "does not match", http.StatusForbidden},
			{"expiry moved", with(fmt.Sprint(atoi(exp)+60) + "." + mac), "does not match", http.StatusForbidden},
			{"expired", with(redirectsig.Sign(tableClusterToken, redirectsig.Read, "a", "private/cam", time.Now().Add(-time.Second))), "expired", http.StatusForbidden},
			{"signed for another path", with(redirectsig.Sign(tableClusterToken, redirectsig.Read, "a", "private/other", time.Now().Add(redirectsig.TTL))), "does not match", http.StatusForbidden},
			{"signed for node b", with(redirectsig.Sign(tableClusterToken, redirectsig.Read, "b", "private/cam", time.Now().Add(redirectsig.TTL))), "does not match", http.StatusForbidden},
		} {
			status, body, _ := postOffer(t, noRedirects, c.url, nil)
			if status != c.status || !strings.Contains(body, c.want) {
				t.Errorf("%s: %d %.100q, want %d saying %q", c.name, status, body, c.status, c.want)
			}
		}
	})

	t.Run("NeverRedirectedTwice", func(t *testing.T) {
		// B owns nothing here, yet a viewer carrying a signature for B is
		// served by B (no stream: 404), not sent on to A again.
		u := whepURL(b, "private/cam") + "?cluster_redirect=" + url.QueryEscape(redirectsig.Sign(tableClusterToken, redirectsig.Read, "b", "private/cam", time.Now().Add(redirectsig.TTL)))
		status, body, loc := postOffer(t, noRedirects, u, nil)
		if status == http.StatusTemporaryRedirect || status != http.StatusNotFound {
			t.Errorf("B with B's signature: %d %q (Location %q), want it served on B (404: no stream there)", status, body, loc)
		}
	})
}

// twoNodesPublishing starts nodes a and b of a relay-mode cluster, their
// configs changed by edit, each with ffmpeg publishing live/cam (the same
// stream on both: the relay is not under test).
func twoNodesPublishing(t *testing.T, edit func(*config.Config)) (a, b *Bridge) {
	t.Helper()
	var tab staticCluster
	nodes := make([]*Bridge, 2)
	for i, name := range []string{"a", "b"} {
		cfg := config.Default()
		edit(cfg)
		n := startTableNode(t, &tab, name, config.ClusterRelay, cfg)
		publish(t, "h264-aac.flv", "rtmp://"+n.RTMPAddr().String()+"/live/cam")
		waitStream(t, n, "live/cam")
		nodes[i] = n
	}
	return nodes[0], nodes[1]
}

// deleteAt sends DELETE to a session URL and returns the status and
// body.
func deleteAt(t *testing.T, u string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// TestClusterSessionLimit: a node at limits.webrtc_sessions sends a new
// WHEP viewer to the other node (which plays it); with every node full,
// 503 with Retry-After.
func TestClusterSessionLimit(t *testing.T) {
	a, b := twoNodesPublishing(t, func(cfg *config.Config) { cfg.Limits.WebRTCSessions = 1 })
	first := watch(t, a, "live/cam", nil)
	first.waitFrames(t, 10, 20*time.Second)

	var via []string
	second := joinURL(t, browserClient(&via), newViewerAPI(t), whepURL(a, "live/cam"), nil)
	t.Cleanup(func() { _ = second.pc.Close() })
	if len(via) != 1 || !strings.HasPrefix(via[0], whepURL(b, "live/cam")+"?cluster_redirect=") {
		t.Fatalf("redirects followed: %q, want one to B", via)
	}
	second.waitFrames(t, 10, 20*time.Second)
	if a.sessions.Len() != 1 || b.sessions.Len() != 1 {
		t.Errorf("sessions: A %d, B %d, want 1 each", a.sessions.Len(), b.sessions.Len())
	}

	resp := postWith(t, noRedirects, whepURL(a, "live/cam"), "application/sdp", "v=0\r\n", nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "no other node can take it") {
		t.Errorf("both full: %d (Retry-After %q) %q, want 503 with Retry-After saying no node can take it", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}

// TestClusterDrain: POST /api/v1/node/drain on A sends new viewers to B,
// keeps A's viewer playing and makes A's /readyz 503; DELETE undoes it.
func TestClusterDrain(t *testing.T) {
	a, b := twoNodesPublishing(t, func(cfg *config.Config) { cfg.API.Token = apiToken })
	base := "http://" + a.HTTPAddr().String()
	old := watch(t, a, "live/cam", nil)
	old.waitFrames(t, 10, 20*time.Second)

	var st struct {
		Draining, Changed bool
	}
	if code, body := apiCall(t, "POST", base+"/api/v1/node/drain", apiToken, &st); code != 200 || !st.Draining || !st.Changed {
		t.Fatalf("POST /api/v1/node/drain: %d %s", code, body)
	}
	if code, body := apiCall(t, "GET", base+"/readyz", "", nil); code != http.StatusServiceUnavailable || !strings.Contains(body, "drained through the admin API") {
		t.Errorf("/readyz while drained: %d %s, want 503 saying why", code, body)
	}
	var via []string
	moved := joinURL(t, browserClient(&via), newViewerAPI(t), whepURL(a, "live/cam"), nil)
	t.Cleanup(func() { _ = moved.pc.Close() })
	if len(via) != 1 || !strings.HasPrefix(via[0], whepURL(b, "live/cam")) {
		t.Fatalf("redirects followed: %q, want one to B", via)
	}
	moved.waitFrames(t, 10, 20*time.Second)
	// The viewer A had keeps playing.
	before := len(old.frames())
	waitFor(t, 10*time.Second, "A's viewer receiving frames while A is drained", func() bool { return len(old.frames()) >= before+25 })

	if code, body := apiCall(t, "DELETE", base+"/api/v1/node/drain", apiToken, &st); code != 200 || st.Draining || !st.Changed {
		t.Fatalf("DELETE /api/v1/node/drain: %d %s", code, body)
	}
	if code, body := apiCall(t, "GET", base+"/readyz", "", nil); code != 200 {
		t.Errorf("/readyz after DELETE: %d %s", code, body)
	}
	if status, body, _ := postOffer(t, noRedirects, whepURL(a, "live/cam"), nil); status != http.StatusCreated {
		t.Errorf("A after DELETE: %d %q, want 201", status, body)
	}
}

// TestClusterForwardSessionDelete: a DELETE for A's session sent to B is
// forwarded to A, and the session ends there.
func TestClusterForwardSessionDelete(t *testing.T) {
	var tab staticCluster
	a := startTableNode(t, &tab, "a", config.ClusterRelay, nil)
	b := startTableNode(t, &tab, "b", config.ClusterRelay, nil)
	publish(t, "h264-aac.flv", "rtmp://"+a.RTMPAddr().String()+"/live/cam")
	waitStream(t, a, "live/cam")
	v := watch(t, a, "live/cam", nil)
	v.waitFrames(t, 10, 20*time.Second)
	closed := make(chan struct{})
	var once sync.Once
	v.pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateClosed || s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateDisconnected {
			once.Do(func() { close(closed) })
		}
	})

	id := v.location[strings.LastIndex(v.location, "/")+1:]
	if rtc.SessionNode(id) != "a" {
		t.Fatalf("session id %q does not name node a", id)
	}
	wrong := "http://" + b.HTTPAddr().String() + rtc.SessionPathPrefix + id
	if status, body := deleteAt(t, wrong); status != http.StatusOK {
		t.Fatalf("DELETE at B: %d %s, want 200 from A", status, body)
	}
	waitFor(t, 5*time.Second, "A's session ended", func() bool { return a.sessions.Len() == 0 })
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
		t.Error("the viewer's connection did not end")
	}
	// Again: A no longer has it, and says so through B.
	if status, body := deleteAt(t, wrong); status != http.StatusNotFound {
		t.Errorf("second DELETE at B: %d %s, want 404 from A", status, body)
	}
}
