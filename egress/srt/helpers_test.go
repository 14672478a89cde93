package srt

import (
	"os"
	"testing"

	"github.com/wishbridge/bridge/transcode/av"
)

// Shared helpers (fixtures, ffmpeg, ffprobe, tone and A/V-sync checks)
// are in internal/testkit.

func TestMain(m *testing.M) {
	av.SetLogLevel(av.LogError) // the AAC encoder's statistics at close
	os.Exit(m.Run())
}
