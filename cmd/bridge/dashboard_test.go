package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
)

// dashboardResult is the JSON line test/browser/dashboard.js prints.
type dashboardResult struct {
	OK                   bool     `json:"ok"`
	Reason               string   `json:"reason"`
	CSP                  string   `json:"csp"`
	WrongTokenMessage    string   `json:"wrongTokenMessage"`
	AsksAgain            bool     `json:"asksAgain"`
	Tracks               []string `json:"tracks"`
	ViewersWithPreview   string   `json:"viewersWithPreview"`
	PreviewSize          []int    `json:"previewSize"`
	PreviewMuted         bool     `json:"previewMuted"`
	PreviewLabel         string   `json:"previewLabel"`
	ViewersAfter         string   `json:"viewersAfter"`
	ReloadMessage        string   `json:"reloadMessage"`
	ViewerSessionShown   string   `json:"viewerSessionShown"`
	KickSessionMessage   string   `json:"kickSessionMessage"`
	ViewersAfterKick     string   `json:"viewersAfterKick"`
	KickPublisherMessage string   `json:"kickPublisherMessage"`
	FetchesWhileHidden   int      `json:"fetchesWhileHidden"`
	PageErrors           []string `json:"pageErrors"`
}

// TestDashboard drives /dashboard in headless Chromium against a bridge
// with api.token set and ffmpeg publishing H.264+AAC over RTMP: a wrong
// token is refused with a message and asked again; with the right one the
// page lists the stream with its codecs, plays a muted preview that is not
// counted as a viewer, shows the count go up when a pion WHEP viewer
// joins, shows the API's refusal of a reload on the defaults, shows the
// viewer's session by the id its log lines carry (not its URL's
// capability), kicks it and the publisher (with a ban), and stops polling
// when the tab is hidden.
func TestDashboard(t *testing.T) {
	node, watchScript := needBrowser(t)
	const token = "dashboard-test-token"
	cfg := config.Default()
	cfg.API.Token = token
	b := startBridge(t, cfg)
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/test")
	waitStream(t, b, "live/test")
	url := "http://" + b.HTTPAddr().String() + "/dashboard"

	p := startNode(t, "dashboard", node, filepath.Join(filepath.Dir(watchScript), "dashboard.js"),
		[]string{url, "live/test"}, "DASHBOARD_TOKEN="+token, 150*time.Second, 10*time.Second)
	t.Cleanup(func() {
		_ = p.cmd.Cancel()
		<-p.logDone
		_ = p.cmd.Wait()
		p.cancel()
	})
	var v *viewer
	select {
	case s := <-p.states:
		if s != "listed" {
			t.Fatalf("dashboard.js reported state %q, want listed", s)
		}
		v = watch(t, b, "live/test", nil)
	case <-p.logDone:
	}
	<-p.logDone
	waitErr := p.cmd.Wait()
	var res dashboardResult
	out := lastLine(p.stdout)
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("dashboard.js (exit %v) printed no result JSON (%v): %q", waitErr, err, p.stdout.String())
	}
	t.Logf("result: %s", out)
	if !res.OK {
		t.Fatalf("dashboard in Chromium: %s (exit %v)", res.Reason, waitErr)
	}

	if !strings.Contains(res.WrongTokenMessage, "refused this token") || !res.AsksAgain {
		t.Errorf("wrong token: message %q, token field shown %v; want a refusal and the question again", res.WrongTokenMessage, res.AsksAgain)
	}
	tracks := strings.Join(res.Tracks, "; ")
	if !strings.Contains(tracks, "video H264 640\u00d7360") || !strings.Contains(tracks, "audio AAC") {
		t.Errorf("tracks shown %q, want video H264 640×360 and audio AAC", tracks)
	}
	if res.ViewersWithPreview != "0" {
		t.Errorf("viewers shown with the preview playing: %q, want 0 (a preview is not a viewer)", res.ViewersWithPreview)
	}
	if len(res.PreviewSize) != 2 || res.PreviewSize[0] != 640 || res.PreviewSize[1] != 360 || !res.PreviewMuted ||
		!strings.EqualFold(res.PreviewLabel, "preview") {
		t.Errorf("preview: size %v, muted %v, label %q; want 640x360, muted, marked preview", res.PreviewSize, res.PreviewMuted, res.PreviewLabel)
	}
	if res.ViewersAfter != "1" {
		t.Errorf("viewers shown after a WHEP viewer joined: %q, want 1", res.ViewersAfter)
	}
	// The bridge runs on the defaults: the API refuses the reload, and the
	// page shows its reason.
	if !strings.Contains(res.ReloadMessage, "embedded defaults") {
		t.Errorf("reload message %q, want the API's refusal (embedded defaults)", res.ReloadMessage)
	}
	if v != nil {
		id := v.location[strings.LastIndexByte(v.location, '/')+1:]
		if want := id[:8]; res.ViewerSessionShown != want {
			t.Errorf("viewer's session shown as %q, want %q, the id its log lines carry (its whole id, %q, is its URL's capability)", res.ViewerSessionShown, want, id)
		}
	}
	if !strings.Contains(res.KickSessionMessage, "kicked") || res.ViewersAfterKick != "0" {
		t.Errorf("kick session: message %q, viewers shown %q; want kicked, 0", res.KickSessionMessage, res.ViewersAfterKick)
	}
	if !strings.Contains(res.KickPublisherMessage, "banned from it for 1m") {
		t.Errorf("kick publisher: message %q, want the kick with its ban", res.KickPublisherMessage)
	}
	if _, ok := b.registry.Get("live/test"); ok {
		t.Error("live/test is still live after the dashboard kicked its publisher")
	}
	if res.FetchesWhileHidden != 0 {
		t.Errorf("%d API requests while the tab was hidden, want none", res.FetchesWhileHidden)
	}
	if len(res.PageErrors) > 0 {
		t.Errorf("page errors: %q", res.PageErrors)
	}
}

