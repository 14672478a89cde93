package reconnect

import (
	"context"
	"log/slog"
	"strings"
	"sync"
)

// maxNotes bounds the notes a loop remembers. A client notes a handful per
// attempt (a track not sent and why, a remote without a Location), the
// same ones every attempt; a loop that has seen this many different ones
// forgets them all and starts again, so a flood of distinct notes is
// logged (as it should be) without growing the set.
const maxNotes = 64

// notes are what a loop's attempts have noted at INFO or WARN since the
// stream it pushes was published (for the whole run of a pull): the keys
// of the lines (message and attributes).
type notes struct {
	mu   sync.Mutex
	seen map[string]struct{} // guarded by mu
}

// repeated reports whether key was noted before, and notes it.
func (n *notes) repeated(key string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.seen[key]; ok {
		return true
	}
	if n.seen == nil || len(n.seen) >= maxNotes {
		n.seen = make(map[string]struct{})
	}
	n.seen[key] = struct{}{}
	return false
}

// noteHandler is the handler of Attempt.Notes: a line at INFO or WARN
// that an attempt of the loop logged before (the same message and
// attributes, whatever the logger's With attributes) goes out at DEBUG.
type noteHandler struct {
	inner slog.Handler
	n     *notes
}

func (h noteHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// A line is demoted, never promoted: one whose level is off stays off.
	return h.inner.Enabled(ctx, l)
}

func (h noteHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo || r.Level >= slog.LevelError {
		return h.inner.Handle(ctx, r) // DEBUG is cheap, ERROR always said
	}
	var key strings.Builder
	key.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		key.WriteByte(' ')
		key.WriteString(a.String())
		return true
	})
	if h.n.repeated(key.String()) {
		if !h.inner.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return h.inner.Handle(ctx, r)
}

func (h noteHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return noteHandler{inner: h.inner.WithAttrs(as), n: h.n}
}

func (h noteHandler) WithGroup(name string) slog.Handler {
	return noteHandler{inner: h.inner.WithGroup(name), n: h.n}
}
