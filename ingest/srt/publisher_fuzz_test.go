package srt

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

const (
	// maxFuzzStream bounds the bytes one fuzz input expands to (head, then
	// body repeated): enough for ten PIDs of PES that each stay just under
	// maxPESSize, at about a second of demuxing.
	maxFuzzStream = 96 << 20
	// heldSampleEvery is how many bytes the connection hands out between
	// two measures of the memory the publisher holds (each one a GC).
	heldSampleEvery = 4 << 20
	// maxHeldBytes is what one SRT publisher may hold however hostile its
	// bytes: the hub's GOP cache (media.MaxGOPBytes), the units kept until
	// the tracks are declared (maxPendingBytes), and one PES being
	// gathered on each PID it uses (video and audio, maxPESSize each) at
	// the demuxer's cost of 1.3 bytes per payload byte (measured: a
	// *Packet per 184 bytes), with 25 % on top for the rest.
	maxHeldBytes = (media.MaxGOPBytes + maxPendingBytes + 2*maxPESSize*3/2) * 5 / 4
)

// fuzzConn is the publisher's side of an SRT connection whose peer sends
// stream: Read hands it out one SRT payload (payloadSize bytes) at a time,
// then io.EOF, as gosrt does when the peer goes away. Every heldSampleEvery
// bytes it measures the heap that survives a GC, so the test sees the most
// the publisher held while demuxing.
type fuzzConn struct {
	gosrt.Conn // methods the publisher does not call (nil: a call would panic)
	stream     []byte
	off        int
	sample     bool
	nextSample int
	peakLive   uint64
}

// Stats reports nothing: the publisher's end line reads the connection's
// packet counts.
func (c *fuzzConn) Stats(*gosrt.Statistics) {}

func (c *fuzzConn) Read(b []byte) (int, error) {
	if c.sample && c.off >= c.nextSample {
		c.peakLive = max(c.peakLive, liveHeap())
		c.nextSample += heldSampleEvery
	}
	if c.off == len(c.stream) {
		return 0, io.EOF
	}
	n := copy(b[:min(len(b), payloadSize)], c.stream[c.off:])
	c.off += n
	return n, nil
}

func (c *fuzzConn) Close() error { return nil }

// liveHeap returns the bytes of heap objects still reachable after a full
// GC.
func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// expand returns head followed by repeat copies of body, cut at
// maxFuzzStream.
func expand(head, body []byte, repeat int) []byte {
	n := len(head) + len(body)*repeat
	if len(body) == 0 || n > maxFuzzStream {
		n = min(n, maxFuzzStream)
		repeat = (n - len(head)) / max(len(body), 1)
	}
	out := make([]byte, 0, n)
	out = append(out, head...)
	for range repeat {
		out = append(out, body...)
	}
	return out[:min(len(out), maxFuzzStream)]
}

// runPublisher runs a publisher on a connection that sends stream, with a
// reader attached before its first unit, and returns the connection, the
// publisher and what the reader got.
func runPublisher(t *testing.T, stream []byte, sample bool) (*fuzzConn, *publisher, int) {
	log := slog.New(slog.DiscardHandler)
	reg := media.NewRegistry(log)
	pub, err := reg.Publish("live/fuzz", "srt fuzz")
	if err != nil {
		t.Fatal(err)
	}
	var rdr *media.Reader
	cfg := publisherConfig{
		what:         "publish",
		setupTimeout: time.Minute, // the stream ends first: only its bytes decide
		idleTimeout:  time.Minute,
		trackWait:    defaultTrackWait,
		keyframeWait: defaultKeyframeWait,
		onPublish: func(st *media.Stream) {
			if rdr, err = st.NewReader(media.ReaderOptions{Name: "fuzz", QueueSize: 256}); err != nil {
				t.Fatalf("NewReader: %v", err)
			}
		},
	}
	conn := &fuzzConn{stream: stream, sample: sample}
	p := newPublisher(cfg, conn, pub, "fuzz peer", log)
	p.run()
	got := 0
	for {
		u, _, err := rdr.TryRead()
		if u == nil {
			if err == nil {
				t.Fatal("reader: no unit and no error after the publisher ended")
			}
			if !errors.Is(err, media.ErrStreamEnded) {
				t.Fatalf("reader ended with %v, want %v", err, media.ErrStreamEnded)
			}
			break
		}
		checkUnit(t, u)
		got++
	}
	rdr.Close()
	return conn, p, got
}

