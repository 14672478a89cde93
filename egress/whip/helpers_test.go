package whip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/ingest/rtmp"
	ingestwhip "github.com/wishbridge/bridge/ingest/whip"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// newEngine returns an engine on a loopback UDP port.
func newEngine(t *testing.T, log *slog.Logger) *rtc.Engine {
	t.Helper()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e, err := rtc.New(rtc.Settings{UDP: udp, IncludeLoopback: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// source is the local side: a registry fed by an in-process RTMP server
// that ffmpeg publishes a looped fixture to, at live/src.
type source struct {
	reg    *media.Registry
	engine *rtc.Engine
	log    *slog.Logger
	logs   *testkit.LogBuf
}

const srcPath = "live/src"

func startSource(t *testing.T, fixture string) *source {
	t.Helper()
	ff := testkit.FFmpegBin(t, "ffmpeg")
	log, logs := testkit.NamedLog(t, "local")
	s := &source{reg: media.NewRegistry(log), log: log, logs: logs}
	s.engine = newEngine(t, log)
	srv := rtmp.NewServer(rtmp.Config{Registry: s.reg, Authorize: func(access.Request) error { return nil }, Log: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	cmd := exec.Command(ff, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
		"-i", testkit.Fixture(fixture), "-c", "copy", "-f", "flv", "rtmp://"+ln.Addr().String()+"/"+srcPath)
	stderr := &testkit.LogBuf{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		_ = srv.Close()
		_ = s.engine.Close()
		if t.Failed() && stderr.String() != "" {
			t.Logf("ffmpeg: %s", stderr.String())
		}
	})
	testkit.WaitReady(t, s.reg, srcPath, 10*time.Second)
	return s
}

// remote is a WHIP server: the bridge's own ingest/whip handler on an
// httptest server with its own registry and engine. It records the
// requests it serves.
type remote struct {
	t        *testing.T
	log      *slog.Logger
	logs     *testkit.LogBuf
	token    string
	reg      *media.Registry
	engine   *rtc.Engine
	sessions *rtc.Sessions
	srv      *httptest.Server
	url      string // http://127.0.0.1:port
	// wrap, if set, wraps the server's handler (set before start).
	wrap func(mux *http.ServeMux) http.Handler

	mu       sync.Mutex
	requests []string // "POST /whip/live/dst 201"
	stopped  bool
}

// startRemote starts a WHIP server requiring token (none if ""), on addr
// ("" for any port).
func startRemote(t *testing.T, token string, wrap func(*http.ServeMux) http.Handler) *remote {
	t.Helper()
	log, logs := testkit.NamedLog(t, "remote")
	r := &remote{t: t, log: log, logs: logs, token: token, wrap: wrap}
	r.start("")
	t.Cleanup(r.stop)
	return r
}

func (r *remote) start(addr string) {
	t := r.t
	t.Helper()
	r.reg = media.NewRegistry(r.log)
	r.engine = newEngine(t, r.log)
	r.sessions = rtc.NewSessions(rtc.Limits{}, r.log)
	mux := http.NewServeMux()
	r.sessions.Register(mux)
	ingestwhip.NewHandler(ingestwhip.Config{
		Registry: r.reg, Engine: r.engine, Sessions: r.sessions, Log: r.log,
		Authorize: func(req access.Request) error {
			if r.token != "" && req.Credential != r.token {
				return access.BadKey(access.Publish)
			}
			return nil
		},
	}).Register(mux)
	var h http.Handler = mux
	if r.wrap != nil {
		h = r.wrap(mux)
	}
	r.srv = httptest.NewUnstartedServer(r.record(h))
	if addr != "" {
		var ln net.Listener
		var err error
		for range 50 { // the port was ours a moment ago
			if ln, err = net.Listen("tcp", addr); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("listen on %s again: %v", addr, err)
		}
		_ = r.srv.Listener.Close()
		r.srv.Listener = ln
	}
	r.srv.Start()
	r.url = r.srv.URL
	r.mu.Lock()
	r.stopped = false
	r.mu.Unlock()
}

// stop takes the server down: HTTP closed, sessions ended (their peers
// are told: DTLS close_notify), ICE port closed.
func (r *remote) stop() { r.shutdown(false) }

// crash takes the server down without a word to its peers: the ICE port
// is closed first, so they only notice that nothing answers any more.
func (r *remote) crash() { r.shutdown(true) }

func (r *remote) shutdown(crash bool) {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	r.mu.Unlock()
	r.srv.Close()
	if crash {
		_ = r.engine.Close()
		r.sessions.CloseAll("server crashed")
		return
	}
	r.sessions.CloseAll("server stopped")
	_ = r.engine.Close()
}

// restart brings the server back on the same address with a new
// registry and engine.
func (r *remote) restart() {
	r.stop()
	addr := strings.TrimPrefix(r.url, "http://")
	r.start(addr)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (r *remote) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, req)
		r.mu.Lock()
		r.requests = append(r.requests, fmt.Sprintf("%s %s %d", req.Method, req.URL.Path, rec.status))
		r.mu.Unlock()
	})
}

// count returns how many recorded requests start with prefix.
func (r *remote) count(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, q := range r.requests {
		if strings.HasPrefix(q, prefix) {
			n++
		}
	}
	return n
}

func (r *remote) requestLog() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.requests, "\n")
}

