package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/config"
)

// publishResult is the JSON line test/browser/publish.js prints.
type publishResult struct {
	OK                      bool     `json:"ok"`
	Reason                  string   `json:"reason"`
	URL                     string   `json:"url"`
	UserAgent               string   `json:"userAgent"`
	State                   string   `json:"state"`
	States                  []string `json:"states"`
	Status                  string   `json:"status"`
	PublishedMs             int      `json:"publishedMs"`
	VideoCodec              string   `json:"videoCodec"`
	AudioCodec              string   `json:"audioCodec"`
	CodecOrder              []string `json:"codecOrder"`
	FramesEncoded           int      `json:"framesEncoded"`
	FramesSent              int      `json:"framesSent"`
	FrameWidth              int      `json:"frameWidth"`
	FrameHeight             int      `json:"frameHeight"`
	FramesPerSecond         float64  `json:"framesPerSecond"`
	QualityLimitationReason string   `json:"qualityLimitationReason"`
	AudioPacketsSent        int      `json:"audioPacketsSent"`
	PageErrors              []string `json:"pageErrors"`
	CSP                     string   `json:"csp"`
	Requests                []struct {
		Method string `json:"method"`
		URL    string `json:"url"`
		Status int    `json:"status"`
	} `json:"requests"`
}

// publishRun is test/browser/publish.js running: headless Chromium
// publishing its fake camera and microphone from the publish page.
type publishRun struct {
	// States receives each state the page reports (idle, connecting,
	// publishing, error); a slow receiver misses some.
	States <-chan string
	// Exited is closed when node has exited.
	Exited <-chan struct{}
	// stop ends the publishing early (SIGTERM: the script presses Stop and
	// reports as if its time were up) and returns the result.
	stop func() publishResult
}

// startPublish starts test/browser/publish.js on url for at most seconds.
func startPublish(t *testing.T, url string, seconds int) *publishRun {
	t.Helper()
	node, watchScript := needBrowser(t)
	script := filepath.Join(filepath.Dir(watchScript), "publish.js")
	if _, err := os.Stat(script); err != nil {
		t.Fatal(err)
	}
	limit := time.Duration(seconds)*time.Second + 60*time.Second
	// On timeout, a first SIGINT makes the script stop; WaitDelay kills it
	// if that does not work.
	np := startNode(t, "publish", node, script, []string{url, strconv.Itoa(seconds)}, "PUBLISH_TIMEOUT_MS=30000", limit, 15*time.Second)
	cmd, ctx, cancel, stdout, states, logDone, start := np.cmd, np.ctx, np.cancel, np.stdout, np.states, np.logDone, np.start
	exited := make(chan struct{})
	var waitErr error
	go func() {
		<-logDone // stderr closed: node is exiting
		waitErr = cmd.Wait()
		close(exited)
	}()
	var res *publishResult
	stop := func() publishResult {
		t.Helper()
		if res != nil {
			return *res
		}
		defer cancel()
		select {
		case <-exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited
		}
		t.Logf("publish.js ran %.1f s, exit: %v", time.Since(start).Seconds(), waitErr)
		if ctx.Err() != nil {
			t.Fatalf("publish.js did not finish within %v", limit)
		}
		out := lastLine(stdout)
		res = new(publishResult)
		if err := json.Unmarshal([]byte(out), res); err != nil {
			t.Fatalf("publish.js (exit %v) printed no result JSON (%v): %q", waitErr, err, stdout.String())
		}
		t.Logf("publish result: %s", out)
		if waitErr != nil || !res.OK {
			t.Fatalf("Chromium did not publish through %s: %s (exit: %v, states %v, page status %q)", url, res.Reason, waitErr, res.States, res.Status)
		}
		return *res
	}
	// However the test ends, do not leave the browser running.
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited
		}
		cancel()
	})
	return &publishRun{States: states, Exited: exited, stop: stop}
}

// needPublishPage fails unless the bridge serves the publish page.
func needPublishPage(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("/static/publisher.js")) {
		t.Fatalf("GET %s: %d, not the publish page: the bridge must serve package web (web.New(...).Register(mux))", url, resp.StatusCode)
	}
}

// waitNoStream waits for path to be gone from b.
func waitNoStream(t *testing.T, b *Bridge, path string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if _, ok := b.registry.Get(path); !ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("stream %q still exists %v after its publisher stopped", path, within)
}

