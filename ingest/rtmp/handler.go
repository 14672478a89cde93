package rtmp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	gortmp "github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/message"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/internal/sessionlog"
	"github.com/wishbridge/bridge/internal/streampath"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
)

// Status codes sent in onStatus refusals besides go-rtmp's own.
const (
	codePublishUnauthorized message.NetStreamOnStatusCode = "NetStream.Publish.Unauthorized"
)

// statusChunkStreamID is the chunk stream our onStatus messages go out on.
// go-rtmp answers on the chunk stream of the request; ours is separate and
// queued first, so the client reads our description before go-rtmp's
// generic "Publish failed.".
const statusChunkStreamID = 5

// Limits of the pre-declaration buffer: about 1 s of a high bitrate stream.
const (
	maxPendingUnits = 256
	maxPendingBytes = 16 << 20
)

// Reasons a connection ends normally.
var (
	errPeerClosed  = errors.New("peer closed the connection")
	errShutdown    = errors.New("server shutting down")
	errUnpublished = errors.New("unpublished by the peer")
)

// panicComponent names the connections' panic boundary in logs and in
// bridge_panics_total.
const panicComponent = "rtmp connection"

// errPanicked ends a connection whose callback panicked.
var errPanicked = errors.New("internal error: a panic was recovered (logged with its stack)")

// abort ends the connection after a panic in one of its callbacks (the
// panic boundary: every go-rtmp callback defers panics.Recover, so a
// panic ends this connection only): the callback returns errPanicked and
// the socket is closed, so go-rtmp tears the connection down and OnClose
// ends its publication as for any other error.
func (h *handler) abort() error {
	_ = h.c.Conn.Close()
	return h.setErr(errPanicked)
}

// refusal is the error a handler returns for a refused publish or play;
// the refusal has been logged already.
type refusal struct {
	reason string
}

func (r *refusal) Error() string { return r.reason }

// tri is an expectation that may be unknown.
type tri int8

const (
	unknown tri = iota
	yes
	no
)

// handler is one RTMP connection. go-rtmp calls every method from the
// connection's read goroutine (OnClose included), so its state needs no
// lock; the logrus hook (Fire) runs on that goroutine as well.
type handler struct {
	gortmp.DefaultHandler
	// tagSink makes the units of a publish; its stream is the
	// publication, nil when not publishing.
	tagSink

	srv    *Server
	c      *conn
	log    *slog.Logger
	rc     *gortmp.Conn // set by OnServe; nil if the handshake failed
	rawApp string       // app as sent in connect
	app    string       // without its query, for logs
	err    error        // first error a callback returned
	rtErr  error        // first error go-rtmp logged (see Fire)
	quiet  bool         // the ending has been logged already (refusals)
	buf    bytes.Buffer // scratch for reading payloads

	// Publishing state.
	pubID   uint32 // message stream id of the publish
	started time.Time
	ended   bool
}

// tagSink turns one publisher's FLV tags (video, audio, onMetaData) into
// units of its publication: it declares the tracks and writes the units
// as the package doc describes. The handler of a publishing connection
// and the Puller each have one. Not safe for concurrent use.
type tagSink struct {
	stream     *media.Publication // nil: tags are ignored
	log        *slog.Logger
	configWait time.Duration // waiting for the other track's sequence header

	videoUnits uint64
	audioUnits uint64
	dropped    uint64
	tagBytes   uint64 // audio and video tag bodies received

	// Track set-up.
	declared     bool
	expectVideo  tri
	expectAudio  tri
	firstCfgAt   time.Time
	videoTrack   *media.Track
	audioTrack   *media.Track
	lengthSize   int
	norm         *transcode.H264Normalizer
	videoStarted bool // an IDR has been accepted
	pending      []*media.Unit
	pendingBytes int
	videoTS      rtmpClock
	audioTS      rtmpClock
	jumps        uint64          // timestamp discontinuities re-anchored
	jumpLog      ratelog.Limiter // one line per interval for them

	// Once-only log lines.
	audioIgnored   bool
	lateVideoNoted bool
	lateAudioNoted bool
	ascChangeNoted bool
}

