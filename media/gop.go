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
	// sizes[i] is what bytes counts for units[i] and gives back when it
	// leaves: its Size() when it was cached, or when a processor's backfill
	// put a copy with the processor's output in its place (replace).
	sizes  []int
	bytes  int        // sum of sizes, at most MaxGOPBytes
	tracks []gopTrack // per track ID
	gen    uint64     // keyframes cached so far, for gopTrack.gen
	// first is the sequence number of units[0]. Every unit cached takes
	// the next number (units[i] has first+i) and keeps it while it stays,
	// so that a processor's backfill, which runs without the stream's
	// locks, finds where it left off however the cache moved meanwhile
	// (see Stream.AddProcessor). Never decreases: a number is never reused.
	first uint64
}

// seqUnit is a cached unit with its sequence number (see gopCache.first).
type seqUnit struct {
	seq uint64
	u   *Unit
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
			c.evict(id)
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
		c.evict(id)
		return
	}
	c.push(u, size)
}

// evict applies the bound to a unit of track id that does not fit: for a
// video track, its GOP goes (the other video tracks' stay); for another
// track, the whole cache does.
func (c *gopCache) evict(id int) {
	if !c.tracks[id].video {
		c.drop()
		return
	}
	c.tracks[id].start = -1
	c.trim()
}

// replace puts u, a copy of units[i] with a processor's output added (see
// Stream.AddProcessor), in its place, and counts u's size instead, so that
// no processor's output escapes MaxGOPBytes. If the cache then exceeds it,
// the bound applies as in add (evict).
func (c *gopCache) replace(i int, u *Unit) {
	size := u.Size()
	c.bytes += size - c.sizes[i]
	c.units[i], c.sizes[i] = u, size
	if c.bytes > MaxGOPBytes {
		c.evict(u.Track.ID)
	}
}

// index returns the position in units of the unit with sequence number
// seq, or -1 if it has left the cache.
func (c *gopCache) index(seq uint64) int {
	if seq < c.first || seq-c.first >= uint64(len(c.units)) {
		return -1
	}
	return int(seq - c.first)
}

// since appends to out the units of track id that a reader joining now
// gets (see join; for a video track, from its last keyframe on) and whose
// sequence number is next or more, in write order.
func (c *gopCache) since(id int, next uint64, out []seqUnit) []seqUnit {
	if id < 0 || id >= len(c.tracks) {
		return out
	}
	from := 0
	if t := c.tracks[id]; t.video {
		if t.start < 0 {
			return out
		}
		from = t.start
	}
	if next > c.first {
		from = max(from, int(min(next-c.first, uint64(len(c.units)))))
	}
	for i := from; i < len(c.units); i++ {
		if c.units[i].Track.ID == id {
			out = append(out, seqUnit{seq: c.first + uint64(i), u: c.units[i]})
		}
	}
	return out
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
	c.first += uint64(base)
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
	c.first += uint64(len(c.units))
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
