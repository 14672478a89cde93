package whip

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/internal/testkit/rtcserver"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

const dstPath = "live/dst"

// newTestForwarder forwards the source's stream to url with short
// backoffs.
func newTestForwarder(src *source, url, token string) *Forwarder {
	f := NewForwarder(Config{Registry: src.reg, Engine: src.engine, Path: srcPath, URL: url, Token: token, Log: src.log})
	f.minBackoff, f.maxBackoff = 100*time.Millisecond, time.Second
	return f
}

// run runs f until the returned stop is called (or the test ends); stop
// waits for Run to return.
func run(t *testing.T, f *Forwarder) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		f.Run(ctx)
		close(done)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Errorf("Run did not return within 15 s of the cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestForwardRTMPToWHIP: an RTMP-published stream (H.264 + AAC) is
// forwarded to the bridge's own WHIP endpoint; the remote hub gets H.264
// 640x360 at 30 fps and Opus, and its keyframe requests reach the
// forwarder. Stopping the forwarder DELETEs the remote session, the token
// is never logged, and every goroutine ends.
func TestForwardRTMPToWHIP(t *testing.T) {
	const token = "s3cret-token-value"
	src := startSource(t, "h264-aac.flv")
	rem := rtcserver.StartWHIP(t, token, nil)
	check := testkit.GoroutineBaselineSoft(t, 10*time.Second)

	f := newTestForwarder(src, rem.URL+"/whip/"+dstPath, token)
	stop := run(t, f)
	const d = 3 * time.Second
	got := receive(t, rem.Registry, dstPath, d)
	checkMedia(t, got, d)
	if n := rem.Count("POST /whip/"+dstPath+" 201", ""); n != 1 {
		t.Errorf("%d successful POSTs, expected 1:\n%s", n, rem.RequestLog())
	}
	for _, o := range rem.Offers() {
		if !strings.Contains(o, "a=rtcp-mux-only\r\n") || rtc.MuxOnly(o) != o {
			t.Errorf("the offer lacks a=rtcp-mux and a=rtcp-mux-only in some bundled section:\n%s", o)
		}
	}
	// A keyframe request on the remote goes to the forwarder as a PLI,
	// which asks the hub (an RTMP source: the GOP is replayed).
	if st, ok := rem.Registry.Get(dstPath); !ok || !st.RequestKeyframe(0) {
		t.Errorf("the remote stream takes no keyframe requests")
	}
	time.Sleep(300 * time.Millisecond)

	stop()
	testkit.WaitFor(t, 5*time.Second, "remote session DELETEd", func() bool {
		return rem.Count("DELETE /sessions/", "") == 1 && rem.Sessions.Len() == 0
	})
	deleted := false
	for _, line := range strings.Split(rem.RequestLog(), "\n") {
		deleted = deleted || strings.HasPrefix(line, "DELETE /sessions/") && strings.HasSuffix(line, " 200")
	}
	if !deleted {
		t.Errorf("DELETE not answered 200:\n%s", rem.RequestLog())
	}
	check()
	if strings.Contains(src.logs.String(), token) {
		t.Errorf("the forwarder logged the token")
	}
	if !strings.Contains(src.logs.String(), "whip forward started") {
		t.Errorf("no start logged")
	}
	if !strings.Contains(src.logs.String(), "keyframe_requests=1") {
		t.Errorf("the remote's PLI did not reach the forwarder")
	}
}

// relativeLocation rewrites the Location of a 201 to a path-only
// (relative) reference.
type relativeLocation struct{ http.ResponseWriter }

func (w relativeLocation) WriteHeader(code int) {
	if code == http.StatusCreated {
		if u, err := url.Parse(w.Header().Get("Location")); err == nil {
			w.Header().Set("Location", u.RequestURI())
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// TestForwardRedirect: the endpoint is behind a 307 with a relative
// Location and a 308 to another server, whose 201 has a relative Location:
// the POST keeps its method, body and token along the way, and the
// session resource is resolved against the server that answered (the
// DELETE reaches it).
func TestForwardRedirect(t *testing.T) {
	const token = "tok-redirect"
	src := startSource(t, "h264-aac.flv")
	node := rtcserver.StartWHIP(t, token, func(mux *http.ServeMux) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mux.ServeHTTP(relativeLocation{w}, r)
		})
	})
	var mu sync.Mutex
	var front []string
	frontMux := http.NewServeMux()
	frontMux.HandleFunc("POST /whip/{path...}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/hop/whip/"+r.PathValue("path")) // relative
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	frontMux.HandleFunc("POST /hop/whip/{path...}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", node.URL+"/whip/"+r.PathValue("path"))
		w.WriteHeader(http.StatusPermanentRedirect)
	})
	fs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		front = append(front, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")+" "+
			map[bool]string{true: "sdp", false: "no-sdp"}[strings.HasPrefix(string(body), "v=0")])
		mu.Unlock()
		frontMux.ServeHTTP(w, r)
	}))
	defer fs.Close()

	f := newTestForwarder(src, fs.URL+"/whip/"+dstPath, token)
	stop := run(t, f)
	got := receive(t, node.Registry, dstPath, 2*time.Second)
	if got.videoUnits == 0 || got.width != 640 {
		t.Errorf("remote got %+v", got)
	}
	stop()
	testkit.WaitFor(t, 5*time.Second, "session DELETEd on the node", func() bool { return node.Count("DELETE /sessions/", "") == 1 })
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"POST /whip/live/dst application/sdp sdp",
		"POST /hop/whip/live/dst application/sdp sdp",
	}
	if strings.Join(front, "\n") != strings.Join(want, "\n") {
		t.Errorf("front server saw:\n%s\nexpected:\n%s", strings.Join(front, "\n"), strings.Join(want, "\n"))
	}
}

