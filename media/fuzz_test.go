package media

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/wishbridge/bridge/internal/panics"
)

// FuzzHubSequence drives one path of a registry through a sequence of
// operations decoded from the fuzz input: publish, declare tracks (a
// republish with the same or other tracks), write (units of the
// publisher's tracks, of a previous publisher's, of none), leave, grace
// expiry, add and release processors (some of which panic), attach, read
// and close readers, ask for keyframes, and WebRTC-like sessions that see
// the tracks at one point and add their processors and reader at a later
// one (as a WHEP viewer does once its ICE completes: issue 12, defect 1).
//
// It checks what callers rely on: nothing panics out of the hub; a
// processor's constructor is given one of the stream's current tracks; a
// processor runs only between its creation and its Close, which comes
// exactly once; every processor panic is recovered and counted once; a
// reader gets only units of tracks that were declared, ends only when the
// stream ends (ErrStreamEnded) or is taken over with other codecs
// (ErrIncompatibleRepublish), and then for good; once everything is
// closed, released and ended, no processor, reader or goroutine is left.
func FuzzHubSequence(f *testing.F) {
	for _, seed := range hubSeeds {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		h := newHubRun(t)
		for i := 0; i+1 < len(ops) && i < 2*maxHubOps; i += 2 {
			h.step(ops[i], ops[i+1])
		}
		h.finish()
	})
}

// maxHubOps bounds the operations of one input, so an input runs in
// milliseconds and the fuzzer tries many.
const maxHubOps = 300

// Operations, the first byte of each pair (modulo opCount); the second is
// the operation's argument.
const (
	opPublish = iota
	opSetTracks
	opWrite
	opLeave
	opGraceExpiry
	opAddProcessor
	opRelease
	opNewReader
	opRead
	opCloseReader
	opKeyframe
	opOffer   // a session sees the stream's tracks
	opConnect // ... and later adds its processors and reader
	opKeyframeSource
	opStaleWrite // a publisher that has left writes
	opCount
)

// hubSeeds are the fuzzer's starting points, pairs of (operation,
// argument). The first is defect 1: H.264+AAC published, a session
// answered, the publisher leaves and comes back with video only, then
// the session connects.
var hubSeeds = [][]byte{
	{opPublish, 0, opSetTracks, 0x44, opWrite, 0x80, opWrite, 0x10, opOffer, 0, opLeave, 0, opPublish, 0, opSetTracks, 0x00, opWrite, 0x80, opConnect, 0, opRead, 0xff, opWrite, 0x80, opRead, 0xff},
	// Compatible republish while readers and processors are attached.
	{opPublish, 0, opSetTracks, 0x44, opAddProcessor, 0x00, opAddProcessor, 0x04, opNewReader, 0x1f, opWrite, 0x80, opWrite, 0x10, opWrite, 0x01, opLeave, 0, opPublish, 0, opSetTracks, 0x44, opWrite, 0x80, opRead, 0xff, opRelease, 0, opRelease, 1},
	// Grace expiry with readers, then a new stream on the same path.
	{opPublish, 0, opSetTracks, 0x48, opNewReader, 0x13, opWrite, 0x80, opLeave, 0, opGraceExpiry, 0, opRead, 0xff, opPublish, 0, opSetTracks, 0x00, opNewReader, 0, opWrite, 0x80, opRead, 0xff},
	// Panicking processors: in Process, over the cache, in the constructor, in Close.
	{opPublish, 0, opSetTracks, 0x44, opWrite, 0x80, opWrite, 0x01, opAddProcessor, 0x40, opNewReader, 0x1f, opWrite, 0x01, opWrite, 0x01, opWrite, 0x01, opAddProcessor, 0x41, opAddProcessor, 0x82, opAddProcessor, 0xc3, opWrite, 0x81, opWrite, 0x10, opRead, 0xff, opRelease, 0, opRelease, 1, opRelease, 2},
	// Foreign units, keyframe requests, and a session on a stream that ends.
	{opPublish, 0, opSetTracks, 0x44, opWrite, 0x80, opWrite, 0x31, opWrite, 0x33, opKeyframeSource, 0, opNewReader, 0x10, opKeyframe, 0x02, opKeyframe, 0x0f, opOffer, 0, opLeave, 0, opGraceExpiry, 1, opConnect, 0, opRead, 0xff},
	// A publisher that left keeps writing while the next one publishes.
	{opPublish, 0, opSetTracks, 0x44, opNewReader, 0x1f, opLeave, 0, opStaleWrite, 0, opPublish, 0, opStaleWrite, 0x10, opSetTracks, 0x44, opStaleWrite, 0x20, opWrite, 0x80, opRead, 0xff},
}

