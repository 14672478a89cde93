package certs

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// TestACMEHTTP01: with only an HTTP listener for challenges, the Manager
// obtains a certificate from a real ACME CA (pebble) through HTTP-01
// answered by HTTPHandler; until then Ready says which domain waits, then
// the certificate verifies against the CA's root, its expiry is listed,
// and the log has one line for it.
func TestACMEHTTP01(t *testing.T) {
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pebble := testkit.StartPebble(t, httpLn.Addr().(*net.TCPAddr).Port, testkit.FreeTCPPort(t))
	log, logs := testkit.NamedLog(t, "certs")
	const domain = "live.bridge.test"
	m, err := New(Config{
		TLS: config.TLS{ACME: config.ACME{
			Domains: []string{domain}, Email: "ops@bridge.test", CacheDir: t.TempDir(),
			Directory: pebble.Directory, CARoot: pebble.CARoot,
		}},
		HTTP: httpLn.Addr(),
		Log:  log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), domain) {
		t.Errorf("Ready before any certificate = %v, want an error naming %s", err, domain)
	}
	srv := &http.Server{Handler: m.HTTPHandler(http.NotFoundHandler()), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(httpLn) }()
	t.Cleanup(func() { srv.Close() })

	testkit.WaitFor(t, 45*time.Second, "a certificate from pebble (Ready)", func() bool { return m.Ready() == nil })
	leaf, err := served(t, serveTLS(t, m), domain, pebble.IssuerRoots(t))
	if err != nil {
		t.Fatalf("TLS with the obtained certificate: %v", err)
	}
	if got := m.Expiries(); len(got) != 1 || got[0].Domain != domain || !got[0].NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("Expiries = %v, want %s until %v", got, domain, leaf.NotAfter)
	}
	if n := logs.Count("TLS certificate obtained", domain); n != 1 {
		t.Errorf("%d 'obtained' lines, want 1:\n%s", n, logs)
	}
	if n := logs.Count("level=ERROR"); n != 0 {
		t.Errorf("%d error lines:\n%s", n, logs)
	}
}
