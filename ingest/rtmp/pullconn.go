package rtmp

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/yutopp/go-rtmp/handshake"

	"github.com/wishbridge/bridge/config"
)

// The client side of RTMP play, for the Puller: TCP (or TLS), handshake,
// connect, createStream, play, then the media messages. go-rtmp's client
// is not used: it has no play, and its chunk streamer, used alone, sends
// its acknowledgements through a writer only go-rtmp's own connections can
// set. Reading goes through the chunk guard (guard.go), so a source is held
// to the limits a publisher is, and repeated extended timestamps are
// handled the same way.

// RTMP message type ids the client handles, besides msgTypeSetChunkSize,
// msgTypeAudio and msgTypeVideo (guard.go).
const (
	msgTypeAbort         = 2
	msgTypeAck           = 3
	msgTypeUserControl   = 4
	msgTypeWindowAckSize = 5
	msgTypeDataAMF0      = 18
	msgTypeCommandAMF0   = 20
	msgTypeAggregate     = 22
)

// User control events (RTMP specification 7.1.7).
const (
	userSetBufferLength = 3
	userPingRequest     = 6
	userPingResponse    = 7
)

// Chunk stream ids the client sends on (as ffmpeg does).
const (
	pullCSControl = 2 // protocol control messages
	pullCSCommand = 3 // NetConnection commands
	pullCSStream  = 8 // NetStream commands (play)
)

// pullChunkSize is the chunk size the client sends with: RTMP's default,
// never changed (it sends only a few small commands).
const pullChunkSize = 128

// pullBufferLength is the buffer length announced after play (ffmpeg's
// default); some servers send nothing until they know it.
const pullBufferLength = 3000 // ms

// source is a parsed rtmp:// or rtmps:// pull URL.
type source struct {
	tls      bool
	host     string // for TLS verification
	addr     string // host:port
	app      string // connect's app: the path without its last segment
	name     string // play's stream name: the last segment and the query
	tcURL    string
	redacted string
}

// parseSource reads rtmp://host[:port]/app/name[?query] (or rtmps://,
// port 443 by default). As for publishing (see the package doc), the last
// path segment is the stream name and everything before it the app, so
// rtmp://host/a/b/c plays "c" in app "a/b"; the query goes with the stream
// name, where servers look for keys.
func parseSource(raw string) (source, error) {
	s := source{redacted: config.RedactURL(raw)}
	scheme, rest, ok := strings.Cut(raw, "://")
	switch {
	case !ok:
		return s, fmt.Errorf("%q is not an rtmp:// URL", s.redacted)
	case strings.EqualFold(scheme, "rtmp"):
	case strings.EqualFold(scheme, "rtmps"):
		s.tls = true
	default:
		return s, fmt.Errorf("%q is not an rtmp:// or rtmps:// URL", s.redacted)
	}
	rest, query, hasQuery := strings.Cut(rest, "?")
	hostport, path, _ := strings.Cut(rest, "/")
	if strings.Contains(hostport, "@") {
		return s, fmt.Errorf("%q: user and password in RTMP URLs are not supported", s.redacted)
	}
	port := "1935"
	if s.tls {
		port = "443"
	}
	host := hostport
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
		host = hostport[1 : len(hostport)-1]
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return s, fmt.Errorf("%q has an invalid port", s.redacted)
	}
	if host == "" {
		return s, fmt.Errorf("%q has no host", s.redacted)
	}
	s.host, s.addr = host, net.JoinHostPort(host, port)
	path = strings.Trim(path, "/")
	i := strings.LastIndexByte(path, '/')
	if i <= 0 || i == len(path)-1 {
		return s, fmt.Errorf("%q: expected rtmp://host[:port]/app/name", s.redacted)
	}
	s.app, s.name = path[:i], path[i+1:]
	if hasQuery {
		s.name += "?" + query
	}
	s.tcURL = strings.ToLower(scheme) + "://" + hostport + "/" + s.app
	return s, nil
}

// pullConn is one play connection. Everything runs on the puller's
// goroutine but close, which may come from any (it only closes the socket).
type pullConn struct {
	nc      net.Conn
	unwatch func() bool   // stops closing nc when the dial's context ends
	br      *bufio.Reader // over the guarded reader
	in      *guardedReader
	idle    time.Duration // bound on every wait for the server
	write   time.Duration // bound on every write

	// Chunk reading.
	chunkSize uint32
	chunks    map[int]*chunkIn

	// Acknowledgements: the server's window and what was acknowledged.
	ackWindow uint32
	acked     uint64

	playSent bool   // play was sent: media messages may be large
	playing  bool   // the play started: setup is over
	streamID uint32 // of the play, from createStream
	txn      float64
	out      []byte // scratch for writing
}

