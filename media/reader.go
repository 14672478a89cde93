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
// reader's decoder never sees a broken reference chain. Read and Cached are
// for one goroutine; Close, Dropped, SkipToKeyframe and RequestKeyframe are
// safe from any.
type Reader struct {
	stream    *Stream
	name      string
	uncounted bool // ReaderOptions.Uncounted
	dropped   atomic.Uint64

	mu       sync.Mutex
	buf      []entry     // ring, guarded by mu
	head, n  int         // guarded by mu
	skip     []skipState // guarded by mu: per track ID, video only
	joinAll  bool        // guarded by mu: SkipToKeyframe was called; applies to tracks skip does not cover yet
	replayed []uint64    // guarded by mu: per track ID, the GOP generation last replayed
	err      error       // guarded by mu: set when the reader ends
	notify   chan struct{}

	drops dropReport // guarded by mu

	lastCached bool // owned by the goroutine calling Read
}

// entry is one queued unit; cached marks one that came from the GOP cache.
type entry struct {
	u      *Unit
	cached bool
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
	r.buf[i] = entry{u: u}
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

// TryRead returns the next unit and whether it came from the GOP cache,
// or nil if none is queued. Once the stream has ended it returns the units
// still queued, then the error Read would. It is for readers that share a
// Notify channel (ReaderOptions.Notify): wait on that, then TryRead each
// until it returns nil. Use it from one goroutine at a time, and not
// together with Read or Cached.
func (r *Reader) TryRead() (u *Unit, cached bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 {
		e := r.buf[r.head]
		r.buf[r.head] = entry{}
		r.head++
		if r.head == len(r.buf) {
			r.head = 0
		}
		r.n--
		return e.u, e.cached, nil
	}
	return nil, false, r.err
}

// Read returns the next unit, waiting for one. Once the stream has ended it
// returns the units still queued, then ErrStreamEnded (wrapped), or
// ErrIncompatibleRepublish (wrapped) when a publisher with other codecs
// took the stream over. After Close it returns ErrReaderClosed (wrapped).
// If ctx ends first it returns the context's error.
func (r *Reader) Read(ctx context.Context) (*Unit, error) {
	for {
		u, cached, err := r.TryRead()
		if u != nil {
			r.lastCached = cached
			return u, nil
		}
		if err != nil {
			return nil, err
		}
		select {
		case <-r.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Cached reports whether the unit Read returned last came from the GOP
// cache (see ReaderOptions.StartAtKeyframe and RequestKeyframe) rather
// than live from the publisher. Call it from the goroutine calling Read.
func (r *Reader) Cached() bool { return r.lastCached }

// RequestKeyframe asks for a keyframe of video track for this reader, e.g.
// for its viewer's RTCP PLI or FIR. When the publisher takes keyframe
// requests (an RTP publisher), the request goes upstream through
// Stream.RequestKeyframe, merged with other readers' and rate-limited, and
// the keyframe arrives live. Otherwise (RTMP and SRT publishers cannot be
// asked, and a stream waiting for its publisher has nobody to ask) it is
// answered from the GOP cache: the track's units still queued for the
// reader are replaced, in front of the queue, by the track's cached GOP,
// from its keyframe up to the last unit written, marked Cached. Each
// reader gets that at most once per cached GOP, so a viewer on a lossy
// link is not sent the same GOP again and again; it returns false when
// nothing was done (no GOP cached, already replayed, or no room in the
// queue): the reader then gets the next keyframe like everyone else.
func (r *Reader) RequestKeyframe(track int) bool {
	if r.stream.RequestKeyframe(track) {
		return true
	}
	return r.replay(track)
}

// replay puts the cached GOP of track in front of the reader's queue (see
// RequestKeyframe).
func (r *Reader) replay(track int) bool {
	s := r.stream
	s.wmu.Lock() // no Write changes the cache or pushes meanwhile
	defer s.wmu.Unlock()
	units, gen, ok := s.gop.gopOf(track)
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return false
	}
	if track >= len(r.replayed) {
		r.replayed = append(r.replayed, make([]uint64, track+1-len(r.replayed))...)
	}
	if r.replayed[track] == gen {
		return false
	}
	kept := make([]entry, 0, r.n+len(units))
	for _, u := range units {
		kept = append(kept, entry{u: u, cached: true})
	}
	for i := range r.n {
		if e := r.buf[(r.head+i)%len(r.buf)]; e.u.Track.ID != track {
			kept = append(kept, e)
		}
	}
	if len(kept) > len(r.buf) {
		return false
	}
	r.replayed[track] = gen
	clear(r.buf)
	copy(r.buf, kept)
	r.head, r.n = 0, len(kept)
	*r.skipState(track) = noSkip
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return true
}

// skipVideo makes each video track of tracks skip to its next keyframe
// (a new publisher took the stream over).
func (r *Reader) skipVideo(tracks []*Track) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range tracks {
		if st := r.skipState(t.ID); t.IsVideo() && *st == noSkip {
			*st = skipJoin
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
