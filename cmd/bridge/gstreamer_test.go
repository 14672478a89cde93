package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/transcode/av"
)

// whipClientTone is the frequency of the tone GStreamer publishes.
const whipClientTone = 440

// whipClientInstall is how to get Debian's simple-whip-client: its
// Depends bring GStreamer's webrtcbin, DTLS/SRTP (plugins-bad), libnice,
// the RTP payloaders (plugins-good), the test sources and Opus
// (plugins-base) and the H.264 encoders (openh264 in plugins-bad, x264 in
// plugins-ugly).
const whipClientInstall = "`apt-get install simple-whip-client` (Debian 12+; it brings gstreamer1.0-plugins-base/-good/-bad/-ugly, gstreamer1.0-nice and gstreamer1.0-libav)"

// whipClient is GStreamer's simple-whip-client publishing to a WHIP URL.
type whipClient struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done
}

func (c *whipClient) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

// output is what the client printed so far.
func (c *whipClient) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// startWHIPClient runs Debian's whip-client (package simple-whip-client)
// publishing GStreamer's test pattern as H.264 (openh264, 640x360 at
// 30 fps, a keyframe a second) and a whipClientTone sine as Opus to url,
// with its most verbose log (which prints the SDP answer it got). It is
// interrupted (and DELETEs its session) when the test ends; the
// process's exit is reported on done.
func startWHIPClient(t *testing.T, url string) *whipClient {
	t.Helper()
	bin, err := exec.LookPath("whip-client")
	if err != nil {
		t.Fatal("whip-client (GStreamer's simple-whip-client) not found: install it with " + whipClientInstall)
	}
	video := "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 ! videoconvert ! queue ! " +
		"openh264enc gop-size=30 bitrate=600000 ! h264parse ! rtph264pay config-interval=-1 pt=96 ssrc=2 ! queue ! " +
		"application/x-rtp,media=video,encoding-name=H264,payload=96"
	audio := "audiotestsrc is-live=true wave=sine freq=" + strconv.Itoa(whipClientTone) + " ! audioconvert ! audioresample ! queue ! " +
		"opusenc ! rtpopuspay pt=111 ssrc=1 ! queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111"
	c := &whipClient{done: make(chan struct{})}
	c.cmd = exec.Command(bin, "-u", url, "-V", video, "-A", audio, "-l", "7", "-o")
	c.cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+noUPnPLib(t))
	c.cmd.Stdout, c.cmd.Stderr = c, c
	c.cmd.WaitDelay = 5 * time.Second
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("whip-client: %v", err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Signal(os.Interrupt)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("whip-client output:\n%s", c.output())
		}
	})
	return c
}

