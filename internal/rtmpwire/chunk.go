package rtmpwire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// The RTMP chunk stream (RTMP specification 5.3), both directions.
//
// Extended timestamps: a timestamp (or delta) of 0xffffff or more goes in
// a 4-byte field after the message header. ffmpeg, librtmp, Adobe's
// servers and the big platforms also repeat it after every fmt 3 header
// of the message; some peers do not. The writer always repeats it; the
// reader takes the 4 bytes after a fmt 3 header as the repeat when they
// equal the chunk stream's last extended timestamp, and as payload
// otherwise (the check nginx-rtmp and SRS make).

// chunkState is the header of the last message on a chunk stream, which
// the next header is relative to.
type chunkState struct {
	ts       uint32
	length   int
	typeID   uint8
	streamID uint32
}

// ChunkWriter writes RTMP messages as chunks. It is safe for concurrent
// use: a client's media goroutine and its reader (which answers pings and
// acknowledges) both write.
type ChunkWriter struct {
	nc net.Conn

	mu      sync.Mutex
	timeout time.Duration // per message; 0: none (the connection's deadline holds)
	bw      *bufio.Writer
	size    int                 // our chunk size
	states  map[int]*chunkState // per chunk stream: the last message header sent
	hdr     []byte
}

// NewChunkWriter returns a writer on nc with RTMP's initial chunk size,
// 128, and no timeout.
func NewChunkWriter(nc net.Conn) *ChunkWriter {
	return &ChunkWriter{
		nc:     nc,
		bw:     bufio.NewWriterSize(nc, 16<<10),
		size:   128,
		states: make(map[int]*chunkState),
	}
}

// SetTimeout bounds the writing of each message from now on; 0 means the
// connection's own deadline holds.
func (w *ChunkWriter) SetTimeout(d time.Duration) {
	w.mu.Lock()
	w.timeout = d
	w.mu.Unlock()
}

// SetChunkSize announces chunk size n (1 to MaxChunkSize) and writes with
// it from then on.
func (w *ChunkWriter) SetChunkSize(n int) error {
	if n < 1 || n > MaxChunkSize {
		return fmt.Errorf("chunk size %d is out of range", n)
	}
	if err := w.Write(CSControl, TypeSetChunkSize, 0, 0, binary.BigEndian.AppendUint32(nil, uint32(n))); err != nil {
		return err
	}
	w.mu.Lock()
	w.size = n
	w.mu.Unlock()
	return nil
}

// Write sends one message on chunk stream csid (2-63). The header is fmt
// 0 for the first message of a chunk stream, one on another message
// stream, or one whose timestamp goes back; otherwise fmt 1 or 2 with the
// timestamp delta. A timestamp (or delta) of 0xffffff or more goes in the
// extended timestamp field, which every continuation chunk repeats.
func (w *ChunkWriter) Write(csid int, typeID uint8, streamID, ts uint32, payload []byte) error {
	if csid < 2 || csid > 63 {
		return fmt.Errorf("chunk stream id %d is out of range", csid)
	}
	if len(payload) > MaxChunkSize {
		return fmt.Errorf("message of %d bytes is too big for RTMP (maximum %d)", len(payload), MaxChunkSize)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timeout > 0 {
		if err := w.nc.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
			return err
		}
	}
	st := w.states[csid]
	var format byte
	var field uint32
	switch {
	case st == nil || st.streamID != streamID || ts < st.ts:
		format, field = 0, ts
	case st.length == len(payload) && st.typeID == typeID:
		format, field = 2, ts-st.ts
	default:
		format, field = 1, ts-st.ts
	}
	extended := field >= 0xffffff
	f24 := min(field, 0xffffff)
	h := append(w.hdr[:0], format<<6|byte(csid))
	h = append(h, byte(f24>>16), byte(f24>>8), byte(f24))
	if format <= 1 {
		n := len(payload)
		h = append(h, byte(n>>16), byte(n>>8), byte(n), typeID)
	}
	if format == 0 {
		h = binary.LittleEndian.AppendUint32(h, streamID)
	}
	if extended {
		h = binary.BigEndian.AppendUint32(h, field)
	}
	w.hdr = h
	if st == nil {
		st = &chunkState{}
		w.states[csid] = st
	}
	*st = chunkState{ts: ts, length: len(payload), typeID: typeID, streamID: streamID}
	if _, err := w.bw.Write(h); err != nil {
		return w.err(err)
	}
	for first := true; first || len(payload) > 0; first = false {
		if !first {
			// A continuation chunk: fmt 3, plus the extended timestamp again.
			if err := w.bw.WriteByte(3<<6 | byte(csid)); err != nil {
				return w.err(err)
			}
			if extended {
				if _, err := w.bw.Write(binary.BigEndian.AppendUint32(nil, field)); err != nil {
					return w.err(err)
				}
			}
		}
		n := min(len(payload), w.size)
		if _, err := w.bw.Write(payload[:n]); err != nil {
			return w.err(err)
		}
		payload = payload[n:]
	}
	return w.err(w.bw.Flush())
}

// err says that a write timed out because the peer did not read.
func (w *ChunkWriter) err(err error) error {
	var ne net.Error
	if w.timeout > 0 && errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("the peer did not read for %v: %w", w.timeout, err)
	}
	return err
}

// Message is one message read from the peer; Payload is the caller's.
type Message struct {
	TypeID   uint8
	StreamID uint32
	TS       uint32
	Payload  []byte
}

