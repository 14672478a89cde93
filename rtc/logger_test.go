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
