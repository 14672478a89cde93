//go:build linux

package udpbatch

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needGSO skips the test on a kernel without UDP GSO (before 4.18).
func needGSO(t *testing.T, c *Conn) {
	t.Helper()
	if !c.gso.Load() {
		t.Skip("the kernel has no UDP GSO")
	}
}

// payload returns a packet of size bytes (at least 4) that says which
// destination and sequence number it is for, and whose every byte depends
// on both, so a datagram cut at the wrong place does not pass for another.
func payload(dst, seq, size int) []byte {
	p := make([]byte, size)
	binary.BigEndian.PutUint16(p[0:], uint16(dst))
	binary.BigEndian.PutUint16(p[2:], uint16(seq))
	for i := 4; i < size; i++ {
		p[i] = byte(dst*31 + seq*7 + i)
	}
	return p
}

// want is a datagram a receiver must get.
type want struct {
	to  int // receiver
	pkt []byte
}

// checkArrival reads, on each receiver, the datagrams ws has for it and
// fails unless they arrive in that order, with those exact bytes and
// lengths, and nothing more.
func checkArrival(t *testing.T, rxs []*net.UDPConn, ws []want) {
	t.Helper()
	for r, rx := range rxs {
		var exp [][]byte
		for _, w := range ws {
			if w.to == r {
				exp = append(exp, w.pkt)
			}
		}
		got := recvN(t, rx, len(exp), 5*time.Second)
		for i := range exp {
			if string(got[i]) != string(exp[i]) {
				t.Fatalf("receiver %d, datagram %d: got %d bytes (dst %d seq %d), want %d bytes (dst %d seq %d)",
					r, i, len(got[i]), binary.BigEndian.Uint16(got[i]), binary.BigEndian.Uint16(got[i][2:]),
					len(exp[i]), binary.BigEndian.Uint16(exp[i]), binary.BigEndian.Uint16(exp[i][2:]))
			}
		}
		expectNothing(t, rx, 20*time.Millisecond)
	}
}

// sendRound hands ws to the idle flusher of c's only shard as one round,
// the way flush does, so that the runs in it are known. Nothing may have
// been written to c.
func sendRound(t *testing.T, c *Conn, dsts []netip.AddrPort, ws []want) {
	t.Helper()
	pkts := make([]*packet, len(ws))
	for i, w := range ws {
		pk := getPacket(len(w.pkt))
		copy(pk.buf, w.pkt)
		if err := pk.setDest(c.family, dsts[w.to]); err != nil {
			t.Fatal(err)
		}
		pkts[i] = pk
	}
	c.shards[0].send(pkts)
	for _, pk := range pkts {
		putPacket(pk)
	}
}

// receivers opens n loopback receivers.
func receivers(t *testing.T, n int) ([]*net.UDPConn, []netip.AddrPort) {
	rxs := make([]*net.UDPConn, n)
	dsts := make([]netip.AddrPort, n)
	for i := range rxs {
		rxs[i] = listen(t, "udp4", "127.0.0.1:0")
		dsts[i] = addrOf(rxs[i])
	}
	return rxs, dsts
}

// frames is the fan-out's traffic in one round: for each of rounds, a video
// frame to receiver 0 (three 1200-byte packets and a 400-byte one), an
// audio packet to receiver 2, a frame to receiver 1 (five 1000-byte
// packets and a 37-byte one) and another audio packet to receiver 2. It returns the datagrams and the number of GSO messages they
// make: one per frame.
func frames(rounds int) (ws []want, gsoMsgs int) {
	seq := make([]int, 3)
	add := func(to, size int) {
		ws = append(ws, want{to, payload(to, seq[to], size)})
		seq[to]++
	}
	for range rounds {
		for range 3 {
			add(0, 1200)
		}
		add(0, 400)
		add(2, 160)
		for range 5 {
			add(1, 1000)
		}
		add(1, 37)
		add(2, 160)
		gsoMsgs += 2
	}
	return ws, gsoMsgs
}

