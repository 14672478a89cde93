// Package pushloop is the Run loop that the egresses pushing one hub
// stream to one target (egress/rtmp and egress/srt) share: wait for the
// stream, push it, and after a failure wait (internal/backoff) and start
// again.
package pushloop

import (
	"context"
	"log/slog"
	"time"

	"github.com/wishbridge/bridge/internal/backoff"
	"github.com/wishbridge/bridge/media"
)

// Loop is one pusher's loop.
type Loop struct {
	// Name starts the log messages, e.g. "rtmp push".
	Name string
	// Log receives the loop's events.
	Log *slog.Logger
	// Backoff makes the reconnect policy. It is called once the stream is
	// first there (the pusher's tunables are read then).
	Backoff func() *backoff.Backoff
	// WaitStream waits until the stream is published with its tracks
	// known; an error (ctx ended) ends the loop.
	WaitStream func(context.Context) (*media.Stream, error)
	// PushOnce pushes st until something fails and returns for how long
	// media flowed.
	PushOnce func(context.Context, *media.Stream) (time.Duration, error)
}

// Run pushes until ctx ends. After a failure it logs why and waits for
// the backoff's next delay; when the stream ended (media.IsStreamEnd),
// an end that was the source's and not the target's, the backoff starts
// again from the shortest wait.
func (l Loop) Run(ctx context.Context) {
	var bo *backoff.Backoff
	for {
		st, err := l.WaitStream(ctx)
		if err != nil {
			return
		}
		if bo == nil {
			bo = l.Backoff()
		}
		streamed, err := l.PushOnce(ctx, st)
		if ctx.Err() != nil {
			l.Log.Info(l.Name+" stopped", "streamed", streamed.Round(time.Millisecond).String())
			return
		}
		if media.IsStreamEnd(err) {
			// An end that was the source's, not the target's: start again
			// from the shortest wait.
			bo.Restart()
		}
		delay := bo.Next(streamed, 0)
		if media.IsStreamEnd(err) {
			l.Log.Info(l.Name+" paused: the stream ended", "streamed", streamed.Round(time.Millisecond).String(), "reason", err.Error(), "retry_in", delay.String())
		} else {
			l.Log.Warn(l.Name+" failed", "reason", err.Error(), "streamed", streamed.Round(time.Millisecond).String(), "retry_in", delay.String())
		}
		if !backoff.Sleep(ctx, delay) {
			return
		}
	}
}
