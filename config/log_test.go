package config

import (
	"log/slog"
	"testing"
	"time"
)

// TestLogShutdownSettings: log.format, log.level and shutdown.timeout are
// read with their defaults (text, info, 10 s) and their accessors.
func TestLogShutdownSettings(t *testing.T) {
	d := Default()
	if d.Log.FormatOrDefault() != LogText || d.Log.SlogLevel() != slog.LevelInfo || d.Shutdown.TimeoutOrDefault() != 10*time.Second {
		t.Errorf("defaults: log %+v, shutdown %v", d.Log, d.Shutdown.TimeoutOrDefault())
	}
	if d.Shutdown.DrainDelay != 0 {
		t.Errorf("default drain_delay %v, want 0s", d.Shutdown.DrainDelay)
	}
	c, err := Parse("c.yaml", []byte("log:\n  format: json\n  level: debug\nshutdown:\n  timeout: 3s\n  drain_delay: 2s\nroutes: [{path: a}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.FormatOrDefault() != LogJSON || c.Log.SlogLevel() != slog.LevelDebug || c.Shutdown.TimeoutOrDefault() != 3*time.Second || c.Shutdown.DrainDelay != 2*time.Second {
		t.Errorf("parsed: log %+v, shutdown %v", c.Log, c.Shutdown.TimeoutOrDefault())
	}
	// A Config built in Go: the zero values mean the defaults.
	var zero Config
	if zero.Log.FormatOrDefault() != LogText || zero.Log.SlogLevel() != slog.LevelInfo || zero.Shutdown.TimeoutOrDefault() != DefaultShutdownTimeout {
		t.Errorf("zero Config: log %+v, shutdown %v", zero.Log, zero.Shutdown.TimeoutOrDefault())
	}
}

func TestLogShutdownErrors(t *testing.T) {
	tests := []struct {
		yaml string
		want string
	}{
		{"log:\n  format: xml\n", `c.yaml:2: log.format: "xml" is not a log format (expected text or json)`},
		{"log:\n  format: \"\"\n", `c.yaml:2: log.format: "" is not a log format (expected text or json)`},
		{"log:\n  level: verbose\n", `c.yaml:2: log.level: "verbose" is not a log level (expected debug, info, warn or error)`},
		{"shutdown:\n  timeout: 0s\n", `c.yaml:2: shutdown.timeout: 0s is out of range (expected more than 0s and at most 10m0s)`},
		{"shutdown:\n  timeout: -1s\n", `c.yaml:2: shutdown.timeout: -1s is out of range (expected more than 0s and at most 10m0s)`},
		{"shutdown:\n  timeout: 1h\n", `c.yaml:2: shutdown.timeout: 1h0m0s is out of range (expected more than 0s and at most 10m0s)`},
		{"shutdown:\n  timeout: 10\n", `c.yaml:2: shutdown.timeout: expected a duration such as "10s" or "1m30s", got the number 10`},
		{"shutdown:\n  drain_delay: -1s\n", `c.yaml:2: shutdown.drain_delay: -1s is out of range (expected at least 0s and less than shutdown.timeout, 10s, which it counts in)`},
		{"shutdown:\n  timeout: 5s\n  drain_delay: 5s\n", `c.yaml:3: shutdown.drain_delay: 5s is out of range (expected at least 0s and less than shutdown.timeout, 5s, which it counts in)`},
	}
	for _, tt := range tests {
		_, err := Parse("c.yaml", []byte(tt.yaml+"routes: [{path: a}]\n"))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%q:\n got %v\nwant %s", tt.yaml, err, tt.want)
		}
	}
	for _, s := range []string{"debug", "INFO", "Warn", "error"} {
		if _, ok := ParseLogLevel(s); !ok {
			t.Errorf("ParseLogLevel(%q) refused", s)
		}
	}
	if _, ok := ParseLogLevel("warn+1"); ok {
		t.Error(`ParseLogLevel("warn+1") accepted`)
	}
}
