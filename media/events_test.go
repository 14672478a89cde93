package media

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// TestEvents: a subscriber hears a path's publish, a takeover in its grace
// and its end, in that order, without the registry's locks held (it calls
// the registry back), and nothing after it unsubscribed.
func TestEvents(t *testing.T) {
	reg := NewRegistry(quietLog)
	reg.SetGrace(func(string) time.Duration { return time.Hour })
	var mu sync.Mutex
	var got []string
	cancel := reg.Subscribe(func(e Event) {
		// Calls back into the hub: deadlocks if called under its locks.
		_, live := reg.Get(e.Path)
		mu.Lock()
		got = append(got, e.Kind.String()+" "+e.Path+" "+map[bool]string{true: "present", false: "gone"}[live])
		mu.Unlock()
	})
	pub, err := reg.Publish("live/a", "first")
	if err != nil {
		t.Fatal(err)
	}
	pub.SetKind("rtmp")
	if err := pub.SetTracks(&Track{Codec: Opus{}}); err != nil {
		t.Fatal(err)
	}
	pub.Close() // the stream waits out its grace
	next, err := reg.Publish("live/a", "second")
	if err != nil {
		t.Fatal(err)
	}
	if k := next.Stream.PublisherKind(); k != "rtmp" {
		t.Errorf("kind before the new publisher set one: %q, want the previous %q", k, "rtmp")
	}
	next.SetKind("whip")
	pub.SetKind("srt") // no longer the publisher: ignored
	if k := next.Stream.PublisherKind(); k != "whip" {
		t.Errorf("kind %q, want %q", k, "whip")
	}
	reg.SetGrace(nil)
	next.Close()
	cancel()
	cancel() // twice is fine
	late, err := reg.Publish("live/a", "third")
	if err != nil {
		t.Fatal(err)
	}
	late.Close()

	want := []string{"published live/a present", "published live/a present", "ended live/a gone"}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}

// TestEventsPanickingSubscriber: a subscriber that panics is logged and
// skipped; the publisher and the other subscribers go on.
func TestEventsPanickingSubscriber(t *testing.T) {
	reg := NewRegistry(quietLog)
	reg.Subscribe(func(Event) { panic("subscriber bug") })
	n := 0
	reg.Subscribe(func(Event) { n++ })
	pub, err := reg.Publish("live/a", "p")
	if err != nil {
		t.Fatal(err)
	}
	pub.Close()
	if n != 2 {
		t.Errorf("the second subscriber heard %d events, want 2", n)
	}
}
