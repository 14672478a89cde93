package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeBridge is a Sources whose state the test changes between scrapes.
type fakeBridge struct {
	mu       sync.Mutex
	streams  []Stream
	sessions int
	forwards []Runner
	pulls    []Runner
}

func (f *fakeBridge) sources() Sources {
	return Sources{
		Streams: func() []Stream {
			f.mu.Lock()
			defer f.mu.Unlock()
			return append([]Stream(nil), f.streams...)
		},
		WebRTCSessions: func() int {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.sessions
		},
		Forwards: func() []Runner {
			f.mu.Lock()
			defer f.mu.Unlock()
			return append([]Runner(nil), f.forwards...)
		},
		Pulls: func() []Runner {
			f.mu.Lock()
			defer f.mu.Unlock()
			return append([]Runner(nil), f.pulls...)
		},
	}
}

func newMetrics(t *testing.T, src Sources) *Metrics {
	t.Helper()
	m, err := New(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// scrape GETs the handler like Prometheus does and returns the body.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type = %q, want the Prometheus text format", ct)
	}
	return string(body)
}

var bridgeNames = []string{
	"bridge_stream_published", "bridge_stream_readers", "bridge_webrtc_sessions", "bridge_forwards", "bridge_pulls",
	"bridge_srt_ingest_rtt_seconds", "bridge_srt_ingest_packets_received_total", "bridge_srt_ingest_packets_lost_total",
	"bridge_srt_ingest_packets_retransmitted_total", "bridge_srt_ingest_packets_dropped_total",
	"bridge_srt_ingest_bytes_received_total", "bridge_srt_ingest_demux_errors_total",
}

func TestCollect(t *testing.T) {
	f := &fakeBridge{
		streams: []Stream{
			{Path: "live/cam1", Ingest: "rtmp", Readers: 3},
			{Path: "live/srt", Ingest: "srt", Readers: 0, SRT: &SRTStats{
				Since: time.Now().Add(-time.Minute), RTT: 25 * time.Millisecond,
				PacketsReceived: 1000, PacketsLost: 7, PacketsRetransmitted: 5, PacketsDropped: 2,
				BytesReceived: 1_330_000, DemuxErrors: 1,
			}},
			{Path: "bad/\xff", Ingest: ""},
		},
		sessions: 4,
		// Two RTMP targets of one path are one series with value 2.
		forwards: []Runner{{Path: "live/cam1", Kind: "rtmp"}, {Path: "live/cam1", Kind: "rtmp"}, {Path: "live/cam1", Kind: "whip"}},
		pulls:    []Runner{{Path: "cams/lobby", Kind: "srt"}},
	}
	m := newMetrics(t, f.sources())
	want := `
# HELP bridge_forwards Forward runners (connected or reconnecting) pushing the stream at path to a target of kind (rtmp, srt, whip).
# TYPE bridge_forwards gauge
bridge_forwards{kind="rtmp",path="live/cam1"} 2
bridge_forwards{kind="whip",path="live/cam1"} 1
# HELP bridge_pulls Pullers (connected or reconnecting) fetching the stream at path from a source of kind (rtmp, srt, whep).
# TYPE bridge_pulls gauge
bridge_pulls{kind="srt",path="cams/lobby"} 1
# HELP bridge_srt_ingest_bytes_received_total Bytes received on the SRT connection publishing the stream, headers included. Since the connection started.
# TYPE bridge_srt_ingest_bytes_received_total counter
bridge_srt_ingest_bytes_received_total{path="live/srt"} 1.33e+06
# HELP bridge_srt_ingest_demux_errors_total MPEG-TS errors (continuity gaps, corrupt packets, unparsable PES) in the stream. Since the connection started.
# TYPE bridge_srt_ingest_demux_errors_total counter
bridge_srt_ingest_demux_errors_total{path="live/srt"} 1
# HELP bridge_srt_ingest_packets_dropped_total Data packets given up on, too late to be delivered within the latency. Since the connection started.
# TYPE bridge_srt_ingest_packets_dropped_total counter
bridge_srt_ingest_packets_dropped_total{path="live/srt"} 2
# HELP bridge_srt_ingest_packets_lost_total Data packets the receiver found missing (most are recovered by retransmission). Since the connection started.
# TYPE bridge_srt_ingest_packets_lost_total counter
bridge_srt_ingest_packets_lost_total{path="live/srt"} 7
# HELP bridge_srt_ingest_packets_received_total Data packets received on the SRT connection publishing the stream, retransmissions included. Since the connection started.
# TYPE bridge_srt_ingest_packets_received_total counter
bridge_srt_ingest_packets_received_total{path="live/srt"} 1000
# HELP bridge_srt_ingest_packets_retransmitted_total Retransmitted data packets received. Since the connection started.
# TYPE bridge_srt_ingest_packets_retransmitted_total counter
bridge_srt_ingest_packets_retransmitted_total{path="live/srt"} 5
# HELP bridge_srt_ingest_rtt_seconds Smoothed round-trip time of the SRT connection publishing the stream.
# TYPE bridge_srt_ingest_rtt_seconds gauge
bridge_srt_ingest_rtt_seconds{path="live/srt"} 0.025
# HELP bridge_stream_published 1 for each stream in the hub (publishing, or waiting for its publisher to come back within the route's grace); ingest is how it arrives. Under path="(private)", the number of streams whose paths this scrape may not see.
# TYPE bridge_stream_published gauge
bridge_stream_published{ingest="rtmp",path="live/cam1"} 1
bridge_stream_published{ingest="srt",path="live/srt"} 1
bridge_stream_published{ingest="unknown",path="bad/�"} 1
# HELP bridge_stream_readers Readers the hub feeds from the stream: WHEP viewers, RTMP and SRT readers, forward targets and shared transcoders.
# TYPE bridge_stream_readers gauge
bridge_stream_readers{path="bad/�"} 0
bridge_stream_readers{path="live/cam1"} 3
bridge_stream_readers{path="live/srt"} 0
# HELP bridge_webrtc_sessions WHIP and WHEP sessions (one per WebRTC publisher or viewer, including those being negotiated).
# TYPE bridge_webrtc_sessions gauge
bridge_webrtc_sessions 4
`
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want), bridgeNames...); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(m.reg, append(bridgeNames, "bridge_build_info")...)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	// The HTTP scrape has the bridge's, the runtime's and the process's
	// metrics, and counts itself.
	body := scrape(t, m.Handler())
	for _, want := range []string{
		`bridge_stream_readers{path="live/cam1"} 3`,
		`bridge_build_info{go_version="go`,
		"\ngo_goroutines ",
		"\nprocess_resident_memory_bytes ",
		`promhttp_metric_handler_requests_total{code="200"} 0`, // the current scrape is counted after it is served
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape has no %q:\n%s", want, body)
		}
	}
}

