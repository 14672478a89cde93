package media

import (
	"errors"
	"slices"
	"testing"
)

func TestPublishTwiceRefused(t *testing.T) {
	reg := NewRegistry(quietLog)
	first, err := reg.Publish("live/a", "10.0.0.1:1935")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	video := &Track{Codec: H264{}}
	if err := first.SetTracks(video); err != nil {
		t.Fatal(err)
	}
	r := newTestReader(t, first, 0)

	second, err := reg.Publish("live/a", "10.0.0.2:1935")
	if !errors.Is(err, ErrPublisherExists) || second != nil {
		t.Fatalf("second Publish = %v, %v; expected nil, ErrPublisherExists", second, err)
	}

	// The first stream is unaffected: still registered, not ended, and
	// still delivering.
	if got, ok := reg.Get("live/a"); !ok || got != first.Stream {
		t.Fatalf("Get after the refused Publish = %p, %v; expected the first stream %p", got, ok, first)
	}
	select {
	case <-first.Done():
		t.Fatal("first stream ended by a refused Publish")
	default:
	}
	if got := first.Publisher(); got != "10.0.0.1:1935" {
		t.Fatalf("Publisher = %q, expected the first publisher", got)
	}
	u := vunit(video, 1, true)
	first.Write(u)
	expectUnits(t, "reader", readN(t, r, 1), []*Unit{u})

	// Another path is independent.
	other, err := reg.Publish("live/b", "10.0.0.2:1935")
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
}

func TestPublishAgainAfterClose(t *testing.T) {
	reg := NewRegistry(quietLog)
	first, err := reg.Publish("live/a", "one")
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	if s, ok := reg.Get("live/a"); ok {
		t.Fatalf("Get after Close = %p, expected none", s)
	}
	second, err := reg.Publish("live/a", "two")
	if err != nil {
		t.Fatalf("Publish after Close: %v", err)
	}
	defer second.Close()
	// Closing the old stream again must not unregister the new one.
	first.Close()
	if s, ok := reg.Get("live/a"); !ok || s != second.Stream {
		t.Fatalf("Get = %p, %v; expected the second stream %p", s, ok, second)
	}
	if _, err := reg.Publish("live/a", "three"); !errors.Is(err, ErrPublisherExists) {
		t.Fatalf("third Publish: %v, expected ErrPublisherExists", err)
	}
}

func TestPathsListsReadyStreamsSorted(t *testing.T) {
	reg := NewRegistry(quietLog)
	var streams []*Publication
	for _, p := range []string{"live/c", "live/a", "live/pending", "live/b"} {
		s, err := reg.Publish(p, "test")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if p != "live/pending" {
			if err := s.SetTracks(&Track{Codec: Opus{Channels: 2}}); err != nil {
				t.Fatal(err)
			}
		}
		streams = append(streams, s)
	}
	if got, want := reg.Paths(), []string{"live/a", "live/b", "live/c"}; !slices.Equal(got, want) {
		t.Fatalf("Paths = %q, expected %q", got, want)
	}
	streams[0].Close()
	if got, want := reg.Paths(), []string{"live/a", "live/b"}; !slices.Equal(got, want) {
		t.Fatalf("Paths after closing live/c = %q, expected %q", got, want)
	}
}