// TestDashboardOff: without api.token every /dashboard URL is a 404, as
// the API's are; a reload that sets the token serves the page, one that
// clears it takes it away again.
func TestDashboardOff(t *testing.T) {
	b := startBridge(t, nil)
	base := "http://" + b.HTTPAddr().String()
	status := func(method, path string) int {
		t.Helper()
		return statusOf(t, method, base+path)
	}
	paths := []string{"/dashboard", "/dashboard/", "/dashboard/dashboard.js"}
	off := func(when string) {
		t.Helper()
		for _, p := range paths {
			for _, m := range []string{http.MethodGet, http.MethodPost} {
				if got := status(m, p); got != http.StatusNotFound {
					t.Errorf("%s: %s %s = %d, want 404", when, m, p, got)
				}
			}
		}
	}
	off("no api.token")

	cfg := config.Default()
	cfg.API.Token = "set-by-reload"
	reload(b, cfg)
	for _, p := range paths {
		if got := status(http.MethodGet, p); got != http.StatusOK {
			t.Errorf("api.token set by a reload: GET %s = %d, want 200", p, got)
		}
	}

	reload(b, config.Default())
	off("api.token cleared by a reload")
}

// TestDashboardOnAPIListener: with listen.api set the dashboard, like the
// API, is served only there, and so is what its previews play through:
// the WHEP client's files, the WHEP endpoint and the session resources.
func TestDashboardOnAPIListener(t *testing.T) {
	const token = "dashboard-test-token"
	cfg := config.Default()
	cfg.API.Token = token
	cfg.Listen.API = "127.0.0.1:0"
	b := startBridge(t, cfg)
	api := "http://" + b.APIAddr().String()
	for _, c := range []struct {
		url  string
		want int
	}{
		{"http://" + b.HTTPAddr().String() + "/dashboard", http.StatusNotFound},
		{api + "/dashboard", http.StatusOK},
		// The page's preview player imports the pages' WHEP client.
		{api + "/static/whep.js", http.StatusOK},
	} {
		resp, err := http.Get(c.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET %s = %d, want %d", c.url, resp.StatusCode, c.want)
		}
	}

	// The preview plays on the API's listener: its WHEP POST gets 201
	// there (joinURL fails otherwise), frames arrive, and its session
	// resource answers there.
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/test")
	waitStream(t, b, "live/test")
	v := joinURL(t, http.DefaultClient, newViewerAPI(t), api+"/whep/live/test?preview=1", map[string]string{"Authorization": "Bearer " + token})
	defer v.pc.Close()
	if !strings.HasPrefix(v.location, api+"/") {
		t.Errorf("preview's Location %q is not on the API listener %s", v.location, api)
	}
	v.waitFrames(t, 10, 15*time.Second)
	if code := statusOf(t, http.MethodDelete, v.location); code != http.StatusOK {
		t.Errorf("DELETE %s = %d, want 200", v.location, code)
	}
}

// statusOf sends a request without a body to url and returns the
// answer's status.
func statusOf(t *testing.T, method, url string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
