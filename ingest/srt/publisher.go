package srt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	mpegtscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/internal/reconnect"
	"github.com/wishbridge/bridge/internal/sessionlog"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
)

// Limits of the pre-declaration buffer: more than 10 s of audio (the
// longest the declaration waits for a video keyframe).
const (
	maxPendingUnits = 1024
	maxPendingBytes = 16 << 20
)

type esKind uint8

const (
	kindH264 esKind = iota + 1
	kindH265
	kindAAC
	kindOpus
)

func (k esKind) String() string {
	switch k {
	case kindH264:
		return "H264"
	case kindH265:
		return "H265"
	case kindAAC:
		return "AAC"
	case kindOpus:
		return "Opus"
	default:
		return "unknown"
	}
}

// esTrack is one elementary stream of the program that is used.
type esTrack struct {
	pid  uint16
	kind esKind
	// track is the hub track once it is ready (audio: from the PMT;
	// video: at its first keyframe with parameter sets). Nil after the
	// declaration if the track was left out.
	track   *media.Track
	gotData bool // a PES arrived
	noted   bool // "started after the tracks were declared" was logged
}

// publisherConfig is what a publisher takes from the Server that accepted
// its connection, or from the Puller that made it.
type publisherConfig struct {
	// what names the publisher in log messages: "publish" ("srt publish
	// ended") or "pull".
	what         string
	latency      time.Duration // for the log
	setupTimeout time.Duration // from the connection to the MPEG-TS program (PAT, PMT)
	idleTimeout  time.Duration // no MPEG-TS packet
	trackWait    time.Duration // a PMT track that sends nothing
	keyframeWait time.Duration // video without a usable keyframe
	// onPublish, if set, is called with the stream before any of its
	// units is written (tests attach readers there).
	onPublish func(*media.Stream)
	// maxBitrate bounds what the peer sends, in bit/s averaged over
	// bitrateWindow; 0 means no bound. onBitrate, if set, is called when
	// the bound ends the publisher (for the Server's refusal count).
	maxBitrate int64
	onBitrate  func()
}

// publisher is one SRT connection that sends MPEG-TS (accepted by the
// Server, or made by a Puller): it demuxes it into the hub. run and
// everything it calls (the mpegts.Reader callbacks included) happen on one
// goroutine; stop and the counters are safe from any.
type publisher struct {
	cfg     publisherConfig
	conn    gosrt.Conn
	stream  *media.Publication
	peer    string
	log     *slog.Logger
	started time.Time
	// attempt, set by a pull before run, takes the start line and the end
	// line's counts: its reconnect loop logs the session's story.
	attempt *reconnect.Attempt

	idle *time.Timer

	mu     sync.Mutex
	reason error // guarded by mu: why stop was called
	once   sync.Once

	bytes       atomic.Uint64
	demuxErrors atomic.Uint64
	programRead atomic.Bool // Initialize found the program

	// Demux state, owned by run's goroutine.
	in          tsReader
	clock       media.SourceClock // every PES timestamp, 90 kHz, 33 bits
	clockOn     bool              // started on the first timestamp
	jumps       uint64            // timestamp discontinuities re-anchored
	jumpLog     ratelog.Limiter   // one line per interval for them
	video       *esTrack
	audio       *esTrack
	h264        *transcode.H264Normalizer
	h265        transcode.H265Normalizer
	videoSynced bool // a keyframe has been taken since the start or the last error
	replayHold  bool // an error hit the bytes mediacommon replays after Initialize
	pmtAt       time.Time
	audioRate   int

	declared     bool
	pending      []*media.Unit
	pendingBytes int
	origin       time.Duration // stream time 0, on the source clock
	// audioFloor: audio before the first video frame is dropped, until an
	// audio unit at or after it arrives.
	audioFloor    time.Duration
	audioFloorSet bool
	videoFrames   uint64
	audioFrames   uint64
	videoSkipped  uint64 // video units dropped waiting for a keyframe (at the start, after errors)

	errLogged uint64    // demuxErrors when last logged
	errLogAt  time.Time // when last logged
	lastErr   error     // the last error counted
}

