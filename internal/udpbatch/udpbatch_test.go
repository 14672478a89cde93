package udpbatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
)

// Conn must stay usable as ice.UDPMuxDefault's socket with the
// allocation-free path: ice checks for exactly this interface.
var (
	_ net.PacketConn           = (*Conn)(nil)
	_ ice.AddrPortReaderWriter = (*Conn)(nil)
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// listen opens a UDP socket with a receive buffer big enough that loopback
// does not drop what the tests send.
func listen(t testing.TB, network, addr string) *net.UDPConn {
	t.Helper()
	la, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		t.Fatalf("resolve %s %s: %v", network, addr, err)
	}
	c, err := net.ListenUDP(network, la)
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.SetReadBuffer(4 << 20); err != nil {
		t.Fatalf("SO_RCVBUF: %v", err)
	}
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// recvN reads n packets or fails after timeout.
func recvN(t testing.TB, c *net.UDPConn, n int, timeout time.Duration) [][]byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	var got [][]byte
	buf := make([]byte, 1<<16)
	for len(got) < n {
		m, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("received %d of %d packets: %v", len(got), n, err)
		}
		got = append(got, append([]byte(nil), buf[:m]...))
	}
	return got
}

// expectNothing fails if c receives a packet within d.
func expectNothing(t testing.TB, c *net.UDPConn, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, 1<<16)
	if n, from, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("unexpected packet %q from %v", buf[:n], from)
	}
}

// waitStats polls until the Conn has dealt with (sent or dropped) n packets.
func waitStats(t testing.TB, c *Conn, n uint64) Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := c.Stats()
		if st.Sent+st.Dropped >= n || time.Now().After(deadline) {
			return st
		}
		time.Sleep(time.Millisecond)
	}
}

// TestConcurrentWritersKeepOrder: many goroutines writing to several
// destinations through few, small shards (so writers also block on full
// queues). Every packet must arrive, and per (writer, destination) in the
// order written.
func TestConcurrentWritersKeepOrder(t *testing.T) {
	const (
		writers   = 32
		perWriter = 2000
		receivers = 8
		inFlight  = 1024 // credits: keeps receiver buffers from overflowing
		total     = writers * perWriter
	)
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Shards: 4, QueueLen: 64, Logger: quiet})
	defer c.Close()

	credits := make(chan struct{}, inFlight)
	var (
		dsts     [receivers]netip.AddrPort
		rwg      sync.WaitGroup
		mu       sync.Mutex
		problems []string
		got      int
	)
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	for d := range receivers {
		rc := listen(t, "udp4", "127.0.0.1:0")
		dsts[d] = addrOf(rc)
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			var next [writers]uint32
			want := total / receivers
			buf := make([]byte, 2048)
			_ = rc.SetReadDeadline(time.Now().Add(60 * time.Second))
			for i := 0; i < want; i++ {
				n, _, err := rc.ReadFromUDPAddrPort(buf)
				if err != nil {
					report("receiver %d: got %d of %d packets: %v", d, i, want, err)
					return
				}
				<-credits
				if n != 100 {
					report("receiver %d: packet of %d bytes, want 100", d, n)
					continue
				}
				w := binary.BigEndian.Uint16(buf[0:])
				dst := binary.BigEndian.Uint16(buf[2:])
				seq := binary.BigEndian.Uint32(buf[4:])
				if int(dst) != d || int(w) >= writers {
					report("receiver %d: packet for writer %d destination %d", d, w, dst)
					continue
				}
				if seq != next[w] {
					report("receiver %d: writer %d: seq %d, want %d (reordered or lost)", d, w, seq, next[w])
				}
				next[w] = seq + 1
				mu.Lock()
				got++
				mu.Unlock()
			}
		}()
	}

	var wwg sync.WaitGroup
	for w := range writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			var seq [receivers]uint32
			pkt := make([]byte, 100)
			for i := range perWriter {
				d := (w + i) % receivers
				binary.BigEndian.PutUint16(pkt[0:], uint16(w))
				binary.BigEndian.PutUint16(pkt[2:], uint16(d))
				binary.BigEndian.PutUint32(pkt[4:], seq[d])
				seq[d]++
				credits <- struct{}{}
				if n, err := c.WriteToUDPAddrPort(pkt, dsts[d]); err != nil || n != len(pkt) {
					report("writer %d: write %d: n=%d err=%v", w, i, n, err)
					<-credits
					return
				}
			}
		}()
	}
	wwg.Wait()
	rwg.Wait()

	// The flusher counts a batch after its sendmmsg returns, which can be
	// after the receivers have read it.
	st := waitStats(t, c, total)
	t.Logf("%d packets in %d sendmmsg calls (%.1f per call, %d GSO messages), %d dropped", st.Sent, st.Batches, float64(st.Sent)/float64(max(st.Batches, 1)), st.GSOSends, st.Dropped)
	for _, p := range problems {
		t.Error(p)
	}
	if got != total {
		t.Errorf("received %d packets, want %d", got, total)
	}
	if st.Sent != total || st.Dropped != 0 {
		t.Errorf("stats %+v, want %d sent and none dropped", st, total)
	}
	if st.Batches == 0 || st.Batches > st.Sent {
		t.Errorf("stats %+v: batches out of range", st)
	}
}

