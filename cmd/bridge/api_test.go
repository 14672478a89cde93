package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

const apiToken = "test-api-token-0123456789"

// apiConfig is the config file the API tests run on, listening on
// free loopback ports: everything open, and a private route (read key) for
// the preview.
type apiConfig struct{ http, rtmp, srt, udp int }

func newAPIConfig(t *testing.T) apiConfig {
	return apiConfig{testkit.FreeTCPPort(t), testkit.FreeTCPPort(t), testkit.FreeUDPPort(t), testkit.FreeUDPPort(t)}
}

func (c apiConfig) yaml(token string) string {
	return fmt.Sprintf(`listen:
  http: "127.0.0.1:%d"
  rtmp: "127.0.0.1:%d"
  srt: "127.0.0.1:%d"
  webrtc_udp: "127.0.0.1:%d"
api:
  token: %q
routes:
  - path: "private/{name}"
    read_key: viewer-key-123
  - path: "{path...}"
`, c.http, c.rtmp, c.srt, c.udp, token)
}

// startFileBridge writes yaml to a config file and runs a bridge loaded
// from it, with ReloadConfig reading it again; it returns the file.
func startFileBridge(t *testing.T, yaml string) (*Bridge, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Start(cfg, Options{IncludeLoopback: true, ConfigFile: file}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b, file
}

// apiCall calls the API at base (e.g. "http://127.0.0.1:8080") with the
// bearer token tok ("" for none) and decodes a JSON answer into out (nil:
// none expected).
func apiCall(t *testing.T, method, url, tok string, out any) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, url, resp.StatusCode, body, err)
		}
	}
	return resp.StatusCode, string(body)
}

type apiStream struct {
	Path      string `json:"path"`
	Private   bool   `json:"private"`
	Publisher *struct {
		Protocol string    `json:"protocol"`
		Peer     string    `json:"peer"`
		Since    time.Time `json:"since"`
	} `json:"publisher"`
	Tracks []struct {
		Kind       string  `json:"kind"`
		Codec      string  `json:"codec"`
		Width      int     `json:"width"`
		Height     int     `json:"height"`
		FPS        float64 `json:"fps"`
		SampleRate int     `json:"sample_rate"`
		Channels   int     `json:"channels"`
	} `json:"tracks"`
	BitrateIn int64          `json:"bitrate_in"`
	Readers   map[string]int `json:"readers"`
	BytesOut  uint64         `json:"bytes_out"`
}

type apiSession struct {
	ID     string  `json:"id"`
	LogID  string  `json:"log_id"`
	Kind   string  `json:"kind"`
	Stream string  `json:"stream"`
	Peer   string  `json:"peer"`
	State  string  `json:"state"`
	Bytes  *uint64 `json:"bytes"`
}

func sessionsOf(t *testing.T, api string) []apiSession {
	t.Helper()
	var out struct{ Sessions []apiSession }
	if code, body := apiCall(t, "GET", api+"/sessions", apiToken, &out); code != 200 {
		t.Fatalf("GET /sessions: %d %s", code, body)
	}
	return out.Sessions
}

func findSession(list []apiSession, kind, stream string) *apiSession {
	for i := range list {
		if list[i].Kind == kind && list[i].Stream == stream {
			return &list[i]
		}
	}
	return nil
}

