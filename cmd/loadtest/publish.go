package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	gortmp "github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/handshake"
	"github.com/yutopp/go-rtmp/message"
)

// The publisher speaks plain RTMP through go-rtmp's handshake, chunk
// streamer and message codecs. It drives the command sequence itself
// (connect, createStream, publish, then waiting for the onStatus) because
// go-rtmp's ClientConn neither times out nor reports a publish's onStatus,
// and a refused publish must fail the run, not go unnoticed.

// Chunk stream ids, as ffmpeg uses them.
const (
	csidControl = 2
	csidCommand = 3
	csidAudio   = 4
	csidVideo   = 6
	csidData    = 5
	chunkSize   = 4096
)

// publisher sends an FLV file to an RTMP URL at real time.
type publisher struct {
	url        string
	file       *flvFile
	loop       bool
	sei        bool
	setupLimit time.Duration

	nc      net.Conn
	cs      *gortmp.ChunkStreamer
	stream  uint32
	cmds    chan *message.CommandMessage
	readErr atomic.Pointer[error]

	// Frames and bytes sent, for the progress line.
	frames, bytes atomic.Int64
}

// cmdArgs is an AMF command body given as its values.
type cmdArgs []any

func (a cmdArgs) FromArgs(...any) error                      { return errors.New("not implemented") }
func (a cmdArgs) ToArgs(message.EncodingType) ([]any, error) { return a, nil }

// splitRTMPURL returns the TCP address, the app and the stream name (with
// its query, e.g. "cam?key=SECRET") of rtmp://host[:port]/app/name.
func splitRTMPURL(raw string) (addr, app, name, tcURL string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", "", "", err
	}
	if u.Scheme != "rtmp" {
		return "", "", "", "", fmt.Errorf("%q: only rtmp:// URLs are supported", raw)
	}
	addr = u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "1935")
	}
	app, name, _ = strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if app == "" || name == "" {
		return "", "", "", "", fmt.Errorf("%q: want rtmp://host[:port]/app/stream", raw)
	}
	if u.RawQuery != "" {
		name += "?" + u.RawQuery
	}
	return addr, app, name, "rtmp://" + u.Host + "/" + app, nil
}

// start connects and publishes; it returns once the server answered
// NetStream.Publish.Start.
func (p *publisher) start(ctx context.Context) error {
	addr, app, name, tcURL, err := splitRTMPURL(p.url)
	if err != nil {
		return err
	}
	d := net.Dialer{Timeout: p.setupLimit}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	p.nc = nc
	_ = nc.SetDeadline(time.Now().Add(p.setupLimit))
	if err := handshake.HandshakeWithServer(nc, nc, &handshake.Config{}); err != nil {
		nc.Close()
		return fmt.Errorf("RTMP handshake: %w", err)
	}
	_ = nc.SetDeadline(time.Time{})
	p.cs = gortmp.NewChunkStreamer(bufio.NewReaderSize(nc, 16<<10), bufio.NewWriterSize(nc, 64<<10), nil)
	p.cmds = make(chan *message.CommandMessage, 16)
	go p.readLoop()

	fail := func(err error) error {
		p.close()
		return err
	}
	// Our chunk size first (a 4-byte message fits any chunk size).
	p.cs.SelfState().SetChunkSize(chunkSize)
	if err := p.send(csidControl, 0, 0, &message.SetChunkSize{ChunkSize: chunkSize}); err != nil {
		return fail(err)
	}
	if err := p.command(0, "connect", 1, cmdArgs{map[string]any{
		"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; loadtest)", "tcUrl": tcURL,
	}}); err != nil {
		return fail(err)
	}
	if _, err := p.waitResult(ctx, "connect"); err != nil {
		return fail(err)
	}
	if err := p.command(0, "createStream", 2, cmdArgs{nil}); err != nil {
		return fail(err)
	}
	vals, err := p.waitResult(ctx, "createStream")
	if err != nil {
		return fail(err)
	}
	if len(vals) < 2 {
		return fail(fmt.Errorf("createStream: result %v has no stream id", vals))
	}
	id, ok := vals[1].(float64)
	if !ok {
		return fail(fmt.Errorf("createStream: result %v has no stream id", vals))
	}
	p.stream = uint32(id)
	if err := p.command(p.stream, "publish", 0, cmdArgs{nil, name, "live"}); err != nil {
		return fail(err)
	}
	code, desc, err := p.waitStatus(ctx)
	if err != nil {
		return fail(err)
	}
	if code != "NetStream.Publish.Start" {
		return fail(fmt.Errorf("publish refused: %s: %s", code, desc))
	}
	return nil
}

func (p *publisher) close() {
	if p.cs != nil {
		_ = p.cs.Close()
	}
	if p.nc != nil {
		_ = p.nc.Close()
	}
}

