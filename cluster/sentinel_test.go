package cluster

import (
	"context"
	"errors"
	"testing"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// TestSentinel: two nodes reach the registry through a redis-sentinel
// (redis_addrs + redis_master) that monitors one redis-server master:
// registrations, an exclusive claim and a lease work as with one server.
func TestSentinel(t *testing.T) {
	master := testkit.StartRedis(t)
	s := testkit.StartSentinel(t, master, "bridge-master")
	cfg := config.Cluster{RedisAddrs: []string{s.Addr}, RedisMaster: s.Master}
	a := joinWith(t, cfg, "a", hb, nil)
	b := joinWith(t, cfg, "b", hb, nil)

	a.publish(t, "live/s")
	testkit.WaitFor(t, patience, "a's claim seen by b", func() bool { return b.owner(t, "live/s") == "a" })
	var owned *OwnedError
	if err := b.c.Claim(context.Background(), "live/s"); !errors.As(err, &owned) || owned.Owner.Node != "a" {
		t.Fatalf("b's claim of a's live stream: %v, want *OwnedError naming a", err)
	}
	testkit.WaitFor(t, patience, "both nodes registered", func() bool {
		nodes, err := a.c.Nodes(context.Background())
		return err == nil && len(nodes) == 2
	})
	if ok, err := a.c.AcquireLease(context.Background(), "pull:live/p"); !ok || err != nil {
		t.Fatalf("a's lease: %v %v", ok, err)
	}
	if ok, err := b.c.AcquireLease(context.Background(), "pull:live/p"); ok || err != nil {
		t.Fatalf("b took a's lease: %v %v", ok, err)
	}
	if st := a.c.Status(); st.State != StateOK {
		t.Errorf("a's state through the sentinel: %+v", st)
	}
}
