package rtmpwire

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
	"strings"
	"sync/atomic"
	"time"
)

// Chunk stream ids a client sends on (as ffmpeg does).
const (
	CSControl = 2 // protocol control messages: must be 2
	CSCommand = 3 // NetConnection commands
	CSAudio   = 4
	CSVideo   = 6
	CSStream  = 8 // NetStream commands and data (play, publish, @setDataFrame)
)

// Client defaults.
const (
	// DefaultSetupTimeout bounds the TCP (and TLS) connection, the
	// handshake, connect, createStream and play or publish.
	DefaultSetupTimeout = 10 * time.Second
	// DefaultWriteTimeout bounds the writing of one message.
	DefaultWriteTimeout = 10 * time.Second
	// defaultAckWindow is the acknowledgement window until the server sets
	// one (librtmp's).
	defaultAckWindow = 2_500_000
	// bufferLength is the buffer length a player announces after play
	// (ffmpeg's default); some servers send nothing until they know it.
	bufferLength = 3000 // ms
)

// Config configures a client connection.
type Config struct {
	URL URL
	// TLS is used for rtmps:// URLs; nil verifies the server's
	// certificate against the system's roots. An empty ServerName is the
	// URL's host.
	TLS *tls.Config
	// SetupTimeout bounds everything from the dial to the publish
	// accepted, or the play started (Started); 0 means
	// DefaultSetupTimeout.
	SetupTimeout time.Duration
	// IdleTimeout, if not 0, ends a started connection the server sends
	// nothing on for that long (a player's; a publisher may hear nothing
	// for hours).
	IdleTimeout time.Duration
	// WriteTimeout bounds writing one message once set up; 0 means
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// ChunkSize, if not 0, is announced before connect and written with
	// (a publisher's media then takes fewer chunks).
	ChunkSize int
}

// Client is one client connection to an RTMP server, set up to publish
// (DialPublish) or to play (DialPlay). After the setup, one goroutine
// reads (Next) while others may write (WriteMedia, Unpublish); Close may
// be called from any goroutine, more than once.
type Client struct {
	cfg      Config
	nc       net.Conn
	in       *countingReader
	r        *ChunkReader
	w        *ChunkWriter
	streamID uint32 // the message stream played or published on
	txn      float64
	play     bool

	// Owned by the reading goroutine.
	ackWindow uint32
	acked     uint64

	setupEnd time.Time
	started  atomic.Bool // the publish was accepted or the play started
}

// countingReader reads from the connection with a deadline on every read
// and counts the bytes, for acknowledgements.
type countingReader struct {
	c *Client
	n uint64
}

func (r *countingReader) Read(p []byte) (int, error) {
	c := r.c
	d := time.Time{}
	if !c.started.Load() {
		d = c.setupEnd
	} else if c.cfg.IdleTimeout > 0 {
		d = time.Now().Add(c.cfg.IdleTimeout)
	}
	if err := c.nc.SetReadDeadline(d); err != nil {
		return 0, err
	}
	n, err := c.nc.Read(p)
	r.n += uint64(n)
	var ne net.Error
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		err = errors.New("the server closed the connection")
	case errors.As(err, &ne) && ne.Timeout():
		if !c.started.Load() {
			err = fmt.Errorf("handshake, connect and %s not done within %v: %w", c.role(), c.cfg.SetupTimeout, err)
		} else {
			err = fmt.Errorf("no data for %v: %w", c.cfg.IdleTimeout, err)
		}
	}
	return n, err
}

func (c *Client) role() string {
	if c.play {
		return "play"
	}
	return "publish"
}

// DialPublish connects to cfg.URL and publishes its stream name: connect,
// releaseStream, FCPublish, createStream, publish, then it waits for
// NetStream.Publish.Start. The server's refusal is returned with its
// status (Command.Describe). ctx cancels the setup only.
func DialPublish(ctx context.Context, cfg Config) (*Client, error) {
	return dial(ctx, cfg, false)
}

// DialPlay connects to cfg.URL and plays its stream name: connect,
// createStream, play, set buffer length. It returns once play is sent:
// the caller reads the server's answer (NetStream.Play.Start, or the first
// media message) and calls Started, within the setup timeout. ctx cancels
// the setup only.
func DialPlay(ctx context.Context, cfg Config) (*Client, error) {
	return dial(ctx, cfg, true)
}

