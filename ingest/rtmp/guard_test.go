package rtmp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	gortmp "github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/message"
)

// chunkWriter writes RTMP chunks the way ffmpeg does (rtmppkt.c
// ff_rtmp_packet_write), including the extended timestamp repeated on
// fmt 3 continuation chunks when extOnFmt3 is set.
type chunkWriter struct {
	buf       bytes.Buffer
	chunkSize int
	extOnFmt3 bool
}

func newChunkWriter(extOnFmt3 bool) *chunkWriter {
	w := &chunkWriter{chunkSize: 128, extOnFmt3: extOnFmt3}
	w.buf.Write(make([]byte, rtmpHandshakeSize)) // C0 C1 C2 (not checked)
	w.buf.Bytes()[0] = 3
	return w
}

// message writes one message; tsField is the timestamp (fmt 0) or delta
// (fmt 1, 2).
func (w *chunkWriter) message(csid int, format byte, tsField uint32, typ byte, msid uint32, body []byte) {
	ext := tsField >= 0xffffff
	field := min(tsField, 0xffffff)
	put24 := func(v uint32) { w.buf.Write([]byte{byte(v >> 16), byte(v >> 8), byte(v)}) }
	w.buf.WriteByte(format<<6 | byte(csid))
	switch format {
	case 0:
		put24(field)
		put24(uint32(len(body)))
		w.buf.WriteByte(typ)
		_ = binary.Write(&w.buf, binary.LittleEndian, msid)
	case 1:
		put24(field)
		put24(uint32(len(body)))
		w.buf.WriteByte(typ)
	case 2:
		put24(field)
	}
	if ext && format != 3 {
		_ = binary.Write(&w.buf, binary.BigEndian, tsField)
	}
	for off := 0; ; {
		n := min(w.chunkSize, len(body)-off)
		w.buf.Write(body[off : off+n])
		off += n
		if off == len(body) {
			break
		}
		w.buf.WriteByte(0xc0 | byte(csid))
		if ext && w.extOnFmt3 {
			_ = binary.Write(&w.buf, binary.BigEndian, tsField)
		}
	}
}

func (w *chunkWriter) setChunkSize(n int) {
	w.message(2, 0, 0, msgTypeSetChunkSize, 0, binary.BigEndian.AppendUint32(nil, uint32(n)))
	w.chunkSize = n
}