// fuzzCodecs are the codecs a track set's slots are picked from.
var fuzzCodecs = []Codec{
	H264{SPS: []byte{0x67}, PPS: []byte{0x68}},
	AAC{Config: []byte{0x12, 0x10}, SampleRate: 44100, Channels: 2},
	Opus{Channels: 2},
	H265{},
}

// hubRun is the state of one input's run.
type hubRun struct {
	t      *testing.T
	reg    *Registry
	noLeak func()
	panics uint64 // "processor" panics counted before the run

	pub    *Publication
	left   []*Publication   // publications that have left
	stale  map[*Unit]bool   // units written by those: never read
	tracks []*Track         // pub's declared tracks
	known  map[*Track]bool  // every track ever declared
	order  []*Track         // the same, in declaration order
	pts    time.Duration    // the next unit's timestamps
	stream *Stream          // the path's stream last published
	all    []*Stream        // every stream the run made
	prev   map[*Stream]bool // streams whose tracks were declared once

	held     []heldProc
	made     []*fuzzProc
	panicked int // panics the run caused in constructors
	readers  []*fuzzReader
	sessions []*fuzzSession
	seq      int
}

type heldProc struct {
	release func()
}

type fuzzReader struct {
	r      *Reader
	stream *Stream
	// end is the error the reader must end with (nil: it must not end):
	// set when its stream ends or is taken over with other codecs.
	end   error
	ended bool
}

type fuzzSession struct {
	stream *Stream
	tracks []*Track
}

// fuzzProc is a processor that checks its own lifecycle and panics where
// it was told to.
type fuzzProc struct {
	t          *testing.T
	track      int
	panicAt    int // in Process from this call on; 0: never
	panicClose bool
	calls      int
	closes     int
	panics     int
}

func (p *fuzzProc) Process(u *Unit) error {
	if p.closes > 0 {
		p.t.Errorf("processor of track %d run after its Close", p.track)
	}
	if u.Track.ID != p.track {
		p.t.Errorf("processor of track %d given a unit of track %d", p.track, u.Track.ID)
	}
	p.calls++
	if p.panicAt > 0 && p.calls >= p.panicAt {
		p.panics++
		panic(fmt.Sprintf("fuzz processor panics at call %d", p.calls))
	}
	if p.calls%7 == 0 {
		return errors.New("fuzz processor fails one unit in seven")
	}
	u.RTP = []*rtp.Packet{{Header: rtp.Header{Timestamp: uint32(u.PTS)}}}
	return nil
}

func (p *fuzzProc) Close() {
	p.closes++
	if p.panicClose {
		p.panics++
		panic("fuzz processor panics in Close")
	}
}

func newHubRun(t *testing.T) *hubRun {
	reg := NewRegistry(quietLog)
	reg.SetGrace(func(string) time.Duration { return time.Hour }) // expiry is an operation
	return &hubRun{
		t: t, reg: reg, noLeak: goroutineBaseline(t), panics: processorPanics(),
		known: map[*Track]bool{}, prev: map[*Stream]bool{}, stale: map[*Unit]bool{},
	}
}

func processorPanics() uint64 {
	for _, c := range panics.Counts() {
		if c.Component == "processor" {
			return c.N
		}
	}
	return 0
}

