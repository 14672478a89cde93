package rtmp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/yutopp/go-rtmp/message"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/connlimit"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/sessionlog"
)

// Play support: the server speaks the protocol up to the play command,
// asks Config.Authorize (Action Read, with the "key" query parameter of
// the stream name or of the app as the credential) and hands the
// connection of an admitted player to Config.Play, which sends the media
// (cmd/bridge wires it to egress/rtmp.Play). This package only knows RTMP.

// PlayRequest describes an admitted play request, for Config.Play.
type PlayRequest struct {
	// Path is the stream path, built like a publish's (see the package
	// doc): rtmp://host/live/test plays "live/test".
	Path string
	// Remote is the player's address.
	Remote string
}

// ErrStreamNotFound, returned (wrapped) by Config.Play before it writes
// anything, refuses the play with NetStream.Play.StreamNotFound.
var ErrStreamNotFound = errors.New("stream not found")

// PlayWriter sends a playing client its media; Config.Play gets one per
// admitted play request.
//
// The play is refused if Config.Authorize refuses it, or if Config.Play
// returns before its first WriteMessage: the client gets an onStatus
// error whose code and description follow the error (ErrStreamNotFound: NetStream.Play.StreamNotFound;
// access.ErrNoStream and *access.Elsewhere: NetStream.Play.StreamNotFound;
// access.ErrBadKey, access.ErrNoRoute: NetStream.Play.Failed saying so;
// anything else NetStream.Play.Failed "play failed"; the error itself is
// logged, not sent). The first WriteMessage starts the play (User Control
// StreamBegin, onStatus NetStream.Play.Reset and NetStream.Play.Start).
// When Config.Play returns after that, the client gets
// NetStream.Play.Stop. Either way the connection is closed afterwards.
//
// The first WriteMessage fails, and the play is refused with
// NetStream.Play.Failed, when the stream at the request's path has more
// readers than Config.MaxReaders allows, counting the hub reader Config.Play
// attached for this player: Config.Play should attach its reader before
// its first write and return the write's error.
//
// Config.Play runs on the connection's goroutine, which reads nothing from
// the client meanwhile (a player sends nothing that matters once it
// plays), so the writes cannot race go-rtmp's own. Its ctx ends when the
// server closes; a client that goes away shows as a WriteMessage error,
// and so does one that stops reading for the server's write timeout
// (10 s).
type PlayWriter interface {
	// WriteMessage sends one message on the played message stream: typeID
	// 8 (an FLV AUDIODATA body), 9 (an FLV VIDEODATA body) or 18 (AMF0
	// data: the name, e.g. "onMetaData", then the values), at timestamp
	// ts in ms. payload is only read during the call.
	WriteMessage(typeID uint8, ts uint32, payload []byte) error
}

// Status codes of a play besides go-rtmp's own.
const (
	codePlayReset          message.NetStreamOnStatusCode = "NetStream.Play.Reset"
	codePlayStop           message.NetStreamOnStatusCode = "NetStream.Play.Stop"
	codePlayStreamNotFound message.NetStreamOnStatusCode = "NetStream.Play.StreamNotFound"
)

// Chunk streams of the play messages (as ffmpeg's server uses them).
const (
	playAudioChunkStreamID = 4
	playVideoChunkStreamID = 6
	playDataChunkStreamID  = statusChunkStreamID
)

type playWriter struct {
	h        *handler
	log      *slog.Logger // the handler's, with the stream and the route
	streamID uint32
	path     string
	started  bool
	// bytes and frames count the audio and video tags sent.
	bytes, frames uint64
}

func (w *playWriter) WriteMessage(typeID uint8, ts uint32, payload []byte) error {
	h := w.h
	if !w.started {
		// Config.Play has authorized the player and attached its hub
		// reader: the count includes this player, so concurrent plays
		// can be refused together but never all admitted past the limit,
		// and a player the route refuses learns nothing about the
		// stream's audience.
		if err := h.srv.gate.CheckReaders(h.srv.reg, w.path, 0); err != nil {
			return err
		}
		w.started = true
		if err := h.write(2, 0, 0, &message.UserCtrl{Event: &message.UserCtrlEventStreamBegin{StreamID: w.streamID}}); err != nil {
			return err
		}
		if err := h.sendStatus(w.streamID, message.NetStreamOnStatusLevelStatus, codePlayReset, "Playing and resetting."); err != nil {
			return err
		}
		if err := h.sendStatus(w.streamID, message.NetStreamOnStatusLevelStatus, message.NetStreamOnStatusCodePlayStart, "Started playing."); err != nil {
			return err
		}
		w.log.Info("rtmp play started")
	}
	if typeID == 8 || typeID == 9 {
		w.bytes += uint64(len(payload))
		w.frames++
	}
	switch typeID {
	case 8:
		return h.write(playAudioChunkStreamID, w.streamID, ts, &message.AudioMessage{Payload: bytes.NewReader(payload)})
	case 9:
		return h.write(playVideoChunkStreamID, w.streamID, ts, &message.VideoMessage{Payload: bytes.NewReader(payload)})
	case 18:
		// go-rtmp writes a data message as its name, then the body.
		if len(payload) < 3 || payload[0] != 0x02 {
			return errors.New("play: data message does not start with an AMF0 string")
		}
		n := 3 + (int(payload[1])<<8 | int(payload[2]))
		if len(payload) < n {
			return errors.New("play: data message name is truncated")
		}
		return h.write(playDataChunkStreamID, w.streamID, ts, &message.DataMessage{
			Name: string(payload[3:n]), Encoding: message.EncodingTypeAMF0, Body: bytes.NewReader(payload[n:]),
		})
	}
	return fmt.Errorf("play: message type %d is not audio, video or data", typeID)
}

