package rtmp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// The RTMP chunk stream (Adobe RTMP specification 1.0, section 5.3), both
// directions, for the push client. go-rtmp's ChunkStreamer is not used: it
// writes from a goroutine of its own behind an unbounded message reader,
// and it never writes the extended timestamp in fmt 3 continuation chunks,
// which ffmpeg, librtmp, nginx-rtmp and the big platforms expect once a
// timestamp reaches 0xffffff (4 h 39 min into a push).

// RTMP message type IDs.
const (
	msgSetChunkSize     = 1
	msgAbort            = 2
	msgAck              = 3
	msgUserControl      = 4
	msgWindowAckSize    = 5
	msgSetPeerBandwidth = 6
	msgAudio            = 8
	msgVideo            = 9
	msgDataAMF3         = 15
	msgCommandAMF3      = 17
	msgDataAMF0         = 18
	msgCommandAMF0      = 20
)

// User control events (section 6.2).
const (
	eventStreamBegin  = 0
	eventPingRequest  = 6
	eventPingResponse = 7
)

// Chunk stream IDs the client sends on (as ffmpeg does).
const (
	csidControl = 2 // protocol control messages: must be 2
	csidCommand = 3 // NetConnection commands
	csidAudio   = 4
	csidVideo   = 6
	csidStream  = 8 // NetStream commands and data (publish, @setDataFrame)
)

const (
	// outChunkSize is the chunk size the client announces and sends with
	// (ffmpeg's and OBS's): a command fits one chunk, a frame takes few.
	outChunkSize = 4096
	// maxInMessage bounds a message from the server: it sends commands and
	// control messages to a publisher, nothing large.
	maxInMessage = 1 << 20
	// maxInChunkStreams bounds the chunk streams a server may use.
	maxInChunkStreams = 32
	// maxOutMessage is the largest message the 24-bit length field holds.
	maxOutMessage = 0xffffff
)

// chunkWriter writes RTMP messages as chunks. Safe for concurrent use: the
// media goroutine and the reader (which answers pings and acknowledges)
// both write.
type chunkWriter struct {
	nc      net.Conn
	timeout time.Duration // per message; 0: none

	mu     sync.Mutex
	bw     *bufio.Writer
	size   int                 // our chunk size
	states map[int]*chunkState // per chunk stream: the last message header sent
	hdr    []byte
}

// chunkState is the header of the last message on a chunk stream, which
// the next header is relative to.
type chunkState struct {
	ts       uint32
	length   int
	typeID   uint8
	streamID uint32
}

func newChunkWriter(nc net.Conn, timeout time.Duration) *chunkWriter {
	return &chunkWriter{
		nc:      nc,
		timeout: timeout,
		bw:      bufio.NewWriterSize(nc, 16<<10),
		size:    128, // the protocol's initial chunk size
		states:  make(map[int]*chunkState),
	}
}

// setTimeout sets the deadline for writing one message from now on.
func (w *chunkWriter) setTimeout(d time.Duration) {
	w.mu.Lock()
	w.timeout = d
	w.mu.Unlock()
}

// setChunkSize announces and starts using chunk size n.
func (w *chunkWriter) setChunkSize(n int) error {
	if err := w.write(csidControl, msgSetChunkSize, 0, 0, binary.BigEndian.AppendUint32(nil, uint32(n))); err != nil {
		return err
	}
	w.mu.Lock()
	w.size = n
	w.mu.Unlock()
	return nil
}

// write sends one message on chunk stream csid (2-63). The header is fmt 0
// for the first message of a chunk stream, one on another message stream,
// or one whose timestamp goes back; otherwise fmt 1 or 2 with the
// timestamp delta. A timestamp (or delta) of 0xffffff or more goes in the
// extended timestamp field, which every continuation chunk repeats.
func (w *chunkWriter) write(csid int, typeID uint8, streamID, ts uint32, payload []byte) error {
	if csid < 2 || csid > 63 {
		return fmt.Errorf("chunk stream id %d is out of range", csid)
	}
	if len(payload) > maxOutMessage {
		return fmt.Errorf("message of %d bytes is too big for RTMP (maximum %d)", len(payload), maxOutMessage)
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
		return err
	}
	for first := true; first || len(payload) > 0; first = false {
		if !first {
			// A continuation chunk: fmt 3, plus the extended timestamp again.
			if err := w.bw.WriteByte(3<<6 | byte(csid)); err != nil {
				return err
			}
			if extended {
				if _, err := w.bw.Write(binary.BigEndian.AppendUint32(nil, field)); err != nil {
					return err
				}
			}
		}
		n := min(len(payload), w.size)
		if _, err := w.bw.Write(payload[:n]); err != nil {
			return err
		}
		payload = payload[n:]
	}
	return w.bw.Flush()
}

// rtmpMessage is a message read from the peer; Payload is owned by the
// caller.
type rtmpMessage struct {
	TypeID   uint8
	StreamID uint32
	TS       uint32
	Payload  []byte
}