func TestSetTracks(t *testing.T) {
	reg := NewRegistry(quietLog)
	s, err := reg.Publish("live/a", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Tracks() != nil {
		t.Fatal("Tracks before SetTracks is not nil")
	}
	v := &Track{Codec: H264{}}
	for name, tracks := range map[string][]*Track{
		"none":      nil,
		"nil track": {v, nil},
		"nil codec": {v, {}},
		"duplicate": {v, v},
	} {
		if err := s.SetTracks(tracks...); err == nil {
			t.Errorf("SetTracks(%s) succeeded", name)
		}
	}
	select {
	case <-s.Ready():
		t.Fatal("Ready closed by failed SetTracks")
	default:
	}

	a := &Track{ID: 7, Codec: Opus{Channels: 2}}
	tracks := []*Track{a, v}
	if err := s.SetTracks(tracks...); err != nil {
		t.Fatal(err)
	}
	<-s.Ready()
	tracks[0] = nil // the stream keeps its own list
	if got := s.Tracks(); len(got) != 2 || got[0] != a || got[1] != v || a.ID != 0 || v.ID != 1 {
		t.Fatalf("Tracks = %v (IDs %d, %d), expected [a v] with IDs 0, 1", got, a.ID, v.ID)
	}
	if err := s.SetTracks(&Track{Codec: H264{}}); err == nil {
		t.Fatal("second SetTracks succeeded")
	}
	if len(s.Tracks()) != 2 {
		t.Fatal("second SetTracks changed the tracks")
	}
}

// TestWriteDiscardsForeignUnits: a unit must belong to one of the stream's
// tracks; anything else (and anything before SetTracks) never reaches a
// reader or a processor.
func TestWriteDiscardsForeignUnits(t *testing.T) {
	reg := NewRegistry(quietLog)
	s, err := reg.Publish("live/a", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := newTestReader(t, s, 0)
	calls := 0
	v := &Track{Codec: H264{}}
	s.Write(vunit(v, 0, true)) // before SetTracks
	if _, err := s.AddProcessor(v, "count", func(*Track) Processor { return nil }); !errors.Is(err, ErrNoTrack) {
		t.Fatalf("AddProcessor before SetTracks: %v, expected ErrNoTrack", err)
	}
	if err := s.SetTracks(v); err != nil {
		t.Fatal(err)
	}
	defer addProc(t, s.Stream, v, "count", func(*Track) Processor { return procFunc(func(*Unit) error { calls++; return nil }) })()
	s.Write(nil)
	s.Write(&Unit{Key: true})                             // no track
	s.Write(vunit(&Track{Codec: H264{}}, 1, true))        // another stream's track 0
	s.Write(vunit(&Track{ID: 5, Codec: H264{}}, 2, true)) // out of range
	want := vunit(v, 3, true)
	s.Write(want)
	expectUnits(t, "reader", readQueued(t, r), []*Unit{want})
	if calls != 1 {
		t.Fatalf("processor called %d times, expected once", calls)
	}
}

func TestCloseEndsEveryReader(t *testing.T) {
	s, video, audio := newTestStream(t)
	idle := newTestReader(t, s, 0)
	queued := newTestReader(t, s, 0)
	waiting := newTestReader(t, s, 0)
	discard := newTestReader(t, s, 0)

	us := interleaved(video, audio, 4, 10)
	for _, u := range us {
		s.Write(u)
	}
	expectUnits(t, "idle", readN(t, idle, len(us)), us)
	expectUnits(t, "waiting", readN(t, waiting, len(us)), us)

	waitErr := make(chan error, 1)
	go func() { waitErr <- readErr(t, waiting) }()

	s.Close()
	s.Close() // idempotent
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed by Close")
	}
	if err := <-waitErr; !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("blocked Read: %v, expected ErrStreamEnded", err)
	}
	if err := readErr(t, idle); !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("idle Read: %v, expected ErrStreamEnded", err)
	}
	// What was queued before the end is still delivered, then the end.
	expectUnits(t, "queued", readN(t, queued, len(us)), us)
	for range 2 {
		if err := readErr(t, queued); !errors.Is(err, ErrStreamEnded) {
			t.Fatalf("queued Read: %v, expected ErrStreamEnded", err)
		}
	}

	// Writes after Close reach nobody, and no reader can join.
	s.Write(vunit(video, 100, true))
	if err := readErr(t, idle); !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("Read after a Write after Close: %v, expected ErrStreamEnded", err)
	}
	if r, err := s.NewReader(ReaderOptions{}); !errors.Is(err, ErrStreamEnded) || r != nil {
		t.Fatalf("NewReader after Close = %v, %v; expected nil, ErrStreamEnded", r, err)
	}

	// Closing a reader of an ended stream discards what it had left.
	discard.Close()
	if err := readErr(t, discard); !errors.Is(err, ErrReaderClosed) {
		t.Fatalf("Read after Reader.Close on an ended stream: %v, expected ErrReaderClosed", err)
	}
}
