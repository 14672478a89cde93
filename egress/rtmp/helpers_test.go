package rtmp

import (
	"fmt"
	"os"
	"testing"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/transcode/av"
)

// Shared helpers (fixtures, ffmpeg, ffprobe, tone and A/V-sync checks)
// are in internal/testkit.

// listenFFmpeg starts ffmpeg as an RTMP server recording what is published
// to rtmp://127.0.0.1:port/live/out into file.
func listenFFmpeg(t *testing.T, port int, file string) *testkit.Proc {
	t.Helper()
	return testkit.StartFFmpeg(t, "-y", "-listen", "1", "-i", fmt.Sprintf("rtmp://127.0.0.1:%d/live/out", port), "-c", "copy", file)
}

func TestMain(m *testing.M) {
	av.SetLogLevel(av.LogError) // the AAC encoder's statistics at close
	os.Exit(m.Run())
}
