// Package mergelisten makes several net.Listeners one, so a server that
// serves a single listener accepts from all of them under one set of
// connection limits: the RTMP server takes RTMP on one port and RTMPS (a
// tls.Listener) on another.
package mergelisten

import (
	"errors"
	"log/slog"
	"net"
	"sync"

	"github.com/wishbridge/bridge/internal/panics"
)

// Listener accepts from every listener it was made of. Close closes them
// all; Addr is the first one's.
//
// One goroutine per listener accepts and hands each connection over an
// unbuffered channel, so no connection is held between the kernel's
// backlog and Accept: a server that stops calling Accept stops the
// accepting too. An accept error (a temporary one such as EMFILE, or the
// listener closing) is passed to Accept as it is, so the server's own
// retry and stop rules apply.
type Listener struct {
	ls    []net.Listener
	log   *slog.Logger
	conns chan net.Conn
	errs  chan error
	done  chan struct{} // closed by Close
	once  sync.Once
	// drained is closed by Drain, before it closes the listeners: their
	// accept errors from then on are the drain's, not the server's.
	drained   chan struct{}
	drainOnce sync.Once
	wg        sync.WaitGroup
}

// New starts accepting on ls (at least one); the Listener owns them.
func New(log *slog.Logger, ls ...net.Listener) *Listener {
	m := &Listener{ls: ls, log: log, conns: make(chan net.Conn), errs: make(chan error), done: make(chan struct{}), drained: make(chan struct{})}
	for _, l := range ls {
		m.wg.Add(1)
		go m.accept(l)
	}
	return m
}

func (m *Listener) accept(l net.Listener) {
	defer m.wg.Done()
	defer panics.Recover("listener "+l.Addr().String(), m.log, func() { _ = l.Close() })
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) && m.isDrained() {
				return // Accept waits for Close
			}
			select {
			case m.errs <- err:
			case <-m.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		select {
		case m.conns <- c:
		case <-m.done:
			_ = c.Close()
			return
		}
	}
}

// Accept returns the next connection from any listener, or the next
// accept error; net.ErrClosed after Close.
func (m *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case err := <-m.errs:
		return nil, err
	case <-m.done:
		return nil, net.ErrClosed
	}
}

// Drain stops accepting while the server goes on: it closes every
// listener, so the kernel refuses new connections, and Accept returns
// nothing more until Close (net.ErrClosed then). The server keeps the
// connections it has (a shutdown's drain: load balancers move new clients
// elsewhere while the sessions end in their time).
func (m *Listener) Drain() {
	m.drainOnce.Do(func() {
		close(m.drained)
		for _, l := range m.ls {
			_ = l.Close()
		}
	})
}

func (m *Listener) isDrained() bool {
	select {
	case <-m.drained:
		return true
	default:
		return false
	}
}

// Close closes every listener and waits for their accepting goroutines.
func (m *Listener) Close() error {
	m.once.Do(func() {
		close(m.done)
		for _, l := range m.ls {
			_ = l.Close()
		}
	})
	m.wg.Wait()
	return nil
}

// Addr returns the first listener's address.
func (m *Listener) Addr() net.Addr { return m.ls[0].Addr() }
