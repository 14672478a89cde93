// Package srtcall is what the bridge's SRT callers (the SRT push egress
// and the SRT pull ingest) share: the srt:// URL they call. It imports
// neither ingest nor egress, which never import each other.
package srtcall

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/internal/rawurl"
)

// Defaults of a parsed URL's configuration.
const (
	// DefaultLatency is the latency when the URL sets none.
	DefaultLatency = 120 * time.Millisecond
	// PayloadSize is the SRT payload size: 7 TS packets.
	PayloadSize = 1316
)

// URL is a parsed srt:// caller URL.
type URL struct {
	// Addr is the listener's host:port.
	Addr string
	// Config is gosrt.DefaultConfig() with the URL's options.
	Config gosrt.Config
	// Redacted is the URL as rawurl.Redact shows it.
	Redacted string
}

// Parse reads srt://host:port?streamid=...&passphrase=...&latency=...
// The query is split by hand: a streamid in the access control syntax
// starts with "#", which net/url would take for a fragment. Options:
// streamid (sent as written after percent-decoding), passphrase (10-79
// characters), pbkeylen (16, 24 or 32), latency (in ms; DefaultLatency if
// not set); others are ignored. connectTimeout is gosrt's
// ConnectionTimeout. Errors show the URL redacted.
func Parse(raw string, connectTimeout time.Duration) (URL, error) {
	s := URL{Redacted: rawurl.Redact(raw)}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || !strings.EqualFold(scheme, "srt") {
		return s, fmt.Errorf("%q is not an srt:// URL", s.Redacted)
	}
	hostport, query, _ := strings.Cut(rest, "?")
	hostport = strings.TrimSuffix(hostport, "/")
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || host == "" {
		return s, fmt.Errorf("%q: expected srt://host:port (SRT has no default port)", s.Redacted)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return s, fmt.Errorf("%q has an invalid port", s.Redacted)
	}
	s.Addr = hostport
	s.Config = gosrt.DefaultConfig()
	s.Config.Latency = DefaultLatency
	s.Config.PayloadSize = PayloadSize
	s.Config.ConnectionTimeout = connectTimeout
	for kv := range strings.SplitSeq(query, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		v = unescape(v)
		switch strings.ToLower(unescape(k)) {
		case "streamid":
			if len(v) > gosrt.MAX_STREAMID_SIZE {
				return s, fmt.Errorf("%q: streamid is %d bytes, maximum is %d", s.Redacted, len(v), gosrt.MAX_STREAMID_SIZE)
			}
			s.Config.StreamId = v
		case "passphrase":
			if len(v) < 10 || len(v) > 79 {
				return s, fmt.Errorf("%q: the passphrase must be 10-79 characters (SRT's limit)", s.Redacted)
			}
			s.Config.Passphrase = v
		case "pbkeylen":
			n, err := strconv.Atoi(v)
			if err != nil || (n != 16 && n != 24 && n != 32) {
				return s, fmt.Errorf("%q: pbkeylen %q is not 16, 24 or 32", s.Redacted, v)
			}
			s.Config.PBKeylen = n
		case "latency":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 60000 {
				return s, fmt.Errorf("%q: latency %q is not a number of milliseconds (0-60000)", s.Redacted, v)
			}
			s.Config.Latency = time.Duration(n) * time.Millisecond
		}
	}
	return s, nil
}

// unescape percent-decodes s, leaving what is not valid percent-encoding
// as written.
func unescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
