package relay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pion/rtp"

	"github.com/wishbridge/bridge/media"
)

// The wire format: one implementation, Encoder and Decoder, for both
// directions (docs/cluster.md, "Node-to-node relay", describes it for
// people; this is the reference).
//
//	stream   = header frame*
//	header   = "BRLY" version:u16                     (Version)
//	frame    = type:u8 length:u32 body[length]         (length <= MaxFrameBytes)
//	tracks   (type 1) = count:u8 track*                (1..MaxTracks)
//	  track  = codec:u8 params
//	    H264 (1) = sps:bytes16 pps:bytes16
//	    H265 (2) = vps:bytes16 sps:bytes16 pps:bytes16
//	    AAC  (3) = config:bytes16 sample_rate:u32 channels:u8
//	    Opus (4) = channels:u8
//	unit     (type 2) = track:u8 flags:u8 pts:i64 dts:i64
//	                    nalu_count:u16 (len:u32 bytes)* data_len:u32 data
//	                    rtp_count:u16 packet*
//	  flags  = bit 0 key, bit 1 cached (from the origin's GOP cache)
//	  packet = marker<<7|payload_type:u8 seq:u16 timestamp:u32 ssrc:u32
//	           csrc_count:u8 csrc:u32* payload:bytes16
//	live     (type 3) = (empty): the units from the GOP cache are all sent
//	keepalive(type 4) = (empty)
//	end      (type 5) = reason (UTF-8, at most MaxReasonBytes)
//
// Integers are big-endian; bytes16 is a u16 length and that many bytes.
// PTS and DTS are the stream clock in nanoseconds (time.Duration), so they
// come back exactly. A unit names its track by its index in the last
// tracks frame; tracks may be sent again (a new publisher took the
// stream over at the origin), and the units after refer to the new ones.
// Anything else is an error: an unknown frame type or flag, a count or
// length past its limit, bytes left over in a frame. A change of the
// layout is a new Version; a decoder refuses a version it does not know.

// Version is the wire format's version, sent after the magic.
const Version = 1

// magic starts every relay stream.
const magic = "BRLY"

// Limits of the wire format. A decoder refuses input past them before it
// allocates for it: the most it holds is one frame.
const (
	// MaxFrameBytes bounds a frame's body: an access unit up to
	// mediacommon's h264/h265 MaxAccessUnitSize (8 MiB) with, from an RTP
	// source, its packets (about as much again).
	MaxFrameBytes = 16 << 20
	// MaxTracks bounds the tracks of a stream: every ingest declares at
	// most one video and one audio track; 8 leaves room.
	MaxTracks = 8
	// MaxParamBytes bounds one parameter set or AudioSpecificConfig: an
	// H.264 SPS with scaling lists is a few hundred bytes, an H.265 VPS
	// or SPS with many sub-layers about a thousand.
	MaxParamBytes = 4096
	// MaxNALUs bounds the NAL units of one access unit: mediacommon
	// allows 50 (h264.MaxNALUsPerAccessUnit) and 21 for H.265.
	MaxNALUs = 64
	// MaxRTPPackets bounds the RTP packets of one unit: an 8 MiB access
	// unit in 1200-byte packets is 7000.
	MaxRTPPackets = 8192
	// MaxReasonBytes bounds an end frame's reason: one log line.
	MaxReasonBytes = 1024
)

// FrameKind is a frame's type byte.
type FrameKind uint8

// The frame kinds.
const (
	FrameTracks    FrameKind = 1
	FrameUnit      FrameKind = 2
	FrameLive      FrameKind = 3
	FrameKeepalive FrameKind = 4
	FrameEnd       FrameKind = 5
)

func (k FrameKind) String() string {
	switch k {
	case FrameTracks:
		return "tracks"
	case FrameUnit:
		return "unit"
	case FrameLive:
		return "live"
	case FrameKeepalive:
		return "keepalive"
	case FrameEnd:
		return "end"
	}
	return fmt.Sprintf("frame type %d", uint8(k))
}

// Codec bytes of a tracks frame.
const (
	codecH264 = 1
	codecH265 = 2
	codecAAC  = 3
	codecOpus = 4
)

// Unit flags.
const (
	flagKey    = 1 << 0
	flagCached = 1 << 1
	knownFlags = flagKey | flagCached
)

