package transcode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode/av"
)

// Opus -> AAC for the legacy egress (RTMP, SRT).
//
// Why not a media.Processor like AAC -> Opus: a processor rewrites the unit
// it is given, one unit in, the same unit out. AAC -> Opus gets away with
// that because its output rides in Unit.RTP. Opus -> AAC cannot: 20 ms Opus
// packets become 21.3 ms AAC frames, so one Opus unit completes zero, one
// or two AAC frames, and the RTMP/SRT muxers want AAC *units* (raw frames
// with timestamps and an AudioSpecificConfig on the track), not a side
// field of an Opus unit that other readers (WHEP) use as it is.
//
// So the transcode is a derived stream, an "AAC view": a media.Stream of
// its own (in a private registry, so WHEP and the registry's Paths never see
// it) whose tracks are the source's, with every Opus track replaced by an
// AAC track. One goroutine per view reads the source (a media.Reader like
// any other: a slow view drops and never slows the publisher), passes
// video units through (a shallow copy pointing at the view's track: the
// NAL units are shared, not copied) and turns Opus units into AAC units.
// RTMP and SRT egress read the view exactly as they read any stream, so
// they need no special case, and the view's own hub gives them everything
// a stream has: bounded queues, keyframe skipping, the GOP cache for an
// instant start.
//
// AACViews hands views out reference-counted per (source stream, bitrate):
// the first egress that needs AAC from an Opus stream starts the view,
// every other one (RTMP push targets, RTMP players, SRT targets and
// readers) shares it, and the last one to leave stops it. A stream is thus
// transcoded at most once per bitrate, however many readers need AAC, and
// only while someone does.

// DefaultAACBitrate is the AAC bitrate when a route sets none.
const DefaultAACBitrate = 128_000

// OpusToAAC decodes one Opus track and encodes AAC-LC, 48 kHz stereo (a mono
// source is sent on both channels). It is the converter inside an AAC view;
// use AACViews rather than this directly unless you need the units
// yourself. Not safe for concurrent use.
//
// Timestamps: an AAC unit's PTS (and DTS) is the time of its first decoded
// sample when the decoder does not trim the encoder's priming, which is
// how FLV and MPEG-TS players decode it: the first unit's PTS is the first
// Opus unit's PTS less 1024 samples (21.3 ms, av.Encoder.Delay), and may
// be negative. The audio itself stays where the Opus audio was. Gaps in
// the source up to 100 ms are filled with silence so that frames stay
// contiguous; larger ones restart the timeline (see av.Encoder.Encode) and
// Transcode reports them (an error wrapping errDiscontinuity).
type OpusToAAC struct {
	src      *media.Track // the Opus track the decoder was made for
	channels int          // decoder channels
	dec      *av.Decoder
	enc      *av.Encoder
	codec    media.AAC
}

// NewOpusToAAC returns a converter for Opus track t at bitrate bit/s (0:
// DefaultAACBitrate). It fails when this build cannot transcode
// (CanTranscodeAudio) or FFmpeg cannot open the codecs.
func NewOpusToAAC(t *media.Track, bitrate int) (*OpusToAAC, error) {
	if _, ok := t.Codec.(media.Opus); !ok {
		return nil, fmt.Errorf("opus->aac: %s is not Opus", t)
	}
	if bitrate <= 0 {
		bitrate = DefaultAACBitrate
	}
	c := &OpusToAAC{}
	if err := c.openDecoder(t); err != nil {
		return nil, err
	}
	enc, err := av.NewEncoder("aac", 48000, 2, bitrate)
	if err != nil {
		c.dec.Close()
		return nil, fmt.Errorf("opus->aac: %s: %w", t, err)
	}
	asc := bytes.Clone(enc.Extradata())
	var cfg mpeg4audio.AudioSpecificConfig
	if err := cfg.Unmarshal(asc); err != nil {
		c.dec.Close()
		enc.Close()
		return nil, fmt.Errorf("opus->aac: %s: the AAC encoder's AudioSpecificConfig %x: %w", t, asc, err)
	}
	c.enc = enc
	c.codec = media.AAC{Config: asc, SampleRate: enc.SampleRate(), Channels: enc.Channels()}
	return c, nil
}

