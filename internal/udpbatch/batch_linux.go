//go:build linux

package udpbatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/wishbridge/bridge/internal/panics"
)

// batcher is the Linux part of Conn: the shards and their flushers.
type batcher struct {
	family int         // AF_INET or AF_INET6: the sockaddr kind the socket takes
	gso    atomic.Bool // send runs of packets as one message (UDP_SEGMENT)
	shards []*shard
	wg     sync.WaitGroup // flushers

	// gsoFault, if set (by tests, before the first write), is asked about
	// each GSO message before it is sent; an errno other than 0 fails that
	// message as if the kernel had refused it.
	gsoFault func() syscall.Errno
}

// UDP GSO limits.
const (
	// gsoMaxSegments is the most packets one GSO message carries:
	// UDP_MAX_SEGMENTS, 64 on every kernel that has GSO (later ones allow
	// more).
	gsoMaxSegments = 64
	// gsoMaxBytes is the most bytes one GSO message carries: the payload
	// of the largest IPv4 datagram, 65535 - 20 - 8.
	gsoMaxBytes = 65507
	// gsoMaxSegment is the largest packet sent with GSO: the kernel refuses
	// segments (with headers) larger than the route's MTU, where a plain
	// send would fragment. 1452 fits a 1500-byte MTU with IPv6 headers;
	// WebRTC packets are smaller (about 1200 bytes), larger ones are rare
	// and go out one by one.
	gsoMaxSegment = 1500 - 40 - 8
)

// gsoCmsgSpace is the room of one UDP_SEGMENT control message (a uint16
// segment size); gsoCmsgData is the offset of its data.
var (
	gsoCmsgSpace = unix.CmsgSpace(2)
	gsoCmsgData  = unix.CmsgLen(0)
)

func (c *Conn) start(o Options) {
	n := o.Shards
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	qlen := o.QueueLen
	if qlen <= 0 {
		qlen = DefaultQueueLen
	}
	maxBatch := o.MaxBatch
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	maxBatch = min(maxBatch, MaxBatchLimit)

	c.family = socketFamily(c.conn)
	if !o.NoGSO {
		if err := probeGSO(c.conn); err != nil {
			c.log.Info("udpbatch: no UDP GSO (Linux 4.18 or later); sending packet by packet", slog.Any("err", err))
		} else {
			c.gso.Store(true)
		}
	}
	c.shards = make([]*shard, n)
	for i := range c.shards {
		s := &shard{
			c:       c,
			wc:      c.dupConn(),
			wake:    make(chan struct{}, 1),
			onFlush: o.OnFlush,
			queue:   make([]*packet, 0, qlen),
			spare:   make([]*packet, 0, qlen),
			msgs:    make([]mmsghdr, maxBatch),
			// One iovec per packet of a sendmmsg: a round (at most
			// qlen packets) needs no more.
			iovs:  make([]unix.Iovec, min(qlen, maxBatch*gsoMaxSegments)),
			ctrl:  gsoControl(maxBatch),
			retry: make([]mmsghdr, gsoMaxSegments),
		}
		s.rc = mustRawConn(s.wc)
		s.sendFn = s.sendmmsg // one closure per shard, not one per syscall
		c.shards[i] = s
		c.wg.Add(1)
		go s.run()
	}
}

// dupConn returns a duplicate of the socket for one flusher. Each has its
// own descriptor and so its own write lock in the runtime: the flushers of
// different shards can be in sendmmsg at the same time. If the descriptor
// cannot be duplicated (out of descriptors), the flusher shares the
// original, which only costs that parallelism.
func (c *Conn) dupConn() *net.UDPConn {
	f, err := c.conn.File()
	if err != nil {
		c.log.Warn("udpbatch: cannot duplicate the socket; flushers will share it", slog.Any("err", err))
		return c.conn
	}
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		c.log.Warn("udpbatch: cannot duplicate the socket; flushers will share it", slog.Any("err", err))
		return c.conn
	}
	return pc.(*net.UDPConn) // a UDP socket's duplicate is one too
}

// probeGSO reports whether the kernel knows UDP_SEGMENT. One that does not
// (before 4.18) would ignore the control message and send each run as one
// datagram, so this is asked before any is sent.
func probeGSO(uc *net.UDPConn) error {
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, serr = unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		return err
	}
	return serr
}

