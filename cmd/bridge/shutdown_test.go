package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/internal/testkit/rtcserver"
)

// stampedVersion is the version TestBinary's build stamps with -ldflags -X.
const stampedVersion = "1.2.3-test"

// TestBinary builds the bridge command once and runs it as a process, the
// way an operator, a supervisor or a container runtime does: the clean
// shutdown on SIGTERM, its timeout, the second signal, and the command line
// (cli_test.go).
func TestBinary(t *testing.T) {
	bin := buildBinary(t)
	t.Run("SIGTERM", func(t *testing.T) { testSIGTERM(t, bin) })
	t.Run("DrainDelay", func(t *testing.T) { testDrainDelay(t, bin) })
	t.Run("SecondSignal", func(t *testing.T) { testSecondSignal(t, bin) })
	t.Run("ShutdownTimeout", func(t *testing.T) { testShutdownTimeout(t, bin) })
	t.Run("Check", func(t *testing.T) { testCheck(t, bin) })
	t.Run("Version", func(t *testing.T) { testVersion(t, bin) })
	t.Run("Healthcheck", func(t *testing.T) { testHealthcheck(t, bin) })
	t.Run("JSONLogs", func(t *testing.T) { testJSONLogs(t, bin) })
}

// builtFrom holds the commits checked out just before and just after
// buildBinary's build (the same but in a tree others commit to meanwhile).
var builtFrom [2]string

