package srt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wishbridge/bridge/ingest"
	"github.com/wishbridge/bridge/media"
)

// fixturesDir holds the shared media fixtures (see its README); the repo is
// expected at /work/main beside /work/shared.
const fixturesDir = "../../../shared/media"

func fixture(name string) string { return filepath.Join(fixturesDir, name) }

// logBuf is a goroutine-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the log lines containing every one of subs.
func (l *logBuf) lines(subs ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// waitLog waits until a log line contains every one of subs.
func (l *logBuf) waitLog(t *testing.T, timeout time.Duration, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if ls := l.lines(subs...); len(ls) > 0 {
			return ls[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q within %v; log:\n%s", subs, timeout, l.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type testServer struct {
	*Server
	addr string
	reg  *media.Registry
	logs *logBuf
	errc chan error

	newRdr chan *media.Reader
}

func allowAll(ingest.Request) error { return nil }

// startServer listens on 127.0.0.1:0 and serves. configure may adjust the
// config and the server before Listen. Every accepted stream gets a reader
// (attached before its first unit) sent on ts.newRdr.
func startServer(t *testing.T, cfg Config, configure func(*Server)) *testServer {
	t.Helper()
	logs := &logBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := media.NewRegistry(log)
	cfg.Registry, cfg.Log = reg, log
	if cfg.Authorize == nil {
		cfg.Authorize = allowAll
	}
	ts := &testServer{
		Server: NewServer(cfg),
		reg:    reg,
		logs:   logs,
		errc:   make(chan error, 1),
		newRdr: make(chan *media.Reader, 16),
	}
	ts.onPublish = func(st *media.Stream) {
		r, err := st.NewReader(media.ReaderOptions{Name: "test", QueueSize: 8192})
		if err != nil {
			t.Errorf("NewReader: %v", err)
			return
		}
		ts.newRdr <- r
	}
	if configure != nil {
		configure(ts.Server)
	}
	if err := ts.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ts.addr = ts.Addr().String()
	go func() { ts.errc <- ts.Serve() }()
	t.Cleanup(func() {
		ts.close(t)
		if t.Failed() || os.Getenv("SRT_TEST_LOGS") != "" {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return ts
}

// close closes the server and checks Serve returned nil.
func (ts *testServer) close(t *testing.T) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		if err := ts.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("Close did not return")
	}
	select {
	case err, ok := <-ts.errc:
		if ok && err != nil {
			t.Errorf("Serve returned %v after Close, want nil", err)
		}
		if ok {
			close(ts.errc)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Serve did not return after Close")
	}
}

// url is an ffmpeg SRT URL for streamid with extra query options.
func (ts *testServer) url(streamid string, extra ...string) string {
	u := fmt.Sprintf("srt://%s?streamid=%s&pkt_size=1316", ts.addr, streamid)
	for _, e := range extra {
		u += "&" + e
	}
	return u
}

// nextReader waits for the reader of the next accepted publish.
func (ts *testServer) nextReader(t *testing.T, timeout time.Duration) *media.Reader {
	t.Helper()
	select {
	case r := <-ts.newRdr:
		t.Cleanup(r.Close)
		return r
	case <-time.After(timeout):
		t.Fatalf("no publish accepted within %v; log:\n%s", timeout, ts.logs.String())
		return nil
	}
}

// ffmpeg is a running ffmpeg process.
type ffmpeg struct {
	cmd    *exec.Cmd
	stderr *logBuf
	done   chan struct{}
	err    error
}

// ffmpegBin returns ffmpeg's path; a missing ffmpeg fails the test.
func ffmpegBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatalf("ffmpeg is required for this test (%v): apt-get install ffmpeg", err)
	}
	return p
}

func startFFmpeg(t *testing.T, args ...string) *ffmpeg {
	t.Helper()
	bin := ffmpegBin(t)
	f := &ffmpeg{stderr: &logBuf{}, done: make(chan struct{})}
	f.cmd = exec.Command(bin, append([]string{"-hide_banner", "-nostdin", "-loglevel", "error"}, args...)...)
	f.cmd.Stderr = f.stderr
	f.cmd.Stdout = f.stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("start ffmpeg: %v", err)
	}
	go func() {
		f.err = f.cmd.Wait()
		close(f.done)
	}()
	t.Cleanup(func() { f.kill() })
	return f
}

func (f *ffmpeg) kill() {
	select {
	case <-f.done:
	default:
		_ = f.cmd.Process.Kill()
		<-f.done
	}
}

// publish starts ffmpeg publishing fixture file for seconds (-1: looped
// until killed) to url.
func publish(t *testing.T, file string, seconds int, url string) *ffmpeg {
	t.Helper()
	args := []string{"-re"}
	if seconds < 0 {
		args = append(args, "-stream_loop", "-1", "-i", file)
	} else {
		args = append(args, "-i", file, "-t", fmt.Sprint(seconds))
	}
	return startFFmpeg(t, append(args, "-c", "copy", "-f", "mpegts", url)...)
}

// wait waits for ffmpeg to exit and returns its exit error.
func (f *ffmpeg) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-f.done:
		return f.err
	case <-time.After(timeout):
		t.Fatalf("ffmpeg still running after %v; stderr:\n%s", timeout, f.stderr.String())
		return nil
	}
}

// readAll reads units until the stream ends or timeout.
func readAll(t *testing.T, r *media.Reader, timeout time.Duration) []*media.Unit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []*media.Unit
	for {
		u, err := r.Read(ctx)
		if err != nil {
			if !errors.Is(err, media.ErrStreamEnded) {
				t.Fatalf("Read after %d units: %v", len(out), err)
			}
			return out
		}
		out = append(out, u)
	}
}

// readFor reads units for d (the stream must not end meanwhile).
func readFor(t *testing.T, r *media.Reader, d time.Duration) []*media.Unit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out []*media.Unit
	for {
		u, err := r.Read(ctx)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Read after %d units: %v", len(out), err)
			}
			return out
		}
		out = append(out, u)
	}
}

// splitUnits separates video and audio units.
func splitUnits(units []*media.Unit) (video, audio []*media.Unit) {
	for _, u := range units {
		if u.Track.IsVideo() {
			video = append(video, u)
		} else {
			audio = append(audio, u)
		}
	}
	return video, audio
}

// goroutineBaseline returns a check that the goroutine count is back to
// what it is now (polling until a deadline). The socket reader of a gosrt
// v0.11.0 dialer whose Dial failed is not counted: it leaks in gosrt's
// client (its last send on an unbuffered channel has no receiver), which
// the tests use as a peer; the server does not use that code.
func goroutineBaseline(t *testing.T) func() {
	t.Helper()
	base, _ := countGoroutines()
	return func() {
		t.Helper()
		deadline := time.Now().Add(8 * time.Second)
		for {
			n, stacks := countGoroutines()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d goroutines, baseline %d:\n%s", n, base, stacks)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func countGoroutines() (int, string) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.TrimSpace(g) != "" && !strings.Contains(g, "datarhei/gosrt.Dial.func1") {
			n++
		}
	}
	return n, string(buf)
}
