package rtmp

import (
	"context"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/media"
)

// TestPanicLeavesOtherStreamsPlaying: while ffmpeg publishes live/a to a
// reader, another publisher's handler panics. That connection alone ends;
// the panic is logged and counted once; ffmpeg stays connected and its
// reader keeps getting frames, past the panic.
func TestPanicLeavesOtherStreamsPlaying(t *testing.T) {
	ts := startServer(t, allowAll, func(s *Server) {
		attach := s.onPublish
		s.onPublish = func(st *media.Stream) {
			if st.Path() == "live/boom" {
				panic("boom")
			}
			attach(st)
		}
	})
	ff := publish(t, "h264-aac.flv", 10, ts.url("live/a"))
	r := ts.nextReader(t, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// lastVideo reads n video units and returns the last one's PTS.
	lastVideo := func(n int) time.Duration {
		t.Helper()
		var pts time.Duration
		for n > 0 {
			u, err := r.Read(ctx)
			if err != nil {
				t.Fatalf("live/a's reader: %v", err)
			}
			if u.Track.IsVideo() {
				pts = u.PTS
				n--
			}
		}
		return pts
	}
	lastVideo(5)

	before := panics.CountOf(panicComponent)
	c := dialRaw(t, ts.addr)
	c.command(8, c.connect("live"), "publish", 0, args{nil, "boom", "live"})
	if err := c.waitClosed(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := panics.CountOf(panicComponent) - before; n != 1 {
		t.Errorf("%d panics counted under %q, want 1", n, panicComponent)
	}
	ts.logs.WaitLog(t, time.Second, "panic recovered", `component="rtmp connection"`, "stack=")

	// ffmpeg publishes in real time: 30 more frames are a second of
	// video sent after the panic.
	atPanic := lastVideo(1)
	if after := lastVideo(30); after-atPanic < 900*time.Millisecond {
		t.Errorf("live/a went from %v to %v over 30 frames", atPanic, after)
	}
	select {
	case <-ff.Done():
		t.Fatalf("ffmpeg's publish ended: %v", ff.Err())
	default:
	}
}
