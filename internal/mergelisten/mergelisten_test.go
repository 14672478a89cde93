package mergelisten

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
)

// listenTwo merges two loopback TCP listeners.
func listenTwo(t *testing.T) (*Listener, []net.Listener) {
	t.Helper()
	var ls []net.Listener
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	return New(slog.New(slog.DiscardHandler), ls...), ls
}

// TestMerge: connections to either listener come out of one Accept, and
// Close closes both ports and ends Accept with net.ErrClosed, leaving no
// goroutine behind.
func TestMerge(t *testing.T) {
	check := testkit.GoroutineBaseline(t, 5*time.Second)
	m, ls := listenTwo(t)
	if m.Addr() != ls[0].Addr() {
		t.Errorf("Addr = %v, want the first listener's %v", m.Addr(), ls[0].Addr())
	}
	for i, l := range ls {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		s, err := m.Accept()
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(s, b); err != nil || b[0] != byte(i) || s.LocalAddr().String() != l.Addr().String() {
			t.Errorf("connection %d: read %v %v on %v", i, b, err, s.LocalAddr())
		}
		s.Close()
		c.Close()
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	for _, l := range ls {
		if c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
			c.Close()
			t.Errorf("%v still accepts after Close", l.Addr())
		}
	}
	check()
}

// TestDrain: after Drain both ports refuse connections while a connection
// accepted before goes on working, and Accept returns nothing until
// Close, which ends it with net.ErrClosed.
func TestDrain(t *testing.T) {
	check := testkit.GoroutineBaseline(t, 5*time.Second)
	m, ls := listenTwo(t)
	c, err := net.Dial("tcp", ls[0].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := m.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	m.Drain()
	for _, l := range ls {
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			c.Close()
			t.Errorf("%s accepts a connection after Drain", l.Addr())
		}
	}
	if _, err := c.Write([]byte{7}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(s, b); err != nil || b[0] != 7 {
		t.Errorf("the connection accepted before Drain: read %v, %v", b, err)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := m.Accept()
		accepted <- err
	}()
	m.wg.Wait() // the accepting goroutines have ended: nothing can reach Accept but Close
	select {
	case err := <-accepted:
		t.Fatalf("Accept returned %v after Drain, before Close", err)
	default:
	}
	m.Close()
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	c.Close()
	s.Close()
	check()
}