func newPublisher(cfg publisherConfig, conn gosrt.Conn, st *media.Publication, peer string, log *slog.Logger) *publisher {
	p := &publisher{
		cfg:     cfg,
		conn:    conn,
		stream:  st,
		peer:    peer,
		log:     log,
		started: time.Now(),
	}
	p.in = tsReader{p: p, buf: make([]byte, tsPacketSize+gosrt.MAX_PAYLOAD_SIZE)}
	return p
}

// stop ends the publisher for reason (the first reason wins): the
// connection is closed, so the demux loop's next read fails.
func (p *publisher) stop(reason error) {
	p.mu.Lock()
	if p.reason == nil {
		p.reason = reason
	}
	p.mu.Unlock()
	p.once.Do(func() { _ = p.conn.Close() })
}

func (p *publisher) stopReason() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

// run demuxes until the connection ends, then ends the stream and logs the
// summary.
func (p *publisher) run() {
	if p.attempt != nil {
		p.attempt.Started("latency", p.cfg.latency)
	} else {
		p.log.Info("srt "+p.cfg.what, "latency", p.cfg.latency)
	}
	// A panic in a timer ends the connection; the demux then ends.
	closeConn := func() { _ = p.conn.Close() }
	p.idle = time.AfterFunc(p.cfg.idleTimeout, func() {
		defer panics.Recover(panicComponent, p.log, closeConn)
		p.stop(fmt.Errorf("no MPEG-TS packet for %v", p.cfg.idleTimeout))
	})
	setup := time.AfterFunc(p.cfg.setupTimeout, func() {
		defer panics.Recover(panicComponent, p.log, closeConn)
		if !p.programRead.Load() {
			p.stop(fmt.Errorf("no MPEG-TS program (PAT and PMT) within %v", p.cfg.setupTimeout))
		}
	})
	// The panic boundary: the mediacommon callbacks and the demux loop
	// run in demux; a panic ends this publisher as any error would.
	var err error
	if panics.Do(panicComponent, p.log, func() {
		if p.cfg.onPublish != nil {
			p.cfg.onPublish(p.stream.Stream)
		}
		err = p.demux(setup)
	}) {
		err = errPanicked
	}
	setup.Stop()
	p.idle.Stop()

	reason := p.stopReason()
	switch {
	case reason != nil:
	case errors.Is(err, io.EOF):
		reason = errPeerClosed
	case err != nil:
		reason = err
	default:
		reason = errors.New("demux ended")
	}
	p.stop(reason)
	p.stream.Close()

	var cs gosrt.Statistics
	p.conn.Stats(&cs)
	args := []any{
		"video_frames", p.videoFrames,
		"audio_frames", p.audioFrames,
		"demux_errors", p.demuxErrors.Load(),
	}
	if p.videoSkipped > 0 {
		args = append(args, "video_skipped", p.videoSkipped)
	}
	if n := len(p.pending); n > 0 {
		args = append(args, "undeclared_units", n)
	}
	// Bytes of MPEG-TS read, SRT data packets received.
	if p.attempt != nil {
		p.attempt.Moved(p.bytes.Load(), cs.Accumulated.PktRecv, args...)
		return
	}
	sessionlog.End(p.log, "srt "+p.cfg.what+" ended", p.started, p.bytes.Load(), cs.Accumulated.PktRecv, reason.Error(), args...)
}

// demux reads the program, sets up the tracks and hands every access unit
// to the hub until the connection fails.
func (p *publisher) demux(setup *time.Timer) error {
	r := &mpegts.Reader{R: &p.in}
	err := r.Initialize()
	p.programRead.Store(err == nil)
	setup.Stop()
	if err != nil {
		if reason := p.stopReason(); reason != nil {
			return reason
		}
		return fmt.Errorf("reading the MPEG-TS program (PAT, PMT and the first AAC header): %w", err)
	}
	// mediacommon now replays what Initialize read; errors found in it
	// were counted but could not be placed.
	p.replayHold = p.demuxErrors.Load() > 0
	p.in.initialized = true
	p.pmtAt = time.Now()
	if err := p.setupTracks(r); err != nil {
		return err
	}
	p.in.keep = []uint16{}
	for _, es := range []*esTrack{p.video, p.audio} {
		if es != nil {
			p.in.keep = append(p.in.keep, es.pid)
		}
	}
	r.OnDecodeError(func(err error) { p.demuxError(err, true) })

	for {
		if err := r.Read(); err != nil {
			return err
		}
		if err := p.maybeDeclare(time.Now()); err != nil {
			return err
		}
	}
}

