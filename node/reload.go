package node

import (
	"reflect"
	"strings"

	"github.com/wishbridge/bridge/config"
)

// Reload swaps in a new configuration, Caddy-style: the caller parsed and
// validated it (a bad file never gets here, and the old config keeps
// running); an unchanged config is a no-op; routes, keys, tokens, grace,
// audio and B-frame policies, api.token, http.trusted_proxies, log.level
// and shutdown.* take effect for the next request (or signal); forwards
// and pulls that changed in anything their runner uses (forwardSpec,
// pullSpec) are stopped and started, those whose route is gone stop, the
// others keep running.
// Listeners, TLS, WebRTC settings, limits other than readers_per_stream,
// log.format, and whether and where metrics are served cannot change
// without a restart: their running values are kept, and the keys that
// changed are returned (e.g. "tls.cert_file") and logged in one warning
// (a new metrics token applies at once).
func (n *Node) Reload(next *config.Config) (restartNeeded []string) {
	old := n.Config()
	if reflect.DeepEqual(old, next) {
		n.log.Info("config reloaded: unchanged")
		return nil
	}
	restartNeeded = keepRunning(old, next)
	if len(restartNeeded) > 0 {
		n.log.Warn("config reload: these changes need a restart; keeping the running values", "restart_needed", restartNeeded)
	}
	n.cfg.Store(next)
	// A forward or pull whose config changed restarts, and one whose
	// route is gone stops, now: not when a pattern route's forward would
	// have gone idle.
	n.fwd.reconcile()
	n.pulls.reconcile()
	n.log.Info("config reloaded", "routes", len(next.Routes))
	return restartNeeded
}

// keepRunning puts old's values back into next where they cannot change
// without a restart, and returns the keys whose values differed.
func keepRunning(old, next *config.Config) []string {
	// Built at start: the listeners, certificates (the files' contents
	// are reloaded from disk, not their names), the WebRTC engine and
	// the process's log handler.
	keys := changedKeys(nil, "listen", old.Listen, next.Listen)
	keys = changedKeys(keys, "tls", old.TLS, next.TLS)
	keys = changedKeys(keys, "webrtc", old.WebRTC, next.WebRTC)
	next.Listen, next.TLS, next.WebRTC = old.Listen, old.TLS, old.WebRTC
	if old.Log.FormatOrDefault() != next.Log.FormatOrDefault() {
		keys = append(keys, "log.format")
		next.Log.Format = old.Log.Format
	}
	// The endpoint is a route on the HTTP mux, which cannot drop one.
	if old.Metrics.Enabled != next.Metrics.Enabled {
		keys = append(keys, "metrics.enabled")
	}
	if old.Metrics.MetricsPath() != next.Metrics.MetricsPath() {
		keys = append(keys, "metrics.path")
	}
	next.Metrics.Enabled, next.Metrics.Path = old.Metrics.Enabled, old.Metrics.Path
	// The limiters are built at start; the readers' limit is read per
	// reader, so it alone applies now.
	kept := old.Limits
	kept.ReadersPerStream = next.Limits.ReadersPerStream
	keys = changedKeys(keys, "limits", kept.WithDefaults(), next.Limits.WithDefaults())
	next.Limits = kept
	return keys
}

// changedKeys appends the dotted config keys (prefix, then the yaml names)
// where old and next differ: structs field by field, anything else (lists
// included) as a whole. Only names: values may be secrets.
func changedKeys(keys []string, prefix string, old, next any) []string {
	return appendChanged(keys, prefix, reflect.ValueOf(old), reflect.ValueOf(next))
}

func appendChanged(keys []string, prefix string, old, next reflect.Value) []string {
	if old.Kind() != reflect.Struct {
		if !reflect.DeepEqual(old.Interface(), next.Interface()) {
			keys = append(keys, prefix)
		}
		return keys
	}
	for i := range old.NumField() {
		name, _, _ := strings.Cut(old.Type().Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		keys = appendChanged(keys, prefix+"."+name, old.Field(i), next.Field(i))
	}
	return keys
}
