package media

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestReadersGetEveryUnitInOrder(t *testing.T) {
	s, video, audio := newTestStream(t)
	us := interleaved(video, audio, 3000, 30)
	const readers = 4
	got := make([][]*Unit, readers)
	var wg sync.WaitGroup
	rs := make([]*Reader, readers)
	for i := range rs {
		// Room for everything: this test is about order, not drops.
		rs[i] = newTestReader(t, s, len(us))
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for {
				u, err := rs[i].Read(ctx)
				if err != nil {
					if !errors.Is(err, ErrStreamEnded) {
						t.Errorf("reader %d: %v", i, err)
					}
					return
				}
				got[i] = append(got[i], u)
			}
		})
	}
	for _, u := range us {
		s.Write(u)
	}
	s.Close()
	wg.Wait()
	for i, r := range rs {
		expectUnits(t, r.name, got[i], us)
		if d := r.Dropped(); d != 0 {
			t.Errorf("reader %d dropped %d units", i, d)
		}
	}
}

// TestStuckReaderNeverBlocksWrite: a reader that never reads loses units,
// counted, while Write keeps going and the other readers get everything.
func TestStuckReaderNeverBlocksWrite(t *testing.T) {
	s, video, audio := newTestStream(t)
	const n, size = 10000, 16
	stuck := newTestReader(t, s, size)
	good := newTestReader(t, s, n)
	us := interleaved(video, audio, n, 30)

	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, u := range us {
			s.Write(u)
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Write blocked on a reader that never reads")
	}
	if got := stuck.Dropped(); got != n-size {
		t.Fatalf("stuck reader dropped %d, expected %d", got, n-size)
	}
	expectUnits(t, "stuck", readQueued(t, stuck), us[:size])
	expectUnits(t, "good", readQueued(t, good), us)
	if d := good.Dropped(); d != 0 {
		t.Fatalf("good reader dropped %d", d)
	}
}

func TestDropThenResumeAtKeyframe(t *testing.T) {
	s, video, audio := newTestStream(t)
	slow := newTestReader(t, s, 4)
	all := newTestReader(t, s, 100)
	var written []*Unit
	write := func(us ...*Unit) {
		for _, u := range us {
			s.Write(u)
			written = append(written, u)
		}
	}

	k0, p1, p2, p3 := vunit(video, 0, true), vunit(video, 1, false), vunit(video, 2, false), vunit(video, 3, false)
	write(k0, p1, p2, p3)                          // fills the queue
	write(vunit(video, 4, false), aunit(audio, 5)) // both dropped
	if d := slow.Dropped(); d != 2 {
		t.Fatalf("dropped %d, expected 2", d)
	}
	expectUnits(t, "slow, queued", readQueued(t, slow), []*Unit{k0, p1, p2, p3})

	// The queue has room again, but video waits for a keyframe; the
	// skipped units are drops. Audio passes.
	a7, k9, p10 := aunit(audio, 7), vunit(video, 9, true), vunit(video, 10, false)
	write(vunit(video, 6, false), a7, vunit(video, 8, false), k9, p10)
	expectUnits(t, "slow, after the drop", readQueued(t, slow), []*Unit{a7, k9, p10})
	if d := slow.Dropped(); d != 4 {
		t.Fatalf("dropped %d, expected 4", d)
	}

	expectUnits(t, "all", readQueued(t, all), written)
	if d := all.Dropped(); d != 0 {
		t.Fatalf("the other reader dropped %d", d)
	}
}

// TestKeyframeDroppedWhileSkipping: a keyframe that finds the queue full is
// dropped too, and the skip goes on to the next one.
func TestKeyframeDroppedWhileSkipping(t *testing.T) {
	s, video, _ := newTestStream(t)
	r := newTestReader(t, s, 2)
	k0, p1 := vunit(video, 0, true), vunit(video, 1, false)
	for _, u := range []*Unit{k0, p1, vunit(video, 2, false), vunit(video, 3, true)} {
		s.Write(u)
	}
	expectUnits(t, "queued", readQueued(t, r), []*Unit{k0, p1})
	k5 := vunit(video, 5, true)
	s.Write(vunit(video, 4, false))
	s.Write(k5)
	expectUnits(t, "after", readQueued(t, r), []*Unit{k5})
	if d := r.Dropped(); d != 3 {
		t.Fatalf("dropped %d, expected 3", d)
	}
}

