package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/cluster"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/transcode/av"
)

// relayKey is the read key of the relay tests' private route.
const relayKey = "relay-viewer-key"

// relayNode is a node of TestClusterRelay: a private route with a read
// key, a grace long enough for a publisher to move to another node,
// metrics on; on the origin also per-address limits of one WebRTC session
// per client address, which its relays (both from 127.0.0.1) must not
// count against.
func relayNode(grace time.Duration, origin bool) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.Routes = append([]config.Route{{Path: "private/{name}", ReadKey: relayKey}}, cfg.Routes...)
		withGrace(grace)(cfg)
		cfg.Metrics.Enabled = true
		if origin {
			cfg.Limits.WebRTCSessionsPerAddress, cfg.Limits.WebRTCPendingPerAddress = 1, 1
		}
	}
}

// checkPictures decodes a viewer's frames (at node where) with FFmpeg's
// H.264 decoder: every one decodes, into 640x360 pictures.
func checkPictures(t *testing.T, aus []accessUnit, where string) {
	t.Helper()
	dec, err := av.NewVideoDecoder(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pictures := 0
	for i, au := range aus {
		frames, err := dec.Decode(au.nalus, int64(au.ts), int64(au.ts))
		if err != nil {
			t.Fatalf("frame %d on %s (NAL types %v) does not decode: %v", i, where, naluTypes(au), err)
		}
		for _, f := range frames {
			if f.Width != 640 || f.Height != 360 {
				t.Errorf("picture on %s: %dx%d, want 640x360", where, f.Width, f.Height)
			}
			pictures++
			f.Release()
		}
	}
	if pictures < len(aus)-2 {
		t.Errorf("%d pictures from %d frames on %s", pictures, len(aus), where)
	}
}

// TestClusterRelay: three bridges A, B and C joined through a real
// redis-server in relay mode; ffmpeg publishes H.264+AAC over RTMP on A.
//   - The route's read policy holds at the edges: a viewer on C without
//     the read key is refused (401) and starts no relay.
//   - A WHEP viewer on C, which asks the registry who owns the path, plays
//     through a relay from A: decodable video and the fixture's tones.
//   - On B, ffmpeg plays the stream over RTMP and reads it over SRT.
//   - Ten WHEP viewers on C and ten on B: A serves exactly two relays (one
//     per edge, bridge_relays{direction="out"} on A's metrics), though A
//     allows one WebRTC session per address and both come from 127.0.0.1.
//   - A's publisher stops, and ffmpeg publishes on B within the grace: B
//     takes the path over (its relay gives way to its publisher), C's relay
//     moves from A to B, and every viewer on C and on B keeps getting
//     frames.
//
// The relay's setup (C's first viewer's POST to its first frame) and the
// takeover (B's publisher starting to C's viewers' next frame) are logged.
func TestClusterRelay(t *testing.T) {
	if !av.Available() {
		t.Fatal("this test binary has no FFmpeg: build with cgo and install libavcodec-dev libavutil-dev libswresample-dev pkg-config")
	}
	const path = "private/cam"
	grace := 15 * time.Second
	r := testkit.StartRedis(t)
	a := startOwnerNode(t, r, "a", relayNode(grace, true))
	b := startOwnerNode(t, r, "b", relayNode(grace, false))
	c := startOwnerNode(t, r, "c", relayNode(grace, false))
	_, stopA := publish(t, "h264-aac.flv", "rtmp://"+a.RTMPAddr().String()+"/"+path)
	waitStream(t, a, path)
	waitFor(t, 10*ownerHeartbeat, "A's claim seen from C", func() bool { return ownerOf(c, path) == "a" })

	status, body, _ := postOffer(t, noRedirects, whepURL(c, path), nil)
	if status != http.StatusUnauthorized {
		t.Errorf("WHEP on C without the read key: %d %q, want 401", status, body)
	}
	if _, ok := c.registry.Get(path); ok || c.relays.Stats().In != 0 {
		t.Error("a refused viewer on C started a relay")
	}

	key := map[string]string{"Authorization": "Bearer " + relayKey}
	began := time.Now()
	first := watch(t, c, path, key)
	aus := first.waitFrames(t, 150, 20*time.Second)
	t.Logf("relay setup on C: first frame %v after the viewer's POST", aus[0].at.Sub(began).Round(time.Millisecond))
	if st, ok := c.registry.Get(path); !ok || st.PublisherKind() != access.KindRelay {
		t.Fatal("C serves its viewer without a relay")
	}
	checkPictures(t, aus, "C")
	checkFixtureTones(t, first, "C")

	rtmpURL := "rtmp://" + b.RTMPAddr().String() + "/" + path + "?key=" + relayKey
	if ok, out := readRTMP(t, rtmpURL); !ok {
		t.Errorf("RTMP play on B got no H.264: %s", out)
	}
	if ok, out := readSRT(t, b, "read:"+path+"?key="+relayKey); !ok {
		t.Errorf("SRT read on B got no H.264: %s", out)
	}

	onC := []*viewer{first}
	var onB []*viewer
	for range 9 {
		onC = append(onC, watch(t, c, path, key))
	}
	for range 10 {
		onB = append(onB, watch(t, b, path, key))
	}
	for _, v := range append(onC, onB...) {
		v.waitFrames(t, len(v.frames())+30, 30*time.Second)
	}
	if n := relaysOut(t, a); n != 2 {
		t.Errorf("A serves %v relays to the twenty viewers on B and C, want 2", n)
	}
	if in := []int{b.relays.Stats().In, c.relays.Stats().In}; in[0] != 1 || in[1] != 1 {
		t.Errorf("relays in: B %d, C %d; want one each", in[0], in[1])
	}

	// The publisher moves from A to B within the grace.
	stopA()
	waitFor(t, 10*ownerHeartbeat, "A's claim in grace", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		cl, ok, err := b.cluster.Owner(ctx, path)
		return err == nil && ok && cl.State == cluster.PublisherGrace
	})
	counts := map[*viewer]int{}
	for _, v := range append(onC, onB...) {
		counts[v] = len(v.frames())
	}
	moved := time.Now()
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/"+path)
	waitFor(t, 10*ownerHeartbeat+5*time.Second, "B's claim", func() bool { return ownerOf(c, path) == "b" })
	for i, v := range append(onC, onB...) {
		v.waitFrames(t, counts[v]+60, 30*time.Second)
		if i == 0 {
			t.Logf("takeover: C's viewer got B's first frame %v after B's publisher started", v.frames()[counts[v]].at.Sub(moved).Round(time.Millisecond))
		}
	}
	waitSample(t, "http://"+a.HTTPAddr().String()+"/metrics", "", `bridge_relays{direction="out"}`, 0)
	if st, ok := b.registry.Get(path); !ok || st.PublisherKind() != access.KindRTMP {
		t.Error("B's stream is not its RTMP publisher's")
	}
	if n := c.relays.Stats().In; n != 1 {
		t.Errorf("C runs %d relays after the move, want 1 (from B)", n)
	}
	if n := relaysOut(t, b); n < 1 {
		t.Errorf("B serves %v relays, want C's", n)
	}
}
