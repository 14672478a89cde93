package main

import (
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
)

// TestTwoBridges: bridge A forwards an RTMP-published stream to bridge B's
// WHIP endpoint, and bridge C pulls the same stream from A's WHEP endpoint;
// WHEP viewers on B and C receive video and Opus.
func TestTwoBridges(t *testing.T) {
	b := startBridge(t, nil)
	bURL := "http://" + b.HTTPAddr().String()

	aCfg := config.Default()
	aCfg.Routes = append([]config.Route{{Path: "live/a", Forward: []config.Forward{{WHIP: bURL + "/whip/from/a"}}}}, aCfg.Routes...)
	a := startBridge(t, aCfg)
	publish(t, "h264-aac.flv", "rtmp://"+a.RTMPAddr().String()+"/live/a")
	waitStream(t, a, "live/a")

	cCfg := config.Default()
	cCfg.Routes = append([]config.Route{{Path: "pulled/a", Pull: "whep+http://" + a.HTTPAddr().String() + "/whep/live/a"}}, cCfg.Routes...)
	c := startBridge(t, cCfg)

	checkHops(t, []hop{{"WHIP forward A -> B", b, "from/a"}, {"WHEP pull A -> C", c, "pulled/a"}})
}

// hop is a stream that arrives at a bridge from another one.
type hop struct {
	name string
	b    *Bridge
	path string
}

// checkHops has a WHEP viewer on each hop's bridge receive video and Opus.
func checkHops(t *testing.T, hops []hop) {
	t.Helper()
	for _, h := range hops {
		t.Run(h.name, func(t *testing.T) {
			waitStream(t, h.b, h.path)
			v := watch(t, h.b, h.path, nil)
			v.waitFrames(t, 60, 20*time.Second)
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				v.mu.Lock()
				n := len(v.audio)
				v.mu.Unlock()
				if n >= 50 {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Error("no Opus audio through the hop")
		})
	}
}

// TestOutboundToOneBridge: the collision case of issue 14 against another
// bridge, which takes every WebRTC session on one media port: bridge A
// forwards one stream to two WHIP paths of bridge B and pulls one of them
// back over WHEP, three outbound sessions to one remote media address at
// once; each hop carries video and Opus. (TestOutboundSessionsToOneServer
// in egress/whip does the same against a pion server.)
func TestOutboundToOneBridge(t *testing.T) {
	b := startBridge(t, nil)
	bURL := "http://" + b.HTTPAddr().String()

	aCfg := config.Default()
	aCfg.Routes = append([]config.Route{
		{Path: "live/a", Forward: []config.Forward{{WHIP: bURL + "/whip/from/a1"}, {WHIP: bURL + "/whip/from/a2"}}},
		{Path: "back/a", Pull: "whep+" + bURL + "/whep/from/a1"},
	}, aCfg.Routes...)
	a := startBridge(t, aCfg)
	publish(t, "h264-aac.flv", "rtmp://"+a.RTMPAddr().String()+"/live/a")
	waitStream(t, a, "live/a")

	checkHops(t, []hop{{"WHIP forward 1", b, "from/a1"}, {"WHIP forward 2", b, "from/a2"}, {"WHEP pull", a, "back/a"}})
}