// TestGStreamerWHIP: GStreamer's simple-whip-client (webrtcbin) publishes
// H.264 and an Opus tone over WHIP, accepts the bridge's answer (a=rtcp-mux
// and a=rtcp-mux-only in each bundled section, as RFC 9725 asks) and a
// pion WHEP viewer gets what it sent: decodable 640x360 pictures with
// advancing timestamps, and the tone.
func TestGStreamerWHIP(t *testing.T) {
	if !av.Available() {
		t.Fatal("this test binary has no FFmpeg: build with cgo and install libavcodec-dev libavutil-dev libswresample-dev pkg-config")
	}
	// WebRTC on the wildcard address, as by default: libnice gathers no
	// loopback candidate and does not reach a bridge offering only
	// 127.0.0.1.
	b := startConnectBridge(t, false)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	c := startWHIPClient(t, fmt.Sprintf("http://127.0.0.1:%d/whip/live/gst", b.HTTPAddr().(*net.TCPAddr).Port))
	deadline := time.Now().Add(15 * time.Second)
	for {
		if s, ok := b.registry.Get("live/gst"); ok && s.Tracks() != nil {
			break
		}
		select {
		case <-c.done:
			t.Fatalf("whip-client exited (%v) before its stream was live:\n%s", c.err, c.output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream whip-client publishes was not live within 15 s:\n%s", c.output())
		}
	}
	checkMuxOnlyAnswer(t, c.output())

	v := watch(t, b, "live/gst", nil)
	aus := v.waitFrames(t, 90, 15*time.Second)
	dec, err := av.NewVideoDecoder(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pictures := 0
	for i, au := range aus {
		if i > 0 && int32(au.ts-aus[i-1].ts) <= 0 {
			t.Fatalf("frame %d: RTP timestamp %d does not advance from %d", i, au.ts, aus[i-1].ts)
		}
		frames, err := dec.Decode(au.nalus, int64(au.ts), int64(au.ts))
		if err != nil {
			t.Fatalf("frame %d (NAL types %v) does not decode: %v", i, naluTypes(au), err)
		}
		for _, f := range frames {
			if f.Width != 640 || f.Height != 360 {
				t.Errorf("picture %dx%d, want 640x360", f.Width, f.Height)
			}
			pictures++
			f.Release()
		}
	}
	if pictures < len(aus)-2 {
		t.Errorf("%d pictures from %d frames", pictures, len(aus))
	}

	left, _, packets := v.opus(t)
	from := len(left) / 2
	if from+24000 > len(left) {
		t.Fatalf("only %d samples of audio", len(left))
	}
	got := dominant(left[from : from+24000])
	if math.Abs(got-whipClientTone) > 5 {
		t.Errorf("audio %.0f Hz, want GStreamer's %d Hz tone", got, whipClientTone)
	}
	t.Logf("from whip-client: %d frames, %d pictures decoded, %d Opus packets, tone %.0f Hz", len(aus), pictures, packets, got)
}

// checkMuxOnlyAnswer finds the SDP answer in whip-client's verbose log and
// checks that each of its sections has a=rtcp-mux and a=rtcp-mux-only.
func checkMuxOnlyAnswer(t *testing.T, log string) {
	t.Helper()
	_, answer, ok := strings.Cut(log, "Received SDP answer")
	if !ok {
		t.Fatalf("whip-client did not log the SDP answer it received:\n%s", log)
	}
	sections := strings.Split(answer, "\nm=")[1:]
	if len(sections) != 2 {
		t.Fatalf("the answer whip-client received has %d media sections, want 2:\n%s", len(sections), answer)
	}
	for _, s := range sections {
		kind, _, _ := strings.Cut(s, " ")
		// The section ends where whip-client's next log line starts.
		if i := strings.Index(s, "\n["); i >= 0 {
			s = s[:i]
		}
		if !strings.Contains(s, "a=rtcp-mux\r") || !strings.Contains(s, "a=rtcp-mux-only\r") {
			t.Errorf("the answer's %s section lacks a=rtcp-mux or a=rtcp-mux-only:\n%s", kind, s)
		}
	}
}

// noUPnPSource is a stand-in for libgupnp-igd (UPnP port mapping, which
// libnice links): Debian 12's whip-client is built with libsoup 2.4, and
// its libnice reaches libsoup 3 through libgupnp-igd -> libgupnp-1.6, so
// the client aborts as webrtcbin loads ("libsoup2 symbols detected. Using
// libsoup2 and libsoup3 in the same process is not supported"). With this
// library first on the search path libnice finds no UPnP gateway (there is
// none on loopback) and libsoup 3 is never loaded. The four functions are
// the ones libnice imports.
const noUPnPSource = `
unsigned long gupnp_simple_igd_get_type(void) { return 20 << 2; /* G_TYPE_OBJECT */ }
void *gupnp_simple_igd_thread_new(void) { return 0; }
void gupnp_simple_igd_add_port(void *s, const char *p, unsigned ep, const char *la, unsigned lp, unsigned lease, const char *d) {}
void gupnp_simple_igd_remove_port_local(void *s, const char *p, const char *la, unsigned lp) {}
`

// noUPnPLib builds noUPnPSource as libgupnp-igd-1.0.so.4 in a directory
// of the test's and returns the directory.
func noUPnPLib(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "igd.c")
	if err := os.WriteFile(src, []byte(noUPnPSource), 0o644); err != nil {
		t.Fatal(err)
	}
	lib := "libgupnp-igd-1.0.so.4"
	out, err := exec.Command("cc", "-shared", "-fPIC", "-Wl,-soname,"+lib, "-o", filepath.Join(dir, lib), src).CombinedOutput()
	if err != nil {
		t.Fatalf("cc (needed to run Debian 12's whip-client; install gcc): %v: %s", err, out)
	}
	return dir
}

// exchange is one request a client made and how the bridge answered.
type exchange struct {
	method, path string
	status       int
	retryAfter   string
	body         string
}

// recordingProxy forwards to the bridge at addr and records every
// exchange: what a client that does not log it saw.
type recordingProxy struct {
	mu        sync.Mutex
	exchanges []exchange
}

func (p *recordingProxy) handler(addr string) http.Handler {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr})
	rp.ModifyResponse = func(resp *http.Response) error {
		body, err := io.ReadAll(io.LimitReader(resp.Body, rtc.MaxSDPSize))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		p.mu.Lock()
		p.exchanges = append(p.exchanges, exchange{method: resp.Request.Method, path: resp.Request.URL.Path,
			status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: string(body)})
		p.mu.Unlock()
		return err
	}
	return rp
}

