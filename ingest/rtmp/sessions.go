package rtmp

import (
	"errors"
	"time"

	"github.com/wishbridge/bridge/access"
)

// connRole is what a connection does, once it publishes or plays.
type connRole struct {
	kind  access.SessionKind // SessionRTMPPublish or SessionRTMPPlay
	path  string
	since time.Time
}

// Sessions lists the connections that publish or play, for the admin API,
// with the bytes their sockets carried both ways.
func (s *Server) Sessions() []access.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]access.Session, 0, len(s.open))
	for c := range s.open {
		r := c.role.Load()
		if r == nil {
			continue
		}
		state := "publishing"
		if r.kind == access.SessionRTMPPlay {
			state = "playing"
		}
		out = append(out, access.Session{ID: c.id, Kind: r.kind, Stream: r.path, Peer: c.peer, State: state,
			Since: r.since, Bytes: c.bytesIn.Load() + c.bytesOut.Load(), HasBytes: true})
	}
	return out
}

// EndSession closes connection id (a publisher's stream then leaves as
// when its encoder disconnects) and reports whether the server had it.
// reason is the connection's end reason in the log.
func (s *Server) EndSession(id, reason string) bool {
	s.mu.Lock()
	var found *conn
	for c := range s.open {
		if c.id == id {
			found = c
			break
		}
	}
	s.mu.Unlock()
	if found == nil {
		return false
	}
	_ = found.fail(errors.New(reason))
	_ = found.Conn.Close()
	return true
}
