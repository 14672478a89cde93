package metrics

import "github.com/prometheus/client_golang/prometheus"

// RelayStats are a node's node-to-node relays (package relay): running
// now, and the bytes of their streams since start, per direction ("in":
// pulled from the streams' owners; "out": served to edges).
type RelayStats struct {
	In, Out           int
	BytesIn, BytesOut uint64
}

// Relays is bridge_relays{direction} and bridge_relay_bytes_total{direction},
// read at scrape time from src; register it with Metrics.Register. Relays
// are counted apart from viewers: they are exempt from the per-address
// limits, and the origin's cost is one relay per stream per edge however
// many viewers each edge has.
type Relays struct {
	src          func() RelayStats
	relays, byts *prometheus.Desc
}

// NewRelays returns the collector over src, which must be safe for
// concurrent use and quick.
func NewRelays(src func() RelayStats) *Relays {
	return &Relays{src: src,
		relays: prometheus.NewDesc("bridge_relays",
			"Node-to-node relays running, by direction: in (pulled from the stream's owner), out (served to an edge).", []string{"direction"}, nil),
		byts: prometheus.NewDesc("bridge_relay_bytes_total",
			"Bytes of node-to-node relay streams since start, by direction: in (received), out (sent).", []string{"direction"}, nil),
	}
}

// Describe and Collect make Relays a prometheus.Collector.
func (c *Relays) Describe(ch chan<- *prometheus.Desc) { ch <- c.relays; ch <- c.byts }

// Collect sends the two gauges and two counters.
func (c *Relays) Collect(ch chan<- prometheus.Metric) {
	s := c.src()
	ch <- prometheus.MustNewConstMetric(c.relays, prometheus.GaugeValue, float64(s.In), "in")
	ch <- prometheus.MustNewConstMetric(c.relays, prometheus.GaugeValue, float64(s.Out), "out")
	ch <- prometheus.MustNewConstMetric(c.byts, prometheus.CounterValue, float64(s.BytesIn), "in")
	ch <- prometheus.MustNewConstMetric(c.byts, prometheus.CounterValue, float64(s.BytesOut), "out")
}