// TestAudioDropKeepsVideo: losing an audio unit does not break video, so
// video is not skipped.
func TestAudioDropKeepsVideo(t *testing.T) {
	s, video, audio := newTestStream(t)
	r := newTestReader(t, s, 1)
	k0 := vunit(video, 0, true)
	s.Write(k0)
	s.Write(aunit(audio, 1)) // dropped
	expectUnits(t, "queued", readQueued(t, r), []*Unit{k0})
	p2 := vunit(video, 2, false)
	s.Write(p2)
	expectUnits(t, "after", readQueued(t, r), []*Unit{p2})
	if d := r.Dropped(); d != 1 {
		t.Fatalf("dropped %d, expected 1", d)
	}
}

// TestSkipIsPerVideoTrack: a drop on one video track skips that track
// only, and each track resumes at its own keyframe.
func TestSkipIsPerVideoTrack(t *testing.T) {
	reg := NewRegistry(quietLog)
	s, err := reg.Publish("live/two", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v0, v1 := &Track{Codec: H264{}}, &Track{Codec: H264{}}
	if err := s.SetTracks(v0, v1); err != nil {
		t.Fatal(err)
	}
	r := newTestReader(t, s, 2)
	a, b := vunit(v0, 0, true), vunit(v1, 1, true)
	s.Write(a)
	s.Write(b)
	s.Write(vunit(v0, 2, false)) // dropped: v0 skips
	expectUnits(t, "queued", readQueued(t, r), []*Unit{a, b})
	c, d := vunit(v1, 3, false), vunit(v0, 5, true)
	s.Write(c)                   // v1 was not hurt
	s.Write(vunit(v0, 4, false)) // v0 still skipping
	s.Write(d)
	expectUnits(t, "after", readQueued(t, r), []*Unit{c, d})
	if got := r.Dropped(); got != 2 {
		t.Fatalf("dropped %d, expected 2", got)
	}
}

func TestSkipToKeyframe(t *testing.T) {
	s, video, audio := newTestStream(t)
	r := newTestReader(t, s, 0)
	r.SkipToKeyframe()
	a1, k3, p4, a5 := aunit(audio, 1), vunit(video, 3, true), vunit(video, 4, false), aunit(audio, 5)
	for _, u := range []*Unit{vunit(video, 0, false), a1, vunit(video, 2, false), k3, p4, a5} {
		s.Write(u)
	}
	expectUnits(t, "reader", readQueued(t, r), []*Unit{a1, k3, p4, a5})
	if d := r.Dropped(); d != 0 {
		t.Fatalf("SkipToKeyframe counted %d drops, expected none", d)
	}
}

// TestSkipToKeyframeBeforeTracks: a reader can join before SetTracks.
func TestSkipToKeyframeBeforeTracks(t *testing.T) {
	reg := NewRegistry(quietLog)
	s, err := reg.Publish("live/early", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := newTestReader(t, s, 0)
	r.SkipToKeyframe()
	video, audio := &Track{Codec: H264{}}, &Track{Codec: Opus{Channels: 2}}
	if err := s.SetTracks(audio, video); err != nil {
		t.Fatal(err)
	}
	a0, k2 := aunit(audio, 0), vunit(video, 2, true)
	for _, u := range []*Unit{a0, vunit(video, 1, false), k2} {
		s.Write(u)
	}
	expectUnits(t, "reader", readQueued(t, r), []*Unit{a0, k2})
	if d := r.Dropped(); d != 0 {
		t.Fatalf("dropped %d, expected none", d)
	}
}

// TestSkipToKeyframeWithFullQueue: when the awaited keyframe finds the queue
// full, the reader is slow after all, and what it loses from then on counts.
func TestSkipToKeyframeWithFullQueue(t *testing.T) {
	s, video, audio := newTestStream(t)
	r := newTestReader(t, s, 1)
	r.SkipToKeyframe()
	a0 := aunit(audio, 0)
	s.Write(a0)
	s.Write(vunit(video, 1, false)) // join skip: not counted
	s.Write(vunit(video, 2, true))  // full: counted
	expectUnits(t, "queued", readQueued(t, r), []*Unit{a0})
	s.Write(vunit(video, 3, false)) // still skipping, now counted
	k4 := vunit(video, 4, true)
	s.Write(k4)
	expectUnits(t, "after", readQueued(t, r), []*Unit{k4})
	if d := r.Dropped(); d != 2 {
		t.Fatalf("dropped %d, expected 2", d)
	}
}

func TestReaderClose(t *testing.T) {
	s, video, audio := newTestStream(t)
	r := newTestReader(t, s, 0)
	other := newTestReader(t, s, 0)
	blocked := newTestReader(t, s, 0)
	s.Write(vunit(video, 0, true))

	waitErr := make(chan error, 1)
	readN(t, blocked, 1)
	go func() { waitErr <- readErr(t, blocked) }()

	r.Close()
	r.Close() // idempotent
	blocked.Close()
	if err := <-waitErr; !errors.Is(err, ErrReaderClosed) {
		t.Fatalf("blocked Read after Close: %v, expected ErrReaderClosed", err)
	}
	// The queued unit is discarded, and later ones never arrive.
	if err := readErr(t, r); !errors.Is(err, ErrReaderClosed) {
		t.Fatalf("Read after Close: %v, expected ErrReaderClosed", err)
	}
	s.Write(aunit(audio, 1))
	if err := readErr(t, r); !errors.Is(err, ErrReaderClosed) {
		t.Fatalf("Read after Close and Write: %v, expected ErrReaderClosed", err)
	}
	if got := len(*s.readers.Load()); got != 1 {
		t.Fatalf("stream has %d readers, expected 1", got)
	}
	if got := readQueued(t, other); len(got) != 2 {
		t.Fatalf("the other reader got %v, expected 2 units", describe(got))
	}
	// Closing after the stream's end changes the error to ErrReaderClosed.
	s.Close()
	if err := readErr(t, other); !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("Read after the end: %v, expected ErrStreamEnded", err)
	}
	other.Close()
	if err := readErr(t, other); !errors.Is(err, ErrReaderClosed) {
		t.Fatalf("Read after the end and Close: %v, expected ErrReaderClosed", err)
	}
}

func TestReadHonoursContext(t *testing.T) {
	s, video, _ := newTestStream(t)
	r := newTestReader(t, s, 0)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := r.Read(ctx)
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Read: %v, expected context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read ignored the cancellation")
	}

	dctx, dcancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer dcancel()
	if _, err := r.Read(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read: %v, expected context.DeadlineExceeded", err)
	}

	// The reader is still usable.
	u := vunit(video, 0, true)
	s.Write(u)
	expectUnits(t, "after cancel", readN(t, r, 1), []*Unit{u})
}

