package rtmp

import (
	"context"
	"log/slog"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
)

// MessageWriter sends RTMP messages to a player on the message stream it
// plays. The RTMP ingest server's play hook hands one over
// (ingest/rtmp.PlayWriter has this method set).
type MessageWriter interface {
	// WriteMessage sends one message: typeID 8 (an FLV AUDIODATA body), 9
	// (an FLV VIDEODATA body) or 18 (AMF0 data: the name, e.g.
	// "onMetaData", then the values), at timestamp ts in ms. payload is
	// only read during the call.
	WriteMessage(typeID uint8, ts uint32, payload []byte) error
}

// PlayOptions configures Play.
type PlayOptions struct {
	// Name identifies the player in logs, e.g. "rtmp play 10.0.0.5:51234".
	Name string
	// AACBitrate is the bitrate (bit/s) of AAC made from Opus audio; 0
	// means transcode.DefaultAACBitrate.
	AACBitrate int
	// AAC shares the Opus -> AAC transcode of a stream with the other
	// egresses that need it. nil transcodes for this player alone.
	AAC *transcode.AACViews
	// Log receives the player's events; nil means slog.Default().
	Log *slog.Logger
}

// Play sends st to a player through w (see the package doc for what it
// sends) until the stream ends, w fails (the player left or stopped
// reading) or ctx ends, and returns why: an error wrapping
// media.ErrStreamEnded (or media.ErrIncompatibleRepublish) when the stream
// ended, the write error, or ctx's error. It waits for st's tracks if they
// are not known yet.
func Play(ctx context.Context, w MessageWriter, st *media.Stream, opts PlayOptions) error {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if err := st.WaitReady(ctx); err != nil {
		return err
	}
	views := opts.AAC
	if views == nil {
		views = transcode.NewAACViews(log)
	}
	src, release := source(st, views, opts.AACBitrate, log)
	defer release()
	out, skipped, err := newFLVOut(src, w.WriteMessage, false)
	if err != nil {
		return err
	}
	for _, s := range skipped {
		log.Info("track not played: RTMP carries H.264 and AAC only", "track", s, "reader", opts.Name)
	}
	name := opts.Name
	if name == "" {
		name = "rtmp play"
	}
	r, err := src.NewReader(media.ReaderOptions{Name: name, StartAtKeyframe: true})
	if err != nil {
		return err
	}
	defer r.Close()
	return out.run(ctx, r)
}
