package media

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// gatedProc stands for a slow processor (a video re-encoder) whose
// backfill the test holds up at will. Its output is one RTP packet stamped
// with the unit's PTS in milliseconds; it records the PTS of every unit it
// runs over and fails the test if it runs concurrently with itself or
// after Close. At each call number in parkAt it parks until the test
// resumes it, or until free is closed.
type gatedProc struct {
	t      *testing.T
	track  *Track // the track it was made for
	parkAt []int
	parked chan int      // the call number, when it parks
	resume chan struct{} // one token per park
	free   chan struct{} // closed: it parks no more
	busy   atomic.Bool
	closed atomic.Int32

	mu   sync.Mutex
	seen []time.Duration // guarded by mu
}

func newGatedProc(t *testing.T, tr *Track, parkAt ...int) *gatedProc {
	return &gatedProc{
		t: t, track: tr, parkAt: parkAt,
		parked: make(chan int, len(parkAt)),
		resume: make(chan struct{}, len(parkAt)),
		free:   make(chan struct{}),
	}
}

func (p *gatedProc) Process(u *Unit) error {
	if !p.busy.CompareAndSwap(false, true) {
		p.t.Error("processor run concurrently with itself")
	}
	defer p.busy.Store(false)
	if p.closed.Load() != 0 {
		p.t.Error("processor run after Close")
	}
	p.mu.Lock()
	p.seen = append(p.seen, u.PTS)
	n := len(p.seen)
	p.mu.Unlock()
	u.RTP = []*rtp.Packet{{Header: rtp.Header{Timestamp: uint32(u.PTS / time.Millisecond)}}}
	if slices.Contains(p.parkAt, n) {
		p.parked <- n
		select {
		case <-p.resume:
		case <-p.free:
		}
	}
	return nil
}

func (p *gatedProc) Close() { p.closed.Add(1) }

func (p *gatedProc) ran() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen)
}

// waitParked waits until the backfill parks at call n.
func (p *gatedProc) waitParked(t *testing.T, n int) {
	t.Helper()
	select {
	case got := <-p.parked:
		if got != n {
			close(p.free)
			t.Fatalf("parked at call %d, expected %d", got, n)
		}
	case <-time.After(10 * time.Second):
		close(p.free)
		t.Fatalf("the processor did not reach call %d within 10 s (it ran %d times)", n, len(p.ran()))
	}
}

// whileParked runs f (Writes, a takeover: what the publisher does) while
// p's backfill is parked, failing the test if f does not complete: the
// backfill holds the stream up. p is then freed so that the test can end.
func whileParked(t *testing.T, p *gatedProc, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		close(p.free)
		<-done
		t.Fatalf("%s did not complete while a processor's backfill was parked: the backfill holds the stream's write lock", what)
	}
}

type addResult struct {
	release func()
	err     error
}

// addAsync calls AddProcessor on another goroutine, as a WHEP viewer's
// session does while the publisher writes on its own.
func addAsync(s *Stream, tr *Track, name string, newProc func(*Track) Processor) <-chan addResult {
	res := make(chan addResult, 1)
	go func() {
		release, err := releaseOf(s.AddProcessor(tr, name, newProc))
		res <- addResult{release, err}
	}()
	return res
}

func waitAdded(t *testing.T, res <-chan addResult) addResult {
	t.Helper()
	select {
	case r := <-res:
		t.Cleanup(r.release)
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("AddProcessor did not return within 10 s")
		return addResult{}
	}
}

// ptsOf returns the PTS of us.
func ptsOf(us []*Unit) []time.Duration {
	out := make([]time.Duration, len(us))
	for i, u := range us {
		out[i] = u.PTS
	}
	return out
}

// expectOutput checks that got, what a joiner gets, are the units with
// the PTS of want, each carrying p's output for itself.
func expectOutput(t *testing.T, who string, got []*Unit, want []time.Duration) {
	t.Helper()
	if !slices.Equal(ptsOf(got), want) {
		t.Fatalf("%s got %v, expected the units at %v", who, describe(got), want)
	}
	for i, u := range got {
		if len(u.RTP) != 1 || time.Duration(u.RTP[0].Timestamp)*time.Millisecond != u.PTS {
			t.Fatalf("%s: unit %d (%v) does not carry the processor's output for it: %v", who, i, describe(got[i:i+1]), u.RTP)
		}
	}
}

