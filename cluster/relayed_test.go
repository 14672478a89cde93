package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
)

// TestRelayedNeverClaimed: a stream an edge (b) relays from its owner (a)
// is in b's hub like any published one, but b never claims it: not while
// a's publisher is live (no conflict, nobody told to end a publisher),
// and not while it is in grace (b must not take the path over: only a
// publisher may). Holds tells the owner from the edge.
func TestRelayedNeverClaimed(t *testing.T) {
	r := testkit.StartRedis(t)
	a := join(t, r, "a", hb, nil)
	b := join(t, r, "b", hb, func(o *Options) { o.Relayed = func(string) bool { return true } })
	a.publish(t, "live/r")
	testkit.WaitFor(t, patience, "a's claim", func() bool { return b.owner(t, "live/r") == "a" })
	testkit.WaitFor(t, patience, "a holds its claim", func() bool { return a.c.Holds("live/r") })

	b.publish(t, "live/r") // the relay's publication on b
	a.grace.Store(true)    // a's publisher left: the path may be taken over by a publisher
	testkit.WaitFor(t, patience, "a's claim in grace", func() bool {
		cl, ok, err := b.c.Owner(context.Background(), "live/r")
		return err == nil && ok && cl.State == PublisherGrace
	})
	time.Sleep(3 * hb) // b's heartbeats: they must not claim it
	if got := b.owner(t, "live/r"); got != "a" {
		t.Fatalf("owner with b relaying a's stream in grace: %q (want a)", got)
	}
	if b.c.Holds("live/r") {
		t.Error("b holds the path it relays")
	}
	if p, _ := a.lostTo(); len(p) > 0 {
		t.Errorf("a told it lost %v", p)
	}
	if p, _ := b.lostTo(); len(p) > 0 {
		t.Errorf("b told to end its relay of %v", p)
	}
}
