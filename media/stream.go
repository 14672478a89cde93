package media

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Errors a caller branches on.
var (
	// ErrPublisherExists is returned (wrapped) by Registry.Publish when the
	// path already has a publisher.
	ErrPublisherExists = errors.New("stream already has a publisher")
	// ErrStreamEnded is returned (wrapped) by Reader.Read once the publisher
	// has left and the reader's queue is empty, and by Stream.NewReader on a
	// stream that has ended.
	ErrStreamEnded = errors.New("stream ended")
	// ErrReaderClosed is returned (wrapped) by Reader.Read after Reader.Close.
	ErrReaderClosed = errors.New("reader closed")
)

// Registry holds the live streams, keyed by path ("live/test"). The zero
// value is not usable; create one with NewRegistry. Safe for concurrent use.
// The package starts no goroutines: all work happens in its callers'.
type Registry struct {
	log *slog.Logger

	mu      sync.Mutex
	streams map[string]*Stream // guarded by mu
}

// NewRegistry returns an empty registry that logs to log (slog.Default if nil).
func NewRegistry(log *slog.Logger) *Registry {
	if log == nil {
		log = slog.Default()
	}
	return &Registry{log: log, streams: make(map[string]*Stream)}
}

// Publish claims path for a new publisher described by publisher (a peer
// address or similar, for logs). The stream is registered at once, so a
// second publisher is refused with ErrPublisherExists, but readers see it
// only after SetTracks. The publisher must call Close when it leaves; the
// path can then be published again.
func (r *Registry) Publish(path, publisher string) (*Stream, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.streams[path]; ok {
		return nil, fmt.Errorf("publish %q from %s: %w (%s)", path, publisher, ErrPublisherExists, old.publisher)
	}
	s := &Stream{
		path:      path,
		publisher: publisher,
		registry:  r,
		log:       r.log.With("stream", path),
		ready:     make(chan struct{}),
		done:      make(chan struct{}),
	}
	r.streams[path] = s
	return s, nil
}

// Get returns the stream published at path, if any (ready or not).
func (r *Registry) Get(path string) (*Stream, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.streams[path]
	return s, ok
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

func (r *Registry) remove(s *Stream) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streams[s.path] == s {
		delete(r.streams, s.path)
	}
}

// A Processor transforms the units of one track on the write side, once for
// every reader, before fan-out (e.g. RTP packetization). It runs on the
// publisher's goroutine, inside Stream.Write, and may set fields of the unit
// it is given. Process must not call the release function of any processor
// of its stream (that waits for Write to finish).
//
// A processor that also has a Close() or Close() error method is closed by
// the hub once the last reference to it is released and no Write is still
// running it.
type Processor interface {
	Process(u *Unit) error
}

// Stream is one published stream: its tracks, its readers and the write
// side processors. Write and SetTracks are called by the single publisher;
// everything else is safe for concurrent use.
type Stream struct {
	path      string
	publisher string
	registry  *Registry
	log       *slog.Logger

	tracks    atomic.Pointer[[]*Track]
	ready     chan struct{} // closed by SetTracks
	readyOnce sync.Once
	done      chan struct{} // closed by Close
	closed    atomic.Bool   // set by Close, before done is closed
	closeOnce sync.Once

	readers atomic.Pointer[[]*Reader] // copy-on-write snapshot, read per unit without locks

	mu         sync.Mutex
	processors []*procEntry // guarded by mu; in the order they were added
	// procs is the snapshot Write runs: procs[trackID] lists that track's
	// processors in the order of processors. Replaced, never modified.
	procs atomic.Pointer[[][]*procEntry]
	// procRun is read-locked by Write while it runs processors; a release
	// write-locks it once to wait until no Write runs the released one.
	procRun sync.RWMutex

	invalid errorCounter // units discarded by Write: not of this stream's tracks

	origin atomic.Int64 // wall clock of PTS 0 in Unix ns, set by the first Write
}

