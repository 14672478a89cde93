package main

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
)

// withRoutes is the default config with routes in front of its catch-all.
func withRoutes(routes ...config.Route) *config.Config {
	cfg := config.Default()
	cfg.Routes = append(routes, cfg.Routes...)
	return cfg
}

// reload reloads b with cfg on b's own listeners (a listener change would
// only be logged).
func reload(b *Bridge, cfg *config.Config) {
	cfg.Listen = b.node.Config().Listen
	b.Reload(cfg)
}

// noGrace makes a route end its stream as soon as its publisher leaves, so
// a test sees the publisher's end as the stream's.
func noGrace() *time.Duration {
	d := time.Duration(0)
	return &d
}

// TestReloadForwardToken: a WHIP forward's token rotated by a reload is
// the one the target gets. The target bridge takes publishers with its
// publish key as their bearer token only; the source forwards with a stale
// token (401) until the reload hands it the right one.
func TestReloadForwardToken(t *testing.T) {
	target := startBridge(t, withRoutes(config.Route{Path: "from/{name}", PublishKey: "second-token"}))
	forward := func(token string) *config.Config {
		return withRoutes(config.Route{Path: "live/a",
			Forward: []config.Forward{{WHIP: "http://" + target.HTTPAddr().String() + "/whip/from/a", Token: token}}})
	}
	src := startBridge(t, forward("first-token"))
	publish(t, "h264-aac.flv", "rtmp://"+src.RTMPAddr().String()+"/live/a")
	waitStream(t, src, "live/a")

	reload(src, forward("second-token"))
	waitStream(t, target, "from/a")
}

// TestReloadForwardSRTAudio: changing an SRT forward's audio codec by a
// reload restarts the forward: the target (a second bridge's SRT listener)
// of a stream with Opus audio receives AAC made from it, and after the
// reload the Opus as it is.
func TestReloadForwardSRTAudio(t *testing.T) {
	target := startBridge(t, nil)
	forward := func(audio string) *config.Config {
		return withRoutes(config.Route{Path: "live/a", Forward: []config.Forward{{
			SRT: fmt.Sprintf("srt://%s?streamid=publish:from/srt", target.SRTAddr()), Audio: audio}}})
	}
	src := startBridge(t, forward(config.AudioAAC))
	publishSRT(t, src, "h264-opus.ts", "publish:live/a", "")
	waitAudio(t, target, "from/srt", "AAC")

	reload(src, forward(config.AudioOpus))
	waitAudio(t, target, "from/srt", "Opus")
}

// waitAudio waits until path on b has an audio track of codec (its Codec
// Name: "AAC", "Opus").
func waitAudio(t *testing.T, b *Bridge, path, codec string) {
	t.Helper()
	var got []string
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		got = got[:0]
		if s, ok := b.registry.Get(path); ok {
			for _, tr := range s.Tracks() {
				if !tr.IsVideo() {
					got = append(got, tr.Codec.Name())
				}
			}
		}
		if slices.Contains(got, codec) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("stream %q: audio %v after 15 s, want %s", path, got, codec)
}

// TestReloadPull: a pull restarts when a reload changes its pull_token (the
// source, a second bridge's WHEP endpoint with a token, refuses the stale
// one), and when on_demand is turned on the pull stops until a reader asks
// for the stream.
func TestReloadPull(t *testing.T) {
	source := startBridge(t, withRoutes(config.Route{Path: "src/cam", WHEP: config.WHEP{Token: "pull-secret"}}))
	publish(t, "h264-aac.flv", "rtmp://"+source.RTMPAddr().String()+"/src/cam")
	waitStream(t, source, "src/cam")
	pull := func(token string, onDemand bool) *config.Config {
		return withRoutes(config.Route{Path: "pulled/cam", Grace: noGrace(), OnDemand: onDemand,
			Pull: "whep+http://" + source.HTTPAddr().String() + "/whep/src/cam", PullToken: token})
	}
	b := startBridge(t, pull("stale-secret", false))

	reload(b, pull("pull-secret", false))
	waitStream(t, b, "pulled/cam")

	reload(b, pull("pull-secret", true))
	waitNoStream(t, b, "pulled/cam", 5*time.Second)
	watch(t, b, "pulled/cam", nil).waitFrames(t, 30, 20*time.Second)
}

// TestReloadRemovedPatternForward: when a reload removes a pattern route
// with a forward, the forward stops at once: it ends its session at the
// target (a second bridge, whose stream then ends), rather than pushing on
// until the path would have been idle for forwardIdle.
func TestReloadRemovedPatternForward(t *testing.T) {
	target := startBridge(t, withRoutes(config.Route{Path: "from/{name}", Grace: noGrace()}))
	src := startBridge(t, withRoutes(config.Route{Path: "fwd/{name}",
		Forward: []config.Forward{{WHIP: "http://" + target.HTTPAddr().String() + "/whip/from/cam"}}}))
	publish(t, "h264-aac.flv", "rtmp://"+src.RTMPAddr().String()+"/fwd/cam")
	waitStream(t, target, "from/cam")

	reload(src, config.Default())
	waitNoStream(t, target, "from/cam", 5*time.Second)
	if _, ok := src.registry.Get("fwd/cam"); !ok {
		t.Error("the source stream did not survive the reload")
	}
}
