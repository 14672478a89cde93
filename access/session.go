package access

import "time"

// SessionKind names what a session does, as the admin API lists it.
type SessionKind string

// The session kinds. Preview is a dashboard's muted player: a WHEP viewer
// admitted by the admin token, not counted as a reader (see
// media.ReaderOptions.Uncounted).
const (
	SessionWHEP        SessionKind = "whep"
	SessionWHIP        SessionKind = "whip"
	SessionRTMPPublish SessionKind = "rtmp_publish"
	SessionRTMPPlay    SessionKind = "rtmp_play"
	SessionSRTPublish  SessionKind = "srt_publish"
	SessionSRTRead     SessionKind = "srt_read"
	SessionForward     SessionKind = "forward"
	SessionPull        SessionKind = "pull"
	SessionPreview     SessionKind = "preview"
)

// Publishes reports whether sessions of kind k publish their stream.
func (k SessionKind) Publishes() bool {
	switch k {
	case SessionWHIP, SessionRTMPPublish, SessionSRTPublish, SessionPull:
		return true
	}
	return false
}

// Session is what an adapter reports of one of its sessions (a viewer, a
// publisher, a reader, a forward or pull), for the admin API. Each
// adapter keeps its own sessions and reports snapshots of them (a
// Sessions method, with EndSession to end one; package admin declares the
// interface); nothing here holds a session.
type Session struct {
	// ID is unique in the process and stable for the session's life; the
	// API ends a session by it. Adapters prefix theirs ("rtmp-", "srt-")
	// so they cannot collide.
	ID string
	// LogID is the id as the session's log lines carry it (key
	// "session"), when that is not ID: WHIP and WHEP log a prefix of
	// theirs (rtc.LogID), since the whole id is the capability of the
	// session's URL. "" means the log carries ID.
	LogID  string
	Kind   SessionKind
	Stream string // the stream path
	// Peer is the client's address ("host:port"); for a forward or a pull,
	// its remote URL with credentials redacted.
	Peer string
	// State is the session's stage: "connecting", "connected", or the
	// adapter's own word ("publishing", "reading", "waiting").
	State string
	// Since is when the session started (the POST, the accept, the start).
	Since time.Time
	// Bytes counts what went over the session's connection, both ways,
	// when the adapter knows it (HasBytes).
	Bytes    uint64
	HasBytes bool
	// PacketsLost and PacketsRetransmitted, when known (HasPackets): the
	// packets the receiving side lost, and those sent again.
	PacketsLost, PacketsRetransmitted uint64
	HasPackets                        bool
}

// Session states shared by the adapters.
const (
	StateConnecting = "connecting"
	StateConnected  = "connected"
)
