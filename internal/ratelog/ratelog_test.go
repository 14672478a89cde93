package ratelog

import (
	"fmt"
	"testing"
	"time"
)

func TestOnePerKeyPerInterval(t *testing.T) {
	now := time.Unix(1000, 0)
	l := &Limiter{Every: time.Second, now: func() time.Time { return now }}
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("first line held back")
	}
	for range 5 {
		if ok, _ := l.Allow("a"); ok {
			t.Fatal("second line within the interval passed")
		}
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key held back")
	}
	now = now.Add(time.Second)
	ok, n := l.Allow("a")
	if !ok || n != 5 {
		t.Errorf("after the interval: %t, suppressed %d; want true, 5", ok, n)
	}
}

// TestBounded: a flood of distinct keys (addresses) cannot grow the table
// beyond maxKeys; old keys make room once their interval is over.
func TestBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	l := &Limiter{now: func() time.Time { return now }}
	for i := range maxKeys + 100 {
		l.Allow(fmt.Sprint(i))
	}
	if len(l.keys) > maxKeys {
		t.Fatalf("%d keys held, maximum %d", len(l.keys), maxKeys)
	}
	if ok, _ := l.Allow("new"); ok {
		t.Error("a new key passed while the table is full of fresh keys")
	}
	now = now.Add(DefaultInterval)
	if ok, _ := l.Allow("new"); !ok {
		t.Error("a new key held back after the old ones aged")
	}
}
