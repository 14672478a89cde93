package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wishbridge/bridge/internal/panics"
)

// Errors a caller branches on.
var (
	// ErrPublisherExists is returned (wrapped) by Registry.Publish when the
	// path already has a publisher.
	ErrPublisherExists = errors.New("stream already has a publisher")
	// ErrStreamEnded is returned (wrapped) by Reader.Read once the stream
	// has ended (its publisher left and no new one came within the grace
	// period) and the reader's queue is empty, and by Stream.NewReader on a
	// stream that has ended.
	ErrStreamEnded = errors.New("stream ended")
	// ErrReaderClosed is returned (wrapped) by Reader.Read after Reader.Close.
	ErrReaderClosed = errors.New("reader closed")
	// ErrIncompatibleRepublish is returned (wrapped) by Reader.Read, after
	// the units already queued, when a new publisher took the stream over
	// with tracks the reader cannot continue with (other codecs, or another
	// number of tracks). The error says what was published and what the
	// reader had.
	ErrIncompatibleRepublish = errors.New("republished with incompatible codecs")
	// ErrNoTrack is returned (wrapped) by Stream.AddProcessor when the
	// stream has no track like the one asked for (none with its ID and
	// codec): a publisher with other tracks took the stream over since the
	// caller looked at them, or none has declared tracks yet.
	ErrNoTrack = errors.New("no such track")
)

// IsStreamEnd reports whether err means the stream (not a reader's
// connection) ended: it wraps ErrStreamEnded or ErrIncompatibleRepublish.
func IsStreamEnd(err error) bool {
	return errors.Is(err, ErrStreamEnded) || errors.Is(err, ErrIncompatibleRepublish)
}

// Registry holds the live streams, keyed by path ("live/test"). The zero
// value is not usable; create one with NewRegistry. Safe for concurrent use.
// The package starts no goroutines: all work happens in its callers' (and
// in the timer that ends a stream whose grace period ran out).
type Registry struct {
	log *slog.Logger
	now func() time.Time // time.Now; tests replace it

	mu      sync.Mutex
	streams map[string]*Stream              // guarded by mu
	grace   func(path string) time.Duration // guarded by mu; nil: no grace

	subs subscribers // told of Published and Ended (events.go), outside mu
}

// NewRegistry returns an empty registry that logs to log (slog.Default if nil).
func NewRegistry(log *slog.Logger) *Registry {
	if log == nil {
		log = slog.Default()
	}
	return &Registry{log: log, now: time.Now, streams: make(map[string]*Stream)}
}

// SetGrace sets how long a stream outlives its publisher, per path: when a
// publisher leaves (Publication.Close), grace(path) is asked, and for that
// long the stream keeps its readers, waiting for a new publisher of the
// same path to take it over (see Publication). Zero or less ends the
// stream at once. grace is called without the registry's locks held, on
// the goroutine of the leaving publisher; it may be changed at any time
// (e.g. on a config reload). Until SetGrace is called, or with nil, there
// is no grace period.
//
// The policy lives here rather than in each ingest adapter so that the
// adapters need not know the routes: cmd/bridge passes the routes' grace
// (config.Route.GraceDuration, 10 s unless a route sets it).
func (r *Registry) SetGrace(grace func(path string) time.Duration) {
	r.mu.Lock()
	r.grace = grace
	r.mu.Unlock()
}

func (r *Registry) graceFor(path string) time.Duration {
	r.mu.Lock()
	grace := r.grace
	r.mu.Unlock()
	if grace == nil {
		return 0
	}
	return grace(path)
}

// Publish claims path for a new publisher described by publisher (a peer
// address or similar, for logs) and returns its Publication. The path is
// claimed at once, so a second publisher is refused with
// ErrPublisherExists while this one is attached, but readers see the
// stream only after SetTracks.
//
// When the path's stream is in its grace period (its publisher left less
// than the grace ago), the new publication takes that stream over: readers
// stay attached and continue with the new publisher's units once it has
// called SetTracks (see Publication for what "compatible" means).
func (r *Registry) Publish(path, publisher string) (*Publication, error) {
	p, err := r.publish(path, publisher)
	if err == nil {
		r.emit(Event{Kind: Published, Path: path, Stream: p.Stream})
	}
	return p, err
}

