package srt

import (
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

type testServer struct {
	*Server
	addr string
	reg  *media.Registry
	logs *testkit.LogBuf
	errc chan error

	newRdr chan *media.Reader
}

var allowAll = testkit.AllowAll

// startServer listens on 127.0.0.1:0 and serves. configure may adjust the
// config and the server before Listen. Every accepted stream gets a reader
// (attached before its first unit) sent on ts.newRdr.
func startServer(t *testing.T, cfg Config, configure func(*Server)) *testServer {
	t.Helper()
	return startServerOn(t, "127.0.0.1:0", cfg, configure)
}

// startServerOn is startServer listening on addr.
func startServerOn(t *testing.T, addr string, cfg Config, configure func(*Server)) *testServer {
	t.Helper()
	logs := &testkit.LogBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := media.NewRegistry(log)
	cfg.Registry, cfg.Log = reg, log
	if cfg.RefusalLogEvery == 0 {
		cfg.RefusalLogEvery = time.Nanosecond // tests read every refusal's line
	}
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
	if err := ts.Listen(addr); err != nil {
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

// publish starts ffmpeg publishing fixture file for seconds (-1: looped
// until killed) to url.
func publish(t *testing.T, file string, seconds int, url string) *testkit.Proc {
	t.Helper()
	args := []string{"-re"}
	if seconds < 0 {
		args = append(args, "-stream_loop", "-1", "-i", file)
	} else {
		args = append(args, "-i", file, "-t", fmt.Sprint(seconds))
	}
	return testkit.StartFFmpeg(t, append(args, "-c", "copy", "-f", "mpegts", url)...)
}

// gosrtDialer marks the socket reader of a gosrt v0.11.0 dialer whose Dial
// failed, which goroutine checks do not count: it leaks in gosrt's client
// (its last send on an unbuffered channel has no receiver), which the tests
// use as a peer; the server does not use that code.
const gosrtDialer = "datarhei/gosrt.Dial.func1"
