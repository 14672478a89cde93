package media

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Reader receives a stream's units through a bounded queue. Writes never
// wait for it: when the queue is full the unit is dropped and counted, and
// video is skipped up to the next keyframe so the reader's decoder never sees
// a broken reference chain. Read is for one goroutine; Close and Dropped are
// safe from any.
type Reader struct {
	stream  *Stream
	name    string
	dropped atomic.Uint64

	mu        sync.Mutex
	buf       []*Unit // ring, guarded by mu
	head, n   int     // guarded by mu
	skipToKey bool    // guarded by mu: drop video until a keyframe
	skipSlow  bool    // guarded by mu: the skip follows an overflow, so it counts as drops
	err       error   // guarded by mu: set when the reader ends
	notify    chan struct{}

	// owned by the Read goroutine
	reported     uint64
	lastReported time.Time
}

// Dropped returns how many units were discarded because the reader was slow.
func (r *Reader) Dropped() uint64 { return r.dropped.Load() }

func (r *Reader) push(u *Unit) {
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		return
	}
	video := u.Track.IsVideo()
	if video && r.skipToKey {
		if !u.Key || r.n == len(r.buf) {
			slow := r.skipSlow || r.n == len(r.buf)
			r.mu.Unlock()
			if slow {
				r.dropped.Add(1)
			}
			return
		}
		r.skipToKey, r.skipSlow = false, false
	}
	if r.n == len(r.buf) {
		r.skipToKey, r.skipSlow = true, true
		r.mu.Unlock()
		r.dropped.Add(1)
		return
	}
	r.buf[(r.head+r.n)%len(r.buf)] = u
	r.n++
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Read returns the next unit, waiting for one. It returns ErrStreamEnded
// (wrapped) once the publisher has left, ErrReaderClosed after Close, or the
// context's error.
func (r *Reader) Read(ctx context.Context) (*Unit, error) {
	r.reportDrops()
	for {
		r.mu.Lock()
		if r.err != nil {
			err := r.err
			r.mu.Unlock()
			return nil, err
		}
		if r.n > 0 {
			u := r.buf[r.head]
			r.buf[r.head] = nil
			r.head = (r.head + 1) % len(r.buf)
			r.n--
			r.mu.Unlock()
			return u, nil
		}
		r.mu.Unlock()
		select {
		case <-r.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// reportDrops logs drops at most once a second, so a slow reader cannot
// flood the log.
func (r *Reader) reportDrops() {
	d := r.dropped.Load()
	if d == r.reported || time.Since(r.lastReported) < time.Second {
		return
	}
	r.stream.log.Warn("reader is too slow, discarded units", "reader", r.name, "discarded", d-r.reported, "total", d)
	r.reported = d
	r.lastReported = time.Now()
}

// SkipToKeyframe makes the reader ignore video units until the next
// keyframe, e.g. for a new viewer whose decoder needs one to start.
func (r *Reader) SkipToKeyframe() {
	r.mu.Lock()
	r.skipToKey = true
	r.mu.Unlock()
}

func (r *Reader) end(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = fmt.Errorf("stream %q: %w", r.stream.path, err)
		clear(r.buf)
		r.n = 0
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Close detaches the reader from its stream. Safe to call more than once.
func (r *Reader) Close() {
	r.stream.removeReader(r)
	r.end(ErrReaderClosed)
}