// gsoControl returns n UDP_SEGMENT control messages back to back, one per
// mmsghdr, with only the segment size left to fill in. The buffer is made
// of uint64s so that every cmsghdr in it is aligned.
func gsoControl(n int) []byte {
	size := n * gsoCmsgSpace
	buf := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(make([]uint64, (size+7)/8)))), size)
	for off := 0; off < size; off += gsoCmsgSpace {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&buf[off]))
		h.Level = unix.SOL_UDP
		h.Type = unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
	}
	return buf
}

// disableGSO turns GSO off for good after the kernel refused it, and says
// so once.
func (c *Conn) disableGSO(err error) {
	if c.gso.CompareAndSwap(true, false) {
		c.log.Warn("udpbatch: UDP GSO refused; sending packet by packet from now on", slog.Any("err", err))
	}
}

func mustRawConn(uc *net.UDPConn) syscall.RawConn {
	rc, err := uc.SyscallConn()
	if err != nil {
		// Only fails for a nil or closed *net.UDPConn; the writes would
		// fail the same way.
		panic(fmt.Sprintf("udpbatch: socket has no raw access: %v", err))
	}
	return rc
}

// socketFamily returns the address family of the socket, which decides how
// destinations are encoded: a "udp" socket bound to a wildcard is AF_INET6
// (dual stack) and takes IPv4 destinations as v4-mapped addresses.
func socketFamily(uc *net.UDPConn) int {
	family := unix.AF_INET6
	if rc, err := uc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			if sa, err := unix.Getsockname(int(fd)); err == nil {
				if _, ok := sa.(*unix.SockaddrInet4); ok {
					family = unix.AF_INET
				}
			}
		})
	}
	return family
}

func (c *Conn) write(p []byte, to netip.AddrPort) error {
	pk := getPacket(len(p))
	if err := pk.setDest(c.family, to); err != nil {
		putPacket(pk)
		return err
	}
	copy(pk.buf, p)
	if err := c.shards[shardIndex(to, len(c.shards))].push(pk); err != nil {
		putPacket(pk)
		return err
	}
	return nil
}

func (c *Conn) stop() error {
	for _, s := range c.shards {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
	}
	close(c.done)
	// Bound the final flush: a flusher parked on an unwritable socket
	// gives up at this deadline (and counts the rest as dropped). Nothing
	// else sets a write deadline on the flushers' descriptors.
	limit := time.Now().Add(closeFlushTimeout)
	for _, s := range c.shards {
		_ = s.wc.SetWriteDeadline(limit)
	}
	c.wg.Wait()
	for _, s := range c.shards {
		if s.wc != c.conn {
			_ = s.wc.Close()
		}
	}
	return c.conn.Close()
}

func (c *Conn) stats() Stats {
	var st Stats
	for _, s := range c.shards {
		st.Sent += s.sent.Load()
		st.Batches += s.batches.Load()
		st.Dropped += s.dropped.Load()
		st.GSOSends += s.gsoSends.Load()
	}
	return st
}

// setConnWriteDeadline does nothing: the socket is written by the flushers
// on behalf of every writer, so a writer's deadline must not fail other
// writers' packets. Writers see the deadline while they wait for queue space.
func (c *Conn) setConnWriteDeadline(time.Time) error { return nil }

// shard is one queue and its flusher.
type shard struct {
	c       *Conn
	wc      *net.UDPConn // this flusher's descriptor
	rc      syscall.RawConn
	wake    chan struct{} // cap 1: "the queue went from empty to non-empty"
	onFlush func(packets int, wait time.Duration)

	mu     sync.Mutex
	queue  []*packet     // cap is QueueLen; never grows
	since  time.Time     // when the queue last went from empty to non-empty (with OnFlush)
	space  chan struct{} // closed when the flusher takes the queue; nil while nobody waits for space
	closed bool

	// Flusher only.
	spare  []*packet // the previous round's queue, empty, to swap in
	msgs   []mmsghdr
	iovs   []unix.Iovec // one per packet of the messages in msgs
	ctrl   []byte       // a UDP_SEGMENT control message per entry of msgs
	retry  []mmsghdr    // a refused GSO message's packets, one by one
	cur    []mmsghdr    // argument of the sendmmsg in progress
	n      int          // its result
	errno  syscall.Errno
	sendFn func(fd uintptr) bool

	sent, batches, dropped, gsoSends atomic.Uint64
}

