package media

// Bounds of the GOP cache. A GOP that outgrows them is not cached: readers
// joining during it wait for the next keyframe, as they would without a
// cache.
const (
	// MaxGOPBytes bounds the payload bytes (NAL units; RTP packets added by
	// processors are not counted) cached per video track: a 4 s GOP at
	// 16 Mbit/s, well above what WebRTC viewers are sent.
	MaxGOPBytes = 8 << 20
	// MaxGOPUnits bounds the units cached per stream, audio included: a
	// 10 s GOP of 60 fps video with 48 kHz AAC (1070 units) fits twice over.
	// It bounds what a joining reader's queue grows by (a pointer each).
	MaxGOPUnits = 2048
)

// gopCache keeps, per video track, the units from its last keyframe (an
// IDR, which starts with SPS and PPS) up to now, plus the other tracks'
// units written since the earliest of those keyframes, all in write order
// in one list. It is what a reader with ReaderOptions.StartAtKeyframe gets
// first. Streams without video cache nothing: every audio unit is a key.
// Guarded by Stream.wmu; add allocates nothing once units has grown to the
// stream's GOP.
type gopCache struct {
	units  []*Unit
	tracks []gopTrack // per track ID
	gen    uint64     // keyframes cached so far, for gopTrack.gen
}

type gopTrack struct {
	video bool
	start int // index in units of the track's last keyframe; -1: no GOP cached
	bytes int // payload bytes of the track's units from start on
	gen   uint64
}

// reset empties the cache for a new set of tracks (nil: none).
func (c *gopCache) reset(tracks []*Track) {
	clear(c.units)
	c.units = c.units[:0]
	if tracks == nil {
		c.units = nil
	}
	c.tracks = c.tracks[:0]
	for _, t := range tracks {
		c.tracks = append(c.tracks, gopTrack{video: t.IsVideo(), start: -1})
	}
}

// add caches u if it belongs to a cached GOP, or starts one.
func (c *gopCache) add(u *Unit) {
	id := u.Track.ID
	if id >= len(c.tracks) {
		return
	}
	t := &c.tracks[id]
	if !t.video {
		if len(c.units) == 0 { // no GOP is being cached
			return
		}
		if len(c.units) >= MaxGOPUnits {
			c.drop()
			return
		}
		c.units = append(c.units, u)
		return
	}
	if u.Key {
		t.start, t.bytes = len(c.units), 0
		c.gen++
		t.gen = c.gen
		c.trim()
	} else if t.start < 0 {
		return
	}
	size := unitBytes(u)
	if t.bytes+size > MaxGOPBytes || len(c.units) >= MaxGOPUnits {
		t.start, t.bytes = -1, 0
		c.trim()
		return
	}
	t.bytes += size
	c.units = append(c.units, u)
}

// trim drops the units before the earliest cached keyframe, or everything
// when no video track has a GOP cached.
func (c *gopCache) trim() {
	base := -1
	for _, t := range c.tracks {
		if t.video && t.start >= 0 && (base < 0 || t.start < base) {
			base = t.start
		}
	}
	if base < 0 {
		c.drop()
		return
	}
	if base == 0 {
		return
	}
	n := copy(c.units, c.units[base:])
	clear(c.units[n:])
	c.units = c.units[:n]
	for i := range c.tracks {
		if c.tracks[i].start >= 0 {
			c.tracks[i].start -= base
		}
	}
}

// drop empties the cache until the next keyframe.
func (c *gopCache) drop() {
	clear(c.units)
	c.units = c.units[:0]
	for i := range c.tracks {
		c.tracks[i].start, c.tracks[i].bytes = -1, 0
	}
}

// join returns what a joining reader gets: the cached units in write order,
// leaving out each video track's units from before its last keyframe. It
// calls cached with the ID of each video track whose GOP is in there.
func (c *gopCache) join(cached func(track int)) []*Unit {
	if len(c.units) == 0 {
		return nil
	}
	out := make([]*Unit, 0, len(c.units))
	for i, u := range c.units {
		if t := c.tracks[u.Track.ID]; !t.video || (t.start >= 0 && i >= t.start) {
			out = append(out, u)
		}
	}
	for id, t := range c.tracks {
		if t.video && t.start >= 0 {
			cached(id)
		}
	}
	return out
}

// gopOf returns the cached GOP of video track id (from its keyframe on, that
// track's units only) and the keyframe's generation; ok is false when none
// is cached.
func (c *gopCache) gopOf(id int) (units []*Unit, gen uint64, ok bool) {
	if id < 0 || id >= len(c.tracks) || !c.tracks[id].video || c.tracks[id].start < 0 {
		return nil, 0, false
	}
	t := c.tracks[id]
	for _, u := range c.units[t.start:] {
		if u.Track.ID == id {
			units = append(units, u)
		}
	}
	return units, t.gen, true
}

// unitBytes is the payload size of u.
func unitBytes(u *Unit) int {
	n := len(u.Data)
	for _, nalu := range u.NALUs {
		n += len(nalu)
	}
	return n
}
