package whip

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/internal/testkit/rtcserver"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// source is the local side: a registry fed by an in-process RTMP server
// that ffmpeg publishes a looped fixture to, at live/src, and the engine
// the forwarders under test use.
type source struct {
	reg    *media.Registry
	engine *rtc.Engine
	log    *slog.Logger
	logs   *testkit.LogBuf
}

const srcPath = rtcserver.SourcePath

func startSource(t *testing.T, fixture string) *source {
	t.Helper()
	src := rtcserver.StartSource(t, "local", fixture)
	s := &source{reg: src.Registry, engine: rtcserver.NewEngine(t, src.Log), log: src.Log, logs: src.Logs}
	t.Cleanup(func() { _ = s.engine.Close() })
	return s
}

// mediaStats is what a reader received over a while.
type mediaStats struct {
	width, height int     // from the first SPS seen
	fps           float64 // video units per second of PTS
	videoUnits    int     // with NAL units
	opusUnits     int
	codecs        string
}

// newReader waits for the stream at path on reg to be ready and returns
// it with a reader of it; the caller closes the reader.
func newReader(t *testing.T, reg *media.Registry, path string) (*media.Stream, *media.Reader) {
	t.Helper()
	st := testkit.WaitReady(t, reg, path, 20*time.Second)
	r, err := st.NewReader(media.ReaderOptions{Name: "test", QueueSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	return st, r
}

// readFor passes each unit r reads to fn for d.
func readFor(t *testing.T, r *media.Reader, path string, d time.Duration, fn func(*media.Unit)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		u, err := r.Read(ctx)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("read %s: %v", path, err)
			}
			return
		}
		fn(u)
	}
}

// receive reads path on reg for d (after waiting for it to be ready) and
// summarises what arrived.
func receive(t *testing.T, reg *media.Registry, path string, d time.Duration) mediaStats {
	t.Helper()
	st, r := newReader(t, reg, path)
	defer r.Close()
	var out mediaStats
	var names []string
	for _, tr := range st.Tracks() {
		names = append(names, tr.Codec.Name())
	}
	out.codecs = strings.Join(names, " ")
	var first, last time.Duration
	readFor(t, r, path, d, func(u *media.Unit) {
		switch u.Track.Codec.(type) {
		case media.H264:
			if u.NALUs == nil {
				return
			}
			if out.videoUnits == 0 {
				first = u.PTS
			}
			last = u.PTS
			out.videoUnits++
			for _, n := range u.NALUs {
				if h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS && out.width == 0 {
					var sps h264.SPS
					if err := sps.Unmarshal(n); err != nil {
						t.Fatalf("SPS: %v", err)
					}
					out.width, out.height = sps.Width(), sps.Height()
				}
			}
		case media.Opus:
			if len(u.Data) > 0 {
				out.opusUnits++
			}
		}
	})
	if out.videoUnits > 1 && last > first {
		out.fps = float64(out.videoUnits-1) / (last - first).Seconds()
	}
	return out
}

// checkMedia checks what receive saw: H.264 640x360 at about 30 fps and
// Opus at about 50 packets a second.
func checkMedia(t *testing.T, got mediaStats, d time.Duration) {
	t.Helper()
	if got.codecs != "H264 Opus" {
		t.Errorf("remote tracks [%s], expected [H264 Opus]", got.codecs)
	}
	if got.width != 640 || got.height != 360 {
		t.Errorf("SPS says %dx%d, expected 640x360", got.width, got.height)
	}
	if got.fps < 27 || got.fps > 33 {
		t.Errorf("video at %.1f fps (%d units), expected about 30", got.fps, got.videoUnits)
	}
	if min := int(d.Seconds() * 50 * 0.7); got.opusUnits < min {
		t.Errorf("%d Opus units in %v, expected at least %d", got.opusUnits, d, min)
	}
}