func dial(ctx context.Context, cfg Config, play bool) (_ *Client, err error) {
	if cfg.SetupTimeout == 0 {
		cfg.SetupTimeout = DefaultSetupTimeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	c := &Client{cfg: cfg, play: play, ackWindow: defaultAckWindow, setupEnd: time.Now().Add(cfg.SetupTimeout)}
	dctx, cancel := context.WithDeadline(ctx, c.setupEnd)
	defer cancel()
	if cfg.URL.TLS {
		tc := &tls.Config{ServerName: cfg.URL.Host, MinVersion: tls.VersionTLS12}
		if cfg.TLS != nil {
			tc = cfg.TLS.Clone()
			if tc.ServerName == "" {
				tc.ServerName = cfg.URL.Host
			}
		}
		c.nc, err = (&tls.Dialer{Config: tc}).DialContext(dctx, "tcp", cfg.URL.Addr)
	} else {
		var d net.Dialer
		c.nc, err = d.DialContext(dctx, "tcp", cfg.URL.Addr)
	}
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no connection within %v", cfg.SetupTimeout)
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	// Until the setup is over, ctx closes the connection.
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	defer func() {
		if !stop() || err != nil {
			c.nc.Close()
			if ctx.Err() != nil {
				err = ctx.Err()
			}
		}
	}()
	c.in = &countingReader{c: c}
	br := bufio.NewReaderSize(c.in, 16<<10)
	c.r = NewChunkReader(br)
	c.w = NewChunkWriter(c.nc)
	if err := c.nc.SetWriteDeadline(c.setupEnd); err != nil {
		return nil, err
	}
	if err := Handshake(struct {
		io.Reader
		io.Writer
	}{br, c.nc}); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if play {
		err = c.startPlay()
	} else {
		err = c.startPublish()
	}
	if err != nil {
		return nil, err
	}
	if err := c.nc.SetWriteDeadline(time.Time{}); err != nil {
		return nil, err
	}
	c.w.SetTimeout(cfg.WriteTimeout)
	return c, nil
}

// command sends an AMF0 command; NetStream commands (on a stream other
// than 0) carry transaction id 0, NetConnection ones the next id, which it
// returns.
func (c *Client) command(csid int, streamID uint32, name string, args ...any) (float64, error) {
	txn := 0.0
	if streamID == 0 {
		c.txn++
		txn = c.txn
	}
	b := AppendAMF0(nil, name, txn)
	b = AppendAMF0(b, args...)
	return txn, c.w.Write(csid, TypeCommandAMF0, streamID, 0, b)
}

func (c *Client) connect(props Object) error {
	txn, err := c.command(CSCommand, 0, "connect", props)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if _, err := c.waitResult(txn); err != nil {
		return fmt.Errorf("connect to app %q: %w", c.cfg.URL.App, err)
	}
	return nil
}

func (c *Client) createStream() error {
	txn, err := c.command(CSCommand, 0, "createStream", nil)
	if err != nil {
		return fmt.Errorf("createStream: %w", err)
	}
	res, err := c.waitResult(txn)
	if err != nil {
		return fmt.Errorf("createStream: %w", err)
	}
	for i := len(res.Args) - 1; i >= 0; i-- {
		if id, ok := res.Args[i].(float64); ok && id >= 0 && id <= math.MaxUint32 && id == math.Trunc(id) {
			c.streamID = uint32(id)
			return nil
		}
	}
	return fmt.Errorf("createStream: the server's answer %v has no stream id", res.Args)
}

func (c *Client) startPublish() error {
	u := c.cfg.URL
	if c.cfg.ChunkSize != 0 {
		if err := c.w.SetChunkSize(c.cfg.ChunkSize); err != nil {
			return fmt.Errorf("set chunk size: %w", err)
		}
	}
	if err := c.connect(Object{
		{"app", u.App},
		{"type", "nonprivate"},
		{"flashVer", "FMLE/3.0 (compatible; wishbridge)"},
		{"tcUrl", u.TCURL},
	}); err != nil {
		return err
	}
	// releaseStream and FCPublish are what FMLE-style publishers send and
	// some platforms expect; their answers (or errors) do not matter.
	for _, name := range []string{"releaseStream", "FCPublish"} {
		if _, err := c.command(CSCommand, 0, name, nil, u.Name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := c.createStream(); err != nil {
		return err
	}
	if _, err := c.command(CSStream, c.streamID, "publish", nil, u.Name, "live"); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	for {
		cmd, err := c.nextCommand()
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		st := cmd.Status()
		switch {
		case cmd.Name == "onStatus" && st.Code == "NetStream.Publish.Start":
			c.Started()
			return nil
		case cmd.Name == "onStatus" && (st.Level == "error" || strings.Contains(st.Code, "Failed") || strings.Contains(st.Code, "BadName") || strings.Contains(st.Code, "Rejected")),
			cmd.Name == "_error" && cmd.Txn == 0:
			return fmt.Errorf("publish: refused by the server: %s", c.Describe(cmd))
		}
	}
}

func (c *Client) startPlay() error {
	u := c.cfg.URL
	if err := c.connect(Object{
		{"app", u.App},
		{"type", "nonprivate"},
		{"flashVer", "LNX 9,0,124,2"},
		{"tcUrl", u.TCURL},
		{"fpad", false},
		{"capabilities", 15},
		{"audioCodecs", 4071},
		{"videoCodecs", 252},
		{"videoFunction", 1},
	}); err != nil {
		return err
	}
	if err := c.createStream(); err != nil {
		return err
	}
	// Start -2: live, or recorded if there is no live stream of the name.
	if _, err := c.command(CSStream, c.streamID, "play", nil, u.Name, -2); err != nil {
		return fmt.Errorf("play: %w", err)
	}
	c.r.Media = true
	if err := c.userControl(EventSetBufferLength, c.streamID, bufferLength); err != nil {
		return fmt.Errorf("play: %w", err)
	}
	return nil
}

// Started ends the setup: reads are bounded by the idle timeout from now
// on. DialPublish calls it; a player calls it at NetStream.Play.Start or
// the first media message.
func (c *Client) Started() { c.started.Store(true) }

// StreamID is the message stream played or published on.
func (c *Client) StreamID() uint32 { return c.streamID }

func (c *Client) userControl(event uint16, data ...uint32) error {
	b := binary.BigEndian.AppendUint16(nil, event)
	for _, d := range data {
		b = binary.BigEndian.AppendUint32(b, d)
	}
	return c.w.Write(CSControl, TypeUserControl, 0, 0, b)
}

// Next returns the server's next message that is not a protocol control
// message or a user control event: those are handled here (chunk size,
// abort, window, pings), and what was received is acknowledged at the
// server's window.
func (c *Client) Next() (Message, error) {
	for {
		m, err := c.r.Next()
		if err != nil {
			return m, err
		}
		if c.ackWindow > 0 && c.in.n-c.acked >= uint64(c.ackWindow) {
			c.acked = c.in.n
			if err := c.w.Write(CSControl, TypeAck, 0, 0, binary.BigEndian.AppendUint32(nil, uint32(c.in.n))); err != nil {
				return m, err
			}
		}
		switch m.TypeID {
		case TypeWindowAckSize:
			if len(m.Payload) >= 4 {
				c.ackWindow = binary.BigEndian.Uint32(m.Payload)
			}
		case TypeUserControl:
			if len(m.Payload) >= 6 && binary.BigEndian.Uint16(m.Payload) == EventPingRequest {
				if err := c.userControl(EventPingResponse, binary.BigEndian.Uint32(m.Payload[2:])); err != nil {
					return m, err
				}
			}
		case TypeSetChunkSize, TypeAbort, TypeAck, TypeSetPeerBandwidth:
		default:
			return m, nil
		}
	}
}

// nextCommand returns the next command message; other messages are
// dropped (nothing that matters comes during the setup).
func (c *Client) nextCommand() (Command, error) {
	for {
		m, err := c.Next()
		if err != nil {
			return Command{}, err
		}
		if m.TypeID != TypeCommandAMF0 && m.TypeID != TypeCommandAMF3 {
			continue
		}
		cmd, err := ParseCommand(m.TypeID, m.Payload)
		if err != nil {
			return Command{}, fmt.Errorf("bad answer from the server: %w", err)
		}
		return cmd, nil
	}
}

// waitResult reads until the _result or _error of transaction txn.
func (c *Client) waitResult(txn float64) (Command, error) {
	for {
		cmd, err := c.nextCommand()
		if err != nil {
			return cmd, err
		}
		switch {
		case cmd.Name == "_result" && cmd.Txn == txn:
			return cmd, nil
		case cmd.Name == "_error" && cmd.Txn == txn:
			return cmd, fmt.Errorf("refused by the server: %s", c.Describe(cmd))
		}
	}
}

// Describe renders a command's status for errors and logs, with the
// stream name hidden (Command.Describe).
func (c *Client) Describe(cmd Command) string { return cmd.Describe(c.cfg.URL.Secrets()...) }

// WriteMedia sends one audio, video or AMF0 data message on the published
// stream, within the write timeout.
func (c *Client) WriteMedia(typeID uint8, ts uint32, payload []byte) error {
	csid := CSStream
	switch typeID {
	case TypeAudio:
		csid = CSAudio
	case TypeVideo:
		csid = CSVideo
	}
	return c.w.Write(csid, typeID, c.streamID, ts, payload)
}

// Hurry bounds every write from now on by d, including one blocked now
// (a stop: the unpublish and close that follow must not wait for a
// stalled server for long).
func (c *Client) Hurry(d time.Duration) {
	_ = c.nc.SetWriteDeadline(time.Now().Add(d))
	c.w.SetTimeout(d)
}

// Unpublish tells the server the publish is over (FCUnpublish,
// deleteStream), best effort, within a second.
func (c *Client) Unpublish() {
	c.w.SetTimeout(time.Second)
	_, _ = c.command(CSCommand, 0, "FCUnpublish", nil, c.cfg.URL.Name)
	_, _ = c.command(CSCommand, 0, "deleteStream", nil, float64(c.streamID))
}

// Close closes the connection; a blocked Next or write returns.
func (c *Client) Close() error { return c.nc.Close() }