// push queues pk, waiting while the queue is full.
func (s *shard) push(pk *packet) error {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return net.ErrClosed
		}
		if len(s.queue) < cap(s.queue) {
			s.queue = append(s.queue, pk)
			first := len(s.queue) == 1
			if first && s.onFlush != nil {
				s.since = time.Now()
			}
			s.mu.Unlock()
			// Only the write that makes the queue non-empty wakes the
			// flusher: it always takes the whole queue, so later writes
			// are picked up by the round that wakeup starts.
			if first {
				select {
				case s.wake <- struct{}{}:
				default:
				}
			}
			return nil
		}
		if s.space == nil {
			s.space = make(chan struct{})
		}
		space := s.space
		s.mu.Unlock()
		if err := s.c.waitSpace(space); err != nil {
			return err
		}
	}
}

func (s *shard) run() {
	defer s.c.wg.Done()
	// A panic while flushing must not leave the writers of this shard
	// blocked on a queue nobody drains: the flusher starts again.
	defer panics.Recover("udpbatch flusher", s.c.log, func() {
		s.c.wg.Add(1)
		go s.run()
	})
	for {
		select {
		case <-s.wake:
			s.flush()
		case <-s.c.done:
			// No writes get in any more (closed is set); send the rest.
			s.flush()
			return
		}
	}
}

// flush sends rounds until the queue is empty.
func (s *shard) flush() {
	for {
		s.mu.Lock()
		batch := s.queue
		if len(batch) == 0 {
			s.mu.Unlock()
			return
		}
		s.queue = s.spare
		since := s.since
		if s.space != nil {
			close(s.space)
			s.space = nil
		}
		s.mu.Unlock()

		s.send(batch)
		if s.onFlush != nil {
			s.onFlush(len(batch), time.Since(since))
		}
		for i, pk := range batch {
			putPacket(pk)
			batch[i] = nil
		}
		s.spare = batch[:0]
	}
}

// send sends pkts, in order, with as few sendmmsg calls as the kernel
// allows, each with up to len(s.msgs) messages. With GSO a message is a run
// of packets (see runLen), otherwise one packet.
func (s *shard) send(pkts []*packet) {
	for i := 0; i < len(pkts); {
		gso := s.c.gso.Load() // per call: a failure may have turned it off
		start, nm := i, 0
		for ; nm < len(s.msgs) && i < len(pkts); nm++ {
			room := len(s.iovs) - (i - start)
			if room == 0 {
				break
			}
			n := 1
			if gso {
				n = runLen(pkts[i:], min(room, gsoMaxSegments))
			}
			s.setMsg(nm, pkts[i:i+n], s.iovs[i-start:i-start+n])
			i += n
		}
		s.sendMsgs(s.msgs[:nm], pkts[start:i])
		for k := range s.msgs[:nm] {
			// Let go of large (unpooled) buffers; the rest are
			// overwritten.
			s.msgs[k].hdr.Name = nil
		}
		clear(s.iovs[:i-start])
	}
}

// runLen returns how many packets from the start of pkts (at least 1, at
// most maxSegs) go out as one GSO message: neighbours with the same
// destination, all as long as the first but the last, which may be shorter
// (not empty: the kernel would not make it a datagram). The kernel cuts the
// message into datagrams of the first's length, so any other run would get
// the wrong boundaries.
func runLen(pkts []*packet, maxSegs int) int {
	first := pkts[0]
	size := len(first.buf)
	if size == 0 || size > gsoMaxSegment {
		return 1
	}
	n, total := 1, size
	for n < len(pkts) && n < maxSegs {
		pk := pkts[n]
		m := len(pk.buf)
		if m == 0 || m > size || total+m > gsoMaxBytes || pk.salen != first.salen || pk.sa != first.sa {
			break
		}
		n++
		total += m
		if m < size {
			break
		}
	}
	return n
}

// setMsg makes s.msgs[k] the message for run, with iovs (len(run) of them)
// pointing at the packets, and a UDP_SEGMENT control message if run has
// more than one packet.
func (s *shard) setMsg(k int, run []*packet, iovs []unix.Iovec) {
	for j, pk := range run {
		iovs[j].Base = unsafe.SliceData(pk.buf)
		iovs[j].SetLen(len(pk.buf))
	}
	m := &s.msgs[k]
	m.hdr = unix.Msghdr{
		Name:    (*byte)(unsafe.Pointer(&run[0].sa)),
		Namelen: run[0].salen,
		Iov:     &iovs[0],
	}
	m.hdr.SetIovlen(len(run))
	if len(run) > 1 {
		cm := s.ctrl[k*gsoCmsgSpace : (k+1)*gsoCmsgSpace]
		*(*uint16)(unsafe.Pointer(&cm[gsoCmsgData])) = uint16(len(run[0].buf))
		m.hdr.Control = &cm[0]
		m.hdr.SetControllen(gsoCmsgSpace)
	}
}

