// Package metrics exposes the bridge's state in the Prometheus text format.
//
// The bridge_ metrics are read from the running bridge when Prometheus
// scrapes, by collectors that call the functions in Sources. Nothing is
// counted on the media path for them, so a bridge nobody scrapes pays
// nothing, and the numbers cannot drift from the state they describe.
// The Go runtime (go_*) and process (process_*) collectors come with them.
//
// Labels are per stream path (path), never per session or peer, so the
// number of series follows the number of live streams and configured
// outbound runners and goes away with them.
//
// Everything lives on a Registry of its own, not Prometheus's global
// default, so two bridges in one process (tests) each serve their own.
package metrics

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wishbridge/bridge/internal/panics"
)

// Sources are the read-only views the collectors call at each scrape. A nil
// field leaves its metrics out. Every function must be safe for concurrent
// use and quick: it runs on the scraping request's goroutine, and scrapes
// can overlap.
type Sources struct {
	// Streams lists the streams in the hub, at most one per path.
	Streams func() []Stream
	// WebRTCSessions counts the WHIP and WHEP session resources (one per
	// WHIP publisher or WHEP viewer, including those being negotiated).
	WebRTCSessions func() int
	// Forwards lists the running forward runners: one per (stream path,
	// target), so a path forwarding to two RTMP platforms appears twice.
	Forwards func() []Runner
	// Pulls lists the running pullers, one per pulled path.
	Pulls func() []Runner
	// UDP returns the send counters of the WebRTC UDP socket.
	UDP func() UDPStats
	// Refusals lists the clients refused so far, by protocol and reason.
	Refusals func() []Refusal
}

// Refusal counts what one limit refused or dropped since start: clients,
// requests, candidates, packets. Protocol is "rtmp", "srt" or "webrtc"
// (WHIP and WHEP share their limits); Reason is the limits.* config key
// of the limit ("webrtc_pending_per_address", "ice_candidates", ...).
type Refusal struct {
	Protocol, Reason string
	N                uint64
}

// UDPStats are the send counters of the WebRTC UDP socket since start.
type UDPStats struct {
	Sent    uint64 // packets the kernel accepted
	Batches uint64 // send syscalls (sendmmsg) that sent something
	Dropped uint64 // packets the kernel refused (bad or unreachable destination)
	GSO     uint64 // messages that carried several packets (UDP GSO)
}

// Runner is one outbound worker: a forward pushing Path to a target, or a
// puller fetching Path from a source. Kind is the protocol ("rtmp",
// "srt", "whip", "whep"); "" is reported as "unknown".
type Runner struct {
	Path string
	Kind string
}

// Metrics is the bridge's Prometheus registry and the handler serving it.
// Create it with New; the zero value is not usable.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler
}

// scrapeTimeout bounds one scrape. The collectors only read in-memory
// state, so this only trips when something holds a lock it should not.
const scrapeTimeout = 10 * time.Second

// maxScrapes is how many scrapes may run at once; more get 503. One or
// two Prometheus servers need one each.
const maxScrapes = 4

// New builds the registry with the Go runtime, process and build info
// collectors and the bridge_ collectors of src. Errors from collecting
// and serving are logged to log (slog.Default if nil), and a scrape
// serves whatever could be collected.
func New(src Sources, log *slog.Logger) (*Metrics, error) {
	if log == nil {
		log = slog.Default()
	}
	reg := prometheus.NewRegistry()
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newBuildInfo(),
	}
	if src.Streams != nil {
		cs = append(cs, newStreamCollector(src.Streams))
	}
	if src.WebRTCSessions != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bridge_webrtc_sessions",
			Help: "WHIP and WHEP sessions (one per WebRTC publisher or viewer, including those being negotiated).",
		}, func() float64 { return float64(src.WebRTCSessions()) }))
	}
	if src.Forwards != nil {
		cs = append(cs, newRunnerCollector("bridge_forwards",
			"Forward runners (connected or reconnecting) pushing the stream at path to a target of kind (rtmp, srt, whip).", src.Forwards))
	}
	if src.Pulls != nil {
		cs = append(cs, newRunnerCollector("bridge_pulls",
			"Pullers (connected or reconnecting) fetching the stream at path from a source of kind (rtmp, srt, whep).", src.Pulls))
	}
	cs = append(cs, &panicCollector{desc: prometheus.NewDesc("bridge_panics_total",
		"Panics recovered by the bridge's panic boundary, by component: each ended one session, connection or processor, and the process went on.",
		[]string{"component"}, nil)})
	if src.Refusals != nil {
		cs = append(cs, &refusalCollector{desc: prometheus.NewDesc("bridge_refused_total",
			"What the limits refused or dropped (clients, requests, ICE candidates, connectivity checks), by protocol and reason, the limits.* config key.", []string{"protocol", "reason"}, nil), list: src.Refusals})
	}
	if src.UDP != nil {
		for _, c := range []struct {
			name, help string
			value      func(UDPStats) uint64
		}{
			{"bridge_udp_packets_sent_total", "Packets sent on the WebRTC UDP socket.", func(s UDPStats) uint64 { return s.Sent }},
			{"bridge_udp_send_batches_total", "Send syscalls on the WebRTC UDP socket; packets sent / batches is the mean batch size.", func(s UDPStats) uint64 { return s.Batches }},
			{"bridge_udp_packets_dropped_total", "Packets the kernel refused to send on the WebRTC UDP socket (bad or unreachable destination).", func(s UDPStats) uint64 { return s.Dropped }},
			{"bridge_udp_gso_sends_total", "Messages on the WebRTC UDP socket that carried several packets to one peer (UDP GSO: a frame's run of equal-sized packets).", func(s UDPStats) uint64 { return s.GSO }},
		} {
			cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help},
				func() float64 { return float64(c.value(src.UDP())) }))
		}
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register collector: %w", err)
		}
	}
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.With("component", "metrics").Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg,
		MaxRequestsInFlight: maxScrapes,
		Timeout:             scrapeTimeout,
	})
	return &Metrics{reg: reg, handler: promhttp.InstrumentMetricHandler(reg, h)}, nil
}

