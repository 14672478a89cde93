package main

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/wishbridge/bridge/internal/panics"
)

// servePprof serves the profiler on its own mux and address, so it is never
// reachable through the public HTTP listener. A panic ends the profiler
// alone (its server is gone with the goroutine), never the bridge.
func servePprof(addr string, log *slog.Logger) {
	defer panics.Recover("pprof", log, nil)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("pprof listening", "addr", addr)
	if err := srv.ListenAndServe(); err != nil {
		log.Error("pprof stopped", "err", err)
	}
}
