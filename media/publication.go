package media

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/wishbridge/bridge/internal/panics"
)

// Publication is one publisher's hold on a stream, from Registry.Publish to
// Close: the publisher declares its tracks (SetTracks), writes units
// (Write) and leaves (Close). It embeds the Stream it writes to, so the
// publisher can also use the stream's read side (Tracks, NewReader, ...).
// SetTracks, Write and Close are for the publisher's goroutine.
//
// # Reconnects
//
// When the publisher leaves, the stream does not end at once: for the
// grace period the registry gives its path (Registry.SetGrace) its readers
// stay attached, idle, and the path stays claimed. A new Publish of the
// path within the grace gets a Publication on the same Stream; once it
// calls SetTracks:
//
//   - if its tracks are compatible (as many, with the same codecs in the
//     same order; parameters such as the resolution or the AAC sample rate
//     may differ), readers continue with its units. The stream's tracks
//     become the new ones (same IDs), the GOP cache starts afresh, each
//     reader's video tracks skip to the new publisher's first keyframe
//     (which, like every IDR, carries its own SPS and PPS), and every
//     processor is made anew for the new tracks. Timestamps continue: see
//     Write.
//   - otherwise every reader ends, after the units already queued for it,
//     with ErrIncompatibleRepublish saying what was published and what the
//     readers had; the stream goes on with the new tracks for new readers.
//
// If no publisher has declared tracks when the grace runs out, the stream
// ends: readers get ErrStreamEnded and the path leaves the registry. A
// publisher that attached during the grace and leaves before SetTracks
// does not extend it (but if the registry's grace for the path has become
// shorter meanwhile, the shorter one applies). A stream whose only
// publisher never declared tracks ends as soon as it leaves.
type Publication struct {
	*Stream
	peer string // the publisher's description given to Publish

	declared   bool            // guarded by Stream.mu: SetTracks succeeded
	left       bool            // guarded by Stream.mu: Close was called
	onKeyframe func(track int) // guarded by Stream.mu

	// Write side, guarded by Stream.wmu.
	started bool          // a unit was written: off is decided
	off     time.Duration // added to this publisher's timestamps
	seen    []bool        // per track: a unit of this publication was written
}

// attach makes a new publication of s if it is waiting for a publisher;
// ErrPublisherExists if it has one, ErrStreamEnded if it has ended. Called
// with the registry's lock held.
func (s *Stream) attach(publisher string) (*Publication, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, ErrStreamEnded
	}
	if s.cur != nil {
		return nil, fmt.Errorf("publish %q from %s: %w (%s)", s.path, publisher, ErrPublisherExists, s.cur.peer)
	}
	if s.graceTimer != nil {
		s.graceTimer.Stop()
		s.graceTimer = nil
	}
	s.graceGen++ // a timer that already fired does nothing
	p := &Publication{Stream: s, peer: publisher}
	s.cur = p
	s.publisher = publisher
	s.log.Info("publisher is back within the grace period", "peer", publisher, "grace_left", time.Until(s.graceUntil).Round(time.Millisecond).String())
	return p, nil
}

// OnKeyframeRequest registers f to be called when readers ask for a
// keyframe of a track (see Stream.RequestKeyframe), for publishers that can
// ask their source for one (an RTP publisher sends a PLI). f is called on
// the requesting reader's goroutine, at most once per
// KeyframeRequestInterval per track, never after this publication has
// left; it must not block. A nil f stops the requests.
func (p *Publication) OnKeyframeRequest(f func(track int)) {
	p.Stream.mu.Lock()
	defer p.Stream.mu.Unlock()
	if !p.left {
		p.onKeyframe = f
	}
}

