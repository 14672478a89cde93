package certs

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// serveTLS accepts TLS connections with m's certificate until the test
// ends and returns the address; each connection is closed once its
// handshake is done.
func serveTLS(t *testing.T, m *Manager) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", m.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}

// served returns the leaf certificate a new TLS connection to addr gets,
// verified against roots for serverName.
func served(t *testing.T, addr, serverName string, roots *x509.CertPool) (*x509.Certificate, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: serverName})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

func writePair(t *testing.T, dir string, certPEM, keyPEM []byte) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	// Renamed into place, as certbot and cert-manager do.
	for name, b := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(name+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(name+".tmp", name); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// TestFileReload: the certificate files are served, a replaced pair is
// served to the next connection without a restart, and a pair that does
// not load leaves the previous certificate served with one error line.
func TestFileReload(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	firstExpiry := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	certPEM, keyPEM := ca.Issue(t, firstExpiry, "live.bridge.test", "127.0.0.1")
	certFile, keyFile := writePair(t, dir, certPEM, keyPEM)
	log, logs := testkit.NamedLog(t, "certs")
	m, err := New(Config{TLS: config.TLS{CertFile: certFile, KeyFile: keyFile}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	addr := serveTLS(t, m)

	first, err := served(t, addr, "live.bridge.test", ca.Pool())
	if err != nil {
		t.Fatal(err)
	}
	if !first.NotAfter.Equal(firstExpiry) {
		t.Errorf("served NotAfter %v, want %v", first.NotAfter, firstExpiry)
	}
	if got := m.Expiries(); len(got) != 2 || got[0].Domain != "live.bridge.test" || got[1].Domain != "127.0.0.1" || !got[0].NotAfter.Equal(firstExpiry) {
		t.Errorf("Expiries = %v", got)
	}
	if err := m.Ready(); err != nil {
		t.Errorf("Ready = %v", err)
	}

	// A broken pair: the old certificate stays.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs.WaitLog(t, 10*time.Second, "do not load", "still serving the previous certificate")
	if c, err := served(t, addr, "live.bridge.test", ca.Pool()); err != nil || !c.Equal(first) {
		t.Errorf("after a broken pair: served %v, %v; want the first certificate", c, err)
	}

	secondExpiry := time.Now().Add(72 * time.Hour).Truncate(time.Second)
	certPEM, keyPEM = ca.Issue(t, secondExpiry, "live.bridge.test", "127.0.0.1")
	writePair(t, dir, certPEM, keyPEM)
	testkit.WaitFor(t, 10*time.Second, "the replaced certificate served", func() bool {
		c, err := served(t, addr, "live.bridge.test", ca.Pool())
		return err == nil && c.NotAfter.Equal(secondExpiry)
	})
	if got := m.Expiries(); len(got) != 2 || !got[0].NotAfter.Equal(secondExpiry) {
		t.Errorf("Expiries after reload = %v", got)
	}
	if n := logs.Count("do not load"); n != 1 {
		t.Errorf("%d lines about the broken pair, want 1:\n%s", n, logs)
	}
	logs.WaitLog(t, time.Second, "TLS certificate reloaded", "live.bridge.test")
}

// TestFileErrors: files that do not load stop New with what is wrong.
func TestFileErrors(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	certPEM, _ := ca.Issue(t, time.Now().Add(time.Hour), "a.example")
	_, otherKey := ca.Issue(t, time.Now().Add(time.Hour), "a.example")
	certFile, keyFile := writePair(t, dir, certPEM, otherKey)
	for _, tt := range []struct {
		name, cert, key, want string
	}{
		{"missing", filepath.Join(dir, "nope.pem"), keyFile, "nope.pem: no such file"},
		{"key does not match", certFile, keyFile, "private key does not match public key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{TLS: config.TLS{CertFile: tt.cert, KeyFile: tt.key}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestNilManager: TLS off is a nil Manager that is ready and passes HTTP
// through.
func TestNilManager(t *testing.T) {
	var m *Manager
	if m.Ready() != nil || m.Expiries() != nil {
		t.Error("nil Manager not ready or with certificates")
	}
	h := http.NotFoundHandler()
	if got := m.HTTPHandler(h); got == nil {
		t.Error("nil Manager's HTTPHandler is nil")
	}
	m.Close()
}

// TestRedirect: page requests over HTTP get a 308 to the same URL on
// HTTPS; WHIP/WHEP and session requests, other methods and TLS requests
// are served.
func TestRedirect(t *testing.T) {
	h := Redirect(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}), 8443, "/whip/", "/whep/", "/sessions/")
	for _, tt := range []struct {
		method, host, target string
		tls                  bool
		status               int
		location             string
	}{
		{"GET", "live.example:8080", "/watch/cam?x=1", false, 308, "https://live.example:8443/watch/cam?x=1"},
		{"HEAD", "live.example", "/", false, 308, "https://live.example:8443/"},
		{"GET", "[2001:db8::1]:8080", "/metrics", false, 308, "https://[2001:db8::1]:8443/metrics"},
		{"GET", "live.example", "/watch/cam", true, 418, ""},
		{"POST", "live.example", "/whep/cam", false, 418, ""},
		{"GET", "live.example", "/whep/cam", false, 418, ""},
		{"PATCH", "live.example", "/sessions/abc", false, 418, ""},
		{"GET", "live.example", "/sessions/abc", false, 418, ""},
		{"OPTIONS", "live.example", "/watch/cam", false, 418, ""},
		{"POST", "live.example", "/publish/cam", false, 418, ""},
	} {
		r := httptest.NewRequest(tt.method, "http://"+tt.host+tt.target, nil)
		if tt.tls {
			r.TLS = &tls.ConnectionState{}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.status || w.Header().Get("Location") != tt.location {
			t.Errorf("%s %s%s (tls %t): %d %q, want %d %q", tt.method, tt.host, tt.target, tt.tls, w.Code, w.Header().Get("Location"), tt.status, tt.location)
		}
	}
	// Port 443 is left out of the URL.
	w := httptest.NewRecorder()
	Redirect(http.NotFoundHandler(), 443).ServeHTTP(w, httptest.NewRequest("GET", "http://live.example/x", nil))
	if got := w.Header().Get("Location"); got != "https://live.example/x" {
		t.Errorf("Location = %q, want https://live.example/x", got)
	}
}

// TestServerErrorLog: net/http's TLS handshake failures go to debug, its
// other complaints stay at warn.
func TestServerErrorLog(t *testing.T) {
	logs := &testkit.LogBuf{}
	l := ServerErrorLog(testkit.NewLogger(logs))
	l.Print("http: TLS handshake error from 203.0.113.9:4711: EOF")
	l.Print("http: Accept error: too many open files; retrying in 5ms")
	if logs.Count("level=DEBUG", "TLS handshake error from 203.0.113.9:4711") != 1 || logs.Count("level=WARN", "Accept error") != 1 {
		t.Errorf("log:\n%s", logs)
	}
}