func videoRun(tr *Track, from, to int) []*Unit {
	var us []*Unit
	for i := from; i < to; i++ {
		if i == from && from == 0 {
			us = append(us, idr(tr, i))
		} else {
			us = append(us, vunit(tr, i, false))
		}
	}
	return us
}

// TestBackfillDoesNotHoldUpWrites (issue 12, defect 18): a new processor
// runs over the cached GOP without the stream's write lock: while its
// backfill is parked, the publisher's Writes complete and reach the
// readers. The backfill then catches up with the units written meanwhile,
// over several rounds, and Write takes over: the processor sees every
// unit of its track once, in write order, across the backfill and the
// live units, and a joiner gets every cached unit with its output.
func TestBackfillDoesNotHoldUpWrites(t *testing.T) {
	s, video, _ := newTestStream(t)
	early := newTestReader(t, s, 1024)
	gop := videoRun(video, 0, 100)
	writeAll(s, gop...)

	// Park in the run over the cache (call 50), then in the second round,
	// over the units written during the first (call 103).
	p := newGatedProc(t, video, 50, 103)
	res := addAsync(s.Stream, video, "slow", func(*Track) Processor { return p })
	p.waitParked(t, 50)
	during1 := videoRun(video, 100, 105)
	whileParked(t, p, "Write", func() { writeAll(s, during1...) })
	expectUnits(t, "reader during the backfill", readQueued(t, early), append(slices.Clone(gop), during1...))
	p.resume <- struct{}{}
	p.waitParked(t, 103)
	during2 := videoRun(video, 105, 108)
	whileParked(t, p, "Write", func() { writeAll(s, during2...) })
	p.resume <- struct{}{}
	if r := waitAdded(t, res); r.err != nil {
		t.Fatal(r.err)
	}
	live := videoRun(video, 108, 111)
	writeAll(s, live...)

	all := slices.Concat(gop, during1, during2, live)
	if got, want := p.ran(), ptsOf(all); !slices.Equal(got, want) {
		t.Fatalf("the processor ran over %v\nexpected each unit once, in write order: %v", got, want)
	}
	for _, u := range live {
		if len(u.RTP) != 1 {
			t.Fatalf("live unit %v not processed by Write", describe([]*Unit{u}))
		}
	}
	expectUnits(t, "reader after the backfill", readQueued(t, early), append(slices.Clone(during2), live...))
	for _, u := range slices.Concat(gop, during1, during2) {
		if u.RTP != nil {
			t.Fatalf("a unit the early reader holds, %v, was modified by the backfill", describe([]*Unit{u}))
		}
	}
	expectOutput(t, "joiner", readQueued(t, newJoiner(t, s.Stream, 0)), ptsOf(all))
	if p.closed.Load() != 0 {
		t.Fatal("processor closed")
	}
}

// TestBackfillNewKeyframeMeanwhile: a keyframe written during the backfill
// starts a new GOP, and the units before it leave the cache: the backfill
// goes on from that keyframe (each unit once, in order), the old GOP's
// copies are dropped, and a joiner gets the new GOP with the output.
func TestBackfillNewKeyframeMeanwhile(t *testing.T) {
	s, video, audio := newTestStream(t)
	gop := videoRun(video, 0, 10)
	writeAll(s, gop...)
	p := newGatedProc(t, video, 3)
	res := addAsync(s.Stream, video, "slow", func(*Track) Processor { return p })
	p.waitParked(t, 3)
	gone := videoRun(video, 10, 12) // continue the old GOP, then leave with it
	next := []*Unit{idr(video, 12), aunit(audio, 13), vunit(video, 14, false)}
	whileParked(t, p, "Write", func() { writeAll(s, slices.Concat(gone, next)...) })
	p.resume <- struct{}{}
	if r := waitAdded(t, res); r.err != nil {
		t.Fatal(r.err)
	}
	live := vunit(video, 15, false)
	s.Write(live)

	want := ptsOf(slices.Concat(gop, []*Unit{next[0], next[2], live}))
	if got := p.ran(); !slices.Equal(got, want) {
		t.Fatalf("the processor ran over %v\nexpected the old GOP, then from the new keyframe on, each once: %v", got, want)
	}
	var video2 []*Unit
	for _, u := range readQueued(t, newJoiner(t, s.Stream, 0)) {
		if u.Track == video {
			video2 = append(video2, u)
		}
	}
	expectOutput(t, "joiner", video2, ptsOf([]*Unit{next[0], next[2], live}))
}

