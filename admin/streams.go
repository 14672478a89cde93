package admin

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/media"
)

// Stream is one live stream as the API lists it.
type Stream struct {
	Path      string         `json:"path"`
	Private   bool           `json:"private"`
	Publisher *Publisher     `json:"publisher"`
	Tracks    []Track        `json:"tracks"`
	BitrateIn int64          `json:"bitrate_in"` // bit/s of payload, over the last seconds
	Readers   map[string]int `json:"readers"`    // by kind; previews are not counted
	BytesOut  uint64         `json:"bytes_out"`  // what the readers' connections carried, where known
	// Owner is the node of the cluster that owns the stream (its
	// publisher's); Remote: the stream is published on that other node
	// and listed from the registry (its tracks by codec only). Both are
	// left out outside a cluster (cluster.go).
	Owner  string `json:"owner,omitempty"`
	Remote bool   `json:"remote,omitempty"`
}

// Publisher is who publishes a stream; nil while the stream waits for its
// publisher to come back (the route's grace).
type Publisher struct {
	// Protocol is rtmp, srt, whip, or pull (the bridge pulls the stream
	// from a source).
	Protocol string    `json:"protocol"`
	Peer     string    `json:"peer"`
	Since    time.Time `json:"since"`
	// Session is the publisher's session id (DELETE /sessions/{id} ends it
	// with the route's grace; DELETE /publishers/{path} without).
	Session string `json:"session"`
}

// Track describes one of a stream's tracks; fields that do not apply to
// its kind, or that its parameter sets do not say, are left out.
type Track struct {
	Kind       string  `json:"kind"` // video or audio
	Codec      string  `json:"codec"`
	Width      int     `json:"width,omitempty"`
	Height     int     `json:"height,omitempty"`
	FPS        float64 `json:"fps,omitempty"`
	SampleRate int     `json:"sample_rate,omitempty"`
	Channels   int     `json:"channels,omitempty"`
}

// readerKinds maps the reading session kinds to the keys of
// Stream.Readers (every key is always present).
var readerKinds = map[access.SessionKind]string{
	access.SessionWHEP:     "whep",
	access.SessionRTMPPlay: "rtmp",
	access.SessionSRTRead:  "srt",
	access.SessionForward:  "forward",
}

// streams describes every live stream, sorted by path.
func (h *Handler) streams() []Stream {
	sessions := h.allSessions()
	now := time.Now()
	live := map[*media.Stream]bool{}
	out := []Stream{}
	for _, path := range h.cfg.Registry.Paths() { // sorted
		st, ok := h.cfg.Registry.Get(path)
		if !ok {
			continue
		}
		live[st] = true
		out = append(out, h.describe(st, sessions, now))
	}
	h.rate.prune(live)
	return out
}

// describe fills a Stream from the hub and the sessions on its path.
func (h *Handler) describe(st *media.Stream, sessions []access.Session, now time.Time) Stream {
	path := st.Path()
	s := Stream{Path: path, Private: h.cfg.Private(path), Tracks: []Track{}, Readers: map[string]int{}}
	for _, k := range readerKinds {
		s.Readers[k] = 0
	}
	for _, sess := range sessions {
		if sess.Stream != path {
			continue
		}
		if sess.Kind.Publishes() {
			p := &Publisher{Protocol: protocolOf(st.PublisherKind(), sess.Kind), Peer: sess.Peer,
				Since: sess.Since.UTC().Truncate(time.Second), Session: sess.ID}
			if s.Publisher == nil || p.Since.After(s.Publisher.Since) {
				s.Publisher = p
			}
			continue
		}
		if k, ok := readerKinds[sess.Kind]; ok {
			s.Readers[k]++
			s.BytesOut += sess.Bytes
		}
	}
	var since time.Time
	if s.Publisher != nil {
		since = s.Publisher.Since
	}
	s.BitrateIn = h.rate.rate(st, since, now)
	for _, t := range st.Tracks() {
		s.Tracks = append(s.Tracks, describeTrack(t))
	}
	return s
}

// protocolOf names a publisher's protocol for the API: rtmp, srt, whip,
// or pull for any of the bridge's pulls.
func protocolOf(k media.PublisherKind, sk access.SessionKind) string {
	switch {
	case sk == access.SessionPull || strings.HasSuffix(string(k), "_pull"):
		return "pull"
	case k != "":
		return string(k)
	}
	return strings.TrimSuffix(string(sk), "_publish")
}

// describeTrack reads a track's codec and, for video, its resolution and
// frame rate from the SPS the track was declared with (0, left out, when
// the SPS does not parse or gives no timing).
func describeTrack(t *media.Track) Track {
	out := Track{Kind: "audio", Codec: t.Codec.Name()}
	switch c := t.Codec.(type) {
	case media.H264:
		out.Kind = "video"
		var sps h264.SPS
		if sps.Unmarshal(c.SPS) == nil {
			out.Width, out.Height, out.FPS = sps.Width(), sps.Height(), roundFPS(sps.FPS())
		}
	case media.H265:
		out.Kind = "video"
		var sps h265.SPS
		if sps.Unmarshal(c.SPS) == nil {
			out.Width, out.Height, out.FPS = sps.Width(), sps.Height(), roundFPS(sps.FPS())
		}
	case media.AAC:
		out.SampleRate, out.Channels = c.SampleRate, c.Channels
	case media.Opus:
		out.SampleRate, out.Channels = c.ClockRate(), c.Channels
	default:
		panic(fmt.Sprintf("admin: track of codec %T not described", t.Codec)) // media's set is closed: a new codec needs a case here
	}
	return out
}

// roundFPS keeps two decimals (29.97), enough for any real rate.
func roundFPS(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0
	}
	return math.Round(f*100) / 100
}

// serveStreams answers 200 {"streams":[...]}.
func (h *Handler) serveStreams(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string][]Stream{"streams": h.withOwners(r.Context(), h.streams())})
}

// serveStream answers 200 with one Stream, or 404.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request) {
	path := r.PathValue("path")
	st, ok := h.cfg.Registry.Get(path)
	if !ok || st.Tracks() == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no stream %q", path))
		return
	}
	writeJSON(w, http.StatusOK, h.describe(st, h.allSessions(), time.Now()))
}
