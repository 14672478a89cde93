package node

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// peers is a registry that knows a fixed set of nodes.
type peers map[string]Peer

func (p peers) Owner(context.Context, string) (Peer, bool, error) { return Peer{}, false, nil }
func (p peers) Pick(context.Context) (Peer, bool, error)          { return Peer{}, false, nil }
func (p peers) Node(_ context.Context, name string) (Peer, bool, error) {
	peer, ok := p[name]
	return peer, ok, nil
}

// TestForwardSessionsRefusals: what a node answers when it cannot forward
// a session request, and that a forwarded one is never forwarded again.
func TestForwardSessionsRefusals(t *testing.T) {
	const token = "forward-test-cluster-token"
	// A port nothing listens on: node "gone" is registered but dead.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	log, _ := testkit.TestLog(t, "NODE_LOG")
	cfg := config.Default()
	cfg.Cluster = config.Cluster{Node: "a", PublicURL: "http://a.example", Token: token}
	n := New(cfg, Options{Registry: media.NewRegistry(log), Log: log, Cluster: peers{"gone": {Name: "gone", InternalURL: dead}}})
	sessions := rtc.NewSessions(rtc.Limits{}, log)
	mux := http.NewServeMux()
	sessions.Register(mux)
	h := n.ForwardSessions(mux)

	serve := func(method, id, body string, hdr ...string) (int, string) {
		r := httptest.NewRequest(method, "http://a.example"+rtc.SessionPathPrefix+id, strings.NewReader(body))
		r.Header.Set("Content-Type", rtc.SdpfragType)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		b, _ := io.ReadAll(w.Result().Body)
		return w.Code, strings.TrimSpace(string(b))
	}
	id := func(node string) string { return strings.Repeat("ab", 16) + "~" + node }
	for _, c := range []struct {
		name, method, id, body string
		hdr                    []string
		status                 int
		says                   string
	}{
		{"this node's session", "DELETE", id("a"), "", nil, 404, "no such session"},
		{"a node not in the cluster", "DELETE", id("left"), "", nil, 404, `node "left", which is not in the cluster`},
		{"a node that does not answer", "DELETE", id("gone"), "", nil, 502, `node "gone", which did not answer`},
		{"a body over 64 KiB", "PATCH", id("gone"), strings.Repeat("a", rtc.MaxSDPSize+1), nil, 413, "larger than"},
		{"forwarded already", "DELETE", id("gone"), "", []string{"Authorization", "Bearer " + token}, 404, "no such session"},
	} {
		status, body := serve(c.method, c.id, c.body, c.hdr...)
		if status != c.status || !strings.Contains(body, c.says) {
			t.Errorf("%s: %d %q, want %d saying %q", c.name, status, body, c.status, c.says)
		}
		if strings.Contains(body, ln.Addr().String()) {
			t.Errorf("%s: the answer %q tells the client a node's internal address", c.name, body)
		}
	}
	// Outside a cluster nothing is forwarded.
	alone := New(config.Default(), Options{Registry: media.NewRegistry(log), Log: log}).ForwardSessions(mux)
	w := httptest.NewRecorder()
	alone.ServeHTTP(w, httptest.NewRequest("DELETE", "http://x"+rtc.SessionPathPrefix+id("gone"), nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("alone: %d, want the local 404", w.Code)
	}
}