// SetTracks declares the publisher's codecs. The first publisher's tracks
// make the stream visible to readers (Ready); a later publisher's replace
// them as described in Publication. It succeeds once per publication;
// track IDs are set to their index. Every track must be distinct and have
// a codec, and a later publisher's tracks must be Track values of its own
// (the Track of a unit tells readers which publisher it came from).
func (p *Publication) SetTracks(tracks ...*Track) error {
	s := p.Stream
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
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case p.declared:
		return fmt.Errorf("stream %q: tracks already set", s.path)
	case s.cur != p:
		return fmt.Errorf("stream %q: publisher %s has left", s.path, p.peer)
	}
	old := s.Tracks()
	for _, t := range tracks {
		if slices.Contains(old, t) {
			return fmt.Errorf("stream %q: %s is a track of the previous publisher; a new publisher declares new tracks", s.path, t)
		}
	}
	for i, t := range tracks {
		t.ID = i
	}
	var ended []*Reader
	switch {
	case old == nil:
		s.tracks.Store(&tracks)
		close(s.ready)
		s.log.Info("stream ready", "tracks", codecNames(tracks), "peer", p.peer)
	case compatible(old, tracks):
		s.tracks.Store(&tracks)
		if rs := s.readers.Load(); rs != nil {
			for _, r := range *rs {
				r.skipVideo(tracks)
			}
		}
		s.renewProcessorsLocked(true)
		s.log.Info("stream taken over by a new publisher", "tracks", codecNames(tracks), "peer", p.peer)
	default:
		err := fmt.Errorf("%w: new publisher %s sends %s, readers expected %s", ErrIncompatibleRepublish, p.peer, codecNames(tracks), codecNames(old))
		s.tracks.Store(&tracks)
		if rs := s.readers.Load(); rs != nil {
			ended = *rs
		}
		s.readers.Store(nil)
		s.renewProcessorsLocked(false)
		s.log.Warn("stream taken over by a publisher with other codecs: its readers are ended", "tracks", codecNames(tracks), "previous", codecNames(old), "readers", len(ended), "peer", p.peer)
		defer func() {
			for _, r := range ended {
				r.end(err)
			}
		}()
	}
	s.gop.reset(tracks)
	if len(s.last) != len(tracks) {
		s.last = make([]time.Duration, len(tracks))
		for i := range s.last {
			s.last[i] = noTime
		}
	}
	s.kfLast = make([]time.Time, len(tracks))
	p.seen = make([]bool, len(tracks))
	p.declared = true
	s.hadTracks = true
	s.writer = p
	return nil
}

// compatible reports whether readers of old can go on with new: as many
// tracks, with the same codecs in the same order.
func compatible(old, new []*Track) bool {
	return slices.EqualFunc(old, new, func(a, b *Track) bool { return a.Codec.Name() == b.Codec.Name() })
}

func codecNames(tracks []*Track) string {
	names := make([]string, len(tracks))
	for i, t := range tracks {
		names[i] = t.Codec.Name()
	}
	return "[" + strings.Join(names, " ") + "]"
}

// Write runs the track's processors on u, in the order they were created
// (see AddProcessor), keeps u in the GOP cache if it belongs there, and
// hands u to every reader. It never blocks on a reader: a full reader
// drops the unit and counts it. A processor's error is counted (and logged
// at most once a second); the unit still goes to the next processor and the
// readers. A processor that panics is ended (see Processor); the unit goes
// on too. Units of a track that is not one of this publication's tracks
// (so every unit before SetTracks) and units written after Close are
// discarded. Write allocates nothing once the cache has grown to the
// stream's GOP.
//
// The units of the first publisher keep their timestamps. A later
// publisher's timestamps have their own origin; Write shifts them (it sets
// u.PTS and u.DTS) onto the stream's clock, so that every track's
// timestamps keep increasing across the takeover and the gap in them is
// the time that passed: the new publisher's first unit is put at the
// wall-clock time it was written (Origin plus the time elapsed), then, if
// needed, later still, so that each track's first unit comes after that
// track's last one (1 ms or more). The timestamps of packets the
// publisher put in u.RTP move by the same amount. A receiver thus sees what
// it would see from one publisher that paused: its jitter buffer and
// playout delay estimates are not disturbed, and sender reports built from
// Origin stay right. (Continuing at the last timestamp plus one frame
// instead would make the first frames after a reconnect look late by the
// whole pause, which a receiver takes as network jitter and answers with
// more playout delay, or, for audio, discards as too late.)
func (p *Publication) Write(u *Unit) {
	s := p.Stream
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.writer != p {
		return
	}
	if u == nil || u.Track == nil || !s.ownsTrack(u.Track) {
		if since, total, log := s.invalid.add(); log {
			s.log.Warn("unit discarded: not of a track of this stream", "discarded", since, "total", total)
		}
		return
	}
	if u.Arrived.IsZero() {
		u.Arrived = time.Now()
	}
	p.retime(u)
	n := len(u.Data)
	for _, nalu := range u.NALUs {
		n += len(nalu)
	}
	s.bytesIn.Add(uint64(n))
	if ps := s.procs.Load(); ps != nil && u.Track.ID < len(*ps) {
		for _, e := range (*ps)[u.Track.ID] {
			if !s.process(e, u) {
				s.endPanicked(e)
			}
		}
	}
	s.gop.add(u)
	if rs := s.readers.Load(); rs != nil {
		var clk clock
		for _, r := range *rs {
			r.push(u, &clk)
		}
	}
}

