package panics

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRecoverEndsOnlyTheGoroutine(t *testing.T) {
	var buf bytes.Buffer // written by the goroutine, read after wg.Wait
	log := slog.New(slog.NewTextHandler(&buf, nil))
	ended := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer Recover("test session", log, func() { close(ended) })
		var m map[string]int
		m["boom"]++ // a nil map write: a runtime panic
	}()
	wg.Wait()
	<-ended
	if n := CountOf("test session"); n != 1 {
		t.Errorf("count %d, want 1", n)
	}
	out := buf.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "component=\"test session\"") ||
		!strings.Contains(out, "assignment to entry in nil map") || !strings.Contains(out, "panics_test.go") {
		t.Errorf("log line lacks level, component, value or stack:\n%s", out)
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("want one line, got:\n%s", out)
	}
}

func TestCleanupPanicAlsoStopped(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer Recover("test double", slog.New(slog.DiscardHandler), func() { panic("in cleanup") })
		panic("first")
	}()
	<-done
	if CountOf("test double") != 1 || CountOf("test double (cleanup)") != 1 {
		t.Errorf("counts: %v", Counts())
	}
}

func TestDoAndGo(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if Do("test do", log, func() {}) {
		t.Error("Do reported a panic that did not happen")
	}
	if !Do("test do", log, func() { panic("x") }) {
		t.Error("Do missed a panic")
	}
	done := make(chan struct{})
	Go("test go", log, func() { defer close(done); panic("y") })
	<-done
	for CountOf("test go") == 0 {
		time.Sleep(time.Millisecond) // Recover counts after fn's deferred close ran
	}
	if CountOf("test do") != 1 {
		t.Errorf("counts: %v", Counts())
	}
}
