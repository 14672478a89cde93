package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// probe returns ffprobe's one-line-per-stream summary of file.
func probe(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries",
		"stream=codec_name,width,height,sample_rate,channels:format=duration", "-of", "compact", file).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", file, err, out)
	}
	return string(out)
}

// pcmOf decodes file's audio to 48 kHz stereo float32 samples.
func pcmOf(t *testing.T, file string) (left, right []float32) {
	t.Helper()
	out, err := exec.Command(needFFmpeg(t), "-v", "error", "-i", file, "-vn", "-f", "f32le", "-ac", "2", "-ar", "48000", "-").Output()
	if err != nil {
		t.Fatalf("decode %s: %v", file, err)
	}
	for i := 0; i+8 <= len(out); i += 8 {
		left = append(left, math.Float32frombits(binary.LittleEndian.Uint32(out[i:])))
		right = append(right, math.Float32frombits(binary.LittleEndian.Uint32(out[i+4:])))
	}
	return left, right
}

// TestWHIPToRTMPForward: a stream published over WHIP (H.264 + Opus) is
// pushed by the route's forward to an RTMP server (ffmpeg listening),
// with the audio transcoded to AAC; RTMP play from the bridge gives the
// same. ffprobe and the decoded tones say what arrived.
func TestWHIPToRTMPForward(t *testing.T) {
	ff := needFFmpeg(t)
	port := testkit.FreeTCPPort(t)
	out := filepath.Join(t.TempDir(), "out.flv")
	sink := exec.Command(ff, "-hide_banner", "-loglevel", "error", "-listen", "1", "-timeout", "30",
		"-i", fmt.Sprintf("rtmp://127.0.0.1:%d/live/out", port), "-c", "copy", "-y", out)
	var sinkErr bytes.Buffer
	sink.Stderr = &sinkErr
	if err := sink.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sink.Process.Kill(); _ = sink.Wait() }()

	cfg := config.Default()
	cfg.Routes = append([]config.Route{{Path: "live/fwd",
		Forward: []config.Forward{{RTMP: fmt.Sprintf("rtmp://127.0.0.1:%d/live/out", port)}}}}, cfg.Routes...)
	b := startBridge(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	publishWHIP(t, ctx, "http://"+b.HTTPAddr().String()+"/whip/live/fwd")
	waitStream(t, b, "live/fwd")

	// RTMP play of the same stream, by ffmpeg.
	played := filepath.Join(t.TempDir(), "played.flv")
	play := exec.Command(ff, "-hide_banner", "-loglevel", "error", "-i", "rtmp://"+b.RTMPAddr().String()+"/live/fwd",
		"-t", "4", "-c", "copy", "-y", played)
	if outb, err := play.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg RTMP play: %v\n%s", err, outb)
	}

	time.Sleep(3 * time.Second) // the forward has been recording meanwhile
	cancel()                    // the WHIP publisher stops; the forward ends the push
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	_ = b.Close(ctx2) // ends the push, so ffmpeg finishes the file
	done := make(chan error, 1)
	go func() { done <- sink.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = sink.Process.Signal(interruptSignal)
		<-done
	}

	for name, file := range map[string]string{"forward": out, "play": played} {
		info := probe(t, file)
		t.Logf("%s: %s", name, strings.ReplaceAll(info, "\n", " | "))
		if !strings.Contains(info, "codec_name=h264|width=640|height=360") ||
			!strings.Contains(info, "codec_name=aac|sample_rate=48000|channels=2") {
			t.Errorf("%s: got %s, want H.264 640x360 and AAC 48 kHz stereo", name, info)
		}
		left, right := pcmOf(t, file)
		if len(left) < 48000*2 {
			t.Fatalf("%s: only %d samples of audio", name, len(left))
		}
		from := 24000
		if on := beepOnsets(left); len(on) > 0 {
			from = on[0] + 4800
		}
		if from+24000 > len(left) {
			from = len(left) - 24000
		}
		if got := dominant(left[from : from+24000]); math.Abs(got-440) > 5 {
			t.Errorf("%s: left %.0f Hz, want 440", name, got)
		}
		if got := dominant(right[from : from+24000]); math.Abs(got-660) > 5 {
			t.Errorf("%s: right %.0f Hz, want 660", name, got)
		}
	}
}

var interruptSignal = os.Interrupt // ffmpeg finishes its file on SIGINT

// TestSRTRead: ffmpeg reads an RTMP-published stream from the bridge's SRT
// port in both streamid forms and gets H.264 and AAC with the tones.
func TestSRTRead(t *testing.T) {
	b := startBridge(t, nil)
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/r")
	waitStream(t, b, "live/r")
	for i, sid := range []string{"read:live/r", "#!::r=live/r,m=request"} {
		out := filepath.Join(t.TempDir(), fmt.Sprintf("read%d.ts", i))
		cmd := exec.Command(needFFmpeg(t), "-hide_banner", "-loglevel", "error",
			"-i", fmt.Sprintf("srt://%s?streamid=%s", b.SRTAddr(), sid), "-t", "4", "-c", "copy", "-f", "mpegts", "-y", out)
		if outb, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg SRT read %q: %v\n%s", sid, err, outb)
		}
		info := probe(t, out)
		if !strings.Contains(info, "codec_name=h264|width=640|height=360") || !strings.Contains(info, "codec_name=aac|sample_rate=48000|channels=2") {
			t.Errorf("%s: got %s, want H.264 640x360 and AAC 48 kHz stereo", sid, info)
		}
		left, right := pcmOf(t, out)
		if len(left) < 48000*2 {
			t.Fatalf("%s: only %d samples of audio", sid, len(left))
		}
		from := len(left) - 30000
		if got := dominant(left[from : from+24000]); math.Abs(got-440) > 5 && math.Abs(got-1760) > 5 {
			t.Errorf("%s: left %.0f Hz, want 440", sid, got)
		}
		if got := dominant(right[from : from+24000]); math.Abs(got-660) > 5 {
			t.Errorf("%s: right %.0f Hz, want 660", sid, got)
		}
	}
}
