package media

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable Registry.now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestKeyframeRequestsMerged: requests reach the publisher's callback at
// most once per KeyframeRequestInterval per track; a burst from many
// readers is one request.
func TestKeyframeRequestsMerged(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	reg := graceRegistry(time.Minute)
	reg.now = clk.now
	p := publishTracks(t, reg, "live/kf", "whip", h264Track(), h264Track(), aacTrack())
	s := p.Stream

	if s.RequestKeyframe(0) {
		t.Fatal("RequestKeyframe reported a request with no callback registered")
	}
	var mu sync.Mutex
	var got []int
	p.OnKeyframeRequest(func(track int) {
		mu.Lock()
		got = append(got, track)
		mu.Unlock()
	})
	calls := func() []int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}

	// A burst from many goroutines: one request.
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for range 20 {
				if !s.RequestKeyframe(0) {
					t.Error("RequestKeyframe = false with a callback registered")
				}
			}
		})
	}
	wg.Wait()
	if c := calls(); !slices.Equal(c, []int{0}) {
		t.Fatalf("callback calls %v for a burst of 1000 requests, expected [0]", c)
	}
	// Another track has its own interval.
	s.RequestKeyframe(1)
	clk.advance(KeyframeRequestInterval - time.Millisecond)
	s.RequestKeyframe(0)
	s.RequestKeyframe(1)
	if c := calls(); !slices.Equal(c, []int{0, 1}) {
		t.Fatalf("calls %v within the interval, expected [0 1]", c)
	}
	clk.advance(time.Millisecond)
	s.RequestKeyframe(0)
	s.RequestKeyframe(0)
	if c := calls(); !slices.Equal(c, []int{0, 1, 0}) {
		t.Fatalf("calls %v after the interval, expected [0 1 0]", c)
	}
	for _, bad := range []int{-1, 3, 100} {
		if s.RequestKeyframe(bad) {
			t.Errorf("RequestKeyframe(%d) reported a request", bad)
		}
	}

	// The publisher leaves: nobody to ask, and its callback is never
	// called again (not even if it comes back as another publication).
	p.Close()
	clk.advance(time.Hour)
	if s.RequestKeyframe(0) {
		t.Fatal("RequestKeyframe reported a request while the stream has no publisher")
	}
	q, err := reg.Publish("live/kf", "rtmp")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.SetTracks(h264Track(), h264Track(), aacTrack()); err != nil {
		t.Fatal(err)
	}
	p.OnKeyframeRequest(func(int) { t.Error("callback of a publication that left") })
	if s.RequestKeyframe(0) {
		t.Fatal("RequestKeyframe reported a request to a publisher without a callback")
	}
	if c := calls(); len(c) != 3 {
		t.Fatalf("calls %v", c)
	}
}

// TestReaderKeyframeFromCache: with nobody upstream to ask, a reader's
// keyframe request is answered from the GOP cache: the track's queued
// units are replaced by its cached GOP, once per GOP.
func TestReaderKeyframeFromCache(t *testing.T) {
	s, video, audio := newTestStream(t)
	r := newTestReader(t, s, 0)
	if r.RequestKeyframe(video.ID) {
		t.Fatal("request answered with nothing cached")
	}
	k0, a1, p2, a3, p4 := idr(video, 0), aunit(audio, 1), vunit(video, 2, false), aunit(audio, 3), vunit(video, 4, false)
	writeAll(s, k0, a1, p2, a3)
	readQueued(t, r)
	writeAll(s, p4) // queued, not read yet
	a5 := aunit(audio, 5)
	s.Write(a5)

	if !r.RequestKeyframe(video.ID) {
		t.Fatal("request not answered from the cache")
	}
	got, cached := readCached(t, r)
	expectUnits(t, "after the request", got, []*Unit{k0, p2, p4, a5})
	if !slices.Equal(cached, []bool{true, true, true, false}) {
		t.Fatalf("Cached = %v, expected the replayed GOP only", cached)
	}
	if r.RequestKeyframe(video.ID) {
		t.Fatal("the same GOP replayed twice")
	}
	if r.RequestKeyframe(audio.ID) {
		t.Fatal("an audio request answered")
	}

	// Each reader has its own; a new GOP can be replayed again.
	other := newTestReader(t, s, 0)
	k6, p7 := idr(video, 6), vunit(video, 7, false)
	writeAll(s, k6, p7)
	if !r.RequestKeyframe(video.ID) || !other.RequestKeyframe(video.ID) {
		t.Fatal("request on a new GOP not answered")
	}
	expectUnits(t, "reader", readQueued(t, r), []*Unit{k6, p7})
	expectUnits(t, "other", readQueued(t, other), []*Unit{k6, p7})

	// A reader skipping after a drop gets decodable video again.
	slow := newTestReader(t, s, 3)
	k8, p9 := idr(video, 8), vunit(video, 9, false)
	writeAll(s, k8, aunit(audio, 8), aunit(audio, 8), p9) // p9 finds the queue full: skip
	readQueued(t, slow)
	if !slow.RequestKeyframe(video.ID) {
		t.Fatal("slow reader's request not answered")
	}
	expectUnits(t, "slow reader", readQueued(t, slow), []*Unit{k8, p9})
	p11 := vunit(video, 11, false)
	s.Write(p11)
	expectUnits(t, "slow reader, live", readQueued(t, slow), []*Unit{p11})

	// Forwarded upstream when the publisher takes requests: no replay.
	forwarded := 0
	s.OnKeyframeRequest(func(int) { forwarded++ })
	k12 := idr(video, 12)
	s.Write(k12)
	readQueued(t, r)
	if !r.RequestKeyframe(video.ID) || forwarded != 1 {
		t.Fatalf("request not forwarded (%d)", forwarded)
	}
	if got := readQueued(t, r); len(got) != 0 {
		t.Fatalf("forwarded request also replayed %v", describe(got))
	}
}

// TestReplayNeedsRoom: a replay that does not fit the queue is not done.
func TestReplayNeedsRoom(t *testing.T) {
	s, video, audio := newTestStream(t)
	r := newTestReader(t, s, 4)
	writeAll(s, idr(video, 0), vunit(video, 1, false), vunit(video, 2, false))
	readQueued(t, r)
	writeAll(s, vunit(video, 3, false), aunit(audio, 4), aunit(audio, 5))
	if r.RequestKeyframe(video.ID) { // 4 video + 2 audio > 4
		t.Fatal("replay done without room")
	}
	if got := readQueued(t, r); len(got) != 3 {
		t.Fatalf("queue changed: %v", describe(got))
	}
}
