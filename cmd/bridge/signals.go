package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/wishbridge/bridge/admin"
	"github.com/wishbridge/bridge/internal/panics"
)

// Exit statuses of a bridge that ran.
const (
	exitClean = 0 // every session ended within shutdown.timeout
	// exitUnclean: the timeout passed first, the shutdown failed, or a
	// second signal asked to exit at once; sessions may have ended
	// without their peers being told.
	exitUnclean = 1
)

// signals receives the signals the process handles.
type signals struct {
	stop chan os.Signal // SIGTERM, SIGINT
	hup  chan os.Signal // SIGHUP
}

// catchSignals starts receiving the signals serve handles. main calls it
// before starting the bridge: a signal that arrives while the bridge starts
// then waits for serve instead of killing the process (SIGHUP's and
// SIGTERM's default action) half-started.
func catchSignals() signals {
	s := signals{stop: make(chan os.Signal, 2), hup: make(chan os.Signal, 1)}
	signal.Notify(s.stop, os.Interrupt, syscall.SIGTERM)
	signal.Notify(s.hup, syscall.SIGHUP)
	return s
}

// serve runs b until SIGTERM or SIGINT, reloading its config file on
// SIGHUP, then shuts b down within shutdown.timeout (read from the running
// config, so a reload changes it). It returns the exit status. A second
// SIGTERM or SIGINT during the shutdown exits at once.
func serve(b *Bridge, sigs signals, log *slog.Logger) int {
	stop := sigs.stop
	var sig os.Signal
	for sig == nil {
		select {
		case <-sigs.hup:
			switch _, err := b.ReloadConfig(); { // keys that need a restart: the node warns
			case errors.Is(err, admin.ErrNothingToReload):
				log.Info("SIGHUP: running on the embedded defaults, nothing to reload")
			case err != nil:
				log.Error("config reload failed; keeping the running config", "err", err)
			}
		case sig = <-stop:
		}
	}

	// Readiness first, so that load balancers stop sending new clients
	// while the sessions are wound down.
	b.Health().Drain("shutting down (" + sig.String() + ")")
	timeout := b.node.Config().Shutdown.TimeoutOrDefault()
	log.Info("shutting down: ending every session (signal again to exit at once)", "signal", sig.String(), "timeout", timeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	closed := make(chan error, 1)
	go func() {
		defer panics.Recover("shutdown", log, func() { closed <- errors.New("a panic interrupted the shutdown") })
		closed <- b.Close(ctx)
	}()
	select {
	case err := <-closed:
		if err != nil {
			log.Error("shutdown incomplete", "err", err)
			return exitUnclean
		}
		return exitClean
	case <-ctx.Done():
		log.Error("shutdown timed out: exiting with sessions still open", "timeout", timeout.String())
		return exitUnclean
	case sig := <-stop:
		log.Warn("second signal: exiting at once, without waiting for sessions to end", "signal", sig.String())
		return exitUnclean
	}
}
