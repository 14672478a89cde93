package reconnect_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/backoff"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/reconnect"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// Backoff of the policy tests: short, so the waits pass quickly; the test
// reads the waits the loop chose, not the time they took.
const (
	minWait    = time.Millisecond
	maxWait    = 4 * time.Millisecond
	resetAfter = time.Hour
)

// result is one attempt's return, or a panic. An attempt that ran
// (started: media flowed) did so for ran on the test's clock.
type result struct {
	started bool
	ran     time.Duration
	err     error
	panic   bool
}

var (
	errRefused  = errors.New("refused by the server")
	errEnded    = fmt.Errorf("stream %q: %w", "live/test", media.ErrStreamEnded)
	errReplaced = fmt.Errorf("%w: republished with other tracks", media.ErrIncompatibleRepublish)
	// errBusy stands for a WHIP/WHEP 503 with Retry-After: 3 ms.
	errBusy = errors.New("503 Service Unavailable (retry after 3ms)")
)

func retryAfter(err error) time.Duration {
	if errors.Is(err, errBusy) {
		return 3 * time.Millisecond
	}
	return 0
}

// TestPolicy is the loop's policy table: for a run of attempt results, the
// waits the loop chose between them and the log lines it wrote. Time is
// the test's: each attempt moves it on by step, and one that started by
// what it ran.
func TestPolicy(t *testing.T) {
	const refusal = `msg="rtmp pull failed" stream=live/test source=rtmp://host/app/<redacted> attempt=1 reason="refused by the server" retry_in=1ms`
	for _, tc := range []struct {
		name    string
		push    bool
		step    time.Duration
		results []result
		waits   []time.Duration // one per result, when given
		logs    []string        // each in some log line
		warns   int             // WARN lines
		stop    string          // the last attempt starts, then is stopped with this cause
	}{
		{name: "failures double up to the maximum; the first is a WARN, the others DEBUG",
			results: []result{{err: errRefused}, {err: errRefused}, {err: errRefused}, {err: errRefused}},
			waits:   []time.Duration{minWait, 2 * minWait, 4 * minWait, maxWait}, warns: 1,
			logs: []string{"level=WARN " + refusal,
				`level=DEBUG msg="rtmp pull failed" stream=live/test source=rtmp://host/app/<redacted> attempt=3 reason="refused by the server" retry_in=4ms`,
				`level=INFO msg="rtmp pull stopped" stream=live/test source=rtmp://host/app/<redacted> attempt=5 reason=stopped failures=4 down_for=0s`}},
		{name: "push: a stream end waits the shortest delay and does not grow the backoff", push: true,
			results: []result{{err: errRefused}, {err: errRefused}, {started: true, ran: time.Second, err: errEnded}, {err: errEnded}, {err: errRefused}},
			waits:   []time.Duration{minWait, 2 * minWait, minWait, minWait, 4 * minWait}, warns: 2,
			logs: []string{`level=INFO msg="rtmp pull started" stream=live/test source=rtmp://host/app/<redacted> attempt=3 after_failures=2 down_for=0s`,
				`level=INFO msg="rtmp pull ended" stream=live/test source=rtmp://host/app/<redacted> attempt=3 duration=1s bytes=1000 packets=10 reason="stream \"live/test\": stream ended" retry_in=1ms frames=10`,
				`level=DEBUG msg="rtmp pull paused" stream=live/test source=rtmp://host/app/<redacted> attempt=4`}},
		{name: "push: a republish with other tracks is retried soon", push: true,
			results: []result{{err: errRefused}, {started: true, err: errReplaced}, {err: errRefused}},
			waits:   []time.Duration{minWait, minWait, 2 * minWait}, warns: 2,
			logs: []string{`msg="rtmp pull ended"`, `attempt=2 duration=0s bytes=1000 packets=10 reason="republished with incompatible codecs: republished with other tracks"`}},
		{name: "pull: a source that ends is retried with backoff",
			results: []result{{err: errEnded}, {err: errEnded}, {err: errEnded}},
			waits:   []time.Duration{minWait, 2 * minWait, 4 * minWait}, warns: 1},
		{name: "Retry-After is waited instead of the delay, which still grows",
			results: []result{{err: errBusy}, {err: errRefused}, {err: errBusy}},
			waits:   []time.Duration{3 * minWait, 2 * minWait, 3 * minWait}, warns: 1},
		{name: "a panic is a failure and the next attempt runs",
			results: []result{{panic: true}, {err: errRefused}},
			waits:   []time.Duration{minWait, 2 * minWait}, warns: 1,
			logs: []string{"a panic ended the attempt"}},
		{name: "a long run resets the backoff",
			results: []result{{err: errRefused}, {err: errRefused}, {err: errRefused}, {started: true, ran: resetAfter, err: errRefused}},
			waits:   []time.Duration{minWait, 2 * minWait, 4 * minWait, minWait}, warns: 1},
		{name: "push: a long run before a stream end resets the backoff", push: true,
			results: []result{{err: errRefused}, {err: errRefused}, {started: true, ran: resetAfter, err: errEnded}, {err: errRefused}},
			waits:   []time.Duration{minWait, 2 * minWait, minWait, minWait}, warns: 2},
		{name: "a session stopped ends with the stop's cause", results: []result{{err: errRefused}}, warns: 1,
			stop: "forward stopped: its route changed or is gone",
			logs: []string{`msg="rtmp pull ended" stream=live/test source=rtmp://host/app/<redacted> attempt=2 duration=0s bytes=1000 packets=10 reason="forward stopped: its route changed or is gone" frames=10`}},
		{name: "an hour down: one WARN, a summary every DownSummary, and the start line after it says so",
			step: 30 * time.Second, results: append(slices.Repeat([]result{{err: errRefused}}, 121), result{started: true, err: errRefused}), warns: 1,
			logs: []string{
				`level=INFO msg="rtmp pull still failing" stream=live/test source=rtmp://host/app/<redacted> attempt=21 reason="refused by the server" retry_in=4ms failures=21 down_for=10m0s`,
				`level=INFO msg="rtmp pull still failing" stream=live/test source=rtmp://host/app/<redacted> attempt=121 reason="refused by the server" retry_in=4ms failures=121 down_for=1h0m0s`,
				`level=INFO msg="rtmp pull started" stream=live/test source=rtmp://host/app/<redacted> attempt=122 after_failures=121 down_for=1h0m30s`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, logs := testkit.NamedLog(t, "reconnect")
			log = log.With("stream", "live/test", "source", "rtmp://host/app/<redacted>")
			reg := media.NewRegistry(log)
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			panicsBefore := panics.CountOf("rtmp pull")
			var waits []time.Duration
			clock := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
			next := 0
			l := reconnect.Loop{
				Name:       "rtmp pull",
				Log:        log,
				Backoff:    func() *backoff.Backoff { return backoff.New(minWait, maxWait, resetAfter) },
				RetryAfter: retryAfter,
				Retrying:   func(wait time.Duration, _ error) { waits = append(waits, wait) },
				Attempt: func(ctx context.Context, st *media.Stream, a *reconnect.Attempt) error {
					clock = clock.Add(tc.step)
					if tc.push != (st != nil) {
						t.Errorf("attempt %d: stream %v for a push=%v loop", next+1, st, tc.push)
					}
					if next == len(tc.results) {
						if tc.stop != "" {
							a.Started()
							a.Moved(1000, 10, "frames", 10)
							cancel(errors.New(tc.stop))
						} else {
							cancel(nil)
						}
						return ctx.Err()
					}
					r := tc.results[next]
					next++
					if r.panic {
						panic("a bug in the attempt")
					}
					if r.started {
						a.Started()
						clock = clock.Add(r.ran)
						a.Moved(1000, 10, "frames", 10)
					}
					return r.err
				},
			}
			l.SetNow(func() time.Time { return clock })
			if tc.push {
				publish(t, reg)
				l.Stream = func(ctx context.Context) (*media.Stream, error) {
					return reconnect.WaitStream(ctx, reg, "live/test", time.Millisecond, log, "rtmp push")
				}
			}
			l.Run(ctx)
			if tc.waits != nil && !slices.Equal(waits, tc.waits) {
				t.Errorf("waits %v, expected %v", waits, tc.waits)
			}
			for _, want := range tc.logs {
				if logs.Count(want) == 0 {
					t.Errorf("no log line with %q:\n%s", want, logs.String())
				}
			}
			if n := logs.Count("level=WARN"); n != tc.warns {
				t.Errorf("%d WARN lines, expected %d:\n%s", n, tc.warns, logs.String())
			}
			if n := logs.Count("level=INFO", "still failing"); tc.step == 0 && n != 0 {
				t.Errorf("%d summaries of a short outage, expected none", n)
			} else if tc.step != 0 && n != 6 {
				t.Errorf("%d summaries of an hour's outage, expected 6", n)
			}
			// Every session: one start line and one end line.
			if s, e := logs.Count("level=INFO", `msg="rtmp pull started"`), logs.Count("level=INFO", `msg="rtmp pull ended"`); s != e {
				t.Errorf("%d start lines, %d end lines:\n%s", s, e, logs.String())
			}
			if n := logs.Count(`msg="rtmp pull stopped"`, fmt.Sprintf("attempt=%d", len(tc.results)+1)); tc.stop == "" && n != 1 {
				t.Errorf("%d stop lines for the attempt the cancel ended, expected 1:\n%s", n, logs.String())
			}
			wantPanics := uint64(0)
			if slices.ContainsFunc(tc.results, func(r result) bool { return r.panic }) {
				wantPanics = 1
			}
			if got := panics.CountOf("rtmp pull") - panicsBefore; got != wantPanics {
				t.Errorf("%d panics counted, expected %d", got, wantPanics)
			}
		})
	}
}

