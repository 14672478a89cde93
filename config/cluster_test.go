package config

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

// TestClusterSettings: the cluster is off by default; a parsed section
// keeps its values, and the zero values mean the defaults (the host name,
// public_url, relay, 2 s).
func TestClusterSettings(t *testing.T) {
	d := Default()
	if d.Cluster.Enabled() || d.Cluster.ModeOrDefault() != ClusterRelay || d.Cluster.HeartbeatOrDefault() != 2*time.Second {
		t.Errorf("defaults: %v", d.Cluster)
	}
	c, err := Parse("c.yaml", []byte(`cluster:
  redis: "redis://127.0.0.1:6379/0"
  node: a
  public_url: "https://a.example.com:8443"
  internal_url: "http://10.0.0.1:8080"
  token: "0123456789abcdefXYZ"
  mode: redirect
  heartbeat: 500ms
routes: [{path: a}]
`))
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Cluster
	if !cl.Enabled() || cl.NodeName() != "a" || cl.InternalURLOrDefault() != "http://10.0.0.1:8080" ||
		cl.ModeOrDefault() != ClusterRedirect || cl.HeartbeatOrDefault() != 500*time.Millisecond {
		t.Errorf("parsed: %v", cl)
	}
	host, _ := os.Hostname()
	zero := Cluster{RedisAddrs: []string{"r1:7000"}, PublicURL: "https://b.example.com"}
	if !zero.Enabled() || zero.NodeName() != host || zero.InternalURLOrDefault() != zero.PublicURL ||
		zero.ModeOrDefault() != ClusterRelay || zero.HeartbeatOrDefault() != DefaultClusterHeartbeat {
		t.Errorf("zero values: node %q internal %q mode %q heartbeat %v", zero.NodeName(), zero.InternalURLOrDefault(), zero.ModeOrDefault(), zero.HeartbeatOrDefault())
	}
}

// TestClusterSecretsNotPrinted: the token and the Redis passwords appear
// in no printed or logged form of the config.
func TestClusterSecretsNotPrinted(t *testing.T) {
	c, err := Parse("c.yaml", []byte(`cluster:
  redis_addrs: ["rediss://u:s3cret-addr-pass@r1:7000", "rediss://u:s3cret-addr-pass@r2:7000"]
  public_url: "https://a.example.com"
  token: "s3cret-cluster-token"
routes: [{path: a}]
`))
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "cfg", c, "cluster", c.Cluster)
	out := fmt.Sprintf("%v %+v %s %v", c, *c, c, c.Cluster) + logged.String()
	if strings.Contains(out, "s3cret") || !strings.Contains(out, "rediss://u:<redacted>@r1:7000") {
		t.Errorf("secrets printed, or the addresses not: %s", out)
	}
	c.Cluster.RedisAddrs, c.Cluster.Redis = nil, "redis://:s3cret-url-pass@127.0.0.1:6379/2"
	if s := c.Cluster.String(); strings.Contains(s, "s3cret") || !strings.Contains(s, "127.0.0.1:6379/2") {
		t.Errorf("String: %s", s)
	}
}

