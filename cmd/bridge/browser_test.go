package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wantAudio makes the browser tests require sound: an audio track whose
// packets carry energy once the page's "Click to unmute" is pressed
// (Chromium measures energy only on audio it plays out).
// The tests run the cgo build, where RTMP's AAC reaches the page as Opus.
const wantAudio = true

// browserDir holds the Chromium driver script and its node_modules.
const browserDir = "../../test/browser"

// watchResult is the JSON line test/browser/watch.js prints.
type watchResult struct {
	OK                   bool      `json:"ok"`
	Reason               string    `json:"reason"`
	URL                  string    `json:"url"`
	UserAgent            string    `json:"userAgent"`
	State                string    `json:"state"`
	States               []string  `json:"states"`
	Status               string    `json:"status"`
	FramesDecoded        int       `json:"framesDecoded"`
	VideoWidth           int       `json:"videoWidth"`
	VideoHeight          int       `json:"videoHeight"`
	CurrentTime          []float64 `json:"currentTime"`
	Unmuted              bool      `json:"unmuted"`
	AudioTrack           bool      `json:"audioTrack"`
	AudioPacketsReceived int       `json:"audioPacketsReceived"`
	AudioLevel           float64   `json:"audioLevel"`
	TotalAudioEnergy     float64   `json:"totalAudioEnergy"`
	TotalSamplesReceived int       `json:"totalSamplesReceived"`
	PageErrors           []string  `json:"pageErrors"`
	CSP                  string    `json:"csp"`
	Deletes              []struct {
		URL    string `json:"url"`
		Status int    `json:"status"`
	} `json:"deletes"`
}

// needBrowser checks for node, Chromium and playwright-core, failing the
// test with how to install what is missing: these tests never skip.
func needBrowser(t *testing.T) (node, script string) {
	t.Helper()
	const nodeHint = "install Node.js 20+ with npm (`apt-get install nodejs npm` where the distribution's nodejs is 20+; " +
		"Debian 12's is 18: use NodeSource's nodejs 20), then `npm ci --prefix test/browser` (.ci/run does)"
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found: " + nodeHint)
	}
	// playwright-core 1.65 needs Node 20.
	out, err := exec.Command(node, "-p", "process.versions.node").Output()
	if err != nil {
		t.Fatalf("%s -p process.versions.node: %v", node, err)
	}
	ver := strings.TrimSpace(string(out))
	if major, _, _ := strings.Cut(ver, "."); atoi(major) < 20 {
		t.Fatalf("node %s is too old for playwright-core (needs 20+): %s", ver, nodeHint)
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("Chromium not found at %s: install it with `apt-get install chromium` (.ci/run does), or point $CHROMIUM at a Chrome binary", chromium)
	}
	dir, err := filepath.Abs(browserDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		t.Fatalf("playwright-core is not installed in %s: run `npm ci --prefix test/browser` from the repository root (.ci/run does)", dir)
	}
	return node, filepath.Join(dir, "watch.js")
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// needPlayerPage fails unless the bridge serves the player page.
func needPlayerPage(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("/static/player.js")) {
		t.Fatalf("GET %s: %d, not the player page: the bridge must serve package web (web.New(...).Register(mux))", url, resp.StatusCode)
	}
}

// watchRun is test/browser/watch.js running: headless Chromium playing
// the page until it has decoded enough video.
type watchRun struct {
	// States receives each state the page reports (connecting, offline,
	// playing, error); a slow receiver misses some.
	States <-chan string
	wait   func() watchResult
}

// startWatch starts test/browser/watch.js on url.
func startWatch(t *testing.T, url string) *watchRun {
	t.Helper()
	node, script := needBrowser(t)
	np := startNode(t, "watch", node, script, []string{url}, "WATCH_TIMEOUT_MS=45000", 60*time.Second, 10*time.Second)
	cmd, ctx, cancel, stdout, states, logDone, start := np.cmd, np.ctx, np.cancel, np.stdout, np.states, np.logDone, np.start
	var (
		res    *watchResult
		waited bool
	)
	wait := func() watchResult {
		t.Helper()
		if res != nil {
			return *res
		}
		defer cancel()
		<-logDone // stderr closed: node is exiting
		waitErr := cmd.Wait()
		waited = true
		t.Logf("watch.js ran %.1f s, exit: %v", time.Since(start).Seconds(), waitErr)
		if ctx.Err() != nil {
			t.Fatalf("watch.js did not finish within 60 s")
		}
		out := lastLine(stdout)
		res = new(watchResult)
		if err := json.Unmarshal([]byte(out), res); err != nil {
			t.Fatalf("watch.js (exit %v) printed no result JSON (%v): %q", waitErr, err, stdout.String())
		}
		t.Logf("result: %s", out)
		if waitErr != nil || !res.OK {
			t.Fatalf("Chromium did not play %s: %s (exit: %v, states %v, page status %q)", url, res.Reason, waitErr, res.States, res.Status)
		}
		return *res
	}
	// However the test ends, do not leave the browser running.
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Cancel()
			<-logDone
			_ = cmd.Wait()
		}
		cancel()
	})
	return &watchRun{States: states, wait: wait}
}

