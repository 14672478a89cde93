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

	for _, hop := range []struct {
		name string
		b    *Bridge
		path string
	}{{"WHIP forward A -> B", b, "from/a"}, {"WHEP pull A -> C", c, "pulled/a"}} {
		t.Run(hop.name, func(t *testing.T) {
			waitStream(t, hop.b, hop.path)
			v := watch(t, hop.b, hop.path, nil)
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