const (
	headerSize      = len(magic) + 2
	frameHeaderSize = 1 + 4
	// unitFixedSize is a unit body without its variable parts: track,
	// flags, pts, dts and the three counts and lengths.
	unitFixedSize = 1 + 1 + 8 + 8 + 2 + 4 + 2
	// packetFixedSize is one RTP packet without CSRCs and payload.
	packetFixedSize = 1 + 2 + 4 + 4 + 1 + 2
)

// ErrTooLarge is wrapped by Encoder.Unit for a unit past a limit (the
// caller skips it) and by the Decoder for a count or length past one.
var ErrTooLarge = errors.New("past the relay's limit")

// Frame is one decoded frame.
type Frame struct {
	Kind FrameKind
	// Tracks are the stream's tracks (FrameTracks), new Track values
	// with their ID set to their index.
	Tracks []*media.Track
	// Unit is a unit of one of the last Tracks (FrameUnit). Its payload
	// slices share one buffer, the frame's: it is the Decoder's no more.
	Unit *media.Unit
	// Cached marks a unit from the origin's GOP cache (FrameUnit).
	Cached bool
	// Reason is why the origin ended the stream (FrameEnd).
	Reason string
}

// Encoder writes a relay stream. It is for one goroutine; each method
// writes one whole frame with one Write (the header with the first), so
// a writer that flushes after a method sends whole frames.
type Encoder struct {
	w      io.Writer
	buf    []byte
	header bool // written
}

// NewEncoder returns an Encoder writing to w.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: w} }

// Tracks announces the stream's tracks; the units after refer to them by
// ID (their index).
func (e *Encoder) Tracks(tracks []*media.Track) error {
	if len(tracks) == 0 || len(tracks) > MaxTracks {
		return fmt.Errorf("relay: %d tracks: %w (expected 1 to %d)", len(tracks), ErrTooLarge, MaxTracks)
	}
	b := e.begin(FrameTracks)
	b = append(b, byte(len(tracks)))
	var err error
	for _, t := range tracks {
		if b, err = appendTrack(b, t); err != nil {
			return err
		}
	}
	return e.finish(b)
}