// TestCollectAtScrapeTime: every scrape reads the current state; streams
// that ended leave no series behind.
func TestCollectAtScrapeTime(t *testing.T) {
	f := &fakeBridge{streams: []Stream{{Path: "live/a", Ingest: "whip", Readers: 1}}, sessions: 1}
	m := newMetrics(t, f.sources())
	h := m.Handler()
	if body := scrape(t, h); !strings.Contains(body, `bridge_stream_readers{path="live/a"} 1`) ||
		!strings.Contains(body, "bridge_webrtc_sessions 1\n") {
		t.Fatalf("first scrape:\n%s", body)
	}

	f.mu.Lock()
	f.streams = []Stream{{Path: "live/b", Ingest: "rtmp", Readers: 5}}
	f.sessions = 0
	f.mu.Unlock()
	body := scrape(t, h)
	if strings.Contains(body, `path="live/a"`) {
		t.Errorf("ended stream live/a still scraped:\n%s", body)
	}
	for _, want := range []string{`bridge_stream_readers{path="live/b"} 5`, `bridge_stream_published{ingest="rtmp",path="live/b"} 1`,
		"bridge_webrtc_sessions 0\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("second scrape has no %q:\n%s", want, body)
		}
	}
}

// TestNilSources: a nil source leaves its metrics out; the runtime and
// build info are always there.
func TestNilSources(t *testing.T) {
	m := newMetrics(t, Sources{})
	if n, err := testutil.GatherAndCount(m.reg, bridgeNames...); err != nil || n != 0 {
		t.Errorf("got %d bridge samples (err %v), want none", n, err)
	}
	if n, err := testutil.GatherAndCount(m.reg, "bridge_build_info", "go_goroutines"); err != nil || n != 2 {
		t.Errorf("got %d build info and goroutine samples (err %v), want 2", n, err)
	}
}

func TestRegister(t *testing.T) {
	m := newMetrics(t, Sources{})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "bridge_test_delay_seconds",
		Help:    "A histogram registered after New.",
		Buckets: []float64{0.001, 0.01},
	})
	if err := m.Register(h); err != nil {
		t.Fatal(err)
	}
	h.Observe(0.005)
	if body := scrape(t, m.Handler()); !strings.Contains(body, `bridge_test_delay_seconds_bucket{le="0.01"} 1`) {
		t.Errorf("registered histogram not scraped:\n%s", body)
	}
	dup := prometheus.NewGauge(prometheus.GaugeOpts{Name: "bridge_test_delay_seconds", Help: "Other help."})
	if err := m.Register(dup); err == nil {
		t.Error("registering a second metric of the same name succeeded")
	}

	// Registries are per Metrics, not global: another one takes the same
	// names.
	other := newMetrics(t, Sources{})
	if err := other.Register(prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bridge_test_delay_seconds", Help: "x"})); err != nil {
		t.Errorf("second Metrics: %v", err)
	}
}
