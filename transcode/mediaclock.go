package transcode

import "time"

// MediaClock turns the RTP timestamps of one received stream into stream
// time: the 32-bit timestamps are unwrapped, counted from the stream's first
// one, and offset by when that first packet arrived relative to the
// session's first packet of any track. The offset is a whole number of
// ticks, so a stream time converts back to exactly the tick it came from
// (RTPTimestamp rounds to the nearest tick). The zero value is not
// usable: set Rate, then call Start with the first timestamp.
type MediaClock struct {
	Rate   int // ticks per second
	last   uint32
	ext    int64         // ticks of last since the first timestamp
	offset time.Duration // stream time of the first timestamp
}

// Start makes ts, which arrived at since after the session's first packet,
// the clock's origin.
func (c *MediaClock) Start(ts uint32, since time.Duration) {
	c.last, c.ext = ts, 0
	c.offset = ticksToDuration(ClockTicks(since, c.Rate), c.Rate)
}

// PTS returns the stream time of ts. Timestamps within 2^31 ticks (6.6 hours
// at 90 kHz) of the last one are taken as before or after it, so the clock
// follows wraps and reordering.
func (c *MediaClock) PTS(ts uint32) time.Duration {
	c.ext += int64(int32(ts - c.last))
	c.last = ts
	return c.offset + ticksToDuration(c.ext, c.Rate)
}