var (
	_ gortmp.Handler = (*handler)(nil)
	_ logrus.Hook    = (*handler)(nil)
)

func newHandler(s *Server, c *conn) *handler {
	// session: the connection's id, as the admin API lists it, on every
	// line of its story.
	log := s.log.With("session", c.id, "peer", c.peer)
	return &handler{
		tagSink: tagSink{log: log, configWait: s.configWait},
		srv:     s,
		c:       c,
		log:     log,
	}
}

// setErr records the error a callback returns (which ends the connection);
// the first one wins.
func (h *handler) setErr(err error) error {
	if h.err == nil {
		h.err = err
	}
	return err
}

// Levels and Fire implement logrus.Hook on go-rtmp's per-connection logger
// (set to the error level): go-rtmp reports the error that ended the
// connection there and nowhere else.
func (h *handler) Levels() []logrus.Level {
	return []logrus.Level{logrus.ErrorLevel}
}

func (h *handler) Fire(e *logrus.Entry) error {
	msg := e.Message
	msg = strings.TrimPrefix(msg, "Server closed by error: Err = ")
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i] // go-rtmp formats with %+v: the stack follows
	}
	if h.rtErr == nil {
		h.rtErr = errors.New(msg)
	}
	return nil
}

// OnServe runs after the handshake. The server sends with a larger chunk
// size so that status messages fit one chunk. Nothing has been written
// through go-rtmp yet, so changing its state here does not race its writer.
func (h *handler) OnServe(rc *gortmp.Conn) {
	defer panics.Recover(panicComponent, h.log, func() { _ = h.abort() })
	h.rc = rc
	cs := rc.GetChunkStreamer()
	if err := cs.SelfState().SetChunkSize(outChunkSize); err != nil {
		return
	}
	_ = h.write(2, 0, 0, &message.SetChunkSize{ChunkSize: outChunkSize})
}

// write sends a message. It must only be called from a go-rtmp callback:
// go-rtmp's writer is not safe for concurrent use and it writes from the
// same goroutine.
func (h *handler) write(csid int, streamID uint32, ts uint32, msg message.Message) error {
	if h.rc == nil {
		return errors.New("not connected")
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.srv.writeTimeout)
	defer cancel()
	return h.rc.Write(ctx, csid, ts, &gortmp.ChunkMessage{StreamID: streamID, Message: msg})
}

// sendStatus sends an onStatus command on the given message stream.
func (h *handler) sendStatus(streamID uint32, level message.NetStreamOnStatusLevel, code message.NetStreamOnStatusCode, desc string) error {
	body := &bytes.Buffer{}
	enc := message.NewAMFEncoder(body, message.EncodingTypeAMF0)
	if err := message.EncodeBodyAnyValues(enc, &message.NetStreamOnStatus{
		InfoObject: message.NetStreamOnStatusInfoObject{Level: level, Code: code, Description: desc},
	}); err != nil {
		return err
	}
	return h.write(statusChunkStreamID, streamID, 0, &message.CommandMessage{
		CommandName:   "onStatus",
		TransactionID: 0,
		Encoding:      message.EncodingTypeAMF0,
		Body:          body,
	})
}

func (h *handler) OnConnect(_ uint32, cmd *message.NetConnectionConnect) (err error) {
	defer panics.Recover(panicComponent, h.log, func() { err = h.abort() })
	h.rawApp = cmd.Command.App
	h.app, _, _ = strings.Cut(cmd.Command.App, "?") // the query may hold the key
	h.log.Debug("rtmp connect", "app", h.app)
	return nil
}

