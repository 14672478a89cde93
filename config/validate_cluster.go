package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/wishbridge/bridge/internal/rawurl"
)

// Bounds of the cluster section.
const (
	// MaxNodeName bounds cluster.node (and a host name used in its
	// place): it is part of every Redis key and value the node writes and,
	// later, of session ids; 64 holds any real host name's first labels.
	MaxNodeName = 64
	// maxRedisAddrs bounds cluster.redis_addrs: a Redis Cluster is seeded
	// from a few of its nodes and a Sentinel set has 3 or 5; 64 is far
	// beyond both.
	maxRedisAddrs = 64
	// minClusterHeartbeat and maxClusterHeartbeat bound cluster.heartbeat.
	// Below 100 ms each node's refreshes cost Redis more than they gain
	// (a round trip on a loaded network approaches it); above 1 m a dead
	// node's streams stay unreachable for 3 minutes.
	minClusterHeartbeat = 100 * time.Millisecond
	maxClusterHeartbeat = time.Minute
	// minClusterTokenLength: the token lets its holder read every stream
	// through a relay; like api.token, 16 characters of the bearer
	// alphabet are 96 bits.
	minClusterTokenLength = 16
)

// CheckNodeName reports whether name can name a node: 1 to MaxNodeName
// letters, digits and "-._" (it goes into Redis keys, URLs and logs
// unquoted). The cluster checks a default taken from the host name with it.
func CheckNodeName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("is empty (expected 1-%d letters, digits and \"-._\")", MaxNodeName)
	case len(name) > MaxNodeName:
		return fmt.Errorf("is %d bytes long (expected at most %d)", len(name), MaxNodeName)
	case strings.Trim(name, strings.TrimSuffix(unreserved, "~")) != "":
		return fmt.Errorf("%q has a character other than letters, digits and \"-._\"", name)
	}
	return nil
}

// cluster checks cluster.*. With the cluster off (no redis, no
// redis_addrs), the keys that only mean something in a cluster are errors
// when set, so a half-written section does not silently run one node.
func (v *validator) cluster(c *Config) {
	cl := &c.Cluster
	if m := cl.Mode; (m != "" || v.set["cluster.mode"]) && !slices.Contains(clusterModes, m) {
		v.addf("cluster.mode", "%q is not a cluster mode (expected %s or %s)", m, ClusterRelay, ClusterRedirect)
	}
	if h := cl.Heartbeat; (h != 0 || v.set["cluster.heartbeat"]) && (h < minClusterHeartbeat || h > maxClusterHeartbeat) {
		v.addf("cluster.heartbeat", "%s is out of range (expected %s to %s)", h, minClusterHeartbeat, maxClusterHeartbeat)
	}
	if !cl.Enabled() {
		for _, k := range []struct{ key, value string }{
			{"redis_master", cl.RedisMaster}, {"node", cl.Node}, {"public_url", cl.PublicURL},
			{"internal_url", cl.InternalURL}, {"token", cl.Token},
		} {
			if k.value != "" {
				v.addf("cluster."+k.key, "set, but the cluster is off (expected cluster.redis or cluster.redis_addrs too)")
			}
		}
		return
	}
	v.clusterRedis(cl)
	if cl.Node != "" {
		if err := CheckNodeName(cl.Node); err != nil {
			v.addf("cluster.node", "%v", err)
		}
	}
	if cl.PublicURL == "" {
		v.addf("cluster.public_url", "is required in a cluster (expected the http:// or https:// base URL clients reach this node at)")
	} else if err := checkBaseURL(cl.PublicURL); err != nil {
		v.addf("cluster.public_url", "%q %v", rawurl.Redact(cl.PublicURL), err)
	}
	if cl.InternalURL != "" {
		if err := checkBaseURL(cl.InternalURL); err != nil {
			v.addf("cluster.internal_url", "%q %v", rawurl.Redact(cl.InternalURL), err)
		}
	}
	if u := cl.InternalURLOrDefault(); u != "" && checkBaseURL(u) == nil && !privateHTTP(u) {
		key := "cluster.internal_url"
		if cl.InternalURL == "" {
			key = "cluster.public_url" // internal_url defaults to it
		}
		v.addf(key, "%q is plain http to a public address (expected https, or http only to a private, loopback or link-local address: the relays carry the cluster token)", rawurl.Redact(u))
	}
	switch tok := cl.Token; {
	case tok == "":
		v.addf("cluster.token", "is required in a cluster (expected the node-to-node credential, the same on every node, at least %d characters)", minClusterTokenLength)
	case !isBearerToken(tok):
		v.addf("cluster.token", `is not a valid bearer token (expected letters, digits and "-._~+/", optionally ending in "=")`)
	case len(tok) < minClusterTokenLength:
		v.addf("cluster.token", "is %d characters long (expected at least %d: it opens every stream through a relay)", len(tok), minClusterTokenLength)
	default:
		if other := sameSecret(c, tok); other != "" {
			v.addf("cluster.token", "equals %s (expected a token of its own)", other)
		} else if tok == c.API.Token {
			v.addf("cluster.token", "equals api.token (expected a token of its own)")
		}
	}
}

