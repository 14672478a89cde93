package main

import (
	"bytes"
	"fmt"
	"math"
	"os/exec"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/transcode/av"
)

// publishSRT runs ffmpeg publishing a looped TS fixture over SRT with
// streamid (and passphrase, if not empty) until the test ends.
func publishSRT(t *testing.T, b *Bridge, file, streamid, passphrase string) *exec.Cmd {
	t.Helper()
	url := fmt.Sprintf("srt://%s?streamid=%s&pkt_size=1316", b.SRTAddr(), streamid)
	if passphrase != "" {
		url += "&passphrase=" + passphrase
	}
	cmd := exec.Command(needFFmpeg(t), "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
		"-i", fixture(t, file), "-c", "copy", "-f", "mpegts", url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if stderr.Len() > 0 {
			t.Logf("ffmpeg srt publisher: %s", stderr.String())
		}
	})
	return cmd
}

// TestSRTToWHEP: MPEG-TS over SRT with AAC (transcoded) and with Opus
// (passed through) plays over WHEP with the fixture's tones, in both
// streamid forms and with a passphrase.
func TestSRTToWHEP(t *testing.T) {
	if !av.Available() {
		t.Fatal("this test binary has no FFmpeg: build with cgo and install libavcodec-dev libavutil-dev libswresample-dev pkg-config")
	}
	cfg := config.Default()
	cfg.Routes = append([]config.Route{{Path: "secure/{name}", Passphrase: "0123456789abc"}}, cfg.Routes...)
	b := startBridge(t, cfg)
	cases := []struct{ file, streamid, path, passphrase string }{
		{"h264-aac.ts", "publish:live/srt-aac", "live/srt-aac", ""},
		{"h264-opus.ts", "#!::r=live/srt-opus,m=publish", "live/srt-opus", ""},
		{"h264-aac.ts", "publish:secure/cam", "secure/cam", "0123456789abc"},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			publishSRT(t, b, c.file, c.streamid, c.passphrase)
			waitStream(t, b, c.path)
			v := watch(t, b, c.path, nil)
			aus := v.waitFrames(t, 90, 20*time.Second)
			if sps := aus[0].nalus[0]; len(sps) == 0 || sps[0]&0x1f != 7 {
				t.Fatalf("first frame does not start with an SPS")
			}
			v.mu.Lock()
			audio := append([]audioPacket(nil), v.audio...)
			v.mu.Unlock()
			if len(audio) < 100 {
				t.Fatalf("got %d Opus packets, want ~50/s", len(audio))
			}
			left, right := decodeOpus(t, audio)
			from := len(left) / 3
			if on := beepOnsets(left); len(on) > 0 {
				from = on[0] + 4800
			}
			if from+24000 > len(left) {
				t.Fatalf("only %d samples of audio", len(left))
			}
			if got := dominant(left[from : from+24000]); math.Abs(got-440) > 5 {
				t.Errorf("left channel %.0f Hz, want 440", got)
			}
			if got := dominant(right[from : from+24000]); math.Abs(got-660) > 5 {
				t.Errorf("right channel %.0f Hz, want 660", got)
			}
		})
	}

	// A wrong passphrase is refused; the streams above keep playing.
	bad := publishSRT(t, b, "h264-aac.ts", "publish:secure/other", "wrongwrongwrong")
	done := make(chan error, 1)
	go func() { done <- bad.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("publisher with a wrong passphrase exited 0")
		}
	case <-time.After(15 * time.Second):
		t.Error("publisher with a wrong passphrase was not refused within 15 s")
	}
	if _, ok := b.registry.Get("secure/other"); ok {
		t.Error("stream published with a wrong passphrase")
	}
}
