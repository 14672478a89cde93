package certs

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/wishbridge/bridge/internal/panics"
)

// reloadInterval is how often the certificate files are read again. A
// renewed certificate (certbot, cert-manager, a deploy script) is served
// within this; reading two files of a few KiB this often costs nothing
// measurable, and reading (not stat-ing) sees every way a file can be
// replaced: rewritten in place, renamed over, or a symlink swapped.
const reloadInterval = 2 * time.Second

// maxPEMSize bounds how much of each file is read. A certificate chain is
// a few KiB; the bound keeps a mistyped path (a log file, a device) from
// being read whole every reloadInterval.
const maxPEMSize = 1 << 20

// fileCert serves the certificate of a cert_file/key_file pair and swaps
// in a new one when the files change and load. A pair that does not load
// (a half-written renewal, a key that does not match) keeps the previous
// certificate served, with one log line per bad content.
type fileCert struct {
	certFile, keyFile string
	log               *slog.Logger

	cur  atomic.Pointer[loadedCert]
	stop chan struct{} // closed by close
	done chan struct{} // closed when watch returns

	// Owned by the watch goroutine.
	failed string // the last load error, logged once until it changes
}

// loadedCert is one loaded pair and the bytes it was loaded from.
type loadedCert struct {
	cert            *tls.Certificate // Leaf set
	certPEM, keyPEM []byte           // the files' contents, to spot a change
	notAfter        time.Time
}

func newFileCert(certFile, keyFile string, log *slog.Logger) (*fileCert, error) {
	f := &fileCert{certFile: certFile, keyFile: keyFile, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	certPEM, keyPEM, err := f.read()
	if err != nil {
		return nil, err
	}
	l, err := f.load(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	f.cur.Store(l)
	log.Info("TLS certificate loaded", "cert_file", certFile, "names", names(l.cert.Leaf), "not_after", l.notAfter)
	go f.watch()
	return f, nil
}

// get is tls.Config.GetCertificate: the current certificate, whatever the
// client asked for (one pair serves every name it holds).
func (f *fileCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.cur.Load().cert, nil
}

func (f *fileCert) expiries() []Expiry {
	l := f.cur.Load()
	var out []Expiry
	for _, n := range names(l.cert.Leaf) {
		out = append(out, Expiry{Domain: n, NotAfter: l.notAfter})
	}
	return out
}

func (f *fileCert) close() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
}

// watch reads the files every reloadInterval until close.
func (f *fileCert) watch() {
	defer close(f.done)
	defer panics.Recover("tls certificate reload", f.log, nil)
	t := time.NewTicker(reloadInterval)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			f.reload()
		}
	}
}

// reload loads the files if their contents changed since the served
// certificate was loaded.
func (f *fileCert) reload() {
	certPEM, keyPEM, err := f.read()
	if cur := f.cur.Load(); err == nil && bytes.Equal(certPEM, cur.certPEM) && bytes.Equal(keyPEM, cur.keyPEM) {
		return
	}
	if err == nil {
		var l *loadedCert
		if l, err = f.load(certPEM, keyPEM); err == nil {
			f.cur.Store(l)
			f.failed = ""
			f.log.Info("TLS certificate reloaded", "cert_file", f.certFile, "names", names(l.cert.Leaf), "not_after", l.notAfter)
			return
		}
	}
	if msg := err.Error(); msg != f.failed {
		f.failed = msg
		f.log.Error("TLS certificate files changed but do not load; still serving the previous certificate", "err", err)
	}
}

// read returns both files' contents.
func (f *fileCert) read() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = readBounded(f.certFile); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = readBounded(f.keyFile); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// load parses a pair.
func (f *fileCert) load(certPEM, keyPEM []byte) (*loadedCert, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %s with key %s: %w", f.certFile, f.keyFile, err)
	}
	return &loadedCert{cert: &c, certPEM: certPEM, keyPEM: keyPEM, notAfter: c.Leaf.NotAfter}, nil
}

func readBounded(name string) ([]byte, error) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxPEMSize+1))
	if err != nil {
		return nil, fmt.Errorf("tls: read %s: %w", name, err)
	}
	if len(b) > maxPEMSize {
		return nil, fmt.Errorf("tls: %s is larger than %d bytes (expected a PEM certificate or key)", name, maxPEMSize)
	}
	return b, nil
}
