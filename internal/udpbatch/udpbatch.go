// Package udpbatch wraps a *net.UDPConn so that writes from many goroutines
// leave the socket in batches, one sendmmsg(2) per batch, instead of one
// sendto(2) per packet.
//
// Batching is by group commit, with no timers: a write copies the packet into
// a pooled buffer, appends it to a per-destination-hashed shard queue and
// wakes that shard's flusher. The flusher takes everything queued and sends
// it; while it is in the syscall, new writes pile up for its next round. At
// low load a packet leaves after one goroutine wakeup; at high load batches
// grow by themselves. Packets to one destination always use the same shard,
// so their order is kept.
//
// A write returns once the packet is queued. Errors the kernel reports for a
// single packet (an unreachable network, port 0, ...) cannot reach the
// writer any more: the packet is dropped, counted in Stats and logged (rate
// limited). That is no weaker than UDP itself, where the packet can be lost a
// hop later without anyone hearing about it.
//
// On Linux (4.18 and later) the flusher also uses UDP generic segmentation
// offload (GSO, the UDP_SEGMENT control message): a run of packets queued
// back to back for the same destination, all of one length but the last
// (which may be shorter), goes to the kernel as one message, which the
// kernel (or the NIC) cuts into the original datagrams only at the end of
// the IP stack: one route lookup and one trip through the stack per run
// instead of per packet. A viewer's video frame is such a run. The receiver
// gets the datagrams exactly as written. Packets are never reordered for
// this; only neighbours in the queue are merged. A run the kernel refuses
// for its destination is dropped whole (each of its packets would have
// been); one it refuses for GSO's sake is sent again packet by packet.
//
// Batching is implemented on Linux only. Elsewhere Conn writes straight to
// the socket, so callers need no build tags.
package udpbatch

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero Options fields.
const (
	// DefaultQueueLen is the default number of packets a shard holds before
	// writers block: about 1.5 MB of 1500-byte packets per shard, or a few
	// milliseconds of a busy fan-out.
	DefaultQueueLen = 1024
	// DefaultMaxBatch is the default number of packets per sendmmsg. Beyond
	// a few dozen the per-syscall overhead is already amortized, and shorter
	// calls hold the socket less long.
	DefaultMaxBatch = 64
	// MaxBatchLimit is the largest batch the kernel accepts in one call
	// (UIO_MAXIOV); larger MaxBatch values are lowered to it.
	MaxBatchLimit = 1024
)

// closeFlushTimeout bounds how long Close waits for queued packets to get
// into a socket that stays unwritable.
const closeFlushTimeout = 2 * time.Second

// dropLogInterval is the minimum time between two drop log records.
const dropLogInterval = 5 * time.Second

// Options configures a Conn. The zero value is ready to use.
type Options struct {
	// Shards is the number of queues, each with its own flusher goroutine
	// and, on Linux, its own duplicate of the socket's descriptor (the
	// runtime serializes writes per descriptor; duplicates let flushers
	// send in parallel). 0 means runtime.GOMAXPROCS(0).
	Shards int
	// QueueLen is the number of packets a shard queues before writers
	// block until its flusher catches up. 0 means DefaultQueueLen.
	QueueLen int
	// MaxBatch is the number of messages per sendmmsg call: packets, or
	// with GSO runs of up to 64 packets sent as one. 0 means
	// DefaultMaxBatch; values above MaxBatchLimit are lowered to it.
	MaxBatch int
	// NoGSO turns UDP generic segmentation offload off: every packet is a
	// message of its own. By default GSO is used where the kernel supports
	// it (Linux 4.18 and later); it is also turned off by itself (logged
	// once) if the kernel or a NIC refuses it, without losing packets.
	// Linux only; elsewhere there is no GSO.
	NoGSO bool
	// Logger receives the (rate limited) reports of dropped packets and
	// the one-time notices about GSO. nil means slog.Default().
	Logger *slog.Logger
	// OnFlush, if set, is called by a flusher after each round with the
	// number of packets it took and how long the oldest of them waited,
	// from its write to the end of the round's last sendmmsg: the delay
	// batching adds, at most. It must be quick (it runs on the flusher).
	// Linux only.
	OnFlush func(packets int, wait time.Duration)
}

