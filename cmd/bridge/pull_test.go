package main

import (
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// serveSource runs ffmpeg serving a looped fixture at url as a listener.
func serveSource(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(needFFmpeg(t), append([]string{"-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1"}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// TestPull: a route pulls from an SRT listener when loaded, another pulls
// from an RTMP server only when the first viewer asks (on_demand); WHEP
// viewers get video and audio from both.
func TestPull(t *testing.T) {
	srtPort, rtmpPort := testkit.FreeUDPPort(t), testkit.FreeTCPPort(t)
	serveSource(t, "-i", fixture(t, "h264-aac.ts"), "-c", "copy", "-f", "mpegts",
		fmt.Sprintf("srt://127.0.0.1:%d?mode=listener&pkt_size=1316", srtPort))
	serveSource(t, "-i", fixture(t, "h264-aac.flv"), "-c", "copy", "-f", "flv", "-listen", "1",
		fmt.Sprintf("rtmp://127.0.0.1:%d/live/src", rtmpPort))

	cfg := config.Default()
	cfg.Routes = append([]config.Route{
		{Path: "cams/srt", Pull: fmt.Sprintf("srt://127.0.0.1:%d", srtPort)},
		{Path: "cams/rtmp", Pull: fmt.Sprintf("rtmp://127.0.0.1:%d/live/src", rtmpPort), OnDemand: true},
	}, cfg.Routes...)
	b := startBridge(t, cfg)

	waitStream(t, b, "cams/srt")
	if _, ok := b.registry.Get("cams/rtmp"); ok {
		t.Fatal("on-demand pull ran before anyone asked")
	}
	for _, path := range []string{"cams/srt", "cams/rtmp"} {
		v := watch(t, b, path, nil)
		v.waitFrames(t, 60, 20*time.Second)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			v.mu.Lock()
			n := len(v.audio)
			v.mu.Unlock()
			if n > 50 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		v.mu.Lock()
		if len(v.audio) <= 50 {
			t.Errorf("%s: %d audio packets, want audio", path, len(v.audio))
		}
		v.mu.Unlock()
	}
}