// clusterRedis checks how the cluster reaches Redis: one URL, or the
// addresses of a Redis Cluster or of Sentinels.
func (v *validator) clusterRedis(cl *Cluster) {
	if cl.Redis != "" && len(cl.RedisAddrs) > 0 {
		v.addf("cluster.redis_addrs", "set together with cluster.redis (expected one of them: redis for one server, redis_addrs for a Redis Cluster or, with redis_master, Sentinels)")
		return
	}
	if cl.Redis != "" {
		if err := checkRedisURL(cl.Redis); err != nil {
			v.addf("cluster.redis", "%q %v", rawurl.Redact(cl.Redis), err)
		}
		if cl.RedisMaster != "" {
			v.addf("cluster.redis_master", "set with cluster.redis (expected cluster.redis_addrs listing the Sentinels instead)")
		}
		return
	}
	if len(cl.RedisAddrs) > maxRedisAddrs {
		v.addf("cluster.redis_addrs", "has %d addresses (expected at most %d)", len(cl.RedisAddrs), maxRedisAddrs)
		return
	}
	var first rawurl.URL
	for i, a := range cl.RedisAddrs {
		key := fmt.Sprintf("cluster.redis_addrs[%d]", i)
		u, err := splitRedisAddr(a)
		if err != nil {
			v.addf(key, "%q %v", redactRedisAddr(a), err)
			continue
		}
		if i == 0 {
			first = u
		} else if !strings.EqualFold(u.Scheme, first.Scheme) || u.Userinfo != first.Userinfo {
			v.addf(key, "has another scheme or other credentials than redis_addrs[0] (expected the same for every address)")
		}
	}
}

// splitRedisAddr reads one redis_addrs entry: "host:port", or a redis://
// or rediss:// URL with a port and no database (Redis Cluster has only 0;
// Sentinels serve no data).
func splitRedisAddr(a string) (rawurl.URL, error) {
	raw := a
	if !strings.Contains(a, "://") {
		raw = "redis://" + a
	}
	if err := checkRedisURL(raw); err != nil {
		return rawurl.URL{}, err
	}
	u, _ := rawurl.Split(raw)
	if _, port, _ := splitHostPort(u.HostPort); port == "" {
		return rawurl.URL{}, fmt.Errorf("has no port (expected host:port)")
	}
	if strings.Trim(u.Path, "/") != "" {
		return rawurl.URL{}, fmt.Errorf("has a database (expected none: Redis Cluster has only database 0)")
	}
	return u, nil
}

// checkRedisURL checks a redis:// or rediss:// URL offline: a host, an
// optional port, an optional database number as the path, no query (the
// bridge sets the client's timeouts itself).
func checkRedisURL(raw string) error {
	u, ok := rawurl.Split(raw)
	if scheme := strings.ToLower(u.Scheme); !ok || scheme != "redis" && scheme != "rediss" {
		return fmt.Errorf("is not a redis:// or rediss:// URL")
	}
	host, port, ok := splitHostPort(u.HostPort)
	switch {
	case u.HostPort == "":
		return fmt.Errorf("has no host (expected redis://[user:password@]host[:port][/db])")
	case !ok || !(isIP(host) || isHostname(host)):
		return fmt.Errorf("has an invalid host (expected a hostname, an IPv4 address or an IPv6 address in [])")
	case port != "" && !isPort(port):
		return fmt.Errorf("has an invalid port (expected 1-65535)")
	case u.HasQuery:
		return fmt.Errorf("has a query (expected none: the bridge sets the client's options)")
	}
	if db := strings.Trim(u.Path, "/"); db != "" && strings.Trim(db, "0123456789") != "" || len(db) > 5 {
		return fmt.Errorf("has a path that is not a database number (expected /0, /1, ...)")
	}
	return nil
}

// checkBaseURL checks public_url or internal_url: http or https, a host,
// no credentials, query or fragment (paths are appended to it).
func checkBaseURL(raw string) error {
	if err := checkURL(raw, whipSchemes); err != nil {
		return err
	}
	u, _ := rawurl.Split(raw)
	if u.HasUser || u.HasQuery || strings.Contains(raw, "#") {
		return fmt.Errorf("has credentials, a query or a fragment (expected a base URL such as https://a.example.com:8443)")
	}
	return nil
}

// privateHTTP reports whether base, a checked base URL, is https or plain
// http to a host that is not a public IP address: a loopback, private or
// link-local one, or a name (names are not resolved here; the docs say
// plain http is for private networks only).
func privateHTTP(base string) bool {
	u, _ := rawurl.Split(base)
	if strings.EqualFold(u.Scheme, "https") {
		return true
	}
	host, _, _ := splitHostPort(u.HostPort)
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return true
	}
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast()
}
