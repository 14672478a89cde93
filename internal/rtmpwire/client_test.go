package rtmpwire

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	gortmp "github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/message"
)

// pipeClient returns a client on one end of a pipe, past the handshake
// and with play sent, and the server's end. The server's end of the
// handshake runs in the background; handshook is closed when it is done.
func pipeClient(t *testing.T) (c *Client, server net.Conn, handshook chan struct{}) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	c = &Client{cfg: Config{IdleTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, SetupTimeout: 5 * time.Second}, nc: a, play: true, ackWindow: defaultAckWindow}
	c.started.Store(true)
	c.in = &countingReader{c: c}
	br := bufio.NewReaderSize(c.in, 16<<10)
	c.r = NewChunkReader(br)
	c.r.Media = true
	c.w = NewChunkWriter(a)
	c.w.SetTimeout(5 * time.Second)
	handshook = make(chan struct{})
	go func() {
		defer close(handshook)
		c01 := make([]byte, 1+1536)
		if _, err := io.ReadFull(b, c01); err != nil {
			return
		}
		s := make([]byte, HandshakeSize)
		s[0] = 3
		if _, err := b.Write(s); err != nil {
			return
		}
		_, _ = io.ReadFull(b, make([]byte, 1536))
	}()
	if err := Handshake(struct {
		io.Reader
		io.Writer
	}{br, a}); err != nil {
		t.Fatal(err)
	}
	<-handshook
	return c, b, handshook
}

// TestClientChunkReader writes messages with go-rtmp's chunk streamer (a
// chunk size change, every header format, extended timestamps) and reads
// them back through the client. A fmt 3 chunk repeating the extended
// timestamp, as ffmpeg sends it, is read too. (Was ingest/rtmp
// TestPullChunkReader.)
func TestClientChunkReader(t *testing.T) {
	c, b, _ := pipeClient(t)
	type sent struct {
		typeID uint8
		ts     uint32
		size   int
	}
	msgs := []sent{
		{TypeVideo, 0, 5000}, {TypeAudio, 10, 300}, {TypeVideo, 33, 5000}, {TypeVideo, 66, 100},
		{TypeVideo, 0xfffff0, 400}, {TypeVideo, 0x1000020, 7000}, {TypeVideo, 0x1000040, 7000},
		{TypeAudio, 0x1000050, 200},
	}
	payload := func(i, n int) []byte { return bytes.Repeat([]byte{byte(i + 1)}, n) }
	errc := make(chan error, 1)
	go func() {
		errc <- func() error {
			cs := gortmp.NewChunkStreamer(bufio.NewReader(b), bufio.NewWriter(b), nil)
			defer cs.Close()
			write := func(csid int, ts uint32, m message.Message) error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return cs.Write(ctx, csid, ts, &gortmp.ChunkMessage{StreamID: 1, Message: m})
			}
			// Before the first write: go-rtmp's writer goroutine reads
			// the size without a lock.
			if err := cs.SelfState().SetChunkSize(1000); err != nil {
				return err
			}
			if err := write(2, 0, &message.SetChunkSize{ChunkSize: 1000}); err != nil {
				return err
			}
			for i, m := range msgs {
				// One chunk stream: go-rtmp interleaves the chunks of
				// messages on different ones.
				var msg message.Message = &message.VideoMessage{Payload: bytes.NewReader(payload(i, m.size))}
				if m.typeID == TypeAudio {
					msg = &message.AudioMessage{Payload: bytes.NewReader(payload(i, m.size))}
				}
				if err := write(6, m.ts, msg); err != nil {
					return err
				}
			}
			return nil
		}()
	}()
	for i, want := range msgs {
		m, err := c.Next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m.TypeID != want.typeID || m.TS != want.ts || !bytes.Equal(m.Payload, payload(i, want.size)) {
			t.Fatalf("message %d: type %d ts %#x %d bytes, want type %d ts %#x %d bytes", i, m.TypeID, m.TS, len(m.Payload), want.typeID, want.ts, want.size)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	// ffmpeg's way: fmt 0 with an extended timestamp, then a fmt 3
	// continuation repeating it.
	go func() {
		body := payload(9, 1500)
		var w bytes.Buffer
		w.Write([]byte{0<<6 | 6, 0xff, 0xff, 0xff, 0, 0x05, 0xdc, TypeVideo, 1, 0, 0, 0})
		w.Write([]byte{0x02, 0, 0, 0})
		w.Write(body[:1000])
		w.Write([]byte{3<<6 | 6, 0x02, 0, 0, 0})
		w.Write(body[1000:])
		_, err := b.Write(w.Bytes())
		errc <- err
	}()
	m, err := c.Next()
	if err != nil {
		t.Fatal(err)
	}
	if m.TS != 0x02000000 || !bytes.Equal(m.Payload, payload(9, 1500)) {
		t.Fatalf("ffmpeg-style message: ts %#x %d bytes", m.TS, len(m.Payload))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestClientControl: the client answers a ping and acknowledges what it
// received at the window the server set. (Was ingest/rtmp
// TestPullControl.)
func TestClientControl(t *testing.T) {
	c, b, _ := pipeClient(t)
	msg := func(csid int, typeID uint8, payload []byte) []byte {
		h := []byte{byte(csid), 0, 0, 0, 0, 0, byte(len(payload)), typeID, 0, 0, 0, 0}
		return append(h, payload...)
	}
	go func() {
		var w bytes.Buffer
		w.Write(msg(2, TypeWindowAckSize, []byte{0, 0, 0x01, 0xf4})) // 500
		w.Write(msg(2, TypeUserControl, []byte{0, EventPingRequest, 0, 0, 0x30, 0x39}))
		if _, err := b.Write(w.Bytes()); err != nil {
			return
		}
		// One write each: the client counts what each network read brings.
		for i := 0; i < 6; i++ {
			if _, err := b.Write(msg(4, TypeAudio, bytes.Repeat([]byte{0xaf}, 100))); err != nil {
				return
			}
		}
	}()
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < 6; i++ {
			m, err := c.Next()
			if err != nil {
				errc <- err
				return
			}
			if m.TypeID != TypeAudio {
				errc <- fmt.Errorf("message %d is of type %d", i, m.TypeID)
				return
			}
		}
		errc <- nil
	}()
	// The client writes with the header formats the spec allows (fmt 1
	// after the first message of a chunk stream): read it with a chunk
	// reader.
	fromClient := NewChunkReader(b)
	readMsg := func() (uint8, []byte) {
		t.Helper()
		m, err := fromClient.Next()
		if err != nil {
			t.Fatal(err)
		}
		return m.TypeID, m.Payload
	}
	// The handshake counts: the first acknowledgement goes out as soon as
	// the window is known.
	ack := func() uint32 {
		t.Helper()
		typ, p := readMsg()
		if typ != TypeAck || len(p) != 4 {
			t.Fatalf("expected an acknowledgement, got type %d %x", typ, p)
		}
		return binary.BigEndian.Uint32(p)
	}
	first := ack()
	if first < HandshakeSize {
		t.Errorf("first acknowledgement of %d bytes", first)
	}
	if typ, p := readMsg(); typ != TypeUserControl || !bytes.Equal(p, []byte{0, EventPingResponse, 0, 0, 0x30, 0x39}) {
		t.Errorf("answer to the ping: type %d %x", typ, p)
	}
	if second := ack(); second-first < 500 || second-first > 600 {
		t.Errorf("acknowledged %d bytes, then %d", first, second)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
