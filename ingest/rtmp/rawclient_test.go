package rtmp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	gortmp "github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/handshake"
	"github.com/yutopp/go-rtmp/message"
)

// rawClient is a minimal RTMP client on go-rtmp's chunk streamer, for tests
// that need to see the server's status messages or send hand-made tags.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	cs *gortmp.ChunkStreamer
}

// args is an AMF command body given as its values.
type args []any

func (a args) FromArgs(...any) error                      { return errors.New("not implemented") }
func (a args) ToArgs(message.EncodingType) ([]any, error) { return a, nil }

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return handshakeRaw(t, nc)
}

// dialRawFrom is dialRaw from the local address local.
func dialRawFrom(t *testing.T, local, addr string) *rawClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return handshakeRaw(t, nc)
}

func handshakeRaw(t *testing.T, nc net.Conn) *rawClient {
	t.Helper()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := handshake.HandshakeWithServer(nc, nc, &handshake.Config{}); err != nil {
		nc.Close()
		t.Fatalf("handshake: %v", err)
	}
	c := &rawClient{t: t, nc: nc, cs: gortmp.NewChunkStreamer(bufio.NewReader(nc), bufio.NewWriter(nc), nil)}
	t.Cleanup(c.close)
	return c
}

func (c *rawClient) close() {
	c.nc.Close()
	_ = c.cs.Close()
}

func (c *rawClient) send(csid int, streamID uint32, ts uint32, msg message.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Queued for the chunk streamer's writer goroutine.
	return c.cs.Write(ctx, csid, ts, &gortmp.ChunkMessage{StreamID: streamID, Message: msg})
}

func (c *rawClient) command(csid int, streamID uint32, name string, txn int64, body message.AMFConvertible) {
	c.t.Helper()
	buf := &bytes.Buffer{}
	if err := message.EncodeBodyAnyValues(message.NewAMFEncoder(buf, message.EncodingTypeAMF0), body); err != nil {
		c.t.Fatal(err)
	}
	if err := c.send(csid, streamID, 0, &message.CommandMessage{
		CommandName: name, TransactionID: txn, Encoding: message.EncodingTypeAMF0, Body: buf,
	}); err != nil {
		c.t.Fatalf("send %s: %v", name, err)
	}
}

// next reads the next message, applying Set Chunk Size.
func (c *rawClient) next() (message.Message, error) {
	for {
		var cm gortmp.ChunkMessage
		if _, _, err := c.cs.Read(&cm); err != nil {
			return nil, err
		}
		if m, ok := cm.Message.(*message.SetChunkSize); ok {
			if err := c.cs.PeerState().SetChunkSize(m.ChunkSize); err != nil {
				return nil, err
			}
			continue
		}
		return cm.Message, nil
	}
}

// waitCommand reads until a command named name and returns its values
// after the transaction id.
func (c *rawClient) waitCommand(name string) []any {
	c.t.Helper()
	for {
		m, err := c.next()
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", name, err)
		}
		cmd, ok := m.(*message.CommandMessage)
		if !ok || cmd.CommandName != name {
			continue
		}
		dec := message.NewAMFDecoder(cmd.Body, cmd.Encoding)
		var vals []any
		for {
			var v any
			if err := dec.Decode(&v); err != nil {
				return vals
			}
			vals = append(vals, v)
		}
	}
}

// status is an onStatus info object.
type status struct{ Level, Code, Description string }

func (c *rawClient) waitStatus() status {
	c.t.Helper()
	vals := c.waitCommand("onStatus")
	for _, v := range vals {
		if m, ok := v.(map[string]any); ok {
			s := func(k string) string { x, _ := m[k].(string); return x }
			return status{s("level"), s("code"), s("description")}
		}
	}
	c.t.Fatalf("onStatus without an info object: %v", vals)
	return status{}
}

// connect sends connect and createStream and returns the stream id.
func (c *rawClient) connect(app string) uint32 {
	c.t.Helper()
	c.command(3, 0, "connect", 1, args{map[string]any{"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0", "tcUrl": "rtmp://x/" + app}})
	c.waitCommand("_result")
	c.command(3, 0, "createStream", 2, args{nil})
	vals := c.waitCommand("_result")
	if len(vals) < 2 {
		c.t.Fatalf("createStream result %v", vals)
	}
	id, ok := vals[1].(float64)
	if !ok {
		c.t.Fatalf("createStream result %v", vals)
	}
	return uint32(id)
}

func (c *rawClient) publish(streamID uint32, name string) status {
	c.t.Helper()
	c.command(8, streamID, "publish", 0, args{nil, name, "live"})
	return c.waitStatus()
}

func (c *rawClient) video(streamID, ts uint32, tag []byte) error {
	return c.send(6, streamID, ts, &message.VideoMessage{Payload: bytes.NewReader(tag)})
}

func (c *rawClient) audio(streamID, ts uint32, tag []byte) error {
	return c.send(4, streamID, ts, &message.AudioMessage{Payload: bytes.NewReader(tag)})
}

// waitClosed waits until the server closes the connection.
func (c *rawClient) waitClosed(timeout time.Duration) error {
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	for {
		if _, err := c.next(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("connection still open after %v", timeout)
			}
			return nil
		}
	}
}
