package main

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/connlimit"
	"github.com/wishbridge/bridge/metrics"
)

// newMetrics builds the collectors over b's state. They read it at scrape
// time only, so a bridge whose endpoint is off pays nothing for them; they
// are built either way so that Metrics().Register always has a registry.
// With showPrivate false, the paths of private routes (node.Policy.Private)
// are summed under metrics.PrivatePath: that view is served to scrapes
// without the metrics token.
func (b *Bridge) newMetrics(showPrivate bool) (*metrics.Metrics, error) {
	label := func(path string) string { return path }
	if !showPrivate {
		label = func(path string) string {
			if b.node.Policy(path).Private {
				return metrics.PrivatePath
			}
			return path
		}
	}
	relabel := func(rs []metrics.Runner) []metrics.Runner {
		out := make([]metrics.Runner, len(rs)) // rs may be the node's snapshot
		for i, r := range rs {
			out[i] = metrics.Runner{Path: label(r.Path), Kind: r.Kind}
		}
		return out
	}
	m, err := metrics.New(metrics.Sources{
		Streams: func() []metrics.Stream {
			ss := b.node.Streams()
			for i := range ss {
				ss[i].Path = label(ss[i].Path)
			}
			return ss
		},
		Forwards:       func() []metrics.Runner { return relabel(b.node.Forwards()) },
		Pulls:          func() []metrics.Runner { return relabel(b.node.Pulls()) },
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
	relays := metrics.NewRelays(func() metrics.RelayStats {
		st := b.relays.Stats()
		return metrics.RelayStats{In: st.In, Out: st.Out, BytesIn: st.BytesIn, BytesOut: st.BytesOut}
	})
	collectors := []prometheus.Collector{b.sendDelay, b.batchWait, metrics.NewTLSCerts(b.certExpiries), relays}
	if b.cluster != nil {
		collectors = append(collectors, b.cluster.Metrics()) // bridge_cluster_*
	}
	for _, c := range collectors {
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
	mux.Handle("GET "+path, b.node.MetricsHandler(b.metrics.Handler(), b.publicMetrics.Handler()))
	b.log.Info("metrics served", "path", path, "token", m.Token != "")
	return nil
}

// certExpiries lists the served TLS certificates' expiry by domain (none
// without TLS), for bridge_tls_certificate_expiry_seconds.
func (b *Bridge) certExpiries() []metrics.CertExpiry {
	var out []metrics.CertExpiry
	for _, e := range b.certs.Expiries() {
		out = append(out, metrics.CertExpiry{Domain: e.Domain, NotAfter: e.NotAfter})
	}
	return out
}

// Metrics returns the bridge's metrics registry, to register collectors
// of other parts (e.g. a histogram the media path observes). It exists
// whether or not the config serves it.
func (b *Bridge) Metrics() *metrics.Metrics { return b.metrics }

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
