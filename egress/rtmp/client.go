package rtmp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The push client: a minimal RTMP publisher (connect, releaseStream,
// FCPublish, createStream, publish; then data, audio and video; FCUnpublish
// and deleteStream at the end), on our own chunk stream (chunk.go). go-rtmp's
// client is not used: its Publish returns once the command is written, it
// has no onStatus support ("TODO: Support onStatus" in stream_handler.go;
// the ingest tests found its client failing on one), so it can neither wait
// for the publish to be accepted nor say why a server refused it, and it
// errors on the _result of a command it did not track (releaseStream).

// target is a parsed rtmp:// or rtmps:// push URL.
type target struct {
	tls       bool
	tlsConfig *tls.Config // for tls; set by NewPusher
	host      string      // for TLS server name verification
	addr      string      // host:port to dial
	app       string      // connect's app: the path between the host and the last segment
	tcURL     string      // scheme://host[:port]/app
	name      string      // publish name: the last segment, with the URL's query
	redacted  string      // the URL for logs
}

// parseTarget splits rtmp[s]://host[:port]/app[/...]/name[?query]. The
// query belongs to the stream name, which is how ffmpeg and OBS send
// tokens ("key?token=..."). A userinfo part is not supported: RTMP has no
// place for it.
func parseTarget(raw string) (target, error) {
	t := target{redacted: redactURL(raw)}
	scheme, rest, ok := strings.Cut(raw, "://")
	switch {
	case !ok:
		return t, fmt.Errorf("%q is not a URL (expected rtmp://host[:port]/app/stream)", t.redacted)
	case strings.EqualFold(scheme, "rtmps"):
		t.tls = true
	case !strings.EqualFold(scheme, "rtmp"):
		return t, fmt.Errorf("%q is not an rtmp:// or rtmps:// URL", t.redacted)
	}
	hostport, path, _ := strings.Cut(rest, "/")
	if strings.Contains(hostport, "@") {
		return t, fmt.Errorf("%q: user information in an RTMP URL is not supported", t.redacted)
	}
	if hostport == "" {
		return t, fmt.Errorf("%q has no host", t.redacted)
	}
	host, port := hostport, ""
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return t, fmt.Errorf("%q has an invalid port", t.redacted)
		}
	} else if strings.HasPrefix(hostport, "[") {
		host = strings.Trim(hostport, "[]")
	}
	if port == "" {
		port = "1935"
		if t.tls {
			port = "443"
		}
	}
	t.host, t.addr = host, net.JoinHostPort(host, port)
	// The name is the last segment; a query (possibly with "/" in it) stays
	// with the name.
	pathOnly, query, hasQuery := strings.Cut(path, "?")
	pathOnly = strings.TrimRight(pathOnly, "/")
	i := strings.LastIndexByte(pathOnly, '/')
	if i <= 0 || i == len(pathOnly)-1 {
		return t, fmt.Errorf("%q has no application and stream name (expected %s://host[:port]/app/stream)", t.redacted, strings.ToLower(scheme))
	}
	t.app, t.name = pathOnly[:i], pathOnly[i+1:]
	if hasQuery {
		t.name += "?" + query
	}
	t.tcURL = strings.ToLower(scheme) + "://" + hostport + "/" + t.app
	return t, nil
}

// client is one publishing connection.
type client struct {
	t        target
	nc       net.Conn
	w        *chunkWriter
	r        *chunkReader // used by the setup, then by readLoop only
	streamID uint32       // the message stream published on
	// ackWindow and acked are owned by whoever reads (setup, then readLoop).
	ackWindow uint32
	acked     uint64
}

// Client timeouts.
const (
	dialTimeout  = 10 * time.Second
	setupTimeout = 10 * time.Second // handshake to publish accepted
	writeTimeout = 10 * time.Second // one message
)