// waitFor polls cond every 50 ms for up to within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAdminAPI runs every API call against a live bridge: an ffmpeg RTMP
// publisher, a pion WHEP viewer and a dashboard preview of a private
// stream.
func TestAdminAPI(t *testing.T) {
	b, _ := startFileBridge(t, newAPIConfig(t).yaml(apiToken))
	api := "http://" + b.HTTPAddr().String() + "/api/v1"
	rtmp := "rtmp://" + b.RTMPAddr().String() + "/"
	publish(t, "h264-aac.flv", rtmp+"live/cam")
	publish(t, "h264-aac.flv", rtmp+"private/cam")
	waitStream(t, b, "live/cam")
	waitStream(t, b, "private/cam")

	// Refusals: no token, wrong token, token in the query string.
	for _, c := range []struct {
		url, tok string
		status   int
		want     string
	}{
		{api + "/streams", "", 401, "needs a bearer token"},
		{api + "/streams", "wrong-token-wrong-token", 401, "wrong bearer token"},
		{api + "/streams?token=" + apiToken, "", 400, "a token in the URL is refused"},
		{api + "/sessions?access_token=" + apiToken, apiToken, 400, "a token in the URL is refused"},
	} {
		code, body := apiCall(t, "GET", c.url, c.tok, nil)
		if code != c.status || !strings.Contains(body, c.want) {
			t.Errorf("GET %s (with a token: %t): %d %s, want %d saying %q", c.url, c.tok != "", code, body, c.status, c.want)
		}
	}

	v := watch(t, b, "live/cam", nil)
	v.waitFrames(t, 10, 10*time.Second)
	preview := joinURL(t, http.DefaultClient, newViewerAPI(t), "http://"+b.HTTPAddr().String()+"/whep/private/cam?preview=1",
		map[string]string{"Authorization": "Bearer " + apiToken})
	t.Cleanup(func() { _ = preview.pc.Close() })
	preview.waitFrames(t, 10, 10*time.Second)
	// Without the token a preview is a 401, like any viewer without the key.
	if resp := post(t, "http://"+b.HTTPAddr().String()+"/whep/private/cam?preview=1", "application/sdp", "v=0", nil); resp.StatusCode != 401 {
		t.Errorf("preview without the admin token: %d, want 401", resp.StatusCode)
	}

	var streams struct{ Streams []apiStream }
	waitFor(t, 10*time.Second, "the viewer counted", func() bool {
		apiCall(t, "GET", api+"/streams", apiToken, &streams)
		return len(streams.Streams) == 2 && streams.Streams[0].Readers["whep"] == 1
	})
	cam, priv := streams.Streams[0], streams.Streams[1]
	if cam.Path != "live/cam" || cam.Private || cam.Publisher == nil || cam.Publisher.Protocol != "rtmp" ||
		!strings.HasPrefix(cam.Publisher.Peer, "127.0.0.1:") || cam.Publisher.Since.IsZero() {
		t.Errorf("live/cam: %+v (publisher %+v)", cam, cam.Publisher)
	}
	if len(cam.Tracks) != 2 || cam.Tracks[0].Codec != "H264" || cam.Tracks[0].Width != 640 || cam.Tracks[0].Height != 360 ||
		cam.Tracks[0].FPS != 30 || cam.Tracks[1].Codec != "AAC" || cam.Tracks[1].SampleRate != 48000 || cam.Tracks[1].Channels != 2 {
		t.Errorf("live/cam tracks: %+v, want H264 640x360 30 fps and AAC 48000 Hz stereo", cam.Tracks)
	}
	if priv.Path != "private/cam" || !priv.Private || priv.Readers["whep"] != 0 {
		t.Errorf("private/cam: %+v, want private with no WHEP reader counted (the preview is not)", priv)
	}
	if st, _ := b.registry.Get("private/cam"); st.Readers() != 0 {
		t.Errorf("the hub counts %d readers of private/cam with only a preview, want 0", st.Readers())
	}
	// The bitrate is measured between two looks at least a second apart.
	time.Sleep(1100 * time.Millisecond)
	var one apiStream
	if code, body := apiCall(t, "GET", api+"/streams/live/cam", apiToken, &one); code != 200 || one.Path != "live/cam" {
		t.Fatalf("GET /streams/live/cam: %d %s", code, body)
	}
	// The fixture is 400 kbit/s of video and 96 kbit/s of audio.
	if one.BitrateIn < 200_000 || one.BitrateIn > 1_500_000 || one.BytesOut == 0 {
		t.Errorf("live/cam: bitrate_in %d bit/s, bytes_out %d; want about 500 kbit/s and bytes sent", one.BitrateIn, one.BytesOut)
	}
	if code, body := apiCall(t, "GET", api+"/streams/live/nothing", apiToken, nil); code != 404 || !strings.Contains(body, `"error"`) {
		t.Errorf("GET /streams/live/nothing: %d %s, want 404 with an error", code, body)
	}

	sessions := sessionsOf(t, api)
	pub, viewer, prev := findSession(sessions, "rtmp_publish", "live/cam"), findSession(sessions, "whep", "live/cam"), findSession(sessions, "preview", "private/cam")
	if pub == nil || viewer == nil || prev == nil || viewer.State != "connected" || viewer.Bytes == nil || *viewer.Bytes == 0 {
		t.Fatalf("sessions %+v: want the RTMP publisher, a connected WHEP viewer with bytes, and a preview", sessions)
	}

	// Kick the WHEP viewer: its PeerConnection sees the end.
	ended := make(chan string, 4)
	v.pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateClosed || s == webrtc.PeerConnectionStateFailed {
			ended <- s.String()
		}
	})
	v.pc.SCTP().Transport().OnStateChange(func(s webrtc.DTLSTransportState) {
		if s == webrtc.DTLSTransportStateClosed {
			ended <- "DTLS closed by the bridge"
		}
	})
	if code, body := apiCall(t, "DELETE", api+"/sessions/"+viewer.ID, apiToken, nil); code != 204 {
		t.Fatalf("DELETE /sessions/%s: %d %s", viewer.ID, code, body)
	}
	select {
	case how := <-ended:
		t.Logf("kicked viewer: %s", how)
	case <-time.After(10 * time.Second):
		t.Fatal("the kicked WHEP viewer's connection did not end")
	}
	if code, _ := apiCall(t, "DELETE", api+"/sessions/"+viewer.ID, apiToken, nil); code != 404 {
		t.Errorf("DELETE of a kicked session again: %d, want 404", code)
	}

	// Kick the publisher with a ban: it is ended at once (no grace), and
	// its retry on that path is refused while another path publishes.
	if code, body := apiCall(t, "DELETE", api+"/publishers/live/cam?ban=bogus", apiToken, nil); code != 400 || !strings.Contains(body, "is not a duration") {
		t.Errorf("ban=bogus: %d %s, want 400", code, body)
	}
	if code, body := apiCall(t, "DELETE", api+"/publishers/live/cam?ban=1m", apiToken, nil); code != 204 {
		t.Fatalf("DELETE /publishers/live/cam?ban=1m: %d %s", code, body)
	}
	if _, ok := b.registry.Get("live/cam"); ok {
		t.Error("live/cam still in the hub after its publisher was kicked: it was given grace")
	}
	if code, _ := apiCall(t, "DELETE", api+"/publishers/live/cam", apiToken, nil); code != 404 {
		t.Errorf("DELETE /publishers/live/cam with nobody publishing: %d, want 404", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, needFFmpeg(t), "-hide_banner", "-loglevel", "error", "-re", "-i", fixture(t, "h264-aac.flv"),
		"-c", "copy", "-f", "flv", rtmp+"live/cam").CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Errorf("the banned publisher's retry was not refused (err %v): %s", err, out)
	}
	if _, ok := b.registry.Get("live/cam"); ok {
		t.Error("live/cam published again by the banned address")
	}
	publish(t, "h264-aac.flv", rtmp+"live/other")
	waitStream(t, b, "live/other")
}

