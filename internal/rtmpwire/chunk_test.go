package rtmpwire

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
)

// bufConn is a net.Conn that writes into a buffer.
type bufConn struct {
	net.Conn
	bytes.Buffer
}

func (c *bufConn) Write(p []byte) (int, error) { return c.Buffer.Write(p) }
func (c *bufConn) Read(p []byte) (int, error)  { return c.Buffer.Read(p) }

func TestChunkRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0xab}, 10000)
	msgs := []struct {
		csid int
		m    Message
	}{
		{CSCommand, Message{TypeID: TypeCommandAMF0, StreamID: 0, TS: 0, Payload: AppendAMF0(nil, "connect", 1.0)}},
		{CSVideo, Message{TypeID: TypeVideo, StreamID: 1, TS: 0, Payload: big}},
		{CSVideo, Message{TypeID: TypeVideo, StreamID: 1, TS: 33, Payload: big}},                 // fmt 2
		{CSVideo, Message{TypeID: TypeVideo, StreamID: 1, TS: 67, Payload: big[:5000]}},          // fmt 1
		{CSVideo, Message{TypeID: TypeVideo, StreamID: 1, TS: 50, Payload: big[:10]}},            // back: fmt 0
		{CSVideo, Message{TypeID: TypeVideo, StreamID: 1, TS: 0xfffffe, Payload: big}},           // delta extended
		{CSVideo, Message{TypeID: TypeVideo, StreamID: 1, TS: 0x1000020, Payload: big}},          // fmt 1/2 after
		{CSAudio, Message{TypeID: TypeAudio, StreamID: 1, TS: 0x2000000, Payload: big[:9000]}},   // fmt 0 extended, 3 chunks
		{CSAudio, Message{TypeID: TypeAudio, StreamID: 1, TS: 0x2000015, Payload: big[:9000]}},   // fmt 2
		{CSStream, Message{TypeID: TypeDataAMF0, StreamID: 1, TS: 0xffffffff, Payload: big[:1]}}, // the largest timestamp
		{CSStream, Message{TypeID: TypeDataAMF0, StreamID: 1, TS: 5, Payload: nil}},              // empty, wraps back
	}
	for _, size := range []int{128, 4096} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			var c bufConn
			w := NewChunkWriter(&c)
			if size != 128 {
				if err := w.SetChunkSize(size); err != nil {
					t.Fatal(err)
				}
			}
			for _, m := range msgs {
				if err := w.Write(m.csid, m.m.TypeID, m.m.StreamID, m.m.TS, m.m.Payload); err != nil {
					t.Fatal(err)
				}
			}
			r := NewChunkReader(&c.Buffer)
			r.Media = true
			if size != 128 {
				m, err := r.Next()
				if err != nil || m.TypeID != TypeSetChunkSize || r.size != uint32(size) {
					t.Fatalf("set chunk size: %+v %v", m, err)
				}
			}
			for i, want := range msgs {
				got, err := r.Next()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if len(want.m.Payload) == 0 {
					want.m.Payload = []byte{}
				}
				if !reflect.DeepEqual(got, want.m) {
					t.Fatalf("message %d: got type %d stream %d ts %#x len %d, want type %d stream %d ts %#x len %d", i,
						got.TypeID, got.StreamID, got.TS, len(got.Payload), want.m.TypeID, want.m.StreamID, want.m.TS, len(want.m.Payload))
				}
			}
			if c.Len() != 0 {
				t.Errorf("%d bytes left", c.Len())
			}
		})
	}
}

// TestChunkReaderLimits: the reader holds a peer to the limits the
// server's chunk guard does (the same constants).
func TestChunkReaderLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		media   bool
		build   func(w *ChunkWriter)
		wantErr string
	}{
		{"command at the limit", false, func(w *ChunkWriter) { _ = w.Write(3, TypeCommandAMF0, 0, 0, make([]byte, MaxCommandMessageSize)) }, ""},
		{"command over the limit", false, func(w *ChunkWriter) { _ = w.Write(3, TypeCommandAMF0, 0, 0, make([]byte, MaxCommandMessageSize+1)) }, "of 16385 bytes, maximum is 16384"},
		{"video before play", false, func(w *ChunkWriter) { _ = w.Write(6, TypeVideo, 1, 0, make([]byte, 20000)) }, "maximum is 16384"},
		{"video after play", true, func(w *ChunkWriter) { _ = w.Write(6, TypeVideo, 1, 0, make([]byte, 200000)) }, ""},
		{"aggregate after play", true, func(w *ChunkWriter) { _ = w.Write(6, TypeAggregate, 1, 0, make([]byte, 200000)) }, ""},
		{"audio over the limit", true, func(w *ChunkWriter) { _ = w.Write(4, TypeAudio, 1, 0, make([]byte, MaxAudioMessageSize+1)) }, "maximum is 65536"},
		{"control over the limit", false, func(w *ChunkWriter) { _ = w.Write(2, TypeWindowAckSize, 0, 0, make([]byte, 65)) }, "maximum is 64"},
		{"too many chunk streams", false, func(w *ChunkWriter) {
			for cs := 2; cs < 2+MaxChunkStreams+1; cs++ {
				_ = w.Write(cs, TypeCommandAMF0, 0, 0, make([]byte, 10))
			}
		}, "more than 16 chunk streams"},
		{"set chunk size with bit 31", false, func(w *ChunkWriter) { _ = w.Write(2, TypeSetChunkSize, 0, 0, []byte{0x80, 0, 0, 1}) }, "invalid"},
		{"set chunk size zero", false, func(w *ChunkWriter) { _ = w.Write(2, TypeSetChunkSize, 0, 0, []byte{0, 0, 0, 0}) }, "invalid"},
		{"short set chunk size", false, func(w *ChunkWriter) { _ = w.Write(2, TypeSetChunkSize, 0, 0, []byte{0, 0}) }, "expected 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c bufConn
			tc.build(NewChunkWriter(&c))
			r := NewChunkReader(&c.Buffer)
			r.Media = tc.media
			var err error
			for err == nil {
				_, err = r.Next()
			}
			if tc.wantErr == "" {
				if err != io.EOF {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func FuzzChunkReader(f *testing.F) {
	var c bufConn
	w := NewChunkWriter(&c)
	_ = w.Write(CSCommand, TypeCommandAMF0, 0, 0, AppendAMF0(nil, "_result", 1.0, nil, Object{{"code", "x"}}))
	_ = w.Write(CSVideo, TypeVideo, 1, 0x1000000, bytes.Repeat([]byte{1}, 300))
	f.Add(c.Bytes(), true)
	f.Add([]byte{0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 1}, false)
	f.Fuzz(func(t *testing.T, b []byte, media bool) {
		r := NewChunkReader(bytes.NewReader(b))
		r.Media = media
		for range 100 {
			m, err := r.Next()
			if err != nil {
				return
			}
			if limit := MessageLimit(m.TypeID, media, true); uint32(len(m.Payload)) > limit {
				t.Fatalf("message of type %d, %d bytes", m.TypeID, len(m.Payload))
			}
			if len(r.states) > MaxChunkStreams {
				t.Fatalf("%d chunk streams", len(r.states))
			}
		}
	})
}