// TestForwardWrongToken: a 401 is retried with backoff, and neither the
// token nor the endpoint's answer leaks it into the log.
func TestForwardWrongToken(t *testing.T) {
	const wrong = "wrong-token-42"
	src := startSource(t, "h264-aac.flv")
	rem := rtcserver.StartWHIP(t, "right-token", nil)
	f := newTestForwarder(src, rem.URL+"/whip/"+dstPath+"?token=url-secret", wrong)
	stop := run(t, f)
	var times []time.Time
	testkit.WaitFor(t, 10*time.Second, "three refused POSTs", func() bool {
		if n := rem.Count("POST /whip/"+dstPath+" 401", ""); n > len(times) {
			times = append(times, time.Now())
		}
		return len(times) >= 3
	})
	stop()
	if gap1, gap2 := times[1].Sub(times[0]), times[2].Sub(times[1]); gap2 < gap1 {
		t.Errorf("backoff did not grow: %v then %v", gap1, gap2)
	}
	logs := src.logs.String()
	for _, secret := range []string{wrong, "url-secret"} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains %q", secret)
		}
	}
	if !strings.Contains(logs, "401 Unauthorized") {
		t.Errorf("log does not say 401 Unauthorized")
	}
	if rem.Sessions.Len() != 0 || rem.Count("DELETE", "") != 0 {
		t.Errorf("refused POSTs left sessions or DELETEs:\n%s", rem.RequestLog())
	}
}

// TestForwardReconnect: the remote server goes away (HTTP, sessions and
// ICE port; cleanly or as in a crash, without telling its peers) and comes
// back on the same address: the forwarder notices, retries and forwards
// again.
func TestForwardReconnect(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "stop", true: "crash"}[crash], func(t *testing.T) {
			src := startSource(t, "h264-aac.flv")
			rem := rtcserver.StartWHIP(t, "", nil)
			f := newTestForwarder(src, rem.URL+"/whip/"+dstPath, "")
			f.disconnectGrace = time.Second
			connects := make(chan struct{}, 8)
			f.onStreaming = func() { connects <- struct{}{} }
			run(t, f)
			if got := receive(t, rem.Registry, dstPath, time.Second); got.videoUnits == 0 {
				t.Fatalf("nothing forwarded before the restart: %+v", got)
			}
			<-connects

			if crash {
				rem.Crash()
			} else {
				rem.Stop()
			}
			time.Sleep(2 * time.Second) // a few refused attempts, or ICE still waiting
			rem.Restart()
			select {
			case <-connects:
			case <-time.After(30 * time.Second):
				t.Fatalf("the forwarder did not reconnect within 30 s")
			}
			got := receive(t, rem.Registry, dstPath, 2*time.Second)
			if got.videoUnits < 30 || got.width != 640 || got.opusUnits == 0 {
				t.Errorf("after the restart the remote got %+v", got)
			}
			if !strings.Contains(src.logs.String(), "whip forward ended") {
				t.Errorf("the session's end was not logged")
			}
		})
	}
}

