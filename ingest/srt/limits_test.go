package srt

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// dialAddr connects a gosrt caller to addr (gosrt cannot bind the caller
// to a chosen local address, so tests tell clients apart by dialling
// 127.0.0.1 and ::1 on a dual-stack listener).
func dialAddr(t *testing.T, addr, streamid string) (gosrt.Conn, error) {
	t.Helper()
	cfg := gosrt.DefaultConfig()
	cfg.StreamId = streamid
	cfg.PayloadSize = payloadSize
	c, err := gosrt.Dial("srt", addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// startDualStack starts a server on :0 (every address, both families) and returns it with its
// IPv4 and IPv6 loopback addresses.
func startDualStack(t *testing.T, cfg Config) (ts *testServer, v4, v6 string) {
	t.Helper()
	if ln, err := net.ListenPacket("udp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback to dial from a second address: %v", err)
	} else {
		ln.Close()
	}
	ts = startServerOn(t, ":0", cfg, nil)
	_, port, _ := net.SplitHostPort(ts.addr)
	return ts, net.JoinHostPort("127.0.0.1", port), net.JoinHostPort("::1", port)
}

// TestConnLimits: a caller over the per-address cap is rejected with 1402
// REJX_OVERLOAD without costing the server a goroutine, while another
// address still gets in; over the total cap everyone is rejected; slots
// come back when connections end.
func TestConnLimits(t *testing.T) {
	const perAddr, total, flood = 2, 3, 20
	ts, v4, v6 := startDualStack(t, Config{MaxConns: total, MaxConnsPerAddr: perAddr})
	loop4 := netip.MustParseAddr("127.0.0.1")

	var held []gosrt.Conn
	for i := range perAddr {
		c, err := dialAddr(t, v4, "publish:live/a"+string(rune('0'+i)))
		if err != nil {
			t.Fatalf("publisher %d from 127.0.0.1: %v", i, err)
		}
		held = append(held, c)
	}
	testkit.WaitFor(t, 5*time.Second, "publishers running", func() bool {
		_, n := ts.gate.Len(loop4)
		return n == perAddr
	})
	time.Sleep(100 * time.Millisecond) // their goroutines start
	base := runtime.NumGoroutine()

	for i := range flood {
		_, err := dialAddr(t, v4, "publish:live/x")
		if code := rejectCode(err); code != int(gosrt.REJX_OVERLOAD) {
			t.Fatalf("caller %d from 127.0.0.1 over the cap of %d: %v (code %d), want 1402", perAddr+i+1, perAddr, err, code)
		}
	}
	// The server started nothing for them (gosrt's failed dialers leak a
	// goroutine each in the client, see gosrtDialer).
	if n := runtime.NumGoroutine() - flood; n > base+5 {
		t.Errorf("%d goroutines after %d rejected callers (not counting theirs), %d before", n, flood, base)
	}

	// Another address gets in; then the total is reached for everyone.
	if _, err := dialAddr(t, v6, "publish:live/six"); err != nil {
		t.Fatalf("caller from ::1: %v", err)
	}
	if _, err := dialAddr(t, v6, "publish:live/seven"); rejectCode(err) != int(gosrt.REJX_OVERLOAD) {
		t.Fatalf("caller over the total of %d: %v, want 1402", total, err)
	}

	if r := ts.Refusals(); r.ConnsPerAddr != flood || r.ConnsTotal != 1 {
		t.Errorf("refusals %+v, want %d per address and 1 total", r, flood)
	}
	if ls := ts.logs.Lines("srt connection refused", "peer=127.0.0.1:", "code=1402"); len(ls) != 1 {
		t.Errorf("%d refusal lines for 127.0.0.1, want 1:\n%s", len(ls), strings.Join(ls, "\n"))
	}
	ts.logs.WaitLog(t, time.Second, "srt connection refused", "peer=[::1]:", "server is at its limit")

	held[0].Close()
	testkit.WaitFor(t, 10*time.Second, "the slot of a closed connection", func() bool {
		_, n := ts.gate.Len(loop4)
		return n == perAddr-1
	})
	if _, err := dialAddr(t, v4, "publish:live/again"); err != nil {
		t.Fatalf("caller after a slot came back: %v", err)
	}
}

// TestReaderLimit: an SRT reader of a stream that has its maximum of
// readers (a WHEP viewer counts as much as an SRT reader) is rejected with
// 1402 REJX_OVERLOAD.
func TestReaderLimit(t *testing.T) {
	var reg *media.Registry
	read := &ReadHandler{
		Admit: allowAll,
		Serve: func(ctx context.Context, conn gosrt.Conn, req access.Request) error {
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			st, ok := reg.Get(req.Path)
			if !ok {
				return media.ErrStreamEnded
			}
			r, err := st.NewReader(media.ReaderOptions{Name: "srt read " + req.Remote})
			if err != nil {
				return err
			}
			defer r.Close()
			buf := make([]byte, gosrt.MAX_PAYLOAD_SIZE)
			for {
				if _, err := conn.Read(buf); err != nil {
					return err
				}
			}
		},
	}
	ts := startServer(t, Config{Read: read, MaxReaders: func(path string) int {
		return map[string]int{"live/r": 2}[path]
	}}, nil)
	reg = ts.reg
	pub, err := reg.Publish("live/r", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	viewer, err := pub.NewReader(media.ReaderOptions{Name: "whep viewer"})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := dial(t, ts, "read:live/r", ""); err != nil {
		t.Fatalf("first reader: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "the first reader attached", func() bool { return pub.Readers() == 2 })
	_, err = dial(t, ts, "read:live/r", "")
	if code := rejectCode(err); code != int(gosrt.REJX_OVERLOAD) {
		t.Fatalf("reader over the limit: %v (code %d), want 1402", err, code)
	}
	if n := ts.Refusals().Readers; n != 1 {
		t.Errorf("%d reader refusals counted, want 1", n)
	}
	ts.logs.WaitLog(t, time.Second, "srt connection refused", "stream=live/r", "maximum of readers (2)")

	viewer.Close()
	if _, err := dial(t, ts, "read:live/r", ""); err != nil {
		t.Fatalf("reader after a viewer left: %v", err)
	}
}

// TestBitrateCap: a publisher sending above Config.MaxBitrate is
// disconnected with a log line saying so, as an RTMP publisher is.
func TestBitrateCap(t *testing.T) {
	ts := startServer(t, Config{MaxBitrate: 500_000}, nil)
	c, err := dial(t, ts, "publish:live/fast", "")
	if err != nil {
		t.Fatal(err)
	}
	// The 10 s fixture (600 kbit/s) as fast as it goes: 750 KB, more than
	// the 312 KB 0.5 Mbit/s allows in 5 s.
	pkts := tsPackets(t, "h264-aac.ts")
	go func() {
		var payload []byte
		for _, p := range pkts {
			payload = append(payload, p...)
		}
		for len(payload) > 0 {
			n := min(len(payload), payloadSize)
			if _, err := c.Write(payload[:n]); err != nil {
				return
			}
			payload = payload[n:]
			time.Sleep(100 * time.Microsecond)
		}
	}()
	ts.logs.WaitLog(t, 10*time.Second, "srt publish ended", "stream=live/fast", "peer sends more than 0.5 Mbit/s")
	if n := ts.Refusals().Bitrate; n != 1 {
		t.Errorf("%d bitrate refusals counted, want 1", n)
	}
}

// TestJunkPIDs: packets of PIDs the program does not use (here 1000 PIDs
// the PMT does not name, none ever starting a payload unit) are not
// buffered: the server's heap stays flat while they arrive among the
// stream's own packets, and the stream goes on.
func TestJunkPIDs(t *testing.T) {
	const pids, perPID = 1000, 250 // 250,000 packets, 47 MB
	ts := startServer(t, Config{}, nil)
	c, err := dial(t, ts, "publish:live/junk", "")
	if err != nil {
		t.Fatal(err)
	}
	pkts := tsPackets(t, "h264-aac.ts")
	head := pkts[:len(pkts)/10] // the program and 1 s of media
	s := newSender(t, c, len(head), time.Second, 4)
	for _, p := range head {
		s.add(p)
	}
	s.flush()
	ts.nextReader(t, 5*time.Second)
	testkit.WaitReady(t, ts.reg, "live/junk", 5*time.Second)
	var p *publisher
	testkit.WaitFor(t, 5*time.Second, "the publisher", func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		p = ts.pubs["live/junk"]
		return p != nil
	})

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := p.bytes.Load()

	junk := make([]byte, tsPacketSize)
	for i := range junk {
		junk[i] = 0xff
	}
	// The rest of the fixture goes on among the junk, one packet in 64.
	rest := pkts[len(head):]
	var sent uint64
	for n := range perPID {
		for i := range pids {
			pid := 0x1000 + i // not in the fixture's PMT
			junk[0], junk[1], junk[2], junk[3] = 0x47, byte(pid>>8), byte(pid), 0x10|byte(n&0x0f)
			s.buf = append(s.buf, junk...)
			if (n*pids+i)%64 == 0 && len(rest) > 0 {
				s.buf = append(s.buf, rest[0]...)
				rest = rest[1:]
			}
			for len(s.buf) >= payloadSize {
				if _, err := c.Write(s.buf[:payloadSize]); err != nil {
					t.Fatalf("write: %v", err)
				}
				s.buf = s.buf[payloadSize:]
				sent += payloadSize
				if sent%(payloadSize*16) == 0 {
					time.Sleep(time.Millisecond) // about 160 Mbit/s at most
				}
			}
		}
	}
	// Everything that arrives has arrived once the count stops moving
	// (gosrt holds packets for the latency before delivering them).
	last := uint64(0)
	testkit.WaitFor(t, 20*time.Second, "the junk received", func() bool {
		got := p.bytes.Load() - start
		done := got >= sent*9/10 && got == last
		last = got
		time.Sleep(300 * time.Millisecond)
		return done
	})

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %d KiB while %d MB of unused PIDs arrived", grew>>10, sent>>20)
	if grew > 16<<20 {
		t.Errorf("heap in use grew by %d MiB while %d MB of unused PIDs arrived", grew>>20, sent>>20)
	}
	// The stream is still up.
	if _, ok := ts.reg.Get("live/junk"); !ok {
		t.Errorf("the stream ended:\n%s", ts.logs.String())
	}
}

// TestPanicEndsConnection: a panic while a publisher is served (here in
// the hook that runs before the demux, on the same goroutine as the
// mediacommon callbacks) ends that publisher alone, is counted, and the
// server goes on serving.
func TestPanicEndsConnection(t *testing.T) {
	// The hook is set before the server serves: a connection's goroutine
	// reads it.
	ts := startServer(t, Config{}, func(s *Server) {
		onPublish := s.onPublish
		s.onPublish = func(st *media.Stream) {
			if st.Path() == "live/boom" {
				panic("boom")
			}
			onPublish(st)
		}
	})
	before := panics.CountOf(panicComponent)
	if _, err := dial(t, ts, "publish:live/boom", ""); err != nil {
		t.Fatal(err)
	}
	ts.logs.WaitLog(t, 5*time.Second, "srt publish ended", "stream=live/boom", "panic was recovered")
	if n := panics.CountOf(panicComponent) - before; n != 1 {
		t.Errorf("%d panics counted under %q, want 1", n, panicComponent)
	}
	if _, ok := ts.reg.Get("live/boom"); ok {
		t.Errorf("the stream of the publisher that panicked is still there")
	}
	pkts := tsPackets(t, "h264-aac.ts")
	sendPackets(t, ts, "live/fine", pkts[:len(pkts)/10], time.Second, nil)
	testkit.WaitReady(t, ts.reg, "live/fine", 5*time.Second)
}

// TestRefusalLogLimited (defect 16): a caller repeating one refused
// request gets one log line per interval, however often it calls; a
// refusal of another kind from it is still logged.
func TestRefusalLogLimited(t *testing.T) {
	ts := startServer(t, Config{RefusalLogEvery: time.Hour, Authorize: testkit.Authorizer(func(req access.Request) error {
		return fmt.Errorf("path %q: %w", req.Path, access.BadKey(access.Publish))
	})}, nil)
	for range 8 {
		if _, err := dial(t, ts, "publish:live/x?key=wrong", ""); rejectCode(err) != int(gosrt.REJX_UNAUTHORIZED) {
			t.Fatalf("wrong key: %v, want 1401", err)
		}
	}
	if _, err := dial(t, ts, "publish:live/../x", ""); err == nil {
		t.Fatal("a bad path was accepted")
	}
	ts.logs.WaitLog(t, time.Second, "srt connection refused", "code=1400")
	if n := ts.logs.Count("srt connection refused", "code=1401"); n != 1 {
		t.Errorf("%d lines for 8 refusals of one kind from one address, want 1", n)
	}
}
