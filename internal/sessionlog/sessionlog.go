// Package sessionlog is the shape of the line every session logs when it
// ends, the same for every kind (WHEP viewers, WHIP publishers, RTMP and
// SRT publishers and readers, forwards and pulls), so that an operator
// reading the log at INFO sees one story per session: one line when it
// starts, logged by the session with its identity (the log.With keys
// session, stream, peer, and route where known), and this one when it
// ends.
package sessionlog

import (
	"log/slog"
	"time"
)

// End logs msg at INFO on log (which carries the session's identity, as
// its start line did) with how long the session ran since started, the
// bytes and packets it moved (payload bytes and packets, or frames where
// the protocol has no packets: see each caller), why it ended, then extra
// key-value pairs particular to its kind.
func End(log *slog.Logger, msg string, started time.Time, bytes, packets uint64, reason string, extra ...any) {
	EndAt(log, msg, started, time.Now(), bytes, packets, reason, extra...)
}

// EndAt is End for a session that ended at ended (a loop that keeps its
// own clock: internal/reconnect).
func EndAt(log *slog.Logger, msg string, started, ended time.Time, bytes, packets uint64, reason string, extra ...any) {
	args := make([]any, 0, 8+len(extra))
	args = append(args,
		"duration", ended.Sub(started).Round(time.Millisecond).String(),
		"bytes", bytes,
		"packets", packets,
		"reason", reason)
	log.Info(msg, append(args, extra...)...)
}