func TestDefaultQueueSize(t *testing.T) {
	s, _, audio := newTestStream(t)
	r := newTestReader(t, s, 0)
	for i := range 600 {
		s.Write(aunit(audio, i))
	}
	if d := r.Dropped(); d != 600-512 {
		t.Fatalf("dropped %d, expected %d (queue of 512)", d, 600-512)
	}
}

// TestSharedNotify: readers sharing one Notify channel are served by one
// goroutine with TryRead: every unit reaches every reader in order, the
// shared channel is signalled for each, and the stream's end comes after
// the queued units.
func TestSharedNotify(t *testing.T) {
	s, video, audio := newTestStream(t)
	us := interleaved(video, audio, 2000, 30)
	notify := make(chan struct{}, 1)
	rs := make([]*Reader, 8)
	for i := range rs {
		r, err := s.NewReader(ReaderOptions{Name: "shared", QueueSize: len(us), Notify: notify})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		rs[i] = r
	}
	got := make([][]*Unit, len(rs))
	done := make(chan struct{})
	go func() {
		defer close(done)
		ended := 0
		for ended < len(rs) {
			select {
			case <-notify:
			case <-time.After(10 * time.Second):
				t.Errorf("no signal for 10 s; %d readers ended", ended)
				return
			}
			ended = 0
			for i, r := range rs {
				for {
					u, cached, err := r.TryRead()
					if cached {
						t.Errorf("reader %d: live unit marked cached", i)
					}
					if u == nil {
						if errors.Is(err, ErrStreamEnded) {
							ended++
						} else if err != nil {
							t.Errorf("reader %d: %v", i, err)
						}
						break
					}
					got[i] = append(got[i], u)
				}
			}
		}
	}()
	for _, u := range us {
		s.Write(u)
	}
	s.Close()
	<-done
	for i := range rs {
		expectUnits(t, "shared reader", got[i], us)
	}
}
