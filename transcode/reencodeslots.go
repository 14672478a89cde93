package transcode

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wishbridge/bridge/media"
)

// DefaultReencoders is how many H.264 re-encoders run at once when
// ReencodeSlots.Max is 0. One re-encoder of 1080p30 keeps about one core
// busy (libx264 plus the decoder); two leave the rest of a small machine
// to fan-out, which is what the bridge is for.
const DefaultReencoders = 2

// reserveLease is how long a reservation holds its slot without a
// re-encoder running on it: longer than a viewer takes from the answer to
// the connection (at most the WHEP connect timeout, 20 s unless set
// lower), after which the hub makes the processor; also how long a slot
// stays with a track after its re-encoder closed, so that a takeover's new
// re-encoder and viewers coming back find it again.
const reserveLease = 30 * time.Second

// ErrReencodersBusy is returned (wrapped) by ReencodeSlots.Reserve when
// every slot is taken by other tracks.
var ErrReencodersBusy = errors.New("every video re-encoder slot is in use")

// ReencodeSlots caps the H.264 re-encoders (H264Reencoder) running at once
// in a process: a publisher turns one on by sending B-frames, and each
// costs a core. A slot belongs to one track of one stream; every viewer of
// that track shares its re-encoder, and so its slot. Create one per
// process (cmd/bridge) and give it to every egress that re-encodes. The
// zero value allows DefaultReencoders. Safe for concurrent use.
type ReencodeSlots struct {
	// Max is the number of slots; 0 means DefaultReencoders. Set before
	// first use.
	Max int

	mu    sync.Mutex
	slots map[slotKey]*slot // guarded by mu
	now   func() time.Time  // tests
}

type slotKey struct {
	stream *media.Stream
	track  int
}

// slot is held while a re-encoder runs on it (running > 0) or until its
// lease ends.
type slot struct {
	running int
	until   time.Time
}

func (s *ReencodeSlots) max() int {
	if s.Max > 0 {
		return s.Max
	}
	return DefaultReencoders
}

func (s *ReencodeSlots) time() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// Reserve takes the slot for re-encoding track id of st, and returns the
// constructor of its re-encoder (an H264Reencoder making RTP packets of at
// most mtu bytes, see NewH264Reencoder) to give Stream.AddProcessor. The
// track keeps the slot while a re-encoder made by the constructor runs,
// and for reserveLease after the reservation or after its last re-encoder
// closed. When the track has a slot already, Reserve shares it; when all
// are taken by other tracks, it fails with ErrReencodersBusy, and the
// caller should refuse as a route with "bframes: reject" would.
//
// Should a slot lapse anyway before the constructor runs, the constructor
// takes one if there is room and otherwise returns a processor that fails
// every unit with the reason (the hub counts and logs it).
func (s *ReencodeSlots) Reserve(st *media.Stream, id, mtu int) (func(*media.Track) media.Processor, error) {
	key := slotKey{st, id}
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, err := s.takeLocked(key)
	if err != nil {
		return nil, fmt.Errorf("stream %q: track %d: %w (%d in use)", st.Path(), id, err, len(s.slots))
	}
	sl.until = s.time().Add(reserveLease)
	return func(t *media.Track) media.Processor {
		s.mu.Lock()
		sl, err := s.takeLocked(key)
		if err == nil {
			sl.running++
		}
		s.mu.Unlock()
		if err != nil {
			return errProcessor{fmt.Errorf("h264 re-encode: stream %q: %s: %w", st.Path(), t, err)}
		}
		p, err := newH264Reencoder(t, mtu)
		if err != nil {
			s.stop(key)
			return errProcessor{err}
		}
		p.release = func() { s.stop(key) }
		return p
	}, nil
}

// takeLocked returns key's slot, making it if there is room (after
// dropping the slots whose lease ran out). Called with mu held.
func (s *ReencodeSlots) takeLocked(key slotKey) (*slot, error) {
	if sl := s.slots[key]; sl != nil {
		return sl, nil
	}
	now := s.time()
	for k, sl := range s.slots {
		if sl.running == 0 && now.After(sl.until) {
			delete(s.slots, k)
		}
	}
	if len(s.slots) >= s.max() {
		return nil, ErrReencodersBusy
	}
	if s.slots == nil {
		s.slots = make(map[slotKey]*slot)
	}
	sl := &slot{}
	s.slots[key] = sl
	return sl, nil
}

// stop notes that a re-encoder on key's slot has closed; the slot stays
// for reserveLease.
func (s *ReencodeSlots) stop(key slotKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[key]; sl != nil {
		sl.running--
		sl.until = s.time().Add(reserveLease)
	}
}
