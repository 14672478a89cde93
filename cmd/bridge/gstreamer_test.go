package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
