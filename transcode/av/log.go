package av

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/ratelog"
)

// ffmpegLog is where FFmpeg's log goes once SetLogger was called (nil
// before: FFmpeg's own callback, stderr). FFmpeg has one log callback per
// process (av_log_set_callback), so this is process-wide too: the process
// owner (cmd/bridge main) sets it once.
type ffmpegLog struct {
	log   *slog.Logger
	limit ratelog.Limiter
}

var logTo atomic.Pointer[ffmpegLog]

// benignFFmpeg are parts of FFmpeg warnings that describe normal
// operation, logged at debug.
var benignFFmpeg = []string{
	// libopus at avcodec_free_context ("1 frames left in the queue on
	// closing"): the input short of a whole Opus frame when a transcoder
	// ends (its last reader left or the publisher stopped) is dropped.
	"frames left in the queue on closing",
}

// slogLevel maps an FFmpeg level to slog's: errors stay errors, warnings
// stay warnings unless benign, and FFmpeg's info (encoder statistics at
// close, stream parameters) and chattier levels are debug: the bridge logs
// what matters about a stream itself.
func slogLevel(l LogLevel, msg string) slog.Level {
	switch {
	case l <= LogError:
		return slog.LevelError
	case l <= LogWarning:
		for _, b := range benignFFmpeg {
			if strings.Contains(msg, b) {
				return slog.LevelDebug
			}
		}
		return slog.LevelWarn
	default:
		return slog.LevelDebug
	}
}

// logLine logs one line FFmpeg formatted ("[aac @ 0x55d0c0a3e2c0] msg\n").
// Repeats of one kind (the message up to its first digit or colon, which
// is where per-packet values start) pass once per ratelog interval, with
// the count held back: a corrupt stream makes the decoder log per packet.
func logLine(l LogLevel, line string) {
	to := logTo.Load()
	if to == nil {
		return
	}
	defer panics.Recover("ffmpeg log", to.log, nil)
	line = strings.TrimRight(line, "\n")
	if line == "" {
		return
	}
	ctx, msg := splitContext(line)
	lvl := slogLevel(l, msg)
	if !to.log.Enabled(context.Background(), lvl) {
		return
	}
	kind := msg
	if i := strings.IndexAny(kind, "0123456789:("); i >= 0 {
		kind = kind[:i]
	}
	ok, n := to.limit.Allow(ctx + " " + kind)
	if !ok {
		return
	}
	args := []any{"component", "ffmpeg"}
	if ctx != "" {
		args = append(args, "context", ctx)
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	to.log.Log(context.Background(), lvl, msg, args...)
}

// splitContext splits FFmpeg's "[libopus @ 0x7f30f001b100] " prefix off a
// line and returns the context's name (libopus) and the message. The
// address differs per codec instance, so it is dropped: it would defeat
// the rate limit and means nothing to an operator.
func splitContext(line string) (ctx, msg string) {
	for strings.HasPrefix(line, "[") {
		end := strings.IndexByte(line, ']')
		if end < 0 {
			break
		}
		name := line[1:end]
		if at := strings.Index(name, " @ "); at >= 0 {
			name = name[:at]
		}
		if ctx == "" {
			ctx = name
		} else {
			ctx += "/" + name
		}
		line = strings.TrimLeft(line[end+1:], " ")
	}
	return ctx, line
}
