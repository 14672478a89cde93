//go:build linux

package udpbatch

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestMmsghdrLayout: struct mmsghdr is a msghdr plus an unsigned int,
// padded to the pointer size.
func TestMmsghdrLayout(t *testing.T) {
	want := uintptr(32)
	if unsafe.Sizeof(uintptr(0)) == 8 {
		want = 64
	}
	if got := unsafe.Sizeof(mmsghdr{}); got != want {
		t.Fatalf("sizeof(mmsghdr) = %d, want %d", got, want)
	}
}

// TestSocketFamily: destinations are encoded for the family the socket
// really has.
func TestSocketFamily(t *testing.T) {
	for _, tc := range []struct {
		network, addr string
		want          int
	}{
		{"udp4", "127.0.0.1:0", unix.AF_INET},
		{"udp", "127.0.0.1:0", unix.AF_INET},
		{"udp4", ":0", unix.AF_INET},
	} {
		if got := socketFamily(listen(t, tc.network, tc.addr)); got != tc.want {
			t.Errorf("%s %s: family %d, want %d", tc.network, tc.addr, got, tc.want)
		}
	}
	if uc := listen(t, "udp", ":0"); uc.LocalAddr().(*net.UDPAddr).IP.To4() == nil {
		if got := socketFamily(uc); got != unix.AF_INET6 {
			t.Errorf("udp :0 (%v): family %d, want AF_INET6", uc.LocalAddr(), got)
		}
	}
}

// TestRefusedPacketMidBatch hands one shard's send a batch whose middle
// packet the kernel refuses (port 0): the packets before and after it must
// go out, in two sendmmsg calls, and only it is counted as dropped.
func TestRefusedPacketMidBatch(t *testing.T) {
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Shards: 1, Logger: quiet})
	defer c.Close()
	rc := listen(t, "udp4", "127.0.0.1:0")
	dst := addrOf(rc)

	var pkts []*packet
	for i, to := range []netip.AddrPort{dst, dst, netip.AddrPortFrom(dst.Addr(), 0), dst, dst} {
		pk := getPacket(1)
		pk.buf[0] = byte(i)
		if err := pk.setDest(c.family, to); err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, pk)
	}
	// The flusher is idle (nothing was written), so the test may use the
	// shard's flusher-only state.
	c.shards[0].send(pkts)

	for i, p := range recvN(t, rc, 4, 5*time.Second) {
		if want := []byte{0, 1, 3, 4}[i]; p[0] != want {
			t.Errorf("packet %d is #%d, want #%d", i, p[0], want)
		}
	}
	want := Stats{Sent: 4, Batches: 2, Dropped: 1}
	if c.gso.Load() {
		want.GSOSends = 2 // #0 and #1, #3 and #4: 1-byte runs to dst
	}
	if st := c.Stats(); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
}

// stallFlusher holds the write lock of the shard's descriptor, so its
// flusher blocks on its next send, until the returned func is called. Defer
// that func too (after deferring Close), or a failing test hangs in Close.
func stallFlusher(t *testing.T, s *shard) (release func()) {
	t.Helper()
	held, done := make(chan struct{}), make(chan struct{})
	rc, err := s.wc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = rc.Write(func(uintptr) bool {
			close(held)
			<-done
			return true
		})
	}()
	<-held
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// waitTaken waits until the flusher has taken the queue (and is stuck
// sending it).
func waitTaken(t *testing.T, s *shard) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		s.mu.Lock()
		n := len(s.queue)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("flusher did not take the queue (%d packets)", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// blockedWrite starts a write that should block on a full queue and checks
// that it does.
func blockedWrite(t *testing.T, c *Conn, dst netip.AddrPort, p []byte) <-chan error {
	t.Helper()
	res := make(chan error, 1)
	go func() {
		_, err := c.WriteToUDPAddrPort(p, dst)
		res <- err
	}()
	select {
	case err := <-res:
		t.Fatalf("write to a full queue returned at once: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	return res
}

func waitErr(t *testing.T, res <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: still blocked", what)
		return nil
	}
}

// TestCloseFlushesQueueAndReleasesBlockedWriter: with the flusher stuck and
// the queue full, Close must release the blocked writer (net.ErrClosed)
// right away, then wait for the queue to go out before closing the socket.
func TestCloseFlushesQueueAndReleasesBlockedWriter(t *testing.T) {
	const qlen = 4
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Shards: 1, QueueLen: qlen, Logger: quiet})
	s := c.shards[0]
	rc := listen(t, "udp4", "127.0.0.1:0")
	dst := addrOf(rc)

	release := stallFlusher(t, s)
	defer c.Close()
	defer release()
	if _, err := c.WriteToUDPAddrPort([]byte{0}, dst); err != nil {
		t.Fatal(err)
	}
	waitTaken(t, s)
	for i := 1; i <= qlen; i++ {
		if _, err := c.WriteToUDPAddrPort([]byte{byte(i)}, dst); err != nil {
			t.Fatal(err)
		}
	}
	blocked := blockedWrite(t, c, dst, []byte{99})

	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	if err := waitErr(t, blocked, "writer blocked on a full queue during Close"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("blocked writer got %v, want net.ErrClosed", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before the queued packets were sent", err)
	case <-time.After(50 * time.Millisecond):
	}

	release()
	if err := waitErr(t, closed, "Close"); err != nil {
		t.Errorf("Close: %v", err)
	}
	for i, p := range recvN(t, rc, qlen+1, 5*time.Second) {
		if p[0] != byte(i) {
			t.Errorf("packet %d is #%d", i, p[0])
		}
	}
	expectNothing(t, rc, 50*time.Millisecond)
	if st := c.Stats(); st != (Stats{Sent: qlen + 1, Batches: st.Batches, Dropped: 0, GSOSends: st.GSOSends}) || st.Batches == 0 {
		t.Errorf("stats %+v, want %d sent, none dropped", st, qlen+1)
	}
	if _, err := c.WriteToUDPAddrPort([]byte("late"), dst); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v, want net.ErrClosed", err)
	}
}