// setupTracks picks the first video and the first audio track of the
// program and registers their callbacks.
func (p *publisher) setupTracks(r *mpegts.Reader) error {
	var found []string
	for _, t := range r.Tracks() {
		var kind esKind
		switch t.Codec.(type) {
		case *mpegtscodecs.H264:
			kind = kindH264
		case *mpegtscodecs.H265:
			kind = kindH265
		case *mpegtscodecs.MPEG4Audio:
			kind = kindAAC
		case *mpegtscodecs.Opus:
			kind = kindOpus
		}
		name := codecName(t.Codec)
		found = append(found, fmt.Sprintf("%s on PID %d", name, t.PID))
		switch {
		case kind == 0:
			p.log.Warn("srt track ignored", "pid", t.PID, "reason", fmt.Sprintf("codec %s is not supported (supported: H264, H265, AAC, Opus)", name))
			continue
		case (kind == kindH264 || kind == kindH265) && p.video != nil,
			(kind == kindAAC || kind == kindOpus) && p.audio != nil:
			p.log.Warn("srt track ignored", "pid", t.PID, "reason", fmt.Sprintf("%s: only the first video and the first audio track are used", name))
			continue
		}
		es := &esTrack{pid: t.PID, kind: kind}
		switch c := t.Codec.(type) {
		case *mpegtscodecs.H264:
			p.video = es
			p.h264 = transcode.NewH264Normalizer(nil, nil)
			r.OnDataH264(t, p.onH264)
		case *mpegtscodecs.H265:
			p.video = es
			r.OnDataH265(t, p.onH265)
		case *mpegtscodecs.MPEG4Audio:
			asc, err := c.Config.Marshal()
			if err != nil || c.Config.SampleRate <= 0 {
				p.log.Warn("srt track ignored", "pid", t.PID, "reason", fmt.Sprintf("AAC configuration from the ADTS header is unusable: %v", err))
				continue
			}
			p.audio = es
			p.audioRate = c.Config.SampleRate
			es.track = &media.Track{Codec: media.AAC{
				Config:     asc,
				SampleRate: c.Config.SampleRate,
				Channels:   aacChannels(c.Config.ChannelConfig),
			}}
			r.OnDataMPEG4Audio(t, p.onAAC)
		case *mpegtscodecs.Opus:
			channels := 2
			if c.Desc != nil && c.Desc.ChannelCount() > 0 {
				channels = c.Desc.ChannelCount()
			}
			p.audio = es
			es.track = &media.Track{Codec: media.Opus{Channels: channels}}
			r.OnDataOpus(t, p.onOpus)
		}
	}
	if p.video == nil && p.audio == nil {
		if len(found) == 0 {
			return errors.New("the MPEG-TS program has no elementary stream")
		}
		return fmt.Errorf("no supported track in the MPEG-TS program (found %s; supported: H264, H265, AAC, Opus)", strings.Join(found, ", "))
	}
	p.log.Debug("srt program", "tracks", found)
	return nil
}

// codecName names a mediacommon MPEG-TS codec for logs ("MPEG1Audio").
func codecName(c mpegtscodecs.Codec) string {
	switch c.(type) {
	case *mpegtscodecs.H264:
		return "H264"
	case *mpegtscodecs.H265:
		return "H265"
	case *mpegtscodecs.MPEG4Audio:
		return "AAC"
	case *mpegtscodecs.Opus:
		return "Opus"
	}
	t := reflect.TypeOf(c)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "unknown"
	}
	return t.Name()
}

// aacChannels is the channel count of an AAC channel configuration (0 when
// the layout is in a PCE).
func aacChannels(cfg uint8) int {
	switch {
	case cfg >= 1 && cfg <= 6:
		return int(cfg)
	case cfg == 7:
		return 8
	default:
		return 0
	}
}

