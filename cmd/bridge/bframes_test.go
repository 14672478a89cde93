package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/transcode"
)

// TestBFramesReencoded: OBS's default x264 settings (High profile with
// B-frames) reach a WHEP viewer re-encoded: Constrained Baseline, no B
// slices, at the source's frame rate; RTMP/SRT readers would still get the
// original. A route with "bframes: reject" refuses viewers and says how to
// fix the encoder.
func TestBFramesReencoded(t *testing.T) {
	if !transcode.CanReencodeVideo() {
		t.Fatal("this build cannot re-encode video: build with cgo against FFmpeg with libx264 (apt-get install libavcodec-dev)")
	}
	cfg := config.Default()
	cfg.Routes = append([]config.Route{{Path: "strict/{name}", BFrames: config.BFramesReject}}, cfg.Routes...)
	b := startBridge(t, cfg)
	rtmpBase := "rtmp://" + b.RTMPAddr().String()
	publish(t, "h264-bframes-aac.flv", rtmpBase+"/live/b")
	publish(t, "h264-bframes-aac.flv", rtmpBase+"/strict/b")
	waitStream(t, b, "live/b")
	waitStream(t, b, "strict/b")

	v := watch(t, b, "live/b", nil)
	aus := v.waitFrames(t, 120, 20*time.Second)
	var sps h264.SPS
	if err := sps.Unmarshal(aus[0].nalus[0]); err != nil {
		t.Fatalf("first frame's SPS: %v", err)
	}
	if sps.ProfileIdc != 66 || sps.Width() != 640 || sps.Height() != 360 {
		t.Errorf("SPS: profile %d, %dx%d; want Baseline (66) 640x360", sps.ProfileIdc, sps.Width(), sps.Height())
	}
	for i, au := range aus {
		for _, n := range au.nalus {
			if transcode.SliceType(n) == transcode.SliceB {
				t.Fatalf("frame %d has a B slice", i)
			}
		}
		if i > 0 && int32(au.ts-aus[i-1].ts) < 0 {
			t.Fatalf("frame %d: RTP timestamp goes back (%d -> %d): frames out of order", i, aus[i-1].ts, au.ts)
		}
	}

	_, offer := newOffer(t, newViewerAPI(t))
	resp := post(t, "http://"+b.HTTPAddr().String()+"/whep/strict/b", "application/sdp", offer, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotAcceptable || !strings.Contains(string(body), "bframes=0") {
		t.Errorf("bframes: reject route: %d %q, want 406 saying how to set the encoder", resp.StatusCode, body)
	}
}
