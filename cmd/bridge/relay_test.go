package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/relay"
	"github.com/wishbridge/bridge/transcode/av"
)

// testClusterToken is the node-to-node credential of the relay tests.
const testClusterToken = "relay-test-cluster-token-0123"

// startClusterNode runs a bridge on free loopback ports with metrics on,
// the cluster token testClusterToken and opts' relay source: an origin
// (no source) or an edge relaying from the node the source names. edit,
// if set, changes the config first.
func startClusterNode(t *testing.T, opts Options, edit func(*config.Config)) *Bridge {
	t.Helper()
	cfg := config.Default()
	cfg.Listen.HTTP = "127.0.0.1:0"
	cfg.Listen.RTMP = "127.0.0.1:0"
	cfg.Listen.WebRTCUDP = "127.0.0.1:0"
	cfg.Listen.SRT = "127.0.0.1:0"
	cfg.Metrics.Enabled = true
	if edit != nil {
		edit(cfg)
	}
	cfg.Cluster.Token = testClusterToken
	opts.IncludeLoopback = true
	b, err := Start(cfg, opts, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

// startOriginAndEdge runs node A (the origin) and node B, whose readers of
// any path B does not publish are served through a relay from A.
func startOriginAndEdge(t *testing.T, edgeConfig func(*config.Config)) (a, b *Bridge) {
	a = startClusterNode(t, Options{}, nil)
	b = startClusterNode(t, Options{RelaySource: relay.Static("http://" + a.HTTPAddr().String())}, edgeConfig)
	return a, b
}

// relaysOut scrapes node's bridge_relays{direction="out"}.
func relaysOut(t *testing.T, node *Bridge) float64 {
	t.Helper()
	_, _, body := getMetrics(t, "http://"+node.HTTPAddr().String()+"/metrics", "")
	v, _ := sampleValue(body, `bridge_relays{direction="out"}`)
	return v
}

// deleteViewer ends a WHEP viewer's session and its PeerConnection.
func deleteViewer(t *testing.T, v *viewer) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, v.location, nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	_ = v.pc.Close()
}

// TestRelay: ffmpeg publishes H.264+AAC over RTMP to node A; node B,
// which does not have the stream, serves it through a relay from A. A pion
// WHEP viewer on B gets decodable video and the fixture's tones, the AAC
// reaching B as AAC (transcoded to Opus once, on B); ffmpeg plays it over
// RTMP from B; ten WHEP viewers on B share one relay (A serves exactly one,
// read from A's metrics, and A's stream has one reader); the relay ends
// once B's last reader has left.
func TestRelay(t *testing.T) {
	if !av.Available() {
		t.Fatal("this test binary has no FFmpeg: build with cgo and install libavcodec-dev libavutil-dev libswresample-dev pkg-config")
	}
	a, b := startOriginAndEdge(t, nil)
	publish(t, "h264-aac.flv", "rtmp://"+a.RTMPAddr().String()+"/live/relay")
	waitStream(t, a, "live/relay")
	if _, ok := b.registry.Get("live/relay"); ok {
		t.Fatal("B has the stream before any reader asked for it")
	}

	v := watch(t, b, "live/relay", nil)
	aus := v.waitFrames(t, 150, 20*time.Second)
	if types := naluTypes(aus[0]); len(types) < 3 || types[0] != h264.NALUTypeSPS || types[1] != h264.NALUTypePPS || !slices.Contains(types, h264.NALUTypeIDR) {
		t.Errorf("first frame on B: NAL types %v, want SPS, PPS, then an IDR", types)
	}
	st, ok := b.registry.Get("live/relay")
	if !ok {
		t.Fatal("B serves a viewer without the stream in its registry")
	}
	if k := st.PublisherKind(); k != access.KindRelay {
		t.Errorf("B's stream arrives by %q, want %q", k, access.KindRelay)
	}
	if names := codecNames(st.Tracks()); !slices.Equal(names, []string{"H264", "AAC"}) {
		t.Errorf("B's tracks are %v, want [H264 AAC]: the relay carries the source's codecs", names)
	}
	checkFixtureTones(t, v, "B")

	if ok, out := readRTMP(t, "rtmp://"+b.RTMPAddr().String()+"/live/relay"); !ok {
		t.Errorf("RTMP play of the relayed stream on B got no H.264: %s", out)
	}

	viewers := []*viewer{v}
	for range 9 {
		viewers = append(viewers, watch(t, b, "live/relay", nil))
	}
	for _, v := range viewers {
		v.waitFrames(t, len(v.frames())+30, 20*time.Second)
	}
	if n := relaysOut(t, a); n != 1 {
		t.Errorf("A serves %v relays to B's ten viewers, want 1", n)
	}
	if ast, _ := a.registry.Get("live/relay"); ast.Readers() != 1 {
		t.Errorf("A's stream has %d readers, want 1 (the relay)", ast.Readers())
	}
	if n := b.relays.Stats().In; n != 1 {
		t.Errorf("B runs %d relays, want 1", n)
	}

	for _, v := range viewers {
		deleteViewer(t, v)
	}
	waitSample(t, "http://"+a.HTTPAddr().String()+"/metrics", "", `bridge_relays{direction="out"}`, 0)
	if n := b.relays.Stats().In; n != 0 {
		t.Errorf("B still runs %d relays after its last reader left", n)
	}
}

// checkFixtureTones checks that viewer v (at node where) hears the
// h264-aac fixture's tones: 440 Hz on the left, 660 Hz on the right.
func checkFixtureTones(t *testing.T, v *viewer, where string) {
	t.Helper()
	left, right, _ := v.opus(t)
	from := len(left) / 2
	if on := beepOnsets(left); len(on) > 0 {
		from = on[0] + 4800
	}
	if from+24000 > len(left) {
		t.Fatalf("only %d samples of audio on %s", len(left), where)
	}
	if got := dominant(left[from : from+24000]); math.Abs(got-440) > 5 {
		t.Errorf("left channel on %s: %.0f Hz, want 440", where, got)
	}
	if got := dominant(right[from : from+24000]); math.Abs(got-660) > 5 {
		t.Errorf("right channel on %s: %.0f Hz, want 660", where, got)
	}
}

func codecNames(tracks []*media.Track) []string {
	var out []string
	for _, t := range tracks {
		out = append(out, t.Codec.Name())
	}
	return out
}

// TestRelayRefusals: the origin's relay endpoint answers a request
// without the cluster token, or with another, 401, and one for a path
// nobody publishes 404, each with its reason.
func TestRelayRefusals(t *testing.T) {
	a := startClusterNode(t, Options{}, nil)
	base := "http://" + a.HTTPAddr().String() + relay.PathPrefix
	for _, c := range []struct {
		name, path, token string
		want              int
	}{
		{"no token", "live/x", "", http.StatusUnauthorized},
		{"wrong token", "live/x", "not-the-cluster-token-0123", http.StatusUnauthorized},
		{"no stream", "live/x", testClusterToken, http.StatusNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, base+c.path, nil)
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("got %d, want %d", resp.StatusCode, c.want)
			}
		})
	}
}