type chunkIn struct {
	ts, delta uint32
	length    uint32
	typeID    uint8
	streamID  uint32
	buf       []byte // the message being reassembled; nil between messages
}

// rtmpMsg is one message from the server; Payload is the caller's.
type rtmpMsg struct {
	typeID   uint8
	streamID uint32
	ts       uint32
	payload  []byte
}

// guardedReader reads from the server through the chunk guard, with a
// deadline on every network read.
type guardedReader struct {
	nc       net.Conn
	guard    *chunkGuard
	deadline func() time.Time
	// timeoutErr says what a timed-out read was waiting for.
	timeoutErr func() error

	buf    []byte
	out    []byte // filtered bytes not yet returned
	outOff int
	err    error
	total  uint64 // bytes read from the network
}

func (r *guardedReader) Read(p []byte) (int, error) {
	for r.outOff == len(r.out) {
		if r.err != nil {
			return 0, r.err
		}
		r.out, r.outOff = r.out[:0], 0
		r.err = r.fill()
	}
	n := copy(p, r.out[r.outOff:])
	r.outOff += n
	return n, nil
}

func (r *guardedReader) fill() error {
	if err := r.nc.SetReadDeadline(r.deadline()); err != nil {
		return err
	}
	if r.buf == nil {
		r.buf = make([]byte, 16<<10)
	}
	n, err := r.nc.Read(r.buf)
	if n > 0 {
		r.total += uint64(n)
		var gerr error
		if r.out, gerr = r.guard.filter(r.out, r.buf[:n]); gerr != nil {
			r.out = r.out[:0]
			return gerr
		}
	}
	var ne net.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF):
		return errors.New("the server closed the connection")
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w: %w", r.timeoutErr(), err)
	}
	return err
}

// dialPull connects to s and does the RTMP handshake; the whole takes at
// most setup. When ctx ends, the connection is closed (until close).
func dialPull(ctx context.Context, s source, setup, idle time.Duration) (*pullConn, error) {
	dctx, cancel := context.WithTimeout(ctx, setup)
	defer cancel()
	var nc net.Conn
	var err error
	if s.tls {
		d := &tls.Dialer{Config: &tls.Config{ServerName: s.host, MinVersion: tls.VersionTLS12}}
		nc, err = d.DialContext(dctx, "tcp", s.addr)
	} else {
		var d net.Dialer
		nc, err = d.DialContext(dctx, "tcp", s.addr)
	}
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no connection within %v", setup)
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	c := &pullConn{
		nc:        nc,
		unwatch:   context.AfterFunc(ctx, func() { nc.Close() }),
		idle:      idle,
		write:     idle,
		chunkSize: 128,
		chunks:    make(map[int]*chunkIn),
	}
	setupEnd := time.Now().Add(setup)
	c.in = &guardedReader{
		nc:    nc,
		guard: newChunkGuard(func() bool { return c.playSent }),
		deadline: func() time.Time {
			d := time.Now().Add(c.idle)
			if !c.playing && setupEnd.Before(d) {
				d = setupEnd
			}
			return d
		},
		timeoutErr: func() error {
			if !c.playing {
				return fmt.Errorf("handshake, connect and play not done within %v", setup)
			}
			return fmt.Errorf("no data for %v", c.idle)
		},
	}
	c.in.guard.aggregates = true
	c.br = bufio.NewReaderSize(c.in, 16<<10)
	_ = nc.SetWriteDeadline(setupEnd)
	if err := handshake.HandshakeWithServer(c.br, nc, &handshake.Config{SkipHandshakeVerification: true}); err != nil {
		c.close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("handshake: %w", unwrapHandshake(err))
	}
	return c, nil
}

// unwrapHandshake drops go-rtmp's stack-carrying wrapper from err.
func unwrapHandshake(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// close closes the connection; it may be called from any goroutine, more
// than once.
func (c *pullConn) close() {
	c.unwatch()
	_ = c.nc.Close()
}

// writeMsg sends one message in chunks of pullChunkSize, timestamp 0.
func (c *pullConn) writeMsg(csid int, typeID uint8, streamID uint32, payload []byte) error {
	b := c.out[:0]
	b = append(b, byte(csid), 0, 0, 0)
	n := len(payload)
	b = append(b, byte(n>>16), byte(n>>8), byte(n), typeID)
	b = binary.LittleEndian.AppendUint32(b, streamID)
	for i := 0; ; {
		k := min(n-i, pullChunkSize)
		b = append(b, payload[i:i+k]...)
		i += k
		if i == n {
			break
		}
		b = append(b, 3<<6|byte(csid))
	}
	c.out = b
	if err := c.nc.SetWriteDeadline(time.Now().Add(c.write)); err != nil {
		return err
	}
	if _, err := c.nc.Write(b); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			err = fmt.Errorf("the server did not read for %v: %w", c.write, err)
		}
		return err
	}
	return nil
}

