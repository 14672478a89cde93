package certs

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/panics"
)

// acmeCerts obtains and renews the certificates of tls.acme.domains with
// certmagic: it keeps the account and certificates in storage (the cache
// directory, so a restart does not ask the CA again), renews in the
// background before expiry (and earlier when the CA's renewal information
// says so), staples OCSP responses where the CA still offers them, and
// answers the HTTP-01 and TLS-ALPN-01 challenges through the bridge's own
// listeners.
//
// One certmagic Cache and Config per bridge (not certmagic's package
// defaults), so two bridges in one process keep apart.
type acmeCerts struct {
	domains []string
	log     *slog.Logger
	cache   *certmagic.Cache
	magic   *certmagic.Config
	issuer  *certmagic.ACMEIssuer
	cancel  context.CancelFunc
	once    sync.Once

	// Guarded by mu; keys are configured domains only, so both stay
	// bounded whatever certmagic reports.
	mu      sync.Mutex
	lastErr map[string]string // domain -> why its last attempt failed
	fresh   map[string]bool   // domains obtained or renewed, not yet cached
}

// events are the certmagic events logged; the others (one per TLS
// handshake among them) are not even emitted.
var events = []string{"cert_obtained", "cert_failed", "cached_managed_cert"}

func newACME(cfg Config) (*acmeCerts, error) {
	ac := cfg.TLS.ACME
	dir := ac.CacheDir
	if dir == "" {
		var err error
		if dir, err = defaultCacheDir(); err != nil {
			return nil, err
		}
	}
	var roots *x509.CertPool
	if ac.CARoot != "" {
		pem, err := readBounded(ac.CARoot)
		if err != nil {
			return nil, fmt.Errorf("tls.acme.ca_root: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.acme.ca_root: %s holds no PEM certificate", ac.CARoot)
		}
	}
	// Lower case and without a final dot, as certmagic reports them.
	domains := make([]string, len(ac.Domains))
	for i, d := range ac.Domains {
		domains[i] = strings.ToLower(strings.TrimSuffix(d, "."))
	}
	a := &acmeCerts{domains: domains, log: cfg.Log, lastErr: map[string]string{}, fresh: map[string]bool{}}
	zl := zap.New(&zapToSlog{log: cfg.Log.With("component", "acme")})
	var magic *certmagic.Config
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		Logger:           zl,
	})
	magic = certmagic.New(a.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: dir},
		Logger:  zl,
		OnEvent: func(ctx context.Context, event string, data map[string]any) error {
			defer panics.Recover("acme event", cfg.Log, nil)
			return a.onEvent(ctx, event, data)
		},
		ShouldEmitFunc: func(event string) bool { return slices.Contains(events, event) },
		// A client that sends no server name (an RTMPS encoder given an
		// IP) gets the first domain's certificate.
		DefaultServerName: domains[0],
	})
	directory := cmp.Or(ac.Directory, config.DefaultACMEDirectory)
	a.issuer = certmagic.NewACMEIssuer(magic, certmagic.ACMEIssuer{
		CA:     directory,
		Email:  ac.Email,
		Agreed: true, // configuring ACME is accepting the CA's terms; docs/deploy.md says so
		// The challenges arrive on the bridge's own listeners: certmagic
		// tries to bind the same address for its solver, finds it in use
		// and leaves the answer to HTTPHandler and TLSConfig.
		DisableHTTPChallenge:    cfg.HTTP == nil,
		DisableTLSALPNChallenge: cfg.HTTPS == nil,
		AltHTTPPort:             port(cfg.HTTP),
		AltTLSALPNPort:          port(cfg.HTTPS),
		ListenHost:              host(cmp.Or(cfg.HTTP, cfg.HTTPS)),
		TrustedRoots:            roots,
		Logger:                  zl,
	})
	magic.Issuers = []certmagic.Issuer{a.issuer}
	a.magic = magic

	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if err := magic.ManageAsync(ctx, domains); err != nil {
		a.close()
		return nil, fmt.Errorf("tls.acme: %w", err)
	}
	var challenges []string
	if cfg.HTTP != nil {
		challenges = append(challenges, "http-01 on "+cfg.HTTP.String())
	}
	if cfg.HTTPS != nil {
		challenges = append(challenges, "tls-alpn-01 on "+cfg.HTTPS.String())
	}
	a.log.Info("ACME: managing certificates", "domains", domains, "directory", directory,
		"cache_dir", dir, "challenges", strings.Join(challenges, ", "))
	return a, nil
}

// defaultCacheDir is tls.acme.cache_dir when not set:
// $XDG_DATA_HOME/bridge/acme, else ~/.local/share/bridge/acme.
func defaultCacheDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "bridge", "acme"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("tls.acme.cache_dir: not set, and no home directory for its default: %w", err)
	}
	return filepath.Join(home, ".local", "share", "bridge", "acme"), nil
}

func (a *acmeCerts) tlsConfig() *tls.Config { return a.magic.TLSConfig() }