func body(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

type wantMsg struct {
	typ  byte
	ts   uint32
	body []byte
}

// ffmpegLikeStream is a publish-like chunk stream crossing the 24-bit
// timestamp limit, and the messages go-rtmp must read from it.
func ffmpegLikeStream(extOnFmt3 bool) ([]byte, []wantMsg) {
	w := newChunkWriter(extOnFmt3)
	var want []wantMsg
	add := func(csid int, format byte, tsField, ts uint32, typ byte, b []byte) {
		w.message(csid, format, tsField, typ, 1, b)
		want = append(want, wantMsg{typ, ts, b})
	}
	cmd := (&amfEnc{}).str("connect").num(1).str(strings.Repeat("x", 280)).Bytes() // 3 chunks at 128
	w.message(3, 0, 0, 20, 0, cmd)
	want = append(want, wantMsg{20, 0, cmd})
	w.setChunkSize(4096)
	want = append(want, wantMsg{msgTypeSetChunkSize, 0, binary.BigEndian.AppendUint32(nil, 4096)})
	const big = 0x1000000 + 1000 // past 4h39m
	add(6, 0, big, big, msgTypeVideo, body(10000, 2))
	add(6, 1, 33, big+33, msgTypeVideo, body(9000, 3))
	add(6, 3, 33, big+66, msgTypeVideo, body(9000, 4)) // fmt 3 new message: same length, same delta
	add(4, 0, big+5, big+5, msgTypeAudio, body(300, 5))
	add(4, 2, 21, big+26, msgTypeAudio, body(300, 6))
	add(6, 0, 0xffffff, 0xffffff, msgTypeVideo, body(5000, 7)) // exactly the marker value
	add(6, 1, 40, 0xffffff+40, msgTypeVideo, body(100, 8))
	add(4, 0, 1000, 1000, msgTypeAudio, body(8000, 9)) // small timestamp again
	return w.buf.Bytes(), want
}

// readWithGoRTMP parses a filtered chunk stream (after the handshake) with
// go-rtmp's own chunk reader.
func readWithGoRTMP(t *testing.T, stream []byte, n int) []wantMsg {
	t.Helper()
	cs := gortmp.NewChunkStreamer(bufio.NewReader(bytes.NewReader(stream[rtmpHandshakeSize:])), io.Discard, nil)
	defer cs.Close()
	var got []wantMsg
	for range n {
		var cm gortmp.ChunkMessage
		_, ts, err := cs.Read(&cm)
		if err != nil {
			t.Fatalf("go-rtmp read after %d messages: %v", len(got), err)
		}
		var typ byte
		var b []byte
		switch m := cm.Message.(type) {
		case *message.SetChunkSize:
			if err := cs.PeerState().SetChunkSize(m.ChunkSize); err != nil {
				t.Fatal(err)
			}
			typ, b = msgTypeSetChunkSize, binary.BigEndian.AppendUint32(nil, m.ChunkSize)
		case *message.VideoMessage:
			typ, b = msgTypeVideo, mustRead(t, m.Payload)
		case *message.AudioMessage:
			typ, b = msgTypeAudio, mustRead(t, m.Payload)
		case *message.CommandMessage:
			typ = 20
		default:
			t.Fatalf("unexpected %T", m)
		}
		got = append(got, wantMsg{typ, ts, b})
	}
	return got
}

func mustRead(t *testing.T, r io.Reader) []byte {
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func runGuard(t *testing.T, in []byte, media bool, maxPiece int) ([]byte, error) {
	t.Helper()
	g := newChunkGuard(func() bool { return media })
	var out []byte
	rng := rand.New(rand.NewPCG(1, 2))
	for len(in) > 0 {
		n := len(in)
		if maxPiece > 0 {
			n = min(n, 1+rng.IntN(maxPiece))
		}
		var err error
		out, err = g.filter(out, in[:n])
		if err != nil {
			return out, err
		}
		in = in[n:]
	}
	return out, nil
}

func TestChunkGuardExtendedTimestamps(t *testing.T) {
	for _, ext := range []bool{true, false} {
		stream, want := ffmpegLikeStream(ext)
		whole, err := runGuard(t, stream, true, 0)
		if err != nil {
			t.Fatalf("ext %v: %v", ext, err)
		}
		if !ext && !bytes.Equal(whole, stream) {
			t.Fatalf("a stream without repeated extended timestamps was changed")
		}
		if ext && len(whole) >= len(stream) {
			t.Fatalf("repeated extended timestamps were not removed")
		}
		// Any split into reads gives the same bytes.
		for _, piece := range []int{1, 3, 7, 100} {
			got, err := runGuard(t, stream, true, piece)
			if err != nil || !bytes.Equal(got, whole) {
				t.Fatalf("ext %v, reads up to %d bytes: %v, output differs", ext, piece, err)
			}
		}
		got := readWithGoRTMP(t, whole, len(want))
		for i := range want {
			if got[i].typ != want[i].typ || got[i].ts != want[i].ts || (want[i].typ != 20 && !bytes.Equal(got[i].body, want[i].body)) {
				t.Fatalf("ext %v: message %d: got type %d ts %d (%d bytes), want type %d ts %d (%d bytes)",
					ext, i, got[i].typ, got[i].ts, len(got[i].body), want[i].typ, want[i].ts, len(want[i].body))
			}
		}
	}
}

func TestChunkGuardLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		media   bool
		build   func(w *chunkWriter)
		wantErr string
	}{
		{"command at the limit", false, func(w *chunkWriter) { w.message(3, 0, 0, 20, 0, body(maxCommandMessageSize, 0)) }, ""},
		{"command over the limit", false, func(w *chunkWriter) { w.message(3, 0, 0, 20, 0, body(maxCommandMessageSize+1, 0)) }, "is 16385 bytes, maximum is 16384"},
		{"data over the limit", true, func(w *chunkWriter) { w.message(3, 0, 0, 18, 1, body(maxCommandMessageSize+1, 0)) }, "maximum is 16384"},
		{"video before publish", false, func(w *chunkWriter) { w.message(6, 0, 0, msgTypeVideo, 1, body(20000, 0)) }, "maximum is 16384"},
		{"video after publish", true, func(w *chunkWriter) { w.message(6, 0, 0, msgTypeVideo, 1, body(200000, 0)) }, ""},
		{"audio over the limit", true, func(w *chunkWriter) { w.message(4, 0, 0, msgTypeAudio, 1, body(maxAudioMessageSize+1, 0)) }, "maximum is 65536"},
		{"control over the limit", false, func(w *chunkWriter) { w.message(2, 0, 0, 5, 0, body(65, 0)) }, "maximum is 64"},
		{"too many chunk streams", false, func(w *chunkWriter) {
			for cs := 2; cs < 2+maxChunkStreams+1; cs++ {
				w.message(cs, 0, 0, 20, 0, body(10, 0))
			}
		}, "more than 16 chunk streams"},
		{"continuation of nothing", false, func(w *chunkWriter) { w.buf.Write([]byte{0xc3, 1, 2, 3}) }, "unknown length"},
		{"set chunk size with bit 31", false, func(w *chunkWriter) { w.message(2, 0, 0, 1, 0, []byte{0x80, 0, 0, 1}) }, "invalid"},
		{"set chunk size zero", false, func(w *chunkWriter) { w.message(2, 0, 0, 1, 0, []byte{0, 0, 0, 0}) }, "invalid"},
		{"short set chunk size", false, func(w *chunkWriter) { w.message(2, 0, 0, 1, 0, []byte{0, 0}) }, "expected 4"},
		{"empty message", false, func(w *chunkWriter) { w.buf.Write([]byte{0x03, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 0}) }, "unknown length"},
		{"large chunk stream ids", false, func(w *chunkWriter) {
			w.buf.Write([]byte{0x00, 200, 0, 0, 0, 0, 0, 1, 20, 0, 0, 0, 0, 'x'})        // 2-byte basic header: csid 264
			w.buf.Write([]byte{0x01, 0xff, 0xff, 0, 0, 0, 0, 0, 1, 20, 0, 0, 0, 0, 'y'}) // 3-byte: csid 65599
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newChunkWriter(true)
			tc.build(w)
			_, err := runGuard(t, w.buf.Bytes(), tc.media, 0)
			if tc.wantErr == "" {
				if err != nil {
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

// smallStream is a short chunk stream with extended timestamps, a fuzz seed.
func smallStream(extOnFmt3 bool) []byte {
	w := newChunkWriter(extOnFmt3)
	w.message(3, 0, 0, 20, 0, (&amfEnc{}).str("connect").num(1).str(strings.Repeat("x", 150)).Bytes())
	w.message(6, 0, 0x1000000, msgTypeVideo, 1, body(300, 1))
	w.message(6, 1, 33, msgTypeVideo, 1, body(200, 2))
	w.message(4, 0, 5, msgTypeAudio, 1, body(20, 3))
	w.setChunkSize(64)
	w.message(6, 3, 33, msgTypeVideo, 1, body(200, 4))
	return w.buf.Bytes()[rtmpHandshakeSize:]
}

func FuzzChunkGuard(f *testing.F) {
	f.Add(smallStream(true), true)
	f.Add(smallStream(false), false)
	f.Fuzz(func(t *testing.T, b []byte, media bool) {
		g := newChunkGuard(func() bool { return media })
		g.skip = 0
		out, err := g.filter(nil, b)
		if len(out) > len(b) {
			t.Fatalf("output %d bytes from %d", len(out), len(b))
		}
		// Split reads give the same result.
		g2 := newChunkGuard(func() bool { return media })
		g2.skip = 0
		var out2 []byte
		var err2 error
		for i, n := 0, 1; i < len(b) && err2 == nil; i, n = i+n, n%5+1 {
			out2, err2 = g2.filter(out2, b[i:min(i+n, len(b))])
		}
		if (err == nil) != (err2 == nil) || (err == nil && !bytes.Equal(out, out2)) {
			t.Fatalf("split reads: %v, whole: %v; outputs equal %v", err2, err, bytes.Equal(out, out2))
		}
		// After an error, the guard keeps failing.
		if err != nil {
			if _, again := g.filter(nil, []byte{0}); again == nil {
				t.Fatal("no error after an error")
			}
		}
	})
}
