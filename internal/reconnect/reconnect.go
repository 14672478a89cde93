// Package reconnect is the run loop of the bridge's six outbound clients:
// the pushes (egress/rtmp, egress/srt, egress/whip: one hub stream to one
// target) and the pulls (ingest/rtmp, ingest/srt, ingest/whep: one remote
// source into the hub). Each client writes one attempt (connect, stream
// until something ends it, return why); the loop decides, in one place for
// all six, what happens after it: stop, wait for the stream, or wait
// (internal/backoff) and try again, and it tells the story in the log.
//
// # The story in the log
//
// An attempt that gets media flowing is a session, and it logs what every
// session of the bridge logs at INFO (internal/sessionlog): one line when
// it starts ("<Name> started", which the client asks for with
// Attempt.Started) and one when it ends ("<Name> ended": duration, bytes,
// packets, reason, and retry_in when the loop tries again), whatever ended
// it: the remote side, the stream, or the forward or pull being stopped
// (the reason is then the context's cause).
//
// An attempt that fails before media flows is no session. A remote that is
// down or refuses is worth one WARN when it starts failing ("<Name>
// failed", with the reason and retry_in); the attempts after it, every
// backoff wait for as long as it stays down, log at DEBUG, with one INFO
// summary ("<Name> still failing": failures, down_for, the last reason)
// every DownSummary. The next start line says it is back (after_failures,
// down_for), and one stopped while down says so ("<Name> stopped"). A
// target down for an hour logs one WARN and six summaries, not the 120
// attempts the 30 s backoff makes.
//
// What an attempt finds on its way that the next will find again (a track
// the target cannot take, a remote that answers without a Location) the
// client logs on Attempt.Notes: said once at its level, then at DEBUG on
// every attempt that finds it again, until the pushed stream is published
// anew (and may have other tracks).
package reconnect

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/wishbridge/bridge/internal/backoff"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/sessionlog"
	"github.com/wishbridge/bridge/media"
)

// DownSummary is how often a client whose attempts keep failing logs an
// INFO summary: an operator who looks at the log within ten minutes of an
// outage's start sees it there, and an hour's outage costs seven lines.
const DownSummary = 10 * time.Minute

// ErrPanicked is the failure of an attempt that panicked: the panic was
// recovered (logged with its stack, counted under the loop's Name), the
// attempt's deferred closes ran, and the next attempt starts afresh.
var ErrPanicked = errors.New("internal error: a panic ended the attempt (logged with its stack)")

// Loop is one outbound client's run loop. What an attempt returns and
// what the loop does with it, for every client:
//
//	attempt returns                    what the loop does
//	(any), after ctx ended             Run returns at once
//	panics                             recovered under Name; a failure (ErrPanicked)
//	media.ErrStreamEnded (push)        waits the shortest delay (the backoff does not
//	                                   grow), then waits for the stream to be
//	                                   published again
//	media.ErrIncompatibleRepublish     retried after the shortest delay (the backoff
//	  (push)                           does not grow): the stream is back with other
//	                                   tracks, the target did nothing
//	any other error (a refusal, a      waits the backoff's delay, which then doubles
//	lost connection; for a pull also   up to its maximum
//	the source ending its stream)
//	an error with a Retry-After        waits what the server asked (RetryAfter) instead
//	  (WHIP/WHEP 503, 429)             of the delay; the delay still grows for a failure
//	after streaming for Reset or more  the delay first goes back to the shortest
//
// What it logs is the package doc's story.
//
// So a push whose source ends waits for its stream instead of hammering
// the target, and a pull whose source ends (a remote stream is its
// source) is retried with backoff like any failure. Pushes and pulls
// differ only by Stream: set, the loop waits for the stream before each
// attempt and takes a stream end as the source's doing; nil (a pull), every
// end is the remote side's.
//
// Every line the loop logs carries attempt (1 for the first attempt of
// Run); the client's Log carries the session's identity under stable
// keys: "session" and "route" (given by the node), "stream", and the remote
// side redacted (internal/rawurl): "target" for a push, "source" for a
// pull.
type Loop struct {
	// Name starts the log messages and names the panic component, e.g.
	// "rtmp push".
	Name string
	// Log receives the loop's events; it carries the client's session
	// identity (see above).
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
	// why it ended (never nil). For a push, st is the stream Stream
	// returned; for a pull, nil. It calls a.Started when media begins to
	// flow and a.Moved with what it moved before it returns.
	Attempt func(ctx context.Context, st *media.Stream, a *Attempt) error
	// RetryAfter, if set, returns the wait a refusal in err asked for (0
	// if none), e.g. rtc.RetryAfter.
	RetryAfter func(error) time.Duration
	// Retrying, if set, is called before each wait between two attempts
	// (tests follow the policy with it).
	Retrying func(wait time.Duration, err error)

	now func() time.Time // nil: time.Now (tests move time on their own)
}

// Attempt is one attempt of a Loop, as the client's Attempt function
// sees it. The zero value works (a test driving a client's attempt by
// hand): it logs to slog.Default on the real clock.
type Attempt struct {
	// N counts the attempts of Run, from 1.
	N int
	// Log is the Loop's Log with the attempt number; the client logs the
	// middle of the attempt's story on it, at DEBUG.
	Log *slog.Logger

	name  string
	now   func() time.Time
	down  *outage // the outage the attempt may end; nil if none
	notes *notes  // the loop's; nil: Notes is Log

	mu      sync.Mutex
	over    bool      // guarded by mu: the loop has read the attempt
	started time.Time // guarded by mu: when media began to flow; zero before
	bytes   uint64    // guarded by mu; the rest: see Moved
	packets uint64
	extra   []any
}