// ts converts a 90 kHz PES timestamp to the publisher's continuous clock,
// counted from the first timestamp:
// media.SourceClock unwraps the 33-bit timestamps and takes a step more
// than media.MaxTimestampJump off the time that passed as a
// discontinuity (counted, logged once per interval), so a sender jumping
// its clock by up to 2^32 ticks per PES cannot overflow the stream clock.
func (p *publisher) ts(raw int64) time.Duration {
	now := time.Now()
	if !p.clockOn {
		p.clock.Rate, p.clock.Bits, p.clockOn = 90000, 33, true
		p.clock.Start(uint64(raw), 0, now) // counted from the first
		return 0
	}
	d, jumped := p.clock.Time(uint64(raw), now)
	if jumped {
		p.jumps++
		if ok, n := p.jumpLog.Allow(""); ok {
			p.log.Warn("srt timestamp jump: taken as a discontinuity, the stream clock goes on", "jumps", p.jumps, "suppressed", n)
		}
	}
	return d
}

// ticksToDuration converts 90 kHz ticks, exactly to the nanosecond and
// without overflow over time.Duration's whole range.
func ticksToDuration(t int64) time.Duration {
	return time.Duration(t/9*100000 + t%9*100000/9)
}

func (p *publisher) onH264(pts, dts int64, au [][]byte) error {
	p.video.gotData = true
	out, key := p.h264.Normalize(au)
	var codec media.Codec
	if sps, pps := p.h264.Params(); key && sps != nil && pps != nil {
		codec = media.H264{SPS: sps, PPS: pps}
	}
	return p.onVideo(pts, dts, out, key, codec)
}

func (p *publisher) onH265(pts, dts int64, au [][]byte) error {
	p.video.gotData = true
	out, key := p.h265.Normalize(au)
	var codec media.Codec
	if vps, sps, pps := p.h265.Params(); key && vps != nil && sps != nil && pps != nil {
		codec = media.H265{VPS: vps, SPS: sps, PPS: pps}
	}
	return p.onVideo(pts, dts, out, key, codec)
}

// onVideo takes a normalized video access unit. codec is set for a
// keyframe whose parameter sets are known.
func (p *publisher) onVideo(rawPTS, rawDTS int64, au [][]byte, key bool, codec media.Codec) error {
	dts, pts := p.ts(rawDTS), p.ts(rawPTS)
	if au == nil {
		return nil
	}
	if p.replayHold {
		p.videoSkipped++
		return nil
	}
	if !p.videoSynced {
		if codec == nil {
			p.videoSkipped++
			return nil
		}
		p.videoSynced = true
	}
	es := p.video
	if es.track == nil {
		if p.declared {
			p.noteLeftOut(es)
			return nil
		}
		es.track = &media.Track{Codec: codec}
	}
	size := 0
	for _, n := range au {
		size += len(n)
	}
	return p.emit(&media.Unit{Track: es.track, PTS: pts, DTS: dts, Key: key, NALUs: au}, size)
}

// onAAC takes the raw frames of one PES: one unit per frame, 1024 samples
// apart.
func (p *publisher) onAAC(rawPTS int64, aus [][]byte) error {
	es := p.audio
	es.gotData = true
	base := p.ts(rawPTS)
	if es.track == nil {
		p.noteLeftOut(es)
		return nil
	}
	for i, au := range aus {
		if len(au) == 0 {
			continue
		}
		t := base + time.Duration(int64(i)*1024*int64(time.Second)/int64(p.audioRate))
		if err := p.emit(&media.Unit{Track: es.track, PTS: t, DTS: t, Key: true, Data: au}, len(au)); err != nil {
			return err
		}
	}
	return nil
}

// onOpus takes the packets of one PES: one unit per packet, each advanced
// by the duration of those before it (20 ms if a packet's TOC is unusable).
func (p *publisher) onOpus(rawPTS int64, packets [][]byte) error {
	es := p.audio
	es.gotData = true
	base := p.ts(rawPTS)
	if es.track == nil {
		p.noteLeftOut(es)
		return nil
	}
	var off int64 // samples at 48 kHz
	for _, pkt := range packets {
		if len(pkt) == 0 {
			continue
		}
		t := base + time.Duration(off*int64(time.Second)/48000)
		if err := p.emit(&media.Unit{Track: es.track, PTS: t, DTS: t, Key: true, Data: pkt}, len(pkt)); err != nil {
			return err
		}
		d := opus.PacketDuration2(pkt)
		if d <= 0 {
			d = 960
		}
		off += d
	}
	return nil
}