// writeRound writes ws through c's public path as one flusher round: the
// flusher is held while they queue, after a first packet (to receiver 0,
// returned) that it takes alone.
func writeRound(t *testing.T, c *Conn, dsts []netip.AddrPort, ws []want) (first want) {
	t.Helper()
	s := c.shards[0]
	release := stallFlusher(t, s)
	defer release()
	first = want{0, payload(0, 9999, 50)}
	if _, err := c.WriteToUDPAddrPort(first.pkt, dsts[0]); err != nil {
		t.Fatal(err)
	}
	waitTaken(t, s)
	for _, w := range ws {
		if _, err := c.WriteToUDPAddrPort(w.pkt, dsts[w.to]); err != nil {
			t.Fatal(err)
		}
	}
	return first
}

// TestGSORunsArrive: frames (runs of equal packets and a shorter last one)
// to two destinations, interleaved with single packets to a third, written
// through the Conn in one round: every datagram arrives intact, with its
// length, in order per destination, and each frame left as one GSO message.
// Also on a dual-stack socket (IPv4 destinations as v4-mapped), as the
// bridge has it.
func TestGSORunsArrive(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{
		{"udp4", "127.0.0.1:0"},
		{"udp", ":0"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			c := New(listen(t, tc.network, tc.addr), Options{Shards: 1, Logger: quiet})
			defer c.Close()
			needGSO(t, c)
			rxs, dsts := receivers(t, 3)

			ws, gsoMsgs := frames(20)
			first := writeRound(t, c, dsts, ws)
			checkArrival(t, rxs, append([]want{first}, ws...))
			n := uint64(len(ws) + 1)
			st := waitStats(t, c, n)
			if st.Sent != n || st.Dropped != 0 || st.GSOSends != uint64(gsoMsgs) {
				t.Errorf("stats %+v, want %d sent, none dropped, %d GSO sends (one per frame)", st, n, gsoMsgs)
			}
			t.Logf("stats %+v", st)
		})
	}
}

// TestGSORunsArriveIPv6: the same to IPv6 loopback receivers.
func TestGSORunsArriveIPv6(t *testing.T) {
	uc, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	c := New(uc, Options{Shards: 1, Logger: quiet})
	defer c.Close()
	needGSO(t, c)
	rxs := make([]*net.UDPConn, 3)
	dsts := make([]netip.AddrPort, 3)
	for i := range rxs {
		rxs[i] = listen(t, "udp6", "[::1]:0")
		dsts[i] = addrOf(rxs[i])
	}
	ws, gsoMsgs := frames(5)
	first := writeRound(t, c, dsts, ws)
	checkArrival(t, rxs, append([]want{first}, ws...))
	n := uint64(len(ws) + 1)
	if st := waitStats(t, c, n); st.Sent != n || st.Dropped != 0 || st.GSOSends != uint64(gsoMsgs) {
		t.Errorf("stats %+v, want %d sent, none dropped, %d GSO sends", st, n, gsoMsgs)
	}
}

// TestGSOSizeChangesSplitRuns: only a last packet may be shorter, and none
// longer, so runs end where the size changes: a shorter packet in the
// middle ends its run (and is its last), a longer one starts a new run;
// empty packets are never in a run. The receiver sees each datagram with
// its own length.
func TestGSOSizeChangesSplitRuns(t *testing.T) {
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Shards: 1, Logger: quiet})
	defer c.Close()
	needGSO(t, c)
	rxs, dsts := receivers(t, 1)

	sizes := []int{
		1200, 1200, 1000, 1200, 1200, 1200, 500, // (1200 1200 1000) (1200 1200 1200 500)
		800, 900, 900, // (800) (900 900)
		300, 300, 300, 300, // (300 300 300 300)
		0, 0, 100, 0, 100, 100, 99, // (0) (0) (100) (0) (100 100 99)
		1400, 1399, 1400, // (1400 1399) (1400)
	}
	const wantGSO = 6
	var ws []want
	for i, n := range sizes {
		p := make([]byte, n)
		if n > 0 {
			p = payload(0, i, max(n, 4))[:n]
		}
		ws = append(ws, want{0, p})
	}
	sendRound(t, c, dsts, ws)
	got := recvN(t, rxs[0], len(ws), 5*time.Second)
	for i := range ws {
		if string(got[i]) != string(ws[i].pkt) {
			t.Errorf("datagram %d: %d bytes, want %d (%v)", i, len(got[i]), len(ws[i].pkt), got[i][:min(len(got[i]), 4)])
		}
	}
	expectNothing(t, rxs[0], 20*time.Millisecond)
	if st := c.Stats(); st.Sent != uint64(len(ws)) || st.Dropped != 0 || st.GSOSends != wantGSO || st.Batches != 1 {
		t.Errorf("stats %+v, want %d sent in 1 batch, %d GSO sends", st, len(ws), wantGSO)
	}
}

