package config

import (
	"fmt"
	"net/url"
	"strings"
)

// tls(c *Config) checks TLS and HTTPS listeners (tls.*, listen.https, listen.rtmps).
// The addresses themselves are checked with the other listeners (listen).
func (v *validator) tls(c *Config) {
	t, l := &c.TLS, &c.Listen
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		v.addf("tls.key_file", "missing: tls.cert_file is set (expected both or neither)")
	case t.CertFile == "" && t.KeyFile != "":
		v.addf("tls.cert_file", "missing: tls.key_file is set (expected both or neither)")
	}
	v.acme(t)
	if !t.Enabled() {
		if l.RTMPS != "" {
			v.addf("listen.rtmps", "%q needs a certificate (set tls.cert_file and tls.key_file, or tls.acme.domains)", l.RTMPS)
		}
		if t.RedirectHTTP {
			v.addf("tls.redirect_http", "true needs TLS (set tls.cert_file and tls.key_file, or tls.acme.domains)")
		}
		return
	}
	if l.HTTPS == "" && l.RTMPS == "" {
		v.addf("listen.https", `"" (off) and listen.rtmps off: the certificate would serve nothing (expected an address for either)`)
	}
	if t.RedirectHTTP && (l.HTTPS == "" || l.HTTP == "") {
		v.addf("tls.redirect_http", "true needs both listen.http (what is redirected) and listen.https (where to)")
	}
	if len(t.ACME.Domains) > 0 && l.HTTP == "" && l.HTTPS == "" {
		v.addf("tls.acme.domains", "the CA could check neither challenge: HTTP-01 needs listen.http "+
			"(reached by the CA on port 80) and TLS-ALPN-01 needs listen.https (reached on port 443)")
	}
}

// acme checks tls.acme. The ports the CA reaches (80 for HTTP-01, 443 for
// TLS-ALPN-01) are public ports, which a NAT or port forward may map to
// other local ones, so the listen ports are not required to be 80 and 443.
func (v *validator) acme(t *TLS) {
	a := &t.ACME
	if len(a.Domains) == 0 {
		for _, f := range []struct{ path, value string }{
			{"tls.acme.email", a.Email}, {"tls.acme.cache_dir", a.CacheDir},
			{"tls.acme.directory", a.Directory}, {"tls.acme.ca_root", a.CARoot},
		} {
			if f.value != "" {
				v.addf(f.path, "set, but tls.acme.domains is empty: ACME is off (expected domains to certify, or no tls.acme)")
			}
		}
		return
	}
	if t.CertFile != "" {
		v.addf("tls.acme.domains", "not with tls.cert_file (expected certificate files or ACME, not both)")
	}
	seen := map[string]int{}
	for i, d := range a.Domains {
		path := fmt.Sprintf("tls.acme.domains[%d]", i)
		switch {
		case strings.HasPrefix(d, "*."):
			v.addf(path, "%q: wildcard names need the DNS-01 challenge, which the bridge does not answer (expected a hostname)", d)
		case isIP(d):
			v.addf(path, "%q is an IP address (expected a hostname)", d)
		case !isHostname(d):
			v.addf(path, "%q is not a hostname", d)
		}
		key := strings.ToLower(strings.TrimSuffix(d, "."))
		if j, dup := seen[key]; dup {
			v.addf(path, "%q repeats tls.acme.domains[%d]", d, j)
		}
		seen[key] = i
	}
	if e := a.Email; e != "" {
		if at := strings.IndexByte(e, '@'); at <= 0 || at == len(e)-1 || strings.ContainsAny(e, " \t<>") {
			v.addf("tls.acme.email", "%q is not an email address", e)
		}
	}
	if d := a.Directory; d != "" {
		if u, err := url.Parse(d); err != nil || u.Scheme != "https" || u.Host == "" {
			v.addf("tls.acme.directory", "%q is not an ACME directory URL (expected https://host/path)", d)
		}
	}
}
