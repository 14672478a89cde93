package media

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Errors a caller branches on.
var (
	// ErrPublisherExists is returned by Registry.Publish when the path
	// already has a publisher.
	ErrPublisherExists = errors.New("stream already has a publisher")
	// ErrStreamEnded is returned by Reader.Read once the publisher has left.
	ErrStreamEnded = errors.New("stream ended")
	// ErrReaderClosed is returned by Reader.Read after Reader.Close.
	ErrReaderClosed = errors.New("reader closed")
)

// Registry holds the live streams, keyed by path ("live/test"). The zero
// value is not usable; create one with NewRegistry. Safe for concurrent use.
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
// only after SetTracks. The publisher must call Close when it leaves.
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

// Paths returns the paths of streams whose tracks are known.
func (r *Registry) Paths() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for p, s := range r.streams {
		if s.Tracks() != nil {
			out = append(out, p)
		}
	}
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
// publisher's goroutine and may set fields of the unit it is given.
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
	closeOnce sync.Once

	readers atomic.Pointer[[]*Reader] // copy-on-write snapshot, read per unit without locks

	mu         sync.Mutex
	processors map[procKey]*procEntry // guarded by mu
	procByID   atomic.Pointer[map[int][]*procEntry]
}

type procKey struct {
	track int
	name  string
}

type procEntry struct {
	p    Processor
	refs int
	errs atomic.Uint64
}

// Path returns the stream's path.
func (s *Stream) Path() string { return s.path }

// Publisher returns the description of the publisher given to Publish.
func (s *Stream) Publisher() string { return s.publisher }

// Tracks returns the stream's tracks, or nil before SetTracks.
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
// readers. It can be called once; track IDs are set to their index.
func (s *Stream) SetTracks(tracks ...*Track) error {
	if len(tracks) == 0 {
		return fmt.Errorf("stream %q: no tracks", s.path)
	}
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

// Write runs the track's processors on u and hands it to every reader. It
// never blocks on a reader: a full reader drops the unit and counts it.
func (s *Stream) Write(u *Unit) {
	if m := s.procByID.Load(); m != nil {
		for _, e := range (*m)[u.Track.ID] {
			if err := e.p.Process(u); err != nil {
				if e.errs.Add(1) == 1 {
					s.log.Warn("processor failed; further errors are counted, not logged", "track", u.Track.ID, "err", err)
				}
			}
		}
	}
	if rs := s.readers.Load(); rs != nil {
		for _, r := range *rs {
			r.push(u)
		}
	}
}

// AddProcessor runs the processor named name on every unit of track, created
// by newProc on first use and shared by every caller asking for the same
// name. The returned release function drops the caller's reference; the
// processor stops when the last one is released.
func (s *Stream) AddProcessor(track int, name string, newProc func() Processor) (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.processors == nil {
		s.processors = make(map[procKey]*procEntry)
	}
	k := procKey{track, name}
	e, ok := s.processors[k]
	if !ok {
		e = &procEntry{p: newProc()}
		s.processors[k] = e
		s.publishProcessorsLocked()
	}
	e.refs++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			e.refs--
			if e.refs == 0 {
				delete(s.processors, k)
				s.publishProcessorsLocked()
			}
		})
	}
}

func (s *Stream) publishProcessorsLocked() {
	m := make(map[int][]*procEntry, len(s.processors))
	for k, e := range s.processors {
		m[k.track] = append(m[k.track], e)
	}
	s.procByID.Store(&m)
}

// ReaderOptions configures a reader.
type ReaderOptions struct {
	// Name identifies the reader in logs (e.g. "whep session 3f2a").
	Name string
	// QueueSize bounds the units queued for the reader; 0 means 512 (about
	// 5 s of 30 fps video with 48 kHz AAC).
	QueueSize int
}

// NewReader attaches a reader that receives every unit written from now on.
// It fails if the stream has ended. The caller must Close it.
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
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return nil, fmt.Errorf("stream %q: %w", s.path, ErrStreamEnded)
	default:
	}
	old := s.readers.Load()
	var next []*Reader
	if old != nil {
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
	if old == nil {
		return
	}
	next := make([]*Reader, 0, len(*old))
	for _, o := range *old {
		if o != r {
			next = append(next, o)
		}
	}
	s.readers.Store(&next)
}

// Close ends the stream: it leaves the registry, and every reader's Read
// returns ErrStreamEnded. Safe to call more than once.
func (s *Stream) Close() {
	s.closeOnce.Do(func() {
		s.registry.remove(s)
		s.mu.Lock()
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
