package av

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// logBuf is a goroutine-safe log sink (testkit imports this package).
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines returns the lines containing sub.
func (l *logBuf) Lines(sub string) []string {
	var out []string
	for line := range strings.SplitSeq(l.String(), "\n") {
		if line != "" && strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return out
}

// TestFFmpegLogToSlog: with SetLogger, FFmpeg's messages are slog records
// at a mapped level (not raw lines on stderr): libopus's note at close is
// debug, a decoder's complaints about corrupt packets are errors, one line
// per kind per interval however many packets are corrupt.
func TestFFmpegLogToSlog(t *testing.T) {
	needFFmpeg(t)
	var buf logBuf
	SetLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() {
		SetLogger(nil)
		SetLogLevel(LogQuiet)
	})

	// An Opus encoder closed without Flush holds a frame in libopus.
	oe, err := NewEncoder("opus", 48000, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, oe, 48000, []float64{440, 660}, 0, 0, 4800, 0, 960)
	oe.Close()
	closing := buf.Lines("frames left in the queue on closing")
	if len(closing) != 1 {
		t.Fatalf("%d lines of libopus's close note, want 1; log:\n%s", len(closing), buf.String())
	}
	line := closing[0]
	for _, want := range []string{"level=DEBUG", "component=ffmpeg", "context=libopus"} {
		if !strings.Contains(line, want) {
			t.Errorf("libopus's close note %q lacks %s", line, want)
		}
	}
	if strings.Contains(line, "0x") {
		t.Errorf("line %q names a C address", line)
	}

	// A hundred corrupt AAC packets: errors, one line per kind.
	e, err := NewEncoder("aac", 48000, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	d, err := NewDecoder("aac", e.Extradata(), 48000, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	before := len(buf.Lines("context=aac"))
	for i := range 100 {
		if _, err := d.Decode([]byte{0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03}, int64(i*1024)); err == nil {
			t.Fatal("corrupt packet decoded without error")
		}
	}
	lines := buf.Lines("context=aac")[before:]
	if len(lines) == 0 {
		t.Fatalf("no aac decoder line for 100 corrupt packets; log:\n%s", buf.String())
	}
	if len(lines) > 5 {
		t.Errorf("%d aac decoder lines for 100 corrupt packets of one kind, want a few (rate-limited):\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		if !strings.Contains(l, "level=ERROR") {
			t.Errorf("decoder error not at ERROR: %s", l)
		}
	}
	t.Logf("log:\n%s", buf.String())
}

// TestFFmpegContext: the "[name @ 0xADDR] " prefixes become a context
// without the address.
func TestFFmpegContext(t *testing.T) {
	for _, tc := range []struct{ in, ctx, msg string }{
		{"[libopus @ 0x7f30f001b100] 1 frames left in the queue on closing", "libopus", "1 frames left in the queue on closing"},
		{"[mp3 @ 0x1] [aac @ 0x2] x", "mp3/aac", "x"},
		{"no prefix", "", "no prefix"},
		{"[unterminated", "", "[unterminated"},
	} {
		ctx, msg := splitContext(tc.in)
		if ctx != tc.ctx || msg != tc.msg {
			t.Errorf("splitContext(%q) = %q, %q; want %q, %q", tc.in, ctx, msg, tc.ctx, tc.msg)
		}
	}
}
