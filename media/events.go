package media

import (
	"sync"
	"sync/atomic"

	"github.com/wishbridge/bridge/internal/panics"
)

// What the hub tells the route runtime (the node) that sits above it: when
// a path gets a publisher or its stream ends (Registry.Subscribe), so the
// forward and pull managers act on events instead of polling Paths; and how
// each stream arrives (PublisherKind), for status.

// EventKind says what happened to a path.
type EventKind int

// The events.
const (
	// Published: a publisher claimed the path (Registry.Publish
	// succeeded): a new stream, or a takeover of one in its grace period.
	// Its tracks may not be known yet: Stream.Ready is closed when they
	// are (a publisher that never declares any leaves without it).
	Published EventKind = iota + 1
	// Ended: the stream ended and left the registry; Stream.Done is
	// closed. A later Publish of the path makes a new Stream.
	Ended
)

func (k EventKind) String() string {
	switch k {
	case Published:
		return "published"
	case Ended:
		return "ended"
	}
	return "unknown"
}

// Event is one change of a path.
type Event struct {
	Kind   EventKind
	Path   string
	Stream *Stream
}

// subscribers is a Registry's callback list. The zero value has none.
// Subscribe and its cancel copy the list under mu; emit reads the current
// snapshot without a lock, so an event never waits for a Subscribe.
type subscribers struct {
	mu   sync.Mutex                    // serialises changes of list
	list atomic.Pointer[[]*subscriber] // replaced, never modified
}

type subscriber struct{ f func(Event) }

// Subscribe calls f with every later event of every path, and returns a
// function that stops it (safe to call more than once; an event already
// being delivered may still reach f).
//
// f is called without the registry's or any stream's locks held, on the
// goroutine that caused the event: the publisher's in Publish; for Ended,
// the leaving publisher's, the grace timer's or EndWaiting's caller's. The events of one path reach
// f in the order they happened (a path's Published and Ended are caused one
// after the other), those of different paths may be concurrent. f must not
// block: a slow f holds up a publisher. It may call the registry's and the
// stream's methods. A panic in f is recovered and logged (component
// "registry subscriber") and the other subscribers are still called.
func (r *Registry) Subscribe(f func(Event)) (cancel func()) {
	s := &subscriber{f: f}
	r.subs.mu.Lock()
	defer r.subs.mu.Unlock()
	var next []*subscriber
	if cur := r.subs.list.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, s)
	r.subs.list.Store(&next)
	var once sync.Once
	return func() {
		once.Do(func() {
			r.subs.mu.Lock()
			defer r.subs.mu.Unlock()
			var next []*subscriber
			for _, o := range *r.subs.list.Load() {
				if o != s {
					next = append(next, o)
				}
			}
			r.subs.list.Store(&next)
		})
	}
}

// emit tells every subscriber of e. Called without locks held.
func (r *Registry) emit(e Event) {
	list := r.subs.list.Load()
	if list == nil {
		return
	}
	for _, s := range *list {
		panics.Do("registry subscriber", r.log, func() { s.f(e) })
	}
}

// PublisherKind names how a stream arrives: its ingest protocol and
// whether the bridge listens for it or pulls it (package access holds the
// values: "rtmp", "srt_pull", ...). The hub only stores it, for status; ""
// means the publisher gave none.
type PublisherKind string

// SetKind records how this publication's stream arrives; an ingest calls it
// right after Registry.Publish. Until then a stream taken over in its grace
// period reports its previous publisher's kind. A publication that is no
// longer the stream's publisher changes nothing.
func (p *Publication) SetKind(k PublisherKind) {
	s := p.Stream
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == p {
		s.kind = k
	}
}

// PublisherKind returns the kind the current publisher set (SetKind), or
// the last one's while the stream waits for a new publisher.
func (s *Stream) PublisherKind() PublisherKind {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kind
}