// noteLeftOut logs once that a track's units are dropped because the
// tracks were declared without it.
func (p *publisher) noteLeftOut(es *esTrack) {
	if es.noted {
		return
	}
	es.noted = true
	p.log.Warn("srt track ignored", "pid", es.pid, "reason", fmt.Sprintf("%s started after the tracks were declared", es.kind))
}

// emit writes a unit, or keeps it until the declaration.
func (p *publisher) emit(u *media.Unit, size int) error {
	if p.declared {
		if p.audioFloorSet && u.NALUs == nil {
			if u.PTS < p.audioFloor {
				return nil // from before the stream's first video frame
			}
			p.audioFloorSet = false // audio PTS only increase from here
		}
		p.write(u)
		return nil
	}
	p.pending = append(p.pending, u)
	p.pendingBytes += size
	if len(p.pending) >= maxPendingUnits || p.pendingBytes >= maxPendingBytes {
		return p.declare(fmt.Sprintf("%d units (%d bytes) arrived before every track was ready", len(p.pending), p.pendingBytes))
	}
	return p.maybeDeclare(time.Now())
}

// write puts a unit on the stream clock and hands it to the hub.
func (p *publisher) write(u *media.Unit) {
	u.PTS -= p.origin
	u.DTS -= p.origin
	if u.NALUs != nil {
		p.videoFrames++
	} else {
		p.audioFrames++
	}
	p.stream.Write(u)
}

// maybeDeclare declares the tracks once each is ready or given up on (see
// the package doc).
func (p *publisher) maybeDeclare(now time.Time) error {
	if p.declared {
		return nil
	}
	elapsed := now.Sub(p.pmtAt)
	var missing []string
	anyReady := false
	for _, es := range []*esTrack{p.video, p.audio} {
		if es == nil {
			continue
		}
		ready := es.track != nil && es.gotData
		switch {
		case ready:
			anyReady = true
			continue
		case !es.gotData && elapsed >= p.cfg.trackWait:
			missing = append(missing, fmt.Sprintf("%s sent nothing within %v", es.kind, p.cfg.trackWait))
		case es.gotData && elapsed >= p.cfg.keyframeWait:
			missing = append(missing, fmt.Sprintf("no %s keyframe with parameter sets within %v", es.kind, p.cfg.keyframeWait))
		default:
			return nil // still waiting for it
		}
	}
	if !anyReady {
		if len(missing) == 0 {
			return nil
		}
		return fmt.Errorf("no track became ready: %s", strings.Join(missing, "; "))
	}
	return p.declare(strings.Join(missing, "; "))
}

// declare declares the ready tracks, leaving the others out, and writes
// the pending units. why is logged when a track is left out.
func (p *publisher) declare(why string) error {
	var tracks []*media.Track
	for _, es := range []*esTrack{p.video, p.audio} {
		if es == nil {
			continue
		}
		if es.track != nil && es.gotData {
			tracks = append(tracks, es.track)
			continue
		}
		es.track = nil // its units are dropped from now on
		p.log.Warn("srt declaring tracks without "+es.kind.String(), "pid", es.pid, "reason", why)
	}
	if len(tracks) == 0 {
		return fmt.Errorf("no track became ready: %s", why)
	}
	if err := p.stream.SetTracks(tracks...); err != nil {
		return err
	}
	p.declared = true

	// The stream starts at the first video frame: audio from before it
	// is dropped (the muxer may send some of it after the frame, so the
	// floor stays until an audio unit passes it). Every pending unit is of
	// a declared track: a track left out never produced one.
	pending := p.pending
	p.pending, p.pendingBytes = nil, 0
	if p.video != nil && p.video.track != nil {
		for _, u := range pending {
			if u.Track == p.video.track {
				p.audioFloor, p.audioFloorSet = u.PTS, true
				break
			}
		}
	}
	first := true
	for _, u := range pending {
		if p.audioFloorSet && u.NALUs == nil && u.PTS < p.audioFloor {
			continue
		}
		if first || u.DTS < p.origin {
			p.origin, first = u.DTS, false
		}
	}
	for _, u := range pending {
		if err := p.emit(u, 0); err != nil {
			return err
		}
	}
	return nil
}

