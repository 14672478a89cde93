package rtmp

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

var netipLoopback = netip.MustParseAddr("127.0.0.1")

// dialFrom opens a TCP connection to addr from the loopback address local
// (127.0.0.2 and the like: every 127/8 address is local on Linux).
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", local, err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// closedByServer reports whether the server closed nc (rather than
// waiting for the handshake, which it does for 10 s).
func closedByServer(nc net.Conn) bool {
	_ = nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := nc.Read(make([]byte, 1))
	var ne net.Error
	return errors.Is(err, io.EOF) || (err != nil && !(errors.As(err, &ne) && ne.Timeout()))
}

// TestConnLimits: connections over the per-address cap are closed at
// accept, before the handshake, without costing goroutines, while another
// address still gets in; over the total cap everyone is refused.
func TestConnLimits(t *testing.T) {
	const perAddr, total, flood = 3, 5, 50
	ts := startServerConfig(t, Config{Authorize: allowAll, MaxConns: total, MaxConnsPerAddr: perAddr}, nil)

	// perAddr half-open connections from 127.0.0.1 are admitted and wait
	// for their handshake.
	var held []net.Conn
	for range perAddr {
		held = append(held, dialFrom(t, "127.0.0.1", ts.addr))
	}
	testkit.WaitFor(t, 5*time.Second, "admitted connections", func() bool {
		n, _ := ts.gate.Len(netipLoopback)
		return n == perAddr
	})
	time.Sleep(100 * time.Millisecond) // go-rtmp's goroutines for them start
	base := runtime.NumGoroutine()

	// More from the same address are closed at once.
	for i := range flood {
		if nc := dialFrom(t, "127.0.0.1", ts.addr); !closedByServer(nc) {
			t.Fatalf("connection %d from 127.0.0.1 over the cap of %d is still open", perAddr+i+1, perAddr)
		}
	}
	if n := runtime.NumGoroutine(); n > base+5 {
		t.Errorf("%d goroutines after %d refused connections, %d before", n, flood, base)
	}
	// The admitted ones are still waiting.
	for i, nc := range held {
		_ = nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		var ne net.Error
		if _, err := nc.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("admitted connection %d: %v, want it open", i, err)
		}
	}

	// Another address gets in and completes an RTMP session.
	c := dialRawFrom(t, "127.0.0.2", ts.addr)
	if st := c.publish(c.connect("live"), "other"); st.Code != "NetStream.Publish.Start" {
		t.Fatalf("publish from 127.0.0.2: %+v", st)
	}
	dialFrom(t, "127.0.0.2", ts.addr)
	// Now at the total: a third address is refused too.
	if nc := dialFrom(t, "127.0.0.3", ts.addr); !closedByServer(nc) {
		t.Fatalf("connection over the total of %d is still open", total)
	}

	r := ts.Refusals()
	if r.ConnsPerAddr != flood || r.ConnsTotal != 1 {
		t.Errorf("refusals %+v, want %d per address and 1 total", r, flood)
	}
	// One log line for the flood from 127.0.0.1, naming the peer.
	if ls := ts.logs.Lines("rtmp connection refused", "peer=127.0.0.1:"); len(ls) != 1 {
		t.Errorf("%d refusal lines for 127.0.0.1, want 1:\n%s", len(ls), strings.Join(ls, "\n"))
	}
	ts.logs.WaitLog(t, time.Second, "rtmp connection refused", "peer=127.0.0.3:", "server is at its limit")

	// Slots come back when connections end.
	for _, nc := range held {
		nc.Close()
	}
	testkit.WaitFor(t, 5*time.Second, "slots released", func() bool {
		_, n := ts.gate.Len(netipLoopback)
		return n == 0
	})
	dialRawFrom(t, "127.0.0.1", ts.addr).connect("live")
}