// oggPackets returns the Opus packets of h264-opus.ogg (one per page).
func oggPackets(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(fixture(t, "h264-opus.ogg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, _, err := oggreader.NewWith(f)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for {
		page, hdr, err := r.ParseNextPage()
		if err != nil {
			return out
		}
		if hdr.GranulePosition != 0 {
			out[string(page)] = true
		}
	}
}

// senderSSRC returns the SSRC pc sends its track of kind with.
func senderSSRC(t *testing.T, pc *webrtc.PeerConnection, kind webrtc.RTPCodecType) uint32 {
	t.Helper()
	for _, s := range pc.GetSenders() {
		if tr := s.Track(); tr != nil && tr.Kind() == kind {
			return uint32(s.GetParameters().Encodings[0].SSRC)
		}
	}
	t.Fatalf("the publisher sends no %s", kind)
	return 0
}

// TestRelayWHIP: a WHIP (H.264 + Opus) publisher on node A reaches a WHEP
// viewer on node B with its RTP passed through, not repacketized: every
// Opus payload B's viewer gets is one the publisher sent, and B's units
// carry the publisher's own packets (its SSRCs), which only the relay
// could have brought.
func TestRelayWHIP(t *testing.T) {
	a, b := startOriginAndEdge(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := publishWHIP(t, ctx, "http://"+a.HTTPAddr().String()+"/whip/live/w")
	waitStream(t, a, "live/w")

	v := watch(t, b, "live/w", nil)
	v.waitFrames(t, 90, 20*time.Second)
	sent := oggPackets(t)
	v.mu.Lock()
	audio := append([]audioPacket(nil), v.audio...)
	v.mu.Unlock()
	if len(audio) < 50 {
		t.Fatalf("B's viewer got %d Opus packets, want ~50/s", len(audio))
	}
	for i, p := range audio {
		if !sent[string(p.payload)] {
			t.Fatalf("Opus packet %d of %d on B (%d bytes) is not one the publisher sent: the audio was re-encoded on the way", i, len(audio), len(p.payload))
		}
	}

	st, ok := b.registry.Get("live/w")
	if !ok {
		t.Fatal("B has no stream live/w")
	}
	rd, err := st.NewReader(media.ReaderOptions{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	want := map[bool]uint32{true: senderSSRC(t, pub.pc, webrtc.RTPCodecTypeVideo), false: senderSSRC(t, pub.pc, webrtc.RTPCodecTypeAudio)}
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	seen := map[bool]int{}
	for seen[true] < 30 || seen[false] < 30 {
		u, err := rd.Read(rctx)
		if err != nil {
			t.Fatalf("reading B's stream: %v (video units %d, audio %d)", err, seen[true], seen[false])
		}
		video := u.Track.IsVideo()
		if len(u.RTP) == 0 {
			t.Fatalf("a %s unit on B has no RTP packets", u.Track)
		}
		if got := u.RTP[0].SSRC; got != want[video] {
			t.Fatalf("%s packets on B have SSRC %#x, the publisher sent %#x: repacketized", u.Track, got, want[video])
		}
		seen[video]++
	}
}

// relayEnv holds the number of runs of TestRelaySetupTime.
const relayEnv = "BENCH_RELAY"

// TestRelaySetupTime is a benchmark, skipped unless BENCH_RELAY=N: N times,
// a WHEP viewer joins on node B a stream that node A owns while B has no
// relay of it (B's route keeps no grace, so the stream leaves B with its
// relay), and the log gets, p50 and max over the runs, the time from the
// WHEP POST to B's stream being ready (the relay's setup: the request,
// A's GOP cache, B's publication) and to the viewer's first whole frame.
func TestRelaySetupTime(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(relayEnv))
	if n <= 0 {
		t.Skip("a benchmark: set " + relayEnv + "=N runs")
	}
	a, b := startOriginAndEdge(t, func(cfg *config.Config) {
		for i := range cfg.Routes {
			cfg.Routes[i].Grace = noGrace()
		}
	})
	publish(t, "h264-aac.flv", "rtmp://"+a.RTMPAddr().String()+"/live/setup")
	waitStream(t, a, "live/setup")
	api := newViewerAPI(t)
	url := "http://" + b.HTTPAddr().String() + "/whep/live/setup"
	var ready, first []time.Duration
	for range n {
		waitFor(t, 30*time.Second, "B's previous relay to end", func() bool {
			_, ok := b.registry.Get("live/setup")
			return !ok && b.relays.Stats().In == 0
		})
		start := time.Now()
		readyAt := make(chan time.Time, 1)
		wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
		go func() {
			if _, err := b.registry.WaitReady(wctx, "live/setup", time.Millisecond, nil); err == nil {
				readyAt <- time.Now()
			}
		}()
		v := joinURL(t, http.DefaultClient, api, url, nil)
		v.waitFrames(t, 1, 20*time.Second)
		first = append(first, v.frames()[0].at.Sub(start))
		ready = append(ready, (<-readyAt).Sub(start))
		wcancel()
		deleteViewer(t, v)
	}
	slices.Sort(ready)
	slices.Sort(first)
	t.Logf("relay setup over %d runs: stream ready on the edge p50 %v max %v; first frame at the edge's WHEP viewer p50 %v max %v",
		n, ready[n/2].Round(time.Millisecond), ready[n-1].Round(time.Millisecond), first[n/2].Round(time.Millisecond), first[n-1].Round(time.Millisecond))
	fmt.Printf("relay setup: ready_p50=%v first_frame_p50=%v runs=%d\n", ready[n/2].Round(time.Millisecond), first[n/2].Round(time.Millisecond), n)
}
