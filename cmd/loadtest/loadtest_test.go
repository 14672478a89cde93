package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestSEIRoundTrip(t *testing.T) {
	stamps := []int64{
		1,
		0x0000000000000300, // 00 00 ... 03 00: needs emulation prevention
		0x0000000100000002,
		0x0100000000000000,
		0x17f3a5c2e4b10000, // a real-looking time ending in zeros
		math.MaxInt64,
	}
	for _, s := range stamps {
		nalu := appendStampSEI(nil, s)
		if nalu[0]&0x1f != naluTypeSEI {
			t.Fatalf("NAL type %d, want 6", nalu[0]&0x1f)
		}
		if nalu[len(nalu)-1] != 0x80 {
			t.Errorf("%#x: no rbsp stop bit at the end: % x", s, nalu)
		}
		for i := 2; i < len(nalu); i++ {
			if nalu[i-2] == 0 && nalu[i-1] == 0 && nalu[i] <= 3 && i < len(nalu) {
				if nalu[i] != 3 {
					t.Fatalf("%#x: start-code emulation at byte %d: % x", s, i, nalu)
				}
			}
		}
		got, err := parseStampSEI(nalu)
		if err != nil || got != s {
			t.Errorf("%#x: parsed %#x, %v from % x", s, got, err, nalu)
		}
	}

	// Behind another SEI message (an x264 version string is type 5 too,
	// with another UUID).
	other := []byte{naluTypeSEI, 5, 20}
	other = append(other, bytes.Repeat([]byte{0x11}, 20)...)
	stamp := appendStampSEI(nil, 12345)
	both := append(other, stamp[1:]...)
	if got, err := parseStampSEI(both); err != nil || got != 12345 {
		t.Errorf("stamp after another message: %d, %v", got, err)
	}

	// Not ours.
	for _, b := range [][]byte{nil, {0x65, 1, 2}, {naluTypeSEI}, {naluTypeSEI, 5, 24, 1, 2, 3}, other} {
		if _, err := parseStampSEI(b); err == nil {
			t.Errorf("% x parsed as a stamp", b)
		}
	}
}

// avcBody builds an FLV AVC NALU tag body with 4-byte lengths.
func avcBody(nalus ...[]byte) []byte {
	b := []byte{0x17, 1, 0, 0, 0}
	for _, n := range nalus {
		b = append(b, byte(len(n)>>24), byte(len(n)>>16), byte(len(n)>>8), byte(len(n)))
		b = append(b, n...)
	}
	return b
}

func splitAVC(t *testing.T, body []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for b := body[5:]; len(b) > 0; {
		n := int(b[0])<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		if n > len(b)-4 {
			t.Fatalf("bad length %d", n)
		}
		out = append(out, b[4:4+n])
		b = b[4+n:]
	}
	return out
}

func TestStampAVC(t *testing.T) {
	sei := []byte{0x06, 5, 1, 0xaa, 0x80}
	idr := []byte{0x65, 0x88, 0x84, 0x00}
	slice2 := []byte{0x65, 0x11}
	body := avcBody(sei, idr, slice2)
	out, ok := stampAVC(nil, body, 4, 987654321)
	if !ok {
		t.Fatal("not stamped")
	}
	nalus := splitAVC(t, out)
	if len(nalus) != 4 || !bytes.Equal(nalus[0], sei) || !bytes.Equal(nalus[2], idr) || !bytes.Equal(nalus[3], slice2) {
		t.Fatalf("NAL units after stamping: %x", nalus)
	}
	if s, err := parseStampSEI(nalus[1]); err != nil || s != 987654321 {
		t.Errorf("inserted SEI: %d, %v", s, err)
	}
	if !bytes.Equal(out[:5], body[:5]) {
		t.Errorf("tag header changed")
	}
	// 2-byte lengths.
	b2 := []byte{0x27, 1, 0, 0, 0, 0, 2, 0x41, 0x9a}
	out, ok = stampAVC(nil, b2, 2, 7)
	if !ok || len(out) != len(b2)+2+len(appendStampSEI(nil, 7)) || out[len(out)-2] != 0x41 {
		t.Errorf("2-byte lengths: % x", out)
	}
	// No slice, or malformed: not stamped.
	for _, b := range [][]byte{avcBody(sei), {0x17, 1, 0, 0, 0, 0, 0, 0, 9, 0x65}, {0x17}} {
		if _, ok := stampAVC(nil, b, 4, 1); ok {
			t.Errorf("% x stamped", b)
		}
	}
}