// OnPublish admits or refuses a publish. A refusal sends an onStatus error
// with the reason, logs one line, and returns an error, which makes
// go-rtmp send NetStream.Publish.Failed and close the connection.
func (h *handler) OnPublish(ctx *gortmp.StreamContext, _ uint32, cmd *message.NetStreamPublish) (err error) {
	defer panics.Recover(panicComponent, h.log, func() { err = h.abort() })
	path, key, perr := streamPath(h.rawApp, cmd.PublishingName)
	logPath := path
	if perr != nil {
		logPath = sanitizeForLog(cmd.PublishingName)
	}
	refuse := func(code message.NetStreamOnStatusCode, desc string, cause error) error {
		reason := desc // what the peer is told
		if cause != nil {
			reason = cause.Error() // the details, for the log only
		}
		_ = h.sendStatus(ctx.StreamID, message.NetStreamOnStatusLevelError, code, desc)
		h.srv.gate.LogKind(h.log, addrlimit.AddrOf(h.c.peer), string(code), "rtmp publish refused", "stream", logPath, "reason", reason)
		h.quiet = true
		return h.setErr(&refusal{reason: "publish refused: " + reason})
	}
	if h.stream != nil {
		return refuse(message.NetStreamOnStatusCodePublishBadName, "this connection is already publishing", nil)
	}
	if h.ended {
		return refuse(message.NetStreamOnStatusCodePublishBadName, "one publish per connection: reconnect to publish again", nil)
	}
	if perr != nil {
		return refuse(message.NetStreamOnStatusCodePublishBadName, perr.Error(), nil)
	}
	req := access.Request{Action: access.Publish, Protocol: access.RTMP, Path: path, Credential: key, Remote: h.c.peer}
	grant, err := h.srv.auth(req)
	if err != nil {
		switch {
		case errors.Is(err, access.ErrBadKey):
			return refuse(codePublishUnauthorized, fmt.Sprintf("publish %q refused: %v", path, access.BadKey(access.Publish)), err)
		case errors.Is(err, access.ErrNoRoute):
			return refuse(message.NetStreamOnStatusCodePublishBadName, fmt.Sprintf("publish %q refused: %v", path, access.ErrNoRoute), err)
		case errors.Is(err, access.ErrProtocolNotAllowed):
			return refuse(message.NetStreamOnStatusCodePublishBadName, fmt.Sprintf("publish %q refused: %v", path, access.ErrProtocolNotAllowed), err)
		case access.ElsewhereOf(err) != nil:
			return refuse(message.NetStreamOnStatusCodePublishFailed, fmt.Sprintf("publish %q refused: the stream is served by another node", path), err)
		case errors.Is(err, media.ErrPublisherExists): // on another node of a cluster: the error names it
			return refuse(message.NetStreamOnStatusCodePublishBadName, fmt.Sprintf("publish %q refused: %v", path, err), err)
		default:
			return refuse(message.NetStreamOnStatusCodePublishFailed, fmt.Sprintf("publish %q refused", path), err)
		}
	}
	st, err := h.srv.reg.Publish(path, "rtmp "+h.c.peer)
	if err != nil {
		if errors.Is(err, media.ErrPublisherExists) {
			return refuse(message.NetStreamOnStatusCodePublishBadName, fmt.Sprintf("stream %q is already publishing", path), err)
		}
		return refuse(message.NetStreamOnStatusCodePublishFailed, fmt.Sprintf("publish %q failed", path), err)
	}
	st.SetKind(access.KindRTMP)
	h.stream = st
	h.pubID = ctx.StreamID
	h.started = time.Now()
	h.log = grant.Logger(h.log.With("stream", path))
	h.tagSink.log = h.log
	h.c.publishing.Store(true)
	h.c.role.Store(&connRole{kind: access.SessionRTMPPublish, path: path, since: h.started})
	h.log.Info("rtmp publish", "type", cmd.PublishingType)
	if h.srv.onPublish != nil {
		h.srv.onPublish(st.Stream)
	}
	return nil
}

