package media

import "time"

// Bounds of a SourceClock.
const (
	// MaxTimestampJump is how far a publisher's timestamp step may differ
	// from the time that passed between the two arrivals before it is
	// taken as a discontinuity rather than as media time: far more than
	// the reordering of B-frames or of packets on the network (well under
	// a second), a sender's pacing jitter or a burst after a stall, and
	// far less than the steps of a restarted encoder's random RTP base or
	// a hostile sender (up to 2^31 ticks, 6.6 hours at 90 kHz, per packet,
	// which overflowed the stream clock after 386,000 packets).
	MaxTimestampJump = 10 * time.Second
	// maxFrameStep is the largest step taken as a frame duration, for
	// re-anchoring (1 fps video); defaultFrameStep is used until one was
	// seen (an audio frame, shorter than any video frame).
	maxFrameStep     = time.Second
	defaultFrameStep = 20 * time.Millisecond
	// maxSourceTime bounds the stream time a SourceClock returns, either
	// way: steps just within MaxTimestampJump, sent for long enough,
	// would otherwise still overflow time.Duration (292 years) after
	// about 10^9 packets. A century of stream time is no limit for real
	// media.
	maxSourceTime = 100 * 365 * 24 * time.Hour
)

// SourceClock turns the timestamps of one publisher's clock into stream
// time: the timestamps wrap (RTP's and RTMP's at 32 bits, MPEG-TS's at
// 33) and are unwrapped, counted from the first one, offset by the stream
// time it was started at. A step between two timestamps that differs by
// more than MaxTimestampJump from the time that passed between their
// arrivals is a discontinuity: the clock is re-anchored, continuing from
// the highest stream time it returned plus the time that passed (at least
// one frame duration, the last plausible forward step), and Time reports
// it for the caller to log. So stream time never goes back by more than
// the reordering the source really has, never overflows, and a publisher
// that jumps its clock (an encoder restart, a splice, a hostile sender)
// looks like one that paused for as long as it really did.
//
// The offset and every step are whole ticks, so a stream time converts
// back to exactly the tick it came from when rounded to the nearest tick.
// Set Rate (and Bits, if not 32), then call Start with the first
// timestamp; one goroutine uses it.
type SourceClock struct {
	Rate int // ticks per second
	Bits int // width of the timestamps: 32 (also when 0) or 33

	last    uint64        // the last timestamp
	arrived time.Time     // when it arrived
	ext     int64         // its ticks since the first timestamp
	high    int64         // the highest ext returned
	frame   int64         // the last forward step up to maxFrameStep, in ticks; 0 before one
	offset  time.Duration // stream time of the first timestamp
}

// Start makes ts, which arrived at now, the clock's origin, at stream time
// at (rounded to a whole tick).
func (c *SourceClock) Start(ts uint64, at time.Duration, now time.Time) {
	c.last, c.arrived = ts&c.mask(), now
	c.ext, c.high, c.frame = 0, 0, 0
	c.offset = c.duration(c.ticks(at))
}

// Time returns the stream time of ts, which arrived at now, and whether
// it was a discontinuity (see SourceClock).
func (c *SourceClock) Time(ts uint64, now time.Time) (time.Duration, bool) {
	mask := c.mask()
	ts &= mask
	step := int64((ts - c.last) & mask)
	if step > int64(mask>>1) { // a step back, or a wrap
		step -= int64(mask) + 1
	}
	passed := c.ticks(min(max(now.Sub(c.arrived), 0), maxSourceTime))
	bound := c.ticks(MaxTimestampJump)
	jumped := step-passed > bound || passed-step > bound
	if jumped {
		frame := c.frame
		if frame == 0 {
			frame = c.ticks(defaultFrameStep)
		}
		c.ext = c.high + max(passed, frame)
	} else {
		if step > 0 && step <= c.ticks(maxFrameStep) {
			c.frame = step
		}
		c.ext += step
	}
	limit := c.ticks(maxSourceTime)
	c.ext = min(max(c.ext, -limit), limit)
	c.high = max(c.high, c.ext)
	c.last, c.arrived = ts, now
	return c.offset + c.duration(c.ext), jumped
}

func (c *SourceClock) mask() uint64 {
	if c.Bits == 33 {
		return 1<<33 - 1
	}
	return 1<<32 - 1
}

// ticks returns d in whole ticks, rounded to the nearest.
func (c *SourceClock) ticks(d time.Duration) int64 { return ClockTicks(d, c.Rate) }

// duration returns t ticks as a Duration (see TicksDuration).
func (c *SourceClock) duration(t int64) time.Duration { return TicksDuration(t, c.Rate) }