// TestBadDestinationAmongGoodOnes: a packet to port 0 (the kernel refuses
// it) between good ones is dropped and counted alone; an IPv6 destination on
// an IPv4 socket is refused at the write, before it is queued.
func TestBadDestinationAmongGoodOnes(t *testing.T) {
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Shards: 1, Logger: quiet})
	defer c.Close()
	rc := listen(t, "udp4", "127.0.0.1:0")
	dst := addrOf(rc)
	bad := netip.AddrPortFrom(dst.Addr(), 0)

	const n = 200
	for i := range n {
		switch i {
		case n / 4:
			_, err := c.WriteToUDPAddrPort([]byte("v6"), netip.MustParseAddrPort("[2001:db8::1]:9"))
			if err == nil {
				t.Error("IPv6 destination on an IPv4 socket: no error")
			} else {
				t.Logf("IPv6 on udp4: %v", err)
			}
		case n / 2:
			if _, err := c.WriteToUDPAddrPort([]byte("port 0"), bad); err != nil {
				t.Fatalf("queuing a packet to port 0: %v", err)
			}
		}
		if _, err := c.WriteToUDPAddrPort(binary.BigEndian.AppendUint32(nil, uint32(i)), dst); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	for i, p := range recvN(t, rc, n, 5*time.Second) {
		if got := binary.BigEndian.Uint32(p); got != uint32(i) {
			t.Fatalf("packet %d carries %d", i, got)
		}
	}
	if st := waitStats(t, c, n+1); st.Sent != n || st.Dropped != 1 {
		t.Errorf("stats %+v, want %d sent and 1 dropped", st, n)
	}
}

// TestIPv4OnDualStackSocket: a "udp" socket on the wildcard address is
// IPv6; IPv4 destinations, in every form they come in, must reach IPv4
// peers, and IPv6 ones IPv6 peers.
func TestIPv4OnDualStackSocket(t *testing.T) {
	uc := listen(t, "udp", ":0")
	if la := uc.LocalAddr().(*net.UDPAddr); la.IP.To4() != nil {
		t.Skipf("no IPv6 on this host: %q is bound to %v", ":0", la)
	}
	c := New(uc, Options{Logger: quiet})
	defer c.Close()
	port := addrOf(uc).Port()

	r4 := listen(t, "udp4", "127.0.0.1:0")
	p4 := addrOf(r4).Port()
	writes := []func() (int, error){
		func() (int, error) {
			return c.WriteToUDPAddrPort([]byte("plain"), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p4))
		},
		func() (int, error) {
			return c.WriteToUDPAddrPort([]byte("mapped"), netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), p4))
		},
		func() (int, error) {
			return c.WriteTo([]byte("udpaddr16"), &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: int(p4)})
		},
		func() (int, error) {
			return c.WriteTo([]byte("udpaddr4"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1).To4(), Port: int(p4)})
		},
	}
	for _, w := range writes {
		if _, err := w(); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	_ = r4.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	for i := range writes {
		n, from, err := r4.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("IPv4 packet %d of %d: %v", i+1, len(writes), err)
		}
		if from.Port() != port {
			t.Errorf("%q came from %v, want port %d", buf[:n], from, port)
		}
	}

	r6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Logf("no IPv6 loopback, IPv6 destination not tested: %v", err)
		return
	}
	defer r6.Close()
	if _, err := c.WriteToUDPAddrPort([]byte("v6"), addrOf(r6)); err != nil {
		t.Fatalf("IPv6 write: %v", err)
	}
	if got := recvN(t, r6, 1, 5*time.Second); string(got[0]) != "v6" {
		t.Errorf("IPv6 peer got %q", got[0])
	}
}

// TestLargeAndEmptyPackets: packets beyond the pooled size and empty ones
// go out intact; one the kernel cannot send is dropped and counted.
func TestLargeAndEmptyPackets(t *testing.T) {
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Logger: quiet})
	defer c.Close()
	rc := listen(t, "udp4", "127.0.0.1:0")
	dst := addrOf(rc)

	big := make([]byte, 9000)
	for i := range big {
		big[i] = byte(i * 7)
	}
	for _, p := range [][]byte{big, {}, make([]byte, 70000), []byte("after")} {
		if _, err := c.WriteToUDPAddrPort(p, dst); err != nil {
			t.Fatalf("write %d bytes: %v", len(p), err)
		}
	}
	got := recvN(t, rc, 3, 5*time.Second)
	if string(got[0]) != string(big) {
		t.Errorf("9000-byte packet arrived as %d bytes or corrupted", len(got[0]))
	}
	if len(got[1]) != 0 || string(got[2]) != "after" {
		t.Errorf("got %d-byte and %q packets, want empty and \"after\"", len(got[1]), got[2])
	}
	if st := waitStats(t, c, 4); st.Sent != 3 || st.Dropped != 1 {
		t.Errorf("stats %+v, want 3 sent and the oversized one dropped", st)
	}
}