// sendMsgs sends msgs, whose packets are pkts in order (each message has
// as many as its iovecs). A message the kernel refuses is dropped alone:
// sendmmsg returns how many it sent before the failing one, and the next
// call starts with the failing one and reports its error. A refused GSO
// message goes to gsoFailed.
func (s *shard) sendMsgs(msgs []mmsghdr, pkts []*packet) {
	p := 0 // the first packet of msgs[off]
	for off := 0; off < len(msgs); {
		s.cur = msgs[off:]
		if err := s.rc.Write(s.sendFn); err != nil {
			// The descriptor is closed or Close's deadline passed:
			// nothing more can go out through it.
			s.drop(err, pkts[p].to, len(pkts)-p)
			break
		}
		n, errno := s.n, s.errno
		switch {
		case errno == 0 && n <= 0:
			// Cannot happen for a non-empty vector; never spin on it.
			s.drop(errNoProgress, pkts[p].to, len(pkts)-p)
			off = len(msgs)
		case errno == 0:
			var segs, gso uint64
			for k := range msgs[off : off+n] {
				m := int(msgs[off+k].hdr.Iovlen)
				segs += uint64(m)
				if m > 1 {
					gso++
				}
			}
			s.batches.Add(1)
			s.sent.Add(segs)
			if gso > 0 {
				s.gsoSends.Add(gso)
			}
			p += int(segs)
			off += n
		case errno == unix.EINTR:
		default:
			m := &msgs[off]
			segs := int(m.hdr.Iovlen)
			if segs == 1 {
				s.drop(errno, pkts[p].to, 1)
			} else {
				s.gsoFailed(errno, pkts[p:p+segs], unsafe.Slice(m.hdr.Iov, segs))
			}
			p += segs
			off++
		}
	}
	s.cur = nil
}

// gsoFailed handles the kernel's refusal of a GSO message: run is its
// packets, iovs their iovecs.
//
// An error that says GSO does not work here (EIO: a device that cannot
// checksum or segment, or IPsec; EOPNOTSUPP, ENOPROTOOPT) turns it off for
// the Conn. With EINVAL or EMSGSIZE the run may be at fault (a segment
// larger than the route's MTU) or its destination (port 0): the packets are
// sent one by one, and if the kernel then takes them after refusing EINVAL
// for the run, GSO is turned off too. Either way the packets go out one by
// one, each with its own verdict, as without GSO. Any other error is the
// destination's (unreachable, refused, not permitted): each packet would
// get it, so the run is dropped.
func (s *shard) gsoFailed(errno syscall.Errno, run []*packet, iovs []unix.Iovec) {
	switch errno {
	case unix.EIO, unix.EOPNOTSUPP, unix.ENOPROTOOPT:
		s.c.disableGSO(errno)
	case unix.EINVAL, unix.EMSGSIZE:
	default:
		s.drop(errno, run[0].to, len(run))
		return
	}
	msgs := s.retry[:len(run)]
	for j, pk := range run {
		m := &msgs[j]
		m.hdr = unix.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&pk.sa)),
			Namelen: pk.salen,
			Iov:     &iovs[j],
		}
		m.hdr.SetIovlen(1)
	}
	before := s.sent.Load() // only this flusher adds to it
	s.sendMsgs(msgs, run)
	if errno == unix.EINVAL && s.sent.Load() != before {
		s.c.disableGSO(errno)
	}
	for j := range msgs {
		msgs[j].hdr.Name = nil
		msgs[j].hdr.Iov = nil
	}
}

// sendmmsg is the syscall.RawConn.Write callback. On EAGAIN it returns
// false, which parks the flusher on the netpoller until the socket is
// writable and then calls it again.
func (s *shard) sendmmsg(fd uintptr) bool {
	cur := s.cur
	if s.c.gsoFault != nil {
		cur = s.fault(cur)
		if cur == nil {
			return true
		}
	}
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd,
		uintptr(unsafe.Pointer(unsafe.SliceData(cur))), uintptr(len(cur)), 0, 0, 0)
	if errno == unix.EAGAIN {
		return false
	}
	s.n, s.errno = int(n), errno
	return true
}