// stubStream publishes a stream with an H.264 track and no units: enough
// for the forwarder to make offers.
func stubStream(t *testing.T, reg *media.Registry) {
	t.Helper()
	pub, err := reg.Publish(srcPath, "stub")
	if err != nil {
		t.Fatal(err)
	}
	sps := []byte{0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x18, 0x32, 0x48}
	if err := pub.SetTracks(&media.Track{Codec: media.H264{SPS: sps, PPS: []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
}

// TestForwardRefusals: Retry-After on 503 and 429 is waited for (not the
// 100 ms backoff); a 301 is not followed; a 201 whose answer is unusable
// is followed by a DELETE of its session, and the ICE server of its Link
// header is asked by the next connection (which offers what it gathered
// when that server does not answer); the offer is sendonly H.264 only,
// with its candidates.
func TestForwardRefusals(t *testing.T) {
	log, logs := testkit.NamedLog(t, "local")
	reg := media.NewRegistry(log)
	engine := rtcserver.NewEngine(t, log)
	t.Cleanup(func() { _ = engine.Close() })
	stubStream(t, reg)
	// A "STUN server" that never answers: the 201 advertises it, so the
	// next connection's gathering asks it (and gives up waiting).
	stun, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stun.Close()
	stunAsked := make(chan struct{})
	go func() {
		buf := make([]byte, 1500)
		if n, _, err := stun.ReadFrom(buf); err == nil && n >= 20 && buf[0] == 0x00 && buf[1] == 0x01 { // Binding request
			close(stunAsked)
		}
	}()

	var mu sync.Mutex
	var seen []string
	var times []time.Time
	var offer string
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusOK)
			return
		}
		times = append(times, time.Now())
		n++
		switch n {
		case 1:
			offer = string(body)
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		case 3:
			w.Header().Set("Location", "/elsewhere")
			w.WriteHeader(http.StatusMovedPermanently)
		case 4:
			w.Header().Set("Link", "<stun:"+stun.LocalAddr().String()+`>; rel="ice-server"`)
			w.Header().Set("Location", "sessions/abc") // relative to /whip/live/
			w.Header().Set("Content-Type", "application/sdp")
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, "v=0\r\nthis is not an answer\r\n")
		default:
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	defer srv.Close()

	f := NewForwarder(Config{Registry: reg, Engine: engine, Path: srcPath, URL: srv.URL + "/whip/live/dst", Token: "tk", Log: log})
	f.minBackoff, f.maxBackoff = 100*time.Millisecond, 200*time.Millisecond
	f.gather = 500 * time.Millisecond
	stop := run(t, f)
	testkit.WaitFor(t, 10*time.Second, "five POSTs", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return n >= 5
	})
	stop()
	select {
	case <-stunAsked:
	default:
		t.Errorf("the ICE server of the 201's Link header was not used for the next connection")
	}
	if !strings.Contains(logs.String(), "ICE gathering incomplete") {
		t.Errorf("gathering did not give up on the silent STUN server")
	}
	mu.Lock()
	defer mu.Unlock()
	for i, min := range []time.Duration{900 * time.Millisecond, 900 * time.Millisecond} {
		if gap := times[i+1].Sub(times[i]); gap < min {
			t.Errorf("retry %d came after %v, expected Retry-After's 1 s", i+1, gap)
		}
	}
	if !strings.Contains(logs.String(), "only 307 and 308 redirects are followed") {
		t.Errorf("301 not reported as such")
	}
	deleted := false
	for _, s := range seen {
		if strings.HasPrefix(s, "GET") {
			t.Errorf("a redirect was followed as GET: %q", s)
		}
		if s == "DELETE /whip/live/sessions/abc Bearer tk" {
			deleted = true
		}
	}
	if !deleted {
		t.Errorf("the session of the unusable answer was not DELETEd; requests:\n%s", strings.Join(seen, "\n"))
	}
	for _, want := range []string{"a=sendonly", "H264/90000", "packetization-mode=1", "profile-level-id=42e01f", "a=candidate:", "a=end-of-candidates"} {
		if !strings.Contains(offer, want) {
			t.Errorf("offer has no %q:\n%s", want, offer)
		}
	}
	for _, not := range []string{"VP8", "a=recvonly"} {
		if strings.Contains(offer, not) {
			t.Errorf("offer has %q:\n%s", not, offer)
		}
	}
}
