package memrelease

import (
	"runtime/metrics"
	"testing"
	"time"
)

// TestPolicy: a release follows a drop of at least minDrop sessions once
// the count has not fallen for settle (or has been falling for maxWait),
// at most once per minInterval; growth, churn and small drops never
// release.
func TestPolicy(t *testing.T) {
	type step struct {
		at      time.Duration // since the start
		n       int
		release bool
	}
	for _, c := range []struct {
		name  string
		steps []step
	}{
		{"growth and churn", []step{{0, 0, false}, {2, 100, false}, {4, 120, false}, {6, 100, false}, {8, 110, false}, {10, 89, false}, {12, 95, false}, {30, 95, false}}},
		{"a crowd leaves", []step{{0, 200, false}, {2, 120, false}, {4, 0, false}, {6, 0, false}, {8, 0, false}, {10, 0, true}, {12, 0, false}, {60, 0, false}}},
		{"the count rises again after the drop", []step{{0, 200, false}, {2, 0, false}, {4, 3, false}, {8, 3, true}}},
		{"a drop that goes on falling", []step{{0, 300, false}, {2, 280, false}, {4, 260, false}, {6, 240, false}, {8, 220, false}, {10, 200, false},
			{12, 180, false}, {14, 160, false}, {16, 140, false}, {18, 120, false}, {20, 100, false}, {22, 80, false}, {24, 60, true}, {26, 40, false}}},
		{"a drop that recovers", []step{{0, 100, false}, {2, 60, false}, {4, 90, false}, {6, 90, false}, {8, 50, false}, {10, 50, false}, {12, 50, false}, {14, 50, true}}},
		{"two drops within minInterval", []step{{0, 200, false}, {2, 100, false}, {8, 100, true}, {10, 200, false}, {12, 100, false}, {18, 100, false}, {30, 100, false}, {38, 100, true}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var p policy
			t0 := time.Unix(1e9, 0)
			for _, s := range c.steps {
				if got := p.observe(s.n, t0.Add(s.at*time.Second)); got != s.release {
					t.Fatalf("count %d at +%ds: release %v, want %v (steps %v)", s.n, s.at, got, s.release, c.steps)
				}
			}
		})
	}
}

// TestWatcherReleases: when the watched count drops from 100 to 0, the
// Watcher makes a collection (forced, not the runtime's own) that returns
// memory to the OS, and Stop ends it.
func TestWatcherReleases(t *testing.T) {
	forced := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	count := make(chan int, 1)
	count <- 100
	n := 100
	w := Start(func() int {
		select {
		case n = <-count:
		default:
		}
		return n
	}, nil)
	defer w.Stop()
	time.Sleep(pollInterval + pollInterval/2) // the peak is seen
	before := forced()
	count <- 0
	deadline := time.Now().Add(settle + 3*pollInterval)
	for forced() == before {
		if time.Now().After(deadline) {
			t.Fatalf("no collection within %v of the count dropping from 100 to 0", settle+3*pollInterval)
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.Stop()
}