func (c *pullConn) command(csid int, streamID uint32, name string, args ...any) (float64, error) {
	c.txn++
	if name == "play" {
		c.txn = 0 // NetStream commands other than results carry 0
	}
	var e amfWriter
	e.value(name)
	e.value(c.txn)
	for _, a := range args {
		e.value(a)
	}
	return c.txn, c.writeMsg(csid, msgTypeCommandAMF0, streamID, e.b)
}

func (c *pullConn) userControl(event uint16, data ...uint32) error {
	b := binary.BigEndian.AppendUint16(nil, event)
	for _, d := range data {
		b = binary.BigEndian.AppendUint32(b, d)
	}
	return c.writeMsg(pullCSControl, msgTypeUserControl, 0, b)
}

// next returns the next message that is not a protocol control message
// or a user control event (those are handled here: chunk size, abort,
// window, pings).
func (c *pullConn) next() (rtmpMsg, error) {
	for {
		m, err := c.readMsg()
		if err != nil {
			return m, err
		}
		if err := c.maybeAck(); err != nil {
			return m, err
		}
		switch m.typeID {
		case msgTypeSetChunkSize:
			if len(m.payload) < 4 {
				return m, errors.New("short Set Chunk Size message")
			}
			// The guard has checked the value.
			c.chunkSize = min(binary.BigEndian.Uint32(m.payload)&0x7fffffff, maxChunkSize)
		case msgTypeAbort:
			if len(m.payload) >= 4 {
				if s := c.chunks[int(binary.BigEndian.Uint32(m.payload))]; s != nil {
					s.buf = nil
				}
			}
		case msgTypeWindowAckSize:
			if len(m.payload) >= 4 {
				c.ackWindow = binary.BigEndian.Uint32(m.payload)
			}
		case msgTypeUserControl:
			if len(m.payload) >= 6 && binary.BigEndian.Uint16(m.payload) == userPingRequest {
				if err := c.userControl(userPingResponse, binary.BigEndian.Uint32(m.payload[2:])); err != nil {
					return m, err
				}
			}
		case msgTypeAck, 6: // acknowledgement, set peer bandwidth
		default:
			return m, nil
		}
	}
}

// maybeAck acknowledges what was received once a window's worth has come
// in since the last acknowledgement.
func (c *pullConn) maybeAck() error {
	if c.ackWindow == 0 || c.in.total-c.acked < uint64(c.ackWindow) {
		return nil
	}
	c.acked = c.in.total
	return c.writeMsg(pullCSControl, msgTypeAck, 0, binary.BigEndian.AppendUint32(nil, uint32(c.in.total)))
}

