package media

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Reader receives a stream's units through a bounded queue. Writes never
// wait for it: when the queue is full the unit is dropped and counted, and if
// it was video, that track is skipped up to its next keyframe so the
// reader's decoder never sees a broken reference chain. Read is for one
// goroutine; Close, Dropped and SkipToKeyframe are safe from any.
type Reader struct {
	stream  *Stream
	name    string
	dropped atomic.Uint64

	mu      sync.Mutex
	buf     []*Unit     // ring, guarded by mu
	head, n int         // guarded by mu
	skip    []skipState // guarded by mu: per track ID, video only
	joinAll bool        // guarded by mu: SkipToKeyframe was called; applies to tracks skip does not cover yet
	err     error       // guarded by mu: set when the reader ends
	notify  chan struct{}

	drops dropReport // guarded by mu
}

// skipState says whether a reader is skipping a video track to its next
// keyframe, and why.
type skipState uint8

const (
	noSkip   skipState = iota
	skipJoin           // SkipToKeyframe: skipped units are not drops
	skipSlow           // the queue overflowed: skipped units are drops
)

// dropReport rate-limits the reader's drop log to once a second.
type dropReport struct {
	reported uint64
	last     time.Time
}

// Dropped returns how many units were discarded because the reader was slow
// (a full queue, and video skipped after that up to the next keyframe).
// Units skipped because of SkipToKeyframe are not counted.
func (r *Reader) Dropped() uint64 { return r.dropped.Load() }

// clock reads the time at most once per Write, however many readers drop
// (time.Now is not free, and a Write may reach thousands of slow readers).
type clock struct{ t time.Time }

func (c *clock) now() time.Time {
	if c.t.IsZero() {
		c.t = time.Now()
	}
	return c.t
}

func (r *Reader) push(u *Unit, clk *clock) {
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		return
	}
	full := r.n == len(r.buf)
	if u.Track.IsVideo() {
		st := r.skipState(u.Track.ID)
		if *st != noSkip && (!u.Key || full) {
			// Still looking for a keyframe, or found one with no room for
			// it: that loss is the reader's slowness, and so is the rest
			// of the skip.
			if u.Key {
				*st = skipSlow
			}
			r.dropLocked(*st == skipSlow, clk)
			return
		}
		*st = noSkip
		if full {
			*st = skipSlow
		}
	}
	if full {
		r.dropLocked(true, clk)
		return
	}
	i := r.head + r.n
	if i >= len(r.buf) {
		i -= len(r.buf)
	}
	r.buf[i] = u
	r.n++
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// skipState returns the skip state of track id, growing r.skip if needed.
// Called with r.mu held.
func (r *Reader) skipState(id int) *skipState {
	if id >= len(r.skip) {
		grown := make([]skipState, max(id+1, len(r.stream.Tracks())))
		copy(grown, r.skip)
		if r.joinAll {
			for i := len(r.skip); i < len(grown); i++ {
				grown[i] = skipJoin
			}
		}
		r.skip = grown
	}
	return &r.skip[id]
}

// dropLocked discards the unit being pushed, counting it if counted, and
// unlocks r.mu. Drops are logged at most once a second, from the writer's
// goroutine, so a reader that never reads is reported too.
func (r *Reader) dropLocked(counted bool, clk *clock) {
	if !counted {
		r.mu.Unlock()
		return
	}
	total := r.dropped.Add(1)
	var since uint64
	if now := clk.now(); now.Sub(r.drops.last) >= time.Second {
		since = total - r.drops.reported
		r.drops.reported, r.drops.last = total, now
	}
	r.mu.Unlock()
	if since > 0 {
		r.stream.log.Warn("reader is too slow, discarded units", "reader", r.name, "discarded", since, "total", total)
	}
}

// Read returns the next unit, waiting for one. Once the publisher has left it
// returns the units still queued, then ErrStreamEnded (wrapped). After Close
// it returns ErrReaderClosed (wrapped). If ctx ends first it returns the
// context's error.
func (r *Reader) Read(ctx context.Context) (*Unit, error) {
	for {
		r.mu.Lock()
		if r.n > 0 {
			u := r.buf[r.head]
			r.buf[r.head] = nil
			r.head++
			if r.head == len(r.buf) {
				r.head = 0
			}
			r.n--
			r.mu.Unlock()
			return u, nil
		}
		if r.err != nil {
			err := r.err
			r.mu.Unlock()
			return nil, err
		}
		r.mu.Unlock()
		select {
		case <-r.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// SkipToKeyframe makes the reader ignore each video track's units until that
// track's next keyframe, e.g. for a new viewer whose decoder needs one to
// start. Audio is not affected, and skipped units are not counted as drops.
func (r *Reader) SkipToKeyframe() {
	r.mu.Lock()
	r.joinAll = true
	for i, st := range r.skip {
		if st == noSkip {
			r.skip[i] = skipJoin
		}
	}
	r.mu.Unlock()
}

// end stops the reader receiving. ErrReaderClosed discards the queued units
// and replaces an earlier ErrStreamEnded; ErrStreamEnded keeps them for Read.
func (r *Reader) end(err error) {
	r.mu.Lock()
	closing := errors.Is(err, ErrReaderClosed)
	if r.err == nil || (closing && !errors.Is(r.err, ErrReaderClosed)) {
		r.err = fmt.Errorf("stream %q: %w", r.stream.path, err)
	}
	if closing {
		clear(r.buf)
		r.head, r.n = 0, 0
	}
	total := r.dropped.Load()
	since := total - r.drops.reported
	r.drops.reported = total
	r.mu.Unlock()
	if since > 0 {
		r.stream.log.Warn("reader is too slow, discarded units", "reader", r.name, "discarded", since, "total", total)
	}
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Close detaches the reader from its stream and discards what is queued:
// Read then returns ErrReaderClosed. Safe to call more than once.
func (r *Reader) Close() {
	r.stream.removeReader(r)
	r.end(ErrReaderClosed)
}
