package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/wishbridge/bridge/admin"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/dashboard"
	"github.com/wishbridge/bridge/health"
	"github.com/wishbridge/bridge/rtc"
)

// startAPI mounts /healthz and /readyz on mux, and the admin API and the
// dashboard: on mux too, or, with listen.api set, only on a
// listener of its own (opened here, so a bind error stops the start;
// served by serveAPI), where previews mounts what the dashboard's preview
// players need (mux has it already).
func (b *Bridge) startAPI(cfg *config.Config, mux *http.ServeMux, previews func(*http.ServeMux), log *slog.Logger) error {
	b.health.Mount(mux)
	b.health.Register("node", b.node.Ready) // drained by POST /api/v1/node/drain
	b.clusterHealth()                       // ownership.go
	// The dashboard follows the running config's api.token (404 without),
	// like the API it reads.
	dash := dashboard.New(dashboard.Config{Enabled: func() bool { return b.node.Config().API.Token != "" }})
	api := admin.New(admin.Config{
		Token:    func() string { return b.node.Config().API.Token },
		Registry: b.registry,
		Private:  func(path string) bool { return b.node.Policy(path).Private },
		Sessions: []admin.Sessions{b.sessions, b.rtmpSrv, b.srtSrv, b.node},
		Evict:    b.node.Evict,
		Reload:   b.ReloadConfig,
		Drain:    func(on bool) bool { return b.node.DrainSessions(on, "drained through the admin API") },
		Drained: func() (time.Time, bool) {
			_, since, ok := b.node.SessionsDrained()
			return since, ok
		},
		Cluster: b.clusterAPI(),
		Log:     log,
	})
	if cfg.Listen.API == "" {
		api.Register(mux)
		dash.Register(mux)
		return nil
	}
	var err error
	if b.apiLn, err = net.Listen("tcp", cfg.Listen.API); err != nil {
		return fmt.Errorf("listen api %s: %w", cfg.Listen.API, err)
	}
	apiMux := http.NewServeMux()
	api.Register(apiMux)
	dash.Register(apiMux)
	previews(apiMux)
	b.apiSrv = &http.Server{
		Handler:           rtc.CORS(apiMux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return nil
}

// serveAPI serves listen.api, when set.
func (b *Bridge) serveAPI() {
	if b.apiSrv != nil {
		b.serve("api", func() error { return b.apiSrv.Serve(b.apiLn) })
	}
}

// Health returns the readiness checks (/readyz): the shutdown drains it,
// the certificate manager registers its check.
func (b *Bridge) Health() *health.Checker { return b.health }

// APIAddr returns the listen.api listener's address, nil when the API is
// served on the HTTP listener.
func (b *Bridge) APIAddr() net.Addr {
	if b.apiLn == nil {
		return nil
	}
	return b.apiLn.Addr()
}

// ReloadConfig loads Options.ConfigFile again and applies it (SIGHUP and
// POST /api/v1/reload), returning the changed keys that need a restart
// (Reload): admin.ErrNothingToReload on the embedded defaults; a file that
// does not load or validate is returned (file:line) and the running config
// stays.
func (b *Bridge) ReloadConfig() (restartNeeded []string, err error) {
	if b.configFile == "" {
		return nil, admin.ErrNothingToReload
	}
	next, err := config.Load(b.configFile)
	if err != nil {
		return nil, err
	}
	if b.onReload != nil {
		b.onReload(next)
	}
	return b.Reload(next), nil
}
