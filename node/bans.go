package node

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/wishbridge/bridge/internal/addrlimit"
)

// maxBans bounds the ban table: an operator bans publishers one at a time
// through the admin API; 4096 live bans is far beyond that, and when full
// the ban that ends soonest makes room (a ban is a courtesy, not a
// firewall: nftables is for floods).
const maxBans = 4096

// evictGrace is how long a path evicted by Evict gives its leaving
// publisher no grace: the publisher's connection is ended by its adapter
// right after Evict, which is done within a few milliseconds; 10 s
// covers a slow teardown without changing the path's grace for long.
const evictGrace = 10 * time.Second

// banKey is one path and one peer address.
type banKey struct {
	path string
	addr netip.Addr
}

// bans are the publishers refused on a path until a time (Evict with a
// ban), and the paths whose publisher leaves without grace (Evict). Safe
// for concurrent use; the zero value is ready.
type bans struct {
	mu      sync.Mutex
	until   map[banKey]time.Time // guarded by mu; at most maxBans
	noGrace map[string]time.Time // guarded by mu: path -> until; one per evicted path, pruned as they expire
}

// ErrBanned refuses a publisher whose address an operator banned from the
// path (Evict); adapters answer it as a refusal without a reason.
type ErrBanned struct {
	Until time.Time
}

func (e *ErrBanned) Error() string {
	return fmt.Sprintf("this address is banned from publishing on the path until %s", e.Until.UTC().Format(time.RFC3339))
}

// banned returns the ban of remote's address on path, or nil.
func (b *bans) banned(path, remote string, now time.Time) error {
	addr := addrlimit.AddrOf(remote)
	b.mu.Lock()
	defer b.mu.Unlock()
	k := banKey{path, addr}
	until, ok := b.until[k]
	switch {
	case !ok:
		return nil
	case !now.Before(until):
		delete(b.until, k)
		return nil
	}
	return &ErrBanned{Until: until}
}

// ban refuses remote's address on path until now+d.
func (b *bans) ban(path, remote string, d time.Duration, now time.Time) {
	addr := addrlimit.AddrOf(remote)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.until == nil {
		b.until = make(map[banKey]time.Time)
	}
	k := banKey{path, addr}
	if _, ok := b.until[k]; !ok && len(b.until) >= maxBans {
		var soonest banKey
		var first time.Time
		for k, u := range b.until {
			if !now.Before(u) {
				delete(b.until, k)
				continue
			}
			if first.IsZero() || u.Before(first) {
				soonest, first = k, u
			}
		}
		if len(b.until) >= maxBans {
			delete(b.until, soonest)
		}
	}
	b.until[k] = now.Add(d)
}

// evict gives path's publisher no grace until now+evictGrace.
func (b *bans) evict(path string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.noGrace == nil {
		b.noGrace = make(map[string]time.Time)
	}
	for p, u := range b.noGrace {
		if !now.Before(u) {
			delete(b.noGrace, p)
		}
	}
	b.noGrace[path] = now.Add(evictGrace)
}

// evicted reports whether path's publisher was evicted within evictGrace.
func (b *bans) evicted(path string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	u, ok := b.noGrace[path]
	return ok && now.Before(u)
}

// Evict prepares the end of path's publisher by an operator: its stream
// gets no grace when the publisher leaves (its readers end with it, as at
// shutdown), and with ban > 0 the publisher's address (remote, "host:port"
// or "host") is refused publishing on path for that long. The caller then
// ends the publisher's session through its adapter.
func (n *Node) Evict(path, remote string, ban time.Duration) {
	now := time.Now()
	n.bans.evict(path, now)
	if ban > 0 {
		n.bans.ban(path, remote, ban, now)
		n.log.Info("publisher banned", "stream", path, "peer", remote, "ban", ban.String())
	}
}
