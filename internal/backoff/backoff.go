// Package backoff is the reconnect policy shared by the bridge's outbound
// clients (RTMP, SRT and WHIP pushes; RTMP, SRT and WHEP pulls): after a
// failure wait Min, doubling up to Max, back to Min once an attempt has
// run for Reset; a server's Retry-After is waited instead when it gives
// one. internal/reconnect decides which of Next and Pause an attempt's end
// calls for.
package backoff

import (
	"context"
	"time"
)

// Defaults of the bridge's reconnect policy.
const (
	DefaultMin   = time.Second
	DefaultMax   = 30 * time.Second
	DefaultReset = time.Minute
)

// Backoff is a capped exponential backoff. Create it with New; it is not
// safe for concurrent use (one per Run loop).
type Backoff struct {
	min, max, reset time.Duration
	delay           time.Duration
}

// New returns a backoff that starts at min, doubles up to max and goes
// back to min after an attempt that ran for reset.
func New(min, max, reset time.Duration) *Backoff {
	return &Backoff{min: min, max: max, reset: reset, delay: min}
}

// Restart sets the delay back to its minimum.
func (b *Backoff) Restart() { b.delay = b.min }

// Next returns how long to wait after an attempt that ran for ran and
// failed: the delay, first set back to the minimum if ran reached the
// reset, or retryAfter instead if it is above 0 (a server's Retry-After).
// The delay then doubles, up to the maximum, for the failure after.
func (b *Backoff) Next(ran, retryAfter time.Duration) time.Duration {
	wait := b.Pause(ran, retryAfter)
	if retryAfter <= 0 {
		wait = b.delay
	}
	b.delay = min(2*b.delay, b.max)
	return wait
}

// Pause returns how long to wait after an attempt that ran for ran and
// ended for a reason that is not the remote side's (the source stream
// ended): the minimum, or retryAfter if it is above 0. The delay does not
// grow; it goes back to the minimum if ran reached the reset.
func (b *Backoff) Pause(ran, retryAfter time.Duration) time.Duration {
	if ran >= b.reset {
		b.delay = b.min
	}
	if retryAfter > 0 {
		return retryAfter
	}
	return b.min
}

// Sleep waits for d or until ctx ends, and reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	select {
	case <-ctx.Done():
		t.Stop()
		return false
	case <-t.C:
		return true
	}
}