// retime puts u on the stream clock (see Write). Called with wmu held.
func (p *Publication) retime(u *Unit) {
	s := p.Stream
	id := u.Track.ID
	if !p.started {
		p.started = true
		now := s.registry.now()
		if o := s.origin.Load(); o == 0 {
			s.origin.Store(now.Add(-u.PTS).UnixNano())
		} else {
			p.off = now.Sub(time.Unix(0, o)) - u.PTS
		}
	}
	if !p.seen[id] {
		p.seen[id] = true
		if last := s.last[id]; last != noTime {
			p.off = max(p.off, last+time.Millisecond-u.DTS, last+time.Millisecond-u.PTS)
		}
	}
	if p.off != 0 {
		u.PTS += p.off
		u.DTS += p.off
		if len(u.RTP) > 0 { // an RTP publisher's packets, on the stream clock too
			d := uint32(ClockTicks(p.off, u.Track.Codec.ClockRate()))
			for _, pkt := range u.RTP {
				pkt.Timestamp += d
			}
		}
	}
	s.last[id] = max(s.last[id], u.PTS, u.DTS)
}

// Close ends the publication: later Writes are discarded and, after the
// grace period the registry gives the path (see Publication), the stream
// ends unless a new publisher took it over. Readers keep what is queued for
// them. Safe to call more than once; a Close after a new publisher took the
// stream over does not affect it.
func (p *Publication) Close() {
	s := p.Stream
	grace := s.registry.graceFor(s.path)
	s.wmu.Lock()
	if s.writer == p {
		s.writer = nil
	}
	s.wmu.Unlock()

	s.mu.Lock()
	if p.left {
		s.mu.Unlock()
		return
	}
	p.left = true
	p.onKeyframe = nil
	if s.cur != p {
		s.mu.Unlock()
		return
	}
	s.cur = nil
	now := time.Now()
	if p.declared || now.Add(grace).Before(s.graceUntil) {
		s.graceUntil = now.Add(grace) // a shorter policy (a reload, a shutdown) applies at once
	}
	wait := s.graceUntil.Sub(now)
	if !s.hadTracks || wait <= 0 {
		s.endLocked()
		return
	}
	gen := s.graceGen
	s.graceTimer = time.AfterFunc(wait, func() {
		// This is the stream's last step: after a panic there is
		// nothing left that this goroutine could end.
		defer panics.Recover("stream grace", s.log, nil)
		s.graceExpired(gen)
	})
	s.mu.Unlock()
	s.log.Info("publisher left: readers wait for a new one", "peer", p.peer, "grace", wait.Round(time.Millisecond).String())
}

// graceExpired ends the stream if no publisher came back since the timer
// of generation gen was set.
func (s *Stream) graceExpired(gen uint64) {
	s.mu.Lock()
	if s.graceGen != gen || s.cur != nil || s.closed.Load() {
		s.mu.Unlock()
		return
	}
	s.log.Info("no publisher came back within the grace period")
	s.endLocked()
}

// endLocked ends the stream: it leaves the registry, and every reader's
// Read returns the units already queued for it, then ErrStreamEnded.
// Called with mu held; it unlocks mu.
func (s *Stream) endLocked() {
	s.closed.Store(true)
	close(s.done)
	if s.graceTimer != nil {
		s.graceTimer.Stop()
		s.graceTimer = nil
	}
	rs := s.readers.Load()
	s.readers.Store(nil)
	publisher := s.publisher
	s.mu.Unlock()

	s.registry.remove(s)
	s.wmu.Lock()
	s.gop.reset(nil) // the cache holds no memory for an ended stream
	s.wmu.Unlock()
	if rs != nil {
		for _, r := range *rs {
			r.end(ErrStreamEnded)
		}
	}
	s.log.Info("stream ended", "peer", publisher)
}