type procEntry struct {
	track int
	name  string
	p     Processor
	refs  int // guarded by Stream.mu
	errs  errorCounter
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

// Publisher returns the description of the publisher given to Publish.
func (s *Stream) Publisher() string { return s.publisher }

// Tracks returns the stream's tracks, or nil before SetTracks. The slice
// must not be modified.
func (s *Stream) Tracks() []*Track {
	if t := s.tracks.Load(); t != nil {
		return *t
	}
	return nil
}

// Ready is closed once the tracks are known.
func (s *Stream) Ready() <-chan struct{} { return s.ready }

// Done is closed when the publisher has left.
func (s *Stream) Done() <-chan struct{} { return s.done }

// SetTracks declares the stream's codecs and makes the stream visible to
// readers. It succeeds once; track IDs are set to their index. Every track
// must be distinct and have a codec.
func (s *Stream) SetTracks(tracks ...*Track) error {
	if len(tracks) == 0 {
		return fmt.Errorf("stream %q: no tracks", s.path)
	}
	for i, t := range tracks {
		if t == nil || t.Codec == nil {
			return fmt.Errorf("stream %q: track %d has no codec", s.path, i)
		}
		if j := slices.Index(tracks[:i], t); j >= 0 {
			return fmt.Errorf("stream %q: track %d is track %d again", s.path, i, j)
		}
	}
	tracks = slices.Clone(tracks)
	set := false
	s.readyOnce.Do(func() {
		for i, t := range tracks {
			t.ID = i
		}
		s.tracks.Store(&tracks)
		close(s.ready)
		set = true
	})
	if !set {
		return fmt.Errorf("stream %q: tracks already set", s.path)
	}
	names := make([]string, len(tracks))
	for i, t := range tracks {
		names[i] = t.Codec.Name()
	}
	s.log.Info("stream ready", "tracks", names, "peer", s.publisher)
	return nil
}

// Write runs the track's processors on u, in the order they were created
// (see AddProcessor), and hands u to every reader. It never blocks on a reader: a full reader drops
// the unit and counts it. A processor's error is counted (and logged at most
// once a second); the unit still goes to the next processor and the readers.
// Units of a track that is not one of the stream's tracks (so every unit
// before SetTracks) and units written after Close are discarded.
func (s *Stream) Write(u *Unit) {
	if s.closed.Load() {
		return
	}
	if u == nil || u.Track == nil || !s.ownsTrack(u.Track) {
		if since, total, log := s.invalid.add(); log {
			s.log.Warn("unit discarded: not of a track of this stream", "discarded", since, "total", total)
		}
		return
	}
	if s.origin.Load() == 0 {
		s.origin.Store(time.Now().Add(-u.PTS).UnixNano())
	}
	s.procRun.RLock()
	if ps := s.procs.Load(); ps != nil && u.Track.ID < len(*ps) {
		for _, e := range (*ps)[u.Track.ID] {
			if err := e.p.Process(u); err != nil {
				if since, total, log := e.errs.add(); log {
					s.log.Warn("processor failed", "track", u.Track.ID, "processor", e.name, "err", err, "errors", since, "total", total)
				}
			}
		}
	}
	s.procRun.RUnlock()
	if rs := s.readers.Load(); rs != nil {
		var clk clock
		for _, r := range *rs {
			r.push(u, &clk)
		}
	}
}

// Origin returns the wall-clock time of PTS 0 on the stream clock, as
// observed when the first unit was written (zero before that). Readers use
// it to put every track's media time on one wall clock, e.g. for RTCP
// sender reports that let receivers lip-sync.
func (s *Stream) Origin() time.Time {
	if ns := s.origin.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

func (s *Stream) ownsTrack(t *Track) bool {
	ts := s.tracks.Load()
	return ts != nil && t.ID >= 0 && t.ID < len(*ts) && (*ts)[t.ID] == t
}

// AddProcessor runs the processor named name on every unit of track, created
// by newProc on first use and shared by every caller asking for the same
// name on the same track. Processors of one track run in the order they
// were created; one released by all its callers and added again runs last.
//
// The returned release function drops the caller's reference and may be
// called more than once. When the last reference is released the processor
// is removed, and release returns only once no Write is running it (and
// after closing it, if it has a Close method): after that it is never
// called again.
//
// newProc is called with the stream's lock held and must not call methods of
// the stream. If it returns nil, that is logged, nothing is added and
// release does nothing.
func (s *Stream) AddProcessor(track int, name string, newProc func() Processor) (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.processors, func(e *procEntry) bool { return e.track == track && e.name == name })
	var e *procEntry
	if i >= 0 {
		e = s.processors[i]
	} else {
		p := newProc()
		if p == nil {
			s.log.Error("processor not added: its constructor returned nil", "track", track, "processor", name)
			return func() {}
		}
		e = &procEntry{track: track, name: name, p: p}
		s.processors = append(s.processors, e)
		s.publishProcessorsLocked()
	}
	e.refs++
	var once sync.Once
	return func() { once.Do(func() { s.releaseProcessor(e) }) }
}

func (s *Stream) releaseProcessor(e *procEntry) {
	s.mu.Lock()
	e.refs--
	last := e.refs == 0
	if last {
		s.processors = slices.DeleteFunc(s.processors, func(o *procEntry) bool { return o == e })
		s.publishProcessorsLocked()
	}
	s.mu.Unlock()
	if !last {
		return
	}
	// A Write that loaded the old snapshot holds procRun for reading until
	// it is done with it; taking the write lock waits for that Write (the
	// empty critical section is the point).
	s.procRun.Lock()
	s.procRun.Unlock()
	switch c := e.p.(type) {
	case interface{ Close() }:
		c.Close()
	case interface{ Close() error }:
		if err := c.Close(); err != nil {
			s.log.Warn("processor close failed", "track", e.track, "processor", e.name, "err", err)
		}
	}
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
	// units a second).
	QueueSize int
}

// NewReader attaches a reader that receives every unit written from now on.
// It fails with ErrStreamEnded if the stream has ended. The caller must
// Close it.
func (s *Stream) NewReader(opts ReaderOptions) (*Reader, error) {
	size := opts.QueueSize
	if size <= 0 {
		size = 512
	}
	r := &Reader{
		stream: s,
		name:   opts.Name,
		buf:    make([]*Unit, size),
		notify: make(chan struct{}, 1),
	}
	if ts := s.Tracks(); ts != nil {
		r.skip = make([]skipState, len(ts))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, fmt.Errorf("stream %q: %w", s.path, ErrStreamEnded)
	}
	var next []*Reader
	if old := s.readers.Load(); old != nil {
		next = make([]*Reader, 0, len(*old)+1)
		next = append(next, *old...)
	}
	next = append(next, r)
	s.readers.Store(&next)
	return r, nil
}

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

// Close ends the stream: it leaves the registry, later Writes are discarded,
// and every reader's Read returns the units already queued for it, then
// ErrStreamEnded. Safe to call more than once.
func (s *Stream) Close() {
	s.closeOnce.Do(func() {
		s.registry.remove(s)
		s.mu.Lock()
		s.closed.Store(true)
		close(s.done)
		rs := s.readers.Load()
		s.readers.Store(nil)
		s.mu.Unlock()
		if rs != nil {
			for _, r := range *rs {
				r.end(ErrStreamEnded)
			}
		}
		s.log.Info("stream ended", "peer", s.publisher)
	})
}
