// Package rtcserver is the remote WebRTC end of the tests of the bridge's
// outbound clients: a WHIP server (for the WHIP forward) or a WHEP server
// (for the WHEP pull) made of the bridge's own ingest/whip or egress/whep
// handler on an httptest server with an engine and sessions of its own. A
// test can stop it, crash it and restart it on the same address, and it
// records the requests it serves. Source is the stream such a test starts
// from: ffmpeg publishing a looped fixture to an in-process RTMP server.
//
// It is a package of its own, not part of testkit, because it imports the
// adapters whose tests use testkit.
package rtcserver

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wishbridge/bridge/access"
	egresswhep "github.com/wishbridge/bridge/egress/whep"
	"github.com/wishbridge/bridge/ingest/rtmp"
	ingestwhip "github.com/wishbridge/bridge/ingest/whip"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// SourcePath is where a Source publishes its stream.
const SourcePath = "live/src"

// NewEngine returns an engine on a loopback UDP port; the caller closes it.
func NewEngine(t testing.TB, log *slog.Logger) *rtc.Engine {
	t.Helper()
	return newEngineOn(t, log, "127.0.0.1:0")
}

// newEngineOn returns an engine on the UDP address addr.
func newEngineOn(t testing.TB, log *slog.Logger, addr string) *rtc.Engine {
	t.Helper()
	udp, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	e, err := rtc.New(rtc.Settings{UDP: udp, IncludeLoopback: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Source is a registry fed by an in-process RTMP server that ffmpeg
// publishes a looped fixture to, at SourcePath. It ends with the test.
type Source struct {
	Registry *media.Registry
	Log      *slog.Logger
	Logs     *testkit.LogBuf
}

// StartSource starts ffmpeg publishing fixture (a file in the fixtures
// directory) and returns once the stream's tracks are known. name names
// the log ("local", "remote").
func StartSource(t testing.TB, name, fixture string) *Source {
	t.Helper()
	ff := testkit.FFmpegBin(t, "ffmpeg")
	log, logs := testkit.NamedLog(t, name)
	s := &Source{Registry: media.NewRegistry(log), Log: log, Logs: logs}
	srv := rtmp.NewServer(rtmp.Config{Registry: s.Registry, Authorize: testkit.AllowAll, Log: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	cmd := exec.Command(ff, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
		"-i", testkit.Fixture(fixture), "-c", "copy", "-f", "flv", "rtmp://"+ln.Addr().String()+"/"+SourcePath)
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
		if t.Failed() && stderr.String() != "" {
			t.Logf("ffmpeg: %s", stderr.String())
		}
	})
	testkit.WaitReady(t, s.Registry, SourcePath, 10*time.Second)
	return s
}

// Server is a remote WHIP or WHEP server. Its fields are replaced by
// Restart; read them on the test's goroutine.
type Server struct {
	// URL is the server's base, http://127.0.0.1:port; a restart keeps it.
	URL string
	// Registry holds the streams: for WHIP what the clients published (a
	// new one at each start), for WHEP the Source's (kept).
	Registry *media.Registry
	Sessions *rtc.Sessions
	Log      *slog.Logger
	Logs     *testkit.LogBuf

	t        testing.TB
	iceAddr  string // the engine's UDP address; "" for loopback
	token    string
	whep     bool
	wrap     func(*http.ServeMux) http.Handler
	engine   *rtc.Engine
	srv      *httptest.Server
	mu       sync.Mutex
	requests []string // "POST /whip/live/dst 201"
	offers   []string // the bodies of the SDP POSTs
	stopped  bool
}

// StartWHIP starts a WHIP server (ingest/whip) requiring the bearer token
// (none if ""). wrap, if not nil, wraps its handler, e.g. to add routes.
func StartWHIP(t testing.TB, token string, wrap func(*http.ServeMux) http.Handler) *Server {
	t.Helper()
	log, logs := testkit.NamedLog(t, "remote")
	s := &Server{t: t, Log: log, Logs: logs, token: token, wrap: wrap}
	s.start("")
	t.Cleanup(s.Stop)
	return s
}

// StartWHIPAnyAddress is StartWHIP with its ICE port on every IPv4
// address of the host, for a bridge run as a process of its own: without
// the tests' loopback option, a bridge does not try loopback candidates.
func StartWHIPAnyAddress(t testing.TB, token string, wrap func(*http.ServeMux) http.Handler) *Server {
	t.Helper()
	log, logs := testkit.NamedLog(t, "remote")
	s := &Server{t: t, Log: log, Logs: logs, token: token, wrap: wrap, iceAddr: "0.0.0.0:0"}
	s.start("")
	t.Cleanup(s.Stop)
	return s
}

// StartWHEP starts a WHEP server (egress/whep) requiring the bearer token
// (none if "") over a Source of fixture h264-aac.flv at SourcePath. It also
// answers POST /old/whep/{path} with a 307 to /whep/{path} (a relative
// Location), an endpoint that moved.
func StartWHEP(t testing.TB, token string) *Server {
	t.Helper()
	src := StartSource(t, "remote", "h264-aac.flv")
	s := &Server{t: t, Log: src.Log, Logs: src.Logs, Registry: src.Registry, token: token, whep: true}
	s.start("")
	t.Cleanup(s.Stop) // before the source's: sessions end before their stream
	return s
}

// start serves on addr ("" for any port).
func (s *Server) start(addr string) {
	t := s.t
	t.Helper()
	if s.iceAddr != "" {
		s.engine = newEngineOn(t, s.Log, s.iceAddr)
	} else {
		s.engine = NewEngine(t, s.Log)
	}
	s.Sessions = rtc.NewSessions(rtc.Limits{}, s.Log)
	mux := http.NewServeMux()
	s.Sessions.Register(mux)
	if s.whep {
		egresswhep.NewHandler(egresswhep.Config{
			Registry: s.Registry, Engine: s.engine, Sessions: s.Sessions, Log: s.Log,
			Authorize: s.authorize(access.Read),
		}).Register(mux)
		mux.HandleFunc("POST /old/whep/{path...}", func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Location", "/whep/"+req.PathValue("path"))
			w.WriteHeader(http.StatusTemporaryRedirect)
		})
	} else {
		s.Registry = media.NewRegistry(s.Log)
		ingestwhip.NewHandler(ingestwhip.Config{
			Registry: s.Registry, Engine: s.engine, Sessions: s.Sessions, Log: s.Log,
			Authorize: s.authorize(access.Publish),
		}).Register(mux)
	}
	var h http.Handler = mux
	if s.wrap != nil {
		h = s.wrap(mux)
	}
	s.srv = httptest.NewUnstartedServer(s.record(h))
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
		_ = s.srv.Listener.Close()
		s.srv.Listener = ln
	}
	s.srv.Start()
	s.URL = s.srv.URL
	s.mu.Lock()
	s.stopped = false
	s.mu.Unlock()
}

// authorize admits requests that carry the server's token, if it has one.
func (s *Server) authorize(a access.Action) access.Authorizer {
	return testkit.Authorizer(func(req access.Request) error {
		if s.token != "" && req.Credential != s.token {
			return access.BadKey(a)
		}
		return nil
	})
}

// Stop takes the server down: HTTP closed, sessions ended (their peers
// are told: DTLS close_notify), ICE port closed.
func (s *Server) Stop() { s.shutdown(false) }

// Crash takes the server down without a word to its peers: the ICE port
// is closed first, so they only notice that nothing answers any more.
func (s *Server) Crash() { s.shutdown(true) }

func (s *Server) shutdown(crash bool) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	s.mu.Unlock()
	s.srv.Close()
	if crash {
		_ = s.engine.Close()
		s.Sessions.CloseAll("server crashed")
		return
	}
	s.Sessions.CloseAll("server stopped")
	_ = s.engine.Close()
}