// readState is what the reader knows of one of the peer's chunk streams.
type readState struct {
	ts       uint32
	delta    uint32
	length   uint32
	typeID   uint8
	streamID uint32
	extended bool   // the last fmt 0-2 header carried an extended timestamp,
	extValue uint32 // this one
	inMsg    bool   // a message is being reassembled in buf
	buf      []byte
}

// ChunkReader reassembles messages from the peer's chunks, holding the
// peer to MessageLimit and MaxChunkStreams. Not safe for concurrent use.
type ChunkReader struct {
	br     *bufio.Reader
	size   uint32 // the peer's chunk size
	states map[uint32]*readState

	// Media lets audio, video and aggregate messages be large
	// (MessageLimit): set it once the peer is to send media.
	Media bool
}

// NewChunkReader returns a reader of the chunk stream from r, with RTMP's
// initial chunk size, 128. A *bufio.Reader of 16 KiB or more is used as
// it is.
func NewChunkReader(r io.Reader) *ChunkReader {
	return &ChunkReader{br: bufio.NewReaderSize(r, 16<<10), size: 128, states: make(map[uint32]*readState)}
}

// Next returns the next complete message. Set Chunk Size and Abort take
// effect here (and are returned too).
func (r *ChunkReader) Next() (Message, error) {
	var b [11]byte
	for {
		if _, err := io.ReadFull(r.br, b[:1]); err != nil {
			return Message{}, err
		}
		format := b[0] >> 6
		csid := uint32(b[0] & 0x3f)
		switch csid {
		case 0:
			if _, err := io.ReadFull(r.br, b[:1]); err != nil {
				return Message{}, err
			}
			csid = 64 + uint32(b[0])
		case 1:
			if _, err := io.ReadFull(r.br, b[:2]); err != nil {
				return Message{}, err
			}
			csid = 64 + uint32(b[0]) + uint32(b[1])<<8
		}
		st := r.states[csid]
		if st == nil {
			// Normally a fmt 0 header; anything else takes zeros for what
			// it leaves out, as ffmpeg does.
			if len(r.states) >= MaxChunkStreams {
				return Message{}, fmt.Errorf("peer opened more than %d chunk streams", MaxChunkStreams)
			}
			st = &readState{}
			r.states[csid] = st
		}
		hdrLen := [4]int{11, 7, 3, 0}[format]
		if _, err := io.ReadFull(r.br, b[:hdrLen]); err != nil {
			return Message{}, err
		}
		if st.inMsg && format != 3 {
			return Message{}, fmt.Errorf("chunk stream %d: a fmt %d header in the middle of a message", csid, format)
		}
		var field uint32
		if format <= 2 {
			field = uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2])
		}
		if format <= 1 {
			st.length = uint32(b[3])<<16 | uint32(b[4])<<8 | uint32(b[5])
			st.typeID = b[6]
		}
		if format == 0 {
			st.streamID = binary.LittleEndian.Uint32(b[7:11])
		}
		switch {
		case format <= 2:
			st.extended = field == 0xffffff
			if st.extended {
				if _, err := io.ReadFull(r.br, b[:4]); err != nil {
					return Message{}, err
				}
				field = binary.BigEndian.Uint32(b[:4])
				st.extValue = field
			}
		case st.extended:
			p, err := r.br.Peek(4)
			if err != nil {
				return Message{}, err
			}
			if binary.BigEndian.Uint32(p) == st.extValue {
				_, _ = r.br.Discard(4)
			}
		}
		if !st.inMsg {
			switch format {
			case 0:
				st.ts, st.delta = field, 0
			case 1, 2:
				st.delta = field
				st.ts += field
			case 3: // a new message with the last delta again
				st.ts += st.delta
			}
			if limit := MessageLimit(st.typeID, r.Media, true); st.length > limit {
				return Message{}, fmt.Errorf("peer sends a message of type %d on chunk stream %d of %d bytes, maximum is %d", st.typeID, csid, st.length, limit)
			}
			st.inMsg, st.buf = true, nil
		}
		// The buffer grows with what arrives, not with what the header
		// announces: a peer pays for the memory it makes us hold.
		n := int(min(st.length-uint32(len(st.buf)), r.size))
		start := len(st.buf)
		st.buf = slices.Grow(st.buf, n)[:start+n]
		if _, err := io.ReadFull(r.br, st.buf[start:]); err != nil {
			return Message{}, err
		}
		if uint32(len(st.buf)) < st.length {
			continue
		}
		m := Message{TypeID: st.typeID, StreamID: st.streamID, TS: st.ts, Payload: st.buf}
		if m.Payload == nil {
			m.Payload = []byte{}
		}
		st.inMsg, st.buf = false, nil
		switch m.TypeID {
		case TypeSetChunkSize:
			if len(m.Payload) < 4 {
				return Message{}, fmt.Errorf("set chunk size message is %d bytes, expected 4", len(m.Payload))
			}
			v := binary.BigEndian.Uint32(m.Payload)
			if v&0x80000000 != 0 || v == 0 {
				return Message{}, fmt.Errorf("set chunk size to %d is invalid", v)
			}
			r.size = min(v, MaxChunkSize)
		case TypeAbort:
			if len(m.Payload) >= 4 {
				if s := r.states[binary.BigEndian.Uint32(m.Payload)]; s != nil {
					s.inMsg, s.buf = false, nil
				}
			}
		}
		return m, nil
	}
}