func (p *recordingProxy) recorded() []exchange {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.exchanges)
}

// TestGStreamerWHIPAtLimit shows what a third-party WHIP client does with
// the bridge's refusal at a limit (429 with Retry-After and the reason):
// Debian's simple-whip-client, whose address already holds its one
// session (limits.webrtc_sessions_per_address: 1), gets the 429, prints
// its status line and exits without retrying; it reads neither the
// Retry-After nor the reason. (No WHIP/WHEP client available here backs
// off on Retry-After: whip-client and whip-whep.js give up on any status
// but 201, @eyevinn/whip-web-client does not look at the status; the
// bridge's own WHIP forward, WHEP pull and player page do wait it out.)
func TestGStreamerWHIPAtLimit(t *testing.T) {
	cfg := config.Default()
	cfg.Limits.WebRTCSessionsPerAddress = 1
	cfg.Limits.WebRTCPendingPerAddress = 1
	b := startBridge(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	publishWHIP(t, ctx, "http://"+b.HTTPAddr().String()+"/whip/live/held")
	waitStream(t, b, "live/held")

	var rec recordingProxy
	proxy := httptest.NewServer(rec.handler(b.HTTPAddr().String()))
	defer proxy.Close()
	c := startWHIPClient(t, proxy.URL+"/whip/live/gst")
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("whip-client still runs 20 s after its POST was refused:\n%s", c.output())
	}
	ex := rec.recorded()
	if len(ex) != 1 || ex[0].method != http.MethodPost {
		t.Fatalf("whip-client's requests: %+v, want its one POST", ex)
	}
	want := "your address holds 1 WebRTC sessions, the limit per address: end one first\n"
	if ex[0].status != http.StatusTooManyRequests || ex[0].retryAfter != "10" || ex[0].body != want {
		t.Errorf("the bridge answered %d, Retry-After %q, body %q; want 429, 10, %q", ex[0].status, ex[0].retryAfter, ex[0].body, want)
	}
	out := c.output()
	if !strings.Contains(out, "[429] Too Many Requests") {
		t.Errorf("whip-client did not print the refusal's status:\n%s", out)
	}
	t.Logf("whip-client got %d (Retry-After: %s, %q), printed %q and exited (%v) without retrying",
		ex[0].status, ex[0].retryAfter, strings.TrimSpace(ex[0].body), "[429] Too Many Requests", c.err)
}
