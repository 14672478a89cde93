package media

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestEndWaiting: at shutdown, a stream waiting out its grace ends at once;
// a stream with a publisher is left alone.
func TestEndWaiting(t *testing.T) {
	reg := graceRegistry(time.Hour)
	left := publishTracks(t, reg, "live/left", "one", h264Track())
	live := publishTracks(t, reg, "live/on", "two", h264Track())
	r := newTestReader(t, left, 0)
	left.Close()
	expectOpen(t, left.Stream) // in grace

	reg.EndWaiting()
	select {
	case <-left.Stream.Done():
	case <-time.After(time.Second):
		t.Fatal("stream in grace did not end")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := r.Read(ctx); !errors.Is(err, ErrStreamEnded) {
		t.Errorf("reader got %v, want ErrStreamEnded", err)
	}
	expectOpen(t, live.Stream)
	if _, ok := reg.Get("live/left"); ok {
		t.Error("ended stream still in the registry")
	}
}