// TestAdminReload: a broken config file is refused with file:line and
// everything keeps playing; a good one is applied; on the embedded
// defaults there is nothing to reload.
func TestAdminReload(t *testing.T) {
	conf := newAPIConfig(t)
	b, file := startFileBridge(t, conf.yaml(apiToken))
	api := "http://" + b.HTTPAddr().String() + "/api/v1"
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/cam")
	waitStream(t, b, "live/cam")
	v := watch(t, b, "live/cam", nil)
	v.waitFrames(t, 10, 10*time.Second)

	if err := os.WriteFile(file, []byte(conf.yaml(apiToken)+"    ingest: [rtsp]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, body := apiCall(t, "POST", api+"/reload", apiToken, nil)
	var refused struct{ Error string }
	_ = json.Unmarshal([]byte(body), &refused)
	want := file + `:12: routes[1].ingest[0]: "rtsp" is not an ingest protocol`
	if code != 400 || !strings.HasPrefix(refused.Error, want) {
		t.Fatalf("reload of a broken file: %d %s, want 400 with %q", code, body, want)
	}
	n := len(v.frames())
	v.waitFrames(t, n+30, 10*time.Second) // a second more of video after the refused reload

	// A good file applies: a new token takes over at once.
	const next = "test-api-token-after-reload"
	if err := os.WriteFile(file, []byte(conf.yaml(next)), 0o600); err != nil {
		t.Fatal(err)
	}
	var ok struct {
		Reloaded      bool
		RestartNeeded []string `json:"restart_needed"`
	}
	if code, body := apiCall(t, "POST", api+"/reload", apiToken, &ok); code != 200 || !ok.Reloaded ||
		ok.RestartNeeded == nil || len(ok.RestartNeeded) != 0 {
		t.Fatalf("reload: %d %s, want 200 with reloaded and restart_needed []", code, body)
	}
	if code, _ := apiCall(t, "GET", api+"/streams", apiToken, nil); code != 401 {
		t.Errorf("old token after a reload that changed it: %d, want 401", code)
	}
	if code, _ := apiCall(t, "GET", api+"/streams", next, nil); code != 200 {
		t.Errorf("new token after the reload: %d, want 200", code)
	}

	// TLS turned on by a reload needs a restart: the answer names the
	// keys, the running config keeps serving plain HTTP, the stream plays.
	tls := "tls:\n  cert_file: /etc/bridge/cert.pem\n  key_file: /etc/bridge/key.pem\n"
	if err := os.WriteFile(file, []byte(conf.yaml(next)+tls), 0o600); err != nil {
		t.Fatal(err)
	}
	ok.RestartNeeded = nil
	if code, body := apiCall(t, "POST", api+"/reload", next, &ok); code != 200 || !slices.Equal(ok.RestartNeeded, []string{"tls.cert_file", "tls.key_file"}) {
		t.Errorf("reload turning TLS on: %d %s, want 200 with restart_needed [tls.cert_file tls.key_file]", code, body)
	}
	if b.node.Config().TLS.Enabled() || b.HTTPSAddr() != nil {
		t.Error("TLS applied without a restart")
	}
	n = len(v.frames())
	v.waitFrames(t, n+30, 10*time.Second)

	cfg := config.Default()
	cfg.API.Token = apiToken
	d := startBridge(t, cfg)
	code, body = apiCall(t, "POST", "http://"+d.HTTPAddr().String()+"/api/v1/reload", apiToken, nil)
	if code != 409 || !strings.Contains(body, "running on the embedded defaults, nothing to reload") {
		t.Errorf("reload on the embedded defaults: %d %s, want 409", code, body)
	}
}

// TestAdminAPIOff: without api.token every API URL is a 404; with
// listen.api the API is served there only.
func TestAdminAPIOff(t *testing.T) {
	b := startBridge(t, nil)
	for _, p := range []string{"/api/v1/streams", "/api/v1/openapi.json"} {
		if code, _ := apiCall(t, "GET", "http://"+b.HTTPAddr().String()+p, "anything-anything-anything", nil); code != 404 {
			t.Errorf("GET %s without api.token: %d, want 404", p, code)
		}
	}
	cfg := config.Default()
	cfg.API.Token = apiToken
	cfg.Listen.API = "127.0.0.1:0"
	s := startBridge(t, cfg)
	if code, _ := apiCall(t, "GET", "http://"+s.HTTPAddr().String()+"/api/v1/streams", apiToken, nil); code != 404 {
		t.Errorf("API on the HTTP listener with listen.api set: %d, want 404", code)
	}
	var doc struct{ OpenAPI string }
	if code, _ := apiCall(t, "GET", "http://"+s.APIAddr().String()+"/api/v1/openapi.json", apiToken, &doc); code != 200 || doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi.json on listen.api: %d %+v", code, doc)
	}
}

// TestHealthEndpoints: /healthz answers while the process runs, /readyz
// turns 503 with the reason for a failing check and when draining.
func TestHealthEndpoints(t *testing.T) {
	b := startBridge(t, nil)
	base := "http://" + b.HTTPAddr().String()
	type report struct {
		Ready  bool
		Reason string
	}
	var r report
	if code, body := apiCall(t, "GET", base+"/healthz", "", nil); code != 200 {
		t.Errorf("/healthz: %d %s", code, body)
	}
	if code, body := apiCall(t, "GET", base+"/readyz", "", &r); code != 200 || !r.Ready {
		t.Errorf("/readyz: %d %s", code, body)
	}
	b.Health().Register("acme", func() error { return errors.New(`no certificate for "live.example.com" yet`) })
	code, body := apiCall(t, "GET", base+"/readyz", "", nil)
	if code != 503 || !strings.Contains(body, `acme: no certificate for \"live.example.com\" yet`) {
		t.Errorf("/readyz with a failing check: %d %s", code, body)
	}
	b.Health().Register("acme", func() error { return nil })
	b.Health().Drain("shutting down: SIGTERM")
	code, body = apiCall(t, "GET", base+"/readyz", "", nil)
	if code != 503 || !strings.Contains(body, "shutting down: SIGTERM") {
		t.Errorf("/readyz while draining: %d %s", code, body)
	}
	if code, _ := apiCall(t, "GET", base+"/healthz", "", nil); code != 200 {
		t.Errorf("/healthz while draining: %d, want 200", code)
	}
}
