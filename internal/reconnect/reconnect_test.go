package reconnect_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// result is one attempt's return, or a panic.
type result struct {
	ran   time.Duration
	err   error
	panic bool
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
// waits the loop chose between them and the log lines it wrote.
func TestPolicy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		push    bool
		results []result
		waits   []time.Duration // one per result
		logs    []string        // each in some log line
	}{
		{name: "failures double up to the maximum", results: []result{{err: errRefused}, {err: errRefused}, {err: errRefused}, {err: errRefused}},
			waits: []time.Duration{minWait, 2 * minWait, 4 * minWait, maxWait},
			logs:  []string{`msg="rtmp pull failed" stream=live/test source=rtmp://host/app/<redacted> attempt=3 reason="refused by the server" streamed=0s retry_in=4ms`}},
		{name: "push: a stream end waits the shortest delay and does not grow the backoff", push: true,
			results: []result{{err: errRefused}, {err: errRefused}, {ran: time.Second, err: errEnded}, {err: errEnded}, {err: errRefused}},
			waits:   []time.Duration{minWait, 2 * minWait, minWait, minWait, 4 * minWait},
			logs:    []string{`msg="rtmp pull paused: the stream ended" stream=live/test source=rtmp://host/app/<redacted> attempt=3`}},
		{name: "push: a republish with other tracks is a failure retried soon", push: true,
			results: []result{{err: errRefused}, {err: errReplaced}, {err: errRefused}},
			waits:   []time.Duration{minWait, minWait, 2 * minWait},
			logs:    []string{`msg="rtmp pull failed"`, `attempt=2 reason="republished with incompatible codecs: republished with other tracks"`}},
		{name: "pull: a source that ends is retried with backoff",
			results: []result{{err: errEnded}, {err: errEnded}, {err: errEnded}},
			waits:   []time.Duration{minWait, 2 * minWait, 4 * minWait}},
		{name: "Retry-After is waited instead of the delay, which still grows",
			results: []result{{err: errBusy}, {err: errRefused}, {err: errBusy}},
			waits:   []time.Duration{3 * minWait, 2 * minWait, 3 * minWait}},
		{name: "a panic is a failure and the next attempt runs",
			results: []result{{panic: true}, {err: errRefused}},
			waits:   []time.Duration{minWait, 2 * minWait},
			logs:    []string{"a panic ended the attempt"}},
		{name: "a long run resets the backoff",
			results: []result{{err: errRefused}, {err: errRefused}, {err: errRefused}, {ran: resetAfter, err: errRefused}},
			waits:   []time.Duration{minWait, 2 * minWait, 4 * minWait, minWait}},
		{name: "push: a long run before a stream end resets the backoff", push: true,
			results: []result{{err: errRefused}, {err: errRefused}, {ran: resetAfter, err: errEnded}, {err: errRefused}},
			waits:   []time.Duration{minWait, 2 * minWait, minWait, minWait}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, logs := testkit.NamedLog(t, "reconnect")
			log = log.With("stream", "live/test", "source", "rtmp://host/app/<redacted>")
			reg := media.NewRegistry(log)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			panicsBefore := panics.CountOf("rtmp pull")
			var waits []time.Duration
			next := 0
			l := reconnect.Loop{
				Name:       "rtmp pull",
				Log:        log,
				Backoff:    func() *backoff.Backoff { return backoff.New(minWait, maxWait, resetAfter) },
				RetryAfter: retryAfter,
				Retrying:   func(wait time.Duration, _ error) { waits = append(waits, wait) },
				Attempt: func(ctx context.Context, st *media.Stream, _ *slog.Logger) (time.Duration, error) {
					if tc.push != (st != nil) {
						t.Errorf("attempt %d: stream %v for a push=%v loop", next+1, st, tc.push)
					}
					if next == len(tc.results) {
						cancel()
						return 0, ctx.Err()
					}
					r := tc.results[next]
					next++
					if r.panic {
						panic("a bug in the attempt")
					}
					return r.ran, r.err
				},
			}
			if tc.push {
				publish(t, reg)
				l.Stream = func(ctx context.Context) (*media.Stream, error) {
					return reconnect.WaitStream(ctx, reg, "live/test", time.Millisecond, log, "rtmp push")
				}
			}
			l.Run(ctx)
			if !slices.Equal(waits, tc.waits) {
				t.Errorf("waits %v, expected %v", waits, tc.waits)
			}
			for _, want := range tc.logs {
				if logs.Count(want) == 0 {
					t.Errorf("no log line with %q:\n%s", want, logs.String())
				}
			}
			if n := logs.Count(`msg="rtmp pull stopped"`, fmt.Sprintf("attempt=%d", len(tc.results)+1)); n != 1 {
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
			Attempt: func(ctx context.Context, st *media.Stream, _ *slog.Logger) (time.Duration, error) {
				select {
				case attempts <- st:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
				<-ended
				return 0, fmt.Errorf("stream %q: %w", st.Path(), media.ErrStreamEnded)
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
