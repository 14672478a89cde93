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
	log    *slog.Logger
	level  *slog.LevelVar
	format string // config.LogText or config.LogJSON, as running
	// flagLevel is the -log-level flag's value; when set it overrides
	// log.level, at start and across reloads.
	flagLevel string
}

func newLogging(c config.Log, flagLevel string, w io.Writer) *logging {
	l := &logging{level: new(slog.LevelVar), format: c.FormatOrDefault(), flagLevel: flagLevel}
	l.setLevel(c)
	opts := &slog.HandlerOptions{Level: l.level}
	if l.format == config.LogJSON {
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

// reload applies a reloaded log section: the level at once, a format
// change at the next start.
func (l *logging) reload(c config.Log) {
	l.setLevel(c)
	if f := c.FormatOrDefault(); f != l.format {
		l.log.Warn("config reload: log.format changes need a restart; keeping the running one", "running", l.format, "configured", f)
	}
}
