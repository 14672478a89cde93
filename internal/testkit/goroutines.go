package testkit

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// GoroutineBaseline returns a check that the goroutine count is back to
// what it is now, polling every 20 ms until timeout and then failing the
// test (fatally) with every goroutine's stack. Goroutines whose stack
// contains any of ignore are not counted (for known leaks in
// dependencies that the tests use as peers).
func GoroutineBaseline(t testing.TB, timeout time.Duration, ignore ...string) func() {
	t.Helper()
	base, _ := countGoroutines(ignore)
	return func() {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			n, stacks := countGoroutines(ignore)
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				if stacks == "" {
					stacks = allStacks()
				}
				t.Fatalf("%d goroutines, baseline %d:\n%s", n, base, stacks)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// GoroutineBaselineSoft is GoroutineBaseline polling every 50 ms and
// failing with t.Errorf, so that the test goes on.
func GoroutineBaselineSoft(t testing.TB, timeout time.Duration) func() {
	t.Helper()
	base := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(timeout)
		n := 0
		for time.Now().Before(deadline) {
			if n = runtime.NumGoroutine(); n <= base {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("goroutines: %d, baseline %d\n%s", n, base, allStacks())
	}
}

// countGoroutines counts the goroutines whose stacks contain none of
// ignore; with ignore, it also returns all the stacks.
func countGoroutines(ignore []string) (int, string) {
	if len(ignore) == 0 {
		return runtime.NumGoroutine(), ""
	}
	stacks := allStacks()
	n := 0
	for g := range strings.SplitSeq(stacks, "\n\n") {
		if strings.TrimSpace(g) == "" {
			continue
		}
		ignored := false
		for _, s := range ignore {
			ignored = ignored || strings.Contains(g, s)
		}
		if !ignored {
			n++
		}
	}
	return n, stacks
}

// allStacks returns every goroutine's stack.
func allStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// AllStacks returns every goroutine's stack.
func AllStacks() string { return allStacks() }
