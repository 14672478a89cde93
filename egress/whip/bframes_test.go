package whip

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/internal/testkit/rtcserver"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
	"github.com/wishbridge/bridge/webrtccodec"
)

// TestForwardBFrames: a WHIP forward of an RTMP source with B-frames
// (x264 High, B-pyramid) gets the route's B-frame policy, as the stream's
// WHEP viewers do: by default the target receives Constrained Baseline
// video without a B slice; with "reject" no session is made and the
// forward's failure says why; with "passthrough" the B-frames go as they
// are.
func TestForwardBFrames(t *testing.T) {
	src := startSource(t, "h264-bframes-aac.flv")

	t.Run("reencode", func(t *testing.T) {
		if !transcode.CanReencodeVideo() {
			t.Skip("built without FFmpeg or libx264")
		}
		rem := rtcserver.StartWHIP(t, "", nil)
		f := newTestForwarder(src, rem.URL+"/whip/"+dstPath, "") // Config.BFrames zero: reencode
		run(t, f)
		got := receiveSlices(t, rem.Registry, 3*time.Second)
		if got.b != 0 || got.slices == 0 {
			t.Errorf("target got %d B slices of %d, expected none (re-encoded)", got.b, got.slices)
		}
		if got.profile != 0x42 {
			t.Errorf("target's SPS has profile_idc %#x, expected 0x42 (Constrained Baseline)", got.profile)
		}
	})

	t.Run("passthrough", func(t *testing.T) {
		rem := rtcserver.StartWHIP(t, "", nil)
		f := newTestForwarder(src, rem.URL+"/whip/"+dstPath, "")
		f.cfg.BFrames = webrtccodec.BFramesPassthrough
		run(t, f)
		if got := receiveSlices(t, rem.Registry, 3*time.Second); got.b == 0 {
			t.Errorf("target got no B slice of %d, expected the source's B-frames passed through", got.slices)
		}
	})

	t.Run("reject", func(t *testing.T) {
		rem := rtcserver.StartWHIP(t, "", nil)
		f := newTestForwarder(src, rem.URL+"/whip/"+dstPath, "")
		f.cfg.BFrames = webrtccodec.BFramesReject
		run(t, f)
		testkit.WaitFor(t, 10*time.Second, "the forward's refusal logged", func() bool {
			return strings.Contains(src.logs.String(), "whip forward failed") && strings.Contains(src.logs.String(), "has B-frames")
		})
		if n := rem.Count("POST ", ""); n != 0 {
			t.Errorf("%d POSTs to the target, expected none:\n%s", n, rem.RequestLog())
		}
	})
}

// sliceStats counts the coded slices a reader received and notes the
// profile of the first SPS.
type sliceStats struct {
	slices, b int
	profile   byte
}

// receiveSlices reads dstPath on reg for d (after waiting for it to be
// ready) and counts its video's slices.
func receiveSlices(t *testing.T, reg *media.Registry, d time.Duration) sliceStats {
	t.Helper()
	st := testkit.WaitReady(t, reg, dstPath, 20*time.Second)
	r, err := st.NewReader(media.ReaderOptions{Name: "test", QueueSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out sliceStats
	for _, tr := range st.Tracks() {
		if c, ok := tr.Codec.(media.H264); ok && len(c.SPS) > 1 {
			out.profile = c.SPS[1]
		}
	}
	for {
		u, err := r.Read(ctx)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("read %s: %v", dstPath, err)
			}
			return out
		}
		for _, n := range u.NALUs {
			switch typ := transcode.SliceType(n); {
			case typ == transcode.SliceB:
				out.b++
				out.slices++
			case typ >= 0:
				out.slices++
			case n[0]&0x1f == 7 && out.profile == 0 && len(n) > 1:
				out.profile = n[1]
			}
		}
	}
}
