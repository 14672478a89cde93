package config

import (
	"fmt"
	"log/slog"
	"time"
)

// The operations settings: TLS, the HTTP front's proxies, the admin API,
// logging and shutdown. Each section's zero value is valid and means the
// default written in default.yaml (read the values through the accessors,
// so hand-built Configs behave like parsed ones).

// TLS turns on HTTPS (listen.https) for every HTTP endpoint, page, the API
// and the metrics, from certificate files or from ACME. Off when neither
// CertFile nor ACME.Domains is set.
type TLS struct {
	// CertFile and KeyFile are PEM files, reloaded when they change on
	// disk. Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// RedirectHTTP answers page requests on the plain HTTP listener with a
	// 308 to HTTPS; WHIP/WHEP POSTs are not redirected.
	RedirectHTTP bool `yaml:"redirect_http"`
	// ACME obtains and renews certificates automatically.
	ACME ACME `yaml:"acme"`
}

// Enabled reports whether HTTPS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" || len(t.ACME.Domains) > 0 }

// ACME configures automatic certificates (RFC 8555) for public hostnames.
type ACME struct {
	// Domains are the hostnames to certify; empty means ACME off.
	Domains []string `yaml:"domains"`
	// Email is the ACME account contact.
	Email string `yaml:"email"`
	// CacheDir keeps the account and certificates across restarts.
	CacheDir string `yaml:"cache_dir"`
	// Directory is the ACME directory URL; "" means Let's Encrypt
	// production (DefaultACMEDirectory).
	Directory string `yaml:"directory"`
	// CARoot, when set, is a PEM file of the roots the ACME server's own
	// HTTPS is verified against (a private or test CA).
	CARoot string `yaml:"ca_root"`
}

// DefaultACMEDirectory is Let's Encrypt's production directory.
const DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"

// HTTP configures how the HTTP front reads requests.
type HTTP struct {
	// TrustedProxies are CIDRs (or single addresses) of reverse proxies:
	// from them only, Forwarded / X-Forwarded-* give the client's scheme,
	// host and address, used in Location headers, links, limits and logs.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// API configures the admin API (/api/v1) and the dashboard.
type API struct {
	// Token is the bearer token the API and dashboard require; "" turns
	// both off (404).
	Token string `yaml:"token"`
}

// String describes the API settings without the token.
func (a API) String() string { return fmt.Sprintf("{token=%s}", redact(a.Token)) }

// LogValue makes slog print the redacted String form.
func (a API) LogValue() slog.Value { return slog.StringValue(a.String()) }

// Log formats.
const (
	LogText = "text"
	LogJSON = "json"
)

// Log configures the process log.
type Log struct {
	// Format is LogText or LogJSON; "" means LogText.
	Format string `yaml:"format"`
	// Level is debug, info, warn or error; "" means info. The -log-level
	// flag overrides it.
	Level string `yaml:"level"`
}

// SlogLevel is Level as a slog.Level; info when unset.
func (l Log) SlogLevel() slog.Level {
	level, ok := ParseLogLevel(l.Level)
	if !ok {
		return slog.LevelInfo
	}
	return level
}

// FormatOrDefault is Format, or LogText when it is unset.
func (l Log) FormatOrDefault() string {
	if l.Format == "" {
		return LogText
	}
	return l.Format
}

// Shutdown configures how the bridge stops on SIGTERM/SIGINT.
type Shutdown struct {
	// Timeout bounds the orderly end of every session, DrainDelay
	// included; 0 means DefaultShutdownTimeout.
	Timeout time.Duration `yaml:"timeout"`
	// DrainDelay is how long the sessions keep running after the signal
	// while /readyz answers 503 and new sessions are refused, so that load
	// balancers polling /readyz send new clients elsewhere before the
	// sessions end; 0 ends them at once.
	DrainDelay time.Duration `yaml:"drain_delay"`
}

// DefaultShutdownTimeout is how long SIGTERM waits for sessions to end.
const DefaultShutdownTimeout = 10 * time.Second

// TimeoutOrDefault is Timeout, or DefaultShutdownTimeout when it is 0.
func (s Shutdown) TimeoutOrDefault() time.Duration {
	if s.Timeout <= 0 {
		return DefaultShutdownTimeout
	}
	return s.Timeout
}