// OnPlay serves a play request through Config.Play (play.go), or refuses
// it when there is no Play hook.
func (h *handler) OnPlay(ctx *gortmp.StreamContext, _ uint32, cmd *message.NetStreamPlay) (err error) {
	defer panics.Recover(panicComponent, h.log, func() { err = h.abort() })
	if h.srv.play != nil {
		return h.play(ctx.StreamID, cmd)
	}
	const desc = "play is not supported yet: this server only accepts publishing"
	_ = h.sendStatus(ctx.StreamID, message.NetStreamOnStatusLevelError, message.NetStreamOnStatusCodePlayFailed, desc)
	path, _, err := streamPath(h.rawApp, cmd.StreamName)
	if err != nil {
		path = sanitizeForLog(cmd.StreamName)
	}
	h.log.Warn("rtmp play refused", "stream", path, "reason", "play is not supported yet")
	h.quiet = true
	return h.setErr(&refusal{reason: "play refused: play is not supported yet"})
}

func (h *handler) OnFCUnpublish(uint32, *message.NetStreamFCUnpublish) (err error) {
	defer panics.Recover(panicComponent, h.log, func() { err = h.abort() })
	h.endPublish(errUnpublished)
	return nil
}

func (h *handler) OnDeleteStream(_ uint32, cmd *message.NetStreamDeleteStream) (err error) {
	defer panics.Recover(panicComponent, h.log, func() { err = h.abort() })
	if h.stream != nil && cmd.StreamID == h.pubID {
		h.endPublish(errUnpublished)
	}
	return nil
}

// OnClose runs once when the connection is torn down, whatever the cause.
func (h *handler) OnClose() {
	defer panics.Recover(panicComponent, h.log, func() {
		if h.stream != nil {
			h.stream.Close()
		}
	})
	reason := h.closeReason()
	if h.stream != nil {
		h.endPublish(reason)
		return
	}
	if h.quiet || h.ended {
		return
	}
	if errors.Is(reason, errPeerClosed) || errors.Is(reason, errShutdown) {
		h.log.Info("rtmp connection closed", "reason", reason.Error())
		return
	}
	// Garbage and broken handshakes are what a scanner sends: one line
	// per address per interval.
	h.srv.gate.LogKind(h.log, addrlimit.AddrOf(h.c.peer), "failed", "rtmp connection failed", "reason", reason.Error())
}

// closeReason says why the connection ended, most specific first: our own
// callback's error, then the I/O error, then what go-rtmp reported.
func (h *handler) closeReason() error {
	switch {
	case h.srv.isClosed():
		return errShutdown
	case h.err != nil:
		return h.err
	case h.c.firstErr() != nil:
		return h.c.firstErr()
	case h.rtErr != nil:
		return fmt.Errorf("protocol error: %w", h.rtErr)
	default:
		return errors.New("connection closed")
	}
}

// endPublish closes the stream and logs the summary, once.
func (h *handler) endPublish(reason error) {
	if h.stream == nil {
		return
	}
	h.stream.Close()
	h.stream = nil
	h.ended = true
	h.pending = nil
	// Packets are the frames (RTMP has no packets of its own).
	args := []any{"video_frames", h.videoUnits, "audio_frames", h.audioUnits}
	if h.dropped > 0 {
		args = append(args, "dropped_before_tracks", h.dropped)
	}
	sessionlog.End(h.log, "rtmp publish ended", h.started, h.tagBytes, h.videoUnits+h.audioUnits, reason.Error(), args...)
}

// OnSetDataFrame reads the announced codecs from onMetaData.
func (h *handler) OnSetDataFrame(_ uint32, data *message.NetStreamSetDataFrame) (err error) {
	defer panics.Recover(panicComponent, h.log, func() { err = h.abort() })
	return h.setErr(h.metadata(data.Payload))
}

// metadata reads the announced codecs from an onMetaData payload: the
// AMF0 string "onMetaData" and its properties.
func (h *tagSink) metadata(payload []byte) error {
	if h.stream == nil || h.declared {
		return nil
	}
	m, err := parseMetadata(payload)
	if err != nil {
		h.log.Debug("rtmp metadata ignored", "err", err)
		return nil
	}
	// The tags themselves, when some came first, win over the metadata.
	if h.expectVideo == unknown {
		h.expectVideo = no
		if m.HasVideo {
			h.expectVideo = yes
		}
	}
	if h.expectAudio == unknown {
		h.expectAudio = no
		if m.HasAudio && m.AudioAAC {
			h.expectAudio = yes
		}
	}
	h.log.Debug("rtmp metadata", "videocodecid", m.VideoCodec, "audiocodecid", m.AudioCodec)
	return h.maybeDeclare()
}

