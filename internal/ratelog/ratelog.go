// Package ratelog keeps refusals and per-packet problems from flooding the
// log: a Limiter lets one line through per key (usually the peer's address)
// per interval and counts the ones it held back, which the next line that
// passes reports as "suppressed".
package ratelog

import (
	"sync"
	"time"
)

// DefaultInterval is how often one key may log when Limiter.Every is 0.
const DefaultInterval = 10 * time.Second

// maxKeys bounds the table: a flood from many addresses must not grow it
// without limit. When full, entries older than the interval are dropped;
// if none are, the new key is refused (counted, not logged) until they age.
const maxKeys = 4096

// Limiter decides which log lines pass. The zero value is ready to use and
// lets one line per key through every DefaultInterval. Safe for concurrent
// use.
type Limiter struct {
	// Every is the interval per key; 0 means DefaultInterval. Set before
	// first use.
	Every time.Duration

	mu   sync.Mutex
	keys map[string]*entry // guarded by mu
	now  func() time.Time  // tests
}

type entry struct {
	last       time.Time
	suppressed int
}

// Allow reports whether a line for key may be logged now and, if so, how
// many lines for key were held back since the last one that passed.
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	every := l.Every
	if every <= 0 {
		every = DefaultInterval
	}
	now := time.Now
	if l.now != nil {
		now = l.now
	}
	t := now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = make(map[string]*entry)
	}
	e := l.keys[key]
	if e == nil {
		if len(l.keys) >= maxKeys {
			for k, old := range l.keys {
				if t.Sub(old.last) >= every {
					delete(l.keys, k)
				}
			}
			if len(l.keys) >= maxKeys {
				return false, 0
			}
		}
		l.keys[key] = &entry{last: t}
		return true, 0
	}
	if t.Sub(e.last) < every {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.last, e.suppressed = t, 0
	return true, n
}
