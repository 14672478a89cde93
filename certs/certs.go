// Package certs holds the certificates the bridge serves over TLS (HTTPS
// and RTMPS): from PEM files, reloaded when they change on disk, or from an
// ACME CA, obtained and renewed automatically. It also holds the two pieces
// of HTTP that go with them: the responder for the CA's HTTP-01 challenge
// and the redirect of page requests from HTTP to HTTPS.
//
// A Manager is built once per bridge from tls.* (config.TLS). Every
// listener that speaks TLS takes its own *tls.Config from TLSConfig; all of
// them see a reloaded or renewed certificate at their next handshake.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/wishbridge/bridge/config"
)

// Config says where the certificates come from and where ACME's
// challenges arrive.
type Config struct {
	// TLS is the tls section: CertFile and KeyFile, or ACME.
	TLS config.TLS
	// HTTP and HTTPS are the bridge's bound HTTP and HTTPS listeners: the
	// CA's HTTP-01 challenge is answered on HTTP (through HTTPHandler),
	// TLS-ALPN-01 on HTTPS (through TLSConfig). nil turns that challenge
	// off. Unused with certificate files.
	HTTP, HTTPS net.Addr
	// Log receives one line per certificate loaded, reloaded, obtained,
	// renewed or failed; slog.Default() if nil.
	Log *slog.Logger
}

// Manager serves the certificates. A nil *Manager (TLS off) is valid: it
// is ready, has no certificates and passes HTTP requests through.
type Manager struct {
	files *fileCert  // set with certificate files
	acme  *acmeCerts // set with ACME
}

// New loads the certificate files (an error if they do not load) or
// starts obtaining the ACME certificates in the background (Ready says
// when they are there). The listeners in cfg must be bound already: the
// CA may connect as soon as New returns, and the connection waits in the
// listen backlog until the server accepts it. Close stops it.
func New(cfg Config) (*Manager, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	switch {
	case len(cfg.TLS.ACME.Domains) > 0:
		a, err := newACME(cfg)
		if err != nil {
			return nil, err
		}
		return &Manager{acme: a}, nil
	case cfg.TLS.CertFile != "":
		f, err := newFileCert(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.Log)
		if err != nil {
			return nil, err
		}
		return &Manager{files: f}, nil
	}
	return nil, errors.New("tls: no certificate configured (expected tls.cert_file and tls.key_file, or tls.acme.domains)")
}

// TLSConfig returns a new *tls.Config serving the current certificate,
// for one listener (HTTPS or RTMPS). TLS 1.2 is the oldest version
// offered: every browser and ffmpeg build in use speaks it, and older
// ones have known attacks.
func (m *Manager) TLSConfig() *tls.Config {
	var c *tls.Config
	if m.acme != nil {
		c = m.acme.tlsConfig()
	} else {
		c = &tls.Config{GetCertificate: m.files.get}
	}
	c.MinVersion = tls.VersionTLS12
	return c
}

// HTTPHandler returns next behind the responder to the ACME CA's HTTP-01
// challenge (GET /.well-known/acme-challenge/<token>), for the HTTP
// listener; without ACME it returns next.
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	if m == nil || m.acme == nil {
		return next
	}
	return m.acme.httpHandler(next)
}

// Ready returns nil when every certificate the bridge is configured to
// serve is there, and otherwise an error naming the domains still without
// one (and why, if an attempt failed): ACME certificates are obtained in
// the background after start. For /readyz.
func (m *Manager) Ready() error {
	if m == nil || m.acme == nil {
		return nil // no TLS, or files: loaded at New or New failed
	}
	return m.acme.ready()
}

// Expiry is when the certificate served for Domain stops being valid.
type Expiry struct {
	Domain   string
	NotAfter time.Time
}

// Expiries lists the served certificates' expiry by domain (each DNS
// name and IP address of a certificate from files; each configured ACME
// domain that has a certificate).
func (m *Manager) Expiries() []Expiry {
	switch {
	case m == nil:
		return nil
	case m.acme != nil:
		return m.acme.expiries()
	}
	return m.files.expiries()
}

// Close stops watching the files, or stops ACME's maintenance (renewals)
// and any attempt in progress. Safe on a nil Manager and to call twice.
func (m *Manager) Close() {
	switch {
	case m == nil:
	case m.acme != nil:
		m.acme.close()
	default:
		m.files.close()
	}
}

// names are the names a certificate is valid for, as the expiry metric
// labels them: its DNS names and IP addresses, or its subject's common
// name when it has neither (old self-signed certificates).
func names(leaf *x509.Certificate) []string {
	out := append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		out = append(out, ip.String())
	}
	if len(out) == 0 && leaf.Subject.CommonName != "" {
		out = append(out, leaf.Subject.CommonName)
	}
	return out
}
