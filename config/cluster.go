package config

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/wishbridge/bridge/internal/rawurl"
)

// Cluster joins this bridge to others through a Redis registry (package
// cluster): which node owns each stream path, the nodes' load, leases for
// pulls. Off when neither Redis nor RedisAddrs is set. The zero value of
// every other field means its default; read them through the accessors
// (NodeName, InternalURLOrDefault, ModeOrDefault, HeartbeatOrDefault).
type Cluster struct {
	// Redis is a redis:// or rediss:// (TLS) URL, with user and password
	// if the server needs them and the database as its path ("/0").
	Redis string `yaml:"redis"`
	// RedisAddrs are "host:port" addresses (or redis:// / rediss:// URLs
	// with the same scheme and credentials) of a Redis Cluster, or of the
	// Sentinels when RedisMaster is set. Not with Redis.
	RedisAddrs []string `yaml:"redis_addrs"`
	// RedisMaster is the Sentinel master's name; only with RedisAddrs.
	RedisMaster string `yaml:"redis_master"`
	// Node is this node's unique name in the cluster; "" means the host
	// name.
	Node string `yaml:"node"`
	// PublicURL is the base URL clients reach this node at (307 targets,
	// session Locations). Required in a cluster.
	PublicURL string `yaml:"public_url"`
	// InternalURL is the base URL other nodes reach this node at (relays,
	// forwarded PATCH/DELETE); "" means PublicURL. Plain http only on a
	// private network.
	InternalURL string `yaml:"internal_url"`
	// Token is the node-to-node credential (relays, signed redirects),
	// the same on every node. Never logged.
	Token string `yaml:"token"`
	// Mode is how a node serves a reader of a stream another node owns:
	// ClusterRelay or ClusterRedirect; "" means ClusterRelay.
	Mode string `yaml:"mode"`
	// Heartbeat is how often a node refreshes its registration and its
	// claims; entries expire after ClusterExpiryHeartbeats of them. 0
	// means DefaultClusterHeartbeat.
	Heartbeat time.Duration `yaml:"heartbeat"`
}

// Cluster modes (Cluster.Mode).
const (
	// ClusterRelay: the node relays the stream from its owner, once per
	// stream however many local readers it has.
	ClusterRelay = "relay"
	// ClusterRedirect: WHEP viewers are sent to the owner with a 307
	// (RTMP and SRT readers, which cannot follow one, are relayed).
	ClusterRedirect = "redirect"
)

var clusterModes = []string{ClusterRelay, ClusterRedirect}

// DefaultClusterHeartbeat is Cluster.Heartbeat when not set: a dead node's
// streams are free again within 3 x 2 s = 6 s, about a player's patience,
// at two small Redis writes per node and owned stream every 2 s.
const DefaultClusterHeartbeat = 2 * time.Second

// ClusterExpiryHeartbeats is how many heartbeats a registration or claim
// outlives its last refresh: one late or lost refresh (a GC pause, a
// Redis failover) must not drop a live node's streams, two in a row still
// might happen, three means the node is gone.
const ClusterExpiryHeartbeats = 3

// Enabled reports whether the bridge joins a cluster.
func (c Cluster) Enabled() bool { return c.Redis != "" || len(c.RedisAddrs) > 0 }

// NodeName is Node, or the host name when it is "" ("bridge" when the
// system has none).
func (c Cluster) NodeName() string {
	if c.Node != "" {
		return c.Node
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "bridge"
}

// InternalURLOrDefault is InternalURL, or PublicURL when it is "".
func (c Cluster) InternalURLOrDefault() string {
	if c.InternalURL == "" {
		return c.PublicURL
	}
	return c.InternalURL
}

// ModeOrDefault is Mode, or ClusterRelay when it is "".
func (c Cluster) ModeOrDefault() string {
	if c.Mode == "" {
		return ClusterRelay
	}
	return c.Mode
}

// HeartbeatOrDefault is Heartbeat, or DefaultClusterHeartbeat when it is 0.
func (c Cluster) HeartbeatOrDefault() time.Duration {
	if c.Heartbeat <= 0 {
		return DefaultClusterHeartbeat
	}
	return c.Heartbeat
}

// String describes the cluster settings with the token and the Redis
// credentials redacted.
func (c Cluster) String() string {
	addrs := make([]string, len(c.RedisAddrs))
	for i, a := range c.RedisAddrs {
		addrs[i] = redactRedisAddr(a)
	}
	return fmt.Sprintf("{redis=%q redis_addrs=[%s] redis_master=%q node=%q public_url=%q internal_url=%q token=%s mode=%s heartbeat=%s}",
		rawurl.Redact(c.Redis), strings.Join(addrs, " "), c.RedisMaster, c.Node, c.PublicURL, c.InternalURL,
		redact(c.Token), c.ModeOrDefault(), c.HeartbeatOrDefault())
}

// LogValue makes slog print the redacted String form.
func (c Cluster) LogValue() slog.Value { return slog.StringValue(c.String()) }

// redactRedisAddr is a redis_addrs entry for a message: a URL redacted,
// a "host:port" as it is (it holds no secret).
func redactRedisAddr(a string) string {
	if !strings.Contains(a, "://") && !strings.Contains(a, "@") {
		return a
	}
	return rawurl.Redact(a)
}
