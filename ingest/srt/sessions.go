package srt

import (
	"fmt"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/access"
)

// session is an accepted connection, publisher or reader, as the admin
// API sees it. Its fields are set before it is in Server.sessions and not
// changed after.
type session struct {
	id    string
	kind  access.SessionKind // SessionSRTPublish or SessionSRTRead
	path  string
	peer  string
	since time.Time
	conn  gosrt.Conn
	end   func(reason string) // ends the connection, logging reason where the adapter logs ends
}

// newSessionIDLocked numbers a connection just accepted: its id in the
// admin API and, under the key session, on every line of its story. Called
// with mu held.
func (s *Server) newSessionIDLocked() string {
	s.seq++
	return fmt.Sprintf("srt-%d", s.seq)
}

// addSessionLocked adds sess, numbered, to the table. Called with mu held.
func (s *Server) addSessionLocked(sess *session) *session {
	s.sessions[sess.id] = sess
	return sess
}

// Sessions lists the accepted publishers and readers, for the admin API,
// with their connection's bytes (both ways, headers included) and packet
// counters (a publisher's received packets lost and retransmitted, a
// reader's sent ones).
func (s *Server) Sessions() []access.Session {
	s.mu.Lock()
	list := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		list = append(list, sess)
	}
	s.mu.Unlock()
	out := make([]access.Session, 0, len(list))
	for _, sess := range list {
		var st gosrt.Statistics
		sess.conn.Stats(&st)
		a := access.Session{ID: sess.id, Kind: sess.kind, Stream: sess.path, Peer: sess.peer, Since: sess.since,
			Bytes: st.Accumulated.ByteRecv + st.Accumulated.ByteSent, HasBytes: true, HasPackets: true}
		if sess.kind == access.SessionSRTPublish {
			a.State = "publishing"
			a.PacketsLost, a.PacketsRetransmitted = st.Accumulated.PktRecvLoss, st.Accumulated.PktRecvRetrans
		} else {
			a.State = "reading"
			a.PacketsLost, a.PacketsRetransmitted = st.Accumulated.PktSendLoss, st.Accumulated.PktRetrans
		}
		out = append(out, a)
	}
	return out
}

// EndSession closes connection id and reports whether the server had it.
func (s *Server) EndSession(id, reason string) bool {
	s.mu.Lock()
	sess := s.sessions[id]
	s.mu.Unlock()
	if sess == nil {
		return false
	}
	sess.end(reason)
	return true
}