// TestBackfillSecondCaller: a second caller asking for the processor
// whose backfill runs waits for it, and gets that processor: when its
// AddProcessor returns, the backfill is done (its reader would get the
// output), and the constructor ran once.
func TestBackfillSecondCaller(t *testing.T) {
	s, video, _ := newTestStream(t)
	gop := videoRun(video, 0, 20)
	writeAll(s, gop...)
	p := newGatedProc(t, video, 5)
	var made atomic.Int32
	newProc := func(*Track) Processor { made.Add(1); return p }
	first := addAsync(s.Stream, video, "slow", newProc)
	p.waitParked(t, 5)
	ranWhenAdded := make(chan int, 1)
	second := make(chan addResult, 1)
	go func() {
		release, err := releaseOf(s.AddProcessor(video, "slow", newProc))
		ranWhenAdded <- len(p.ran())
		second <- addResult{release, err}
	}()
	whileParked(t, p, "Write", func() { s.Write(vunit(video, 20, false)) })
	p.resume <- struct{}{}
	for _, res := range []<-chan addResult{first, second} {
		if r := waitAdded(t, res); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if n := <-ranWhenAdded; n != len(gop)+1 {
		t.Fatalf("the second caller's AddProcessor returned after %d units of the backfill, expected all %d", n, len(gop)+1)
	}
	if n := made.Load(); n != 1 {
		t.Fatalf("constructor called %d times, expected once", n)
	}
}

// TestBackfillTakeover: a publisher taking the stream over during a
// backfill. With the same codecs, the processor is closed and made again
// for the new track and backfills the new publisher's units; with others,
// AddProcessor fails with ErrNoTrack. Either way the first is closed once
// and never runs again.
func TestBackfillTakeover(t *testing.T) {
	for _, tc := range []struct {
		name  string
		codec Codec
	}{
		{"compatible", H264{}},
		{"other codecs", Opus{Channels: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := graceRegistry(time.Minute)
			first := publishTracks(t, reg, "live/takeover", "first", &Track{Codec: H264{}})
			video := first.Track(0)
			writeAll(first, videoRun(video, 0, 10)...)
			old := newGatedProc(t, video, 2)
			var mu sync.Mutex
			var procs []*gatedProc // guarded by mu
			res := addAsync(first.Stream, video, "slow", func(tr *Track) Processor {
				p := old
				if tr != video {
					p = newGatedProc(t, tr)
				}
				mu.Lock()
				procs = append(procs, p)
				mu.Unlock()
				return p
			})
			old.waitParked(t, 2)
			var next *Publication
			var written []*Unit
			whileParked(t, old, "A takeover", func() {
				first.Close()
				next = publishTracks(t, reg, "live/takeover", "next", &Track{Codec: tc.codec})
				tr := next.Track(0)
				if tr.IsVideo() {
					written = videoRun(tr, 0, 3)
				} else {
					written = []*Unit{aunit(tr, 0), aunit(tr, 1)}
				}
				writeAll(next, written...)
			})
			old.resume <- struct{}{}
			r := waitAdded(t, res)
			if n := old.closed.Load(); n != 1 {
				t.Fatalf("the first publisher's processor closed %d times, expected once", n)
			}
			mu.Lock()
			defer mu.Unlock()
			if !next.Track(0).IsVideo() {
				if !errors.Is(r.err, ErrNoTrack) {
					t.Fatalf("AddProcessor: %v, expected ErrNoTrack", r.err)
				}
				next.Stream.mu.Lock()
				left := len(next.processors)
				next.Stream.mu.Unlock()
				if len(procs) != 1 || left != 0 {
					t.Fatalf("%d processors made, %d left on the stream; expected 1 and none", len(procs), left)
				}
				return
			}
			if r.err != nil {
				t.Fatal(r.err)
			}
			if len(procs) != 2 || procs[1].track != next.Track(0) {
				t.Fatalf("%d processors made, expected a second one for the new track", len(procs))
			}
			if got, want := procs[1].ran(), ptsOf(written); !slices.Equal(got, want) {
				t.Fatalf("the new processor ran over %v, expected the new publisher's %v", got, want)
			}
			expectOutput(t, "joiner", readQueued(t, newJoiner(t, next.Stream, 0)), ptsOf(written))
		})
	}
}

// TestBackfillOutputCounted: what a processor adds to the cached units in
// its backfill counts toward MaxGOPBytes, as it does for live units (Write
// runs the processors before caching): a GOP that fits without the
// output, but not with it, is no longer cached.
func TestBackfillOutputCounted(t *testing.T) {
	s, video, _ := newTestStream(t)
	frame := make([]byte, 100<<10)
	var gop []*Unit
	for i := range 150 { // 15 MiB of NAL units
		u := vunit(video, i, i == 0)
		u.NALUs = [][]byte{frame}
		gop = append(gop, u)
	}
	writeAll(s, gop...)
	release := addProc(t, s.Stream, video, "double", func(*Track) Processor {
		return procFunc(func(u *Unit) error {
			u.RTP = []*rtp.Packet{{Payload: frame}} // as many bytes again, packetized
			return nil
		})
	})
	defer release()
	held := 0
	for _, u := range readQueued(t, newJoiner(t, s.Stream, 0)) {
		held += u.Size()
	}
	if held > MaxGOPBytes {
		t.Fatalf("the GOP cache holds %.1f MiB after the backfill, bound %d MiB", float64(held)/(1<<20), MaxGOPBytes>>20)
	}
}

// TestGOPReplace: replace counts the copy's size instead of the
// original's, and applies the bound.
func TestGOPReplace(t *testing.T) {
	video := &Track{ID: 0, Codec: H264{}}
	var c gopCache
	c.reset([]*Track{video})
	k, p := idr(video, 0), vunit(video, 1, false)
	c.add(k)
	c.add(p)
	bigger := *p
	bigger.RTP = []*rtp.Packet{{Payload: make([]byte, 1000)}}
	c.replace(c.index(c.first+1), &bigger)
	if want := k.Size() + bigger.Size(); c.bytes != want {
		t.Fatalf("bytes = %d after replace, expected %d", c.bytes, want)
	}
	huge := *p
	huge.RTP = []*rtp.Packet{{Payload: make([]byte, MaxGOPBytes)}}
	c.replace(1, &huge)
	if len(c.units) != 0 || c.bytes != 0 {
		t.Fatalf("a copy past the bound left %d units, %d bytes cached", len(c.units), c.bytes)
	}
}

// BenchmarkWriteDuringBackfill measures the longest Write of a publisher
// writing a unit every 10 ms while a processor that takes 50 ms per unit
// is added over a cached GOP of 100 units (a re-encoder at 1080p on a
// slow core): the time a backfill holds the publisher up.
func BenchmarkWriteDuringBackfill(b *testing.B) {
	var worst time.Duration
	for b.Loop() {
		s, video, _ := newTestStream(b)
		gop := videoRun(video, 0, 100)
		writeAll(s, gop...)
		made := time.Now()
		slow := func(*Track) Processor {
			return procFunc(func(u *Unit) error {
				if !u.Arrived.After(made) { // the cached units
					time.Sleep(50 * time.Millisecond)
				}
				return nil
			})
		}
		res := addAsync(s.Stream, video, "slow", slow)
		for i := 100; ; i++ {
			select {
			case r := <-res:
				r.release()
			default:
				start := time.Now()
				s.Write(vunit(video, i, false))
				worst = max(worst, time.Since(start))
				time.Sleep(10 * time.Millisecond)
				continue
			}
			break
		}
	}
	b.ReportMetric(float64(worst)/float64(time.Millisecond), "max-write-ms")
}
