package node

import (
	"testing"

	"github.com/wishbridge/bridge/config"
)

// TestForwardSpecCoversPolicy: every route setting a forward's runner
// uses is part of its identity, so a reload that changes one restarts it.
func TestForwardSpecCoversPolicy(t *testing.T) {
	base := config.Route{Path: "a", Forward: []config.Forward{{WHIP: "http://t.example/whip/a"}}}
	changed := map[string]func(*config.Route){
		"bframes":      func(r *config.Route) { r.BFrames = config.BFramesPassthrough },
		"opus_bitrate": func(r *config.Route) { r.Audio.OpusBitrate = 64000 },
		"aac_bitrate":  func(r *config.Route) { r.Audio.AACBitrate = 64000 },
		"token":        func(r *config.Route) { r.Forward[0].Token = "t2" },
	}
	for name, change := range changed {
		r := base
		r.Forward = append([]config.Forward(nil), base.Forward...)
		change(&r)
		if forwardSpecs("a", &base)[0] == forwardSpecs("a", &r)[0] {
			t.Errorf("a change of %s leaves the forward's spec equal: a reload would not apply it", name)
		}
	}
}
