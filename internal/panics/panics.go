// Package panics is the bridge's panic boundary: every goroutine the bridge
// starts and every callback it hands to a library (pion On* handlers,
// go-rtmp handler methods, gosrt callbacks, hub processors) runs under
// Recover, so a panic ends that one session, connection or processor and
// never the process.
//
// The counts are process-wide on purpose, like the runtime's own
// statistics: a panic is a fact about the binary, whichever bridge in the
// process hit it. metrics serves them as bridge_panics_total{component}.
package panics

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
)

// counts maps a component name to its *atomic.Uint64 panic count.
var counts sync.Map

// Recover must be deferred directly (defer panics.Recover(...)): it stops a
// panic on the calling goroutine, logs one ERROR line with the component,
// the value and the stack, counts it under component, then calls onPanic
// (if not nil) so the caller can end what the panic left half done (close
// the session, the connection, the processor). A panic inside onPanic is
// stopped and logged too.
func Recover(component string, log *slog.Logger, onPanic func()) {
	v := recover()
	if v == nil {
		return
	}
	report(component, log, v)
	if onPanic != nil {
		defer func() {
			if v := recover(); v != nil {
				report(component+" (cleanup)", log, v)
			}
		}()
		onPanic()
	}
}

// Go runs fn on a new goroutine under Recover.
func Go(component string, log *slog.Logger, fn func()) {
	go func() {
		defer Recover(component, log, nil)
		fn()
	}()
}

// Do runs fn under Recover on the calling goroutine and reports whether it
// panicked, for loops that must go on after one bad item (a processor's
// unit, one connection's callback).
func Do(component string, log *slog.Logger, fn func()) (panicked bool) {
	panicked = true
	defer func() {
		if panicked {
			if v := recover(); v != nil {
				report(component, log, v)
			}
		}
	}()
	fn()
	panicked = false
	return false
}

func report(component string, log *slog.Logger, v any) {
	c, _ := counts.LoadOrStore(component, new(atomic.Uint64))
	c.(*atomic.Uint64).Add(1)
	if log == nil {
		log = slog.Default()
	}
	log.Error("panic recovered: "+component+" ended, the process goes on",
		"component", component, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}

// Count is one component's number of recovered panics.
type Count struct {
	Component string
	N         uint64
}

// CountOf returns component's number of recovered panics (0 if none).
func CountOf(component string) uint64 {
	if c, ok := counts.Load(component); ok {
		return c.(*atomic.Uint64).Load()
	}
	return 0
}

// Counts returns the recovered panics per component, sorted by component.
func Counts() []Count {
	var out []Count
	counts.Range(func(k, v any) bool {
		out = append(out, Count{Component: k.(string), N: v.(*atomic.Uint64).Load()})
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Component < out[j].Component })
	return out
}