func (r *Registry) publish(path, publisher string) (*Publication, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.streams[path]; ok {
		p, err := s.attach(publisher)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, ErrStreamEnded) {
			return nil, err
		}
		// The stream ended a moment ago and is leaving the registry:
		// start a new one.
	}
	s := &Stream{
		path:      path,
		publisher: publisher,
		registry:  r,
		log:       r.log.With("stream", path),
		ready:     make(chan struct{}),
		done:      make(chan struct{}),
	}
	p := &Publication{Stream: s, peer: publisher}
	s.cur = p
	r.streams[path] = s
	return p, nil
}

// Get returns the stream published at path, if any (ready or not, and
// also while it waits for a publisher to come back).
func (r *Registry) Get(path string) (*Stream, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.streams[path]
	return s, ok
}

// WaitReady waits until a stream is published at path with its tracks
// known and returns it. It looks for the path every poll; a stream that
// ends before it is ready is looked for again. missing, if set, is called
// each time the path has no stream. When ctx ends it returns ctx.Err().
func (r *Registry) WaitReady(ctx context.Context, path string, poll time.Duration, missing func()) (*Stream, error) {
	for {
		if st, ok := r.Get(path); ok {
			err := st.WaitReady(ctx)
			if err == nil {
				return st, nil
			}
			if ctx.Err() != nil {
				return nil, err
			}
			// It ended before it was ready: look again after a while.
		} else if missing != nil {
			missing()
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Paths returns the paths of streams whose tracks are known, sorted.
func (r *Registry) Paths() []string {
	r.mu.Lock()
	var out []string
	for p, s := range r.streams {
		if s.Tracks() != nil {
			out = append(out, p)
		}
	}
	r.mu.Unlock()
	slices.Sort(out)
	return out
}

// EndWaiting ends every stream that is waiting for a publisher to come
// back (at shutdown, after the publishers have left): their readers get
// ErrStreamEnded now instead of when the grace expires.
func (r *Registry) EndWaiting() {
	r.mu.Lock()
	all := make([]*Stream, 0, len(r.streams))
	for _, s := range r.streams {
		all = append(all, s)
	}
	r.mu.Unlock()
	for _, s := range all {
		s.mu.Lock()
		if s.cur != nil || s.closed.Load() {
			s.mu.Unlock()
			continue
		}
		s.log.Info("stream ended: the server is shutting down")
		s.endLocked()
	}
}

func (r *Registry) remove(s *Stream) {
	r.mu.Lock()
	if r.streams[s.path] == s {
		delete(r.streams, s.path)
	}
	r.mu.Unlock()
	r.emit(Event{Kind: Ended, Path: s.path, Stream: s})
}

// A Processor transforms the units of one track on the write side, once for
// every reader, before fan-out (e.g. RTP packetization). It runs on the
// publisher's goroutine, inside Publication.Write, and may set fields of
// the unit it is given. When it is created while the stream has a GOP
// cached, it first runs over (copies of) the cached units of its track and
// those written meanwhile, on the goroutine calling Stream.AddProcessor
// and without the stream's locks (see there); Write runs it only once that
// is done. So it never runs concurrently with itself. Process must not call
// methods of its stream nor modify the bytes of a unit's payload in place
// (it may replace the fields: the same payload may be shared by a cached
// copy).
//
// A processor that also has a Close() or Close() error method is closed by
// the hub once the last reference to it is released (or a new publisher
// replaced it, see AddProcessor) and no Write is still running it.
//
// A processor that panics (in its constructor, Process or Close) ends
// alone: the panic is recovered and reported under the component
// "processor" (internal/panics), the processor is removed and closed, and
// the stream, its readers and the other processors go on. Its units then
// reach readers without its output (e.g. no RTP packets), which they skip.
type Processor interface {
	Process(u *Unit) error
}

// Stream is one published stream: its tracks, its readers, the write side
// processors and the cached GOP. It lives from the first Publish of its path
// until its publisher has left and no new one came within the grace
// period; the publishers attached to it meanwhile each have a Publication,
// the only way to write to it. Everything on Stream is safe for concurrent
// use.
type Stream struct {
	path     string
	registry *Registry
	log      *slog.Logger

	tracks atomic.Pointer[[]*Track]
	ready  chan struct{} // closed by the first SetTracks
	done   chan struct{} // closed when the stream ends
	closed atomic.Bool   // set when the stream ends, before done is closed

	readers atomic.Pointer[[]*Reader] // copy-on-write snapshot, read per unit without locks

	// pmu serialises the making of new processors (AddProcessor): one
	// backfill at a time per stream, so that a processor's backfill sees
	// the output of the processors made before it (they run in that order
	// in Write) and two callers asking for the same processor get one. It
	// is held across a backfill, while wmu and mu are not.
	//
	// wmu serialises the write path: Write (timestamps, processors, GOP
	// cache, fan-out) and everything that must see it stand still: a
	// processor's creation, each step of its backfill that reads or fills
	// the cache (not its run over the copies), a new reader's snapshot of
	// the GOP cache, a takeover.
	//
	// Lock order: pmu, then wmu, then mu, then a Reader's mu.
	pmu    sync.Mutex
	wmu    sync.Mutex
	writer *Publication    // guarded by wmu: the publication whose units are taken
	gop    gopCache        // guarded by wmu
	last   []time.Duration // guarded by wmu: per track, the latest PTS or DTS written; noTime if none

	mu         sync.Mutex
	cur        *Publication  // guarded by mu: the attached publication; nil while waiting for one
	publisher  string        // guarded by mu: description of cur, or of the last one
	kind       PublisherKind // guarded by mu: set by cur (SetKind), or by the last one
	hadTracks  bool          // guarded by mu: some publication declared tracks
	graceTimer *time.Timer   // guarded by mu: ends the stream when the grace runs out
	graceUntil time.Time     // guarded by mu: when the grace runs out
	graceGen   uint64        // guarded by mu: invalidates a timer that fires late
	processors []*procEntry  // guarded by mu; in the order they were added
	// procs is the snapshot Write runs: procs[trackID] lists that track's
	// processors in the order of processors. Replaced, never modified.
	procs  atomic.Pointer[[][]*procEntry]
	kfLast []time.Time // guarded by mu: per track, when a keyframe request last went upstream

	invalid errorCounter // units discarded by Write: not of this stream's tracks

	origin atomic.Int64 // wall clock of PTS 0 in Unix ns, set by the first Write

	bytesIn atomic.Uint64 // payload bytes written (Write), for the admin API's bitrate
}

// noTime marks "no timestamp yet" in Stream.last.
const noTime = time.Duration(math.MinInt64)

// A procEntry is one processor of a stream. Until it is in
// Stream.processors (the end of its backfill, see Stream.join), it belongs
// to the goroutine in AddProcessor that made it, which alone runs p, with
// or without the stream's locks: nothing else can reach it (Write runs the
// procs snapshot, a takeover walks processors, and nobody holds a
// reference to release). From then on, only Write runs p.
type procEntry struct {
	track   int
	name    string
	log     *slog.Logger // the stream's, with the track and the processor's name
	newProc func(*Track) Processor
	p       Processor // once in processors: guarded by Stream.wmu (read by Write), replaced under wmu and mu
	refs    int       // guarded by Stream.mu
	removed bool      // guarded by Stream.mu: no longer in Stream.processors
	errs    errorCounter
}

// errorCounter counts a recurring problem and says when to log it: the
// first time, then at most once a second with the count since the last log.
type errorCounter struct {
	n atomic.Uint64

	mu      sync.Mutex
	logged  uint64    // guarded by mu: n when last logged
	lastLog time.Time // guarded by mu
}

// add counts one occurrence. If it is time to log, it returns the number of
// occurrences since the last log (this one included) and the total.
func (c *errorCounter) add() (since, total uint64, log bool) {
	total = c.n.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.logged != 0 && now.Sub(c.lastLog) < time.Second {
		return 0, total, false
	}
	since = total - c.logged
	c.logged, c.lastLog = total, now
	return since, total, true
}

// Path returns the stream's path.
func (s *Stream) Path() string { return s.path }

// Publisher returns the description given to Publish by the current
// publisher, or by the last one while the stream waits for a new one.
func (s *Stream) Publisher() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.publisher
}

// Live reports whether a publisher is attached: false once it has left,
// while the stream waits for a new one in its grace period (and after the
// stream ended). A cluster's registry tells other nodes from it that the
// path may be taken over.
func (s *Stream) Live() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur != nil
}

// Tracks returns the stream's tracks, or nil before the first SetTracks.
// A compatible republish replaces them with the new publisher's tracks
// (same IDs and codec kinds; parameters may differ), an incompatible one
// with whatever it declared. The slice must not be modified.
func (s *Stream) Tracks() []*Track {
	if t := s.tracks.Load(); t != nil {
		return *t
	}
	return nil
}

// Ready is closed once the tracks are known.
func (s *Stream) Ready() <-chan struct{} { return s.ready }

// Done is closed when the stream has ended: its publisher left and no new
// one came within the grace period.
func (s *Stream) Done() <-chan struct{} { return s.done }

// WaitReady waits until the tracks are known (it returns nil), the stream
// has ended (an error wrapping ErrStreamEnded) or ctx ends (ctx.Err()).
func (s *Stream) WaitReady(ctx context.Context) error {
	select {
	case <-s.Ready():
		return nil
	case <-s.Done():
		return fmt.Errorf("stream %q: %w", s.Path(), ErrStreamEnded)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Origin returns the wall-clock time of PTS 0 on the stream clock, as
// observed when the first unit was written (zero before that). Readers use
// it to put every track's media time on one wall clock, e.g. for RTCP
// sender reports that let receivers lip-sync. It does not change when a
// new publisher takes the stream over: the hub maps the new publisher's
// timestamps onto the same clock (see Publication.Write).
func (s *Stream) Origin() time.Time {
	if ns := s.origin.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Track returns the stream's track with ID id, or nil if there is none (a
// publisher with fewer tracks took the stream over, or none has declared
// tracks yet). Use it rather than index Tracks() with an ID kept from
// earlier: the tracks may have changed since.
func (s *Stream) Track(id int) *Track {
	if ts := s.Tracks(); id >= 0 && id < len(ts) {
		return ts[id]
	}
	return nil
}

func (s *Stream) ownsTrack(t *Track) bool {
	ts := s.tracks.Load()
	return ts != nil && t.ID >= 0 && t.ID < len(*ts) && (*ts)[t.ID] == t
}

// AddProcessor runs the processor named name on every unit of the
// stream's track t.ID, created by newProc on first use and shared by every
// caller asking for the same name on the same track. Processors of one
// track run in the order they were created; one released by all its
// callers and added again runs last.
//
// t is the track the caller saw (e.g. the one a viewer's session was
// negotiated for): when the stream no longer has a track with t's ID and
// codec (a publisher with other tracks took it over since), AddProcessor
// adds nothing and returns an error wrapping ErrNoTrack. newProc is given
// the stream's current track with t's ID, never a track that is gone; it
// must not keep or look up another.
//
// A new processor first runs over the GOP cached for instant joins (see
// ReaderOptions.StartAtKeyframe), before AddProcessor returns: over a copy
// of each cached unit of its track, in write order, and the copies replace
// the cached units, so a reader created afterwards gets the cached GOP with
// the processor's output (e.g. u.RTP) like live units. Readers that already
// hold the original units keep them unchanged (nothing they can see is
// modified). Add the processors a reader needs before creating the reader.
//
// That backfill runs on the caller's goroutine without the stream's locks,
// so the publisher's Writes go on meanwhile (without the new processor:
// re-encoding a cached GOP takes up to a second). It then catches up with
// the units of its track written meanwhile, round after round (see join),
// and Write runs it from the next unit on. The processor thus sees the
// units of its track once each, in write order, from the first cached one
// on, across the backfill and the live units. The exception is units that
// left the cache before the backfill reached them: when a new keyframe
// started a new GOP meanwhile, the processor goes on from that keyframe
// (the copies of the old GOP are dropped); when the GOP outgrew the cache,
// from the next unit written. A processor no faster than the stream
// finishes with the locks held after maxBackfillRounds rounds, holding up
// the publisher as it would once live. New processors of one stream are
// made one at a time: a caller waits while another processor's backfill
// runs, unless the processor it asks for already runs.
//
// When the stream is taken over during the backfill, the processor is
// closed and made again for the new publisher's track, as below, and its
// backfill goes on over that publisher's units; if the track is gone, or
// has another codec, AddProcessor fails with ErrNoTrack.
//
// When a new publisher takes the stream over with compatible tracks, every
// processor is closed and made again by newProc with the new publisher's
// track (same ID and codec), so that a stateful processor never mixes two
// publishers' units and sees the new track parameters.
//
// The returned handle holds the caller's reference until its Release
// (see ProcessorHandle); it is nil when err is not nil.
//
// newProc is called with the stream's locks held and must not call methods
// of the stream. If it returns nil or panics, or the new processor panics
// over the cached GOP, nothing is added and AddProcessor returns an error.
func (s *Stream) AddProcessor(t *Track, name string, newProc func(*Track) Processor) (_ *ProcessorHandle, err error) {
	if t == nil {
		return nil, fmt.Errorf("stream %q: processor %q: %w: no track given", s.path, name, ErrNoTrack)
	}
	// A processor that runs already: take a reference, without waiting
	// for another one's backfill.
	s.mu.Lock()
	_, e, err := s.processorLocked(t, name)
	if e != nil {
		e.refs++
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if e == nil {
		s.pmu.Lock()
		defer s.pmu.Unlock()
		s.wmu.Lock()
		defer s.wmu.Unlock()
		s.mu.Lock()
		defer s.mu.Unlock()
		var cur *Track
		if cur, e, err = s.processorLocked(t, name); err != nil {
			return nil, err
		}
		if e == nil { // nobody made it while this caller waited for pmu
			e = &procEntry{track: t.ID, name: name, newProc: newProc, log: s.log.With("track", t.ID, "processor", name)}
			if err := s.join(e, cur); err != nil {
				return nil, err
			}
		}
		e.refs++
	}
	return &ProcessorHandle{s: s, e: e}, nil
}

// processorLocked returns the stream's current track like t (its ID and
// codec) and the processor named name on it, nil if there is none. Called
// with mu held; the tracks change only under both locks.
func (s *Stream) processorLocked(t *Track, name string) (*Track, *procEntry, error) {
	cur := s.Track(t.ID)
	if cur == nil || cur.Codec.Name() != t.Codec.Name() {
		return nil, nil, fmt.Errorf("stream %q: processor %q for %s: %w: the stream's tracks are now %s",
			s.path, name, t, ErrNoTrack, codecNames(s.Tracks()))
	}
	if i := slices.IndexFunc(s.processors, func(e *procEntry) bool { return e.track == t.ID && e.name == name }); i >= 0 {
		return cur, s.processors[i], nil
	}
	return cur, nil, nil
}

// make runs e's constructor for track t, under the panic boundary. It
// returns nil (and logs why) if the constructor panicked or returned nil.
func (e *procEntry) make(t *Track) (p Processor) {
	if panics.Do("processor", e.log, func() { p = e.newProc(t) }) {
		return nil
	}
	if p == nil {
		e.log.Error("processor not made: its constructor returned nil")
	}
	return p
}

// maxBackfillRounds bounds the rounds of a backfill (see join). Each round
// runs over the units written during the one before, so with a processor
// k times as fast as the stream a round leaves 1/k of its units to the
// next: twice as fast (k = 2) gets through a full cache (MaxGOPUnits, 2^11)
// in 12 rounds. A processor slower than that runs the rest with the locks
// held, as Write would run it.
const maxBackfillRounds = 16

// join makes e's processor for cur, runs it over the cached units of its
// track (its backfill) and adds it to the stream's processors, so that
// Write runs it from the next unit. On an error, e's processor is closed
// and the stream is left as it was, but for the copies already put in the
// cache. Called with pmu, wmu and mu held; it releases wmu and mu while it
// runs the processor, and holds them again when it returns.
//
// Invariant: next is the sequence number (gopCache.first) past the last
// unit the processor has run over, so each unit it is given has a larger
// number than the one before: no unit twice, write order kept. Each round
// takes, under the locks, the cached units of the track numbered next or
// more (gopCache.since: for a video track, only from its last keyframe,
// so after a new keyframe the round starts there) and their copies, runs
// over the copies without the locks, and, locked again, puts each copy in
// place of its original if that is still cached. When a round finds no
// unit, every unit of the track written so far that is still cached has
// been run over; with the locks still held, e joins processors and Write
// runs it from the next unit: no unit between the two. Units that left
// the cache between two rounds are the ones skipped (see AddProcessor).
func (s *Stream) join(e *procEntry, cur *Track) error {
	var next uint64
	var batch []seqUnit
	for round := 1; ; round++ {
		if e.p == nil {
			if e.p = e.make(cur); e.p == nil {
				return fmt.Errorf("stream %q: processor %q for %s: its constructor failed (see the log)", s.path, e.name, cur)
			}
		}
		if batch = s.gop.since(e.track, next, batch[:0]); len(batch) == 0 {
			break
		}
		copies := make([]*Unit, len(batch))
		for i, b := range batch {
			c := *b.u
			copies[i] = &c
		}
		unlocked := round <= maxBackfillRounds
		if unlocked {
			s.mu.Unlock()
			s.wmu.Unlock()
		}
		done := 0
		for _, c := range copies {
			if !s.process(e, c) {
				break
			}
			done++
		}
		if unlocked {
			s.wmu.Lock()
			s.mu.Lock()
		}
		for i, b := range batch[:done] {
			if j := s.gop.index(b.seq); j >= 0 {
				s.gop.replace(j, copies[i])
			}
		}
		if done < len(copies) {
			s.closeProcessor(e, e.p)
			return fmt.Errorf("stream %q: processor %q for %s: it panicked over the cached GOP (see the log)", s.path, e.name, cur)
		}
		next = batch[len(batch)-1].seq + 1
		if now := s.Track(e.track); now != cur {
			// Taken over meanwhile: the cache holds the new publisher's
			// units, all numbered next or more. As renewProcessorsLocked
			// does for the running processors, make it again.
			s.closeProcessor(e, e.p)
			e.p = nil
			if now == nil || now.Codec.Name() != cur.Codec.Name() {
				return fmt.Errorf("stream %q: processor %q for %s: %w: the stream was taken over with tracks %s",
					s.path, e.name, cur, ErrNoTrack, codecNames(s.Tracks()))
			}
			cur = now
		}
	}
	s.processors = append(s.processors, e)
	s.publishProcessorsLocked()
	return nil
}

// process runs one processor on u, counting and logging its failures. It
// reports false if the processor panicked (reported by internal/panics):
// the caller must end it. Called by whoever runs e (see procEntry): Write,
// with wmu held, or the backfill.
func (s *Stream) process(e *procEntry, u *Unit) bool {
	var err error
	if panics.Do("processor", e.log, func() { err = e.p.Process(u) }) {
		return false
	}
	if err != nil {
		if since, total, log := e.errs.add(); log {
			e.log.Warn("processor failed", "err", err, "errors", since, "total", total)
		}
	}
	return true
}

// endPanicked ends a processor that panicked in Write: it leaves the
// stream's processors (its holders' release then only drops their
// reference) and is closed, unless a release already removed it and will
// close it. Called with wmu held, not mu.
func (s *Stream) endPanicked(e *procEntry) {
	s.mu.Lock()
	if e.removed {
		s.mu.Unlock()
		return
	}
	e.removed = true
	s.processors = slices.DeleteFunc(s.processors, func(o *procEntry) bool { return o == e })
	s.publishProcessorsLocked()
	s.mu.Unlock()
	e.log.Error("processor ended after a panic: its track's units go on without its output")
	s.closeProcessor(e, e.p)
}

func (s *Stream) releaseProcessor(e *procEntry) {
	s.mu.Lock()
	e.refs--
	last := e.refs == 0 && !e.removed
	if last {
		e.removed = true
		s.processors = slices.DeleteFunc(s.processors, func(o *procEntry) bool { return o == e })
		s.publishProcessorsLocked()
	}
	s.mu.Unlock()
	if !last {
		return
	}
	// A Write that loaded the old snapshot holds wmu until it is done with
	// it; taking wmu waits for that Write. Nothing replaces e.p any more:
	// e is out of the list a takeover walks.
	s.wmu.Lock()
	p := e.p
	s.wmu.Unlock()
	s.closeProcessor(e, p)
}

// closeProcessor closes p, e's processor, if it has a Close method, under
// the panic boundary.
func (s *Stream) closeProcessor(e *procEntry, p Processor) {
	switch c := p.(type) {
	case interface{ Close() }:
		panics.Do("processor", e.log, c.Close)
	case interface{ Close() error }:
		var err error
		panics.Do("processor", e.log, func() { err = c.Close() })
		if err != nil {
			e.log.Warn("processor close failed", "err", err)
		}
	}
}

// renewProcessorsLocked replaces every processor by a new one from its
// constructor, given the new track with its ID (a compatible takeover), or, if keep is false, removes them
// all (an incompatible one: their readers are gone). Called with wmu and mu
// held, so no Write runs them.
func (s *Stream) renewProcessorsLocked(keep bool) {
	kept := s.processors[:0]
	for _, e := range s.processors {
		s.closeProcessor(e, e.p)
		if t := s.Track(e.track); keep && t != nil {
			if e.p = e.make(t); e.p != nil {
				kept = append(kept, e)
				continue
			}
			e.log.Error("processor removed: it could not be made for the new publisher's track")
		}
		e.removed = true
	}
	clear(s.processors[len(kept):])
	s.processors = kept
	s.publishProcessorsLocked()
}

func (s *Stream) publishProcessorsLocked() {
	n := 0
	for _, e := range s.processors {
		n = max(n, e.track+1)
	}
	byTrack := make([][]*procEntry, n)
	for _, e := range s.processors {
		if e.track >= 0 {
			byTrack[e.track] = append(byTrack[e.track], e)
		}
	}
	s.procs.Store(&byTrack)
}

// ProcessorErrors returns how many times the processor named name on track
// has failed since it was created, or 0 if there is no such processor.
func (s *Stream) ProcessorErrors(track int, name string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.processors {
		if e.track == track && e.name == name {
			return e.errs.n.Load()
		}
	}
	return 0
}

// ReaderOptions configures a reader.
type ReaderOptions struct {
	// Name identifies the reader in logs (e.g. "whep session 3f2a").
	Name string
	// QueueSize bounds the units queued for the reader; 0 means 512 (about
	// 6.7 s of 30 fps video with 48 kHz AAC, which together make about 77
	// units a second). With StartAtKeyframe, the cached units come on top.
	QueueSize int
	// StartAtKeyframe makes the reader start where a decoder can: each
	// video track at its last keyframe. When the stream has the current
	// GOP of a video track cached (the units since its last IDR, which
	// starts with SPS and PPS; see gopCache for the bounds), the reader's
	// queue starts with that GOP at once: every unit written since that
	// IDR, video and audio, in write order, with their original
	// timestamps, followed by the live units with no gap and no duplicate.
	// Reader.Cached tells those cached units apart. A video track with no
	// GOP cached (none yet, or the GOP outgrew the cache) is skipped up to
	// its next keyframe, as with SkipToKeyframe; audio then starts live.
	//
	// The hub does not pace the cached units: how to present them is the
	// reader's business, because it depends on the receiver. A player that
	// buffers (RTMP, SRT) can take them as they are and catch up; a
	// WebRTC receiver anchors its playout clock on the first RTP timestamp
	// it receives, so original timestamps would make it play the whole GOP
	// out in real time, behind live by the GOP's age (see egress/whep for
	// what it does instead).
	StartAtKeyframe bool
	// Notify, when set, is signalled (a send that never blocks, so give it
	// room for one) whenever the reader has something new: a unit queued,
	// or its end. Many readers may share one channel, so that one
	// goroutine serves them all; such a reader is read with TryRead,
	// never Read, which waits on the reader's own signal.
	Notify chan struct{}
	// Uncounted leaves the reader out of Readers, and so out of
	// CheckReaders' limit and the reader metrics: a dashboard's preview
	// player, which an operator opens to look, is not an audience.
	Uncounted bool
}

// NewReader attaches a reader that receives every unit written from now on
// (and, with StartAtKeyframe, the cached GOP first). It fails with
// ErrStreamEnded if the stream has ended. The caller must Close it.
func (s *Stream) NewReader(opts ReaderOptions) (*Reader, error) {
	size := opts.QueueSize
	if size <= 0 {
		size = 512
	}
	r := &Reader{
		stream:    s,
		name:      opts.Name,
		notify:    opts.Notify,
		uncounted: opts.Uncounted,
	}
	if r.notify == nil {
		r.notify = make(chan struct{}, 1)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, fmt.Errorf("stream %q: %w", s.path, ErrStreamEnded)
	}
	ts := s.Tracks()
	if ts != nil {
		r.skip = make([]skipState, len(ts))
	}
	var backlog []*Unit
	if opts.StartAtKeyframe {
		r.joinAll = true
		for i, t := range ts {
			if t.IsVideo() {
				r.skip[i] = skipJoin
			}
		}
		backlog = s.gop.join(func(track int) { r.skip[track] = noSkip })
	}
	r.buf = make([]entry, size+len(backlog))
	for i, u := range backlog {
		r.buf[i] = entry{u: u, cached: true}
	}
	r.n = len(backlog)
	var next []*Reader
	if old := s.readers.Load(); old != nil {
		next = make([]*Reader, 0, len(*old)+1)
		next = append(next, *old...)
	}
	next = append(next, r)
	s.readers.Store(&next)
	return r, nil
}

// Readers returns how many readers are attached (e.g. to stop an
// on-demand pull nobody watches), those made with
// ReaderOptions.Uncounted left out.
func (s *Stream) Readers() int {
	rs := s.readers.Load()
	if rs == nil {
		return 0
	}
	n := len(*rs)
	for _, r := range *rs {
		if r.uncounted {
			n--
		}
	}
	return n
}

// BytesIn returns the payload bytes written to the stream since it began
// (NAL units and audio frames, every publisher's): its inbound bitrate is
// the difference over time.
func (s *Stream) BytesIn() uint64 { return s.bytesIn.Load() }

func (s *Stream) removeReader(r *Reader) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.readers.Load()
	if old == nil || !slices.Contains(*old, r) {
		return
	}
	next := make([]*Reader, 0, len(*old)-1)
	for _, o := range *old {
		if o != r {
			next = append(next, o)
		}
	}
	s.readers.Store(&next)
}

// KeyframeRequestInterval is the shortest time between two keyframe
// requests forwarded to a publisher for the same track: requests within it
// (every viewer of a stream asks after the same loss) are merged into the
// one already sent.
const KeyframeRequestInterval = 500 * time.Millisecond

// RequestKeyframe asks the publisher for a keyframe on track, e.g. for a
// viewer's RTCP PLI or FIR. It reports whether a request is on its way
// upstream: forwarded now to the callback the publisher registered with
// Publication.OnKeyframeRequest, or merged into one forwarded less than
// KeyframeRequestInterval ago. The callback runs on the caller's goroutine,
// at most once per KeyframeRequestInterval per track.
//
// It reports false when the publisher takes no requests: an RTMP or SRT
// encoder cannot be asked for a keyframe, and a stream waiting for its
// publisher to come back has nobody to ask. Those requests are answered
// from the GOP cache instead, per reader: see Reader.RequestKeyframe.
func (s *Stream) RequestKeyframe(track int) bool {
	s.mu.Lock()
	p := s.cur
	if p == nil || p.onKeyframe == nil || track < 0 || track >= len(s.kfLast) {
		s.mu.Unlock()
		return false
	}
	now := s.registry.now()
	if last := s.kfLast[track]; !last.IsZero() && now.Sub(last) < KeyframeRequestInterval {
		s.mu.Unlock()
		return true
	}
	s.kfLast[track] = now
	f := p.onKeyframe
	s.mu.Unlock()
	f(track)
	return true
}