// Notes is the logger for what the attempt finds that every attempt
// finds again while nothing changes: Log, except that a line at INFO or
// WARN (same message and attributes) that an attempt of the loop logged
// before, since the pushed stream was published (for a pull, since Run
// started), is logged at DEBUG. ERROR lines always go out as they are.
// So a forward that reconnects all day says once that its target refuses
// a track.
func (a *Attempt) Notes() *slog.Logger {
	if a.notes == nil {
		return a.log()
	}
	return slog.New(noteHandler{inner: a.log().Handler(), n: a.notes})
}

// Started logs the session's start line, "<Name> started" at INFO with
// args (the client's own facts: tracks, the remote's stream id) and, if
// attempts failed before this one, how many and for how long; the
// session's duration and the backoff's "streamed" count from it. Only the
// first call counts; one after the attempt returned is ignored. Safe from
// any goroutine (a connection callback).
func (a *Attempt) Started(args ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.over || !a.started.IsZero() {
		return
	}
	a.started = a.clock()
	if a.down != nil {
		args = append(args, "after_failures", a.down.failures, "down_for", a.down.downFor(a.started))
	}
	a.log().Info(a.name+" started", args...)
}

func (a *Attempt) clock() time.Time {
	if a.now == nil {
		return time.Now()
	}
	return a.now()
}

func (a *Attempt) log() *slog.Logger {
	if a.Log == nil {
		return slog.Default()
	}
	return a.Log
}

// Moved records what the session moved, for its end line: media payload
// bytes, and packets (frames where the protocol has none: each client says
// which), then key-value pairs of the client's own (frame counts by kind,
// drops). A later call replaces an earlier one. Safe from any goroutine.
func (a *Attempt) Moved(bytes, packets uint64, extra ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.bytes, a.packets, a.extra = bytes, packets, extra
}

// finish closes the attempt to late calls and returns when its session
// started (zero if it did not).
func (a *Attempt) finish() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.over = true
	return a.started
}

// end logs the session's end line.
func (a *Attempt) end(started time.Time, reason string, more ...any) {
	extra := append(append([]any(nil), more...), a.extra...)
	sessionlog.EndAt(a.log(), a.name+" ended", started, a.clock(), a.bytes, a.packets, reason, extra...)
}

// outage is a run of attempts that failed without a session.
type outage struct {
	since    time.Time // the first failure
	failures int
	summary  time.Time // the last INFO line about it
}

// stopped ends the story of an outage the loop was stopped in, if any
// (o may be nil).
func (o *outage) stopped(log *slog.Logger, name, reason string, t time.Time) {
	if o != nil {
		log.Info(name+" stopped", "reason", reason, "failures", o.failures, "down_for", o.downFor(t))
	}
}

// downFor is how long the outage has lasted at t, for the log.
func (o *outage) downFor(t time.Time) string { return t.Sub(o.since).Round(time.Second).String() }

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

// stopReason is why ctx ended, for the last line: its cause, or "stopped"
// when it was cancelled without one.
func stopReason(ctx context.Context) string {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c.Error()
	}
	return "stopped"
}

// Run attempts until ctx ends, following the policy of Loop.
func (l Loop) Run(ctx context.Context) {
	if l.Invalid != nil {
		l.Log.Error(l.Name+" cannot start", "err", l.Invalid)
		<-ctx.Done()
		return
	}
	now := l.now
	if now == nil {
		now = time.Now
	}
	var bo *backoff.Backoff
	var down *outage
	var known *notes
	var last *media.Stream
	for attempt := 1; ; attempt++ {
		var st *media.Stream
		if l.Stream != nil {
			var err error
			if st, err = l.Stream(ctx); err != nil {
				down.stopped(l.Log, l.Name, stopReason(ctx), now())
				return
			}
		}
		if known == nil || st != last {
			known, last = &notes{}, st // published anew: its tracks may differ
		}
		a := &Attempt{N: attempt, Log: l.Log.With("attempt", attempt), name: l.Name, now: now, down: down, notes: known}
		var err error
		if panics.Do(l.Name, a.Log, func() { err = l.Attempt(ctx, st, a) }) {
			err = ErrPanicked
		}
		started := a.finish()
		var streamed time.Duration
		if !started.IsZero() {
			streamed = now().Sub(started)
			down = nil
		}
		if ctx.Err() != nil {
			switch {
			case !started.IsZero():
				a.end(started, stopReason(ctx))
			case down != nil:
				down.stopped(a.Log, l.Name, stopReason(ctx), now())
			default:
				a.Log.Debug(l.Name+" stopped", "reason", stopReason(ctx))
			}
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
		kind := classify(err, l.Stream == nil)
		var wait time.Duration
		if kind == failed {
			wait = bo.Next(streamed, retryAfter)
		} else {
			wait = bo.Pause(streamed, retryAfter)
		}
		line := []any{"reason", err.Error(), "retry_in", wait.String()}
		switch t := now(); {
		case !started.IsZero():
			a.end(started, err.Error(), "retry_in", wait.String())
		case kind != failed:
			// The pushed stream ended or changed before the target
			// took it: nothing the operator needs to hear of.
			a.Log.Debug(l.Name+" paused", line...)
		case down == nil:
			down = &outage{since: t, failures: 1, summary: t}
			a.Log.Warn(l.Name+" failed", line...)
		default:
			down.failures++
			if t.Sub(down.summary) < DownSummary {
				a.Log.Debug(l.Name+" failed", line...)
				break
			}
			down.summary = t
			a.Log.Info(l.Name+" still failing", append(line, "failures", down.failures, "down_for", down.downFor(t))...)
		}
		if l.Retrying != nil {
			l.Retrying(wait, err)
		}
		if !backoff.Sleep(ctx, wait) {
			down.stopped(a.Log, l.Name, stopReason(ctx), now())
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
