package testkit

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Pebble is a real ACME CA for one test: letsencrypt/pebble (a tool of
// this module: go.mod's tool block) with pebble-challtestsrv as its DNS
// server, which answers every name with 127.0.0.1. Its validation
// authority checks HTTP-01 on 127.0.0.1:HTTPPort and TLS-ALPN-01 on
// 127.0.0.1:TLSPort, without its usual random sleeps.
type Pebble struct {
	// Directory is the ACME directory URL (tls.acme.directory).
	Directory string
	// CARoot is the PEM file the directory's own HTTPS certificate is
	// signed with (tls.acme.ca_root): pebble's test/certs minica root.
	CARoot string
	mgmt   string // management API, https://127.0.0.1:port
	client *http.Client
}

// StartPebble runs pebble and its DNS server until the test ends, with
// the challenge ports given (the ports the client under test answers on).
// A go command that cannot build them fails the test with how to fetch
// them.
func StartPebble(t testing.TB, httpPort, tlsPort int) *Pebble {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	tool := func(name string) string {
		out, err := exec.Command(goBin, "tool", "-n", name).Output()
		if err != nil {
			t.Fatalf("go tool -n %s: %v (the tool is in go.mod; fetch it with: go mod download github.com/letsencrypt/pebble/v2)", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	out, err := exec.Command(goBin, "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2").Output()
	if err != nil {
		t.Fatalf("go list pebble: %v (go mod download github.com/letsencrypt/pebble/v2)", err)
	}
	certs := filepath.Join(strings.TrimSpace(string(out)), "test", "certs")

	dnsPort, dnsMgmt := FreeUDPPort(t), FreeTCPPort(t)
	acmePort, mgmtPort := FreeTCPPort(t), FreeTCPPort(t)
	p := &Pebble{
		Directory: fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort),
		CARoot:    filepath.Join(certs, "pebble.minica.pem"),
		mgmt:      fmt.Sprintf("https://127.0.0.1:%d", mgmtPort),
	}
	root, err := os.ReadFile(p.CARoot)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(root)
	p.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	cfg, err := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":             filepath.Join(certs, "localhost", "cert.pem"),
		"privateKey":              filepath.Join(certs, "localhost", "key.pem"),
		"httpPort":                httpPort,
		"tlsPort":                 tlsPort,
		"ocspResponderURL":        "",
		// Poll again after 1 s, not pebble's default 3-5 s.
		"retryAfter": map[string]int{"authz": 1, "order": 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(t.TempDir(), "pebble.json")
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		t.Fatal(err)
	}

	dnsAddr := fmt.Sprintf("127.0.0.1:%d", dnsPort)
	startProc(t, "pebble-challtestsrv", exec.Command(tool("pebble-challtestsrv"),
		"-dnsserver", dnsAddr, "-management", fmt.Sprintf("127.0.0.1:%d", dnsMgmt),
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-http01", "", "-https01", "", "-doh", "", "-tlsalpn01", ""))
	WaitFor(t, 30*time.Second, "pebble-challtestsrv listening", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", dnsMgmt))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	cmd := exec.Command(tool("pebble"), "-config", cfgFile, "-dnsserver", dnsAddr)
	// No sleep before validations and no nonces refused on purpose: the
	// test waits for a certificate, not for pebble's chaos.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	startProc(t, "pebble", cmd)
	WaitFor(t, 30*time.Second, "pebble serving its directory", func() bool {
		resp, err := p.client.Get(p.Directory)
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	return p
}

// IssuerRoots returns the root pebble issues under (made anew at each
// start), for a client verifying a certificate pebble issued.
func (p *Pebble) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	resp, err := p.client.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble /roots/0: %d %v", resp.StatusCode, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(body) {
		t.Fatalf("pebble /roots/0 holds no PEM certificate: %q", body)
	}
	return pool
}

// startProc starts cmd until the test ends; its output is logged if the
// test fails.
func startProc(t testing.TB, name string, cmd *exec.Cmd) {
	t.Helper()
	out := &LogBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
}