// readLoop reads the server's messages: chunk size changes are applied,
// commands go to p.cmds, the rest is dropped.
func (p *publisher) readLoop() {
	defer close(p.cmds)
	defer func() {
		if r := recover(); r != nil {
			err := fmt.Errorf("RTMP reader: %v", r)
			p.readErr.Store(&err)
		}
	}()
	for {
		var cm gortmp.ChunkMessage
		if _, _, err := p.cs.Read(&cm); err != nil {
			p.readErr.Store(&err)
			return
		}
		switch m := cm.Message.(type) {
		case *message.SetChunkSize:
			if err := p.cs.PeerState().SetChunkSize(m.ChunkSize); err != nil {
				p.readErr.Store(&err)
				return
			}
		case *message.CommandMessage:
			select {
			case p.cmds <- m:
			default: // nobody waits for commands once publishing
			}
		}
	}
}

func (p *publisher) send(csid int, streamID, ts uint32, msg message.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.cs.Write(ctx, csid, ts, &gortmp.ChunkMessage{StreamID: streamID, Message: msg})
}

func (p *publisher) command(streamID uint32, name string, txn int64, body message.AMFConvertible) error {
	buf := &bytes.Buffer{}
	if err := message.EncodeBodyAnyValues(message.NewAMFEncoder(buf, message.EncodingTypeAMF0), body); err != nil {
		return err
	}
	csid := csidCommand
	if streamID != 0 {
		csid = 8
	}
	return p.send(csid, streamID, 0, &message.CommandMessage{
		CommandName: name, TransactionID: txn, Encoding: message.EncodingTypeAMF0, Body: buf,
	})
}

// nextCommand waits for the next command from the server and returns its
// values after the transaction id.
func (p *publisher) nextCommand(ctx context.Context) (*message.CommandMessage, []any, error) {
	timer := time.NewTimer(p.setupLimit)
	defer timer.Stop()
	select {
	case m, ok := <-p.cmds:
		if !ok {
			if e := p.readErr.Load(); e != nil {
				return nil, nil, fmt.Errorf("RTMP connection: %w", *e)
			}
			return nil, nil, errors.New("RTMP connection closed")
		}
		dec := message.NewAMFDecoder(m.Body, m.Encoding)
		var vals []any
		for {
			var v any
			if err := dec.Decode(&v); err != nil {
				break
			}
			vals = append(vals, v)
		}
		return m, vals, nil
	case <-timer.C:
		return nil, nil, fmt.Errorf("no answer from the RTMP server within %v", p.setupLimit)
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

func (p *publisher) waitResult(ctx context.Context, what string) ([]any, error) {
	for {
		m, vals, err := p.nextCommand(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		switch m.CommandName {
		case "_result":
			return vals, nil
		case "_error":
			return nil, fmt.Errorf("%s refused: %v", what, vals)
		}
	}
}

func (p *publisher) waitStatus(ctx context.Context) (code, desc string, err error) {
	for {
		m, vals, err := p.nextCommand(ctx)
		if err != nil {
			return "", "", fmt.Errorf("publish: %w", err)
		}
		if m.CommandName != "onStatus" {
			continue
		}
		for _, v := range vals {
			if o, ok := v.(map[string]any); ok {
				code, _ = o["code"].(string)
				desc, _ = o["description"].(string)
				return code, desc, nil
			}
		}
	}
}

// run sends the file at real time until ctx ends or (without loop) the file
// does. Sequence headers go first, right after @setDataFrame onMetaData.
func (p *publisher) run(ctx context.Context) error {
	defer p.close()
	if p.file.Meta != nil {
		if err := p.send(csidData, p.stream, 0, &message.DataMessage{
			Name: "@setDataFrame", Encoding: message.EncodingTypeAMF0, Body: bytes.NewReader(p.file.Meta),
		}); err != nil {
			return err
		}
	}
	for _, t := range p.file.Headers {
		if err := p.sendTag(t, 0, nil); err != nil {
			return err
		}
	}
	var rd bytes.Reader
	var stamped []byte
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for pass := uint32(0); ; pass++ {
		offset := pass * p.file.Loop
		for _, t := range p.file.Media {
			ts := t.TS + offset
			if wait := time.Until(start.Add(time.Duration(ts) * time.Millisecond)); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return nil
				}
			} else if ctx.Err() != nil {
				return nil
			}
			data := t.Data
			if p.sei && t.Type == flvTagVideo && len(data) > 5 && data[1] == 1 {
				if out, ok := stampAVC(stamped, data, p.file.LengthSize, time.Now().UnixNano()); ok {
					data, stamped = out, out
				}
			}
			rd.Reset(data)
			if err := p.sendTag(t, ts, &rd); err != nil {
				if e := p.readErr.Load(); e != nil {
					return fmt.Errorf("RTMP connection: %w", *e)
				}
				return err
			}
			if t.Type == flvTagVideo {
				p.frames.Add(1)
			}
			p.bytes.Add(int64(len(data)))
		}
		if !p.loop {
			return nil
		}
	}
}

// sendTag sends one tag as an RTMP audio or video message. The chunk
// streamer copies the payload before returning, so rd's bytes may be
// reused.
func (p *publisher) sendTag(t flvTag, ts uint32, rd *bytes.Reader) error {
	if rd == nil {
		rd = bytes.NewReader(t.Data)
	}
	var msg message.Message
	csid := csidVideo
	if t.Type == flvTagAudio {
		msg, csid = &message.AudioMessage{Payload: rd}, csidAudio
	} else {
		msg = &message.VideoMessage{Payload: rd}
	}
	return p.send(csid, p.stream, ts, msg)
}
