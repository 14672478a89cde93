// Command bridge moves live streams between RTMP and WebRTC (WHEP).
//
// Usage:
//
//	bridge                     # embedded defaults: HTTP :8080, RTMP :1935, WebRTC UDP :8189
//	bridge -config config.yaml # YAML routes, see config.yaml for every option
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/transcode/av"
)

func main() {
	cfgPath := flag.String("config", "", "YAML config file (default: embedded defaults)")
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn, error")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060); off by default, never expose it publicly")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "bridge: -log-level: %v\n", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// FFmpeg logs to stderr past the logger unless told otherwise; its
	// log is process-wide, so the process owner routes it.
	av.SetLogger(log)

	cfg := config.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = config.Load(*cfgPath); err != nil {
			fmt.Fprintf(os.Stderr, "bridge: %v\n", err)
			os.Exit(2)
		}
	}
	if *pprofAddr != "" {
		go servePprof(*pprofAddr, log)
	}
	b, err := Start(cfg, Options{}, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bridge: %v\n", err)
		os.Exit(1)
	}

	// SIGHUP reloads the config file; a file that does not parse or
	// validate is logged and the running config stays.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	for ctx.Err() == nil {
		select {
		case <-hup:
			if *cfgPath == "" {
				log.Info("SIGHUP: running on the embedded defaults, nothing to reload")
				continue
			}
			next, err := config.Load(*cfgPath)
			if err != nil {
				log.Error("config reload failed; keeping the running config", "err", err)
				continue
			}
			b.Reload(next)
		case <-ctx.Done():
		}
	}
	stop()
	log.Info("shutting down (signal again to force)")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(shutdownCtx); err != nil {
		log.Warn("shutdown", "err", err)
	}
}