// dial connects to t and publishes; on success the caller sends the media
// and must close the client. ctx cancels the setup. chunkSize 0 means
// outChunkSize.
func dial(ctx context.Context, t target, chunkSize int) (_ *client, err error) {
	d := &net.Dialer{Timeout: dialTimeout}
	var nc net.Conn
	if t.tls {
		cfg := t.tlsConfig
		if cfg == nil {
			cfg = &tls.Config{ServerName: t.host}
		}
		nc, err = (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", t.addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", t.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	// The setup is bounded by a deadline, and by ctx.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() || err != nil {
			nc.Close()
			if ctx.Err() != nil {
				err = ctx.Err()
			}
		}
	}()
	if err := nc.SetDeadline(time.Now().Add(setupTimeout)); err != nil {
		return nil, err
	}
	if err := handshake(nc); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	c := &client{t: t, nc: nc, w: newChunkWriter(nc, 0), r: newChunkReader(nc), ackWindow: 2_500_000}
	if chunkSize == 0 {
		chunkSize = outChunkSize
	}
	if err := c.publish(chunkSize); err != nil {
		return nil, err
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	c.w.setTimeout(writeTimeout)
	return c, nil
}

// handshake does the simple RTMP handshake (section 5.2), as librtmp (and
// so OBS) does: C1 has zeros where a version would ask for the digest
// ("complex") handshake, and S2 is not checked, since servers that do the
// complex one do not echo C1.
func handshake(rw io.ReadWriter) error {
	c := make([]byte, 1+1536)
	c[0] = 3
	binary.BigEndian.PutUint32(c[1:], uint32(time.Now().UnixMilli()))
	if _, err := rand.Read(c[9:]); err != nil {
		return err
	}
	if _, err := rw.Write(c); err != nil {
		return err
	}
	s := make([]byte, 1+1536+1536)
	if _, err := io.ReadFull(rw, s); err != nil {
		return err
	}
	if s[0] != 3 {
		return fmt.Errorf("server answers with RTMP version %d, expected 3", s[0])
	}
	// C2 echoes S1 (its time, then the time we read it, then its random).
	c2 := make([]byte, 1536)
	copy(c2, s[1:1537])
	binary.BigEndian.PutUint32(c2[4:], uint32(time.Now().UnixMilli()))
	_, err := rw.Write(c2)
	return err
}

// command sends an AMF0 command.
func (c *client) command(csid int, streamID uint32, name string, txn float64, args ...any) error {
	b := amfAppend(nil, name, txn)
	b = amfAppend(b, args...)
	return c.w.write(csid, msgCommandAMF0, streamID, 0, b)
}

// Transaction ids of the setup commands.
const (
	txnConnect       = 1
	txnReleaseStream = 2
	txnFCPublish     = 3
	txnCreateStream  = 4
	txnPublish       = 0 // NetStream commands carry 0 (ffmpeg sends 0 too)
)

func (c *client) publish(chunkSize int) error {
	if err := c.w.setChunkSize(chunkSize); err != nil {
		return fmt.Errorf("set chunk size: %w", err)
	}
	if err := c.command(csidCommand, 0, "connect", txnConnect, amfObject{
		{"app", c.t.app},
		{"type", "nonprivate"},
		{"flashVer", "FMLE/3.0 (compatible; wishbridge)"},
		{"tcUrl", c.t.tcURL},
	}); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if _, err := c.waitResult(txnConnect); err != nil {
		return fmt.Errorf("connect app %q: %w", c.t.app, err)
	}
	// releaseStream and FCPublish are what FMLE-style publishers send and
	// some platforms expect; their answers (or errors) do not matter.
	for _, cmd := range []struct {
		name string
		txn  float64
	}{{"releaseStream", txnReleaseStream}, {"FCPublish", txnFCPublish}} {
		if err := c.command(csidCommand, 0, cmd.name, cmd.txn, nil, c.t.name); err != nil {
			return fmt.Errorf("%s: %w", cmd.name, err)
		}
	}
	if err := c.command(csidCommand, 0, "createStream", txnCreateStream, nil); err != nil {
		return fmt.Errorf("createStream: %w", err)
	}
	vals, err := c.waitResult(txnCreateStream)
	if err != nil {
		return fmt.Errorf("createStream: %w", err)
	}
	id, ok := lastNumber(vals)
	if !ok || id < 0 || id > math32 {
		return fmt.Errorf("createStream: the server's answer %v has no stream id", vals)
	}
	c.streamID = uint32(id)
	if err := c.command(csidStream, c.streamID, "publish", txnPublish, nil, c.t.name, "live"); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if err := c.waitPublishStart(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

const math32 = 1<<32 - 1

func lastNumber(vals []any) (float64, bool) {
	for i := len(vals) - 1; i >= 0; i-- {
		if f, ok := vals[i].(float64); ok {
			return f, true
		}
	}
	return 0, false
}

// command is a decoded command message.
type commandMsg struct {
	name string
	txn  float64
	args []any // the values after the transaction id
}

// handle deals with one message from the server: it answers pings,
// acknowledges, applies the window size, and returns the command it
// carries, if any.
func (c *client) handle(m rtmpMessage) (*commandMsg, error) {
	if c.ackWindow > 0 && c.r.read-c.acked >= uint64(c.ackWindow) {
		c.acked = c.r.read
		if err := c.w.write(csidControl, msgAck, 0, 0, binary.BigEndian.AppendUint32(nil, uint32(c.r.read))); err != nil {
			return nil, err
		}
	}
	switch m.TypeID {
	case msgWindowAckSize:
		if len(m.Payload) >= 4 {
			c.ackWindow = binary.BigEndian.Uint32(m.Payload)
		}
	case msgUserControl:
		if len(m.Payload) >= 6 && binary.BigEndian.Uint16(m.Payload) == eventPingRequest {
			resp := binary.BigEndian.AppendUint16(nil, eventPingResponse)
			resp = append(resp, m.Payload[2:6]...)
			if err := c.w.write(csidControl, msgUserControl, 0, 0, resp); err != nil {
				return nil, err
			}
		}
	case msgCommandAMF0, msgCommandAMF3:
		p := m.Payload
		if m.TypeID == msgCommandAMF3 && len(p) > 0 {
			p = p[1:] // AMF3 commands start with a 0 byte, then AMF0
		}
		vals, err := amfDecodeAll(p)
		if err != nil && len(vals) < 2 {
			return nil, fmt.Errorf("undecodable command from the server: %w", err)
		}
		if len(vals) < 2 {
			return nil, nil
		}
		name, _ := vals[0].(string)
		txn, _ := vals[1].(float64)
		return &commandMsg{name: name, txn: txn, args: vals[2:]}, nil
	}
	return nil, nil
}

// waitResult reads until the _result or _error of transaction txn.
func (c *client) waitResult(txn float64) ([]any, error) {
	for {
		m, err := c.r.next()
		if err != nil {
			return nil, readErr(err)
		}
		cmd, err := c.handle(m)
		if err != nil {
			return nil, err
		}
		if cmd == nil || cmd.txn != txn {
			continue
		}
		switch cmd.name {
		case "_result":
			return cmd.args, nil
		case "_error":
			return nil, fmt.Errorf("refused by the server: %s", c.describe(cmd.args))
		}
	}
}

// waitPublishStart reads until the onStatus answering publish.
func (c *client) waitPublishStart() error {
	for {
		m, err := c.r.next()
		if err != nil {
			return readErr(err)
		}
		cmd, err := c.handle(m)
		if err != nil {
			return err
		}
		if cmd == nil {
			continue
		}
		switch {
		case cmd.name == "onStatus":
			st := statusOf(cmd.args)
			switch {
			case st.code == "NetStream.Publish.Start":
				return nil
			case st.level == "error" || strings.Contains(st.code, "Failed") || strings.Contains(st.code, "BadName") || strings.Contains(st.code, "Rejected"):
				return fmt.Errorf("refused by the server: %s", c.describe(cmd.args))
			}
		case cmd.name == "_error" && cmd.txn == txnPublish:
			return fmt.Errorf("refused by the server: %s", c.describe(cmd.args))
		}
	}
}

// readLoop reads the server's messages while media flows, answering pings
// and acknowledging; it returns why the connection can no longer be used:
// the server closed it, or sent an error status (e.g. it stopped the
// publish).
func (c *client) readLoop() error {
	for {
		m, err := c.r.next()
		if err != nil {
			return readErr(err)
		}
		cmd, err := c.handle(m)
		if err != nil {
			return err
		}
		if cmd == nil {
			continue
		}
		if cmd.name == "onStatus" {
			if st := statusOf(cmd.args); st.level == "error" || st.code == "NetStream.Publish.Stop" || st.code == "NetStream.Unpublish.Success" {
				return fmt.Errorf("the server ended the publish: %s", c.describe(cmd.args))
			}
		}
		if cmd.name == "close" || cmd.name == "disconnect" {
			return errors.New("the server closed the connection (close command)")
		}
	}
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the server closed the connection")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("no answer from the server within %v", setupTimeout)
	}
	return fmt.Errorf("connection to the server: %w", err)
}

type status struct{ level, code, description string }

func statusOf(args []any) status {
	for _, a := range args {
		if m, ok := a.(map[string]any); ok {
			s := func(k string) string { v, _ := m[k].(string); return v }
			return status{s("level"), s("code"), s("description")}
		}
	}
	return status{}
}

// describe renders a status or error info object from the server for logs:
// "code: description", bounded in length, with the stream name (the key)
// hidden: servers like to quote it back ("publish \"KEY\" refused").
func (c *client) describe(args []any) string {
	st := statusOf(args)
	out := st.code
	if st.description != "" {
		if out != "" {
			out += ": "
		}
		out += st.description
	}
	if out == "" {
		out = "no reason given"
	}
	if len(out) > 200 {
		out = out[:200] + "..."
	}
	key, _, _ := strings.Cut(c.t.name, "?")
	for _, secret := range []string{c.t.name, key} {
		if secret != "" {
			out = strings.ReplaceAll(out, secret, "<redacted>")
		}
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, out)
}

// sendMedia sends one audio, video or data message on the published
// stream.
func (c *client) sendMedia(typeID uint8, ts uint32, payload []byte) error {
	csid := csidStream
	switch typeID {
	case msgAudio:
		csid = csidAudio
	case msgVideo:
		csid = csidVideo
	}
	return c.w.write(csid, typeID, c.streamID, ts, payload)
}

// unpublish tells the server the publish is over (FCUnpublish,
// deleteStream), best effort, before close.
func (c *client) unpublish() {
	c.w.setTimeout(time.Second)
	_ = c.command(csidCommand, 0, "FCUnpublish", 5, nil, c.t.name)
	_ = c.command(csidCommand, 0, "deleteStream", 6, nil, float64(c.streamID))
}

func (c *client) close() error { return c.nc.Close() }
