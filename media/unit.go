// Package media is the hub: the common track abstraction every ingest adapter
// writes to and every egress adapter reads from. It knows codecs and their
// parameters (H.264, H.265, AAC, Opus), access units with timestamps on a
// stream clock (the tick conversions in clock.go; SourceClock for a
// publisher's own timestamps), a registry of named streams, fan-out to
// readers with bounded queues, the current GOP of each video track for
// readers that join (ReaderOptions.StartAtKeyframe), write-side processors
// run once per track for every reader (Stream.AddProcessor), the rule that
// readers outlive a publisher's reconnect (Publication), and the events the
// route runtime above it acts on (Registry.Subscribe, PublisherKind). It
// imports no protocol package.
package media

import (
	"fmt"
	"time"
	"unsafe"

	"github.com/pion/rtp"
)

// Codec describes what a track carries and the parameters a reader needs to
// describe it to a peer. The set is closed: H264, H265, AAC and Opus.
type Codec interface {
	// Name is the codec's name as used in logs and errors ("H264").
	Name() string
	// ClockRate is the RTP clock rate conventionally used for the codec.
	ClockRate() int
	codec()
}

// H264 is an H.264 video codec. SPS and PPS are the parameter sets known when
// the track was declared; units carry the current ones in front of every IDR,
// so readers never need to watch for changes here.
type H264 struct {
	SPS []byte
	PPS []byte
}

// Name implements Codec.
func (H264) Name() string { return "H264" }

// ClockRate implements Codec.
func (H264) ClockRate() int { return 90000 }

func (H264) codec() {}

// AAC is an MPEG-4 AAC audio codec described by its AudioSpecificConfig.
type AAC struct {
	// Config is the raw AudioSpecificConfig (ISO 14496-3 1.6.2.1).
	Config     []byte
	SampleRate int
	Channels   int
}

// Name implements Codec.
func (AAC) Name() string { return "AAC" }

// ClockRate implements Codec: the sample rate.
func (c AAC) ClockRate() int { return c.SampleRate }

func (AAC) codec() {}

// Opus is an Opus audio codec. Opus always runs on a 48 kHz clock.
type Opus struct {
	Channels int
}

// Name implements Codec.
func (Opus) Name() string { return "Opus" }

// ClockRate implements Codec.
func (Opus) ClockRate() int { return 48000 }

func (Opus) codec() {}

// Track is one elementary stream within a Stream. A Track is immutable once
// the stream's tracks are set.
type Track struct {
	// ID is the track's index in its stream's track list.
	ID    int
	Codec Codec
}

// IsVideo reports whether the track carries video.
func (t *Track) IsVideo() bool {
	_, ok := t.Codec.(H264)
	return ok || isH265(t.Codec)
}

func (t *Track) String() string { return fmt.Sprintf("track %d (%s)", t.ID, t.Codec.Name()) }

// Unit is one access unit: a video frame or an audio frame. A unit handed to
// Publication.Write is shared by every reader and must not be modified
// afterwards (the hub, which puts a new publisher's timestamps on the
// stream clock, and processors run before fan-out and are the only
// exceptions).
type Unit struct {
	Track *Track
	// PTS and DTS are on the stream's clock: time since an arbitrary origin
	// shared by all tracks of the stream, so tracks can be synchronised.
	PTS time.Duration
	DTS time.Duration
	// Key marks a unit a decoder can start from (an IDR for H.264, an IRAP
	// for H.265; every audio unit is a key unit).
	Key bool

	// NALUs holds an H.264 or H.265 access unit: NAL units without start
	// codes, no access unit delimiters. Every key unit starts with the
	// parameter sets (H.264: SPS and PPS; H.265: VPS, SPS and PPS). Nil for
	// audio.
	NALUs [][]byte
	// Data holds one audio frame: a raw AAC frame (no ADTS header) or one
	// Opus packet. Nil for video.
	Data []byte

	// RTP holds the unit packetized for WebRTC. It is filled once per track
	// by a processor (see Stream.AddProcessor) or by an RTP ingest, and shared
	// by every reader: readers copy a packet's header before changing it and
	// never change the payload. Packet timestamps are on the stream clock
	// at the codec's clock rate: the unit's PTS in ticks for its first
	// sample (a transcoder's packets may start a little before or after).
	// A unit from the GOP cache may be a copy of the one written (see
	// AddProcessor); its RTP is then the processors' output for the copy.
	RTP []*rtp.Packet

	// Arrived is when the unit reached the hub (set by Publication.Write
	// unless the ingest set it earlier): the start of the delay the bridge
	// adds, which senders measure.
	Arrived time.Time
}

// Per-part bookkeeping counted by Unit.Size on top of the bytes: what the
// Go structures holding a unit, a NAL unit and an RTP packet take, so that
// a unit of many empty parts is not free.
const (
	unitOverhead   = int(unsafe.Sizeof(Unit{}))
	naluOverhead   = int(unsafe.Sizeof([]byte(nil)))
	packetOverhead = int(unsafe.Sizeof(&rtp.Packet{}) + unsafe.Sizeof(rtp.Packet{}))
)

// Size is the memory u holds, for the bounds on what the hub keeps (see
// MaxGOPBytes): its NAL units or audio frame, its RTP packets (header
// fields that vary in size, payload, and the raw packet if kept) and the
// structures holding them. Every kind of unit counts in full, whichever
// fields it fills.
func (u *Unit) Size() int {
	n := unitOverhead + len(u.Data)
	for _, nalu := range u.NALUs {
		n += naluOverhead + len(nalu)
	}
	for _, p := range u.RTP {
		n += packetOverhead
		if p != nil {
			n += p.Header.MarshalSize() + len(p.Payload) + len(p.Raw)
		}
	}
	return n
}