// play runs Config.Play for a play request (see PlayWriter), then ends the
// connection.
func (h *handler) play(streamID uint32, cmd *message.NetStreamPlay) error {
	path, key, perr := streamPath(h.rawApp, cmd.StreamName)
	logPath := path
	if perr != nil {
		logPath = sanitizeForLog(cmd.StreamName)
	}
	refuse := func(code message.NetStreamOnStatusCode, desc string, cause error) error {
		reason := desc
		if cause != nil {
			reason = cause.Error()
		}
		_ = h.sendStatus(streamID, message.NetStreamOnStatusLevelError, code, desc)
		h.srv.gate.LogKind(h.log, addrlimit.AddrOf(h.c.peer), string(code), "rtmp play refused", "stream", logPath, "reason", reason)
		h.quiet = true
		return h.setErr(&refusal{reason: "play refused: " + reason})
	}
	switch {
	case perr != nil:
		return refuse(message.NetStreamOnStatusCodePlayFailed, perr.Error(), nil)
	case h.stream != nil || h.ended:
		return refuse(message.NetStreamOnStatusCodePlayFailed, "this connection publishes: play on a connection of its own", nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	panics.Go(panicComponent, h.log, func() {
		select {
		case <-h.srv.done:
			cancel()
		case <-ctx.Done():
		}
	})
	w := &playWriter{h: h, streamID: streamID, path: path}
	started := time.Now()
	h.c.role.Store(&connRole{kind: access.SessionRTMPPlay, path: path, since: started})
	grant, err := h.srv.auth(access.Request{Action: access.Read, Protocol: access.RTMP, Path: path, Credential: key, Remote: h.c.peer})
	if err == nil {
		w.log = grant.Logger(h.log.With("stream", path))
		err = h.srv.play(ctx, PlayRequest{Path: path, Remote: h.c.peer}, w)
	}
	cancel()
	if !w.started {
		if err == nil {
			err = errors.New("nothing to play")
		}
		switch {
		case errors.Is(err, connlimit.ErrReaders):
			_ = h.sendStatus(streamID, message.NetStreamOnStatusLevelError, message.NetStreamOnStatusCodePlayFailed, fmt.Sprintf("play %q refused: %v", path, err))
			h.srv.gate.Log(addrlimit.AddrOf(h.c.peer), "rtmp play refused", "peer", h.c.peer, "stream", path, "reason", err.Error())
			h.quiet = true
			return h.setErr(&refusal{reason: "play refused: " + err.Error()})
		case errors.Is(err, ErrStreamNotFound), errors.Is(err, access.ErrNoStream), access.ElsewhereOf(err) != nil:
			return refuse(codePlayStreamNotFound, fmt.Sprintf("stream %q not found", path), err)
		case errors.Is(err, access.ErrBadKey):
			return refuse(message.NetStreamOnStatusCodePlayFailed, fmt.Sprintf("play %q refused: missing or wrong key", path), err)
		case errors.Is(err, access.ErrNoRoute):
			return refuse(message.NetStreamOnStatusCodePlayFailed, fmt.Sprintf("play %q refused: %v", path, access.ErrNoRoute), err)
		default:
			return refuse(message.NetStreamOnStatusCodePlayFailed, fmt.Sprintf("play %q failed", path), err)
		}
	}
	reason := "play ended"
	if err != nil {
		reason = err.Error()
	}
	_ = h.sendStatus(streamID, message.NetStreamOnStatusLevelStatus, codePlayStop, "Stopped playing.")
	sessionlog.End(w.log, "rtmp play ended", started, w.bytes, w.frames, reason)
	h.quiet = true
	return h.setErr(&refusal{reason: "play ended: " + reason})
}
