package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CertExpiry is one served TLS certificate's expiry for one name it
// holds.
type CertExpiry struct {
	Domain   string
	NotAfter time.Time
}

// TLSCerts is bridge_tls_certificate_expiry_seconds{domain}: when the
// certificate served for each domain expires, as a Unix time (the form
// of Prometheus's time(), so an alert reads
// "bridge_tls_certificate_expiry_seconds - time() < 14*86400"). Read at
// scrape time from src; register it with Metrics.Register.
type TLSCerts struct {
	src  func() []CertExpiry
	desc *prometheus.Desc
}

// NewTLSCerts returns the collector over src, which must be safe for
// concurrent use and quick.
func NewTLSCerts(src func() []CertExpiry) *TLSCerts {
	return &TLSCerts{src: src, desc: prometheus.NewDesc("bridge_tls_certificate_expiry_seconds",
		"Unix time at which the TLS certificate served for domain (HTTPS, RTMPS) expires.", []string{"domain"}, nil)}
}

// Describe and Collect make TLSCerts a prometheus.Collector.
func (c *TLSCerts) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect sends one gauge per domain; a domain listed twice (two
// certificates) is sent once, with the later expiry.
func (c *TLSCerts) Collect(ch chan<- prometheus.Metric) {
	latest := map[string]time.Time{}
	for _, e := range c.src() {
		if e.NotAfter.After(latest[e.Domain]) {
			latest[e.Domain] = e.NotAfter
		}
	}
	for d, t := range latest {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(t.Unix()), d)
	}
}
