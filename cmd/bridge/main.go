// Command bridge moves live streams between RTMP/SRT and WebRTC (WHIP/WHEP).
//
// Usage:
//
//	bridge                       # embedded defaults: HTTP :8080, RTMP :1935, SRT :8890, WebRTC UDP :8189
//	bridge -config config.yaml   # YAML routes, see config.yaml for every option
//	bridge -check -config FILE   # validate FILE: exit 0, or 1 with file:line messages
//	bridge -version              # version, commit, Go and FFmpeg versions
//	bridge -healthcheck URL      # GET URL: exit 0 on 2xx, 1 otherwise (container health checks)
//
// Signals: SIGHUP reloads the config file; SIGTERM or SIGINT shut down
// cleanly within shutdown.timeout; a second one exits at once (status 1).
package main

import (
	"fmt"
	"os"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/transcode/av"
)

func main() {
	f, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2) // the flag package printed why, with the usage
	}
	switch {
	case f.version:
		printVersion(os.Stdout)
		return
	case f.healthcheck != "":
		os.Exit(healthcheck(f.healthcheck, os.Stdout, os.Stderr))
	case f.check:
		os.Exit(check(f.config, os.Stdout, os.Stderr))
	}

	sigs := catchSignals()
	cfg, err := loadConfig(f.config)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bridge: %v\n", err)
		os.Exit(2)
	}
	logs := newLogging(cfg.Log, f.logLevel, os.Stderr)
	log := logs.log
	// FFmpeg logs to stderr past the logger unless told otherwise; its
	// log is process-wide, so the process owner routes it.
	av.SetLogger(log)
	if f.pprof != "" {
		go servePprof(f.pprof, log)
	}
	// A reload (SIGHUP or the API) applies log.level too.
	b, err := Start(cfg, Options{ConfigFile: f.config, OnReload: func(next *config.Config) { logs.reload(next.Log) }}, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bridge: %v\n", err)
		os.Exit(1)
	}
	os.Exit(serve(b, sigs, log))
}
