package config

import (
	"strings"
	"testing"
)

// TestListenOff: "" turns a listener off, a key with no value keeps its
// default, and webrtc_udp cannot be off.
func TestListenOff(t *testing.T) {
	c, err := Parse("c.yaml", []byte("listen:\n  http: \"\"\n  rtmp: \"\"\n  srt: \"\"\n  https:\nroutes: [{path: a}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.HTTP != "" || c.Listen.RTMP != "" || c.Listen.SRT != "" || c.Listen.WebRTCUDP != ":8189" || c.Listen.HTTPS != ":8443" {
		t.Errorf("listen = %+v, want http, rtmp and srt off, webrtc_udp :8189 and https :8443", c.Listen)
	}
	_, err = Parse("c.yaml", []byte("listen:\n  webrtc_udp: \"\"\nroutes: [{path: a}]\n"))
	want := `c.yaml:2: listen.webrtc_udp: "" cannot turn it off: every WHIP/WHEP session's ICE goes through it (expected host:port)`
	if err == nil || err.Error() != want {
		t.Errorf("webrtc_udp off:\n got %v\nwant %s", err, want)
	}
}

// TestTLSSettings: certificate files turn TLS on with listen.https at its
// default; ACME with its fields; neither leaves it off.
func TestTLSSettings(t *testing.T) {
	if Default().TLS.Enabled() {
		t.Error("TLS on by default")
	}
	c, err := Parse("c.yaml", []byte("tls:\n  cert_file: /etc/bridge/cert.pem\n  key_file: /etc/bridge/key.pem\n  redirect_http: true\nlisten:\n  rtmps: \":1936\"\nroutes: [{path: a}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.TLS.Enabled() || c.Listen.HTTPS != ":8443" || c.Listen.RTMPS != ":1936" || !c.TLS.RedirectHTTP {
		t.Errorf("tls = %+v, listen = %+v", c.TLS, c.Listen)
	}
	c, err = Parse("c.yaml", []byte("tls:\n  acme:\n    domains: [live.example.com, Cam.Example.org]\n    email: ops@example.com\n"+
		"    cache_dir: /var/lib/bridge/acme\n    directory: \"https://acme.example/dir\"\n    ca_root: /etc/ca.pem\n"+
		"listen:\n  http: \":80\"\n  https: \":443\"\nroutes: [{path: a}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.TLS.Enabled() || len(c.TLS.ACME.Domains) != 2 || c.TLS.ACME.CARoot != "/etc/ca.pem" {
		t.Errorf("tls = %+v", c.TLS)
	}
	// ACME through one challenge only: TLS-ALPN-01 with HTTP off.
	if _, err := Parse("c.yaml", []byte("tls:\n  acme: {domains: [a.example]}\nlisten: {http: \"\"}\nroutes: [{path: a}]\n")); err != nil {
		t.Errorf("ACME with listen.http off: %v", err)
	}
}

func TestTLSErrors(t *testing.T) {
	const files = "tls:\n  cert_file: c.pem\n  key_file: k.pem\n"
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"cert without key", "tls:\n  cert_file: c.pem\n",
			[]string{`c.yaml:1: tls.key_file: missing: tls.cert_file is set (expected both or neither)`}},
		{"key without cert", "tls:\n  key_file: k.pem\n",
			[]string{`c.yaml:1: tls.cert_file: missing: tls.key_file is set (expected both or neither)`}},
		{"files and ACME", files + "  acme: {domains: [a.example]}\n",
			[]string{`c.yaml:4: tls.acme.domains: not with tls.cert_file (expected certificate files or ACME, not both)`}},
		{"nothing served", files + "listen: {https: \"\"}\n",
			[]string{`c.yaml:4: listen.https: "" (off) and listen.rtmps off: the certificate would serve nothing (expected an address for either)`}},
		{"rtmps without tls", "listen: {rtmps: \":1936\"}\n",
			[]string{`c.yaml:1: listen.rtmps: ":1936" needs a certificate (set tls.cert_file and tls.key_file, or tls.acme.domains)`}},
		{"redirect without tls", "tls: {redirect_http: true}\n",
			[]string{`c.yaml:1: tls.redirect_http: true needs TLS (set tls.cert_file and tls.key_file, or tls.acme.domains)`}},
		{"redirect without http", files + "  redirect_http: true\nlisten: {http: \"\"}\n",
			[]string{`c.yaml:4: tls.redirect_http: true needs both listen.http (what is redirected) and listen.https (where to)`}},
		{"https collides", files + "listen: {https: \":8080\"}\n",
			[]string{`c.yaml:4: listen.https: ":8080" collides with listen.http ":8080" (both listen on TCP port 8080; expected distinct ports)`}},
		{"rtmps collides", files + "listen: {rtmps: \":1935\"}\n",
			[]string{`c.yaml:4: listen.rtmps: ":1935" collides with listen.rtmp ":1935" (both listen on TCP port 1935; expected distinct ports)`}},
		{"bad https", files + "listen: {https: \"443\"}\n",
			[]string{`c.yaml:4: listen.https: "443" is not a valid listen address (expected host:port with port 1-65535)`}},
		{"ACME without listeners", "tls:\n  acme: {domains: [a.example]}\nlisten: {http: \"\", https: \"\", rtmps: \":1936\"}\n",
			[]string{`c.yaml:2: tls.acme.domains: the CA could check neither challenge: HTTP-01 needs listen.http (reached by the CA on port 80) and TLS-ALPN-01 needs listen.https (reached on port 443)`}},
		{"ACME fields without domains", "tls:\n  acme:\n    email: a@b.example\n    cache_dir: /x\n",
			[]string{
				`c.yaml:3: tls.acme.email: set, but tls.acme.domains is empty: ACME is off (expected domains to certify, or no tls.acme)`,
				`c.yaml:4: tls.acme.cache_dir: set, but tls.acme.domains is empty: ACME is off (expected domains to certify, or no tls.acme)`,
			}},
		{"bad domains", "tls:\n  acme:\n    domains:\n      - \"*.example.com\"\n      - 203.0.113.7\n      - bad_host\n      - a.example\n      - A.example.\n",
			[]string{
				`c.yaml:4: tls.acme.domains[0]: "*.example.com": wildcard names need the DNS-01 challenge, which the bridge does not answer (expected a hostname)`,
				`c.yaml:5: tls.acme.domains[1]: "203.0.113.7" is an IP address (expected a hostname)`,
				`c.yaml:6: tls.acme.domains[2]: "bad_host" is not a hostname`,
				`c.yaml:8: tls.acme.domains[4]: "A.example." repeats tls.acme.domains[3]`,
			}},
		{"bad email and directory", "tls:\n  acme:\n    domains: [a.example]\n    email: ops\n    directory: \"http://acme.example/dir\"\n",
			[]string{
				`c.yaml:4: tls.acme.email: "ops" is not an email address`,
				`c.yaml:5: tls.acme.directory: "http://acme.example/dir" is not an ACME directory URL (expected https://host/path)`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tt.yaml+"routes: [{path: a}]\n"))
			want := strings.Join(tt.want, "\n")
			if err == nil || err.Error() != want {
				t.Errorf("\n got %v\nwant %s", err, want)
			}
		})
	}
}
