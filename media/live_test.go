package media

import (
	"testing"
	"time"
)

// TestStreamLive: a stream is live while a publisher is attached, not
// while it waits in its grace period for one to come back, live again
// when one does, and not once it has ended.
func TestStreamLive(t *testing.T) {
	reg := graceRegistry(time.Minute)
	first := publishTracks(t, reg, "live/l", "one", h264Track())
	s := first.Stream
	if !s.Live() {
		t.Fatal("Live() = false with its publisher attached")
	}
	first.Close()
	if s.Live() {
		t.Fatal("Live() = true while the stream waits in its grace period")
	}
	second := publishTracks(t, reg, "live/l", "two", h264Track())
	if second.Stream != s || !s.Live() {
		t.Fatal("a publisher back within the grace: want the same stream, live")
	}
	second.Close()
	reg.EndWaiting()
	<-s.Done()
	if s.Live() {
		t.Fatal("Live() = true after the stream ended")
	}
}