// Stats are the counters of a Conn since New. Packets still queued appear in
// none of them.
type Stats struct {
	// Sent is the number of packets the kernel accepted.
	Sent uint64
	// Batches is the number of send syscalls that sent at least one packet;
	// Sent/Batches is the mean batch size.
	Batches uint64
	// GSOSends is the number of messages the kernel accepted that carried
	// more than one packet (UDP GSO). Their packets are counted in Sent.
	// It stays 0 without GSO (Options.NoGSO, an old kernel, not Linux).
	GSOSends uint64
	// Dropped is the number of queued packets the kernel refused (a bad or
	// unreachable destination, a packet too big) or that could not be sent
	// before the socket failed or Close gave up on it.
	Dropped uint64
}

// Conn is a net.PacketConn that batches its writes. It also implements the
// allocation-free netip.AddrPort methods of *net.UDPConn and pion/ice's
// AddrPortReaderWriter. Reads, LocalAddr and the read deadline go straight to
// the wrapped socket.
//
// Conn owns the socket it wraps: close the Conn, not the socket.
type Conn struct {
	conn *net.UDPConn
	log  *slog.Logger

	closed    atomic.Bool   // set first thing in Close; writes fail after it
	done      chan struct{} // closed by Close; wakes writers waiting for queue space
	closeOnce sync.Once
	closeErr  error

	wdl     deadline     // write deadline, as seen by writers waiting for queue space
	lastLog atomic.Int64 // unix nanoseconds of the last drop log record

	batcher // platform specific
}

// New wraps conn. The Conn takes ownership of conn, which should not be used
// directly any more.
func New(conn *net.UDPConn, o Options) *Conn {
	c := &Conn{
		conn: conn,
		log:  o.Logger,
		done: make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.start(o)
	return c
}

// WriteTo queues p for addr, which must be a *net.UDPAddr (or another
// net.Addr whose String is "host:port" with a literal IP). It returns
// len(p) once the packet is queued; see the package documentation for what
// happens to errors after that.
func (c *Conn) WriteTo(p []byte, addr net.Addr) (int, error) {
	to, err := addrPortOf(addr)
	if err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.conn.LocalAddr(), Addr: addr, Err: err}
	}
	return c.WriteToUDPAddrPort(p, to)
}

// WriteToUDPAddrPort queues p for addr, like WriteTo, without allocating.
func (c *Conn) WriteToUDPAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	if c.closed.Load() {
		return 0, c.opError(addr, net.ErrClosed)
	}
	if c.wdl.exceeded() {
		return 0, c.opError(addr, os.ErrDeadlineExceeded)
	}
	if err := c.write(p, addr); err != nil {
		return 0, c.opError(addr, err)
	}
	return len(p), nil
}

// WriteToAddrPort implements pion/ice's AddrPortReaderWriter; it is
// WriteToUDPAddrPort.
func (c *Conn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	return c.WriteToUDPAddrPort(p, addr)
}

// ReadFrom reads from the socket.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) { return c.conn.ReadFrom(p) }

// ReadFromUDPAddrPort reads from the socket without allocating.
func (c *Conn) ReadFromUDPAddrPort(p []byte) (int, netip.AddrPort, error) {
	return c.conn.ReadFromUDPAddrPort(p)
}

// ReadFromAddrPort implements pion/ice's AddrPortReaderWriter; it is
// ReadFromUDPAddrPort.
func (c *Conn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	return c.conn.ReadFromUDPAddrPort(p)
}

// LocalAddr returns the socket's local address (a *net.UDPAddr).
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// SetReadDeadline sets the socket's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the time after which writes fail with a timeout
// (os.ErrDeadlineExceeded) instead of waiting for queue space. Like a
// socket deadline it also applies to writes already waiting, so
// SetWriteDeadline(time.Now()) releases them. Packets already queued are
// not affected.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opError(netip.AddrPort{}, net.ErrClosed)
	}
	c.wdl.set(t)
	return c.setConnWriteDeadline(t)
}

