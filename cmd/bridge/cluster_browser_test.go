package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// TestClusterBrowserRedirect: the built-in player in headless Chromium, in
// a redirect-mode cluster of two bridges joined through a real
// redis-server. ffmpeg publishes a token-protected stream (read_key) on A;
// the page is opened on B with ?token=. Its WHEP POST to B is answered
// with a 307 to A's WHEP URL (another origin: the page's CSP must list it,
// and A's CORS answers must let the redirected POST through, Authorization
// dropped and the signed cluster_redirect standing for it); the page plays
// from A (frames decoded, video size, sound), and leaving the page DELETEs
// the session where it lives, on A.
func TestClusterBrowserRedirect(t *testing.T) {
	needBrowser(t)
	redis := testkit.StartRedis(t)
	start := func(name string) (*Bridge, string) {
		cfg := config.Default()
		cfg.Routes = append([]config.Route{{Path: "private/{name}", ReadKey: testViewerKey}}, cfg.Routes...)
		public := clusterListen(t, cfg)
		cfg.Cluster = config.Cluster{Redis: redis.URL, Node: name, PublicURL: public, Token: tableClusterToken,
			Mode: config.ClusterRedirect, Heartbeat: 200 * time.Millisecond}
		return startListeningWith(t, cfg, Options{IncludeLoopback: true}, testLog(t)), public
	}
	a, aURL := start("a")
	b, _ := start("b")
	publish(t, "h264-aac.flv", "rtmp://"+a.RTMPAddr().String()+"/private/cam")
	waitStream(t, a, "private/cam")
	waitFor(t, 10*time.Second, "B's registry naming A the owner of private/cam and listing A's public URL", func() bool {
		return ownerOf(b, "private/cam") == "a" && slices.Contains(b.cluster.PublicURLs(), aURL)
	})

	page := "http://" + b.HTTPAddr().String() + "/watch/private/cam?token=" + testViewerKey
	needPlayerPage(t, page)
	res := startWatch(t, page).wait()
	checkPlayed(t, res)
	if !strings.Contains(res.CSP, "connect-src 'self' "+aURL) && !strings.Contains(res.CSP, " "+aURL+";") {
		t.Errorf("B's player page CSP %q does not let the page connect to A (%s)", res.CSP, aURL)
	}
	if b.sessions.Len() != 0 {
		t.Errorf("%d sessions on B, want the viewer's on A", b.sessions.Len())
	}
	var onA bool
	for _, d := range res.Deletes {
		onA = onA || strings.HasPrefix(d.URL, aURL+"/sessions/") && d.Status == 200
	}
	if !onA {
		t.Errorf("the page's DELETEs %+v: none answered 200 by A (%s), where the session lives", res.Deletes, aURL)
	}
	waitNoSessions(t, a)
}
