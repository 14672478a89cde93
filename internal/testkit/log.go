package testkit

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// LogBuf is a goroutine-safe log sink.
type LogBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines returns the log lines containing every one of subs.
func (l *LogBuf) Lines(subs ...string) []string {
	var out []string
	for line := range strings.SplitSeq(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// Count returns how many log lines contain every one of subs.
func (l *LogBuf) Count(subs ...string) int { return len(l.Lines(subs...)) }

// WaitLog waits until a log line contains every one of subs and returns
// the first such line.
func (l *LogBuf) WaitLog(t testing.TB, timeout time.Duration, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if ls := l.Lines(subs...); len(ls) > 0 {
			return ls[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q within %v; log:\n%s", subs, timeout, l.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// NewLogger returns a debug-level text logger writing into l.
func NewLogger(l *LogBuf) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestLog returns a debug logger into a buffer that is printed if the test
// fails or the environment variable env is set.
func TestLog(t testing.TB, env string) (*slog.Logger, *LogBuf) {
	t.Helper()
	logs := &LogBuf{}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv(env) != "" {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return NewLogger(logs), logs
}

// NamedLog returns a debug logger into a buffer that is printed, headed
// "name log:", if the test fails (or with -v).
func NamedLog(t testing.TB, name string) (*slog.Logger, *LogBuf) {
	t.Helper()
	b := &LogBuf{}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("%s log:\n%s", name, b.String())
		}
	})
	return NewLogger(b), b
}

// WaitNewLog waits for a log line with every one of subs beyond the first
// seen such lines, and returns it.
func (l *LogBuf) WaitNewLog(t testing.TB, timeout time.Duration, seen int, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if ls := l.Lines(subs...); len(ls) > seen {
			return ls[seen]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new log line with %q within %v; log:\n%s", subs, timeout, l.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