func appendTrack(b []byte, t *media.Track) ([]byte, error) {
	var params [][]byte
	switch c := t.Codec.(type) {
	case media.H264:
		b = append(b, codecH264)
		params = [][]byte{c.SPS, c.PPS}
	case media.H265:
		b = append(b, codecH265)
		params = [][]byte{c.VPS, c.SPS, c.PPS}
	case media.AAC:
		b = append(b, codecAAC)
		params = [][]byte{c.Config}
	case media.Opus:
		b = append(b, codecOpus)
	default:
		return nil, fmt.Errorf("relay: %s: codec %T has no wire form", t, t.Codec)
	}
	for _, p := range params {
		if len(p) > MaxParamBytes {
			return nil, fmt.Errorf("relay: %s: parameter set of %d bytes: %w (%d)", t, len(p), ErrTooLarge, MaxParamBytes)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	switch c := t.Codec.(type) {
	case media.AAC:
		if c.SampleRate < 0 || c.Channels < 0 || c.Channels > 255 {
			return nil, fmt.Errorf("relay: %s: sample rate %d or channels %d out of range", t, c.SampleRate, c.Channels)
		}
		b = binary.BigEndian.AppendUint32(b, uint32(c.SampleRate))
		b = append(b, byte(c.Channels))
	case media.Opus:
		if c.Channels < 0 || c.Channels > 255 {
			return nil, fmt.Errorf("relay: %s: channels %d out of range", t, c.Channels)
		}
		b = append(b, byte(c.Channels))
	}
	return b, nil
}

// Unit sends u: its timestamps, key flag, NAL units or audio frame, and
// its RTP packets if withRTP (an RTP source's). cached marks a unit from
// the GOP cache. A unit past a limit is not sent: the error wraps
// ErrTooLarge, and the stream can go on.
func (e *Encoder) Unit(u *media.Unit, cached, withRTP bool) error {
	if u.Track == nil || u.Track.ID < 0 || u.Track.ID >= MaxTracks {
		return fmt.Errorf("relay: unit of no track or of a track ID past %d", MaxTracks-1)
	}
	pkts := u.RTP
	if !withRTP {
		pkts = nil
	}
	size := unitFixedSize + len(u.Data) + 4*len(u.NALUs)
	for _, n := range u.NALUs {
		size += len(n)
	}
	for _, p := range pkts {
		if p == nil {
			return fmt.Errorf("relay: %s: unit at %v has a nil RTP packet", u.Track, u.PTS)
		}
		if len(p.Payload) > 0xffff || len(p.CSRC) > 15 {
			return fmt.Errorf("relay: %s: RTP packet of %d bytes, %d CSRCs: %w", u.Track, len(p.Payload), len(p.CSRC), ErrTooLarge)
		}
		size += packetFixedSize + 4*len(p.CSRC) + len(p.Payload)
	}
	switch {
	case len(u.NALUs) > MaxNALUs:
		return fmt.Errorf("relay: %s: unit at %v has %d NAL units: %w (%d)", u.Track, u.PTS, len(u.NALUs), ErrTooLarge, MaxNALUs)
	case len(pkts) > MaxRTPPackets:
		return fmt.Errorf("relay: %s: unit at %v has %d RTP packets: %w (%d)", u.Track, u.PTS, len(pkts), ErrTooLarge, MaxRTPPackets)
	case size > MaxFrameBytes:
		return fmt.Errorf("relay: %s: unit at %v is %d bytes: %w (%d)", u.Track, u.PTS, size, ErrTooLarge, MaxFrameBytes)
	}
	b := e.begin(FrameUnit)
	var flags byte
	if u.Key {
		flags |= flagKey
	}
	if cached {
		flags |= flagCached
	}
	b = append(b, byte(u.Track.ID), flags)
	b = binary.BigEndian.AppendUint64(b, uint64(u.PTS))
	b = binary.BigEndian.AppendUint64(b, uint64(u.DTS))
	b = binary.BigEndian.AppendUint16(b, uint16(len(u.NALUs)))
	for _, n := range u.NALUs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		b = append(b, n...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(u.Data)))
	b = append(b, u.Data...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pkts)))
	for _, p := range pkts {
		mpt := p.PayloadType & 0x7f
		if p.Marker {
			mpt |= 0x80
		}
		b = append(b, mpt)
		b = binary.BigEndian.AppendUint16(b, p.SequenceNumber)
		b = binary.BigEndian.AppendUint32(b, p.Timestamp)
		b = binary.BigEndian.AppendUint32(b, p.SSRC)
		b = append(b, byte(len(p.CSRC)))
		for _, c := range p.CSRC {
			b = binary.BigEndian.AppendUint32(b, c)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(p.Payload)))
		b = append(b, p.Payload...)
	}
	return e.finish(b)
}

// Live says that the units from the origin's GOP cache have all been sent.
func (e *Encoder) Live() error { return e.finish(e.begin(FrameLive)) }

// Keepalive sends an empty frame, so that the edge's read timeout tells a
// stream waiting for its publisher from a dead connection.
func (e *Encoder) Keepalive() error { return e.finish(e.begin(FrameKeepalive)) }

// End says that the stream ended and why; nothing follows it.
func (e *Encoder) End(reason string) error {
	if len(reason) > MaxReasonBytes {
		reason = reason[:MaxReasonBytes]
	}
	return e.finish(append(e.begin(FrameEnd), reason...))
}

// begin starts a frame of kind k in e.buf, after the stream header if it
// has not been written yet; finish fills in the length and writes it.
func (e *Encoder) begin(k FrameKind) []byte {
	b := e.buf[:0]
	if !e.header {
		b = append(b, magic...)
		b = binary.BigEndian.AppendUint16(b, Version)
	}
	return append(b, byte(k), 0, 0, 0, 0)
}

func (e *Encoder) finish(b []byte) error {
	at := 0
	if !e.header {
		at = headerSize
	}
	binary.BigEndian.PutUint32(b[at+1:], uint32(len(b)-at-frameHeaderSize))
	e.buf = b[:0]
	if _, err := e.w.Write(b); err != nil {
		return err
	}
	e.header = true
	if cap(e.buf) > 64<<10 {
		e.buf = nil // a large keyframe's buffer is not kept for the small frames after it
	}
	return nil
}