// demuxError counts a transport or demux error and logs the count at most
// once a second. An error that may have hit video makes video wait for the
// next keyframe.
func (p *publisher) demuxError(err error, video bool) {
	p.demuxErrors.Add(1)
	p.lastErr = err
	// Errors inside the bytes Initialize reads are placed by replayHold.
	if video && p.in.initialized {
		p.videoSynced = false
	}
	p.logErrors(time.Now())
}

// logErrors logs the errors counted since the last line, if any and if the
// last line is a second old (or there was none). It runs on every error
// and on every SRT packet, so a burst's count is logged within a second of
// its first packet's line.
func (p *publisher) logErrors(now time.Time) {
	total := p.demuxErrors.Load()
	if total == p.errLogged || (p.errLogged != 0 && now.Sub(p.errLogAt) < time.Second) {
		return
	}
	since := total - p.errLogged
	p.errLogged, p.errLogAt = total, now
	p.log.Warn("srt demux errors", "errors", since, "total", total, "last", p.lastErr.Error())
}

// tsPacketSize is the size of an MPEG-TS packet.
const tsPacketSize = 188

// maxPESSize bounds the bytes of one PES: the demuxer buffers a PES until
// the next one starts, so a stream that never starts one must not grow it
// without end. mediacommon refuses access units above 8 MiB anyway.
const maxPESSize = h264.MaxAccessUnitSize + 1<<20

// tsReader feeds mediacommon one aligned 188-byte packet per Read, from the
// SRT connection. Because the demuxer reads exactly one packet at a time,
// an error found here (garbage, continuity gap) is seen right before the
// demuxer processes that packet, so it can be placed precisely: the PES it
// breaks is the next one delivered on that PID.
type tsReader struct {
	p           *publisher
	buf         []byte // buf[off:end] is received and not yet returned
	off, end    int
	skipped     int // garbage bytes since the last packet
	pids        map[uint16]*pidState
	initialized bool // mediacommon's Initialize is done
	// keep lists the PIDs passed on once the program is known: those of
	// the tracks used. Until then (keep is nil) every PID passes;
	// mediacommon reads at most 1 MiB looking for the program.
	keep []uint16

	// The bitrate bound: bytes received since winStart.
	winStart time.Time
	winBytes int64
}

// pidState is the continuity state of one PID.
type pidState struct {
	cc       uint8
	seen     bool
	pesBytes int // payload bytes since the last payload unit start
}

