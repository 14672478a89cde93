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

// TestMerge: connections to either listener come out of one Accept, and
// Close closes both ports and ends Accept with net.ErrClosed, leaving no
// goroutine behind.
func TestMerge(t *testing.T) {
	check := testkit.GoroutineBaseline(t, 5*time.Second)
	var ls []net.Listener
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	m := New(slog.New(slog.DiscardHandler), ls...)
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
