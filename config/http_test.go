package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestTrustedProxies: http.trusted_proxies takes CIDRs and single
// addresses (IPv4 and IPv6), read back as prefixes; none by default.
func TestTrustedProxies(t *testing.T) {
	if p := Default().HTTP.TrustedPrefixes(); len(p) != 0 {
		t.Errorf("default trusted proxies %v, want none", p)
	}
	c, err := Parse("c.yaml", []byte("http:\n  trusted_proxies: [10.0.0.0/8, 192.0.2.7, \"2001:db8::/32\", \"::1\"]\nroutes: [{path: a}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("::1/128"),
	}
	if got := c.HTTP.TrustedPrefixes(); !slices.Equal(got, want) {
		t.Errorf("TrustedPrefixes = %v, want %v", got, want)
	}
}

// TestTrustedProxiesErrors: every entry that is not a CIDR or an IP is a
// file:line error naming the entry and what is expected.
func TestTrustedProxiesErrors(t *testing.T) {
	yaml := "http:\n  trusted_proxies:\n" +
		"    - 10.0.0.0/8\n" +
		"    - proxy.example.com\n" +
		"    - 10.0.0.0/33\n" +
		"    - 10.1.2.3/8\n" +
		"    - \"\"\n" +
		"    - \"fe80::1%eth0\"\n" +
		"    - 10.0.0.0/8\n" +
		"routes: [{path: a}]\n"
	want := []string{
		`c.yaml:4: http.trusted_proxies[1]: "proxy.example.com" is neither a CIDR nor an IP address (expected a CIDR such as "10.0.0.0/8" or an IP address such as "10.0.0.5")`,
		`c.yaml:5: http.trusted_proxies[2]: "10.0.0.0/33" is not a CIDR (expected a CIDR such as "10.0.0.0/8" or an IP address such as "10.0.0.5")`,
		`c.yaml:6: http.trusted_proxies[3]: "10.1.2.3/8" has bits set past the prefix length (expected "10.0.0.0/8")`,
		`c.yaml:7: http.trusted_proxies[4]: empty (expected a CIDR such as "10.0.0.0/8" or an IP address such as "10.0.0.5")`,
		`c.yaml:8: http.trusted_proxies[5]: "fe80::1%eth0" is neither a CIDR nor an IP address (expected a CIDR such as "10.0.0.0/8" or an IP address such as "10.0.0.5")`,
		`c.yaml:9: http.trusted_proxies[6]: "10.0.0.0/8" is listed twice`,
	}
	_, err := Parse("c.yaml", []byte(yaml))
	if err == nil {
		t.Fatal("accepted")
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}
