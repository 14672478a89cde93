package rtmp

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

type testServer struct {
	*Server
	addr string
	reg  *media.Registry
	logs *testkit.LogBuf
	errc chan error

	mu      sync.Mutex
	readers []*media.Reader
	newRdr  chan *media.Reader
}

var allowAll = testkit.AllowAll

// startServer serves on 127.0.0.1:0. configure may adjust the server before
// Serve. Every accepted stream gets a reader (attached before its first
// unit) sent on ts.newRdr.
func startServer(t *testing.T, auth access.Authorizer, configure func(*Server)) *testServer {
	t.Helper()
	return startServerConfig(t, Config{Authorize: auth}, configure)
}

// startServerConfig is startServer with a Config; its Registry and Log are
// the test's.
func startServerConfig(t *testing.T, cfg Config, configure func(*Server)) *testServer {
	t.Helper()
	logs := &testkit.LogBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := media.NewRegistry(log)
	cfg.Registry, cfg.Log = reg, log
	if cfg.RefusalLogEvery == 0 {
		cfg.RefusalLogEvery = time.Nanosecond // tests read every refusal's line
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	go func() { ts.errc <- ts.Serve(ln) }()
	t.Cleanup(func() {
		ts.close(t)
		if t.Failed() || os.Getenv("RTMP_TEST_LOGS") != "" {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return ts
}

// close closes the server and checks Serve returned nil.
func (ts *testServer) close(t *testing.T) {
	t.Helper()
	if err := ts.Close(); err != nil {
		t.Errorf("Close: %v", err)
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

func (ts *testServer) url(path string) string { return "rtmp://" + ts.addr + "/" + path }

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

// publish starts ffmpeg publishing fixture file for seconds to url.
func publish(t *testing.T, file string, seconds int, url string) *testkit.Proc {
	t.Helper()
	return testkit.StartFFmpeg(t, "-re", "-i", testkit.Fixture(file), "-t", fmt.Sprint(seconds), "-c", "copy", "-f", "flv", url)
}
