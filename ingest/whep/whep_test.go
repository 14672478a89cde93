package whep

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/internal/testkit/rtcserver"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

const dstPath = "live/pulled"

// local is the pulling side: a registry and an engine.
type local struct {
	reg  *media.Registry
	p    *Puller
	logs *testkit.LogBuf
}

// newTestPuller pulls url (with token) into a fresh registry at dstPath,
// with short backoffs.
func newTestPuller(t *testing.T, url, token string) *local {
	t.Helper()
	log, logs := testkit.NamedLog(t, "local")
	reg := media.NewRegistry(log)
	engine := rtcserver.NewEngine(t, log)
	t.Cleanup(func() { _ = engine.Close() })
	p := NewPuller(Config{Registry: reg, Engine: engine, Path: dstPath, URL: url, Token: token, Log: log})
	p.minBackoff, p.maxBackoff = 100*time.Millisecond, time.Second
	return &local{reg: reg, p: p, logs: logs}
}

// run runs p until the returned stop is called (or the test ends); stop
// waits for Run to return.
func run(t *testing.T, p *Puller) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		p.Run(ctx)
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

// TestPullFromWHEP: the bridge's own WHEP endpoint (an RTMP-published
// H.264 + AAC stream, Opus through its transcoder), reached through a 307
// with a relative Location and a bearer token, is pulled into the hub:
// H.264 640x360 at 30 fps and Opus, with their RTP packets. A keyframe
// request of the hub reaches the server as one PLI. Stopping DELETEs the
// remote session, ends the stream, never logs the token and leaves no
// goroutine behind.
func TestPullFromWHEP(t *testing.T) {
	const token = "pull-token-secret"
	rem := rtcserver.StartWHEP(t, token)
	loc := newTestPuller(t, "whep+"+rem.URL+"/old/whep/"+srcPath, token)
	check := testkit.GoroutineBaselineSoft(t, 10*time.Second)
	stop := run(t, loc.p)

	const d = 3 * time.Second
	got := receive(t, loc.reg, dstPath, d)
	checkMedia(t, got, d)
	st, _ := loc.reg.Get(dstPath)
	if !st.RequestKeyframe(0) {
		t.Errorf("the pulled stream takes no keyframe requests")
	}
	st.RequestKeyframe(0) // merged with the first
	time.Sleep(200 * time.Millisecond)

	stop()
	for _, want := range []string{"POST /old/whep/live/src 307", "POST /whep/live/src 201"} {
		if rem.Count(want, "") != 1 {
			t.Errorf("no %q:\n%s", want, rem.RequestLog())
		}
	}
	for _, o := range rem.Offers() {
		if !strings.Contains(o, "a=rtcp-mux-only\r\n") || rtc.MuxOnly(o) != o {
			t.Errorf("the offer lacks a=rtcp-mux and a=rtcp-mux-only in some bundled section:\n%s", o)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "remote session DELETEd", func() bool {
		return rem.Count("DELETE /sessions/", " 200") == 1 && rem.Sessions.Len() == 0
	})
	select {
	case <-st.Done():
	case <-time.After(5 * time.Second):
		t.Errorf("the pulled stream did not end after the puller stopped")
	}
	testkit.WaitFor(t, 5*time.Second, "the viewer's end line on the server", func() bool { return strings.Contains(rem.Logs.String(), "viewer session ended") })
	if !strings.Contains(rem.Logs.String(), "keyframe_requests=1") {
		t.Errorf("the server did not get exactly one keyframe request")
	}
	check()
	if strings.Contains(loc.logs.String(), token) {
		t.Errorf("the puller logged the token")
	}
}

// TestPullReconnect: the WHEP server goes away (cleanly, or as in a crash
// without telling its peers) and comes back on the same address: the
// puller reconnects, and a reader of the pulled stream, kept by the
// registry's grace period, carries on.
func TestPullReconnect(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "stop", true: "crash"}[crash], func(t *testing.T) {
			rem := rtcserver.StartWHEP(t, "")
			loc := newTestPuller(t, "whep+"+rem.URL+"/whep/"+srcPath, "")
			loc.reg.SetGrace(func(string) time.Duration { return 30 * time.Second })
			loc.p.idleTimeout = 2 * time.Second
			connects := make(chan struct{}, 8)
			loc.p.onConnected = func() { connects <- struct{}{} }
			run(t, loc.p)
			st := testkit.WaitReady(t, loc.reg, dstPath, 20*time.Second)
			r, err := st.NewReader(media.ReaderOptions{Name: "test", QueueSize: 4096})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := collect(t, r, time.Second); got.videoUnits == 0 {
				t.Fatalf("nothing pulled before the restart: %+v", got)
			}
			<-connects

			if crash {
				rem.Crash()
			} else {
				rem.Stop()
			}
			time.Sleep(time.Second)
			rem.Restart()
			select {
			case <-connects:
			case <-time.After(30 * time.Second):
				t.Fatalf("the puller did not reconnect within 30 s")
			}
			got := collect(t, r, 2*time.Second)
			if got.videoUnits < 30 || got.width != 640 || got.opusUnits == 0 {
				t.Errorf("after the restart the reader got %+v", got)
			}
			if !strings.Contains(loc.logs.String(), "whep pull ended") {
				t.Errorf("the session's end was not logged")
			}
		})
	}
}