func TestPercentile(t *testing.T) {
	s := []float64{15, 20, 35, 40, 50}
	for _, c := range []struct{ p, want float64 }{
		{5, 15}, {30, 20}, {40, 20}, {50, 35}, {95, 50}, {100, 50},
	} {
		if got := percentile(s, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	var h []float64
	for i := 1; i <= 1000; i++ {
		h = append(h, float64(i))
	}
	if p := percentile(h, 99); p != 990 {
		t.Errorf("p99 of 1..1000 = %v", p)
	}
	if p := percentile(nil, 50); p != 0 {
		t.Errorf("empty: %v", p)
	}
	d := summarize([]float64{3, 1, 2})
	if d.N != 3 || d.Min != 1 || d.Max != 3 || d.P50 != 2 || d.Avg != 2 {
		t.Errorf("summarize: %+v", d)
	}
}

func TestSeqCounterWrap(t *testing.T) {
	var s seqCounter
	var fresh []bool
	push := func(seqs ...uint16) {
		for _, q := range seqs {
			_, f := s.push(q)
			fresh = append(fresh, f)
		}
	}
	push(65530, 65531, 65532, 65533, 65535) // 65534 lost
	if g, _ := s.push(0); g != 0 {
		t.Errorf("gap over the wrap = %d", g)
	}
	push(1, 2, 5) // 3, 4 lost
	if got := s.expected(); got != 12 {
		t.Errorf("expected = %d, want 12 (65530..5)", got)
	}
	if got := s.lost(); got != 3 {
		t.Errorf("lost = %d, want 3", got)
	}
	// A late packet (retransmission of 3) is received, not fresh.
	if _, f := s.push(3); f {
		t.Error("late packet reported fresh")
	}
	if got := s.lost(); got != 2 {
		t.Errorf("lost after a late packet = %d, want 2", got)
	}
	// A duplicate.
	if _, f := s.push(5); f {
		t.Error("duplicate reported fresh")
	}
	if got := s.lost(); got != 1 {
		t.Errorf("lost after a duplicate = %d, want 1 (duplicates count as received)", got)
	}
	// Many wraps.
	var w seqCounter
	for i := 0; i < 3*65536+10; i++ {
		if i%1000 == 999 {
			continue // lose one in 1000
		}
		w.push(uint16(i))
	}
	if got, want := w.expected(), int64(3*65536+10); got != want {
		t.Errorf("expected over 3 wraps = %d, want %d", got, want)
	}
	if got, want := w.lost(), int64((3*65536+10)/1000); got != want {
		t.Errorf("lost over 3 wraps = %d, want %d", got, want)
	}
	for i, f := range fresh {
		if !f {
			t.Errorf("in-order packet %d not fresh", i)
		}
	}
}

// packetize turns Annex-B access units into marshalled RTP packets with
// pion's payloader (SPS+PPS go into a STAP-A, big NAL units into FU-A).
func packetize(t *testing.T, mtu uint16, aus ...[][]byte) [][][]byte {
	t.Helper()
	p := rtp.NewPacketizer(mtu, 102, 0x1234, &codecs.H264Payloader{}, rtp.NewFixedSequencer(65530), 90000)
	var out [][][]byte
	for _, au := range aus {
		annexb, err := h264.AnnexB(au).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var pkts [][]byte
		for _, pkt := range p.Packetize(annexb, 3000) {
			b, err := pkt.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			pkts = append(pkts, b)
		}
		out = append(out, pkts)
	}
	return out
}

func TestAUReassembly(t *testing.T) {
	sps := []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84}
	pps := []byte{0x68, 0xce, 0x3c, 0x80}
	idr := append([]byte{0x65}, bytes.Repeat([]byte{0x42}, 5000)...)
	p1 := append([]byte{0x41}, bytes.Repeat([]byte{0x24}, 2500)...)
	p2 := []byte{0x41, 0x9a, 0x01}
	const stamp = int64(1_700_000_000_123_456_789)
	aus := packetize(t, 1200,
		[][]byte{sps, pps, appendStampSEI(nil, stamp), idr}, // 0: keyframe
		[][]byte{appendStampSEI(nil, stamp+33), p1},         // 1: P over FU-A
		[][]byte{p2},            // 2: P, one packet
		[][]byte{p1},            // 3: P, one FU-A fragment lost below
		[][]byte{p2},            // 4
		[][]byte{sps, pps, idr}, // 5: keyframe, its first packet lost below
		[][]byte{p2},            // 6
	)
	if len(aus[0]) < 5 {
		t.Fatalf("keyframe in %d packets: want a STAP-A and FU-As", len(aus[0]))
	}
	if typ := aus[0][0][12] & 0x1f; typ != naluTypeSTAPA {
		t.Fatalf("first packet is NAL type %d, want a STAP-A", typ)
	}
	drop := map[[2]int]bool{{3, 1}: true, {5, 0}: true}

	var seq seqCounter
	var a auAssembler
	var events []auEvent
	for i, au := range aus {
		for j, raw := range au {
			if drop[[2]int{i, j}] {
				continue
			}
			h, ok := parseRTP(raw)
			if !ok {
				t.Fatalf("packet %d/%d does not parse", i, j)
			}
			if _, fresh := seq.push(h.Seq); !fresh {
				t.Fatalf("packet %d/%d not fresh", i, j)
			}
			if ev, done := a.push(h.Seq, h.TS, h.Marker, h.Payload); done {
				events = append(events, ev)
			}
		}
	}
	if len(events) != len(aus) {
		t.Fatalf("%d access units ended, want %d", len(events), len(aus))
	}
	// 3 lost a middle FU-A fragment. 4 starts right after 3's marker
	// packet, so it is whole. 5 lost its first packet (the STAP-A with
	// SPS/PPS): its first NAL unit seen is the IDR, so its start is unknown.
	// 6 follows 5's marker: whole again.
	want := []struct{ complete, key bool }{
		{true, true}, {true, false}, {true, false}, {false, false}, {true, false}, {false, false}, {true, false},
	}
	for i, w := range want {
		if events[i].Complete != w.complete || events[i].Keyframe != w.key {
			t.Errorf("AU %d: complete %v keyframe %v, want %v %v", i, events[i].Complete, events[i].Keyframe, w.complete, w.key)
		}
	}
	if events[0].Stamp != stamp || events[1].Stamp != stamp+33 || events[2].Stamp != 0 {
		t.Errorf("stamps %d %d %d", events[0].Stamp, events[1].Stamp, events[2].Stamp)
	}
	if got := seq.lost(); got != 2 {
		t.Errorf("lost %d, want 2", got)
	}
}

// TestAUReassemblyMidStream: a viewer joining in the middle of an access
// unit does not count it, and the first keyframe it sees whole counts even
// though nothing came before it.
func TestAUReassemblyMidStream(t *testing.T) {
	sps := []byte{0x67, 0x42, 0xc0, 0x1f}
	pps := []byte{0x68, 0xce, 0x3c, 0x80}
	idr := append([]byte{0x65}, bytes.Repeat([]byte{7}, 3000)...)
	p := append([]byte{0x41}, bytes.Repeat([]byte{9}, 3000)...)
	aus := packetize(t, 1000, [][]byte{p}, [][]byte{sps, pps, idr}, [][]byte{p})
	var a auAssembler
	var events []auEvent
	for i, au := range aus {
		for j, raw := range au {
			if i == 0 && j == 0 {
				continue // joined after the first packet
			}
			h, _ := parseRTP(raw)
			if ev, done := a.push(h.Seq, h.TS, h.Marker, h.Payload); done {
				events = append(events, ev)
			}
		}
	}
	if len(events) != 3 || events[0].Complete || !events[1].Keyframe || !events[2].Complete {
		t.Errorf("events %+v", events)
	}

	// A keyframe without parameter sets ever seen is not showable.
	aus = packetize(t, 1000, [][]byte{idr})
	var b auAssembler
	for _, raw := range aus[0] {
		h, _ := parseRTP(raw)
		if ev, done := b.push(h.Seq, h.TS, h.Marker, h.Payload); done && ev.Keyframe {
			t.Error("IDR without SPS/PPS counted as a keyframe")
		}
	}
}

func TestParseRTP(t *testing.T) {
	p := rtp.Packet{
		Header:  rtp.Header{Version: 2, Marker: true, PayloadType: 96, SequenceNumber: 65535, Timestamp: 0xdeadbeef, SSRC: 42, CSRC: []uint32{1, 2}},
		Payload: []byte{1, 2, 3},
	}
	if err := p.SetExtension(1, []byte{9, 9}); err != nil {
		t.Fatal(err)
	}
	p.Padding, p.PaddingSize = true, 4
	raw, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	h, ok := parseRTP(raw)
	if !ok || !h.Marker || h.Seq != 65535 || h.TS != 0xdeadbeef || h.SSRC != 42 || !bytes.Equal(h.Payload, []byte{1, 2, 3}) {
		t.Errorf("parsed %+v, %v", h, ok)
	}
	for _, b := range [][]byte{nil, raw[:11], {0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, ok := parseRTP(b); ok {
			t.Errorf("% x parsed", b)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	line := []byte("1234 (my (weird) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 0 0\n")
	cpu, err := parseStatCPU(line, 100)
	if err != nil || cpu != 3 {
		t.Errorf("cpu = %v, %v; want 3 s", cpu, err)
	}
	if _, _, err := readProc(0, 100); err != nil {
		t.Errorf("reading /proc/self: %v", err)
	}
}

func TestSplitRTMPURL(t *testing.T) {
	addr, app, name, tc, err := splitRTMPURL("rtmp://127.0.0.1/private/cam?key=s3cret")
	if err != nil || addr != "127.0.0.1:1935" || app != "private" || name != "cam?key=s3cret" || tc != "rtmp://127.0.0.1/private" {
		t.Errorf("got %q %q %q %q %v", addr, app, name, tc, err)
	}
	for _, u := range []string{"http://x/a/b", "rtmp://x/app", "rtmp://x/"} {
		if _, _, _, _, err := splitRTMPURL(u); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

func TestParseFLVFixture(t *testing.T) {
	path := filepath.Join("..", "..", "..", "shared", "media", "h264-aac.flv")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("fixture not found: %v", err)
	}
	f, err := readFLVFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var video, audio int
	for _, tag := range f.Media {
		switch tag.Type {
		case flvTagVideo:
			video++
		case flvTagAudio:
			audio++
		}
	}
	if video != 300 || audio < 400 || len(f.Headers) != 2 || f.Meta == nil || f.LengthSize != 4 {
		t.Errorf("video %d audio %d headers %d meta %v lengthSize %d", video, audio, len(f.Headers), f.Meta != nil, f.LengthSize)
	}
	if f.Loop < 10000 || f.Loop > 10100 {
		t.Errorf("loop %d ms, want about 10 s", f.Loop)
	}
	// Every video frame of the fixture can be stamped.
	var buf []byte
	for _, tag := range f.Media {
		if tag.Type != flvTagVideo {
			continue
		}
		out, ok := stampAVC(buf, tag.Data, f.LengthSize, 1)
		if !ok {
			t.Fatalf("frame at %d ms not stamped", tag.TS)
		}
		buf = out
	}
}

func TestUDPDrops(t *testing.T) {
	table := []byte(`   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 020000C0:4705 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1111 2 0000000000000000 7
  102: 020000C0:9C41 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2222 2 0000000000000000 30
  103: 020000C0:9C42 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3333 2 0000000000000000 12
`)
	if got := udpDrops(table, map[string]bool{"2222": true, "3333": true}); got != 42 {
		t.Errorf("drops = %d, want 42", got)
	}
	if _, err := selfUDPDrops(); err != nil {
		t.Errorf("selfUDPDrops: %v", err)
	}
}

// TestServerDelay: the bridge's send-delay histogram is read from its
// text exposition and summarized over the window between two scrapes, with
// quantiles interpolated within buckets as histogram_quantile does.
func TestServerDelay(t *testing.T) {
	scrapes := []string{
		`bridge_whep_send_delay_seconds_bucket{kind="video",le="0.001"} 10
bridge_whep_send_delay_seconds_bucket{kind="video",le="0.002"} 10
bridge_whep_send_delay_seconds_bucket{kind="video",le="0.005"} 10
bridge_whep_send_delay_seconds_bucket{kind="video",le="+Inf"} 10
`,
		`# HELP bridge_whep_send_delay_seconds Delay.
# TYPE bridge_whep_send_delay_seconds histogram
bridge_whep_send_delay_seconds_bucket{kind="audio",le="0.001"} 0
bridge_whep_send_delay_seconds_bucket{kind="audio",le="+Inf"} 0
bridge_whep_send_delay_seconds_bucket{kind="video",le="0.001"} 60
bridge_whep_send_delay_seconds_bucket{kind="video",le="0.002"} 100
bridge_whep_send_delay_seconds_bucket{kind="video",le="0.005"} 110
bridge_whep_send_delay_seconds_bucket{kind="video",le="+Inf"} 110
bridge_whep_send_delay_seconds_sum{kind="video"} 0.1
`,
	}
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, scrapes[n])
		n++
	}))
	defer srv.Close()
	if _, err := scrapeHistograms(context.Background(), srv.URL, "", sendDelayMetric); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("scrape without the token: err %v, want a 401", err)
	}
	before, err := scrapeHistograms(context.Background(), srv.URL, "tok", sendDelayMetric)
	if err != nil {
		t.Fatal(err)
	}
	after, err := scrapeHistograms(context.Background(), srv.URL, "tok", sendDelayMetric)
	if err != nil {
		t.Fatal(err)
	}
	// 100 new observations: 50 up to 1 ms, 40 in (1, 2] ms, 10 in (2, 5] ms.
	d := delayBetween(before["video"], after["video"])
	if d.N != 100 || d.P50 != 1 || d.P95 != 3.5 || d.P99 != 4.7 {
		t.Errorf("video: %+v, want n 100, p50 1, p95 3.5, p99 4.7 ms", d)
	}
	if a := delayBetween(before["audio"], after["audio"]); a.N != 0 {
		t.Errorf("audio: %+v, want nothing observed", a)
	}
}

// TestServerMemory: the server's RSS and heap in use are read from the
// Go and process collectors of a Prometheus client (as the bridge serves
// them): this process's, which /proc confirms; an endpoint without them
// is an error that names them.
func TestServerMemory(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	m, err := scrapeMemory(context.Background(), srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	_, rssKiB, err := readProc(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if proc := float64(rssKiB) / 1024; m.RSSMiB < proc/2 || m.RSSMiB > proc*2 {
		t.Errorf("RSS %.1f MiB from the metrics, %.1f MiB in /proc/self/status", m.RSSMiB, proc)
	}
	if m.HeapInuseMiB <= 0 || m.HeapInuseMiB > m.RSSMiB {
		t.Errorf("heap in use %.2f MiB, RSS %.1f MiB: want a heap within the RSS", m.HeapInuseMiB, m.RSSMiB)
	}

	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "bridge_streams 1")
	}))
	defer bare.Close()
	if _, err := scrapeMemory(context.Background(), bare.URL, ""); err == nil || !strings.Contains(err.Error(), rssMetric) {
		t.Errorf("endpoint without the memory metrics: err %v, want one naming %s", err, rssMetric)
	}
}