// mediaStats is what a reader received over a while.
type mediaStats struct {
	width, height int     // from the first SPS seen
	fps           float64 // video units per second of PTS
	videoUnits    int     // with NAL units
	opusUnits     int
	codecs        string
}

// receive reads path on reg for d (after waiting for it to be ready) and
// summarises what arrived.
func receive(t *testing.T, reg *media.Registry, path string, d time.Duration) mediaStats {
	t.Helper()
	st := testkit.WaitReady(t, reg, path, 20*time.Second)
	r, err := st.NewReader(media.ReaderOptions{Name: "test", QueueSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out mediaStats
	var names []string
	for _, tr := range st.Tracks() {
		names = append(names, tr.Codec.Name())
	}
	out.codecs = strings.Join(names, " ")
	var first, last time.Duration
	for {
		u, err := r.Read(ctx)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("read %s: %v", path, err)
			}
			break
		}
		switch u.Track.Codec.(type) {
		case media.H264:
			if u.NALUs == nil {
				continue
			}
			if out.videoUnits == 0 {
				first = u.PTS
			}
			last = u.PTS
			out.videoUnits++
			for _, n := range u.NALUs {
				if h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS && out.width == 0 {
					var sps h264.SPS
					if err := sps.Unmarshal(n); err != nil {
						t.Fatalf("SPS: %v", err)
					}
					out.width, out.height = sps.Width(), sps.Height()
				}
			}
		case media.Opus:
			if len(u.Data) > 0 {
				out.opusUnits++
			}
		}
	}
	if out.videoUnits > 1 && last > first {
		out.fps = float64(out.videoUnits-1) / (last - first).Seconds()
	}
	return out
}

// checkMedia checks what receive saw: H.264 640x360 at about 30 fps and
// Opus at about 50 packets a second.
func checkMedia(t *testing.T, got mediaStats, d time.Duration) {
	t.Helper()
	if got.codecs != "H264 Opus" {
		t.Errorf("remote tracks [%s], expected [H264 Opus]", got.codecs)
	}
	if got.width != 640 || got.height != 360 {
		t.Errorf("SPS says %dx%d, expected 640x360", got.width, got.height)
	}
	if got.fps < 27 || got.fps > 33 {
		t.Errorf("video at %.1f fps (%d units), expected about 30", got.fps, got.videoUnits)
	}
	if min := int(d.Seconds() * 50 * 0.7); got.opusUnits < min {
		t.Errorf("%d Opus units in %v, expected at least %d", got.opusUnits, d, min)
	}
}