// TestReaderLimit: a play of a stream that has its maximum of readers is
// refused with NetStream.Play.Failed saying why; a reader leaving makes
// room.
func TestReaderLimit(t *testing.T) {
	var ts *testServer
	play := func(ctx context.Context, req PlayRequest, w PlayWriter) error {
		st, ok := ts.reg.Get(req.Path)
		if !ok {
			return ErrStreamNotFound
		}
		r, err := st.NewReader(media.ReaderOptions{Name: "play " + req.Remote})
		if err != nil {
			return err
		}
		defer r.Close()
		if err := w.WriteMessage(18, 0, []byte("\x02\x00\x0aonMetaData\x05")); err != nil {
			return err
		}
		_, err = r.Read(ctx)
		return err
	}
	ts = startServerConfig(t, Config{
		Authorize:  allowAll,
		Play:       play,
		MaxReaders: func(path string) int { return map[string]int{"live/a": 2}[path] },
	}, nil)
	pub, err := ts.reg.Publish("live/a", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	// A WHEP viewer (or any other hub reader) counts as much as a player.
	other, err := pub.NewReader(media.ReaderOptions{Name: "whep viewer"})
	if err != nil {
		t.Fatal(err)
	}

	first := dialRaw(t, ts.addr)
	first.command(8, first.connect("live"), "play", 0, args{nil, "a", float64(-2000)})
	if st := first.waitStatus(); st.Code != "NetStream.Play.Reset" {
		t.Fatalf("first player: %+v", st)
	}

	second := dialRaw(t, ts.addr)
	second.command(8, second.connect("live"), "play", 0, args{nil, "a", float64(-2000)})
	st := second.waitStatus()
	if st.Code != "NetStream.Play.Failed" || !strings.Contains(st.Description, "maximum of readers") {
		t.Fatalf("second player: %+v, want NetStream.Play.Failed about the reader limit", st)
	}
	if err := second.waitClosed(5 * time.Second); err != nil {
		t.Error(err)
	}
	if n := ts.Refusals().Readers; n != 1 {
		t.Errorf("%d reader refusals counted, want 1", n)
	}
	ts.logs.WaitLog(t, time.Second, "rtmp play refused", "stream=live/a", "maximum of readers")

	other.Close()
	third := dialRaw(t, ts.addr)
	third.command(8, third.connect("live"), "play", 0, args{nil, "a", float64(-2000)})
	if st := third.waitStatus(); st.Code != "NetStream.Play.Reset" {
		t.Fatalf("player after a reader left: %+v", st)
	}
}

// TestPanicEndsConnection: a panic in a go-rtmp callback ends that
// connection alone, is counted, and the server goes on serving.
func TestPanicEndsConnection(t *testing.T) {
	ts := startServer(t, allowAll, func(s *Server) {
		s.onPublish = func(st *media.Stream) {
			if st.Path() == "live/boom" {
				panic("boom")
			}
		}
	})
	before := panics.CountOf(panicComponent)
	c := dialRaw(t, ts.addr)
	c.command(8, c.connect("live"), "publish", 0, args{nil, "boom", "live"})
	if err := c.waitClosed(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := panics.CountOf(panicComponent) - before; n != 1 {
		t.Errorf("%d panics counted under %q, want 1", n, panicComponent)
	}
	ts.logs.WaitLog(t, time.Second, "panic recovered", "component=\"rtmp connection\"", "peer=")
	testkit.WaitFor(t, 5*time.Second, "the publication ended", func() bool {
		_, ok := ts.reg.Get("live/boom")
		return !ok
	})
	other := dialRaw(t, ts.addr)
	if st := other.publish(other.connect("live"), "fine"); st.Code != "NetStream.Publish.Start" {
		t.Fatalf("publish after the panic: %+v", st)
	}
}

// TestBitrateCap: a publisher sending above Config.MaxBitrate is
// disconnected with a log line saying so.
func TestBitrateCap(t *testing.T) {
	ts := startServerConfig(t, Config{Authorize: allowAll, MaxBitrate: 1_000_000}, nil)
	c := dialRaw(t, ts.addr)
	id := c.connect("live")
	if st := c.publish(id, "fast"); st.Code != "NetStream.Publish.Start" {
		t.Fatalf("publish: %+v", st)
	}
	// Video command frames (FLV frame type 5: no picture, ignored) of
	// 60 KB each: 1.2 MB is more than the 625 KB 1 Mbit/s allows in 5 s.
	tag := make([]byte, 60<<10)
	tag[0] = 0x57
	for i := range 20 {
		if err := c.video(id, uint32(i), tag); err != nil {
			break
		}
	}
	if err := c.waitClosed(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	ts.logs.WaitLog(t, time.Second, "rtmp publish ended", "stream=live/fast", "peer sends more than 1 Mbit/s")
	if n := ts.Refusals().Bitrate; n != 1 {
		t.Errorf("%d bitrate refusals counted, want 1", n)
	}
}