// checkUnit checks the invariants of a unit the hub hands readers.
func checkUnit(t *testing.T, u *media.Unit) {
	t.Helper()
	if u.Track == nil {
		t.Fatal("unit without a track")
	}
	if u.Track.IsVideo() {
		if len(u.NALUs) == 0 {
			t.Fatal("video unit without NAL units")
		}
		for _, n := range u.NALUs {
			if len(n) == 0 {
				t.Fatal("empty NAL unit")
			}
		}
	} else if len(u.Data) == 0 {
		t.Fatal("empty audio unit")
	}
}

// FuzzTSIngest feeds arbitrary bytes to an SRT publisher as if they came
// from its connection: head once, then body repeat times (so that a small
// input can be a long stream), in SRT payloads. The publisher must neither
// panic nor hold more than maxHeldBytes, and what reaches a reader must be
// well formed.
func FuzzTSIngest(f *testing.F) {
	for _, name := range []string{"h264-aac.ts", "h265-aac.ts", "h264-opus.ts"} {
		b, err := os.ReadFile(testkit.Fixture(name))
		if err != nil {
			continue // a fixture this checkout does not have
		}
		b = b[:min(len(b), 256*tsPacketSize)]
		f.Add(b, []byte(nil), uint16(0))
		// The program, then its media again and again: continuity breaks
		// at every seam.
		f.Add(b[:2*tsPacketSize], b[2*tsPacketSize:], uint16(8))
	}
	f.Add([]byte{0x47, 0x40, 0x00, 0x10, 0x00}, bytes.Repeat([]byte{0x47, 0x1f, 0xff, 0x10}, 47), uint16(100))
	// Defect 12 (second half): PIDs the program does not list are
	// buffered as well, up to maxPESSize each; eight of them hold more
	// than a publisher's whole budget.
	head, body, repeat := pidFlood(8, 8<<20)
	f.Add(head, body, repeat)

	f.Fuzz(func(t *testing.T, head, body []byte, repeat uint16) {
		stream := expand(head, body, int(repeat))
		sample := len(stream) >= heldSampleEvery
		var base uint64
		if sample {
			base = liveHeap()
		}
		conn, p, _ := runPublisher(t, stream, sample)
		if held := conn.peakLive - min(conn.peakLive, base); sample && held > maxHeldBytes {
			t.Fatalf("the publisher held %d MiB while demuxing %d MiB (bound %d MiB); it read %d bytes and ended: %v",
				held>>20, len(stream)>>20, maxHeldBytes>>20, p.bytes.Load(), p.stopReason())
		}
	})
}

// pidFlood returns a fuzz input that sends a program with one H.264 track
// (PID 256), then perPID bytes of payload on each of pids other PIDs that
// the program does not list, in packets that continue a PES that never
// ends (no payload unit start) with their continuity counters in order.
func pidFlood(pids, perPID int) ([]byte, []byte, uint16) {
	var head []byte
	head = append(head, psiPacket(0x0000, []byte{ // PAT: program 1 on PID 4096
		0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00,
		0x00, 0x01, 0xf0, 0x00,
	})...)
	head = append(head, psiPacket(0x1000, []byte{ // PMT: PCR on 256, H.264 on 256
		0x02, 0xb0, 0x12, 0x00, 0x01, 0xc1, 0x00, 0x00,
		0xe1, 0x00, 0xf0, 0x00,
		0x1b, 0xe1, 0x00, 0xf0, 0x00,
	})...)
	var body []byte
	for i := range pids {
		pid := 0x200 + i
		for cc := range 16 {
			pkt := make([]byte, tsPacketSize)
			pkt[0], pkt[1], pkt[2], pkt[3] = 0x47, byte(pid>>8), byte(pid), 0x10|byte(cc)
			for j := 4; j < tsPacketSize; j++ {
				pkt[j] = 0xa5
			}
			body = append(body, pkt...)
		}
	}
	return head, body, uint16(perPID / (16 * (tsPacketSize - 4)))
}

// psiPacket returns one TS packet carrying the PSI section sec (without
// its CRC, which it appends) on pid.
func psiPacket(pid uint16, sec []byte) []byte {
	crc := mpegCRC32(sec)
	sec = append(sec, byte(crc>>24), byte(crc>>16), byte(crc>>8), byte(crc))
	pkt := bytes.Repeat([]byte{0xff}, tsPacketSize)
	pkt[0], pkt[1], pkt[2], pkt[3], pkt[4] = 0x47, 0x40|byte(pid>>8), byte(pid), 0x10, 0x00
	copy(pkt[5:], sec)
	return pkt
}

// mpegCRC32 is the CRC of PSI sections (ISO 13818-1 annex A: polynomial
// 0x04c11db7, MSB first, initial value all ones, no final XOR).
func mpegCRC32(b []byte) uint32 {
	crc := ^uint32(0)
	for _, c := range b {
		crc ^= uint32(c) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04c11db7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
