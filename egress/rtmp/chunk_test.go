package rtmp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
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
		m    rtmpMessage
	}{
		{csidCommand, rtmpMessage{TypeID: msgCommandAMF0, StreamID: 0, TS: 0, Payload: amfAppend(nil, "connect", 1.0)}},
		{csidVideo, rtmpMessage{TypeID: msgVideo, StreamID: 1, TS: 0, Payload: big}},
		{csidVideo, rtmpMessage{TypeID: msgVideo, StreamID: 1, TS: 33, Payload: big}},                 // fmt 2
		{csidVideo, rtmpMessage{TypeID: msgVideo, StreamID: 1, TS: 67, Payload: big[:5000]}},          // fmt 1
		{csidVideo, rtmpMessage{TypeID: msgVideo, StreamID: 1, TS: 50, Payload: big[:10]}},            // back: fmt 0
		{csidVideo, rtmpMessage{TypeID: msgVideo, StreamID: 1, TS: 0xfffffe, Payload: big}},           // delta extended
		{csidVideo, rtmpMessage{TypeID: msgVideo, StreamID: 1, TS: 0x1000020, Payload: big}},          // fmt 1/2 after
		{csidAudio, rtmpMessage{TypeID: msgAudio, StreamID: 1, TS: 0x2000000, Payload: big[:9000]}},   // fmt 0 extended, 3 chunks
		{csidAudio, rtmpMessage{TypeID: msgAudio, StreamID: 1, TS: 0x2000015, Payload: big[:9000]}},   // fmt 2
		{csidStream, rtmpMessage{TypeID: msgDataAMF0, StreamID: 1, TS: 0xffffffff, Payload: big[:1]}}, // the largest timestamp
		{csidStream, rtmpMessage{TypeID: msgDataAMF0, StreamID: 1, TS: 5, Payload: nil}},              // empty, wraps back
	}
	for _, size := range []int{128, 4096} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			var c bufConn
			w := newChunkWriter(&c, 0)
			if size != 128 {
				if err := w.setChunkSize(size); err != nil {
					t.Fatal(err)
				}
			}
			for _, m := range msgs {
				if err := w.write(m.csid, m.m.TypeID, m.m.StreamID, m.m.TS, m.m.Payload); err != nil {
					t.Fatal(err)
				}
			}
			r := newChunkReader(&c.Buffer)
			if size != 128 {
				m, err := r.next()
				if err != nil || m.TypeID != msgSetChunkSize || r.size != size {
					t.Fatalf("set chunk size: %+v %v", m, err)
				}
			}
			for i, want := range msgs {
				got, err := r.next()
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

func FuzzChunkReader(f *testing.F) {
	var c bufConn
	w := newChunkWriter(&c, 0)
	_ = w.write(csidCommand, msgCommandAMF0, 0, 0, amfAppend(nil, "_result", 1.0, nil, amfObject{{"code", "x"}}))
	_ = w.write(csidVideo, msgVideo, 1, 0x1000000, bytes.Repeat([]byte{1}, 300))
	f.Add(c.Bytes())
	f.Add([]byte{0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newChunkReader(bytes.NewReader(b))
		for range 100 {
			m, err := r.next()
			if err != nil {
				return
			}
			if len(m.Payload) > maxInMessage {
				t.Fatalf("message of %d bytes", len(m.Payload))
			}
		}
	})
}

func TestAMFRoundTrip(t *testing.T) {
	b := amfAppend(nil, "onStatus", 0.0, nil, true, amfObject{
		{"level", "error"},
		{"code", "NetStream.Publish.BadName"},
		{"n", 3},
		{"nested", amfECMAArray{{"x", uint32(7)}}},
	}, string(bytes.Repeat([]byte("l"), 70000)))
	vals, err := amfDecodeAll(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []any{"onStatus", 0.0, nil, true, map[string]any{
		"level": "error", "code": "NetStream.Publish.BadName", "n": 3.0, "nested": map[string]any{"x": 7.0},
	}, string(bytes.Repeat([]byte("l"), 70000))}
	if !reflect.DeepEqual(vals, want) {
		t.Errorf("decoded %v", vals[:5])
	}
	// Nesting beyond the limit is an error, not a stack overflow.
	deep := []byte{}
	for range 10000 {
		deep = append(deep, amf0Object, 0, 1, 'a')
	}
	if _, err := amfDecodeAll(deep); err == nil {
		t.Error("deeply nested value decoded")
	}
}

func FuzzAMFDecode(f *testing.F) {
	f.Add(amfAppend(nil, "_result", 1.0, nil, amfObject{{"code", "x"}, {"a", amfECMAArray{{"b", true}}}}))
	f.Add([]byte{amf0StrictArray, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = amfDecodeAll(b)
	})
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		url                        string
		tls                        bool
		addr, app, name, tcURL, rd string
	}{
		{"rtmp://a.rtmp.youtube.com/live2/abcd-efgh", false, "a.rtmp.youtube.com:1935", "live2", "abcd-efgh", "rtmp://a.rtmp.youtube.com/live2", "rtmp://a.rtmp.youtube.com/live2/<redacted>"},
		{"rtmps://live.example:4443/app/sub/KEY?token=T", true, "live.example:4443", "app/sub", "KEY?token=T", "rtmps://live.example:4443/app/sub", "rtmps://live.example:4443/app/sub/<redacted>?token=<redacted>"},
		{"rtmps://x.example/app/k/", true, "x.example:443", "app", "k", "rtmps://x.example/app", "rtmps://x.example/app/<redacted>/"},
		{"rtmp://[::1]:1936/live/k", false, "[::1]:1936", "live", "k", "rtmp://[::1]:1936/live", "rtmp://[::1]:1936/live/<redacted>"},
	} {
		got, err := parseTarget(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if got.tls != tc.tls || got.addr != tc.addr || got.app != tc.app || got.name != tc.name || got.tcURL != tc.tcURL || got.redacted != tc.rd {
			t.Errorf("%s: got %+v", tc.url, got)
		}
	}
	for _, bad := range []string{"", "rtmp://host/onlyapp", "http://host/a/b", "rtmp:///a/b", "rtmp://host:99999/a/b", "rtmp://u:p@host/a/b", "KEY"} {
		if _, err := parseTarget(bad); err == nil {
			t.Errorf("%q: no error", bad)
		} else if bad != "" && bytes.Contains([]byte(err.Error()), []byte("KEY")) {
			t.Errorf("%q: the error shows the key: %v", bad, err)
		}
	}
}

func TestAVCRecord(t *testing.T) {
	m := testkit.ReadFLV(t, "h264-bframes-aac.flv")
	c := m.Video.Codec.(media.H264)
	rec, err := avcRecord(c.SPS, c.PPS)
	if err != nil {
		t.Fatal(err)
	}
	// The fixture's own record, as x264/ffmpeg wrote it, is High profile
	// with the chroma and bit depth fields.
	if rec[1] != 100 || len(rec) != 11+len(c.SPS)+len(c.PPS)+4 || rec[len(rec)-4] != 0xfd || rec[len(rec)-3] != 0xf8 {
		t.Errorf("record %x", rec)
	}
}

// TestPushExtendedTimestamps pushes to ffmpeg with timestamps past
// 0xffffff ms (4 h 39 min, where RTMP switches to extended timestamps,
// repeated in every continuation chunk) and a chunk size of 128, so that
// the first message of each chunk stream has an extended timestamp and
// spans several chunks. ffmpeg must keep every frame.
func TestPushExtendedTimestamps(t *testing.T) {
	log, _ := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.ReadFLV(t, "h264-aac.flv")
	reg := media.NewRegistry(log)
	port := testkit.FreeTCPPort(t)
	file := filepath.Join(t.TempDir(), "out.flv")
	ff := listenFFmpeg(t, port, file)
	p, streaming, stop := startPusher(t, PushConfig{Registry: reg, URL: fmt.Sprintf("rtmp://127.0.0.1:%d/live/out", port), Log: log})
	p.tsOffset, p.chunkSize = 0x1000000, 128
	pub := testkit.Publish(t, reg, "live/test", m)
	testkit.WaitStreaming(t, streaming, 10*time.Second)
	sent := testkit.Until(m.Units, 3*time.Second)
	testkit.Feed(context.Background(), pub, sent, 2, 0)
	pub.Close()
	if err := ff.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, ff.Stderr.String())
	}
	stop()
	pr := testkit.FFprobe(t, file)
	pr.CheckAVC(t)
	video := 0
	for _, u := range sent {
		if u.Track.IsVideo() {
			video++
		}
	}
	for _, s := range pr.Streams {
		if s.CodecType == "video" && s.NbFrames != fmt.Sprint(video) {
			t.Errorf("ffmpeg recorded %s video frames, sent %d", s.NbFrames, video)
		}
	}
	if d := pr.Duration(t); d < 2500*time.Millisecond {
		t.Errorf("recorded %v, sent 3 s", d)
	}
}
