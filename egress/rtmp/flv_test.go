package rtmp

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

func TestAVCRecord(t *testing.T) {
	m := testkit.ReadFLV(t, "h264-bframes-aac.flv")
	c := m.Video.Codec.(media.H264)
	rec, err := avcRecord(c.SPS, c.PPS)
	if err != nil {
		t.Fatal(err)
	}
	// The fixture's own record, as x264/ffmpeg wrote it, is High profile
	// with the chroma and bit depth fields.
	if rec[1] != 100 || len(rec) != 11+len(c.SPS)+len(c.PPS)+4 || rec[len(rec)-4] != 0xfd || rec[len(rec)-3] != 0xf8 {
		t.Errorf("record %x", rec)
	}
}

// TestPushExtendedTimestamps pushes to ffmpeg with timestamps past
// 0xffffff ms (4 h 39 min, where RTMP switches to extended timestamps,
// repeated in every continuation chunk) and a chunk size of 128, so that
// the first message of each chunk stream has an extended timestamp and
// spans several chunks. ffmpeg must keep every frame.
func TestPushExtendedTimestamps(t *testing.T) {
	log, _ := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.ReadFLV(t, "h264-aac.flv")
	reg := media.NewRegistry(log)
	port := testkit.FreeTCPPort(t)
	file := filepath.Join(t.TempDir(), "out.flv")
	ff := listenFFmpeg(t, port, file)
	p, streaming, stop := startPusher(t, PushConfig{Registry: reg, URL: fmt.Sprintf("rtmp://127.0.0.1:%d/live/out", port), Log: log})
	p.tsOffset, p.cfg.ChunkSize = 0x1000000, 128
	pub := testkit.Publish(t, reg, "live/test", m)
	testkit.WaitStreaming(t, streaming, 10*time.Second)
	sent := testkit.Until(m.Units, 3*time.Second)
	testkit.Feed(context.Background(), pub, sent, 2, 0)
	pub.Close()
	if err := ff.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, ff.Stderr.String())
	}
	stop()
	pr := testkit.FFprobe(t, file)
	pr.CheckAVC(t)
	video := 0
	for _, u := range sent {
		if u.Track.IsVideo() {
			video++
		}
	}
	for _, s := range pr.Streams {
		if s.CodecType == "video" && s.NbFrames != fmt.Sprint(video) {
			t.Errorf("ffmpeg recorded %s video frames, sent %d", s.NbFrames, video)
		}
	}
	if d := pr.Duration(t); d < 2500*time.Millisecond {
		t.Errorf("recorded %v, sent 3 s", d)
	}
}