// TestWriteAfterClose: Close is idempotent and later writes fail with
// net.ErrClosed; what was written before Close arrives.
func TestWriteAfterClose(t *testing.T) {
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Logger: quiet})
	rc := listen(t, "udp4", "127.0.0.1:0")
	dst := addrOf(rc)
	const n = 500
	for i := range n {
		if _, err := c.WriteToUDPAddrPort([]byte{byte(i)}, dst); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	recvN(t, rc, n, 5*time.Second)
	if st := c.Stats(); st.Sent != n {
		t.Errorf("stats after Close %+v, want %d sent", st, n)
	}
	if _, err := c.WriteToUDPAddrPort([]byte("late"), dst); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteToUDPAddrPort after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.WriteTo([]byte("late"), net.UDPAddrFromAddrPort(dst)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteTo after Close: %v, want net.ErrClosed", err)
	}
	if _, _, err := c.ReadFrom(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadFrom after Close: %v, want net.ErrClosed", err)
	}
	expectNothing(t, rc, 50*time.Millisecond)
}

// stunBindingRequest builds a minimal STUN Binding request carrying
// USERNAME, which is what UDPMuxDefault routes a new peer by.
func stunBindingRequest(username string) []byte {
	padded := (len(username) + 3) &^ 3
	b := make([]byte, 20+4+padded)
	binary.BigEndian.PutUint16(b[0:], 0x0001)                 // Binding request
	binary.BigEndian.PutUint16(b[2:], uint16(4+padded))       // message length
	binary.BigEndian.PutUint32(b[4:], 0x2112A442)             // magic cookie
	copy(b[8:20], "udpbatchtest")                             // transaction ID
	binary.BigEndian.PutUint16(b[20:], 0x0006)                // USERNAME
	binary.BigEndian.PutUint16(b[22:], uint16(len(username))) // attribute length
	copy(b[24:], username)
	return b
}

// TestICEUDPMuxUsesAddrPortPath: under pion's UDP mux, the per-peer conns
// must expose the netip.AddrPort methods (ice only does that when the socket
// implements AddrPortReaderWriter), and packets must flow both ways.
func TestICEUDPMuxUsesAddrPortPath(t *testing.T) {
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Logger: quiet})
	mux := ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: c})
	defer mux.Close()

	pc, err := mux.GetConn("ufrag", mux.LocalAddr())
	if err != nil {
		t.Fatalf("GetConn: %v", err)
	}
	defer pc.Close()
	apc, ok := pc.(ice.AddrPortReaderWriter)
	if !ok {
		t.Fatalf("mux conn %T lacks AddrPortReaderWriter: ice did not take the allocation-free path", pc)
	}

	peer := listen(t, "udp4", "127.0.0.1:0")
	req := stunBindingRequest("ufrag:peer")
	if _, err := peer.WriteToUDPAddrPort(req, addrOf(c.conn)); err != nil {
		t.Fatalf("peer write: %v", err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := apc.ReadFromAddrPort(buf)
	if err != nil {
		t.Fatalf("read through the mux: %v", err)
	}
	if string(buf[:n]) != string(req) || from.Port() != addrOf(peer).Port() {
		t.Fatalf("mux delivered %d bytes from %v, want the request from %v", n, from, addrOf(peer))
	}
	if _, err := apc.WriteToAddrPort([]byte("media"), from); err != nil {
		t.Fatalf("write through the mux: %v", err)
	}
	if got := recvN(t, peer, 1, 5*time.Second); string(got[0]) != "media" {
		t.Errorf("peer got %q", got[0])
	}
	if st := waitStats(t, c, 1); st.Sent != 1 {
		t.Errorf("stats %+v: the mux write did not go through the batcher", st)
	}

	_ = mux.Close() // closes the socket: the Conn
	if _, err := c.WriteToUDPAddrPort([]byte("late"), from); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after mux Close: %v, want net.ErrClosed", err)
	}
}

// TestCloseRightAfterWrites: packets written just before Close arrive even
// when the flusher has not woken up for them yet.
func TestCloseRightAfterWrites(t *testing.T) {
	rc := listen(t, "udp4", "127.0.0.1:0")
	dst := addrOf(rc)
	const rounds, n = 100, 10
	for r := range rounds {
		c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Logger: quiet})
		for i := range n {
			if _, err := c.WriteToUDPAddrPort([]byte{byte(r), byte(i)}, dst); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if st := c.Stats(); st.Sent != n {
			t.Fatalf("round %d: stats after Close %+v, want %d sent", r, st, n)
		}
		for i, p := range recvN(t, rc, n, 5*time.Second) {
			if p[0] != byte(r) || p[1] != byte(i) {
				t.Fatalf("round %d: packet %d is %v", r, i, p)
			}
		}
	}
}