// TestBrowserPublish publishes from the built-in publish page in headless
// Chromium (fake camera and microphone, H.264 preferred) over WHIP: a pion
// WHEP viewer receives H.264 and Opus, and Chromium plays the stream back
// on the player page. Pressing Stop DELETEs the WHIP session, which ends
// the stream (no reconnect grace in this test).
func TestBrowserPublish(t *testing.T) {
	needBrowser(t)
	cfg := config.Default()
	noGrace := time.Duration(0)
	for i := range cfg.Routes {
		cfg.Routes[i].Grace = &noGrace
	}
	b := startBridge(t, cfg)
	base := "http://" + b.HTTPAddr().String()
	pageURL := base + "/publish/live/cam"
	needPublishPage(t, pageURL)

	// 90 s is a ceiling: the test stops the publisher once the viewers
	// are done (about 15 s).
	pub := startPublish(t, pageURL, 90)
	timeout := time.After(45 * time.Second)
wait:
	for {
		select {
		case s := <-pub.States:
			if s == "publishing" {
				break wait
			}
		case <-pub.Exited:
			pub.stop() // fails the test with the script's reason
			t.Fatal("publish.js exited before publishing")
		case <-timeout:
			t.Fatal("the publish page did not report publishing within 45 s")
		}
	}
	waitStream(t, b, "live/cam")

	// A pion WHEP viewer: decodable H.264 from a keyframe on, and Opus.
	v := watch(t, b, "live/cam", nil)
	aus := v.waitFrames(t, 30, 20*time.Second)
	types := naluTypes(aus[0])
	if len(types) < 3 || types[0] != h264.NALUTypeSPS || types[1] != h264.NALUTypePPS || !slices.Contains(types, h264.NALUTypeIDR) {
		t.Fatalf("first frame NAL types = %v, want SPS, PPS, then an IDR", types)
	}
	var sps h264.SPS
	if err := sps.Unmarshal(aus[0].nalus[0]); err != nil {
		t.Fatalf("SPS: %v", err)
	}
	if sps.Width() <= 0 || sps.Height() <= 0 {
		t.Errorf("SPS says %dx%d", sps.Width(), sps.Height())
	}
	t.Logf("pion viewer: %d frames, first %dx%d (profile_idc %d)", len(aus), sps.Width(), sps.Height(), sps.ProfileIdc)
	deadline := time.Now().Add(10 * time.Second)
	var opus int
	for {
		v.mu.Lock()
		opus = len(v.audio)
		v.mu.Unlock()
		if opus >= 50 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if opus < 50 {
		t.Errorf("pion viewer got %d Opus packets in 10 s, want 50 a second", opus)
	}
	req, _ := http.NewRequest(http.MethodDelete, v.location, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("DELETE %s: %d, want 200", v.location, resp.StatusCode)
	}
	_ = v.pc.Close()

	// Chromium plays it back. The publisher's encoder adapts the
	// resolution to the CPU and the bandwidth estimate, so any size will
	// do (WANT_WIDTH=0).
	t.Setenv("WANT_WIDTH", "0")
	t.Setenv("WANT_HEIGHT", "0")
	watchURL := base + "/watch/live/cam"
	needPlayerPage(t, watchURL)
	res := startWatch(t, watchURL).wait()
	if res.VideoWidth <= 0 || res.VideoHeight <= 0 {
		t.Errorf("video is %dx%d", res.VideoWidth, res.VideoHeight)
	}
	if res.FramesDecoded <= 60 {
		t.Errorf("%d frames decoded, want more than 60", res.FramesDecoded)
	}
	if len(res.CurrentTime) != 2 || !(res.CurrentTime[1] > res.CurrentTime[0]) {
		t.Errorf("video.currentTime did not advance: %v", res.CurrentTime)
	}
	if len(res.PageErrors) > 0 {
		t.Errorf("player page errors: %q", res.PageErrors)
	}
	t.Logf("player: %dx%d, %d frames decoded; audio: track %v, %d packets, totalAudioEnergy %.4f",
		res.VideoWidth, res.VideoHeight, res.FramesDecoded, res.AudioTrack, res.AudioPacketsReceived, res.TotalAudioEnergy)
	if !res.AudioTrack || res.AudioPacketsReceived == 0 {
		t.Errorf("player got no audio: track %v, %d packets", res.AudioTrack, res.AudioPacketsReceived)
	}

	// Stop publishing: the page DELETEs its session and the stream ends.
	pr := pub.stop()
	if len(pr.CodecOrder) == 0 || !strings.EqualFold(pr.CodecOrder[0], "video/H264") {
		t.Errorf("the page did not prefer H.264 (setCodecPreferences): codec order %v", pr.CodecOrder)
	}
	if !strings.EqualFold(pr.VideoCodec, "video/H264") {
		t.Errorf("the page sent %q, want video/H264 (codec order %v)", pr.VideoCodec, pr.CodecOrder)
	}
	if !strings.EqualFold(pr.AudioCodec, "audio/opus") {
		t.Errorf("the page sent %q audio, want audio/opus", pr.AudioCodec)
	}
	if slices.Contains(pr.States, "error") {
		t.Errorf("the publish page went through an error state: %v", pr.States)
	}
	if len(pr.PageErrors) > 0 {
		t.Errorf("publish page errors: %q", pr.PageErrors)
	}
	if !strings.Contains(pr.CSP, "connect-src 'self'") {
		t.Errorf("publish page CSP %q lacks connect-src 'self'", pr.CSP)
	}
	t.Logf("publisher: %s %dx%d at %.0f fps (limited by %q), %d frames, %d audio packets in %.1f s",
		pr.VideoCodec, pr.FrameWidth, pr.FrameHeight, pr.FramesPerSecond, pr.QualityLimitationReason,
		pr.FramesEncoded, pr.AudioPacketsSent, float64(pr.PublishedMs)/1000)
	waitNoStream(t, b, "live/cam", 5*time.Second)
	waitNoSessions(t, b) // the viewers' and the publisher's
}
