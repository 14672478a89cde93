package rtmp

import (
	"encoding/binary"
	"fmt"

	"github.com/wishbridge/bridge/internal/rtmpwire"
)

// The chunk guard follows the chunk stream a peer sends, ahead of go-rtmp,
// to enforce limits go-rtmp v0.0.7 lacks: it accepts any message length up
// to 16 MiB on any number of chunk streams, and decodes AMF0 command and
// data messages with a recursive decoder a deeply nested value overflows
// (a fatal error that takes the whole process down, not a recoverable
// panic). The guard refuses a message from its header, before go-rtmp has
// buffered its body.
//
// It mirrors go-rtmp's reading (chunk_streamer.go readChunk and
// chunk_header.go): basic header, message header by fmt, an extended
// timestamp after a 0xffffff field of fmt 0, 1 and 2 headers, message length
// and type from fmt 0 and 1, payload in pieces of the peer's chunk size, and
// Set Chunk Size taking effect once its message is complete.
//
// It also repairs one thing go-rtmp gets wrong: go-rtmp never reads an
// extended timestamp after a fmt 3 header, but ffmpeg (like Adobe's servers
// and librtmp) repeats the extended timestamp of the chunk stream's last
// header on every fmt 3 chunk, so a message whose timestamp field overflows
// (from 4h39m of stream time, e.g. a relayed stream) and spans several
// chunks desynchronises go-rtmp. The guard drops those 4 bytes before
// go-rtmp reads them when they repeat the last extended timestamp (the check
// nginx-rtmp and SRS make, for peers that do not repeat it).

// Limits on what a peer may send: internal/rtmpwire's, which the RTMP
// clients hold servers to as well (one set of numbers; their reasons are
// given there).
const (
	rtmpHandshakeSize     = rtmpwire.HandshakeSize
	maxChunkStreams       = rtmpwire.MaxChunkStreams
	maxChunkSize          = rtmpwire.MaxChunkSize
	maxCommandMessageSize = rtmpwire.MaxCommandMessageSize
	maxAudioMessageSize   = rtmpwire.MaxAudioMessageSize
	maxVideoMessageSize   = rtmpwire.MaxVideoMessageSize
)

// RTMP message type ids the guard cares about.
const (
	msgTypeSetChunkSize = rtmpwire.TypeSetChunkSize
	msgTypeAudio        = rtmpwire.TypeAudio
	msgTypeVideo        = rtmpwire.TypeVideo
)

type guardStream struct {
	length, received uint32
	typeID           byte
	completed        bool
	head             [4]byte // first body bytes, for Set Chunk Size
	// extended is set when the last fmt 0, 1 or 2 header carried an
	// extended timestamp, extTS.
	extended bool
	extTS    uint32
}

type chunkGuard struct {
	// skip counts the handshake bytes still to pass unchecked.
	skip      int
	chunkSize uint32
	// media reports whether audio and video messages may be large (the
	// peer is an accepted publisher).
	media   func() bool
	streams map[int]*guardStream

	hdr     [3 + 11 + 4]byte // header being collected
	n       int
	cur     *guardStream
	left    uint32 // body bytes left in the current chunk
	inChunk bool
	format  byte // of the current chunk

	// After a fmt 3 header on a chunk stream with an extended timestamp:
	// the next 4 bytes, held until they can be compared.
	peeking bool
	peek    [4]byte
	peekN   int

	err error // sticky
}

func newChunkGuard(media func() bool) *chunkGuard {
	return &chunkGuard{
		skip:      rtmpHandshakeSize,
		chunkSize: 128,
		media:     media,
		streams:   make(map[int]*guardStream),
	}
}

// filter checks the next bytes the peer sent and appends to out what
// go-rtmp is to read: the same bytes, less repeated extended timestamps.
// An error is final: later calls return it again.
func (g *chunkGuard) filter(out, p []byte) ([]byte, error) {
	if g.err != nil {
		return out, g.err
	}
	out, g.err = g.run(out, p)
	return out, g.err
}

