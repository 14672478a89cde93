package metrics

import "github.com/prometheus/client_golang/prometheus"

// ClusterStats is a cluster node's view of the registry (package cluster),
// read at scrape time.
type ClusterStats struct {
	// RedisUp: the registry answered at the last heartbeat. false means
	// the node is degraded: it serves what it has, lookups fail.
	RedisUp bool
	// Nodes counts the live nodes seen at the last heartbeat, this one
	// included; Claims the stream paths this node owns; RoutesDiffer the
	// other nodes whose routes differ from this node's.
	Nodes, Claims, RoutesDiffer int
}

// Cluster is the registry's gauges: bridge_cluster_redis_up,
// bridge_cluster_nodes, bridge_cluster_streams_owned and
// bridge_cluster_routes_differ. Register it with Metrics.Register on a
// node that joins a cluster.
type Cluster struct {
	src                             func() ClusterStats
	up, nodes, claims, routesDiffer *prometheus.Desc
}

// NewCluster returns the collector over src, which must be safe for
// concurrent use and quick (it must not ask Redis).
func NewCluster(src func() ClusterStats) *Cluster {
	return &Cluster{src: src,
		up:           prometheus.NewDesc("bridge_cluster_redis_up", "1 while the cluster registry (Redis) answers; 0 while this node is degraded (it serves what it has).", nil, nil),
		nodes:        prometheus.NewDesc("bridge_cluster_nodes", "Live nodes of the cluster at the last heartbeat, this one included.", nil, nil),
		claims:       prometheus.NewDesc("bridge_cluster_streams_owned", "Stream paths this node owns in the cluster registry.", nil, nil),
		routesDiffer: prometheus.NewDesc("bridge_cluster_routes_differ", "Other nodes whose routes differ from this node's.", nil, nil),
	}
}

// Describe and Collect make Cluster a prometheus.Collector.
func (c *Cluster) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.nodes
	ch <- c.claims
	ch <- c.routesDiffer
}

func (c *Cluster) Collect(ch chan<- prometheus.Metric) {
	s := c.src()
	up := 0.0
	if s.RedisUp {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(c.nodes, prometheus.GaugeValue, float64(s.Nodes))
	ch <- prometheus.MustNewConstMetric(c.claims, prometheus.GaugeValue, float64(s.Claims))
	ch <- prometheus.MustNewConstMetric(c.routesDiffer, prometheus.GaugeValue, float64(s.RoutesDiffer))
}