// SetDeadline sets both the read and the write deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// Close stops accepting writes (they fail with net.ErrClosed, including
// those waiting for queue space), sends what is queued (giving up on it
// after a few seconds if the socket stays unwritable), stops the flushers
// and closes the socket. Calls after the first do nothing and return nil.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.closeErr = c.stop()
	})
	return c.closeErr
}

// Stats returns the counters. It is safe to call at any time, also after
// Close.
func (c *Conn) Stats() Stats { return c.stats() }

func (c *Conn) opError(to netip.AddrPort, err error) error {
	var addr net.Addr
	if to.IsValid() {
		addr = net.UDPAddrFromAddrPort(to)
	}
	return &net.OpError{Op: "write", Net: "udp", Source: c.conn.LocalAddr(), Addr: addr, Err: err}
}

// logDrop reports dropped packets, at most once per dropLogInterval per
// Conn: a bad peer can fail every packet, and Stats has the totals. Keys:
// peer (the destination of the first dropped packet), err, count (packets
// dropped by this failure), dropped_total.
func (c *Conn) logDrop(err error, to netip.AddrPort, dropped int) {
	now := time.Now().UnixNano()
	last := c.lastLog.Load()
	if now-last < int64(dropLogInterval) || !c.lastLog.CompareAndSwap(last, now) {
		return
	}
	c.log.Warn("udpbatch: packets dropped",
		slog.String("peer", to.String()),
		slog.Any("err", err),
		slog.Int("count", dropped),
		slog.Uint64("dropped_total", c.stats().Dropped))
}

// waitSpace blocks until space is closed (the queue was drained), the Conn
// is closed, the write deadline passes or it is changed. A nil return means
// "try again".
func (c *Conn) waitSpace(space <-chan struct{}) error {
	changed, at := c.wdl.watch()
	var expired <-chan time.Time
	if at != 0 {
		d := time.Until(time.Unix(0, at))
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-space:
		return nil
	case <-changed:
		return nil
	case <-c.done:
		return net.ErrClosed
	case <-expired:
		return os.ErrDeadlineExceeded
	}
}

// deadline is a write deadline that waiting writers can watch for changes.
// The zero value means no deadline.
type deadline struct {
	at      atomic.Int64 // unix nanoseconds; 0 means none
	mu      sync.Mutex
	changed chan struct{} // closed on set; nil until someone watches
}

func (d *deadline) set(t time.Time) {
	var at int64
	if !t.IsZero() {
		at = t.UnixNano()
		if at == 0 {
			at = 1 // 0 means "none"; the epoch is in the past either way
		}
	}
	d.at.Store(at)
	d.mu.Lock()
	if d.changed != nil {
		close(d.changed)
		d.changed = nil
	}
	d.mu.Unlock()
}

// exceeded reports whether the deadline has passed. It reads the clock only
// when a deadline is set.
func (d *deadline) exceeded() bool {
	at := d.at.Load()
	return at != 0 && time.Now().UnixNano() >= at
}

// watch returns the deadline and a channel closed when it next changes.
func (d *deadline) watch() (changed <-chan struct{}, at int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.changed == nil {
		d.changed = make(chan struct{})
	}
	return d.changed, d.at.Load()
}

var errNoAddr = errors.New("no destination address")

// addrPortOf converts a destination without allocating for *net.UDPAddr.
func addrPortOf(addr net.Addr) (netip.AddrPort, error) {
	switch a := addr.(type) {
	case *net.UDPAddr:
		if a == nil {
			return netip.AddrPort{}, errNoAddr
		}
		return a.AddrPort(), nil
	case nil:
		return netip.AddrPort{}, errNoAddr
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("destination %q (%T) is not an IP address and port: %w", a.String(), a, err)
		}
		return ap, nil
	}
}