// TestPullWrongToken: a 401 is retried with backoff; the token is not
// logged; no session is left on the server and the path is free.
func TestPullWrongToken(t *testing.T) {
	const wrong = "wrong-pull-token"
	rem := rtcserver.StartWHEP(t, "right")
	loc := newTestPuller(t, "whep+"+rem.URL+"/whep/"+srcPath, wrong)
	stop := run(t, loc.p)
	testkit.WaitFor(t, 10*time.Second, "three refused POSTs", func() bool { return rem.Count("POST /whep/live/src 401", "") >= 3 })
	stop()
	if strings.Contains(loc.logs.String(), wrong) {
		t.Errorf("log contains the token")
	}
	if !strings.Contains(loc.logs.String(), "401 Unauthorized") {
		t.Errorf("log does not say 401 Unauthorized")
	}
	if rem.Sessions.Len() != 0 {
		t.Errorf("%d sessions left on the server", rem.Sessions.Len())
	}
	if _, ok := loc.reg.Get(dstPath); ok {
		t.Errorf("the path is still claimed")
	}
}

// TestPullPathTaken: a path that already has a publisher is not pulled
// over: the session the server made is DELETEd and the puller retries.
func TestPullPathTaken(t *testing.T) {
	log, logs := testkit.NamedLog(t, "local")
	reg := media.NewRegistry(log)
	engine := rtcserver.NewEngine(t, log)
	defer engine.Close()
	pub, err := reg.Publish(dstPath, "someone")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if r.Method == http.MethodPost {
			w.Header().Set("Location", "/sessions/1")
			w.Header().Set("Content-Type", "application/sdp")
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte("v=0\r\n"))
		}
	}))
	defer srv.Close()
	p := NewPuller(Config{Registry: reg, Engine: engine, Path: dstPath, URL: "whep+" + srv.URL + "/whep/x", Log: log})
	p.minBackoff = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	p.Run(ctx)
	if !strings.Contains(logs.String(), media.ErrPublisherExists.Error()) {
		t.Errorf("no publisher-exists failure logged")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 || seen[0] != "POST /whep/x" || seen[1] != "DELETE /sessions/1" {
		t.Errorf("server saw %q, expected POST then DELETE", seen)
	}
}

func TestEndpointURL(t *testing.T) {
	for in, want := range map[string]string{
		"whep+https://h/whep/x": "https://h/whep/x",
		"WHEP+http://h/x":       "http://h/x",
		"https://h/x":           "https://h/x",
		"whep://h/x":            "whep://h/x",
	} {
		if got := endpointURL(in); got != want {
			t.Errorf("endpointURL(%q) = %q, expected %q", in, got, want)
		}
	}
	p := NewPuller(Config{Registry: media.NewRegistry(nil), Engine: nil, Path: "x", URL: "whep://h/x"})
	if p.err == nil {
		t.Errorf("a puller without an engine is accepted")
	}
}

func TestSendingMids(t *testing.T) {
	answer := "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\n" +
		"m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendonly\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\na=inactive\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:3\r\n"
	got, err := sendingMids(answer)
	if err != nil {
		t.Fatal(err)
	}
	if !got["0"] || got["1"] || got["2"] || !got["3"] {
		t.Errorf("sending mids %v, expected 0 and 3", got)
	}
	if _, err := sendingMids("not sdp"); err == nil {
		t.Errorf("garbage accepted")
	}
}