func (r *tsReader) Read(b []byte) (int, error) {
	if len(b) < tsPacketSize {
		return 0, fmt.Errorf("srt: read buffer of %d bytes, need %d", len(b), tsPacketSize)
	}
	for {
		pkt, err := r.next()
		if err != nil {
			return 0, err
		}
		if pkt != nil {
			if r.initialized {
				r.p.replayHold = false // mediacommon has replayed what Initialize read
			}
			return copy(b, pkt), nil
		}
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
}

// fill reads one SRT packet, keeping any partial TS packet in front.
func (r *tsReader) fill() error {
	rest := copy(r.buf, r.buf[r.off:r.end])
	r.off, r.end = 0, rest
	n, err := r.p.conn.Read(r.buf[r.end:])
	if n > 0 {
		r.end += n
		r.p.bytes.Add(uint64(n))
		if err := r.checkBitrate(n); err != nil {
			return err
		}
		if r.p.errLogged != r.p.demuxErrors.Load() {
			r.p.logErrors(time.Now())
		}
	}
	if err != nil {
		if reason := r.p.stopReason(); reason != nil {
			return reason
		}
		return err
	}
	return nil
}

// checkBitrate counts n bytes received and fails once the peer has sent
// more in the current window than maxBitrate allows.
func (r *tsReader) checkBitrate(n int) error {
	limit := r.p.cfg.maxBitrate
	if limit <= 0 {
		return nil
	}
	now := time.Now()
	if r.winStart.IsZero() || now.Sub(r.winStart) >= bitrateWindow {
		r.winStart, r.winBytes = now, 0
	}
	r.winBytes += int64(n)
	if r.winBytes <= limit/8*int64(bitrateWindow/time.Second) {
		return nil
	}
	if r.p.cfg.onBitrate != nil {
		r.p.cfg.onBitrate()
	}
	return fmt.Errorf("peer sends more than %g Mbit/s (limits.ingest_bitrate)", float64(limit)/1e6)
}

// next returns the next packet in the buffer, or nil if more input is
// needed. Garbage before a sync byte is skipped and counted.
func (r *tsReader) next() ([]byte, error) {
	for r.end-r.off >= tsPacketSize {
		if r.buf[r.off] != 0x47 {
			i := bytes.IndexByte(r.buf[r.off+1:r.end], 0x47)
			if i < 0 {
				r.skipped += r.end - r.off
				r.off = r.end
				break
			}
			r.skipped += i + 1
			r.off += i + 1
			continue
		}
		pkt := r.buf[r.off : r.off+tsPacketSize]
		r.off += tsPacketSize
		if r.skipped > 0 {
			r.p.demuxError(fmt.Errorf("skipped %d bytes that are not MPEG-TS packets", r.skipped), true)
			r.skipped = 0
		}
		if r.keep != nil && !slices.Contains(r.keep, packetPID(pkt)) {
			// Not a track used: the demuxer would buffer it until its
			// next payload start, for nothing.
			continue
		}
		r.p.idle.Reset(r.p.cfg.idleTimeout)
		if err := r.check(pkt); err != nil {
			return nil, err
		}
		return pkt, nil
	}
	return nil, nil
}

// check follows the continuity counter of pkt's PID (ISO 13818-1 2.4.3.3:
// +1 per packet with payload, one duplicate allowed, reset by the
// discontinuity indicator) and bounds the PES size.
func (r *tsReader) check(pkt []byte) error {
	pid := packetPID(pkt)
	if pid == 0x1fff { // null packets
		return nil
	}
	if pkt[1]&0x80 != 0 {
		r.p.demuxError(fmt.Errorf("PID %d: packet flagged with a transport error", pid), r.isVideo(pid))
		return nil
	}
	afc := pkt[3] >> 4 & 0x3
	if afc&0x1 == 0 { // no payload: the counter does not advance
		return nil
	}
	payload := tsPacketSize - 4
	discontinuity := false
	if afc&0x2 != 0 {
		afLen := int(pkt[4])
		payload -= 1 + afLen
		discontinuity = afLen > 0 && pkt[5]&0x80 != 0
	}
	cc := pkt[3] & 0x0f
	if r.pids == nil {
		r.pids = make(map[uint16]*pidState)
	}
	st := r.pids[pid]
	if st == nil {
		st = &pidState{}
		r.pids[pid] = st
	}
	if st.seen && !discontinuity {
		switch want := (st.cc + 1) & 0x0f; cc {
		case want:
		case st.cc:
			return nil // a duplicate packet: the demuxer drops it
		default:
			r.p.demuxError(fmt.Errorf("PID %d: continuity counter is %d, expected %d", pid, cc, want), r.isVideo(pid))
			st.pesBytes = 0 // the demuxer drops what it had gathered
		}
	}
	st.seen, st.cc = true, cc
	if payload < 0 {
		payload = 0
	}
	if pkt[1]&0x40 != 0 {
		st.pesBytes = payload
	} else {
		st.pesBytes += payload
	}
	if st.pesBytes > maxPESSize {
		return fmt.Errorf("PID %d: a PES (or table) larger than %d bytes", pid, maxPESSize)
	}
	return nil
}

// packetPID is the PID of a TS packet.
func packetPID(pkt []byte) uint16 { return uint16(pkt[1]&0x1f)<<8 | uint16(pkt[2]) }

func (r *tsReader) isVideo(pid uint16) bool {
	return r.p.video == nil || r.p.video.pid == pid
}