// TestGSOLimits: a run is cut at 64 packets (UDP_MAX_SEGMENTS) and at 65507
// bytes (one datagram's payload), and a run of packets too big for a
// 1500-byte MTU is not made.
func TestGSOLimits(t *testing.T) {
	for _, tc := range []struct {
		name        string
		count, size int
		wantGSO     uint64
	}{
		{"150x100B", 150, 100, 3},   // 64 + 64 + 22
		{"128x100B", 128, 100, 2},   // 64 + 64
		{"65x100B", 65, 100, 1},     // 64 + 1 alone
		{"66x100B", 66, 100, 2},     // 64 + 2
		{"100x1400B", 100, 1400, 3}, // 46 + 46 + 8 (47 x 1400 > 65507)
		{"46x1424B", 46, 1424, 1},   // 46 x 1424 = 65504
		{"47x1424B", 47, 1424, 1},   // 46 + 1 alone
		{"10x1452B", 10, gsoMaxSegment, 1},
		{"10x1453B", 10, gsoMaxSegment + 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Shards: 1, Logger: quiet})
			defer c.Close()
			needGSO(t, c)
			rxs, dsts := receivers(t, 1)
			var ws []want
			for i := range tc.count {
				ws = append(ws, want{0, payload(0, i, tc.size)})
			}
			sendRound(t, c, dsts, ws)
			checkArrival(t, rxs, ws)
			if st := c.Stats(); st.Sent != uint64(tc.count) || st.Dropped != 0 || st.GSOSends != tc.wantGSO {
				t.Errorf("stats %+v, want %d sent, %d GSO sends", st, tc.count, tc.wantGSO)
			}
		})
	}
}

// TestRunLen checks the run rule on its own.
func TestRunLen(t *testing.T) {
	a := netip.MustParseAddrPort("127.0.0.1:1000")
	b := netip.MustParseAddrPort("127.0.0.1:1001")
	mk := func(spec ...any) []*packet {
		var pkts []*packet
		to := a
		for _, x := range spec {
			switch x := x.(type) {
			case netip.AddrPort:
				to = x
			case int:
				pk := &packet{buf: make([]byte, x)}
				if err := pk.setDest(unix.AF_INET6, to); err != nil {
					t.Fatal(err)
				}
				pkts = append(pkts, pk)
			}
		}
		return pkts
	}
	for i, tc := range []struct {
		pkts []*packet
		max  int
		want int
	}{
		{mk(1200, 1200, 1200, 400, 1200), 64, 4},
		{mk(1200), 64, 1},
		{mk(1200, 1200, 1201), 64, 2},
		{mk(1200, 1300), 64, 1},
		{mk(1200, 1000, 1000), 64, 2},
		{mk(1200, 1200, b, 1200), 64, 2},
		{mk(a, 100, b, 100), 64, 1},
		{mk(100, 100, 100, 100), 3, 3},
		{mk(0, 0), 64, 1},
		{mk(100, 0), 64, 1},
		{mk(1, 1, 1), 64, 3},
		{mk(2000, 2000), 64, 1},
		{mk(1400, 1400, 1400), 2, 2},
	} {
		if got := runLen(tc.pkts, tc.max); got != tc.want {
			t.Errorf("case %d: runLen = %d, want %d", i, got, tc.want)
		}
	}
	// A pooled packet that last went to an IPv6 peer is encoded for an
	// IPv4 one exactly like a new packet.
	reused, fresh := &packet{buf: make([]byte, 100)}, &packet{buf: make([]byte, 100)}
	if err := reused.setDest(unix.AF_INET6, netip.MustParseAddrPort("[2001:db8:1:2:3:4:5:6]:7")); err != nil {
		t.Fatal(err)
	}
	for _, pk := range []*packet{reused, fresh} {
		if err := pk.setDest(unix.AF_INET, a); err != nil {
			t.Fatal(err)
		}
	}
	if got := runLen([]*packet{fresh, reused}, 64); got != 2 {
		t.Errorf("IPv4 destination of a reused packet: runLen = %d, want 2", got)
	}
	// An IPv4 destination and its v4-mapped form are one destination.
	pkts := mk(100, netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), 1000), 100)
	if got := runLen(pkts, 64); got != 2 {
		t.Errorf("IPv4 and v4-mapped: runLen = %d, want 2", got)
	}
}

