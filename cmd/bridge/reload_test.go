package main

import (
	"io"
	"net/http"
	"testing"

	"github.com/wishbridge/bridge/config"
)

// TestReload: a reloaded config's tokens apply to the next request while
// the stream (and its publisher) keep going; a listener change is not
// applied without a restart.
func TestReload(t *testing.T) {
	route := func(token string) *config.Config {
		cfg := config.Default()
		cfg.Routes = append([]config.Route{{Path: "private/{name}", WHEP: config.WHEP{Token: token}}}, cfg.Routes...)
		return cfg
	}
	b := startBridge(t, route("first-token"))
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/private/cam")
	waitStream(t, b, "private/cam")
	status := func(token string) int {
		_, offer := newOffer(t, newViewerAPI(t))
		resp := post(t, "http://"+b.HTTPAddr().String()+"/whep/private/cam", "application/sdp", offer,
			map[string]string{"Authorization": "Bearer " + token})
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("first-token"); got != http.StatusCreated {
		t.Fatalf("before reload: %d", got)
	}

	next := route("second-token")
	next.Listen = b.node.Config().Listen
	next.Listen.HTTP = "127.0.0.1:1" // needs a restart: not applied
	b.Reload(next)
	if got := status("first-token"); got != http.StatusUnauthorized {
		t.Errorf("old token after reload: %d, want 401", got)
	}
	if got := status("second-token"); got != http.StatusCreated {
		t.Errorf("new token after reload: %d, want 201", got)
	}
	if got := b.node.Config().Listen.HTTP; got == "127.0.0.1:1" {
		t.Error("listen change applied without a restart")
	}
	if _, ok := b.registry.Get("private/cam"); !ok {
		t.Error("the stream did not survive the reload")
	}
}