// chunkReader reassembles messages from the peer's chunks. Not safe for
// concurrent use.
type chunkReader struct {
	br     *bufio.Reader
	size   int // the peer's chunk size
	states map[int]*readState
	read   uint64 // bytes read so far, for acknowledgements
}

type readState struct {
	ts       uint32
	delta    uint32
	length   int
	typeID   uint8
	streamID uint32
	extended bool // the last header of this chunk stream had an extended timestamp
	extValue uint32
	buf      []byte // the message being reassembled; nil between messages
}

func newChunkReader(r io.Reader) *chunkReader {
	return &chunkReader{br: bufio.NewReaderSize(r, 16<<10), size: 128, states: make(map[int]*readState)}
}

func (r *chunkReader) readFull(p []byte) error {
	n, err := io.ReadFull(r.br, p)
	r.read += uint64(n)
	return err
}

func (r *chunkReader) u24(p []byte) uint32 { return uint32(p[0])<<16 | uint32(p[1])<<8 | uint32(p[2]) }

// next returns the next complete message. Set Chunk Size and Abort are
// applied here (and returned too).
func (r *chunkReader) next() (rtmpMessage, error) {
	var b [11]byte
	for {
		if err := r.readFull(b[:1]); err != nil {
			return rtmpMessage{}, err
		}
		format := b[0] >> 6
		csid := int(b[0] & 0x3f)
		switch csid {
		case 0:
			if err := r.readFull(b[:1]); err != nil {
				return rtmpMessage{}, err
			}
			csid = 64 + int(b[0])
		case 1:
			if err := r.readFull(b[:2]); err != nil {
				return rtmpMessage{}, err
			}
			csid = 64 + int(b[0]) + int(b[1])<<8
		}
		st := r.states[csid]
		if st == nil {
			// Normally a fmt 0 header; anything else takes zeros for what
			// it leaves out, as ffmpeg does.
			if len(r.states) >= maxInChunkStreams {
				return rtmpMessage{}, fmt.Errorf("peer uses more than %d chunk streams", maxInChunkStreams)
			}
			st = &readState{}
			r.states[csid] = st
		}
		hdrLen := [4]int{11, 7, 3, 0}[format]
		if err := r.readFull(b[:hdrLen]); err != nil {
			return rtmpMessage{}, err
		}
		var field uint32
		if format <= 2 {
			field = r.u24(b[:3])
			st.extended = field == 0xffffff
		}
		if format <= 1 {
			st.length = int(r.u24(b[3:6]))
			st.typeID = b[6]
		}
		if format == 0 {
			st.streamID = binary.LittleEndian.Uint32(b[7:11])
		}
		if st.extended {
			// Also after fmt 3: the peer repeats the extended timestamp
			// of the chunk stream's last header (ffmpeg, librtmp).
			if err := r.readFull(b[:4]); err != nil {
				return rtmpMessage{}, err
			}
			if format <= 2 {
				field = binary.BigEndian.Uint32(b[:4])
				st.extValue = field
			}
		}
		newMessage := st.buf == nil
		switch {
		case !newMessage && format != 3:
			return rtmpMessage{}, fmt.Errorf("chunk stream %d: a fmt %d header in the middle of a message", csid, format)
		case newMessage && format == 0:
			st.ts, st.delta = field, 0
		case newMessage && format <= 2:
			st.delta = field
			st.ts += field
		case newMessage: // fmt 3 starting a message: the last delta again
			st.ts += st.delta
		}
		if newMessage {
			if st.length > maxInMessage {
				return rtmpMessage{}, fmt.Errorf("peer sends a message of %d bytes (type %d), maximum is %d", st.length, st.typeID, maxInMessage)
			}
			st.buf = make([]byte, 0, st.length)
		}
		n := min(st.length-len(st.buf), r.size)
		start := len(st.buf)
		st.buf = st.buf[:start+n]
		if err := r.readFull(st.buf[start:]); err != nil {
			return rtmpMessage{}, err
		}
		if len(st.buf) < st.length {
			continue
		}
		m := rtmpMessage{TypeID: st.typeID, StreamID: st.streamID, TS: st.ts, Payload: st.buf}
		st.buf = nil
		switch m.TypeID {
		case msgSetChunkSize:
			if len(m.Payload) < 4 {
				return rtmpMessage{}, errors.New("short Set Chunk Size message")
			}
			size := int(binary.BigEndian.Uint32(m.Payload) & 0x7fffffff)
			if size < 1 || size > maxOutMessage {
				return rtmpMessage{}, fmt.Errorf("peer sets chunk size %d", size)
			}
			r.size = size
		case msgAbort:
			if len(m.Payload) >= 4 {
				if s := r.states[int(binary.BigEndian.Uint32(m.Payload))]; s != nil {
					s.buf = nil
				}
			}
		}
		return m, nil
	}
}
