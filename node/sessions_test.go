package node

import (
	"context"
	"testing"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/cluster"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// clusterLeases is a cluster's registry as the node's pulls ask it for
// leases (cmd/bridge's adapter does the same, and claims publishers too:
// this test has none).
type clusterLeases struct{ *cluster.Cluster }

func (clusterLeases) ClaimPublisher(context.Context, string) (Peer, bool, error) {
	return Peer{}, true, nil
}

// TestPullWaitingForLease: in a cluster (two registrations in a real
// redis-server), an always-on pull whose lease another node holds is
// listed by the admin API's sessions as "waiting for lease", not running;
// once that node gives the lease up, this one takes it and the pull is
// "running".
func TestPullWaitingForLease(t *testing.T) {
	const hb = 200 * time.Millisecond
	r := testkit.StartRedis(t)
	join := func(name string, reg *media.Registry) *cluster.Cluster {
		log, _ := testkit.NamedLog(t, name)
		c, err := cluster.New(config.Cluster{Redis: r.URL, Node: name, PublicURL: "http://127.0.0.1:1/" + name,
			Token: "0123456789abcdef-token", Heartbeat: hb}, cluster.Options{Registry: reg, Live: func(string) bool { return true }, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		c.Start()
		t.Cleanup(c.Stop)
		return c
	}
	log, _ := testkit.TestLog(t, "NODE_LOG")
	reg := media.NewRegistry(log)
	other := join("other", media.NewRegistry(log))
	ctx := context.Background()
	if ok, err := other.AcquireLease(ctx, "pull:cams/x"); !ok || err != nil {
		t.Fatalf("the other node takes the lease: %v %v", ok, err)
	}

	cfg := config.Default()
	cfg.Cluster.Heartbeat = hb // how often a waiting pull asks for its lease
	cfg.Routes = []config.Route{{Path: "cams/x", Pull: "rtmp://127.0.0.1:1/src/x"}}
	n := New(cfg, Options{Registry: reg, Log: log, Ownership: clusterLeases{join("this", reg)}})
	n.Start()
	t.Cleanup(func() { n.Drain(); n.Stop(); reg.EndWaiting() })

	state := func() string {
		for _, s := range n.Sessions() {
			if s.Kind == access.SessionPull && s.Stream == "cams/x" {
				return s.State
			}
		}
		return "not listed"
	}
	testkit.WaitFor(t, 5*time.Second, "the pull listed", func() bool { return state() != "not listed" })
	time.Sleep(3 * hb) // it asked for the lease, more than once
	if got := state(); got != StateWaitingForLease {
		t.Fatalf("pull state %q while another node holds its lease, want %q", got, StateWaitingForLease)
	}
	if err := other.ReleaseLease(ctx, "pull:cams/x"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, `the pull "running" once the lease is free`, func() bool { return state() == "running" })
}
