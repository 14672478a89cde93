package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/internal/testkit"
)

// bridgeProc is the bridge binary running as a process of its own, its
// stderr (where it logs, and where FFmpeg would write past the logger)
// kept line by line.
type bridgeProc struct {
	cmd             *exec.Cmd
	http, rtmp, srt string // addresses
	mu              sync.Mutex
	lines           []string // guarded by mu
	done            chan struct{}
}

// startBridgeProc builds cmd/bridge and runs it on free ports with every
// path published over RTMP and watched over WHEP. WebRTC UDP listens on
// every address (the binary has no loopback-candidate option, like a real
// deployment): viewers on this host reach it on its interfaces.
func startBridgeProc(t *testing.T) *bridgeProc {
	t.Helper()
	return startBridgeProcRoutes(t, func(string) string { return "" })
}

// startBridgeProcRoutes is startBridgeProc with the routes routes returns
// (YAML list items, given the bridge's RTMP address) before the catch-all
// one, which also lets WHIP and SRT publish.
func startBridgeProcRoutes(t *testing.T, routes func(rtmp string) string) *bridgeProc {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bridge")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/bridge: %v\n%s", err, out)
	}
	p := &bridgeProc{
		http: fmt.Sprintf("127.0.0.1:%d", testkit.FreeTCPPort(t)),
		rtmp: fmt.Sprintf("127.0.0.1:%d", testkit.FreeTCPPort(t)),
		srt:  fmt.Sprintf("127.0.0.1:%d", testkit.FreeUDPPort(t)),
		done: make(chan struct{}),
	}
	cfg := fmt.Sprintf(`listen:
  http: %q
  rtmp: %q
  srt: %q
  webrtc_udp: ":%d"
api:
  token: %q
routes:
%s  - path: "{path...}"
    ingest: [rtmp, whip, srt]
    whep:
      enabled: true
`, p.http, p.rtmp, p.srt, testkit.FreeUDPPort(t), apiToken, routes(p.rtmp))
	cfgPath := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "-config", cfgPath)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = p.cmd.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		_ = p.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("bridge log:\n%s", strings.Join(p.log(), "\n"))
		}
	})
	p.wait(t, 10*time.Second, `msg="bridge started"`)
	return p
}

func (p *bridgeProc) log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// count returns how many lines contain every one of subs.
func (p *bridgeProc) count(subs ...string) int {
	n := 0
	for _, l := range p.log() {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// wait waits for a line with every one of subs.
func (p *bridgeProc) wait(t *testing.T, within time.Duration, subs ...string) {
	t.Helper()
	p.waitN(t, within, 1, subs...)
}

// waitN waits for n lines with every one of subs.
func (p *bridgeProc) waitN(t *testing.T, within time.Duration, n int, subs ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for p.count(subs...) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d log lines with %q within %v", n, subs, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pionWatch joins url as a pion WHEP viewer offering its interfaces'
// addresses (not loopback: the bridge never probes it, as a remote
// client's), waits for video packets, then leaves as a player does:
// DELETE, then close.
func pionWatch(t *testing.T, url string) {
	t.Helper()
	pc, offer := newOffer(t, interfaceViewerAPI(t, false))
	defer pc.Close()
	got := make(chan struct{})
	var once sync.Once
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		n := 0
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			if n++; tr.Kind() == webrtc.RTPCodecTypeVideo && n == 30 {
				once.Do(func() { close(got) })
			}
		}
	})
	resp := post(t, url, "application/sdp", offer, nil)
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, answer)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("the pion viewer got no video within 15 s")
	}
	req, _ := http.NewRequest(http.MethodDelete, resp.Header.Get("Location"), nil)
	dr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	dr.Body.Close()
	if dr.StatusCode != http.StatusOK {
		t.Errorf("DELETE: %d", dr.StatusCode)
	}
}

// slogLine is the shape of every line the bridge's text logger writes.
var slogLine = regexp.MustCompile(`^time=\S+ level=(DEBUG|INFO|WARN|ERROR) msg=`)

// sessionStory is what one kind of session logs at INFO: its start line's
// message and its end line's; and how many TestCleanLogs runs.
type sessionStory struct {
	start, end string
	n          int
}