// Register adds a collector, e.g. a histogram filled by the media path.
// Its metric names should start with "bridge_". Observing a classic
// histogram or adding to a counter is a few atomic operations when the
// caller holds the metric (not WithLabelValues per call), so either may be
// updated per packet; anything more expensive belongs in a collector that
// reads its state at scrape time, like the ones New adds. It fails if c
// describes a metric already registered (the error wraps
// prometheus.AlreadyRegisteredError for the same metric).
func (m *Metrics) Register(c prometheus.Collector) error {
	if err := m.reg.Register(c); err != nil {
		return fmt.Errorf("metrics: register collector: %w", err)
	}
	return nil
}

// Handler serves the registry in the Prometheus text format (or
// OpenMetrics, or compressed, as the scraper asks). It does no
// authentication: the caller wraps it.
func (m *Metrics) Handler() http.Handler { return m.handler }

// newBuildInfo reports bridge_build_info 1 with the module version, VCS
// revision and Go version the binary was built from.
func newBuildInfo() prometheus.Collector {
	version, revision := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		var modified bool
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && s.Value != "":
				revision = s.Value
			case s.Key == "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && revision != "unknown" {
			revision += "-dirty"
		}
	}
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "bridge_build_info",
		Help:        "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "go_version": runtime.Version()},
	}, func() float64 { return 1 })
}

// runnerCollector counts a source's outbound runners per (path, kind).
type runnerCollector struct {
	desc *prometheus.Desc
	list func() []Runner
}

func newRunnerCollector(name, help string, list func() []Runner) *runnerCollector {
	return &runnerCollector{desc: prometheus.NewDesc(name, help, []string{"path", "kind"}, nil), list: list}
}

func (c *runnerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *runnerCollector) Collect(ch chan<- prometheus.Metric) {
	// Several runners may share a (path, kind); one series each would be
	// a duplicate, which fails the scrape.
	counts := map[Runner]int{}
	for _, r := range c.list() {
		counts[Runner{Path: labelValue(r.Path), Kind: labelValue(r.Kind)}]++
	}
	for r, n := range counts {
		constMetric(ch, c.desc, prometheus.GaugeValue, float64(n), r.Path, r.Kind)
	}
}

// labelValue makes s a valid label value: Prometheus needs UTF-8, and a
// stream path is whatever the publisher sent. "" becomes "unknown", so a
// series never has an empty label that PromQL cannot tell from a missing one.
func labelValue(s string) string {
	if s == "" {
		return "unknown"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// constMetric sends one sample, or, if it cannot be made, an invalid metric
// that the registry reports as a scrape error (the other samples are still
// served).
func constMetric(ch chan<- prometheus.Metric, desc *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(desc, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(desc, err)
	}
	ch <- m
}

// panicCollector reports internal/panics' counts.
type panicCollector struct{ desc *prometheus.Desc }

func (c *panicCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *panicCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range panics.Counts() {
		constMetric(ch, c.desc, prometheus.CounterValue, float64(p.N), p.Component)
	}
}

// refusalCollector reports Sources.Refusals, summing repeats of a label
// pair (two sources may count the same protocol and reason).
type refusalCollector struct {
	desc *prometheus.Desc
	list func() []Refusal
}

func (c *refusalCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *refusalCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ protocol, reason string }
	sums := map[key]uint64{}
	var order []key
	for _, r := range c.list() {
		k := key{r.Protocol, r.Reason}
		if _, ok := sums[k]; !ok {
			order = append(order, k)
		}
		sums[k] += r.N
	}
	for _, k := range order {
		constMetric(ch, c.desc, prometheus.CounterValue, float64(sums[k]), k.protocol, k.reason)
	}
}
