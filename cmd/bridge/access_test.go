package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
)

// referencePrivateRoute is the "private/{name}" route of the reference
// config.yaml, as a user who copied it gets it: publish_key and the
// whep.token the file has always shown.
func referencePrivateRoute(t *testing.T) config.Route {
	t.Helper()
	cfg, err := config.Load(filepath.Join("..", "..", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r, ok := cfg.Match("private/cam")
	if !ok || r.Path != "private/{name}" {
		t.Fatalf("config.yaml has no private/{name} route (got %+v)", r)
	}
	return *r
}

// readRTMP plays url with ffmpeg for a second and reports whether it got
// media.
func readRTMP(t *testing.T, url string) (ok bool, out string) {
	t.Helper()
	return readWithFFmpeg(t, "-i", url)
}

// readSRT reads the SRT stream with streamid sid for a second.
func readSRT(t *testing.T, b *Bridge, sid string) (ok bool, out string) {
	t.Helper()
	return readWithFFmpeg(t, "-i", fmt.Sprintf("srt://%s?streamid=%s", b.SRTAddr(), sid))
}

func readWithFFmpeg(t *testing.T, in ...string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := append([]string{"-hide_banner", "-loglevel", "error"}, in...)
	dst := filepath.Join(t.TempDir(), "out.ts")
	args = append(args, "-t", "1", "-c", "copy", "-f", "mpegts", "-y", dst)
	out, err := exec.CommandContext(ctx, needFFmpeg(t), args...).CombinedOutput()
	return err == nil && strings.Contains(probe(t, dst), "codec_name=h264"), string(out)
}

// TestPrivateRouteOnEveryReadProtocol: the reference config's private
// route, unedited, needs its key on WHEP, RTMP play and SRT read alike,
// and is never listed on the index page or in tokenless metrics.
func TestPrivateRouteOnEveryReadProtocol(t *testing.T) {
	private := referencePrivateRoute(t)
	if private.ReadKey != "s3cret-viewer-token" {
		t.Fatalf("reference private route: read_key %q, want whep.token's value", private.ReadKey)
	}
	cfg := config.Default()
	cfg.Metrics.Enabled = true
	whepOnly := config.Route{Path: "whep-only/{name}", Read: []string{config.ReadWHEP}}
	cfg.Routes = append([]config.Route{private, whepOnly}, cfg.Routes...)
	b := startBridge(t, cfg)
	rtmpBase := "rtmp://" + b.RTMPAddr().String()
	publish(t, "h264-aac.flv", rtmpBase+"/private/cam?key=s3cret-publish-key")
	publish(t, "h264-aac.flv", rtmpBase+"/live/open")
	publish(t, "h264-aac.flv", rtmpBase+"/whep-only/cam")
	waitStream(t, b, "private/cam")
	waitStream(t, b, "live/open")
	waitStream(t, b, "whep-only/cam")

	t.Run("RTMP play", func(t *testing.T) {
		if ok, out := readRTMP(t, rtmpBase+"/private/cam"); ok {
			t.Errorf("RTMP play without the key got media: %s", out)
		}
		if ok, out := readRTMP(t, rtmpBase+"/private/cam?key=wrong"); ok {
			t.Errorf("RTMP play with a wrong key got media: %s", out)
		}
		if ok, out := readRTMP(t, rtmpBase+"/private/cam?key=s3cret-viewer-token"); !ok {
			t.Errorf("RTMP play with the key got no media: %s", out)
		}
		if ok, out := readRTMP(t, rtmpBase+"/whep-only/cam"); ok {
			t.Errorf("RTMP play of a route with read: [whep] got media: %s", out)
		}
	})
	t.Run("SRT read", func(t *testing.T) {
		if ok, out := readSRT(t, b, "read:private/cam"); ok {
			t.Errorf("SRT read without the key got media: %s", out)
		}
		if ok, out := readSRT(t, b, "read:private/cam?key=s3cret-viewer-token"); !ok {
			t.Errorf("SRT read with the key got no media: %s", out)
		}
		if ok, out := readSRT(t, b, "read:whep-only/cam"); ok {
			t.Errorf("SRT read of a route with read: [whep] got media: %s", out)
		}
	})
	t.Run("WHEP", func(t *testing.T) {
		_, offer := newOffer(t, newViewerAPI(t))
		resp := post(t, "http://"+b.HTTPAddr().String()+"/whep/private/cam", "application/sdp", offer, nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("WHEP without the token: %d, want 401", resp.StatusCode)
		}
		watch(t, b, "private/cam", map[string]string{"Authorization": "Bearer s3cret-viewer-token"}).waitFrames(t, 5, 10*time.Second)
	})
	t.Run("index page", func(t *testing.T) {
		resp, err := http.Get("http://" + b.HTTPAddr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "live/open") {
			t.Errorf("index does not list the public stream live/open")
		}
		if strings.Contains(string(body), "private/cam") {
			t.Errorf("index lists the private stream private/cam")
		}
	})
	t.Run("metrics", func(t *testing.T) {
		url := "http://" + b.HTTPAddr().String() + "/metrics"
		_, _, body := getMetrics(t, url, "")
		if strings.Contains(body, "private/cam") {
			t.Errorf("tokenless metrics name the private stream")
		}
		if v, ok := sampleValue(body, `bridge_stream_published{ingest="rtmp",path="(private)"}`); !ok || v != 1 {
			t.Errorf("tokenless metrics: private streams summed = %v (found %t), want 1", v, ok)
		}
		if _, ok := sampleValue(body, `bridge_stream_published{ingest="rtmp",path="live/open"}`); !ok {
			t.Errorf("tokenless metrics do not show the public stream")
		}
		next := *b.node.Config()
		next.Metrics.Token = "s3cret-metrics-token"
		b.Reload(&next)
		_, _, body = getMetrics(t, url, "Bearer s3cret-metrics-token")
		if _, ok := sampleValue(body, `bridge_stream_published{ingest="rtmp",path="private/cam"}`); !ok {
			t.Errorf("metrics with the token do not show private/cam")
		}
	})
}
