package config

import (
	"log/slog"
	"strings"
	"time"
)

// MaxShutdownTimeout bounds shutdown.timeout. A longer wait outlasts every
// supervisor's stop timeout (systemd's TimeoutStopSec defaults to 90 s,
// docker stop to 10 s, Kubernetes' grace period to 30 s): the process would
// be killed first, and a deploy would hang for nothing.
const MaxShutdownTimeout = 10 * time.Minute

// logLevels are the names ParseLogLevel accepts, in the order of messages.
var logLevels = []struct {
	name  string
	level slog.Level
}{{"debug", slog.LevelDebug}, {"info", slog.LevelInfo}, {"warn", slog.LevelWarn}, {"error", slog.LevelError}}

// ParseLogLevel reads a log.level value or the -log-level flag: debug,
// info, warn or error, in any case.
func ParseLogLevel(s string) (slog.Level, bool) {
	for _, l := range logLevels {
		if strings.EqualFold(s, l.name) {
			return l.level, true
		}
	}
	return 0, false
}

// logShutdown checks log.* and shutdown.*.
func (v *validator) logShutdown(c *Config) {
	if f := c.Log.Format; (f != "" || v.set["log.format"]) && f != LogText && f != LogJSON {
		v.addf("log.format", "%q is not a log format (expected %s or %s)", f, LogText, LogJSON)
	}
	if l := c.Log.Level; l != "" || v.set["log.level"] {
		if _, ok := ParseLogLevel(l); !ok {
			v.addf("log.level", "%q is not a log level (expected debug, info, warn or error)", l)
		}
	}
	if t := c.Shutdown.Timeout; (t != 0 || v.set["shutdown.timeout"]) && (t <= 0 || t > MaxShutdownTimeout) {
		v.addf("shutdown.timeout", "%s is out of range (expected more than 0s and at most %s)", t, MaxShutdownTimeout)
	}
	// The delay counts inside the timeout: one as long would always end
	// the shutdown cut short (status 1), the sessions never ended in order.
	if d, t := c.Shutdown.DrainDelay, c.Shutdown.TimeoutOrDefault(); d < 0 || d >= t {
		v.addf("shutdown.drain_delay", "%s is out of range (expected at least 0s and less than shutdown.timeout, %s, which it counts in)", d, t)
	}
}