// The stories of TestCleanLogs' sessions, by their start line.
var sessionStories = []sessionStory{
	{`msg="viewer session created"`, `msg="viewer session ended"`, 2}, // WHEP viewers: pion, Chromium
	{`msg="publish session created"`, `msg="publish ended"`, 1},       // WHIP publisher
	{`msg="rtmp publish"`, `msg="rtmp publish ended"`, 2},             // RTMP publishers: ffmpeg, the forward
	{`msg="rtmp play started"`, `msg="rtmp play ended"`, 1},           // RTMP player
	{`msg="srt publish"`, `msg="srt publish ended"`, 1},               // SRT publisher
	{`msg="srt read"`, `msg="srt read ended"`, 1},                     // SRT reader
	{`msg="rtmp push started"`, `msg="rtmp push ended"`, 1},           // RTMP forward
}

// TestCleanLogs runs the bridge as a process and a normal day through it:
// ffmpeg publishes the AAC fixture over RTMP (so the AAC->Opus transcoder
// runs) and the route forwards it over RTMP (to the bridge itself, where
// it is one more RTMP publisher), a pion client publishes over WHIP and
// leaves, a pion viewer and a headless Chromium viewer join and leave,
// ffmpeg plays the stream over RTMP and reads it over SRT, and publishes
// another over SRT, the RTMP publisher stops (and with it the forward's
// session), the bridge is told to stop. The operator's log at INFO tells
// one story per session: nothing at WARN or ERROR, no line that is not
// the logger's (FFmpeg writing to stderr past it), and exactly one start
// and one end line per session, both with the session's id under session
// and the config route it runs under as route (its pattern), the end line
// with duration, bytes, packets and reason; and the admin API lists each
// session with the log_id that finds its lines.
func TestCleanLogs(t *testing.T) {
	needFFmpeg(t)
	needBrowser(t)
	p := startBridgeProcRoutes(t, func(rtmp string) string {
		return fmt.Sprintf(`  - path: "live/test"
    ingest: [rtmp]
    whep:
      enabled: true
    forward:
      - rtmp: "rtmp://%s/fwd/out"
`, rtmp)
	})
	_, stopPublish := publish(t, "h264-aac.flv", "rtmp://"+p.rtmp+"/live/test")
	p.wait(t, 10*time.Second, `msg="stream ready"`, "stream=live/test")
	p.wait(t, 10*time.Second, `msg="rtmp push started"`)
	p.wait(t, 10*time.Second, `msg="stream ready"`, "stream=fwd/out")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := publishWHIPWith(t, ctx, interfaceViewerAPI(t, false), "http://"+p.http+"/whip/live/whip")
	p.wait(t, 15*time.Second, `msg="stream ready"`, "stream=live/whip")
	listed := sessionsOf(t, "http://"+p.http+"/api/v1")

	pionWatch(t, "http://"+p.http+"/whep/live/test")
	startWatch(t, "http://"+p.http+"/watch/live/test").wait()
	p.waitN(t, 10*time.Second, 2, `msg="viewer session ended"`)

	for _, in := range []string{"rtmp://" + p.rtmp + "/live/test", "srt://" + p.srt + "?streamid=read:live/test"} {
		if ok, out := readWithFFmpeg(t, "-i", in); !ok {
			t.Errorf("ffmpeg read nothing from %s: %s", in, out)
		}
	}
	// An SRT publisher that ends its stream as an encoder does.
	if out, err := exec.Command(needFFmpeg(t), "-hide_banner", "-loglevel", "error", "-re", "-t", "2", "-i", fixture(t, "h264-aac.ts"),
		"-c", "copy", "-f", "mpegts", "srt://"+p.srt+"?streamid=publish:live/srt&pkt_size=1316").CombinedOutput(); err != nil {
		t.Errorf("ffmpeg SRT publisher: %v: %s", err, out)
	}
	p.wait(t, 10*time.Second, `msg="srt publish ended"`)

	// The WHIP publisher leaves as a client does: DELETE, then close.
	req, _ := http.NewRequest(http.MethodDelete, pub.location, nil)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusOK {
		t.Errorf("WHIP DELETE: %d", resp.StatusCode)
	}
	cancel()
	_ = pub.pc.Close()
	p.wait(t, 10*time.Second, `msg="publish ended"`)

	stopPublish()
	p.wait(t, 10*time.Second, `msg="rtmp push ended"`)
	p.waitN(t, 10*time.Second, 2, `msg="rtmp publish ended"`)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the bridge did not exit within 20 s of SIGTERM")
	}

	lines := p.log()
	for _, l := range lines {
		switch m := slogLine.FindStringSubmatch(l); {
		case m == nil:
			t.Errorf("not a log line (written past the logger): %q", l)
		case m[1] == "WARN" || m[1] == "ERROR":
			t.Errorf("%s in a normal lifecycle: %s", m[1], l)
		}
	}

	// Every session: one start and one end line, and nothing else at INFO
	// that carries its id.
	sessions := map[string][]string{}
	var ids []string
	sessionID := regexp.MustCompile(` session=(\S+)`)
	for _, l := range lines {
		if m := sessionID.FindStringSubmatch(l); m != nil && strings.Contains(l, "level=INFO") {
			if sessions[m[1]] == nil {
				ids = append(ids, m[1])
			}
			sessions[m[1]] = append(sessions[m[1]], l)
		}
	}
	kinds := map[string]int{}
	for _, id := range ids {
		ls := sessions[id]
		i := slices.IndexFunc(sessionStories, func(s sessionStory) bool { return strings.Contains(ls[0], s.start) })
		if i < 0 || len(ls) != 2 || !strings.Contains(ls[1], sessionStories[i].end) {
			t.Errorf("session %s logged at INFO %d lines, want its start and its end:\n%s", id, len(ls), strings.Join(ls, "\n"))
			continue
		}
		kinds[sessionStories[i].start]++
		checkEndLine(t, ls[1])
		// The route: live/test's own, or the catch-all's pattern.
		route := "route={path...}"
		if strings.Contains(ls[0]+" ", " stream=live/test ") {
			route = "route=live/test"
		}
		for _, k := range []string{" stream=", " " + route + " "} {
			if !strings.Contains(ls[0]+" ", k) || !strings.Contains(ls[1]+" ", k) {
				t.Errorf("session %s lines lack %q:\n%s", id, k, strings.Join(ls, "\n"))
			}
		}
		if i == len(sessionStories)-1 { // the forward's: its target
			for _, k := range []string{"target=rtmp://"} {
				if !strings.Contains(ls[0], k) || !strings.Contains(ls[1], k) {
					t.Errorf("forward session %s lines lack %s:\n%s", id, k, strings.Join(ls, "\n"))
				}
			}
		} else if !strings.Contains(ls[0], "peer=") || !strings.Contains(ls[1], "peer=") {
			t.Errorf("session %s lines lack peer=:\n%s", id, strings.Join(ls, "\n"))
		}
	}
	for _, story := range sessionStories {
		if kinds[story.start] != story.n {
			t.Errorf("%d sessions told as %s, want %d", kinds[story.start], story.start, story.n)
		}
	}

	// From the admin API to the log: each session listed while the WHIP
	// publisher was live has its story under session=<log_id>; a WHIP
	// session's whole id (its URL's capability) is in no line.
	if len(listed) < 4 {
		t.Errorf("the API listed %d sessions, want at least the RTMP publishers, the forward and the WHIP publisher: %+v", len(listed), listed)
	}
	for _, s := range listed {
		if n := len(sessions[s.LogID]); n != 2 {
			t.Errorf("%s session %s (log_id %q): %d lines at INFO under session=%s, want its start and its end", s.Kind, s.ID, s.LogID, n, s.LogID)
		}
		if s.Kind == "whip" && (s.LogID == s.ID || p.count(s.ID) > 0) {
			t.Errorf("WHIP session %s: log_id %q, and its whole id is in %d log lines; want a short log_id and the id in none", s.ID, s.LogID, p.count(s.ID))
		}
	}
}

// checkEndLine checks a session's end line has the keys every end line
// has, with something moved.
func checkEndLine(t *testing.T, line string) {
	t.Helper()
	for _, k := range []string{"duration=", "reason="} {
		if !strings.Contains(line, " "+k) {
			t.Errorf("end line lacks %s: %s", k, line)
		}
	}
	for _, k := range []string{"bytes", "packets"} {
		m := regexp.MustCompile(` ` + k + `=(\d+)`).FindStringSubmatch(line)
		if m == nil || m[1] == "0" {
			t.Errorf("end line has no %s moved: %s", k, line)
		}
	}
}