// TestWriteDeadlineReleasesBlockedWriter: a writer blocked on a full queue
// honors the write deadline, both one set before (a timer) and one set while
// it waits (what pion's mux does to abort writes: SetWriteDeadline(now)).
func TestWriteDeadlineReleasesBlockedWriter(t *testing.T) {
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Shards: 1, QueueLen: 1, Logger: quiet})
	defer c.Close()
	s := c.shards[0]
	rc := listen(t, "udp4", "127.0.0.1:0")
	dst := addrOf(rc)

	release := stallFlusher(t, s)
	defer release()
	if _, err := c.WriteToUDPAddrPort([]byte{0}, dst); err != nil {
		t.Fatal(err)
	}
	waitTaken(t, s)
	if _, err := c.WriteToUDPAddrPort([]byte{1}, dst); err != nil {
		t.Fatal(err)
	}

	isTimeout := func(err error) bool {
		var ne net.Error
		return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
	}

	blocked := blockedWrite(t, c, dst, []byte{98})
	if err := c.SetWriteDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, blocked, "SetWriteDeadline(now)"); !isTimeout(err) {
		t.Errorf("after SetWriteDeadline(now): %v, want a timeout", err)
	}
	if _, err := c.WriteToUDPAddrPort([]byte{97}, dst); !isTimeout(err) {
		t.Errorf("write past the deadline: %v, want a timeout", err)
	}

	if err := c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := waitErr(t, blockedWrite(t, c, dst, []byte{96}), "deadline in 100ms"); !isTimeout(err) {
		t.Errorf("deadline in 100ms: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Errorf("timed out after %v, before the deadline", d)
	}

	// Without a deadline a blocked writer goes on once the queue drains.
	if err := c.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	blocked = blockedWrite(t, c, dst, []byte{2})
	release()
	if err := waitErr(t, blocked, "writer after the flusher resumed"); err != nil {
		t.Errorf("write after the flusher resumed: %v", err)
	}
	for i, p := range recvN(t, rc, 3, 5*time.Second) {
		if p[0] != byte(i) {
			t.Errorf("packet %d is #%d", i, p[0])
		}
	}
}

// TestWriteDoesNotAllocate: the steady-state write path (pooled buffer,
// preallocated queues) allocates nothing.
func TestWriteDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items on purpose")
	}
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Logger: quiet})
	defer c.Close()
	rc := listen(t, "udp4", "127.0.0.1:0")
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := rc.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
		}
	}()
	dst := addrOf(rc)
	pkt := make([]byte, 1200)
	binary.BigEndian.PutUint32(pkt, 1)
	allocs := testing.AllocsPerRun(10000, func() {
		if _, err := c.WriteToUDPAddrPort(pkt, dst); err != nil {
			t.Fatal(err)
		}
	})
	if allocs >= 0.01 {
		t.Errorf("%.3f allocations per write, want 0", allocs)
	}
}

// TestSocketStaysNonBlocking: duplicating the descriptor for the flushers
// must leave the socket in non-blocking mode (the flag is shared by all
// duplicates), or EAGAIN handling would turn into blocked threads.
func TestSocketStaysNonBlocking(t *testing.T) {
	uc := listen(t, "udp", ":0")
	c := New(uc, Options{Shards: 3, Logger: quiet})
	defer c.Close()
	for i, s := range c.shards {
		if s.wc == uc {
			t.Errorf("shard %d shares the original descriptor", i)
		}
		rc, err := s.wc.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var flags int
		var ferr error
		if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil || ferr != nil {
			t.Fatal(err, ferr)
		}
		if flags&unix.O_NONBLOCK == 0 {
			t.Errorf("shard %d: descriptor is blocking", i)
		}
	}
}

// TestOnFlush: every packet is in exactly one reported round, and each
// round reports how long its oldest packet waited.
func TestOnFlush(t *testing.T) {
	var mu sync.Mutex
	var packets, rounds int
	var waited time.Duration
	c := New(listen(t, "udp4", "127.0.0.1:0"), Options{Shards: 1, OnFlush: func(n int, wait time.Duration) {
		mu.Lock()
		packets += n
		rounds++
		waited = max(waited, wait)
		mu.Unlock()
	}})
	defer c.Close()
	rx := listen(t, "udp4", "127.0.0.1:0")
	to := addrOf(rx)
	const n = 300
	for i := range n {
		if _, err := c.WriteToUDPAddrPort([]byte{byte(i)}, to); err != nil {
			t.Fatal(err)
		}
	}
	recvN(t, rx, n, 5*time.Second)
	waitStats(t, c, n)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		p, r, w := packets, rounds, waited
		mu.Unlock()
		if p == n {
			if r == 0 || w <= 0 {
				t.Errorf("%d rounds, longest wait %v: want at least one round and a positive wait", r, w)
			}
			t.Logf("%d packets in %d rounds, longest wait %v", p, r, w)
			return
		}
		if p > n || time.Now().After(deadline) {
			t.Fatalf("OnFlush reported %d packets in %d rounds, want %d", p, r, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