// publish publishes live/test with one track for the rest of the test.
func publish(t *testing.T, reg *media.Registry) *media.Publication {
	t.Helper()
	pub, err := reg.Publish("live/test", "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.SetTracks(&media.Track{Codec: media.Opus{Channels: 2}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	return pub
}

// TestPushWaitsForTheStream: after its stream ended a push makes no
// attempt (nothing reaches the target) until the stream is published
// again; a cancel while it waits ends Run without an attempt.
func TestPushWaitsForTheStream(t *testing.T) {
	log, _ := testkit.NamedLog(t, "reconnect")
	reg := media.NewRegistry(log)
	pub := publish(t, reg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	attempts := make(chan *media.Stream)
	ended := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		reconnect.Loop{
			Name:    "rtmp push",
			Log:     log,
			Backoff: func() *backoff.Backoff { return backoff.New(minWait, maxWait, resetAfter) },
			Stream: func(ctx context.Context) (*media.Stream, error) {
				return reconnect.WaitStream(ctx, reg, "live/test", time.Millisecond, log, "rtmp push")
			},
			Attempt: func(ctx context.Context, st *media.Stream, _ *reconnect.Attempt) error {
				select {
				case attempts <- st:
				case <-ctx.Done():
					return ctx.Err()
				}
				<-ended
				return fmt.Errorf("stream %q: %w", st.Path(), media.ErrStreamEnded)
			},
		}.Run(ctx)
	}()
	first := <-attempts
	pub.Close() // no grace: the stream ends
	<-first.Done()
	close(ended)
	select {
	case st := <-attempts:
		t.Fatalf("an attempt with no stream published (stream ended: %v)", isDone(st))
	case <-time.After(50 * maxWait):
	}
	publish(t, reg)
	second := <-attempts
	if second == first || isDone(second) {
		t.Errorf("the second attempt did not get the new stream")
	}
	cancel()
	<-done
}

func isDone(st *media.Stream) bool {
	select {
	case <-st.Done():
		return true
	default:
		return false
	}
}
