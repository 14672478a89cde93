package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// getMetrics GETs url with an Authorization header (none if auth is "")
// and returns the status, the WWW-Authenticate header and the body.
func getMetrics(t *testing.T, url, auth string) (status int, challenge, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(b)
}

// sampleValue finds series, a metric name with its labels as the text
// format writes them (sorted by name: `m{a="1",b="2"}`), in a scrape.
func sampleValue(body, series string) (float64, bool) {
	for line := range strings.SplitSeq(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// waitSample scrapes until series has the value want (absent counts as
// absent, not 0), and fails the test after 10 s.
func waitSample(t *testing.T, url, auth, series string, want float64) {
	t.Helper()
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var status int
		status, _, body = getMetrics(t, url, auth)
		if status != http.StatusOK {
			t.Fatalf("scrape: %d %s", status, body)
		}
		if v, ok := sampleValue(body, series); ok && v == want {
			return
		}
	}
	v, ok := sampleValue(body, series)
	t.Fatalf("%s = %v (present %t), want %v; last scrape:\n%s", series, v, ok, want, body)
}

// TestMetrics: with metrics on and a token, /metrics refuses scrapers
// without the right token, lists an RTMP and an SRT stream under their
// paths with their ingest, counts a WHEP viewer in the stream's readers
// and the WebRTC sessions while it watches, shows the SRT connection's
// counters, and takes a new token on reload.
func TestMetrics(t *testing.T) {
	cfg := config.Default()
	cfg.Metrics = config.Metrics{Enabled: true, Token: "scrape-t0ken"}
	b := startBridge(t, cfg)
	url := "http://" + b.HTTPAddr().String() + config.DefaultMetricsPath
	const auth = "Bearer scrape-t0ken"

	for _, bad := range []string{"", "Bearer wrong-token", "Bearer scrape-t0ke", "Basic c2NyYXBlLXQwa2Vu"} {
		status, challenge, body := getMetrics(t, url, bad)
		if status != http.StatusUnauthorized || !strings.HasPrefix(challenge, "Bearer") {
			t.Errorf("Authorization %q: %d, WWW-Authenticate %q; want 401 with a Bearer challenge", bad, status, challenge)
		}
		if strings.Contains(body, "scrape-t0ken") || strings.Contains(body, "bridge_") {
			t.Errorf("Authorization %q: the refusal shows the token or metrics: %s", bad, body)
		}
	}

	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/metrics")
	publishSRT(t, b, "h264-aac.ts", "publish:live/metrics-srt", "")
	waitStream(t, b, "live/metrics")
	waitStream(t, b, "live/metrics-srt")

	status, _, body := getMetrics(t, url, auth)
	if status != http.StatusOK {
		t.Fatalf("scrape with the token: %d %s", status, body)
	}
	for _, want := range []struct {
		series string
		value  float64
	}{
		{`bridge_stream_published{ingest="rtmp",path="live/metrics"}`, 1},
		{`bridge_stream_published{ingest="srt",path="live/metrics-srt"}`, 1},
		{`bridge_stream_readers{path="live/metrics"}`, 0},
		{`bridge_webrtc_sessions`, 0},
	} {
		if v, ok := sampleValue(body, want.series); !ok || v != want.value {
			t.Errorf("%s = %v (present %t), want %v", want.series, v, ok, want.value)
		}
	}
	for _, series := range []string{`bridge_srt_ingest_packets_received_total{path="live/metrics-srt"}`,
		`bridge_srt_ingest_bytes_received_total{path="live/metrics-srt"}`} {
		if v, ok := sampleValue(body, series); !ok || v <= 0 {
			t.Errorf("%s = %v (present %t), want > 0", series, v, ok)
		}
	}
	if _, ok := sampleValue(body, `bridge_srt_ingest_packets_received_total{path="live/metrics"}`); ok {
		t.Error("the RTMP stream has SRT statistics")
	}
	for _, want := range []string{"\ngo_goroutines ", "\nbridge_build_info{"} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape has no %q", strings.TrimSpace(want))
		}
	}

	// A viewer is a reader of its stream and a WebRTC session while it
	// watches, and neither once it has left.
	v := watch(t, b, "live/metrics", nil)
	v.waitFrames(t, 1, 15*time.Second)
	waitSample(t, url, auth, `bridge_stream_readers{path="live/metrics"}`, 1)
	waitSample(t, url, auth, `bridge_webrtc_sessions`, 1)
	// Every live unit sent to the viewer is in the send-delay histogram:
	// once the viewer has 60 frames (2 s, more than the cached GOP's
	// frames), video and audio have observations.
	v.waitFrames(t, 60, 15*time.Second)
	_, _, body = getMetrics(t, url, auth)
	for _, kind := range []string{"video", "audio"} {
		n, _ := sampleValue(body, `bridge_whep_send_delay_seconds_count{kind="`+kind+`"}`)
		sum, _ := sampleValue(body, `bridge_whep_send_delay_seconds_sum{kind="`+kind+`"}`)
		if n < 10 || sum <= 0 {
			t.Errorf("send delay histogram for %s: %v units, sum %v s; want at least 10 units sent after the cached GOP", kind, n, sum)
		}
	}
	// Those packets left the UDP socket in counted batches.
	sent, _ := sampleValue(body, "bridge_udp_packets_sent_total")
	batches, _ := sampleValue(body, "bridge_udp_send_batches_total")
	waits, _ := sampleValue(body, "bridge_udp_batch_wait_seconds_count")
	if sent < 60 || batches < 1 || batches > sent || waits < 1 {
		t.Errorf("UDP sends: %v packets in %v batches, %v batch waits observed; want at least the 60 frames' packets", sent, batches, waits)
	}
	req, _ := http.NewRequest(http.MethodDelete, v.location, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitSample(t, url, auth, `bridge_stream_readers{path="live/metrics"}`, 0)
	waitSample(t, url, auth, `bridge_webrtc_sessions`, 0)

	// A reloaded token applies to the next scrape; turning metrics off
	// needs a restart, so they stay served.
	next := config.Default()
	next.Listen = b.node.Config().Listen
	next.Metrics = config.Metrics{Enabled: false, Token: "second-t0ken"}
	b.Reload(next)
	if status, _, _ := getMetrics(t, url, auth); status != http.StatusUnauthorized {
		t.Errorf("old token after reload: %d, want 401", status)
	}
	if status, _, _ := getMetrics(t, url, "Bearer second-t0ken"); status != http.StatusOK {
		t.Errorf("new token after reload: %d, want 200", status)
	}
}