// TestNoGSO: with Options.NoGSO every packet is a message of its own, and
// everything still arrives.
func TestNoGSO(t *testing.T) {
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Shards: 1, NoGSO: true, Logger: quiet})
	defer c.Close()
	if c.gso.Load() {
		t.Fatal("GSO on despite NoGSO")
	}
	rxs, dsts := receivers(t, 3)
	ws, _ := frames(20)
	first := writeRound(t, c, dsts, ws)
	checkArrival(t, rxs, append([]want{first}, ws...))
	n := uint64(len(ws) + 1)
	if st := waitStats(t, c, n); st.Sent != n || st.Dropped != 0 || st.GSOSends != 0 {
		t.Errorf("stats %+v, want %d sent, none dropped, no GSO sends", st, n)
	}
}

// logRecorder is a slog.Handler that keeps the records.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

// gsoOff returns the records that report GSO turned off, each with its err
// attribute.
func (h *logRecorder) gsoOff() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		if r.Message != "udpbatch: UDP GSO refused; sending packet by packet from now on" {
			continue
		}
		e := "<no err>"
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" {
				e = a.Value.String()
			}
			return true
		})
		out = append(out, e)
	}
	return out
}

// TestGSOFallback: the kernel refusing GSO messages (simulated) loses no
// packet. Errors that say GSO does not work turn it off for the Conn, logged
// once; EMSGSIZE only sends that run one by one; any other error is the
// destination's: the run is dropped, all of it counted.
func TestGSOFallback(t *testing.T) {
	for _, tc := range []struct {
		errno   syscall.Errno
		always  bool // fail every GSO message, not only the first
		off     bool // GSO must be off afterwards
		dropRun bool // the first run must be dropped
	}{
		{errno: unix.EIO, off: true},
		{errno: unix.EIO, always: true, off: true},
		{errno: unix.EOPNOTSUPP, off: true},
		{errno: unix.ENOPROTOOPT, off: true},
		{errno: unix.EINVAL, off: true},
		{errno: unix.EINVAL, always: true, off: true},
		{errno: unix.EMSGSIZE},
		{errno: unix.ENETUNREACH, dropRun: true},
		{errno: unix.ECONNREFUSED, dropRun: true},
	} {
		name := tc.errno.Error()
		if tc.always {
			name += "/always"
		}
		t.Run(name, func(t *testing.T) {
			logs := &logRecorder{}
			c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Shards: 1, Logger: slog.New(logs)})
			defer c.Close()
			needGSO(t, c)
			var faults atomic.Int32
			c.gsoFault = func() syscall.Errno {
				if faults.Add(1) == 1 || tc.always {
					return tc.errno
				}
				return 0
			}
			rxs, dsts := receivers(t, 3)

			ws, _ := frames(10)
			first := writeRound(t, c, dsts, ws)
			exp := append([]want{first}, ws...)
			n := uint64(len(exp))
			var dropped uint64
			if tc.dropRun {
				// The first run is the first frame to receiver 0.
				dropped = 4
				exp = slices.Delete(exp, 1, 5)
			}
			checkArrival(t, rxs, exp)
			st := waitStats(t, c, n)
			if st.Sent+st.Dropped != n || st.Dropped != dropped {
				t.Errorf("stats %+v, want %d sent and %d dropped", st, n-dropped, dropped)
			}
			if faults.Load() == 0 {
				t.Fatal("no GSO message was failed")
			}
			if got := c.gso.Load(); got == tc.off {
				t.Errorf("GSO on = %v after %v, want %v", got, tc.errno, !tc.off)
			}
			var wantLogs []string
			if tc.off {
				wantLogs = []string{tc.errno.Error()}
			}
			if got := logs.gsoOff(); !slices.Equal(got, wantLogs) {
				t.Errorf("GSO-off log records with err %q, want %q", got, wantLogs)
			}

			// Later rounds use GSO or not, as it stands now.
			before := c.Stats()
			ws2, gsoMsgs := frames(3)
			first = writeRound(t, c, dsts, ws2)
			checkArrival(t, rxs, append([]want{first}, ws2...))
			after := waitStats(t, c, n+uint64(len(ws2))+1)
			wantGSO := uint64(0)
			if !tc.off && !tc.always {
				wantGSO = uint64(gsoMsgs)
			}
			if d := after.GSOSends - before.GSOSends; d != wantGSO || after.Dropped != before.Dropped {
				t.Errorf("next round: %d GSO sends, %d dropped; want %d and none", d, after.Dropped-before.Dropped, wantGSO)
			}
		})
	}
}

