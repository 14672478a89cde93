package rtmp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ingestrtmp "github.com/wishbridge/bridge/ingest/rtmp"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
)

// startIngest serves the RTMP ingest on 127.0.0.1 with play wired to Play
// the way cmd/bridge wires it, and returns its address.
func startIngest(t *testing.T, reg *media.Registry, views *transcode.AACViews, log *slog.Logger) string {
	t.Helper()
	srv := ingestrtmp.NewServer(ingestrtmp.Config{
		Registry:  reg,
		Authorize: testkit.AllowAll,
		Play: func(ctx context.Context, req ingestrtmp.PlayRequest, w ingestrtmp.PlayWriter) error {
			st, ok := reg.Get(req.Path)
			if !ok {
				return fmt.Errorf("play %q: %w", req.Path, ingestrtmp.ErrStreamNotFound)
			}
			return Play(ctx, w, st, PlayOptions{Name: "rtmp play " + req.Remote, AAC: views, Log: log})
		},
		Log: log,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// waitStream waits until path is published with its tracks known.
func waitStream(t *testing.T, reg *media.Registry, path string, timeout time.Duration) *media.Stream {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if st, ok := reg.Get(path); ok && st.Tracks() != nil {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %q not published within %v", path, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPlayFFmpeg publishes the fixture with ffmpeg to the RTMP ingest and
// plays it with ffmpeg from the same port.
func TestPlayFFmpeg(t *testing.T) {
	t.Cleanup(testkit.GoroutineBaseline(t, 10*time.Second)) // after the server's cleanup
	log, logs := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	reg := media.NewRegistry(log)
	addr := startIngest(t, reg, transcode.NewAACViews(log), log)
	pub := testkit.StartFFmpeg(t, "-y", "-re", "-i", testkit.Fixture("h264-aac.flv"), "-t", "8", "-c", "copy", "-f", "flv", "rtmp://"+addr+"/live/test")
	waitStream(t, reg, "live/test", 10*time.Second)
	time.Sleep(1500 * time.Millisecond) // a GOP in the cache: the player starts with it

	file := filepath.Join(t.TempDir(), "out.flv")
	player := testkit.StartFFmpeg(t, "-y", "-i", "rtmp://"+addr+"/live/test", "-t", "3", "-c", "copy", file)
	if err := player.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("player: %v\n%s", err, player.Stderr.String())
	}
	p := testkit.FFprobe(t, file)
	p.CheckAVC(t)
	if d := p.Duration(t); d < 2500*time.Millisecond || d > 3500*time.Millisecond {
		t.Errorf("played %v, want about 3 s", d)
	}
	left, right := testkit.DecodeAudio(t, file)
	testkit.CheckTones(t, left, right, 48000*13/10, 24000)
	testkit.CheckSync(t, p, left, 2)
	pub.Kill()
	deadline := time.Now().Add(5 * time.Second)
	for logs.Count("rtmp play ended", "stream=live/test") == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if logs.Count("rtmp play ended", "stream=live/test") == 0 {
		t.Error("no \"rtmp play ended\" log line")
	}
}

// TestPlayOpusSource plays a stream with Opus audio: the player gets AAC.
func TestPlayOpusSource(t *testing.T) {
	log, _ := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.WithOpus(t, testkit.ReadFLV(t, "h264-aac.flv"))
	reg := media.NewRegistry(log)
	addr := startIngest(t, reg, transcode.NewAACViews(log), log)
	src := testkit.Publish(t, reg, "live/test", m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		testkit.Feed(ctx, src, m.Units, 1, 0)
		src.Close()
	}()
	time.Sleep(1200 * time.Millisecond)
	file := filepath.Join(t.TempDir(), "out.flv")
	player := testkit.StartFFmpeg(t, "-y", "-i", "rtmp://"+addr+"/live/test", "-t", "4", "-c", "copy", file)
	if err := player.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("player: %v\n%s", err, player.Stderr.String())
	}
	cancel()
	<-fed
	p := testkit.FFprobe(t, file)
	p.CheckAVC(t)
	left, right := testkit.DecodeAudio(t, file)
	testkit.CheckTones(t, left, right, 48000*13/10, 24000)
	testkit.CheckSync(t, p, left, 3)
}

// TestPlayNotFound: playing a path nobody publishes is refused with the
// reason.
func TestPlayNotFound(t *testing.T) {
	log, logs := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	reg := media.NewRegistry(log)
	addr := startIngest(t, reg, transcode.NewAACViews(log), log)
	player := testkit.StartFFmpeg(t, "-y", "-i", "rtmp://"+addr+"/live/nobody", "-t", "1", "-f", "null", "-")
	err := player.Wait(t, 20*time.Second)
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) {
		t.Fatalf("player exited with %v, want a failure", err)
	}
	if !strings.Contains(player.Stderr.String(), `stream "live/nobody" not found`) {
		t.Errorf("player's stderr does not give the reason:\n%s", player.Stderr.String())
	}
	if logs.Count("rtmp play refused", "stream=live/nobody", "stream not found") != 1 {
		t.Errorf("no refusal log line")
	}
}

// TestPlayStreamEnds: when the stream ends the player is told
// (NetStream.Play.Stop) and ffmpeg finishes its recording cleanly.
func TestPlayStreamEnds(t *testing.T) {
	t.Cleanup(testkit.GoroutineBaseline(t, 10*time.Second))
	log, logs := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.ReadFLV(t, "h264-aac.flv")
	reg := media.NewRegistry(log)
	addr := startIngest(t, reg, transcode.NewAACViews(log), log)
	src := testkit.Publish(t, reg, "live/test", m)
	file := filepath.Join(t.TempDir(), "out.flv")
	player := testkit.StartFFmpeg(t, "-y", "-i", "rtmp://"+addr+"/live/test", "-c", "copy", file)
	deadline := time.Now().Add(10 * time.Second)
	for logs.Count("rtmp connect") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // play sent: the reader is attached
	testkit.Feed(context.Background(), src, testkit.Until(m.Units, 3*time.Second), 2, 0)
	src.Close()
	if err := player.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("player: %v\n%s", err, player.Stderr.String())
	}
	p := testkit.FFprobe(t, file)
	p.CheckAVC(t)
	if d := p.Duration(t); d < 2500*time.Millisecond {
		t.Errorf("played %v of 3 s", d)
	}
	if logs.Count("rtmp play ended", "stream ended") != 1 {
		t.Error("no \"rtmp play ended\" log line with the reason")
	}
}

// TestPlayServerClose: closing the server ends a play at once, even with no
// media flowing.
func TestPlayServerClose(t *testing.T) {
	t.Cleanup(testkit.GoroutineBaseline(t, 10*time.Second))
	log, logs := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.ReadFLV(t, "h264-aac.flv")
	reg := media.NewRegistry(log)
	srv := ingestrtmp.NewServer(ingestrtmp.Config{
		Registry:  reg,
		Authorize: testkit.AllowAll,
		Play: func(ctx context.Context, req ingestrtmp.PlayRequest, w ingestrtmp.PlayWriter) error {
			st, ok := reg.Get(req.Path)
			if !ok {
				return ingestrtmp.ErrStreamNotFound
			}
			return Play(ctx, w, st, PlayOptions{Log: log})
		},
		Log: log,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	src := testkit.Publish(t, reg, "live/test", m)
	defer src.Close()
	testkit.Feed(context.Background(), src, testkit.Until(m.Units, time.Second+time.Second/2), 4, 0) // a GOP in the cache, then nothing
	player := testkit.StartFFmpeg(t, "-y", "-i", "rtmp://"+ln.Addr().String()+"/live/test", "-f", "null", "-")
	deadline := time.Now().Add(10 * time.Second)
	for logs.Count("rtmp play started") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if logs.Count("rtmp play started") == 0 {
		t.Fatal("the play did not start")
	}
	closed := make(chan struct{})
	go func() {
		srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5 s of a play")
	}
	player.Wait(t, 10*time.Second)
}