func (g *chunkGuard) run(out, p []byte) ([]byte, error) {
	for len(p) > 0 {
		switch {
		case g.skip > 0:
			k := min(g.skip, len(p))
			g.skip -= k
			out = append(out, p[:k]...)
			p = p[k:]

		case g.peeking:
			g.peek[g.peekN] = p[0]
			g.peekN++
			p = p[1:]
			if g.peekN < len(g.peek) {
				continue
			}
			g.peeking = false
			if binary.BigEndian.Uint32(g.peek[:]) != g.cur.extTS {
				// Not a repeated timestamp: body bytes after all.
				b := g.peek
				var err error
				if out, err = g.run(out, b[:]); err != nil {
					return out, err
				}
			}

		case !g.inChunk:
			g.hdr[g.n] = p[0]
			g.n++
			out = append(out, p[0])
			p = p[1:]
			done, err := g.header()
			if err != nil {
				return out, err
			}
			if done {
				g.n = 0
				g.inChunk = true
				if g.format == 3 && g.cur.extended {
					g.peeking, g.peekN = true, 0
				}
			}

		default:
			k := min(uint32(len(p)), g.left)
			s := g.cur
			if s.received < uint32(len(s.head)) {
				copy(s.head[s.received:], p[:k])
			}
			s.received += k
			g.left -= k
			out = append(out, p[:k]...)
			p = p[k:]
			if g.left == 0 {
				g.inChunk = false
				if s.received == s.length {
					if err := g.complete(s); err != nil {
						return out, err
					}
				}
			}
		}
	}
	return out, nil
}

// header processes the header bytes collected so far and reports whether
// the header is complete.
func (g *chunkGuard) header() (bool, error) {
	h := g.hdr[:g.n]
	format := h[0] >> 6
	basic := 1
	switch h[0] & 0x3f {
	case 0:
		basic = 2
	case 1:
		basic = 3
	}
	need := basic + [4]int{11, 7, 3, 0}[format]
	if len(h) < need {
		return false, nil
	}
	extended := false
	if format <= 2 {
		f := h[basic : basic+3]
		if f[0] == 0xff && f[1] == 0xff && f[2] == 0xff {
			extended = true
			need += 4
		}
	}
	if len(h) < need {
		return false, nil
	}

	csid := int(h[0] & 0x3f)
	switch csid {
	case 0:
		csid = int(h[1]) + 64
	case 1:
		csid = int(h[2])*256 + int(h[1]) + 64
	}
	s := g.streams[csid]
	if s == nil {
		if len(g.streams) >= maxChunkStreams {
			return false, fmt.Errorf("peer opened more than %d chunk streams", maxChunkStreams)
		}
		s = &guardStream{}
		g.streams[csid] = s
	}
	if s.completed {
		s.received = 0
		s.completed = false
	}
	if format <= 2 {
		s.extended = extended
		if extended {
			s.extTS = binary.BigEndian.Uint32(h[need-4 : need])
		}
	}
	if format <= 1 {
		m := h[basic:]
		s.length = uint32(m[3])<<16 | uint32(m[4])<<8 | uint32(m[5])
		s.typeID = m[6]
	}
	if s.length <= s.received {
		return false, fmt.Errorf("chunk stream %d: chunk (fmt %d) continues a message of unknown length", csid, format)
	}
	if limit := g.limit(s.typeID); s.length > limit {
		return false, fmt.Errorf("message of type %d on chunk stream %d is %d bytes, maximum is %d", s.typeID, csid, s.length, limit)
	}
	g.cur = s
	g.format = format
	g.left = min(s.length-s.received, g.chunkSize)
	return true, nil
}

func (g *chunkGuard) limit(typeID byte) uint32 {
	return rtmpwire.MessageLimit(typeID, g.media(), false) // publishers send no aggregates
}

// complete applies a finished message's effect on the chunk layer, as
// go-rtmp does (message/decoder.go decodeSetChunkSize, conn_state.go
// SetChunkSize).
func (g *chunkGuard) complete(s *guardStream) error {
	s.completed = true
	if s.typeID != msgTypeSetChunkSize {
		return nil
	}
	if s.length < 4 {
		return fmt.Errorf("set chunk size message is %d bytes, expected 4", s.length)
	}
	v := binary.BigEndian.Uint32(s.head[:])
	if v&0x80000000 != 0 || v == 0 {
		return fmt.Errorf("set chunk size to %d is invalid", v)
	}
	v = min(v, maxChunkSize)
	g.chunkSize = v
	return nil
}
