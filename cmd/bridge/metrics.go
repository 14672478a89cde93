package main

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wishbridge/bridge/config"
	ingestsrt "github.com/wishbridge/bridge/ingest/srt"
	"github.com/wishbridge/bridge/metrics"
	"github.com/wishbridge/bridge/rtc"
)

// newMetrics builds the collectors over b's state. They read it at scrape
// time only, so a bridge whose endpoint is off pays nothing for them; they
// are built either way so that Metrics().Register always has a registry.
func (b *Bridge) newMetrics() (*metrics.Metrics, error) {
	m, err := metrics.New(metrics.Sources{
		Streams:        b.metricStreams,
		WebRTCSessions: b.sessions.Len,
		Forwards:       b.fwd.runners,
		Pulls:          b.pull.runners,
		UDP: func() metrics.UDPStats {
			st := b.engine.UDPStats()
			return metrics.UDPStats{Sent: st.Sent, Batches: st.Batches, Dropped: st.Dropped, GSO: st.GSOSends}
		},
	}, b.log)
	if err != nil {
		return nil, err
	}
	for _, c := range []prometheus.Collector{b.sendDelay, b.batchWait} {
		if err := m.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// serveMetrics adds the metrics endpoint to mux, after every other route,
// so a path the bridge already serves is refused instead of shadowing it.
func (b *Bridge) serveMetrics(mux *http.ServeMux, m config.Metrics) error {
	path := m.MetricsPath()
	probe, err := http.NewRequest(http.MethodGet, path, nil)
	if err != nil {
		return fmt.Errorf("metrics.path %q: %w", path, err)
	}
	if _, pattern := mux.Handler(probe); pattern != "" {
		return fmt.Errorf("metrics.path %q is already served by the bridge (%q); expected a path of its own, such as %q",
			path, pattern, config.DefaultMetricsPath)
	}
	mux.Handle("GET "+path, b.metricsAuth(b.metrics.Handler()))
	b.log.Info("metrics served", "path", path, "token", m.Token != "")
	return nil
}

// metricsAuth lets a request through to h only with the bearer token of
// the current config's metrics section (if it has one), so a reload
// changes the token for the next scrape.
func (b *Bridge) metricsAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := b.cfg.Load().Metrics.Token
		if want == "" {
			h.ServeHTTP(w, r)
			return
		}
		switch got := rtc.BearerToken(r); {
		case got == "":
			b.log.Warn("metrics scrape refused: no bearer token", "peer", r.RemoteAddr)
			rtc.WriteError(w, rtc.Errorf(http.StatusUnauthorized, "metrics need a bearer token (Authorization: Bearer ...)"))
		case !secretEqual(got, want):
			b.log.Warn("metrics scrape refused: wrong bearer token", "peer", r.RemoteAddr)
			rtc.WriteError(w, rtc.Errorf(http.StatusUnauthorized, "wrong bearer token"))
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// Metrics returns the bridge's metrics registry, to register collectors
// of other parts (e.g. a histogram the media path observes). It exists
// whether or not the config serves it.
func (b *Bridge) Metrics() *metrics.Metrics { return b.metrics }

// metricStreams lists the hub's streams with their readers, ingest and,
// for SRT, connection statistics.
func (b *Bridge) metricStreams() []metrics.Stream {
	paths := b.registry.Paths()
	out := make([]metrics.Stream, 0, len(paths))
	for _, path := range paths {
		st, ok := b.registry.Get(path)
		if !ok {
			continue // ended since Paths
		}
		s := metrics.Stream{Path: path, Readers: st.Readers()}
		srtStats, isSRT := b.srtSrv.Stats(path)
		if !isSRT {
			srtStats, isSRT = b.pull.srtStats(path)
		}
		if isSRT {
			s.SRT = &metrics.SRTStats{
				Since:                srtStats.Since,
				RTT:                  srtStats.RTT,
				PacketsReceived:      srtStats.PacketsReceived,
				PacketsLost:          srtStats.PacketsLost,
				PacketsRetransmitted: srtStats.PacketsRetransmitted,
				PacketsDropped:       srtStats.PacketsDropped,
				BytesReceived:        srtStats.BytesReceived,
				DemuxErrors:          srtStats.DemuxErrors,
			}
		}
		s.Ingest = ingestOf(st.Publisher())
		out = append(out, s)
	}
	return out
}

// ingestOf names how a stream arrives from the description its publisher
// gave the hub, which every ingest starts with its kind ("rtmp 1.2.3.4:5",
// "srt pull srt://...", "whip ..."); it stays while the stream waits out
// its grace.
func ingestOf(publisher string) string {
	for _, p := range []struct{ prefix, kind string }{
		{"whip ", "whip"},
		{"srt pull ", "srt_pull"},
		{"rtmp pull ", "rtmp_pull"},
		{"whep pull ", "whep_pull"},
		{"srt ", "srt"},
		{"rtmp ", "rtmp"},
	} {
		if strings.HasPrefix(publisher, p.prefix) {
			return p.kind
		}
	}
	return "unknown"
}

// srtStats returns the statistics of the SRT connection pulling path, if
// one is up.
func (p *pulls) srtStats(path string) (ingestsrt.Stats, bool) {
	p.mu.Lock()
	run := p.running[path]
	p.mu.Unlock()
	if run == nil || run.srt == nil {
		return ingestsrt.Stats{}, false
	}
	return run.srt.Stats()
}

// runners lists the running pullers.
func (p *pulls) runners() []metrics.Runner {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]metrics.Runner, 0, len(p.running))
	for path, run := range p.running {
		out = append(out, metrics.Runner{Path: path, Kind: run.kind})
	}
	return out
}

// runners lists the running forward runners, as of the manager's last scan.
func (f *forwards) runners() []metrics.Runner {
	if l := f.live.Load(); l != nil {
		return *l
	}
	return nil
}