// Decoder reads a relay stream. It is for one goroutine.
type Decoder struct {
	r      *bufio.Reader
	header bool           // read
	tracks []*media.Track // the last tracks frame's
}

// NewDecoder returns a Decoder reading from r.
func NewDecoder(r io.Reader) *Decoder { return &Decoder{r: bufio.NewReader(r)} }

// Next reads the next frame. At the end of r between two frames it
// (or before anything) returns io.EOF; inside one, an error wrapping
// io.ErrUnexpectedEOF.
// Any error ends the stream: a decoder does not resynchronise.
func (d *Decoder) Next() (Frame, error) {
	if !d.header {
		var h [headerSize]byte
		if _, err := io.ReadFull(d.r, h[:]); err == io.EOF {
			return Frame{}, io.EOF // nothing at all
		} else if err != nil {
			return Frame{}, fmt.Errorf("relay: stream header: %w", unexpected(err))
		}
		if string(h[:len(magic)]) != magic {
			return Frame{}, fmt.Errorf("relay: stream starts with %q, not %q: not a relay stream", h[:len(magic)], magic)
		}
		if v := binary.BigEndian.Uint16(h[len(magic):]); v != Version {
			return Frame{}, fmt.Errorf("relay: wire version %d, this node speaks %d", v, Version)
		}
		d.header = true
	}
	var fh [frameHeaderSize]byte
	if _, err := io.ReadFull(d.r, fh[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("relay: frame header: %w", unexpected(err))
	}
	k, n := FrameKind(fh[0]), binary.BigEndian.Uint32(fh[1:])
	if n > MaxFrameBytes {
		return Frame{}, fmt.Errorf("relay: %s frame of %d bytes: %w (%d)", k, n, ErrTooLarge, MaxFrameBytes)
	}
	switch k {
	case FrameTracks, FrameUnit, FrameLive, FrameKeepalive, FrameEnd:
	default:
		return Frame{}, fmt.Errorf("relay: unknown %s (of %d bytes)", k, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(d.r, body); err != nil {
		return Frame{}, fmt.Errorf("relay: %s frame of %d bytes: %w", k, n, unexpected(err))
	}
	p := &parser{b: body}
	f := Frame{Kind: k}
	switch k {
	case FrameTracks:
		f.Tracks = p.tracks()
		if p.err == nil {
			d.tracks = f.Tracks
		}
	case FrameUnit:
		f.Unit, f.Cached = p.unit(d.tracks)
	case FrameEnd:
		if len(body) > MaxReasonBytes {
			p.fail(fmt.Errorf("reason of %d bytes: %w (%d)", len(body), ErrTooLarge, MaxReasonBytes))
		}
		f.Reason, p.b = string(body), nil
	}
	if p.err == nil && len(p.b) > 0 {
		p.fail(fmt.Errorf("%d bytes left over", len(p.b)))
	}
	if p.err != nil {
		return Frame{}, fmt.Errorf("relay: %s frame: %w", k, p.err)
	}
	return f, nil
}

// unexpected turns an io.EOF inside something into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parser reads a frame's body; its first error sticks and every read
// after it returns zero values.
type parser struct {
	b   []byte
	err error
}

func (p *parser) fail(err error) {
	if p.err == nil {
		p.err = err
	}
	p.b = nil
}

func (p *parser) take(n int) []byte {
	if p.err != nil {
		return nil
	}
	if n > len(p.b) {
		p.fail(fmt.Errorf("%d bytes needed, %d left: %w", n, len(p.b), io.ErrUnexpectedEOF))
		return nil
	}
	out := p.b[:n:n]
	p.b = p.b[n:]
	return out
}

func (p *parser) u8() uint8 {
	if b := p.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (p *parser) u16() uint16 {
	if b := p.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (p *parser) u32() uint32 {
	if b := p.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (p *parser) u64() uint64 {
	if b := p.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// bytes16 reads a u16 length and that many bytes, at most max; nil for
// none.
func (p *parser) bytes16(what string, max int) []byte {
	n := int(p.u16())
	if n > max {
		p.fail(fmt.Errorf("%s of %d bytes: %w (%d)", what, n, ErrTooLarge, max))
		return nil
	}
	if n == 0 {
		return nil
	}
	return p.take(n)
}

func (p *parser) tracks() []*media.Track {
	n := int(p.u8())
	if p.err == nil && (n == 0 || n > MaxTracks) {
		p.fail(fmt.Errorf("%d tracks (expected 1 to %d)", n, MaxTracks))
	}
	var out []*media.Track
	for i := 0; i < n && p.err == nil; i++ {
		var c media.Codec
		switch codec := p.u8(); codec {
		case codecH264:
			c = media.H264{SPS: p.bytes16("SPS", MaxParamBytes), PPS: p.bytes16("PPS", MaxParamBytes)}
		case codecH265:
			c = media.H265{VPS: p.bytes16("VPS", MaxParamBytes), SPS: p.bytes16("SPS", MaxParamBytes), PPS: p.bytes16("PPS", MaxParamBytes)}
		case codecAAC:
			cfg := p.bytes16("AudioSpecificConfig", MaxParamBytes)
			rate := p.u32()
			if rate > 1<<20 {
				p.fail(fmt.Errorf("track %d: AAC sample rate %d (expected at most %d)", i, rate, 1<<20))
			}
			c = media.AAC{Config: cfg, SampleRate: int(rate), Channels: int(p.u8())}
		case codecOpus:
			c = media.Opus{Channels: int(p.u8())}
		default:
			if p.err == nil {
				p.fail(fmt.Errorf("track %d: unknown codec %d", i, codec))
			}
		}
		out = append(out, &media.Track{ID: i, Codec: c})
	}
	if p.err != nil {
		return nil
	}
	return out
}

func (p *parser) unit(tracks []*media.Track) (*media.Unit, bool) {
	id, flags := int(p.u8()), p.u8()
	switch {
	case p.err != nil:
		return nil, false
	case id >= len(tracks):
		p.fail(fmt.Errorf("unit of track %d, the stream has %d tracks", id, len(tracks)))
		return nil, false
	case flags&^knownFlags != 0:
		p.fail(fmt.Errorf("unknown flags %#x", flags&^knownFlags))
		return nil, false
	}
	t := tracks[id]
	u := &media.Unit{Track: t, Key: flags&flagKey != 0,
		PTS: time.Duration(p.u64()), DTS: time.Duration(p.u64())}
	n := int(p.u16())
	if n > MaxNALUs {
		p.fail(fmt.Errorf("%d NAL units: %w (%d)", n, ErrTooLarge, MaxNALUs))
		return nil, false
	}
	if n > 0 {
		u.NALUs = make([][]byte, 0, n)
	}
	for range n {
		u.NALUs = append(u.NALUs, p.take(int(p.u32())))
	}
	if dn := int(p.u32()); dn > 0 {
		u.Data = p.take(dn)
	}
	video := t.IsVideo()
	switch {
	case video && u.Data != nil:
		p.fail(fmt.Errorf("%s: video unit with an audio frame", t))
	case !video && u.NALUs != nil:
		p.fail(fmt.Errorf("%s: audio unit with NAL units", t))
	}
	n = int(p.u16())
	if n > MaxRTPPackets {
		p.fail(fmt.Errorf("%d RTP packets: %w (%d)", n, ErrTooLarge, MaxRTPPackets))
	}
	if n > 0 && p.err == nil {
		pkts := make([]rtp.Packet, n)
		u.RTP = make([]*rtp.Packet, n)
		for i := range pkts {
			h := &pkts[i].Header
			mpt := p.u8()
			h.Version, h.Marker, h.PayloadType = 2, mpt&0x80 != 0, mpt&0x7f
			h.SequenceNumber, h.Timestamp, h.SSRC = p.u16(), p.u32(), p.u32()
			nc := int(p.u8())
			if nc > 15 {
				p.fail(fmt.Errorf("RTP packet with %d CSRCs (at most 15)", nc))
			}
			for range nc {
				h.CSRC = append(h.CSRC, p.u32())
			}
			pkts[i].Payload = p.bytes16("RTP payload", 0xffff)
			u.RTP[i] = &pkts[i]
		}
	}
	if p.err != nil {
		return nil, false
	}
	return u, flags&flagCached != 0
}