// openDecoder (re)opens the decoder for Opus track t.
func (c *OpusToAAC) openDecoder(t *media.Track) error {
	ch := 2
	if o, ok := t.Codec.(media.Opus); ok && o.Channels == 1 {
		ch = 1
	}
	dec, err := av.NewDecoder("opus", nil, 48000, ch)
	if err != nil {
		return fmt.Errorf("opus->aac: %s: %w", t, err)
	}
	if c.dec != nil {
		c.dec.Close()
	}
	c.src, c.channels, c.dec = t, ch, dec
	return nil
}

// Codec describes the AAC the converter makes: its AudioSpecificConfig
// (from the encoder), 48000 Hz, 2 channels.
func (c *OpusToAAC) Codec() media.AAC { return c.codec }

// Transcode decodes Opus unit u and returns the AAC units it completed
// (often one, sometimes none or two), on track out. A unit of another Opus
// track than the last one (a new publisher took the stream over) gets a
// fresh decoder; the encoder carries on, so the AAC timeline stays
// continuous. On a decode error the units completed so far are returned
// with it; the converter stays usable.
func (c *OpusToAAC) Transcode(u *media.Unit, out *media.Track) ([]*media.Unit, error) {
	if u.Track != c.src && u.Track != nil {
		if err := c.openDecoder(u.Track); err != nil {
			return nil, err
		}
	}
	restarted := c.enc.Restarts()
	frames, err := c.dec.Decode(u.Data, media.ClockTicks(u.PTS, 48000))
	var units []*media.Unit
	for _, f := range frames {
		pkts, encErr := c.enc.Encode(f)
		units = c.appendUnits(units, pkts, out)
		if encErr != nil && err == nil {
			err = encErr
		}
	}
	if err = discontinuity(c.enc, restarted, err); err != nil {
		return units, fmt.Errorf("opus->aac: %s: unit at %v: %w", c.src, u.PTS.Round(time.Millisecond), err)
	}
	return units, nil
}

// Flush returns the AAC units still buffered in the encoder (the end of the
// source). The converter can not be used after it.
func (c *OpusToAAC) Flush(out *media.Track) ([]*media.Unit, error) {
	pkts, err := c.enc.Flush()
	return c.appendUnits(nil, pkts, out), err
}

func (c *OpusToAAC) appendUnits(units []*media.Unit, pkts []av.Packet, out *media.Track) []*media.Unit {
	rate := c.enc.SampleRate()
	for _, p := range pkts {
		ts := ticksToDuration(p.PTS, rate)
		units = append(units, &media.Unit{Track: out, PTS: ts, DTS: ts, Key: true, Data: p.Data})
	}
	return units
}

// Close releases the codecs. It is idempotent.
func (c *OpusToAAC) Close() {
	c.dec.Close()
	c.enc.Close()
}

// ticksToDuration converts ticks at rate (> 0) to a duration, truncating,
// without overflowing for any timestamp a stream reaches.
func ticksToDuration(ticks int64, rate int) time.Duration {
	r := int64(rate)
	return time.Duration(ticks/r)*time.Second + time.Duration(ticks%r)*time.Second/time.Duration(r)
}

// NeedsAAC reports whether tracks have an Opus track, i.e. whether an
// egress that carries AAC only needs an AAC view of the stream.
func NeedsAAC(tracks []*media.Track) bool {
	return slices.ContainsFunc(tracks, func(t *media.Track) bool {
		_, ok := t.Codec.(media.Opus)
		return ok
	})
}

// AACViews hands out AAC views of streams (see the top of this file): one
// per source stream and bitrate, shared by every caller and stopped when
// the last one releases it. The zero value is not usable; create one with
// NewAACViews, once per process (cmd/bridge), and give it to every egress
// that needs AAC. Safe for concurrent use.
type AACViews struct {
	log *slog.Logger

	mu    sync.Mutex
	views map[viewKey]*aacView // guarded by mu
}

type viewKey struct {
	src     *media.Stream
	bitrate int
}

