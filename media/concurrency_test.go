package media

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// raceProc fails the test if it is called concurrently with itself or
// after it was closed; its unsynchronised counter lets the race detector
// see concurrent calls too.
type raceProc struct {
	t      *testing.T
	calls  int
	busy   atomic.Bool
	closed atomic.Int32
}

func (p *raceProc) Process(u *Unit) error {
	if !p.busy.CompareAndSwap(false, true) {
		p.t.Error("processor called concurrently")
	}
	if p.closed.Load() != 0 {
		p.t.Error("processor called after Close")
	}
	p.calls++
	u.DTS = u.PTS // processors may set fields; readers read them later
	p.busy.Store(false)
	if p.calls%7 == 0 {
		return errors.New("every seventh fails")
	}
	return nil
}

func (p *raceProc) Close() { p.closed.Add(1) }

func TestConcurrentReadersAndProcessors(t *testing.T) {
	checkGoroutines := goroutineBaseline(t)
	reg := NewRegistry(quietLog)
	s, err := reg.Publish("live/busy", "test")
	if err != nil {
		t.Fatal(err)
	}
	video := &Track{Codec: H264{}}
	audio := &Track{Codec: Opus{Channels: 2}}
	if err := s.SetTracks(video, audio); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var writer sync.WaitGroup
	var written atomic.Int64
	writer.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				s.Write(vunit(video, i, i%60 == 0))
			} else {
				s.Write(aunit(audio, i))
			}
			written.Add(1)
			if i%64 == 0 {
				runtime.Gosched()
			}
		}
	})

	var procsMu sync.Mutex
	var procs []*raceProc
	var workers sync.WaitGroup
	const rounds = 100
	for w := range 8 {
		// Readers come and go, some skipping to a keyframe, some slow.
		workers.Go(func() {
			for i := range rounds {
				r, err := s.NewReader(ReaderOptions{Name: fmt.Sprintf("reader %d.%d", w, i), QueueSize: 1 + rand.IntN(64)})
				if err != nil {
					t.Error(err)
					return
				}
				if i%2 == 0 {
					r.SkipToKeyframe()
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				last := time.Duration(-1)
				for range rand.IntN(50) {
					u, err := r.Read(ctx)
					if err != nil {
						break
					}
					if u.PTS <= last {
						t.Errorf("reader got PTS %v after %v", u.PTS, last)
					}
					_ = u.DTS // set by processors before fan-out: the race detector checks that ordering
					last = u.PTS
					if i%3 == 0 {
						time.Sleep(time.Millisecond) // slow: drops
					}
				}
				cancel()
				_ = r.Dropped()
				if i%4 == 0 {
					go r.Close() // Close from another goroutine than Read
				}
				r.Close()
			}
		})
		// Processors are added and released, shared by name.
		workers.Go(func() {
			for i := range rounds {
				track := rand.IntN(2)
				name := fmt.Sprintf("p%d", rand.IntN(3))
				release := addProc(t, s.Stream, s.Track(track), name, func(*Track) Processor {
					p := &raceProc{t: t}
					procsMu.Lock()
					procs = append(procs, p)
					procsMu.Unlock()
					return p
				})
				time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
				_ = s.ProcessorErrors(track, name)
				release()
				if i%5 == 0 {
					release()
				}
			}
		})
	}
	// Lookups run alongside.
	workers.Go(func() {
		for range rounds * 10 {
			if got, ok := reg.Get("live/busy"); !ok || got != s.Stream {
				t.Error("Get lost the stream")
				return
			}
			_ = reg.Paths()
			_ = s.Tracks()
		}
	})
	workers.Wait()

	// One last reader sees the end.
	r, err := s.NewReader(ReaderOptions{QueueSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	close(stop)
	writer.Wait()
	s.Close()
	for {
		if _, err := r.Read(context.Background()); err != nil {
			if !errors.Is(err, ErrStreamEnded) {
				t.Fatalf("last reader: %v, expected ErrStreamEnded", err)
			}
			break
		}
	}
	r.Close()

	if written.Load() == 0 {
		t.Fatal("nothing was written")
	}
	procsMu.Lock()
	for i, p := range procs {
		if n := p.closed.Load(); n != 1 {
			t.Errorf("processor %d closed %d times, expected once", i, n)
		}
	}
	procsMu.Unlock()
	t.Logf("%d units written, %d processors created", written.Load(), len(procs))
	checkGoroutines()
}

// TestNoGoroutinesStarted: the hub does its work in its callers'
// goroutines; none of its operations leaves one behind.
func TestNoGoroutinesStarted(t *testing.T) {
	base := runtime.NumGoroutine()
	check := func(step string) {
		t.Helper()
		if n := runtime.NumGoroutine(); n > base {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("after %s: %d goroutines, expected at most %d:\n%s", step, n, base, buf)
		}
	}
	reg := NewRegistry(quietLog)
	s, err := reg.Publish("live/g", "test")
	if err != nil {
		t.Fatal(err)
	}
	video, audio := &Track{Codec: H264{}}, &Track{Codec: AAC{SampleRate: 48000, Channels: 2}}
	if err := s.SetTracks(video, audio); err != nil {
		t.Fatal(err)
	}
	check("Publish and SetTracks")
	rs := make([]*Reader, 10)
	for i := range rs {
		if rs[i], err = s.NewReader(ReaderOptions{QueueSize: 8}); err != nil {
			t.Fatal(err)
		}
	}
	rs[0].SkipToKeyframe()
	release := addProc(t, s.Stream, video, "p", func(*Track) Processor { return &countingProc{} })
	check("NewReader and AddProcessor")
	for i := range 100 { // overflows every queue: drops are logged
		s.Write(vunit(video, i, i%10 == 0))
		s.Write(aunit(audio, i))
	}
	readQueued(t, rs[1])
	check("Write and Read")
	release()
	rs[2].Close()
	s.Close()
	for _, r := range rs {
		r.Close()
	}
	check("release and Close")
}

// TestConcurrentRepublishJoinsAndBackfill: publishers come and go on one
// path within the grace while readers join from the GOP cache, ask for
// keyframes, and processors are added (backfilling the cache) and
// released. A processor never runs concurrently with itself nor after its
// Close, every reader sees each track's timestamps increase across the
// takeovers, and nothing deadlocks or leaks.
func TestConcurrentRepublishJoinsAndBackfill(t *testing.T) {
	checkGoroutines := goroutineBaseline(t)
	reg := graceRegistry(time.Minute)
	first, err := reg.Publish("live/churn", "pub 0")
	if err != nil {
		t.Fatal(err)
	}
	s := first.Stream
	if err := first.SetTracks(&Track{Codec: H264{}}, &Track{Codec: Opus{Channels: 2}}); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var writer sync.WaitGroup
	var written, takeovers atomic.Int64
	writer.Go(func() {
		p := first
		for n := 1; ; n++ {
			tracks := p.Tracks()
			for i := range 200 { // each publisher's clock starts at 0
				select {
				case <-stop:
					p.Close()
					return
				default:
				}
				if i%2 == 0 {
					p.Write(vunit(tracks[0], i, i%30 == 0))
				} else {
					p.Write(aunit(tracks[1], i))
				}
				written.Add(1)
				if i%64 == 0 {
					runtime.Gosched()
				}
			}
			p.Close()
			next, err := reg.Publish("live/churn", fmt.Sprint("pub ", n))
			if err != nil {
				t.Error(err)
				return
			}
			if err := next.SetTracks(&Track{Codec: H264{}}, &Track{Codec: Opus{Channels: 2}}); err != nil {
				t.Error(err)
				return
			}
			takeovers.Add(1)
			p = next
		}
	})

	var procsMu sync.Mutex
	var procs []*raceProc
	var workers sync.WaitGroup
	const rounds = 200
	for w := range 6 {
		workers.Go(func() {
			for i := range rounds {
				// Processors first, as egress does, then a joining reader.
				var releases []func()
				for track := range 2 {
					releases = append(releases, addProc(t, s, s.Track(track), fmt.Sprint("p", rand.IntN(2)), func(*Track) Processor {
						p := &raceProc{t: t}
						procsMu.Lock()
						procs = append(procs, p)
						procsMu.Unlock()
						return p
					}))
				}
				r, err := s.NewReader(ReaderOptions{Name: fmt.Sprintf("reader %d.%d", w, i), QueueSize: 1 + rand.IntN(64), StartAtKeyframe: i%2 == 0})
				if err != nil {
					t.Error(err)
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				last := map[int]time.Duration{}
				for j := range rand.IntN(80) {
					u, err := r.Read(ctx)
					if err != nil {
						break
					}
					_ = u.DTS // set by processors, also in backfill copies
					if !r.Cached() {
						if l, ok := last[u.Track.ID]; ok && u.PTS <= l {
							t.Errorf("reader %d.%d: track %d PTS %v after %v", w, i, u.Track.ID, u.PTS, l)
						}
						last[u.Track.ID] = u.PTS
					}
					if j%10 == 5 {
						r.RequestKeyframe(0)
						clear(last) // a replay goes back to the keyframe
					}
				}
				cancel()
				r.Close()
				for _, release := range releases {
					release()
				}
			}
		})
	}
	workers.Wait()
	close(stop)
	writer.Wait()

	if written.Load() == 0 || takeovers.Load() == 0 {
		t.Fatalf("%d units written, %d takeovers", written.Load(), takeovers.Load())
	}
	procsMu.Lock()
	for i, p := range procs {
		if n := p.closed.Load(); n != 1 {
			t.Errorf("processor %d closed %d times, expected once", i, n)
		}
	}
	procsMu.Unlock()
	t.Logf("%d units written, %d takeovers, %d processors", written.Load(), takeovers.Load(), len(procs))
	// The last publisher left; end the stream now rather than wait.
	reg.SetGrace(nil)
	if st, ok := reg.Get("live/churn"); ok {
		p, err := reg.Publish("live/churn", "closer")
		if err != nil {
			t.Fatal(err)
		}
		p.Close()
		<-st.Done()
	}
	checkGoroutines()
}
