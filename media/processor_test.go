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
	newProc := func() Processor { created++; return p }
	release1 := s.AddProcessor(video.ID, "rtp", newProc)
	release2 := s.AddProcessor(video.ID, "rtp", newProc)
	if created != 1 {
		t.Fatalf("newProc called %d times for two callers, expected once", created)
	}
	// The same name on another track is another processor.
	other := &countingProc{}
	releaseAudio := s.AddProcessor(audio.ID, "rtp", func() Processor { return other })
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
	release3 := s.AddProcessor(video.ID, "rtp", newProc)
	defer release3()
	if created != 2 {
		t.Fatalf("newProc called %d times, expected a new processor after the last release", created)
	}
}

func TestProcessorOrder(t *testing.T) {
	s, video, _ := newTestStream(t)
	var ran []string
	add := func(name string) func() {
		return s.AddProcessor(video.ID, name, func() Processor {
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
	defer s.AddProcessor(0, "bad", func() Processor {
		return procFunc(func(u *Unit) error { return fmt.Errorf("unit at %v: broken", u.PTS) })
	})()
	after := &countingProc{}
	defer s.AddProcessor(0, "after", func() Processor { return after })()

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
	release := s.AddProcessor(video.ID, "nil", func() Processor { return nil })
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
	release := s.AddProcessor(video.ID, "x", func() Processor { return p })
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
	release := s.AddProcessor(video.ID, "slow", func() Processor { return p })

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
