//go:build !linux

package udpbatch

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// batcher is the portable fallback: no sendmmsg, so every write is a
// syscall of its own, made by the writer.
type batcher struct {
	sent atomic.Uint64
}

func (c *Conn) start(Options) {}

func (c *Conn) write(p []byte, to netip.AddrPort) error {
	if _, err := c.conn.WriteToUDPAddrPort(p, to); err != nil {
		// The caller wraps the error in its own *net.OpError.
		var oe *net.OpError
		if errors.As(err, &oe) {
			return oe.Err
		}
		return err
	}
	c.sent.Add(1)
	return nil
}

func (c *Conn) stop() error {
	close(c.done)
	return c.conn.Close()
}

// stats reports each write as a batch of one; errors went to the writers.
func (c *Conn) stats() Stats {
	n := c.sent.Load()
	return Stats{Sent: n, Batches: n}
}

// setConnWriteDeadline passes the deadline on: writers write the socket
// themselves here.
func (c *Conn) setConnWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