// NewAACViews returns an empty set of views logging to log (slog.Default
// if nil).
func NewAACViews(log *slog.Logger) *AACViews {
	if log == nil {
		log = slog.Default()
	}
	return &AACViews{log: log, views: make(map[viewKey]*aacView)}
}

// viewQueueSize is the view's reader queue on its source: a few seconds of
// units on top of the cached GOP, so a view that falls behind for a moment
// (the transcoder competing for a core) does not drop.
const viewQueueSize = 1024

// Acquire returns a stream carrying src with its Opus audio as AAC at
// bitrate bit/s (0: DefaultAACBitrate), and the function that releases it
// (call it once the stream's readers are closed; more calls do nothing).
//
// When src has no Opus track, that stream is src itself and release does
// nothing. Otherwise it is the view: the same tracks in the same order
// (video as it is, each Opus track as an AAC track described by the
// encoder: 48 kHz stereo), the same timestamps (AAC as described on
// OpusToAAC), the same path. The view ends when src ends, when a publisher
// with other codecs takes src over (its readers get media.ErrStreamEnded
// either way: acquire again to follow the new publisher), or when the last
// caller releases it. A compatible takeover goes through the view like
// through any reader. Units from src's GOP cache are converted before
// Acquire returns, so a reader of the view created with
// media.ReaderOptions.StartAtKeyframe starts at once like one of src.
//
// Acquire fails if src's tracks are not known yet (wait for src.Ready()),
// if src has ended, or if the audio cannot be transcoded (a build without
// FFmpeg, CanTranscodeAudio): the caller may then send src without its
// Opus tracks.
func (a *AACViews) Acquire(src *media.Stream, bitrate int) (*media.Stream, func(), error) {
	tracks := src.Tracks()
	if tracks == nil {
		return nil, nil, fmt.Errorf("aac view of %q: the stream's tracks are not known yet", src.Path())
	}
	if !NeedsAAC(tracks) {
		return src, func() {}, nil
	}
	select {
	case <-src.Done():
		return nil, nil, fmt.Errorf("aac view of %q: %w", src.Path(), media.ErrStreamEnded)
	default:
	}
	if bitrate <= 0 {
		bitrate = DefaultAACBitrate
	}
	key := viewKey{src, bitrate}
	a.mu.Lock()
	defer a.mu.Unlock()
	v := a.views[key]
	if v == nil || v.ended() {
		var err error
		if v, err = a.start(src, bitrate); err != nil {
			return nil, nil, err
		}
		a.views[key] = v
	}
	v.refs++
	var once sync.Once
	return v.pub.Stream, func() { once.Do(func() { a.release(key, v) }) }, nil
}

func (a *AACViews) release(key viewKey, v *aacView) {
	a.mu.Lock()
	v.refs--
	last := v.refs == 0
	if last && a.views[key] == v {
		delete(a.views, key)
	}
	a.mu.Unlock()
	if last {
		v.stop()
	}
}

// aacView is one running view.
type aacView struct {
	log    *slog.Logger
	pub    *media.Publication // the view stream, written by run only
	reader *media.Reader      // on the source
	out    []*media.Track     // the view's tracks, by source track ID
	conv   []*OpusToAAC       // by source track ID; nil for passed-through tracks
	errs   int                // conversion errors, for rate-limited logs
	errLog time.Time

	refs   int // guarded by AACViews.mu
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned
}

