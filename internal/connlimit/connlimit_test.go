package connlimit

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

func TestGate(t *testing.T) {
	log, logs := testkit.TestLog(t, "")
	g := New(0, 1, func(path string) int { return map[string]int{"a": 2}[path] }, log)
	a := netip.MustParseAddr("192.0.2.1")
	if _, err := g.Acquire(a, "refused"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := g.Acquire(a, "refused", "peer", a); !errors.Is(err, addrlimit.ErrPerAddr) {
			t.Fatalf("second from one address: %v", err)
		}
	}
	if n := logs.Count("refused", "peer=192.0.2.1"); n != 1 {
		t.Errorf("%d log lines for 3 refusals from one address, want 1", n)
	}

	reg := media.NewRegistry(log)
	pub, err := reg.Publish("a", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	r, err := pub.NewReader(media.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// One reader of 2: a joining reader fits, and an attached one is
	// within the limit; a third does not.
	if err := g.CheckReaders(reg, "a", 1); err != nil {
		t.Errorf("second reader joining: %v", err)
	}
	r2, _ := pub.NewReader(media.ReaderOptions{})
	defer r2.Close()
	if err := g.CheckReaders(reg, "a", 0); err != nil {
		t.Errorf("second reader attached: %v", err)
	}
	if err := g.CheckReaders(reg, "a", 1); !errors.Is(err, ErrReaders) {
		t.Errorf("third reader joining: %v, want ErrReaders", err)
	}
	if err := g.CheckReaders(reg, "other", 1); err != nil {
		t.Errorf("a path without a limit: %v", err)
	}
	if got := g.Refusals(); got != (Refusals{ConnsPerAddr: 3, Readers: 1}) {
		t.Errorf("refusals %+v", got)
	}
}