// TestGSORunToBadDestination: a run the kernel refuses for its destination
// (port 0: EINVAL, the error GSO problems also give) is retried packet by
// packet, which fails the same way: all of it is dropped and counted, GSO
// stays on, and the packets around it arrive.
func TestGSORunToBadDestination(t *testing.T) {
	logs := &logRecorder{}
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Shards: 1, Logger: slog.New(logs)})
	defer c.Close()
	needGSO(t, c)
	rxs, dsts := receivers(t, 1)
	dsts = append(dsts, netip.AddrPortFrom(dsts[0].Addr(), 0))

	ws := []want{
		{0, payload(0, 0, 1200)}, {0, payload(0, 1, 1200)},
		{1, payload(1, 0, 1200)}, {1, payload(1, 1, 1200)}, {1, payload(1, 2, 700)},
		{0, payload(0, 2, 1200)}, {0, payload(0, 3, 300)},
	}
	sendRound(t, c, dsts, ws)
	checkArrival(t, rxs, slices.Concat(ws[:2], ws[5:]))
	if st := c.Stats(); st.Sent != 4 || st.Dropped != 3 || st.GSOSends != 2 {
		t.Errorf("stats %+v, want 4 sent in 2 GSO messages, 3 dropped", st)
	}
	if !c.gso.Load() || len(logs.gsoOff()) != 0 {
		t.Errorf("GSO turned off (%q) for a bad destination", logs.gsoOff())
	}
}

// TestGSOUnderConcurrentWriters: writers each sending whole frames to their
// own destinations through several shards, with GSO: every packet arrives,
// in order, with its length. Runs form only where a frame's packets queue
// back to back, so how many do is timing; it is logged.
func TestGSOUnderConcurrentWriters(t *testing.T) {
	const (
		writers   = 8
		perWriter = 4 // destinations
		framesN   = 200
		inFlight  = 64 // credits: fits any receive buffer
	)
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Shards: 2, QueueLen: 256, Logger: quiet})
	defer c.Close()
	needGSO(t, c)
	sizes := []int{1200, 1200, 1200, 400}
	rxs, dsts := receivers(t, writers*perWriter)

	var wg sync.WaitGroup
	errs := make(chan error, len(rxs)+writers)
	credits := make(chan struct{}, inFlight)
	for r, rx := range rxs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			_ = rx.SetReadDeadline(time.Now().Add(30 * time.Second))
			for i := range framesN * len(sizes) {
				n, _, err := rx.ReadFromUDPAddrPort(buf)
				if err != nil {
					errs <- fmt.Errorf("receiver %d: %d of %d packets: %v", r, i, framesN*len(sizes), err)
					return
				}
				<-credits
				if w := payload(r, i, sizes[i%len(sizes)]); string(buf[:n]) != string(w) {
					errs <- fmt.Errorf("receiver %d: packet %d has %d bytes, want %d (or wrong content)", r, i, n, len(w))
					return
				}
			}
		}()
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range framesN {
				for d := range perWriter {
					to := w*perWriter + d
					for k, size := range sizes {
						credits <- struct{}{}
						if _, err := c.WriteToUDPAddrPort(payload(to, f*len(sizes)+k, size), dsts[to]); err != nil {
							errs <- err
							return
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := uint64(len(rxs) * framesN * len(sizes))
	st := waitStats(t, c, total)
	if st.Sent != total || st.Dropped != 0 {
		t.Errorf("stats %+v, want %d sent", st, total)
	}
	t.Logf("stats %+v: %.0f%% of frames in one GSO message", st, 100*float64(st.GSOSends)/float64(total/uint64(len(sizes))))
}
