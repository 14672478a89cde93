package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"
)

// resources is what a long-running bridge must give back: goroutines,
// open file descriptors and heap in use, measured after a forced GC.
type resources struct {
	goroutines int
	fds        int
	heapInuse  uint64         // bytes of live heap objects after the forced GC (MemStats.HeapAlloc)
	stacks     map[string]int // goroutine stacks (pprof debug=1 groups) and their counts
}

func (r resources) String() string {
	return fmt.Sprintf("goroutines %d, open fds %d, heap in use %.1f MiB", r.goroutines, r.fds, float64(r.heapInuse)/(1<<20))
}

func measure(t *testing.T) resources {
	t.Helper()
	http.DefaultClient.CloseIdleConnections()
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count open fds: %v", err)
	}
	// HeapAlloc right after GC is what is still reachable; HeapInuse would
	// also count spans kept by a few survivors of a peak (goroutine
	// descriptors are never freed), ~12 MiB after the soak's 100 viewers
	// with only 2.5 MiB more live: fragmentation, not something held.
	return resources{goroutines: runtime.NumGoroutine(), fds: len(fds), heapInuse: ms.HeapAlloc, stacks: stackGroups()}
}

// stackGroups returns the goroutine profile's groups of identical stacks
// with their counts.
func stackGroups() map[string]int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
	out := map[string]int{}
	for _, g := range strings.Split(buf.String(), "\n\n")[1:] {
		n, stack, ok := strings.Cut(g, " @ ")
		if !ok {
			continue
		}
		c, _ := strconv.Atoi(strings.TrimSpace(n))
		if i := strings.IndexByte(stack, '\n'); i >= 0 {
			stack = stack[i+1:] // drop the program counters
		}
		out[stack] += c
	}
	return out
}

// grown lists the stacks that have more goroutines in now than in base.
func grown(base, now resources) string {
	var b strings.Builder
	for stack, n := range now.stacks {
		if d := n - base.stacks[stack]; d > 0 {
			fmt.Fprintf(&b, "+%d:\n%s\n", d, stack)
		}
	}
	return b.String()
}

// Tolerances of the hostile-input suite and the soak (issue 12): after
// the load and a forced GC, within these of the baseline.
const (
	slackGoroutines = 5
	slackFDs        = 5
	slackHeap       = 16 << 20
)

// waitResources waits up to within for the bridge to come back to base
// (sessions time out, connections close), then fails the test with the
// figures and the goroutine stacks if it did not; it returns the figures.
func waitResources(t *testing.T, base resources, within time.Duration) resources {
	t.Helper()
	var now resources
	for deadline := time.Now().Add(within); ; time.Sleep(250 * time.Millisecond) {
		now = measure(t)
		ok := now.goroutines <= base.goroutines+slackGoroutines && now.fds <= base.fds+slackFDs &&
			now.heapInuse <= base.heapInuse+slackHeap
		if ok {
			return now
		}
		if time.Now().After(deadline) {
			break
		}
	}
	t.Errorf("resources not given back within %v:\n  start: %v\n  end:   %v\ngoroutines that stayed:\n%s", within, base, now, grown(base, now))
	return now
}
