package media

// Bounds of the GOP cache. A GOP that outgrows them is not cached: readers
// joining during it wait for the next keyframe, as they would without a
// cache.
const (
	// MaxGOPBytes bounds the memory the cache holds per stream: the
	// Unit.Size of every cached unit, video and audio, payload, RTP packets
	// and bookkeeping alike, so that no kind of unit (an RTP ingest's
	// damaged units carry packets and no NAL units) escapes it. A 4 s GOP
	// at 16 Mbit/s, well above what WebRTC viewers are sent, is 7.6 MiB of
	// NAL units, held twice once processors have added its RTP packets
	// (about 17.5 MiB with the packets' own size), plus its audio.
	MaxGOPBytes = 20 << 20
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
	units []*Unit
	// sizes[i] is units[i].Size() when it was cached: what bytes counts
	// for it and gives back when it leaves, also when a processor's
	// backfill has put a copy with more in its place since.
	sizes  []int
	bytes  int        // sum of sizes, at most MaxGOPBytes
	tracks []gopTrack // per track ID
	gen    uint64     // keyframes cached so far, for gopTrack.gen
}

type gopTrack struct {
	video bool
	start int // index in units of the track's last keyframe; -1: no GOP cached
	gen   uint64
}

// reset empties the cache for a new set of tracks (nil: none).
func (c *gopCache) reset(tracks []*Track) {
	c.empty()
	if tracks == nil {
		c.units, c.sizes = nil, nil
	}
	c.tracks = c.tracks[:0]
	for _, t := range tracks {
		c.tracks = append(c.tracks, gopTrack{video: t.IsVideo(), start: -1})
	}
}

// add caches u if it belongs to a cached GOP, or starts one. A unit that
// would take the cache past a bound is not cached: for a video unit, its
// track's GOP goes (the other video tracks' stay); for another unit, the
// whole cache does.
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
		size := u.Size()
		if len(c.units) >= MaxGOPUnits || c.bytes+size > MaxGOPBytes {
			c.drop()
			return
		}
		c.push(u, size)
		return
	}
	if u.Key {
		t.start = len(c.units)
		c.gen++
		t.gen = c.gen
		c.trim()
	} else if t.start < 0 {
		return
	}
	size := u.Size()
	if c.bytes+size > MaxGOPBytes || len(c.units) >= MaxGOPUnits {
		t.start = -1
		c.trim()
		return
	}
	c.push(u, size)
}

func (c *gopCache) push(u *Unit, size int) {
	c.units = append(c.units, u)
	c.sizes = append(c.sizes, size)
	c.bytes += size
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
	for _, size := range c.sizes[:base] {
		c.bytes -= size
	}
	n := copy(c.units, c.units[base:])
	copy(c.sizes, c.sizes[base:])
	clear(c.units[n:])
	c.units, c.sizes = c.units[:n], c.sizes[:n]
	for i := range c.tracks {
		if c.tracks[i].start >= 0 {
			c.tracks[i].start -= base
		}
	}
}

// empty releases every cached unit.
func (c *gopCache) empty() {
	clear(c.units)
	c.units, c.sizes, c.bytes = c.units[:0], c.sizes[:0], 0
}

// drop empties the cache until the next keyframe.
func (c *gopCache) drop() {
	c.empty()
	for i := range c.tracks {
		c.tracks[i].start = -1
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