// checkPlayed asserts what every successful playback shows.
func checkPlayed(t *testing.T, res watchResult) {
	t.Helper()
	if res.VideoWidth != 640 || res.VideoHeight != 360 {
		t.Errorf("video is %dx%d, want 640x360", res.VideoWidth, res.VideoHeight)
	}
	if res.FramesDecoded <= 60 {
		t.Errorf("%d frames decoded, want more than 60", res.FramesDecoded)
	}
	if len(res.CurrentTime) != 2 || !(res.CurrentTime[1] > res.CurrentTime[0]) {
		t.Errorf("video.currentTime did not advance: %v", res.CurrentTime)
	}
	if len(res.PageErrors) > 0 {
		t.Errorf("page errors: %q", res.PageErrors)
	}
	if !strings.Contains(res.CSP, "connect-src 'self'") {
		t.Errorf("player page CSP %q lacks connect-src 'self'", res.CSP)
	}
	t.Logf("audio: track %v, %d packets, totalAudioEnergy %.4f, %d samples (wantAudio=%v)",
		res.AudioTrack, res.AudioPacketsReceived, res.TotalAudioEnergy, res.TotalSamplesReceived, wantAudio)
	if wantAudio && (!res.AudioTrack || res.AudioPacketsReceived == 0 || res.TotalAudioEnergy <= 0) {
		t.Errorf("no sound: audio track %v, %d packets, totalAudioEnergy %v", res.AudioTrack, res.AudioPacketsReceived, res.TotalAudioEnergy)
	}
}

// waitNoSessions waits for the bridge to end the viewer's WHEP session,
// which the page DELETEd when it was left (watch.js checks the DELETE got
// 200).
func waitNoSessions(t *testing.T, b *Bridge) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.sessions.Len() > 0 {
		if time.Now().After(deadline) {
			t.Errorf("%d WHEP sessions still open 5 s after the browser left the page", b.sessions.Len())
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBrowserWatch plays an RTMP stream on the built-in player page in
// headless Chromium: the real browser's WebRTC stack, H.264 decoder and
// the page's WHEP client.
func TestBrowserWatch(t *testing.T) {
	needBrowser(t)
	b := startBridge(t, nil)
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/test")
	waitStream(t, b, "live/test")
	url := "http://" + b.HTTPAddr().String() + "/watch/live/test"
	needPlayerPage(t, url)

	res := startWatch(t, url).wait()
	checkPlayed(t, res)
	if slices.Contains(res.States, "error") {
		t.Errorf("page went through an error state: %v", res.States)
	}
	waitNoSessions(t, b)
}

// TestBrowserWatchBeforePublish opens the player before the stream
// exists: the page must say the stream is offline, keep retrying, and
// play once the publisher starts.
func TestBrowserWatchBeforePublish(t *testing.T) {
	needBrowser(t)
	b := startBridge(t, nil)
	url := "http://" + b.HTTPAddr().String() + "/watch/live/test"
	needPlayerPage(t, url)

	w := startWatch(t, url)
	timeout := time.After(40 * time.Second)
wait:
	for {
		select {
		case s := <-w.States:
			if s == "offline" {
				break wait
			}
		case <-timeout:
			t.Fatal("the page did not report the stream offline within 40 s")
		}
	}
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/test")
	res := w.wait()
	checkPlayed(t, res)
	i, j := slices.Index(res.States, "offline"), slices.Index(res.States, "playing")
	if i < 0 || j < i {
		t.Errorf("states %v, want offline before playing", res.States)
	}
	waitNoSessions(t, b)
}

// nodeProc is a node script driving Chromium (watch.js, publish.js), its
// stderr copied to the test log with the page states it reports.
type nodeProc struct {
	cmd     *exec.Cmd
	ctx     context.Context
	cancel  context.CancelFunc
	stdout  *bytes.Buffer
	states  chan string   // "[name] state: X" lines from stderr
	logDone chan struct{} // closed when stderr is closed (node is exiting)
	start   time.Time
}

// startNode runs node script args with env added, for at most limit; on
// timeout it sends SIGINT (playwright closes Chromium on it) and kills the
// process waitDelay later.
func startNode(t *testing.T, name, node, script string, args []string, env string, limit, waitDelay time.Duration) *nodeProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	cmd := exec.CommandContext(ctx, node, append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), env)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = waitDelay
	p := &nodeProc{cmd: cmd, ctx: ctx, cancel: cancel, stdout: &bytes.Buffer{},
		states: make(chan string, 16), logDone: make(chan struct{})}
	cmd.Stdout = p.stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		defer close(p.logDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			t.Logf("%s: %s", name, line)
			if s, ok := strings.CutPrefix(line, "["+name+"] state: "); ok {
				select {
				case p.states <- s:
				default:
				}
			}
		}
	}()
	return p
}

// lastLine returns the last line of what a script printed (its JSON result).
func lastLine(b *bytes.Buffer) string {
	out := strings.TrimSpace(b.String())
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	return out
}
