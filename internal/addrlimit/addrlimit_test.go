package addrlimit

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
)

func TestLimits(t *testing.T) {
	l := New(3, 2)
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	r1, err := l.Acquire(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(a); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(a); !errors.Is(err, ErrPerAddr) {
		t.Fatalf("third from one address: %v, want ErrPerAddr", err)
	}
	if _, err := l.Acquire(b); err != nil {
		t.Fatalf("another address must still get in: %v", err)
	}
	if _, err := l.Acquire(netip.MustParseAddr("192.0.2.3")); !errors.Is(err, ErrTotal) {
		t.Fatalf("fourth in all: %v, want ErrTotal", err)
	}
	r1()
	r1() // twice is harmless
	if n, na := l.Len(a); n != 2 || na != 1 {
		t.Fatalf("after release: total %d, per address %d; want 2, 1", n, na)
	}
	if _, err := l.Acquire(a); err != nil {
		t.Fatal(err)
	}
}

func TestIPv6CountedPer64(t *testing.T) {
	l := New(0, 1)
	if _, err := l.Acquire(netip.MustParseAddr("2001:db8:1:2::1")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(netip.MustParseAddr("2001:db8:1:2:ffff::9")); !errors.Is(err, ErrPerAddr) {
		t.Fatalf("same /64: %v, want ErrPerAddr", err)
	}
	if _, err := l.Acquire(netip.MustParseAddr("2001:db8:1:3::1")); err != nil {
		t.Fatalf("another /64: %v", err)
	}
	// IPv4-mapped addresses count as their IPv4 address.
	if _, err := l.Acquire(netip.MustParseAddr("::ffff:192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(netip.MustParseAddr("192.0.2.1")); !errors.Is(err, ErrPerAddr) {
		t.Fatalf("mapped and plain IPv4 are one client: %v", err)
	}
}

func TestAddrOf(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:5000":      "192.0.2.1",
		"[2001:db8::1]:5000":  "2001:db8::1",
		"[::ffff:10.0.0.1]:1": "10.0.0.1",
		"10.0.0.2":            "10.0.0.2",
	} {
		if got := AddrOf(in); got.String() != want {
			t.Errorf("AddrOf(%q) = %v, want %s", in, got, want)
		}
	}
	if AddrOf("garbage").IsValid() {
		t.Error("garbage gave an address")
	}
}

func TestConcurrent(t *testing.T) {
	l := New(100, 0)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
			for range 100 {
				r, err := l.Acquire(a)
				if err == nil {
					r()
				}
			}
		}()
	}
	wg.Wait()
	if n, _ := l.Len(netip.Addr{}); n != 0 {
		t.Fatalf("%d slots still held", n)
	}
}
