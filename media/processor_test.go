package media

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/panics"
)

// procFunc adapts a function to Processor.
type procFunc func(*Unit) error

func (f procFunc) Process(u *Unit) error { return f(u) }

// countingProc counts its calls and its Close calls.
type countingProc struct {
	calls  atomic.Int64
	closes atomic.Int64
}

func (p *countingProc) Process(*Unit) error { p.calls.Add(1); return nil }
func (p *countingProc) Close()              { p.closes.Add(1) }

func TestProcessorSharedByName(t *testing.T) {
	s, video, audio := newTestStream(t)
	created := 0
	p := &countingProc{}
	newProc := func(*Track) Processor { created++; return p }
	release1 := addProc(t, s.Stream, video, "rtp", newProc)
	release2 := addProc(t, s.Stream, video, "rtp", newProc)
	if created != 1 {
		t.Fatalf("newProc called %d times for two callers, expected once", created)
	}
	// The same name on another track is another processor.
	other := &countingProc{}
	releaseAudio := addProc(t, s.Stream, audio, "rtp", func(*Track) Processor { return other })
	defer releaseAudio()

	s.Write(vunit(video, 0, true))
	s.Write(aunit(audio, 1))
	if p.calls.Load() != 1 || other.calls.Load() != 1 {
		t.Fatalf("calls: video %d, audio %d; expected 1 each", p.calls.Load(), other.calls.Load())
	}

	// Releasing twice drops one reference, not two.
	release1()
	release1()
	s.Write(vunit(video, 2, false))
	if got := p.calls.Load(); got != 2 {
		t.Fatalf("after one caller's release: %d calls, expected 2 (still running)", got)
	}
	if got := p.closes.Load(); got != 0 {
		t.Fatalf("closed %d times while a caller still holds it", got)
	}

	release2()
	if got := p.closes.Load(); got != 1 {
		t.Fatalf("closed %d times after the last release, expected once", got)
	}
	s.Write(vunit(video, 3, false))
	if got := p.calls.Load(); got != 2 {
		t.Fatalf("called after the last release: %d calls, expected 2", got)
	}
	release2()
	release1()
	if got := p.closes.Load(); got != 1 {
		t.Fatalf("closed %d times after repeated releases, expected once", got)
	}

	// Added again: a fresh one is created.
	release3 := addProc(t, s.Stream, video, "rtp", newProc)
	defer release3()
	if created != 2 {
		t.Fatalf("newProc called %d times, expected a new processor after the last release", created)
	}
}

func TestProcessorOrder(t *testing.T) {
	s, video, _ := newTestStream(t)
	var ran []string
	add := func(name string) func() {
		return addProc(t, s.Stream, video, name, func(*Track) Processor {
			return procFunc(func(*Unit) error { ran = append(ran, name); return nil })
		})
	}
	names := []string{"m", "c", "x", "a", "q", "b", "z", "e"}
	releases := map[string]func(){}
	for _, n := range names {
		releases[n] = add(n)
	}
	for i := range 50 {
		ran = ran[:0]
		s.Write(vunit(video, i, true))
		if !slices.Equal(ran, names) {
			t.Fatalf("write %d ran %q, expected the registration order %q", i, ran, names)
		}
	}
	// A second caller does not move a processor; one released by all and
	// added again goes last.
	defer add("c")()
	releases["x"]()
	defer add("x")()
	ran = ran[:0]
	s.Write(vunit(video, 99, true))
	if want := []string{"m", "c", "a", "q", "b", "z", "e", "x"}; !slices.Equal(ran, want) {
		t.Fatalf("ran %q, expected %q", ran, want)
	}
	for n, release := range releases {
		if n != "x" {
			release()
		}
	}
}