// start makes and starts the view of src. Called with a.mu held.
func (a *AACViews) start(src *media.Stream, bitrate int) (_ *aacView, err error) {
	if !CanTranscodeAudio() {
		return nil, fmt.Errorf("aac view of %q: Opus audio cannot be transcoded to AAC: %w", src.Path(), av.ErrUnavailable)
	}
	log := a.log.With("stream", src.Path(), "view", "aac")
	v := &aacView{log: log, done: make(chan struct{})}
	defer func() {
		if err != nil {
			for _, c := range v.conv {
				if c != nil {
					c.Close()
				}
			}
		}
	}()
	tracks := src.Tracks()
	v.out = make([]*media.Track, len(tracks))
	v.conv = make([]*OpusToAAC, len(tracks))
	for i, t := range tracks {
		if _, ok := t.Codec.(media.Opus); ok {
			c, err := NewOpusToAAC(t, bitrate)
			if err != nil {
				return nil, fmt.Errorf("aac view of %q: %w", src.Path(), err)
			}
			v.conv[i] = c
			v.out[i] = &media.Track{Codec: c.Codec()}
			continue
		}
		v.out[i] = &media.Track{Codec: t.Codec}
	}
	// A registry of its own: the view is not a stream anyone can find.
	reg := media.NewRegistry(a.log.With("view", "aac"))
	pub, err := reg.Publish(src.Path(), "aac view of "+src.Publisher())
	if err != nil {
		return nil, fmt.Errorf("aac view of %q: %w", src.Path(), err)
	}
	if err := pub.SetTracks(v.out...); err != nil {
		pub.Close()
		return nil, fmt.Errorf("aac view of %q: %w", src.Path(), err)
	}
	v.pub = pub
	r, err := src.NewReader(media.ReaderOptions{Name: "aac view", QueueSize: viewQueueSize, StartAtKeyframe: true})
	if err != nil {
		pub.Close()
		return nil, fmt.Errorf("aac view of %q: %w", src.Path(), err)
	}
	v.reader = r
	// Convert what is queued already (the source's cached GOP) now, so the
	// view's own GOP cache holds it before the first reader of the view
	// joins. A cancelled context makes Read return queued units only.
	now, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	for {
		u, err := r.Read(now)
		if err != nil {
			break
		}
		v.convert(u)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	go v.run(ctx)
	log.Info("aac view started", "bitrate", bitrate)
	return v, nil
}

// ended reports whether the view has ended by itself (its source ended).
func (v *aacView) ended() bool {
	select {
	case <-v.pub.Done():
		return true
	default:
		return false
	}
}

// stop ends the view and waits for its goroutine.
func (v *aacView) stop() {
	v.cancel()
	<-v.done
}

func (v *aacView) run(ctx context.Context) {
	defer close(v.done)
	defer panics.Recover("aac view", v.log, v.abort)
	var reason error
	for {
		u, err := v.reader.Read(ctx)
		if err != nil {
			reason = err
			break
		}
		v.convert(u)
	}
	v.reader.Close()
	if !errors.Is(reason, context.Canceled) {
		// The source ended: what the encoders still hold belongs to it.
		for i, c := range v.conv {
			if c != nil {
				units, _ := c.Flush(v.out[i])
				for _, u := range units {
					v.pub.Write(u)
				}
			}
		}
	}
	for _, c := range v.conv {
		if c != nil {
			c.Close()
		}
	}
	v.pub.Close()
	if errors.Is(reason, context.Canceled) {
		reason = errors.New("no reader left")
	}
	v.log.Info("aac view stopped", "reason", reason.Error())
}

// abort ends a view whose goroutine panicked (in a conversion of publisher
// input, say): the view's stream ends first, so its readers see the end and
// the next Acquire starts a new view, whatever the converters' state. Every
// step is idempotent: the panic may have come after some of them.
func (v *aacView) abort() {
	v.pub.Close()
	v.reader.Close()
	for _, c := range v.conv {
		if c != nil {
			c.Close()
		}
	}
}

// convert writes the view's units for source unit u.
func (v *aacView) convert(u *media.Unit) {
	id := u.Track.ID
	if id < 0 || id >= len(v.out) {
		return // a track the view was not made with (cannot happen: takeovers keep the count)
	}
	c := v.conv[id]
	if c == nil {
		cp := *u
		cp.Track = v.out[id]
		cp.RTP = nil // WebRTC's packets: not for the legacy egress
		v.pub.Write(&cp)
		return
	}
	if _, ok := u.Track.Codec.(media.Opus); !ok {
		return // cannot happen either: a takeover keeps the codecs
	}
	units, err := c.Transcode(u, v.out[id])
	for _, au := range units {
		v.pub.Write(au)
	}
	if err != nil {
		v.errs++
		if now := time.Now(); now.Sub(v.errLog) >= time.Second {
			v.log.Warn("opus->aac failed", "err", err, "errors", v.errs)
			v.errLog, v.errs = now, 0
		}
	}
}
