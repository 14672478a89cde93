package testkit

import (
	"context"
	"testing"
	"time"
)

// RunUntilStopped runs run in a goroutine until stop is called or the test
// ends; stop cancels run's context and fails the test if run does not
// return within 10 s. stop may be called more than once.
func RunUntilStopped(t testing.TB, run func(ctx context.Context)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx)
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return 10 s after ctx was cancelled")
		}
	}
	t.Cleanup(stop)
	return stop
}

// WaitStreaming waits for a value on streaming (sent by a pusher's or
// puller's onStreaming hook).
func WaitStreaming(t testing.TB, streaming chan struct{}, timeout time.Duration) {
	t.Helper()
	select {
	case <-streaming:
	case <-time.After(timeout):
		t.Fatalf("the pusher did not start streaming within %v", timeout)
	}
}