// TestProcessorErrorsCounted: a failing processor neither stops the ones
// after it nor the fan-out, its errors are counted, and the log is
// rate-limited.
func TestProcessorErrorsCounted(t *testing.T) {
	var logs bytes.Buffer
	var logMu sync.Mutex
	reg := NewRegistry(slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil)))
	s, err := reg.Publish("live/err", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	video := &Track{Codec: H264{}}
	if err := s.SetTracks(video); err != nil {
		t.Fatal(err)
	}
	r := newTestReader(t, s, 0)
	defer addProc(t, s.Stream, video, "bad", func(*Track) Processor {
		return procFunc(func(u *Unit) error { return fmt.Errorf("unit at %v: broken", u.PTS) })
	})()
	after := &countingProc{}
	defer addProc(t, s.Stream, video, "after", func(*Track) Processor { return after })()

	us := make([]*Unit, 10)
	for i := range us {
		us[i] = vunit(video, i, i == 0)
		s.Write(us[i])
	}
	if got := s.ProcessorErrors(0, "bad"); got != 10 {
		t.Fatalf("ProcessorErrors = %d, expected 10", got)
	}
	if got := s.ProcessorErrors(0, "after"); got != 0 {
		t.Fatalf("ProcessorErrors(after) = %d, expected 0", got)
	}
	if got := s.ProcessorErrors(0, "none"); got != 0 {
		t.Fatalf("ProcessorErrors(none) = %d, expected 0", got)
	}
	if got := after.calls.Load(); got != 10 {
		t.Fatalf("the processor after the failing one ran %d times, expected 10", got)
	}
	expectUnits(t, "reader", readQueued(t, r), us)
	logMu.Lock()
	defer logMu.Unlock()
	if n := strings.Count(logs.String(), "processor failed"); n != 1 {
		t.Fatalf("logged %d processor failures for 10 errors within a second, expected 1:\n%s", n, logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func TestProcessorNil(t *testing.T) {
	s, video, _ := newTestStream(t)
	r := newTestReader(t, s, 0)
	release, err := releaseOf(s.AddProcessor(video, "nil", func(*Track) Processor { return nil }))
	if err == nil {
		t.Fatal("AddProcessor with a constructor returning nil: no error")
	}
	u := vunit(video, 0, true)
	s.Write(u)
	release()
	release()
	expectUnits(t, "reader", readQueued(t, r), []*Unit{u})
}

type errCloser struct{ closes atomic.Int64 }

func (*errCloser) Process(*Unit) error { return nil }
func (p *errCloser) Close() error      { p.closes.Add(1); return errors.New("close failed") }

func TestProcessorCloseWithError(t *testing.T) {
	s, video, _ := newTestStream(t)
	p := &errCloser{}
	release := addProc(t, s.Stream, video, "x", func(*Track) Processor { return p })
	release()
	if got := p.closes.Load(); got != 1 {
		t.Fatalf("Close() error called %d times, expected once", got)
	}
}

// blockingProc blocks in Process until released, and records whether Close
// came while it was still running.
type blockingProc struct {
	entered chan struct{}
	proceed chan struct{}
	running atomic.Bool
	badStop atomic.Bool
	closed  atomic.Bool
}

func (p *blockingProc) Process(*Unit) error {
	p.running.Store(true)
	p.entered <- struct{}{}
	<-p.proceed
	p.running.Store(false)
	return nil
}

func (p *blockingProc) Close() {
	if p.running.Load() {
		p.badStop.Store(true)
	}
	p.closed.Store(true)
}

// TestReleaseWaitsForRunningWrite: once release returns, the processor is
// not running and never runs again, even if a Write had already started it.
func TestReleaseWaitsForRunningWrite(t *testing.T) {
	s, video, _ := newTestStream(t)
	p := &blockingProc{entered: make(chan struct{}), proceed: make(chan struct{})}
	release := addProc(t, s.Stream, video, "slow", func(*Track) Processor { return p })

	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		s.Write(vunit(video, 0, true))
	}()
	<-p.entered // Write is inside Process

	released := make(chan struct{})
	go func() {
		defer close(released)
		release()
	}()
	select {
	case <-released:
		t.Fatal("release returned while Write was running the processor")
	case <-time.After(50 * time.Millisecond):
	}
	close(p.proceed)
	<-released
	<-wrote
	if p.badStop.Load() || !p.closed.Load() {
		t.Fatalf("closed while running: %v; closed: %v", p.badStop.Load(), p.closed.Load())
	}
	s.Write(vunit(video, 1, false)) // would block on entered if it ran
}

// TestAddProcessorUnknownTrack: a track the stream does not have (an ID out
// of range, another codec under the ID, none given) is refused with
// ErrNoTrack before any constructor runs; the constructor is given the
// stream's own track.
func TestAddProcessorUnknownTrack(t *testing.T) {
	s, video, audio := newTestStream(t)
	never := func(*Track) Processor { t.Error("constructor called for a track the stream does not have"); return nil }
	for name, tr := range map[string]*Track{
		"out of range":  {ID: 2, Codec: Opus{Channels: 2}},
		"negative":      {ID: -1, Codec: Opus{Channels: 2}},
		"another codec": {ID: audio.ID, Codec: Opus{Channels: 2}},
		"nil":           nil,
	} {
		release, err := releaseOf(s.AddProcessor(tr, "p", never))
		if !errors.Is(err, ErrNoTrack) {
			t.Errorf("%s: %v, expected ErrNoTrack", name, err)
		}
		release() // never nil
	}
	// The same ID and codec from elsewhere (a viewer negotiated for the
	// previous publisher's track): the stream's own track is given.
	var got *Track
	defer addProc(t, s.Stream, &Track{ID: video.ID, Codec: H264{}}, "p", func(t *Track) Processor { got = t; return &countingProc{} })()
	if got != video {
		t.Fatalf("constructor given %v, expected the stream's %v", got, video)
	}
}

// panicProc panics in Process from its call number at on, and in Close if
// closeToo.
type panicProc struct {
	at, calls int
	closeToo  bool
	closes    atomic.Int64
}

func (p *panicProc) Process(*Unit) error {
	p.calls++
	if p.calls >= p.at {
		panic(fmt.Sprintf("processor bug at call %d", p.calls))
	}
	return nil
}

func (p *panicProc) Close() {
	p.closes.Add(1)
	if p.closeToo {
		panic("close bug")
	}
}

func panicCount() uint64 {
	for _, c := range panics.Counts() {
		if c.Component == "processor" {
			return c.N
		}
	}
	return 0
}

// TestProcessorPanicEndsItAlone: a processor that panics in Write is ended
// (removed, closed once, never run again, counted as a "processor" panic);
// the unit, the later units, the other processors and the readers go on.
func TestProcessorPanicEndsItAlone(t *testing.T) {
	s, video, audio := newTestStream(t)
	r := newTestReader(t, s, 0)
	before := panicCount()
	bad := &panicProc{at: 2, closeToo: true}
	releaseBad := addProc(t, s.Stream, video, "bad", func(*Track) Processor { return bad })
	after, other := &countingProc{}, &countingProc{}
	defer addProc(t, s.Stream, video, "after", func(*Track) Processor { return after })()
	defer addProc(t, s.Stream, audio, "other", func(*Track) Processor { return other })()

	us := []*Unit{vunit(video, 0, true), vunit(video, 1, false), aunit(audio, 2), vunit(video, 3, false)}
	writeAll(s, us...)
	expectUnits(t, "reader", readQueued(t, r), us)
	if bad.calls != 2 || bad.closes.Load() != 1 {
		t.Fatalf("panicking processor: %d calls, %d closes; expected 2 calls (ended at the panic), closed once", bad.calls, bad.closes.Load())
	}
	if after.calls.Load() != 3 || other.calls.Load() != 1 {
		t.Fatalf("other processors ran %d and %d times, expected 3 and 1", after.calls.Load(), other.calls.Load())
	}
	if got := panicCount() - before; got != 2 { // Process, then Close
		t.Fatalf("%d processor panics counted, expected 2", got)
	}
	releaseBad()
	if bad.closes.Load() != 1 {
		t.Fatalf("closed %d times after its holder's release, expected once", bad.closes.Load())
	}
	// Added again under the same name: a new one.
	again := &countingProc{}
	defer addProc(t, s.Stream, video, "bad", func(*Track) Processor { return again })()
	s.Write(vunit(video, 4, false))
	if again.calls.Load() != 4 {
		t.Fatalf("the processor added again ran %d times, expected 4 (the 3 cached video units, then the live one)", again.calls.Load())
	}
	expectOpen(t, s.Stream)
}

// TestProcessorPanicOnAdd: a constructor that panics, or a processor that
// panics over the cached GOP, makes AddProcessor fail; the cache and the
// stream are as before.
func TestProcessorPanicOnAdd(t *testing.T) {
	s, video, audio := newTestStream(t)
	us := interleaved(video, audio, 6, 3)
	writeAll(s, us...)
	if _, err := s.AddProcessor(video, "ctor", func(*Track) Processor { panic("constructor bug") }); err == nil {
		t.Fatal("AddProcessor with a panicking constructor: no error")
	}
	bad := &panicProc{at: 2}
	if _, err := s.AddProcessor(video, "backfill", func(*Track) Processor { return bad }); err == nil {
		t.Fatal("AddProcessor with a processor panicking over the cache: no error")
	}
	if bad.closes.Load() != 1 {
		t.Fatalf("processor that panicked over the cache closed %d times, expected once", bad.closes.Load())
	}
	r, err := s.NewReader(ReaderOptions{StartAtKeyframe: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := readQueued(t, r); len(got) != len(us) {
		t.Fatalf("joining reader got %v, expected the cached %v", describe(got), describe(us))
	}
	if n := len(s.processors); n != 0 {
		t.Fatalf("%d processors left", n)
	}
}