// Restart brings the server back on the same address with a new engine
// and sessions (and, for WHIP, a new registry).
func (s *Server) Restart() {
	s.Stop()
	s.start(strings.TrimPrefix(s.URL, "http://"))
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *Server) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		var offer string
		if req.Method == http.MethodPost && req.Header.Get("Content-Type") == "application/sdp" {
			body, _ := io.ReadAll(io.LimitReader(req.Body, rtc.MaxSDPSize+1))
			offer = string(body)
			req.Body = io.NopCloser(strings.NewReader(offer))
		}
		next.ServeHTTP(rec, req)
		s.mu.Lock()
		s.requests = append(s.requests, fmt.Sprintf("%s %s %d", req.Method, req.URL.Path, rec.status))
		if offer != "" {
			s.offers = append(s.offers, offer)
		}
		s.mu.Unlock()
	})
}

// Count returns how many requests served start with prefix and end with
// suffix; each is recorded as "METHOD PATH STATUS".
func (s *Server) Count(prefix, suffix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, q := range s.requests {
		if strings.HasPrefix(q, prefix) && strings.HasSuffix(q, suffix) {
			n++
		}
	}
	return n
}

// Offers returns the SDP offers POSTed to the server, in order.
func (s *Server) Offers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.offers)
}

// RequestLog returns the requests served, one a line.
func (s *Server) RequestLog() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.requests, "\n")
}
