package main

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wishbridge/bridge/config"
	ingestsrt "github.com/wishbridge/bridge/ingest/srt"
	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/connlimit"
	"github.com/wishbridge/bridge/metrics"
	"github.com/wishbridge/bridge/rtc"
)

// newMetrics builds the collectors over b's state. They read it at scrape
// time only, so a bridge whose endpoint is off pays nothing for them; they
// are built either way so that Metrics().Register always has a registry.
// With showPrivate false, the paths of private routes (see isPrivate) are
// summed under metrics.PrivatePath: that view is served to scrapes
// without the metrics token.
func (b *Bridge) newMetrics(showPrivate bool) (*metrics.Metrics, error) {
	label := func(path string) string { return path }
	if !showPrivate {
		label = func(path string) string {
			if b.isPrivate(b.cfg.Load(), path) {
				return metrics.PrivatePath
			}
			return path
		}
	}
	m, err := metrics.New(metrics.Sources{
		Streams: func() []metrics.Stream {
			ss := b.metricStreams()
			for i := range ss {
				ss[i].Path = label(ss[i].Path)
			}
			return ss
		},
		Forwards:       func() []metrics.Runner { return relabel(b.fwd.runners(), label) },
		Pulls:          func() []metrics.Runner { return relabel(b.pull.runners(), label) },
		Refusals:       b.refusals,
		WebRTCSessions: b.sessions.Len,
		UDP: func() metrics.UDPStats {
			st := b.engine.UDPStats()
			return metrics.UDPStats{Sent: st.Sent, Batches: st.Batches, Dropped: st.Dropped, GSO: st.GSOSends}
		},
	}, b.log)
	if err != nil {
		return nil, err
	}
	// A collector may be in several registries: both views share these.
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
	mux.Handle("GET "+path, b.metricsAuth())
	b.log.Info("metrics served", "path", path, "token", m.Token != "")
	return nil
}

// metricsAuth serves the metrics: with a metrics token configured, only
// to scrapes that carry it (the current config's, so a reload changes it
// for the next scrape), and those see every path; without one, to anyone,
// with private paths summed under metrics.PrivatePath.
func (b *Bridge) metricsAuth() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := b.cfg.Load().Metrics.Token
		if want == "" {
			b.publicMetrics.Handler().ServeHTTP(w, r)
			return
		}
		switch got := rtc.BearerToken(r); {
		case got == "":
			b.refuseLog("metrics scrape refused: no bearer token", r.RemoteAddr)
			rtc.WriteError(w, rtc.Errorf(http.StatusUnauthorized, "metrics need a bearer token (Authorization: Bearer ...)"))
		case !secretEqual(got, want):
			b.refuseLog("metrics scrape refused: wrong bearer token", r.RemoteAddr)
			rtc.WriteError(w, rtc.Errorf(http.StatusUnauthorized, "wrong bearer token"))
		default:
			b.metrics.Handler().ServeHTTP(w, r)
		}
	})
}

// refuseLog logs a refusal once per peer address per interval.
func (b *Bridge) refuseLog(msg, peer string) {
	if ok, n := b.refusedLog.Allow(addrlimit.AddrOf(peer).String()); ok {
		b.log.Warn(msg, "peer", peer, "suppressed", n)
	}
}

// relabel maps the runners' paths through label.
func relabel(rs []metrics.Runner, label func(string) string) []metrics.Runner {
	out := make([]metrics.Runner, len(rs))
	for i, r := range rs {
		out[i] = metrics.Runner{Path: label(r.Path), Kind: r.Kind}
	}
	return out
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

// refusals gathers what every limit refused or dropped, by protocol and
// the limits.* key that did it.
func (b *Bridge) refusals() []metrics.Refusal {
	var out []metrics.Refusal
	for l, n := range b.sessions.Refused() {
		out = append(out, metrics.Refusal{Protocol: "webrtc", Reason: l.String(), N: n})
	}
	for proto, r := range map[string]connlimit.Refusals{"rtmp": b.rtmpSrv.Refusals(), "srt": b.srtSrv.Refusals()} {
		out = append(out,
			metrics.Refusal{Protocol: proto, Reason: proto + "_connections", N: r.ConnsTotal},
			metrics.Refusal{Protocol: proto, Reason: proto + "_connections_per_address", N: r.ConnsPerAddr},
			metrics.Refusal{Protocol: proto, Reason: "readers_per_stream", N: r.Readers},
			metrics.Refusal{Protocol: proto, Reason: "ingest_bitrate", N: r.Bitrate},
		)
	}
	ice := b.engine.ICEStats()
	out = append(out,
		metrics.Refusal{Protocol: "webrtc", Reason: "webrtc_connect_timeout", N: b.sessions.TimedOut()},
		metrics.Refusal{Protocol: "webrtc", Reason: "ice_candidates", N: ice.CandidatesDropped},
		metrics.Refusal{Protocol: "webrtc", Reason: "ice_check_rate", N: ice.ChecksDropped},
		metrics.Refusal{Protocol: "webrtc", Reason: "patch_rate", N: ice.PatchesRefused},
	)
	return out
}