func (a *acmeCerts) httpHandler(next http.Handler) http.Handler {
	return a.issuer.HTTPChallengeHandler(next)
}

// onEvent logs one line per certificate obtained, renewed, loaded from
// the cache directory or failed, and keeps the last failure for ready.
// certmagic calls it synchronously; it only logs and records.
func (a *acmeCerts) onEvent(_ context.Context, event string, data map[string]any) error {
	renewal, _ := data["renewal"].(bool)
	what := "obtained"
	if renewal {
		what = "renewed"
	}
	switch event {
	case "cert_obtained":
		domain, _ := data["identifier"].(string)
		a.setErr(domain, "")
		if slices.Contains(a.domains, domain) {
			a.mu.Lock()
			a.fresh[domain] = true
			a.mu.Unlock()
		}
		a.log.Info("TLS certificate "+what, "domain", domain, "issuer", data["issuer"])
	case "cert_failed":
		domain, _ := data["identifier"].(string)
		err, _ := data["error"].(error)
		if err == nil {
			err = errors.New("unknown error")
		}
		a.setErr(domain, err.Error())
		a.log.Error("TLS certificate could not be "+what+"; retrying later", "domain", domain, "err", err)
	case "cached_managed_cert":
		// Also emitted right after cert_obtained, for the certificate
		// just logged: only one loaded from the cache directory at start
		// is news.
		sans, _ := data["sans"].([]string)
		a.mu.Lock()
		fresh := len(sans) > 0
		for _, n := range sans {
			fresh = fresh && a.fresh[n]
			delete(a.fresh, n)
		}
		a.mu.Unlock()
		if !fresh {
			a.log.Info("TLS certificate loaded from the ACME cache directory", "names", sans)
		}
	}
	return nil
}

func (a *acmeCerts) setErr(domain, msg string) {
	if !slices.Contains(a.domains, domain) {
		return // only configured names: the map stays bounded
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if msg == "" {
		delete(a.lastErr, domain)
	} else {
		a.lastErr[domain] = msg
	}
}

// leaf returns the newest unexpired certificate cached for domain.
func (a *acmeCerts) leaf(domain string) *x509.Certificate {
	var best *x509.Certificate
	now := time.Now()
	for _, c := range a.cache.AllMatchingCertificates(domain) {
		if l := c.Leaf; l != nil && now.Before(l.NotAfter) && (best == nil || l.NotAfter.After(best.NotAfter)) {
			best = l
		}
	}
	return best
}

func (a *acmeCerts) ready() error {
	var missing []string
	for _, d := range a.domains {
		if a.leaf(d) != nil {
			continue
		}
		a.mu.Lock() // not held across leaf: no lock order with certmagic's cache
		e := a.lastErr[d]
		a.mu.Unlock()
		if e != "" {
			missing = append(missing, fmt.Sprintf("%s (last attempt: %s)", d, e))
		} else {
			missing = append(missing, d+" (being obtained)")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("tls.acme: no certificate yet for %s", strings.Join(missing, "; "))
	}
	return nil
}

func (a *acmeCerts) expiries() []Expiry {
	var out []Expiry
	for _, d := range a.domains {
		if l := a.leaf(d); l != nil {
			out = append(out, Expiry{Domain: d, NotAfter: l.NotAfter})
		}
	}
	return out
}

func (a *acmeCerts) close() {
	a.once.Do(func() {
		a.cancel()
		a.cache.Stop()
	})
}

func port(a net.Addr) int {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.Port
	}
	return 0
}

func host(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok && !t.IP.IsUnspecified() {
		return t.IP.String()
	}
	return ""
}

// zapToSlog passes certmagic's zap log to slog, errors only: its info and
// warning lines narrate what the event lines above already say (or
// nothing an operator acts on). The errors that repeat an event line
// (cert_failed) are dropped too.
type zapToSlog struct {
	log    *slog.Logger
	fields []zapcore.Field
}

// repeated are certmagic's error messages that say what a cert_failed
// event line says already.
var repeated = []string{"could not get certificate from issuer", "will retry"}

func (z *zapToSlog) Enabled(l zapcore.Level) bool { return l >= zapcore.ErrorLevel }

func (z *zapToSlog) With(fields []zapcore.Field) zapcore.Core {
	return &zapToSlog{log: z.log, fields: append(slices.Clip(z.fields), fields...)}
}

func (z *zapToSlog) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if z.Enabled(e.Level) && !slices.Contains(repeated, e.Message) {
		return ce.AddCore(e, z)
	}
	return ce
}

func (z *zapToSlog) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(slices.Clip(z.fields), fields...) {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys)+2)
	if e.LoggerName != "" {
		args = append(args, "logger", e.LoggerName)
	}
	for _, k := range keys {
		args = append(args, k, enc.Fields[k])
	}
	z.log.Error("ACME: "+e.Message, args...)
	return nil
}

func (z *zapToSlog) Sync() error { return nil }
