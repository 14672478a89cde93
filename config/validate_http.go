package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// httpFront(h *HTTP) checks http.trusted_proxies: each entry a CIDR or a
// single IP address, written once.
func (v *validator) httpFront(h *HTTP) {
	seen := map[netip.Prefix]bool{}
	for i, s := range h.TrustedProxies {
		path := fmt.Sprintf("http.trusted_proxies[%d]", i)
		p, err := parseTrustedProxy(s)
		switch {
		case err != nil:
			v.addf(path, "%v", err)
		case seen[p]:
			v.addf(path, "%q is listed twice", s)
		}
		seen[p] = true
	}
}

// parseTrustedProxy parses "10.0.0.0/8", "2001:db8::/32" or a single
// address ("10.0.0.5", "::1"), which means that address alone.
func parseTrustedProxy(s string) (netip.Prefix, error) {
	const expected = `(expected a CIDR such as "10.0.0.0/8" or an IP address such as "10.0.0.5")`
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("empty %s", expected)
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR %s", s, expected)
		}
		if p != p.Masked() {
			return netip.Prefix{}, fmt.Errorf("%q has bits set past the prefix length (expected %q)", s, p.Masked().String())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR nor an IP address %s", s, expected)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// TrustedPrefixes returns TrustedProxies as prefixes (a single address as
// a /32 or /128). Entries that do not parse are left out: Validate
// reports them.
func (h HTTP) TrustedPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range h.TrustedProxies {
		if p, err := parseTrustedProxy(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}
