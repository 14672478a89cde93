// Package reconnect is the run loop of the bridge's six outbound clients:
// the pushes (egress/rtmp, egress/srt, egress/whip: one hub stream to one
// target) and the pulls (ingest/rtmp, ingest/srt, ingest/whep: one remote
// source into the hub). Each client writes one attempt (connect, stream
// until something ends it, return why); the loop decides, in one place for
// all six, what happens after it: stop, wait for the stream, or wait
// (internal/backoff) and try again, and it tells the story in the log.
package reconnect

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/wishbridge/bridge/internal/backoff"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/media"
)

// ErrPanicked is the failure of an attempt that panicked: the panic was
// recovered (logged with its stack, counted under the loop's Name), the
// attempt's deferred closes ran, and the next attempt starts afresh.
var ErrPanicked = errors.New("internal error: a panic ended the attempt (logged with its stack)")

// Loop is one outbound client's run loop. What an attempt returns and
// what the loop does with it, for every client:
//
//	attempt returns                    what the loop does
//	(any), after ctx ended             Info "<Name> stopped"; Run returns at once
//	panics                             recovered under Name; a failure (ErrPanicked)
//	media.ErrStreamEnded (push)        Info "<Name> paused: the stream ended"; waits
//	                                   the shortest delay (the backoff does not grow),
//	                                   then waits for the stream to be published again
//	media.ErrIncompatibleRepublish     Warn "<Name> failed"; retried after the shortest
//	  (push)                           delay (the backoff does not grow): the stream is
//	                                   back with other tracks, the target did nothing
//	any other error (a refusal, a      Warn "<Name> failed"; waits the backoff's delay,
//	lost connection; for a pull also   which then doubles up to its maximum
//	the source ending its stream)
//	an error with a Retry-After        waits what the server asked (RetryAfter) instead
//	  (WHIP/WHEP 503, 429)             of the delay; the delay still grows for a failure
//	after streaming for Reset or more  the delay first goes back to the shortest
//
// So a push whose source ends waits for its stream instead of hammering
// the target, and a pull whose source ends (a remote stream is its
// source) is retried with backoff like any failure. Pushes and pulls
// differ only by Stream: set, the loop waits for the stream before each
// attempt and takes a stream end as the source's doing; nil (a pull), every
// end is the remote side's.
//
// Every line the loop logs carries attempt (1 for the first attempt of
// Run) and, when it waits, retry_in; the client's Log carries the stream
// and the remote side redacted (internal/rawurl), under stable keys:
// "stream", and "target" for a push, "source" for a pull.
type Loop struct {
	// Name starts the log messages and names the panic component, e.g.
	// "rtmp push".
	Name string
	// Log receives the loop's events; it carries the client's stream and
	// redacted target or source.
	Log *slog.Logger
	// Invalid, if set, is a configuration error: Run logs it once and
	// waits for ctx without attempting anything.
	Invalid error
	// Backoff makes the reconnect policy. It is called once, when the
	// first attempt has ended (the client's tunables are read then: tests
	// may shorten them until the stream is published).
	Backoff func() *backoff.Backoff
	// Stream, for a push, waits until the stream to push is published
	// with its tracks known (see WaitStream); an error (ctx ended) ends
	// the loop. nil for a pull.
	Stream func(context.Context) (*media.Stream, error)
	// Attempt connects and streams until something ends it, and returns
	// for how long media flowed and why it ended (never nil). For a push,
	// st is the stream Stream returned; for a pull, nil. log is the
	// loop's Log with the attempt number.
	Attempt func(ctx context.Context, st *media.Stream, log *slog.Logger) (time.Duration, error)
	// RetryAfter, if set, returns the wait a refusal in err asked for (0
	// if none), e.g. rtc.RetryAfter.
	RetryAfter func(error) time.Duration
	// Retrying, if set, is called before each wait between two attempts
	// (tests follow the policy with it).
	Retrying func(wait time.Duration, err error)
}

// outcome is what the loop makes of an attempt's end.
type outcome int

const (
	failed   outcome = iota // the remote side's doing: the backoff grows
	ended                   // the pushed stream ended: pause, then wait for it
	replaced                // the pushed stream came back with other tracks: retry soon
)

// classify sorts an attempt's error; pull says whether the loop is a
// pull's (no Stream), for which every end is the remote side's.
func classify(err error, pull bool) outcome {
	switch {
	case pull:
		return failed
	case errors.Is(err, media.ErrStreamEnded):
		return ended
	case errors.Is(err, media.ErrIncompatibleRepublish):
		return replaced
	}
	return failed
}

// Run attempts until ctx ends, following the policy of Loop.
func (l Loop) Run(ctx context.Context) {
	if l.Invalid != nil {
		l.Log.Error(l.Name+" cannot start", "err", l.Invalid)
		<-ctx.Done()
		return
	}
	var bo *backoff.Backoff
	for attempt := 1; ; attempt++ {
		var st *media.Stream
		if l.Stream != nil {
			var err error
			if st, err = l.Stream(ctx); err != nil {
				return
			}
		}
		log := l.Log.With("attempt", attempt)
		var streamed time.Duration
		var err error
		if panics.Do(l.Name, log, func() { streamed, err = l.Attempt(ctx, st, log) }) {
			err = ErrPanicked
		}
		ran := streamed.Round(time.Millisecond).String()
		if ctx.Err() != nil {
			log.Info(l.Name+" stopped", "streamed", ran)
			return
		}
		if err == nil {
			err = errors.New("the attempt ended without saying why")
		}
		if bo == nil {
			bo = l.Backoff()
		}
		var retryAfter time.Duration
		if l.RetryAfter != nil {
			retryAfter = l.RetryAfter(err)
		}
		var wait time.Duration
		switch classify(err, l.Stream == nil) {
		case ended:
			wait = bo.Pause(streamed, retryAfter)
			log.Info(l.Name+" paused: the stream ended", "reason", err.Error(), "streamed", ran, "retry_in", wait.String())
		case replaced:
			wait = bo.Pause(streamed, retryAfter)
			log.Warn(l.Name+" failed", "reason", err.Error(), "streamed", ran, "retry_in", wait.String())
		default:
			wait = bo.Next(streamed, retryAfter)
			log.Warn(l.Name+" failed", "reason", err.Error(), "streamed", ran, "retry_in", wait.String())
		}
		if l.Retrying != nil {
			l.Retrying(wait, err)
		}
		if !backoff.Sleep(ctx, wait) {
			log.Info(l.Name+" stopped", "streamed", ran)
			return
		}
	}
}

// WaitStream waits until reg has a stream at path with its tracks known
// that has not ended, looking every poll, and returns it; logged once,
// at Debug, when the path has no stream. It is a push's Loop.Stream.
func WaitStream(ctx context.Context, reg *media.Registry, path string, poll time.Duration, log *slog.Logger, name string) (*media.Stream, error) {
	logged := false
	for {
		st, err := reg.WaitReady(ctx, path, poll, func() {
			if !logged {
				log.Debug(name + " waiting for the stream")
				logged = true
			}
		})
		if err != nil {
			return nil, err
		}
		select {
		case <-st.Done():
			// Ready and ended (just now): it is leaving the registry.
			if !backoff.Sleep(ctx, poll) {
				return nil, ctx.Err()
			}
		default:
			return st, nil
		}
	}
}