func TestClusterErrors(t *testing.T) {
	const ok = "  public_url: \"https://a.example.com\"\n  token: \"0123456789abcdefXYZ\"\n"
	tests := []struct {
		yaml string
		want []string
	}{
		{"cluster:\n  node: a\n  token: x\n", []string{
			`c.yaml:2: cluster.node: set, but the cluster is off (expected cluster.redis or cluster.redis_addrs too)`,
			`c.yaml:3: cluster.token: set, but the cluster is off (expected cluster.redis or cluster.redis_addrs too)`}},
		{"cluster:\n  mode: proxy\n  heartbeat: 0s\n", []string{
			`c.yaml:2: cluster.mode: "proxy" is not a cluster mode (expected relay or redirect)`,
			`c.yaml:3: cluster.heartbeat: 0s is out of range (expected 100ms to 1m0s)`}},
		{"cluster:\n  redis: \"redis://127.0.0.1:6379\"\n", []string{
			`c.yaml:1: cluster.public_url: is required in a cluster (expected the http:// or https:// base URL clients reach this node at)`,
			`c.yaml:1: cluster.token: is required in a cluster (expected the node-to-node credential, the same on every node, at least 16 characters)`}},
		{"cluster:\n  redis: \"http://u:pw@127.0.0.1:6379\"\n" + ok, []string{
			`c.yaml:2: cluster.redis: "http://u:<redacted>@127.0.0.1:6379" is not a redis:// or rediss:// URL`}},
		{"cluster:\n  redis: \"redis://127.0.0.1:6379/zero?dial_timeout=1s\"\n" + ok, []string{
			`c.yaml:2: cluster.redis: "redis://127.0.0.1:6379/zero?dial_timeout=1s" has a query (expected none: the bridge sets the client's options)`}},
		{"cluster:\n  redis: \"redis://127.0.0.1:6379/zero\"\n" + ok, []string{
			`c.yaml:2: cluster.redis: "redis://127.0.0.1:6379/zero" has a path that is not a database number (expected /0, /1, ...)`}},
		{"cluster:\n  redis: \"redis://r:6379\"\n  redis_addrs: [\"r:6379\"]\n" + ok, []string{
			`c.yaml:3: cluster.redis_addrs: set together with cluster.redis (expected one of them: redis for one server, redis_addrs for a Redis Cluster or, with redis_master, Sentinels)`}},
		{"cluster:\n  redis: \"redis://r:6379\"\n  redis_master: m\n" + ok, []string{
			`c.yaml:3: cluster.redis_master: set with cluster.redis (expected cluster.redis_addrs listing the Sentinels instead)`}},
		{"cluster:\n  redis_addrs: [\"r1\", \"redis://r2:7000/1\", \"rediss://r3:7000\"]\n" + ok, []string{
			`c.yaml:2: cluster.redis_addrs[0]: "r1" has no port (expected host:port)`,
			`c.yaml:2: cluster.redis_addrs[1]: "redis://r2:7000/1" has a database (expected none: Redis Cluster has only database 0)`,
			`c.yaml:2: cluster.redis_addrs[2]: has another scheme or other credentials than redis_addrs[0] (expected the same for every address)`}},
		{"cluster:\n  redis_addrs: [\"r1:7000\"]\n  node: \"a b\"\n  public_url: \"ftp://x\"\n  internal_url: \"http://203.0.113.5:8080\"\n  token: \"0123456789abcdefXYZ\"\n", []string{
			`c.yaml:3: cluster.node: "a b" has a character other than letters, digits and "-._"`,
			`c.yaml:4: cluster.public_url: "ftp://x" is not an http:// or https:// URL`,
			`c.yaml:5: cluster.internal_url: "http://203.0.113.5:8080" is plain http to a public address (expected https, or http only to a private, loopback or link-local address: the relays carry the cluster token)`}},
		{"cluster:\n  redis_addrs: [\"r1:7000\"]\n  public_url: \"http://198.51.100.1\"\n  token: short\n", []string{
			`c.yaml:3: cluster.public_url: "http://198.51.100.1" is plain http to a public address (expected https, or http only to a private, loopback or link-local address: the relays carry the cluster token)`,
			`c.yaml:4: cluster.token: is 5 characters long (expected at least 16: it opens every stream through a relay)`}},
		{"api:\n  token: \"0123456789abcdefXYZ\"\ncluster:\n  redis: \"redis://r\"\n" + ok, []string{
			`c.yaml:6: cluster.token: equals api.token (expected a token of its own)`}},
	}
	for _, tt := range tests {
		_, err := Parse("c.yaml", []byte(tt.yaml+"routes: [{path: a}]\n"))
		got := ""
		if err != nil {
			got = err.Error()
		}
		if want := strings.Join(tt.want, "\n"); got != want {
			t.Errorf("%q:\n got %s\nwant %s", tt.yaml, got, want)
		}
	}
	if err := CheckNodeName(strings.Repeat("n", MaxNodeName+1)); err == nil {
		t.Error("a 65-byte node name accepted")
	}
}

// TestClusterExample: the commented-out cluster section of config.yaml,
// uncommented, is valid, and so is its redis_addrs variant.
func TestClusterExample(t *testing.T) {
	raw, err := os.ReadFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var sec []string
	in := false
	for line := range strings.SplitSeq(string(raw), "\n") {
		if line == "#cluster:" {
			in = true
		} else if in && !strings.HasPrefix(line, "#  ") {
			break
		}
		if in {
			sec = append(sec, strings.TrimPrefix(line, "#"))
		}
	}
	if len(sec) < 10 {
		t.Fatalf("config.yaml has no commented cluster section (found %d lines)", len(sec))
	}
	t.Setenv("CLUSTER_TOKEN", "0123456789abcdef-example")
	yaml := strings.Join(sec, "\n") + "\nroutes: [{path: a}]\n"
	c, err := Parse("config.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("the example:\n%s\n%v", yaml, err)
	}
	if !c.Cluster.Enabled() || c.Cluster.Token != "0123456789abcdef-example" || c.Cluster.NodeName() != "a" {
		t.Errorf("the example parsed as %v", c.Cluster)
	}
	sentinel := strings.NewReplacer(`  redis: "redis://127.0.0.1:6379/0"`, "", "  # redis_addrs: [", "  redis_addrs: [", "  # redis_master: mymaster", "  redis_master: mymaster").Replace(yaml)
	if c, err := Parse("config.yaml", []byte(sentinel)); err != nil || c.Cluster.RedisMaster != "mymaster" || len(c.Cluster.RedisAddrs) != 3 {
		t.Errorf("the Sentinel variant: %v, %v", c, err)
	}
}
