// Package memrelease gives the memory of sessions that ended back to the
// operating system soon after a crowd of them leaves, not minutes later.
//
// Why the runtime alone is slow at it: Go collects when the heap has grown
// by GOGC percent since the last collection, and once the viewers of a
// stream leave nothing allocates, so no collection runs until the forced
// one the runtime makes every two minutes; until then the sessions' heap
// is garbage nobody has found. And what a collection frees goes back to
// the OS only through the background scavenger, which keeps the heap goal
// of the last collection (the peak's, until one runs after the drop) and
// returns pages at about 1 % of a CPU. Measured with 200 pion viewers
// (docs/BENCHMARKS.md): RSS 142 MiB just after they left, still 143 MiB
// 60 s later, against 41 MiB before they came.
//
// A Watcher polls a session count and, after it dropped sharply and
// stopped falling for a few seconds, collects and calls debug.FreeOSMemory
// (another collection, then every free page returned at once) on its own
// goroutine: never on a session's path, at most once per minInterval, and
// not at all while the count only grows or churns by a few sessions.
package memrelease

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/wishbridge/bridge/internal/panics"
)

// The policy's numbers.
const (
	// pollInterval is how often the count is read: a mutex and a map
	// length, nothing against two seconds.
	pollInterval = 2 * time.Second
	// minDrop is the fall from the count's peak that makes a release
	// worth it: a WebRTC session costs about half a MiB of RSS
	// (docs/BENCHMARKS.md), so 32 of them are 16 MiB, more than the heap
	// regrows between two of the runtime's own collections at idle.
	// Fewer are left to the runtime.
	minDrop = 32
	// settle is how long the count must have stopped falling before a
	// release: what a closed session leaves for a few seconds must be
	// gone, or one collection misses it (pion's UDP mux keeps each closed
	// session's connections for its 5 s write-abort grace, ice v4.4.8
	// writeAbortGrace; the last goroutines end). Measured after 150
	// viewers left: 8.4 MiB of heap still in use after a release 2 s
	// later, 6.5 MiB 6 s later (3.4 before they came).
	settle = 6 * time.Second
	// maxWait is how long a drop may go on falling before it is released
	// anyway: a crowd leaving over minutes still gets its memory back
	// along the way.
	maxWait = 20 * time.Second
	// minInterval spaces releases. One costs two collections and
	// returning the free pages (measured: 32 ms of wall time after 200
	// viewers left, 88 MiB returned), and pages returned are faulted in
	// again if the heap regrows: at most once per 30 s it stays a
	// fraction of a percent of a core whatever the churn.
	minInterval = 30 * time.Second
)

// policy decides when to release, from the counts it is shown. The zero
// value is ready.
type policy struct {
	peak      int       // highest count since the last release
	last      int       // the previous count
	fell      time.Time // when the count last fell
	dropSince time.Time // when the count first stood minDrop under peak; zero if it does not
	released  time.Time // the last release; zero before the first
}

// observe takes count n read at now and reports whether to release now.
func (p *policy) observe(n int, now time.Time) bool {
	if n < p.last {
		p.fell = now
	}
	p.last = n
	if n >= p.peak {
		p.peak, p.dropSince = n, time.Time{}
		return false
	}
	if p.peak-n < minDrop {
		p.dropSince = time.Time{}
		return false
	}
	if p.dropSince.IsZero() {
		p.dropSince = now
	}
	if now.Sub(p.fell) < settle && now.Sub(p.dropSince) < maxWait {
		return false // still leaving, or just left: one collection once they are gone
	}
	if !p.released.IsZero() && now.Sub(p.released) < minInterval {
		return false // the drop waits; the peak is kept
	}
	p.peak, p.dropSince, p.released = n, time.Time{}, now
	return true
}

// Watcher releases memory after the count it watches drops (see the
// package doc). Create it with Start; Stop ends it.
type Watcher struct {
	count func() int
	log   *slog.Logger
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// Start watches count, the number of live sessions (safe to call from any
// goroutine), until Stop. A nil log means slog.Default().
func Start(count func() int, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.Default()
	}
	w := &Watcher{count: count, log: log.With("component", "memrelease"), stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

// Stop ends the watching and waits for it; safe to call more than once.
func (w *Watcher) Stop() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}

func (w *Watcher) run() {
	defer close(w.done)
	// Only the ticker loop is outside panics.Do: a panic there ends the
	// watching, never the process.
	defer panics.Recover("memrelease", w.log, nil)
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	var p policy
	for {
		select {
		case <-w.stop:
			return
		case now := <-t.C:
			panics.Do("memrelease", w.log, func() {
				if n := w.count(); p.observe(n, now) {
					w.release(n)
				}
			})
		}
	}
}

// release collects twice and returns every free page to the OS, and logs
// what that did: one line at most per minInterval. Twice, because what
// sits in a sync.Pool (pion's packet buffers, udpbatch's batches: the
// peak's worth) survives one collection in the pool's victim cache.
func (w *Watcher) release(sessions int) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	runtime.GC()
	debug.FreeOSMemory() // collects, then returns free pages
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	w.log.Info("memory returned to the OS after sessions ended", "sessions", sessions,
		"heap_inuse_mib", mib(after.HeapInuse), "heap_inuse_before_mib", mib(before.HeapInuse),
		"returned_mib", mib(after.HeapReleased-min(before.HeapReleased, after.HeapReleased)), "took", took.Round(time.Millisecond))
}

func mib(b uint64) float64 { return float64(b*10/(1<<20)) / 10 }
