package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/rtc"
)

// TestClusterRedisRedirect: two bridges joined through a real redis-server
// in redirect mode. A viewer of a token-protected stream published on A
// asks B, is sent to A by the 307 B builds from the registry's claim, and
// plays from A without its Authorization header (the signed
// cluster_redirect stands for it); the session's DELETE sent to B is
// forwarded to A, found through the registry's node list, and ends it.
func TestClusterRedisRedirect(t *testing.T) {
	redis := testkit.StartRedis(t)
	start := func(name string) *Bridge {
		cfg := config.Default()
		cfg.Routes = append([]config.Route{{Path: "private/{name}", ReadKey: testViewerKey}}, cfg.Routes...)
		public := clusterListen(t, cfg)
		cfg.Cluster = config.Cluster{Redis: redis.URL, Node: name, PublicURL: public, Token: tableClusterToken,
			Mode: config.ClusterRedirect, Heartbeat: 200 * time.Millisecond}
		return startListeningWith(t, cfg, Options{IncludeLoopback: true}, testLog(t))
	}
	a, b := start("a"), start("b")
	publish(t, "h264-aac.flv", "rtmp://"+a.RTMPAddr().String()+"/private/cam")
	waitStream(t, a, "private/cam")
	began := time.Now()
	waitFor(t, 10*time.Second, "B's registry naming A the owner of private/cam", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		cl, ok, err := b.cluster.Owner(ctx, "private/cam")
		return err == nil && ok && cl.Node == "a"
	})
	t.Logf("claim visible on B after %v", time.Since(began).Round(time.Millisecond))

	var via []string
	v := joinURL(t, browserClient(&via), newViewerAPI(t), whepURL(b, "private/cam"), map[string]string{"Authorization": "Bearer " + testViewerKey})
	t.Cleanup(func() { _ = v.pc.Close() })
	if len(via) != 1 || !strings.HasPrefix(via[0], whepURL(a, "private/cam")+"?cluster_redirect=") {
		t.Fatalf("redirects followed: %q, want one to A", via)
	}
	v.waitFrames(t, 30, 20*time.Second)
	if a.sessions.Len() != 1 || b.sessions.Len() != 0 {
		t.Fatalf("sessions: A %d, B %d, want the viewer on A", a.sessions.Len(), b.sessions.Len())
	}

	id := v.location[strings.LastIndex(v.location, "/")+1:]
	if status, body := deleteAt(t, "http://"+b.HTTPAddr().String()+rtc.SessionPathPrefix+id); status != http.StatusOK {
		t.Fatalf("DELETE of A's session at B: %d %s, want 200 (forwarded to A)", status, body)
	}
	waitFor(t, 5*time.Second, "A's session ended", func() bool { return a.sessions.Len() == 0 })
}
