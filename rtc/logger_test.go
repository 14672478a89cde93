package rtc

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/internal/testkit"
)

// TestPionLogFloodLimited: pion logs a warning per bad packet; a client
// sending garbage must not turn that into a line per packet.
func TestPionLogFloodLimited(t *testing.T) {
	var buf testkit.LogBuf
	f := &slogLoggerFactory{log: slog.New(slog.NewTextHandler(&buf, nil))}
	l := f.NewLogger("udpmux")
	for i := range 1000 {
		l.Warnf("Failed to handle decode ICE from 127.0.0.1:%d: BadFormat for attribute/value: buffer length %d", 30000+i, i)
	}
	l.Errorf("another kind of error %d", 1)
	if n := buf.Count("Failed to handle decode ICE"); n != 1 {
		t.Errorf("%d lines for 1000 warnings of one kind, want 1", n)
	}
	if n := buf.Count("another kind of error"); n != 1 {
		t.Errorf("a different message was held back: %d lines", n)
	}
	if strings.Count(buf.String(), "\n") != 2 {
		t.Errorf("log:\n%s", buf.String())
	}
}

// TestPionLifecycleAtDebug: what pion warns about on every session's join
// and end is debug; the same kind of message with a real cause stays a
// warning.
func TestPionLifecycleAtDebug(t *testing.T) {
	var buf testkit.LogBuf
	f := &slogLoggerFactory{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, m := range []string{
		"Failed to accept RTP stream is already closed",
		"Failed to accept RTCP stream is already closed",
		"Failed to read from candidate udp4 host 192.0.2.2:21189 (resolved: 192.0.2.2:21189): io: read/write on closed pipe",
		"Remote mDNS candidate added, but mDNS is disabled: (6f1c4d2e-7a0b-4c1e-9d3f-2b5e8a7c6d10.local)",
		"Warning: mux: no endpoint for packet starting with 21, adding to queue size(0)",
	} {
		f.NewLogger("pc").Warn(m)
		if line := buf.Lines(m[:20]); len(line) != 1 || !strings.Contains(line[0], "level=DEBUG") {
			t.Errorf("%q logged as %q, want one DEBUG line", m, line)
		}
	}
	real := "Failed to read from candidate udp4 host 192.0.2.2:21189: read: connection refused"
	f.NewLogger("ice").Warn(real)
	if n := buf.Count("connection refused", "level=WARN"); n != 1 {
		t.Errorf("a read failing for another reason: %d WARN lines, want 1; log:\n%s", n, buf.String())
	}
	// RTP or RTCP (first byte 128-191, RFC 7983) still in flight when a
	// session ended.
	for _, first := range []string{"129", "191"} {
		f.NewLogger("mux").Warn("Warning: mux: no endpoint for packet starting with " + first + ", adding to queue size(0)")
		if n := buf.Count("starting with "+first+",", "level=DEBUG"); n != 1 {
			t.Errorf("RTP/RTCP (first byte %s) after the session ended: %d DEBUG lines, want 1; log:\n%s", first, n, buf.String())
		}
	}
	// A DTLS handshake (22) with no endpoint is not the end of a session.
	f.NewLogger("mux").Warn("Warning: mux: no endpoint for packet starting with 22, adding to queue size(0)")
	if n := buf.Count("starting with 22", "level=WARN"); n != 1 {
		t.Errorf("a handshake without an endpoint: %d WARN lines, want 1; log:\n%s", n, buf.String())
	}
}
