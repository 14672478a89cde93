package testkit

import (
	"testing"
	"time"

	"github.com/wishbridge/bridge/media"
)

// WaitReady waits until path is published on reg with its tracks known.
func WaitReady(t testing.TB, reg *media.Registry, path string, timeout time.Duration) *media.Stream {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if st, ok := reg.Get(path); ok && st.Tracks() != nil {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %q not ready within %v", path, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitFor polls cond every 20 ms until it holds, failing the test after
// timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
