package testkit

import (
	"net"
	"net/http"
	"time"
)

// ClientFrom returns an HTTP client whose connections come from the local
// address ip (e.g. "127.0.0.2": Linux answers on all of 127.0.0.0/8), so
// one test can be several client addresses. No keep-alive: an idle
// connection would count as a leaked goroutine.
func ClientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}
}