func (h *hubRun) step(op, arg byte) {
	t := h.t
	switch op % opCount {
	case opPublish:
		p, err := h.reg.Publish("live/fuzz", fmt.Sprint("publisher ", h.seq))
		h.seq++
		if h.pub != nil {
			if !errors.Is(err, ErrPublisherExists) {
				t.Fatalf("a second publisher attached: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Publish with no publisher attached: %v", err)
		}
		h.pub, h.tracks = p, nil
		if p.Stream != h.stream {
			h.stream = p.Stream
			h.all = append(h.all, p.Stream)
		}
	case opSetTracks:
		if h.pub == nil {
			return
		}
		tracks := make([]*Track, 1+int(arg>>6)%3)
		for i := range tracks {
			tracks[i] = &Track{Codec: fuzzCodecs[int(arg>>(2*i))%len(fuzzCodecs)]}
		}
		s := h.pub.Stream
		old := s.Tracks()
		err := h.pub.SetTracks(tracks...)
		if h.tracks != nil {
			if err == nil {
				t.Fatal("SetTracks succeeded twice")
			}
			return
		}
		if err != nil {
			t.Fatalf("SetTracks: %v", err)
		}
		h.tracks = tracks
		for _, tr := range tracks {
			h.known[tr] = true
		}
		h.order = append(h.order, tracks...)
		h.prev[s] = true
		if old != nil && !compatible(old, tracks) {
			h.expectEnd(s, ErrIncompatibleRepublish)
		}
	case opWrite:
		if h.pub == nil {
			return
		}
		h.pts += time.Duration(1+arg&0x0f) * time.Millisecond
		if arg&0x40 != 0 {
			h.pts += 15 * time.Second // a jump
		}
		var tr *Track
		switch i := int(arg>>4) & 0x03; {
		case i < len(h.tracks):
			tr = h.tracks[i]
		case i == 3 && arg&0x01 != 0 && len(h.order) > 0: // a track of this or an earlier publisher
			tr = h.order[int(arg>>1)%len(h.order)]
		}
		u := &Unit{Track: tr, PTS: h.pts, DTS: h.pts, Key: arg&0x80 != 0}
		if tr != nil && tr.IsVideo() {
			u.NALUs = [][]byte{{0x65, arg}}
		} else {
			u.Data = []byte{arg}
		}
		if arg&0x20 != 0 {
			u.RTP = []*rtp.Packet{{Header: rtp.Header{Timestamp: 1}, Payload: []byte{arg}}}
		}
		h.pub.Write(u)
	case opLeave:
		if h.pub == nil {
			return
		}
		h.pub.Close()
		if !h.prev[h.pub.Stream] {
			h.expectEnd(h.pub.Stream, ErrStreamEnded) // no tracks were ever declared: no grace
		}
		h.pub.Close() // twice: no effect
		h.left = append(h.left, h.pub)
		h.pub, h.tracks = nil, nil
	case opGraceExpiry:
		s := h.stream
		if s == nil {
			return
		}
		if arg&1 != 0 {
			h.reg.EndWaiting()
		} else {
			s.mu.Lock()
			gen := s.graceGen
			s.mu.Unlock()
			if arg&2 != 0 {
				gen-- // a timer that fired late, after a takeover
			}
			s.graceExpired(gen)
		}
		if h.pub == nil && (arg&3) != 2 {
			h.expectEnd(s, ErrStreamEnded)
		}
	case opAddProcessor:
		s := h.stream
		if s == nil {
			return
		}
		h.addProcessor(s, h.pickTrack(s, arg), fmt.Sprint("p", arg&0x03), arg>>6)
	case opRelease:
		if len(h.held) == 0 {
			return
		}
		i := int(arg) % len(h.held)
		h.held[i].release()
		if arg&0x80 != 0 {
			h.held[i].release() // twice: no effect
		}
		h.held = slices.Delete(h.held, i, i+1)
	case opNewReader:
		if h.stream == nil {
			return
		}
		h.newReader(h.stream, arg)
	case opRead:
		if len(h.readers) == 0 {
			return
		}
		h.read(h.readers[int(arg&0x0f)%len(h.readers)], int(arg>>4)+1)
	case opCloseReader:
		if len(h.readers) == 0 {
			return
		}
		i := int(arg) % len(h.readers)
		h.readers[i].r.Close()
		if u, _, err := h.readers[i].r.TryRead(); u != nil || !errors.Is(err, ErrReaderClosed) {
			t.Fatalf("closed reader: unit %v, err %v", u != nil, err)
		}
		h.readers = slices.Delete(h.readers, i, i+1)
	case opKeyframe:
		if len(h.readers) == 0 {
			return
		}
		r := h.readers[int(arg>>3)%len(h.readers)]
		r.r.RequestKeyframe(int(arg&0x07) - 2) // also negative and out of range
	case opOffer:
		if h.stream == nil || h.stream.Tracks() == nil {
			return
		}
		h.sessions = append(h.sessions, &fuzzSession{stream: h.stream, tracks: h.stream.Tracks()})
	case opConnect:
		if len(h.sessions) == 0 {
			return
		}
		i := int(arg) % len(h.sessions)
		h.connect(h.sessions[i])
		h.sessions = slices.Delete(h.sessions, i, i+1)
	case opStaleWrite:
		if len(h.left) == 0 || len(h.order) == 0 {
			return
		}
		h.pts += time.Millisecond
		u := &Unit{Track: h.order[int(arg>>4)%len(h.order)], PTS: h.pts, DTS: h.pts, Key: true, NALUs: [][]byte{{0x65}}, Data: []byte{0}}
		h.stale[u] = true
		h.left[int(arg&0x0f)%len(h.left)].Write(u)
	case opKeyframeSource:
		if h.pub == nil {
			return
		}
		pub := h.pub
		pub.OnKeyframeRequest(func(track int) {
			if track < 0 || track >= len(pub.Stream.Tracks()) {
				t.Errorf("keyframe request for track %d of %d", track, len(pub.Stream.Tracks()))
			}
		})
	}
}

// pickTrack returns a track to add a processor to: one of s's, one of an
// earlier publisher's (maybe gone), one that never was, or nil.
func (h *hubRun) pickTrack(s *Stream, arg byte) *Track {
	ts := s.Tracks()
	switch k := int(arg>>2) & 0x0f; {
	case k < len(ts):
		return ts[k]
	case k < 8 && len(h.order) > 0:
		return h.order[k%len(h.order)]
	case k >= 8 && k < 12:
		return &Track{ID: k - 8, Codec: fuzzCodecs[k%len(fuzzCodecs)]}
	}
	return nil
}

// addProcessor adds a fuzzProc under name to track tr of s; how (0..3):
// a sound one, one panicking in Process, one whose constructor panics, one
// panicking in Process at once and in Close.
func (h *hubRun) addProcessor(s *Stream, tr *Track, name string, how byte) bool {
	t := h.t
	release, err := releaseOf(s.AddProcessor(tr, name, func(cur *Track) Processor {
		// As a constructor written before the hub checked would: it
		// indexes the stream's tracks with the ID it is given.
		if s.Tracks()[cur.ID] != cur {
			t.Errorf("constructor given %v, not the stream's track %d", cur, cur.ID)
		}
		switch how & 0x03 {
		case 2:
			h.panicked++
			panic("fuzz constructor panics")
		case 1:
			p := &fuzzProc{t: t, track: cur.ID, panicAt: 3}
			h.made = append(h.made, p)
			return p
		case 3:
			p := &fuzzProc{t: t, track: cur.ID, panicAt: 1, panicClose: true}
			h.made = append(h.made, p)
			return p
		}
		p := &fuzzProc{t: t, track: cur.ID}
		h.made = append(h.made, p)
		return p
	}))
	if release == nil {
		t.Fatal("AddProcessor returned a nil release")
	}
	if err != nil {
		if cur := s.Track(idOf(tr)); tr != nil && cur != nil && cur.Codec.Name() == tr.Codec.Name() && errors.Is(err, ErrNoTrack) {
			t.Fatalf("AddProcessor refused %v, which the stream has: %v", tr, err)
		}
		release()
		return false
	}
	h.held = append(h.held, heldProc{release: release})
	return true
}

func idOf(tr *Track) int {
	if tr == nil {
		return -1
	}
	return tr.ID
}

func (h *hubRun) newReader(s *Stream, arg byte) *fuzzReader {
	r, err := s.NewReader(ReaderOptions{Name: fmt.Sprint("reader ", h.seq), QueueSize: 1 + int(arg&0x0f), StartAtKeyframe: arg&0x10 != 0})
	h.seq++
	if err != nil {
		if !errors.Is(err, ErrStreamEnded) {
			h.t.Fatalf("NewReader: %v", err)
		}
		select {
		case <-s.Done():
		default:
			h.t.Fatalf("NewReader on a stream that has not ended: %v", err)
		}
		return nil
	}
	fr := &fuzzReader{r: r, stream: s}
	h.readers = append(h.readers, fr)
	return fr
}

// read takes up to n units queued for fr and checks them and its end.
func (h *hubRun) read(fr *fuzzReader, n int) {
	t := h.t
	for range n {
		u, _, err := fr.r.TryRead()
		if u != nil {
			if fr.ended {
				t.Fatal("a unit after the reader's end")
			}
			if !h.known[u.Track] {
				t.Fatalf("reader got a unit of %v, never declared", u.Track)
			}
			if h.stale[u] {
				t.Fatal("reader got a unit written by a publisher that had left")
			}
			continue
		}
		if err == nil {
			return
		}
		if fr.end == nil || !errors.Is(err, fr.end) {
			t.Fatalf("reader ended with %v, expected %v", err, fr.end)
		}
		fr.ended = true
		return
	}
}

// connect is a session whose connection completes: the processors of the
// tracks it saw, then a reader, then the check that the stream still has
// those tracks (a WHEP viewer's forward, egress/whep).
func (h *hubRun) connect(ss *fuzzSession) {
	var releases []func()
	defer func() {
		for _, r := range releases {
			r()
		}
	}()
	for _, tr := range ss.tracks {
		n := len(h.held)
		if !h.addProcessor(ss.stream, tr, "rtp", 0) {
			return // republished with other tracks: the session ends
		}
		releases = append(releases, h.held[n].release)
		h.held = h.held[:n]
	}
	fr := h.newReader(ss.stream, 0x1f)
	if fr == nil {
		return
	}
	for _, tr := range ss.tracks {
		if cur := ss.stream.Track(tr.ID); cur == nil || cur.Codec.Name() != tr.Codec.Name() {
			fr.r.Close()
			h.readers = h.readers[:len(h.readers)-1]
			return
		}
	}
	h.read(fr, 64)
}

// expectEnd records that the readers attached to s now must end with err
// (unless they already must end otherwise).
func (h *hubRun) expectEnd(s *Stream, err error) {
	for _, fr := range h.readers {
		if fr.stream == s && fr.end == nil {
			fr.end = err
		}
	}
}

// finish closes, releases and ends everything, then checks nothing is
// left.
func (h *hubRun) finish() {
	t := h.t
	for _, fr := range h.readers {
		h.read(fr, 1<<20)
	}
	if h.pub != nil {
		h.step(opLeave, 0)
	}
	h.reg.EndWaiting()
	for _, fr := range h.readers {
		if fr.end == nil {
			fr.end = ErrStreamEnded
		}
		h.read(fr, 1<<20)
		if !fr.ended {
			t.Fatalf("reader not ended with its stream (expected %v)", fr.end)
		}
		fr.r.Close()
	}
	for _, p := range h.held {
		p.release()
	}
	for _, s := range h.all {
		if !s.closed.Load() {
			t.Fatal("a stream outlived its publishers after EndWaiting")
		}
		if n := len(s.processors); n != 0 {
			t.Fatalf("%d processors left after every release", n)
		}
		if n := s.Readers(); n != 0 {
			t.Fatalf("%d readers left after every Close", n)
		}
	}
	caused := h.panicked
	for _, p := range h.made {
		if p.closes != 1 {
			t.Fatalf("processor of track %d closed %d times, expected once", p.track, p.closes)
		}
		caused += p.panics
	}
	if got := processorPanics() - h.panics; got != uint64(caused) {
		t.Fatalf("%d processor panics counted, %d caused", got, caused)
	}
	if _, ok := h.reg.Get("live/fuzz"); ok {
		t.Fatal("the path is still in the registry")
	}
	h.noLeak()
}
