// Package connlimit is the admission bookkeeping the RTMP and SRT
// listeners share: connection slots in total and per client address
// (internal/addrlimit), the readers-per-stream limit counted by the hub,
// the default ingest bitrate bound, and the refusals, each counted for
// metrics and logged at most once per interval (internal/ratelog) per
// client address (Log) or per client address and kind of refusal
// (LogKind).
package connlimit

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"

	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/media"
)

// DefaultMaxBitrate is the ingest bitrate bound (bit/s) of an RTMP or SRT
// publisher whose listener is not given one: above what any contribution
// encoder sends (4K at high quality is 50-100 Mbit/s), below what would let
// one peer take a gigabit link. limits.ingest_bitrate has the same default.
const DefaultMaxBitrate = 200_000_000

// ErrReaders refuses a reader of a stream that has its maximum of readers.
var ErrReaders = errors.New("the stream has its maximum of readers")

// Refusals counts what a listener's limits refused since it was made.
type Refusals struct {
	// ConnsTotal and ConnsPerAddr count connections refused because the
	// listener was at its total, the client's address at its own limit.
	ConnsTotal, ConnsPerAddr uint64
	// Readers counts readers refused because the stream had its maximum.
	Readers uint64
	// Bitrate counts publishers disconnected for sending above the
	// ingest bitrate.
	Bitrate uint64
}

// Gate admits one listener's connections and readers. Create it with New;
// safe for concurrent use.
type Gate struct {
	conns      *addrlimit.Limiter
	maxReaders func(path string) int
	log        *slog.Logger
	logLim     ratelog.Limiter // Acquire's and Log's lines, per address
	// KindLog limits LogKind's lines, per address and kind; set its Every
	// before use to change the interval.
	KindLog ratelog.Limiter

	connsTotal, connsPerAddr, readers, bitrate atomic.Uint64
}

// New returns a gate allowing total connections and perAddr per client
// address (0: no limit), and maxReaders(path) readers of a stream (nil or
// a result <= 0: no limit). Refusals are logged to log.
func New(total, perAddr int, maxReaders func(path string) int, log *slog.Logger) *Gate {
	return &Gate{conns: addrlimit.New(total, perAddr), maxReaders: maxReaders, log: log}
}

// Acquire takes a connection slot for addr. A refusal (wrapping
// addrlimit.ErrTotal or ErrPerAddr) is counted, and logged as msg with
// args and the reason unless addr logged one within the interval.
func (g *Gate) Acquire(addr netip.Addr, msg string, args ...any) (release func(), err error) {
	release, err = g.conns.Acquire(addr)
	if err != nil {
		if errors.Is(err, addrlimit.ErrPerAddr) {
			g.connsPerAddr.Add(1)
		} else {
			g.connsTotal.Add(1)
		}
		g.Log(addr, msg, append(args, "reason", err.Error())...)
	}
	return release, err
}

// Len returns the slots held in total and by addr's address (or /64).
func (g *Gate) Len(addr netip.Addr) (total, perAddr int) { return g.conns.Len(addr) }

// CheckReaders refuses (with an error wrapping ErrReaders, counted) a
// reader of the stream at path in reg when the stream's readers
// (media.Stream.Readers: every read protocol's) plus joining would exceed
// its limit: joining is 1 for a reader not attached yet, 0 for one
// already counted.
func (g *Gate) CheckReaders(reg *media.Registry, path string, joining int) error {
	if g.maxReaders == nil {
		return nil
	}
	max := g.maxReaders(path)
	if max <= 0 {
		return nil
	}
	st, ok := reg.Get(path)
	if !ok || st.Readers()+joining <= max {
		return nil
	}
	g.readers.Add(1)
	return fmt.Errorf("%w (%d)", ErrReaders, max)
}

// CountBitrate counts a publisher disconnected for its bitrate.
func (g *Gate) CountBitrate() { g.bitrate.Add(1) }

// Log logs a refusal as msg with args, unless addr logged one within the
// interval; the line says how many were held back since the last one.
func (g *Gate) Log(addr netip.Addr, msg string, args ...any) {
	if ok, n := g.logLim.Allow(addr.String()); ok {
		g.log.Warn(msg, append(args, "suppressed", n)...)
	}
}

// LogKind logs a refusal of the connection whose logger is log (it names
// the peer), unless addr logged a refusal of the same kind (e.g. its
// protocol's status or reject code) within the interval: a client that
// repeats one bad request cannot flood the log, and a different refusal
// of the same client is still told. The line says how many were held
// back.
func (g *Gate) LogKind(log *slog.Logger, addr netip.Addr, kind, msg string, args ...any) {
	if ok, n := g.KindLog.Allow(addr.String() + " " + kind); ok {
		log.Warn(msg, append(args, "suppressed", n)...)
	}
}

// Refusals returns the refusal counts.
func (g *Gate) Refusals() Refusals {
	return Refusals{
		ConnsTotal:   g.connsTotal.Load(),
		ConnsPerAddr: g.connsPerAddr.Load(),
		Readers:      g.readers.Load(),
		Bitrate:      g.bitrate.Load(),
	}
}
