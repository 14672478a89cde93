package rtc

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
)

// TestICETCPLimits: the ICE-TCP port holds no client for free. A
// connection over its address's limit is closed at accept (one log line
// naming the peer); one that never sends an ICE check is closed after
// tcpFirstCheckTimeout (pion's default would hold it 30 s) and gives its
// slot back; one whose first packet is not a STUN binding request is
// closed at once.
func TestICETCPLimits(t *testing.T) {
	log, logs := testkit.TestLog(t, "")
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Settings{UDP: udp, TCP: ln, TCPConnsPerAddr: 2, IncludeLoopback: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })

	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// closedWithin reports whether the bridge closed c within d.
	closedWithin := func(c net.Conn, d time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
	}

	idle1, idle2 := dial(), dial()
	over := dial()
	if !closedWithin(over, 5*time.Second) {
		t.Fatal("third connection from one address is open, over TCPConnsPerAddr 2")
	}
	if n := logs.Count("ICE-TCP connection refused", "peer=127.0.0.1:"); n != 1 {
		t.Errorf("%d refusal lines, want 1", n)
	}
	// Waits out tcpFirstCheckTimeout with room to spare, well short of
	// pion's 30 s.
	for _, c := range []net.Conn{idle1, idle2} {
		if !closedWithin(c, tcpFirstCheckTimeout+5*time.Second) {
			t.Fatal("a connection that sent no ICE check is still open")
		}
	}
	// Their slots are back: a client sending garbage gets in, and is
	// closed for its first packet.
	junk := dial()
	if _, err := junk.Write([]byte{0, 4, 'j', 'u', 'n', 'k'}); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(junk, 5*time.Second) {
		t.Fatal("a connection whose first packet is not STUN is still open")
	}
	if n := logs.Count("ICE-TCP connection refused"); n != 1 {
		t.Errorf("%d refusal lines, want 1 (slots not given back?)", n)
	}
}