// fault applies the test hook gsoFault to the vector cur: it returns nil
// if the hook failed the first message (the result is set), else the part
// of cur to send, which ends before the next GSO message so that the hook
// is asked about each.
func (s *shard) fault(cur []mmsghdr) []mmsghdr {
	if cur[0].hdr.Iovlen > 1 {
		if errno := s.c.gsoFault(); errno != 0 {
			s.n, s.errno = 0, errno
			return nil
		}
	}
	for k := 1; k < len(cur); k++ {
		if cur[k].hdr.Iovlen > 1 {
			return cur[:k]
		}
	}
	return cur
}

func (s *shard) drop(err error, to netip.AddrPort, n int) {
	s.dropped.Add(uint64(n))
	s.c.logDrop(err, to, n)
}

// mmsghdr is struct mmsghdr: Go pads it like C does (to the alignment of
// Msghdr), so it matches the kernel's layout on every architecture.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32 // msg_len: bytes sent, written by the kernel
}

// packet is a queued datagram with its encoded destination.
type packet struct {
	buf   []byte                // the payload: arr[:n], or its own array if larger
	sa    unix.RawSockaddrInet6 // or a RawSockaddrInet4 at the same address
	salen uint32
	to    netip.AddrPort // for logs
	arr   [packetSize]byte
}

// packetSize covers an Ethernet MTU; larger packets get a buffer of their
// own that is not pooled.
const packetSize = 1500

var packetPool = sync.Pool{New: func() any { return new(packet) }}

func getPacket(n int) *packet {
	pk := packetPool.Get().(*packet)
	if n <= len(pk.arr) {
		pk.buf = pk.arr[:n]
	} else {
		pk.buf = make([]byte, n)
	}
	return pk
}

func putPacket(pk *packet) {
	pk.buf = nil
	pk.to = netip.AddrPort{}
	packetPool.Put(pk)
}

var (
	errInvalidAddr = errors.New("invalid destination address")
	errNotIPv4     = errors.New("IPv6 destination on an IPv4 socket")
	errNoProgress  = errors.New("sendmmsg sent nothing and reported no error")
)

// setDest encodes to as the sockaddr the socket's family takes: IPv4
// destinations on an IPv6 socket become v4-mapped, as in package net.
func (pk *packet) setDest(family int, to netip.AddrPort) error {
	addr := to.Addr()
	if !addr.IsValid() {
		return errInvalidAddr
	}
	pk.to = to
	if family == unix.AF_INET {
		addr = addr.Unmap()
		if !addr.Is4() {
			return errNotIPv4
		}
		// All of pk.sa is cleared: runLen compares it whole.
		pk.sa = unix.RawSockaddrInet6{}
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&pk.sa))
		*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: addr.As4()}
		putPort(&sa.Port, to.Port())
		pk.salen = unix.SizeofSockaddrInet4
		return nil
	}
	var scope uint32
	if zone := addr.Zone(); zone != "" {
		var err error
		if scope, err = zoneIndex(zone); err != nil {
			return err
		}
	}
	pk.sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: addr.As16(), Scope_id: scope}
	putPort(&pk.sa.Port, to.Port())
	pk.salen = unix.SizeofSockaddrInet6
	return nil
}

// putPort stores port in network byte order.
func putPort(dst *uint16, port uint16) {
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(dst))[:], port)
}

var zones sync.Map // zone name -> interface index (uint32)

// zoneIndex resolves an IPv6 zone (an interface name or number) to the
// interface index sin6_scope_id wants. Zones are rare (link-local peers),
// so a cache suffices.
func zoneIndex(zone string) (uint32, error) {
	if v, ok := zones.Load(zone); ok {
		return v.(uint32), nil
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n), nil
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return 0, fmt.Errorf("IPv6 zone %q: %w", zone, err)
	}
	zones.Store(zone, uint32(ifi.Index))
	return uint32(ifi.Index), nil
}

// shardIndex picks the shard for a destination. The same destination
// always gets the same shard, whether it is written as IPv4 or v4-mapped.
func shardIndex(to netip.AddrPort, n int) int {
	if n == 1 {
		return 0
	}
	a := to.Addr().Unmap().As16()
	h := binary.LittleEndian.Uint64(a[:8])*0x9e3779b97f4a7c15 ^ binary.LittleEndian.Uint64(a[8:]) ^ uint64(to.Port())<<32
	// splitmix64 finalizer: spreads every input bit over the result.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return int(h % uint64(n))
}
