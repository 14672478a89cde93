package srt

import (
	"testing"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/internal/testkit"
)

// TestDrain: once drained, the listener rejects a new caller with
// REJ_CLOSE and logs it, while the publisher connected before publishes to
// its end (ffmpeg exits 0 with every second of its stream read).
func TestDrain(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	ff := publish(t, testkit.Fixture("h264-aac.ts"), 3, ts.url("publish:live/running"))
	r := ts.nextReader(t, 10*time.Second)

	ts.Drain()
	if _, err := dial(t, ts, "publish:live/new", ""); rejectCode(err) != int(gosrt.REJ_CLOSE) {
		t.Errorf("a new caller while draining: %v, want rejection %d (REJ_CLOSE)", err, gosrt.REJ_CLOSE)
	}
	ts.logs.WaitLog(t, 5*time.Second, "srt connection refused", "code=1007", "reason=\"server shutting down\"")

	units := testkit.ReadAll(t, r, 20*time.Second)
	if err := ff.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("the publisher connected before the drain: ffmpeg: %v\n%s", err, ff.Stderr.String())
	}
	if video, audio := testkit.SplitUnits(units); len(video) < 60 || len(audio) < 105 {
		t.Errorf("%d video and %d audio units for 3 s: the drain cut the running publisher", len(video), len(audio))
	}
}