// readMsg reassembles the next message from its chunks, as go-rtmp reads
// them (the guard in front has checked lengths, types, the number of chunk
// streams, and dropped repeated extended timestamps of fmt 3 chunks).
func (c *pullConn) readMsg() (rtmpMsg, error) {
	var b [11]byte
	for {
		if _, err := io.ReadFull(c.br, b[:1]); err != nil {
			return rtmpMsg{}, err
		}
		format := b[0] >> 6
		csid := int(b[0] & 0x3f)
		switch csid {
		case 0:
			if _, err := io.ReadFull(c.br, b[:1]); err != nil {
				return rtmpMsg{}, err
			}
			csid = 64 + int(b[0])
		case 1:
			if _, err := io.ReadFull(c.br, b[:2]); err != nil {
				return rtmpMsg{}, err
			}
			csid = 64 + int(b[0]) + int(b[1])<<8
		}
		st := c.chunks[csid]
		if st == nil {
			st = &chunkIn{}
			c.chunks[csid] = st
		}
		hlen := [4]int{11, 7, 3, 0}[format]
		if _, err := io.ReadFull(c.br, b[:hlen]); err != nil {
			return rtmpMsg{}, err
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
		if format <= 2 && field == 0xffffff {
			if _, err := io.ReadFull(c.br, b[:4]); err != nil {
				return rtmpMsg{}, err
			}
			field = binary.BigEndian.Uint32(b[:4])
		}
		if st.buf == nil {
			switch format {
			case 0:
				st.ts, st.delta = field, 0
			case 1, 2:
				st.delta = field
				st.ts += field
			case 3:
				st.ts += st.delta
			}
			if st.length > maxVideoMessageSize { // the guard refuses it first
				return rtmpMsg{}, fmt.Errorf("message of %d bytes", st.length)
			}
			st.buf = make([]byte, 0, st.length)
		}
		start := len(st.buf)
		k := min(st.length-uint32(start), c.chunkSize)
		st.buf = st.buf[:start+int(k)]
		if _, err := io.ReadFull(c.br, st.buf[start:]); err != nil {
			return rtmpMsg{}, err
		}
		if uint32(len(st.buf)) < st.length {
			continue
		}
		m := rtmpMsg{typeID: st.typeID, streamID: st.streamID, ts: st.ts, payload: st.buf}
		st.buf = nil
		return m, nil
	}
}

// amfWriter encodes AMF0 command values: strings, numbers, booleans, nil
// and objects given as amfObject.
type amfWriter struct{ b []byte }

// amfObject is an AMF0 object with its properties in order.
type amfObject []amfProp

type amfProp struct {
	key   string
	value any
}

func (w *amfWriter) str(s string) {
	w.b = binary.BigEndian.AppendUint16(w.b, uint16(len(s)))
	w.b = append(w.b, s...)
}

func (w *amfWriter) value(v any) {
	switch v := v.(type) {
	case nil:
		w.b = append(w.b, amf0Null)
	case string:
		if len(v) > math.MaxUint16 {
			w.b = append(w.b, amf0LongString)
			w.b = binary.BigEndian.AppendUint32(w.b, uint32(len(v)))
			w.b = append(w.b, v...)
			return
		}
		w.b = append(w.b, amf0String)
		w.str(v)
	case float64:
		w.b = append(w.b, amf0Number)
		w.b = binary.BigEndian.AppendUint64(w.b, math.Float64bits(v))
	case int:
		w.value(float64(v))
	case bool:
		b := byte(0)
		if v {
			b = 1
		}
		w.b = append(w.b, amf0Boolean, b)
	case amfObject:
		w.b = append(w.b, amf0Object)
		for _, p := range v {
			w.str(p.key)
			w.value(p.value)
		}
		w.b = append(w.b, 0, 0, amf0ObjectEnd)
	default:
		panic(fmt.Sprintf("amfWriter: unsupported type %T", v))
	}
}

// amfCommand is a decoded command message: its name, transaction id and
// the values after them; an object's properties are given as a map of
// their scalar values.
type amfCommand struct {
	name string
	txn  float64
	args []any
}

func parseCommand(b []byte) (amfCommand, error) {
	r := amfReader{b: b}
	var cmd amfCommand
	name, err := r.value(0, nil)
	if err != nil {
		return cmd, fmt.Errorf("command name: %w", err)
	}
	var ok bool
	if cmd.name, ok = name.(string); !ok {
		return cmd, fmt.Errorf("command name is %v, expected a string", name)
	}
	if r.pos == len(b) {
		return cmd, nil
	}
	txn, err := r.value(0, nil)
	if err != nil {
		return cmd, fmt.Errorf("%s: transaction id: %w", cmd.name, err)
	}
	cmd.txn, _ = txn.(float64)
	for r.pos < len(b) {
		var props map[string]any
		v, err := r.value(0, func(k string, v any) {
			if props == nil {
				props = make(map[string]any)
			}
			props[k] = v
		})
		if err != nil {
			return cmd, fmt.Errorf("%s: %w", cmd.name, err)
		}
		if props != nil {
			v = props
		}
		cmd.args = append(cmd.args, v)
	}
	return cmd, nil
}

// info returns the first object argument's level, code and description
// (an onStatus info object, or the object of an _error).
func (cmd amfCommand) info() (level, code, desc string) {
	for _, a := range cmd.args {
		if m, ok := a.(map[string]any); ok {
			s := func(k string) string { x, _ := m[k].(string); return x }
			return s("level"), s("code"), s("description")
		}
	}
	return "", "", ""
}

// describe formats an _error or a status for an error message.
func (cmd amfCommand) describe() string {
	_, code, desc := cmd.info()
	switch {
	case code != "" && desc != "":
		return fmt.Sprintf("%s (%q)", code, desc)
	case code != "":
		return code
	case desc != "":
		return strconv.Quote(desc)
	default:
		return "no reason given"
	}
}