// buildBinary builds ./cmd/bridge into the test's temporary directory, with
// the VCS stamp (-buildvcs=true: the environment may turn it off) and
// stampedVersion.
func buildBinary(t *testing.T) string {
	t.Helper()
	head := func() string {
		rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
		if err != nil {
			t.Fatalf("git rev-parse HEAD: %v (the build is stamped from git: install git)", err)
		}
		return strings.TrimSpace(string(rev))
	}
	builtFrom[0] = head()
	defer func() { builtFrom[1] = head() }()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(t.TempDir(), "bridge")
	cmd := exec.Command(goBin, "build", "-buildvcs=true", "-ldflags", "-X main.version="+stampedVersion, "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// bridgeProcess is the bridge binary running on a config file.
type bridgeProcess struct {
	cmd        *exec.Cmd
	log        *testkit.LogBuf // stderr and stdout
	http, rtmp string          // listen addresses
	file       string          // the config file
	listen     string          // its listen section
	done       chan struct{}   // closed when the process has exited
	state      *os.ProcessState
}

// rewrite replaces the config file's sections after listen with extra.
func (p *bridgeProcess) rewrite(t *testing.T, extra string) {
	t.Helper()
	// Renamed into place: a reload never reads a half-written file.
	tmp := p.file + ".tmp"
	if err := os.WriteFile(tmp, []byte(p.listen+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p.file); err != nil {
		t.Fatal(err)
	}
}

// startProcess runs bin on a config listening on free ports (HTTP, RTMP and
// SRT on loopback; WebRTC UDP on every address, since a bridge process
// offers no loopback candidates) followed by extra (YAML: routes and other
// sections) and args, with env added to the environment. It returns once
// the bridge has started; the process is killed when the test ends.
func startProcess(t *testing.T, bin string, env []string, extra string, args ...string) *bridgeProcess {
	t.Helper()
	p := newProcess(t)
	p.rewrite(t, extra)
	p.start(t, bin, env, args...)
	return p
}

// newProcess chooses a bridge process's listen addresses and config file
// (startProcess; a test whose config names its own address, such as a
// cluster's public_url, writes it with rewrite, then calls start).
func newProcess(t *testing.T) *bridgeProcess {
	t.Helper()
	p := &bridgeProcess{
		log:  &testkit.LogBuf{},
		http: fmt.Sprintf("127.0.0.1:%d", testkit.FreeTCPPort(t)),
		rtmp: fmt.Sprintf("127.0.0.1:%d", testkit.FreeTCPPort(t)),
		done: make(chan struct{}),
	}
	p.listen = fmt.Sprintf("listen:\n  http: %q\n  rtmp: %q\n  srt: \"127.0.0.1:%d\"\n  webrtc_udp: \":%d\"\n",
		p.http, p.rtmp, testkit.FreeUDPPort(t), testkit.FreeUDPPort(t))
	p.file = filepath.Join(t.TempDir(), "config.yaml")
	return p
}

// start runs bin on p's config file with args and env added to the
// environment, and returns once the bridge has started; the process is
// killed when the test ends.
func (p *bridgeProcess) start(t *testing.T, bin string, env []string, args ...string) {
	t.Helper()
	p.cmd = exec.Command(bin, append([]string{"-config", p.file}, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr, p.cmd.Stdout = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("bridge process log:\n%s", p.log.String())
		}
	})
	// Started once the HTTP port answers (the log may be off).
	testkit.WaitFor(t, 20*time.Second, "the bridge's HTTP port", func() bool {
		select {
		case <-p.done:
			t.Fatalf("the bridge exited at start (%v):\n%s", p.state, p.log.String())
		default:
		}
		c, err := net.Dial("tcp", p.http)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (p *bridgeProcess) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// exitCode waits for the process to exit, at most within (a bound for a
// hung test, not a speed check), and returns its exit status.
func (p *bridgeProcess) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.state.ExitCode()
	case <-time.After(within):
		t.Fatalf("the bridge is still running %v after the signal", within)
		return -1
	}
}

// sessionEnd records when a WHEP viewer's PeerConnection reports its end
// (closed or failed).
type sessionEnd struct {
	once  sync.Once
	ended chan webrtc.PeerConnectionState
}

func watchEnd(pc *webrtc.PeerConnection) *sessionEnd {
	e := &sessionEnd{ended: make(chan webrtc.PeerConnectionState, 1)}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateClosed || st == webrtc.PeerConnectionStateFailed {
			e.once.Do(func() { e.ended <- st })
		}
	})
	return e
}

// testSIGTERM: SIGTERM with a WHEP viewer, an RTMP publisher (ffmpeg) and
// a WHIP forward connected ends each of them with a word to its peer (the
// viewer's connection ends, ffmpeg's RTMP connection is closed, the
// forward's remote session is DELETEd) and exits 0, which the bridge only
// does when all of that finished within shutdown.timeout. The forward's
// token comes from the environment (${NAME} in the config) and is not
// logged.
func testSIGTERM(t *testing.T, bin string) {
	const token = "forward-token-from-env"
	remote := rtcserver.StartWHIPAnyAddress(t, token, nil)
	p := startProcess(t, bin, []string{"BRIDGE_TEST_FORWARD_TOKEN=" + token}, `shutdown:
  timeout: 8s
routes:
  - path: live/cam
    forward:
      - whip: "`+remote.URL+`/whip/live/dst"
        token: ${BRIDGE_TEST_FORWARD_TOKEN}
  - path: "{path...}"
`)
	pub := testkit.StartFFmpeg(t, "-re", "-stream_loop", "-1", "-i", testkit.Fixture("h264-aac.flv"),
		"-c", "copy", "-f", "flv", "rtmp://"+p.rtmp+"/live/cam")
	testkit.WaitReady(t, remote.Registry, "live/dst", 20*time.Second)
	v := joinURL(t, http.DefaultClient, newViewerAPI(t), "http://"+p.http+"/whep/live/cam", nil)
	defer v.pc.Close()
	end := watchEnd(v.pc)
	v.waitFrames(t, 30, 15*time.Second)

	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, 30*time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	select {
	case st := <-end.ended:
		t.Logf("viewer's connection: %s", st)
	case <-time.After(10 * time.Second):
		t.Errorf("the viewer's connection is still %s after the bridge exited", v.pc.ConnectionState())
	}
	checkOutboundEnded(t, remote, pub)
	for _, want := range [][]string{{"shutting down", "signal=terminated"}, {"viewer session ended", "server shutting down"}, {"bridge stopped"}} {
		if p.log.Count(want...) == 0 {
			t.Errorf("no log line with %q", want)
		}
	}
	if strings.Contains(p.log.String(), token) {
		t.Error("the forward's token is in the log")
	}
}

// drainDelay is testDrainDelay's shutdown.drain_delay: long enough for
// its checks on a loaded machine (they take well under a second), which
// pass only while the drain lasts.
const drainDelay = 8 * time.Second

// testDrainDelay: with shutdown.drain_delay, after SIGTERM and until the
// delay ends, /readyz answers 503 with the signal as its reason, a new
// WHEP viewer gets 503 with Retry-After, a new RTMP connection is refused,
// and the viewer already there goes on receiving frames; then its session
// ends and the process exits 0.
func testDrainDelay(t *testing.T, bin string) {
	p := startProcess(t, bin, nil, fmt.Sprintf("shutdown:\n  timeout: 30s\n  drain_delay: %s\nroutes:\n  - path: \"{path...}\"\n", drainDelay))
	testkit.StartFFmpeg(t, "-re", "-stream_loop", "-1", "-i", testkit.Fixture("h264-aac.flv"),
		"-c", "copy", "-f", "flv", "rtmp://"+p.rtmp+"/live/cam")
	api := newViewerAPI(t)
	whep := "http://" + p.http + "/whep/live/cam"
	testkit.WaitFor(t, 20*time.Second, "the stream live/cam", func() bool {
		resp, err := http.Get("http://" + p.http + "/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), `href="/watch/live/cam"`)
	})
	v := joinURL(t, http.DefaultClient, api, whep, nil)
	defer v.pc.Close()
	end := watchEnd(v.pc)
	v.waitFrames(t, 10, 15*time.Second)

	p.signal(t, syscall.SIGTERM)
	testkit.WaitFor(t, 5*time.Second, "/readyz draining", func() bool {
		resp, err := http.Get("http://" + p.http + "/readyz")
		if err != nil {
			t.Fatalf("/readyz while draining: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "shutting down (terminated)")
	})
	drained := len(v.frames())
	p.log.WaitLog(t, 5*time.Second, "draining: new sessions refused", "drain_delay="+drainDelay.String())

	pc, offer := newOffer(t, api)
	defer pc.Close()
	resp := postWith(t, http.DefaultClient, whep, "application/sdp", offer, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "server shutting down") {
		t.Errorf("new viewer while draining: %d, Retry-After %q, %q; want 503 with Retry-After and the reason",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if c, err := net.Dial("tcp", p.rtmp); err == nil {
		c.Close()
		t.Error("the RTMP port accepts new connections while draining")
	}
	// The viewer plays on through the drain (its session ends after it).
	v.waitFrames(t, drained+30, drainDelay)
	select {
	case st := <-end.ended:
		t.Errorf("the viewer's connection %s during the drain", st)
	default:
	}

	if code := p.exitCode(t, 60*time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM with a drain delay, want 0", code)
	}
	select {
	case <-end.ended:
	case <-time.After(10 * time.Second):
		t.Errorf("the viewer's connection is still %s after the bridge exited", v.pc.ConnectionState())
	}
	if p.log.Count("viewer session ended", "server shutting down") != 1 {
		t.Error(`no "viewer session ended" line with reason "server shutting down"`)
	}
}

// startHeldForward runs a bridge process with shutdown.timeout whose route
// live/cam, published by ffmpeg, is forwarded to a WHIP server that holds
// DELETE requests until the test ends: its shutdown waits on that DELETE
// (up to the WHIP client's own 5 s timeout). deleting receives when the
// DELETE arrives.
func startHeldForward(t *testing.T, bin, timeout string) (p *bridgeProcess, deleting <-chan struct{}) {
	t.Helper()
	held := make(chan struct{}, 1)
	release := make(chan struct{})
	remote := rtcserver.StartWHIPAnyAddress(t, "", func(mux *http.ServeMux) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodDelete {
				select {
				case held <- struct{}{}:
				default:
				}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
			mux.ServeHTTP(w, r)
		})
	})
	t.Cleanup(func() { close(release) }) // before the remote's Stop
	p = startProcess(t, bin, nil, `shutdown:
  timeout: `+timeout+`
routes:
  - path: live/cam
    forward:
      - whip: "`+remote.URL+`/whip/live/dst"
  - path: "{path...}"
`)
	testkit.StartFFmpeg(t, "-re", "-stream_loop", "-1", "-i", testkit.Fixture("h264-aac.flv"),
		"-c", "copy", "-f", "flv", "rtmp://"+p.rtmp+"/live/cam")
	testkit.WaitReady(t, remote.Registry, "live/dst", 20*time.Second)
	return p, held
}

// testSecondSignal: a second signal during the shutdown exits at once
// with status 1. The second signal comes while the shutdown waits for the
// forward's held DELETE, which would let go after 5 s, the shutdown then
// ending with status 0.
func testSecondSignal(t *testing.T, bin string) {
	p, deleting := startHeldForward(t, bin, "60s")
	p.signal(t, syscall.SIGTERM)
	select {
	case <-deleting:
	case <-time.After(20 * time.Second):
		t.Fatal("the shutdown did not DELETE the forward's remote session")
	}
	p.signal(t, syscall.SIGINT)
	if code := p.exitCode(t, 30*time.Second); code != 1 {
		t.Errorf("exit status %d after a second signal, want 1", code)
	}
	if p.log.Count("second signal", "signal=interrupt") != 1 {
		t.Error(`no "second signal" log line`)
	}
}

// testShutdownTimeout: a shutdown that cannot finish within
// shutdown.timeout (a remote holds the forward's DELETE for longer) ends
// the process at the timeout with status 1 and says so.
func testShutdownTimeout(t *testing.T, bin string) {
	p, _ := startHeldForward(t, bin, "1s")
	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, 30*time.Second); code != 1 {
		t.Errorf("exit status %d after the shutdown timed out, want 1", code)
	}
	if p.log.Count("level=ERROR", "shutdown timed out", "timeout=1s") != 1 {
		t.Error(`no "shutdown timed out" log line`)
	}
}

// TestCloseLeavesNoGoroutine: Close with a WHEP viewer, an RTMP publisher
// and a WHIP forward connected ends them all and leaves no goroutine
// behind.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	remote := rtcserver.StartWHIP(t, "", nil)
	http.DefaultClient.CloseIdleConnections()
	check := testkit.GoroutineBaseline(t, 15*time.Second)

	cfg := withRoutes(config.Route{Path: "live/cam", Forward: []config.Forward{{WHIP: remote.URL + "/whip/live/dst"}}})
	cfg.Listen = config.Listen{HTTP: "127.0.0.1:0", RTMP: "127.0.0.1:0", WebRTCUDP: "127.0.0.1:0", SRT: "127.0.0.1:0"}
	b, err := Start(cfg, Options{IncludeLoopback: true}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	pub := testkit.StartFFmpeg(t, "-re", "-stream_loop", "-1", "-i", testkit.Fixture("h264-aac.flv"),
		"-c", "copy", "-f", "flv", "rtmp://"+b.RTMPAddr().String()+"/live/cam")
	testkit.WaitReady(t, remote.Registry, "live/dst", 20*time.Second)
	v := join(t, http.DefaultClient, b, "live/cam", nil)
	end := watchEnd(v.pc)
	v.waitFrames(t, 30, 15*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), config.DefaultShutdownTimeout)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case <-end.ended:
	case <-time.After(10 * time.Second):
		t.Errorf("the viewer's connection is still %s after Close", v.pc.ConnectionState())
	}
	checkOutboundEnded(t, remote, pub)
	_ = v.pc.Close()
	http.DefaultClient.CloseIdleConnections()
	check()
}

// checkOutboundEnded: at shutdown the forward DELETEd its remote session
// and the RTMP publisher's connection was closed.
func checkOutboundEnded(t *testing.T, remote *rtcserver.Server, pub *testkit.Proc) {
	t.Helper()
	if n := remote.Count("DELETE /sessions/", " 200"); n != 1 {
		t.Errorf("the forward's remote session was not DELETEd; remote requests:\n%s", remote.RequestLog())
	}
	select {
	case <-pub.Done():
	case <-time.After(10 * time.Second):
		t.Error("ffmpeg still publishes: its RTMP connection was not closed")
	}
}
