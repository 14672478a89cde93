package node

import (
	"reflect"

	"github.com/wishbridge/bridge/config"
)

// Reload swaps in a new configuration, Caddy-style: the caller parsed and
// validated it (a bad file never gets here, and the old config keeps
// running); an unchanged config is a no-op; routes, keys, tokens, grace,
// audio and B-frame policies take effect for the next request; forwards and
// pulls that changed in anything their runner uses (forwardSpec, pullSpec)
// are stopped and started, those whose route is gone stop, the others keep
// running.
// Listeners, WebRTC settings, limits other than readers_per_stream, and
// whether and where metrics are served cannot change without a restart: a
// change there is logged and left for the next start (a new metrics token
// applies at once).
func (n *Node) Reload(next *config.Config) {
	old := n.Config()
	if reflect.DeepEqual(old, next) {
		n.log.Info("config reloaded: unchanged")
		return
	}
	if !reflect.DeepEqual(old.Listen, next.Listen) || !reflect.DeepEqual(old.WebRTC, next.WebRTC) {
		n.log.Warn("config reload: listen and webrtc changes need a restart; keeping the running ones")
		next.Listen, next.WebRTC = old.Listen, old.WebRTC
	}
	if old.Metrics.Enabled != next.Metrics.Enabled || old.Metrics.MetricsPath() != next.Metrics.MetricsPath() {
		// The endpoint is a route on the HTTP mux, which cannot drop one.
		n.log.Warn("config reload: metrics.enabled and metrics.path changes need a restart; keeping the running ones (a new metrics.token applies)")
		next.Metrics.Enabled, next.Metrics.Path = old.Metrics.Enabled, old.Metrics.Path
	}
	if kept := old.Limits; kept.WithDefaults() != next.Limits.WithDefaults() {
		// The limiters are built at start; the readers' limit is read per
		// reader, so it alone applies now.
		kept.ReadersPerStream = next.Limits.ReadersPerStream
		if kept.WithDefaults() != next.Limits.WithDefaults() {
			n.log.Warn("config reload: limits changes need a restart, except readers_per_stream (and routes' max_readers); keeping the running ones")
		}
		next.Limits = kept
	}
	n.cfg.Store(next)
	// A forward or pull whose config changed restarts, and one whose
	// route is gone stops, now: not when a pattern route's forward would
	// have gone idle.
	n.fwd.reconcile()
	n.pulls.reconcile()
	n.log.Info("config reloaded", "routes", len(next.Routes))
}