// TestMetricsOff: the embedded defaults serve no metrics, and a metrics
// path the bridge already serves stops it at start.
func TestMetricsOff(t *testing.T) {
	b := startBridge(t, nil)
	if status, _, body := getMetrics(t, "http://"+b.HTTPAddr().String()+"/metrics", ""); status != http.StatusNotFound {
		t.Errorf("GET /metrics with metrics off: %d %.200s, want 404", status, body)
	}
	if b.Metrics() == nil {
		t.Error("Metrics() is nil with metrics off; collectors could not be registered")
	}

	cfg := config.Default()
	cfg.Listen = config.Listen{HTTP: "127.0.0.1:0", RTMP: "127.0.0.1:0", SRT: "127.0.0.1:0", WebRTCUDP: "127.0.0.1:0"}
	cfg.Metrics = config.Metrics{Enabled: true, Path: "/watch/live/cam"}
	b2, err := Start(cfg, Options{IncludeLoopback: true}, testLog(t))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b2.Close(ctx)
		t.Fatal("Start served metrics at a path of the player pages")
	}
	if want := `metrics.path "/watch/live/cam" is already served by the bridge ("GET /watch/{path...}")`; !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want it to contain %s", err, want)
	}
}

// TestMetricsPullAndForward: a route that pulls over SRT and forwards to
// an RTMP target shows its puller, its forward runner (reconnecting: the
// target refuses), the stream's ingest as srt_pull and the pull
// connection's SRT counters.
func TestMetricsPullAndForward(t *testing.T) {
	srtPort := testkit.FreeUDPPort(t)
	serveSource(t, "-i", fixture(t, "h264-aac.ts"), "-c", "copy", "-f", "mpegts",
		fmt.Sprintf("srt://127.0.0.1:%d?mode=listener&pkt_size=1316", srtPort))
	cfg := config.Default()
	cfg.Metrics = config.Metrics{Enabled: true, Path: "/internal/metrics"}
	cfg.Routes = append([]config.Route{{
		Path:    "cams/srt",
		Pull:    fmt.Sprintf("srt://127.0.0.1:%d", srtPort),
		Forward: []config.Forward{{RTMP: fmt.Sprintf("rtmp://127.0.0.1:%d/live/nobody", testkit.FreeTCPPort(t))}},
	}}, cfg.Routes...)
	b := startBridge(t, cfg)
	url := "http://" + b.HTTPAddr().String() + "/internal/metrics"

	waitStream(t, b, "cams/srt")
	waitSample(t, url, "", `bridge_pulls{kind="srt",path="cams/srt"}`, 1)
	waitSample(t, url, "", `bridge_forwards{kind="rtmp",path="cams/srt"}`, 1)
	waitSample(t, url, "", `bridge_stream_published{ingest="srt_pull",path="cams/srt"}`, 1)
	_, _, body := getMetrics(t, url, "")
	if v, ok := sampleValue(body, `bridge_srt_ingest_packets_received_total{path="cams/srt"}`); !ok || v <= 0 {
		t.Errorf("pull connection's packets received = %v (present %t), want > 0", v, ok)
	}
}