// readPayload copies a message payload into a new slice of its exact size:
// go-rtmp reuses the reader's buffer once the callback returns, and the
// units keep sub-slices of it.
func (h *handler) readPayload(r io.Reader) ([]byte, error) {
	h.buf.Reset()
	if _, err := h.buf.ReadFrom(io.LimitReader(r, maxVideoMessageSize+1)); err != nil {
		return nil, err
	}
	return bytes.Clone(h.buf.Bytes()), nil
}

func (h *handler) OnVideo(ts uint32, payload io.Reader) (err error) {
	defer panics.Recover(panicComponent, h.log, func() { err = h.abort() })
	if h.stream == nil {
		return nil
	}
	data, err := h.readPayload(payload)
	if err != nil {
		return h.setErr(fmt.Errorf("video: %w", err))
	}
	return h.setErr(h.video(ts, data))
}

// video takes the body of an FLV video tag (VIDEODATA) with its message
// timestamp; the units keep sub-slices of data.
func (h *tagSink) video(ts uint32, data []byte) error {
	if h.stream == nil {
		return nil
	}
	h.tagBytes += uint64(len(data))
	tag, err := parseVideoTag(data)
	if err != nil {
		return fmt.Errorf("video tag at %d ms: %w", ts, err)
	}
	switch {
	case tag.FrameType == frameTypeCommand:
		return nil
	case tag.PacketType == avcPacketSequenceHeader:
		return h.onAVCConfig(tag.Data)
	case tag.PacketType == avcPacketEndOfSequence:
		return nil
	}
	// Only frames run the clock: encoders stamp their sequence headers
	// 0 however far their frames' timestamps start.
	dts := h.streamTime(&h.videoTS, "video", ts)
	if h.expectVideo == unknown {
		h.expectVideo = yes
	}
	if h.norm == nil {
		h.dropped++ // NAL units before the sequence header
		return h.maybeDeclare()
	}
	nalus, err := splitNALUs(tag.Data, h.lengthSize)
	if err != nil {
		return fmt.Errorf("video tag at %d ms: %w", ts, err)
	}
	au, idr := h.norm.Normalize(nalus)
	if au == nil {
		return h.maybeDeclare()
	}
	d := time.Duration(dts) * time.Millisecond
	u := &media.Unit{
		Track: h.videoTrack,
		DTS:   d,
		PTS:   d + time.Duration(tag.CompositionTime)*time.Millisecond,
		Key:   idr,
		NALUs: au,
	}
	return h.emit(u, len(tag.Data))
}

func (h *tagSink) onAVCConfig(b []byte) error {
	cfg, err := parseAVCConfig(b)
	if err != nil {
		return fmt.Errorf("AVC sequence header: %w", err)
	}
	if h.expectVideo == unknown {
		h.expectVideo = yes
	}
	h.lengthSize = cfg.LengthSize
	if h.norm == nil {
		h.norm = transcode.NewH264Normalizer(cfg.SPS, cfg.PPS)
	} else {
		h.norm.SetParams(cfg.SPS, cfg.PPS)
	}
	switch {
	case h.videoTrack == nil && !h.declared:
		sps, pps := h.norm.Params()
		h.videoTrack = &media.Track{Codec: media.H264{SPS: sps, PPS: pps}}
		h.noteConfig()
	case h.videoTrack == nil && !h.lateVideoNoted:
		h.lateVideoNoted = true
		h.log.Warn("rtmp video ignored", "reason", "video started after the tracks were declared")
	}
	return h.maybeDeclare()
}

func (h *handler) OnAudio(ts uint32, payload io.Reader) (err error) {
	defer panics.Recover(panicComponent, h.log, func() { err = h.abort() })
	if h.stream == nil {
		return nil
	}
	data, err := h.readPayload(payload)
	if err != nil {
		return h.setErr(fmt.Errorf("audio: %w", err))
	}
	return h.setErr(h.audio(ts, data))
}

