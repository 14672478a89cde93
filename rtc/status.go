package rtc

import (
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/access"
)

// Reporter is a Session that describes itself for the admin API (WHIP
// and WHEP sessions do): Sessions lists those, and only those.
type Reporter interface {
	Status() access.Session
}

// Sessions returns a snapshot of the sessions in the table that report
// their status (Reporter); ids reserved but not stored yet are left out.
func (t *Sessions) Sessions() []access.Session {
	t.mu.Lock()
	rs := make([]Reporter, 0, len(t.byID))
	for _, e := range t.byID {
		if r, ok := e.s.(Reporter); ok {
			rs = append(rs, r)
		}
	}
	t.mu.Unlock()
	out := make([]access.Session, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Status())
	}
	return out
}

// EndSession ends session id with reason, as a DELETE from its client
// would (the session logs reason as its end), and reports whether the
// table had it.
func (t *Sessions) EndSession(id, reason string) bool {
	t.mu.Lock()
	var s Session
	if e := t.byID[id]; e != nil {
		s = e.s
	}
	t.mu.Unlock()
	if s == nil {
		return false
	}
	s.Close(reason)
	return true
}

// TransportStatus fills the transport part of a session's status: its id
// (and LogID), peer and start, the state of its PeerConnection ("connecting", "connected",
// "disconnected", ...) and the bytes its ICE transport sent and received.
// The WHIP and WHEP sessions add kind, stream and packet counts.
func (s *ICESession) TransportStatus(id, peer string, since time.Time) access.Session {
	st := access.Session{ID: id, LogID: LogID(id), Peer: peer, Since: since, State: s.pc.ConnectionState().String()}
	if st.State == webrtc.PeerConnectionStateNew.String() {
		st.State = access.StateConnecting
	}
	if sctp := s.pc.SCTP(); sctp != nil && sctp.Transport() != nil && sctp.Transport().ICETransport() != nil {
		ts := sctp.Transport().ICETransport().Stats()
		st.Bytes, st.HasBytes = ts.BytesSent+ts.BytesReceived, true
	}
	return st
}
