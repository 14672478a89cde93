package whep

import (
	"errors"
	"runtime"
	"slices"
	"sync"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/media"
)

// unitsPerTurn is how many units a pump sends for one viewer before
// turning to the next, so a viewer catching up on the cached GOP does not
// hold the others back.
const unitsPerTurn = 16

// pumps spread the viewers of a Handler over a few goroutines, one per
// CPU: each sends the units of its viewers' readers, which share its
// Notify channel (media.ReaderOptions.Notify). A unit written to a stream
// with N viewers then wakes a few pumps instead of N goroutines: at a few
// hundred viewers the wakeups (scheduler, futexes, context switches) cost
// as much as a fifth of the CPU. The zero value is ready.
type pumps struct {
	once sync.Once
	all  []*pump
}

// pick returns the pump with the fewest viewers.
func (ps *pumps) pick() *pump {
	ps.once.Do(func() {
		ps.all = make([]*pump, runtime.GOMAXPROCS(0))
		for i := range ps.all {
			ps.all[i] = &pump{notify: make(chan struct{}, 1)}
		}
	})
	best, fewest := ps.all[0], -1
	for _, p := range ps.all {
		p.mu.Lock()
		n := len(p.sessions)
		p.mu.Unlock()
		if fewest < 0 || n < fewest {
			best, fewest = p, n
		}
	}
	return best
}

// pump is one sending goroutine and its viewers. The goroutine runs while
// it has viewers.
type pump struct {
	notify   chan struct{} // the Notify of its viewers' readers
	mu       sync.Mutex
	sessions []*session // guarded by mu
	running  bool       // guarded by mu
}

func (p *pump) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// add makes the pump send s's units (s.reader, made with p.notify).
func (p *pump) add(s *session) {
	p.mu.Lock()
	p.sessions = append(p.sessions, s)
	start := !p.running
	p.running = true
	p.mu.Unlock()
	if start {
		go p.run()
	}
	p.wake()
}

// remove stops sending for s; a turn under way for s finishes first
// (s.sendMu), so nothing is sent for s once remove returns.
func (p *pump) remove(s *session) {
	p.mu.Lock()
	// slices.DeleteFunc zeroes the slot it frees at the end: a plain
	// append(s[:i], s[i+1:]...) leaves it in the backing array, and the
	// sessions there (every one, when viewers leave from the end of the
	// list) stayed alive with their PeerConnections after they left.
	p.sessions = slices.DeleteFunc(p.sessions, func(x *session) bool { return x == s })
	p.mu.Unlock()
	s.sendMu.Lock()
	s.stopped = true
	s.sendMu.Unlock()
	p.wake() // lets the goroutine end if that was the last viewer
}

func (p *pump) run() {
	var turn []*session
	for range p.notify {
		p.mu.Lock()
		if len(p.sessions) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		turn = append(turn[:0], p.sessions...)
		p.mu.Unlock()
		more := false
		for _, s := range turn {
			// A panic while sending ends that viewer alone; the pump
			// goes on with the others.
			sent := false
			if panics.Do(panicComponent, s.log, func() { sent = s.pump() }) {
				s.sendMu.Lock()
				s.stopped = true
				s.sendMu.Unlock()
				s.cancel(errPanicked)
				continue
			}
			more = more || sent
		}
		clear(turn) // keep no session alive from here
		if more {
			p.wake()
		}
	}
}

// pump sends up to unitsPerTurn of the session's queued units and reports
// whether more may be queued. When the reader or a send fails, it ends the
// session with the reason. Called by the session's pump only.
func (s *session) pump() bool {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.stopped {
		return false
	}
	for range unitsPerTurn {
		u, cached, err := s.reader.Load().TryRead()
		if u == nil {
			if err != nil {
				s.stopped = true
				s.cancel(readError(s, err))
			}
			return false
		}
		ot := s.byTrack[u.Track.ID]
		if ot == nil || len(u.RTP) == 0 {
			continue // a track this viewer doesn't take, or nothing to send (a processor failed)
		}
		if err := ot.Send(u, cached); err != nil {
			s.stopped = true
			s.cancel(err)
			return false
		}
	}
	return true
}

// readError is why a viewer's reader ended, as the session's end reason.
func readError(s *session, err error) error {
	switch {
	case errors.Is(err, media.ErrStreamEnded):
		return errors.New("stream ended")
	case errors.Is(err, media.ErrIncompatibleRepublish):
		s.log.Warn("viewer cannot continue: the stream was republished with other codecs", "err", err)
	}
	return err
}