// audio takes the body of an FLV audio tag (AUDIODATA) with its message
// timestamp; the units keep sub-slices of data.
func (h *tagSink) audio(ts uint32, data []byte) error {
	if h.stream == nil {
		return nil
	}
	h.tagBytes += uint64(len(data))
	tag, err := parseAudioTag(data)
	if err != nil {
		return fmt.Errorf("audio tag at %d ms: %w", ts, err)
	}
	if tag.SoundFormat != soundFormatAAC {
		h.ignoreAudio(fmt.Sprintf("audio format %s (FLV sound format %d) is not supported, only AAC (10)", soundFormatName(tag.SoundFormat), tag.SoundFormat))
		return h.maybeDeclare()
	}
	if h.audioIgnored {
		return nil
	}
	if tag.PacketType == aacPacketSequenceHeader {
		return h.onAACConfig(tag.Data)
	}
	dts := h.streamTime(&h.audioTS, "audio", ts)
	if h.expectAudio == unknown {
		h.expectAudio = yes
	}
	if h.audioTrack == nil || len(tag.Data) == 0 {
		if h.audioTrack == nil {
			h.dropped++
		}
		return h.maybeDeclare()
	}
	d := time.Duration(dts) * time.Millisecond
	u := &media.Unit{Track: h.audioTrack, DTS: d, PTS: d, Key: true, Data: tag.Data}
	return h.emit(u, len(tag.Data))
}

func (h *tagSink) onAACConfig(b []byte) error {
	cfg, err := parseAACConfig(b)
	if err != nil {
		h.ignoreAudio(fmt.Sprintf("AAC sequence header: %v", err))
		return h.maybeDeclare()
	}
	switch {
	case h.audioTrack == nil && !h.declared:
		if h.expectAudio == unknown {
			h.expectAudio = yes
		}
		h.audioTrack = &media.Track{Codec: media.AAC{
			Config:     bytes.Clone(cfg.Raw),
			SampleRate: cfg.SampleRate,
			Channels:   cfg.Channels,
		}}
		h.noteConfig()
	case h.audioTrack == nil:
		if !h.lateAudioNoted {
			h.lateAudioNoted = true
			h.log.Warn("rtmp audio ignored", "reason", "audio started after the tracks were declared")
		}
	default:
		if old := h.audioTrack.Codec.(media.AAC).Config; !bytes.Equal(old, cfg.Raw) && !h.ascChangeNoted {
			h.ascChangeNoted = true
			h.log.Warn("rtmp AAC configuration changed mid-stream; keeping the declared one", "sample_rate", cfg.SampleRate, "channels", cfg.Channels)
		}
	}
	return h.maybeDeclare()
}

// ignoreAudio stops taking audio from this publisher, logging why once.
func (h *tagSink) ignoreAudio(why string) {
	h.expectAudio = no
	if h.audioIgnored {
		return
	}
	h.audioIgnored = true
	if h.audioTrack != nil && !h.declared {
		h.audioTrack = nil
	}
	h.log.Warn("rtmp audio ignored", "reason", why)
}

func (h *tagSink) noteConfig() {
	if h.firstCfgAt.IsZero() {
		h.firstCfgAt = time.Now()
	}
}

// maybeDeclare declares the tracks once what is expected has arrived, or
// once configWait has passed since the first sequence header.
func (h *tagSink) maybeDeclare() error {
	if h.declared || h.stream == nil {
		return nil
	}
	haveV, haveA := h.videoTrack != nil, h.audioTrack != nil
	if !haveV && !haveA {
		return nil
	}
	complete := (haveV || h.expectVideo == no) && (haveA || h.expectAudio == no)
	if !complete {
		if time.Since(h.firstCfgAt) < h.configWait {
			return nil
		}
		missing := "audio"
		if !haveV {
			missing = "video"
		}
		h.log.Info("rtmp declaring tracks without "+missing, "reason", fmt.Sprintf("no %s sequence header within %v of the first one", missing, h.configWait))
	}
	var tracks []*media.Track
	if haveV {
		tracks = append(tracks, h.videoTrack)
	}
	if haveA {
		tracks = append(tracks, h.audioTrack)
	}
	if err := h.stream.SetTracks(tracks...); err != nil {
		return err
	}
	h.declared = true
	pending := h.pending
	h.pending, h.pendingBytes = nil, 0
	for _, u := range pending {
		h.write1(u)
	}
	return nil
}

