package main

import (
	"io"
	"log/slog"

	"github.com/wishbridge/bridge/config"
)

// logging is the process log as configured by log.* and -log-level. The
// level follows reloads (a LevelVar the handler reads per record); the
// format is the handler's, fixed at start.
type logging struct {
	log   *slog.Logger
	level *slog.LevelVar
	// flagLevel is the -log-level flag's value; when set it overrides
	// log.level, at start and across reloads.
	flagLevel string
}

func newLogging(c config.Log, flagLevel string, w io.Writer) *logging {
	l := &logging{level: new(slog.LevelVar), flagLevel: flagLevel}
	l.setLevel(c)
	opts := &slog.HandlerOptions{Level: l.level}
	if c.FormatOrDefault() == config.LogJSON {
		l.log = slog.New(slog.NewJSONHandler(w, opts))
	} else {
		l.log = slog.New(slog.NewTextHandler(w, opts))
	}
	return l
}

func (l *logging) setLevel(c config.Log) {
	if lv, ok := config.ParseLogLevel(l.flagLevel); ok {
		l.level.Set(lv)
		return
	}
	l.level.Set(c.SlogLevel())
}

// reload applies a reloaded log section: the level at once; a format
// change waits for the next start (node.Node.Reload says so).
func (l *logging) reload(c config.Log) { l.setLevel(c) }