// emit writes a unit, or keeps it until the tracks are declared. Video
// starts at the first IDR.
func (h *tagSink) emit(u *media.Unit, size int) error {
	if !h.declared && (len(h.pending) >= maxPendingUnits || h.pendingBytes+size > maxPendingBytes) {
		// Tracks still not declared after this much: start over from the
		// next IDR rather than grow.
		h.dropped += uint64(len(h.pending))
		h.pending, h.pendingBytes = nil, 0
		h.videoStarted = false
	}
	if u.NALUs != nil && !h.videoStarted {
		if !u.Key {
			h.dropped++
			return h.maybeDeclare()
		}
		h.videoStarted = true
	}
	if h.declared {
		h.write1(u)
		return nil
	}
	h.pending = append(h.pending, u)
	h.pendingBytes += size
	return h.maybeDeclare()
}

// write1 hands a unit to the hub if its track was declared.
func (h *tagSink) write1(u *media.Unit) {
	switch {
	case u.Track == nil:
		return
	case u.Track == h.videoTrack:
		h.videoUnits++
	case u.Track == h.audioTrack:
		h.audioUnits++
	default: // audio given up on before the declaration
		return
	}
	h.stream.Write(u)
}

// rtmpClock is one track's clock over RTMP's 32-bit millisecond
// timestamps: media.SourceClock unwraps them (every 49.7 days) and takes a
// step that is more than media.MaxTimestampJump off the time that passed
// as a discontinuity, so a publisher stamping its tags 2^31 ms apart
// cannot overflow the stream clock.
type rtmpClock struct {
	media.SourceClock
	started bool
}

// streamTime returns the stream time in milliseconds of a tag of track
// kind stamped ts; the first tag's time is its timestamp.
func (h *tagSink) streamTime(c *rtmpClock, kind string, ts uint32) int64 {
	now := time.Now()
	if !c.started {
		c.Rate, c.started = 1000, true
		c.Start(uint64(ts), time.Duration(ts)*time.Millisecond, now)
		return int64(ts)
	}
	d, jumped := c.Time(uint64(ts), now)
	if jumped {
		h.jumps++
		if ok, n := h.jumpLog.Allow(""); ok {
			h.log.Warn("rtmp timestamp jump: taken as a discontinuity, the stream clock goes on",
				"track", kind, "timestamp_ms", ts, "jumps", h.jumps, "suppressed", n)
		}
	}
	return d.Milliseconds()
}

// streamPath builds the stream path and key from the connect app name and
// the publish (or play) stream name; see the package doc.
func streamPath(app, name string) (path, key string, err error) {
	name, nameQuery, _ := strings.Cut(name, "?")
	app, appQuery, _ := strings.Cut(app, "?")
	app = strings.Trim(app, "/")
	name = strings.Trim(name, "/")
	if name == "" {
		return "", "", errors.New("empty stream name")
	}
	path = name
	if app != "" {
		path = app + "/" + name
	}
	if err := streampath.Check(path); err != nil {
		return "", "", err
	}
	key = queryKey(nameQuery)
	if key == "" {
		key = queryKey(appQuery)
	}
	return path, key, nil
}

func queryKey(q string) string {
	if q == "" {
		return ""
	}
	v, _ := url.ParseQuery(q)
	return v.Get("key")
}

// sanitizeForLog drops the query (which may hold the key) from a name the
// peer sent, and bounds its length; the log handler quotes the rest.
func sanitizeForLog(name string) string {
	name, _, _ = strings.Cut(name, "?")
	if len(name) > 64 {
		name = name[:64] + "..."
	}
	return name
}
