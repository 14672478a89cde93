package rtpin

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
)

// maxScriptPackets bounds the packets one fuzz input expands to: more than
// the assembler's largest access unit (maxAUPackets), at about 10 MiB.
const maxScriptPackets = 10000

// Script ops: one control byte per packet, then what it asks for, then a
// length byte and that many payload bytes.
const (
	opAudio     = 1 << 0 // the packet is the audio track's (else video's)
	opMarker    = 1 << 1 // RTP marker bit
	opNewSSRC   = 1 << 2 // the track's SSRC changes from here on
	opPT        = 1 << 3 // payload type from the next byte (else the negotiated one)
	opSeqMask   = 3 << 4 // sequence number: next, one lost, back by the next byte, or not RTP at all
	opTimestamp = 1 << 6 // timestamp moves by the next 4 bytes (signed), else by a frame after a marker
	opRepeat    = 1 << 7 // sent (next byte + 1) * 16 times, numbered in order: huge NAL units from one FU-A

	seqNext = 0 << 4
	seqLost = 1 << 4
	seqBack = 2 << 4 // back by n (0: a duplicate of the last)
	seqRaw  = 3 << 4 // the payload is sent as the datagram: not an RTP packet
)

// scriptTrack is a received track whose packets come from a script: it
// stands where pion's TrackRemote does (remoteTrack) and ends with io.EOF,
// as a closed PeerConnection ends the read.
type scriptTrack struct {
	codec webrtc.RTPCodecParameters
	ssrc  webrtc.SSRC
	pkts  [][]byte
}

func (s *scriptTrack) Read(b []byte) (int, interceptor.Attributes, error) {
	if len(s.pkts) == 0 {
		return 0, nil, io.EOF
	}
	n := copy(b, s.pkts[0])
	s.pkts = s.pkts[1:]
	return n, nil, nil
}

func (s *scriptTrack) SSRC() webrtc.SSRC                { return s.ssrc }
func (s *scriptTrack) Codec() webrtc.RTPCodecParameters { return s.codec }

// trackState is where a track's numbering stands while a script is read.
type trackState struct {
	seq       uint16
	ts        uint32
	ssrc      uint32
	pt        uint8
	frame     uint32 // timestamp step after a marker
	afterMark bool
}

// readScript turns fuzz bytes into the datagrams of a video (H.264) and an
// audio (Opus) track.
func readScript(b []byte) (video, audio *scriptTrack) {
	video = &scriptTrack{ssrc: 0x1111, codec: webrtc.RTPCodecParameters{PayloadType: 102, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
	}}}
	audio = &scriptTrack{ssrc: 0x2222, codec: webrtc.RTPCodecParameters{PayloadType: 111, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
	}}}
	states := [2]trackState{
		{seq: 1000, ts: 90000, ssrc: 0x1111, pt: 102, frame: 3000},
		{seq: 2000, ts: 48000, ssrc: 0x2222, pt: 111, frame: 960},
	}
	next := func() byte {
		if len(b) == 0 {
			return 0
		}
		c := b[0]
		b = b[1:]
		return c
	}
	total := 0
	for len(b) > 0 && total < maxScriptPackets {
		op := next()
		tr, st := video, &states[0]
		if op&opAudio != 0 {
			tr, st = audio, &states[1]
		}
		if op&opNewSSRC != 0 {
			st.ssrc++
		}
		pt := st.pt
		if op&opPT != 0 {
			pt = next() & 0x7f
		}
		back := uint16(0)
		if op&opSeqMask == seqBack {
			back = uint16(next())
		}
		var step uint32
		if op&opTimestamp != 0 {
			var d [4]byte
			for i := range d {
				d[i] = next()
			}
			step = binary.BigEndian.Uint32(d[:])
		} else if st.afterMark {
			step = st.frame
		}
		copies := 1
		if op&opRepeat != 0 {
			copies = (int(next()) + 1) * 16
		}
		n := int(next())
		payload := b[:min(n, len(b))]
		b = b[len(payload):]

		st.ts += step
		st.afterMark = op&opMarker != 0
		for range min(copies, maxScriptPackets-total) {
			total++
			if op&opSeqMask == seqRaw {
				tr.pkts = append(tr.pkts, payload)
				continue
			}
			switch op & opSeqMask {
			case seqNext:
				st.seq++
			case seqLost:
				st.seq += 2
			case seqBack:
				st.seq -= back
			}
			p := rtp.Packet{Header: rtp.Header{
				Version: 2, Marker: op&opMarker != 0, PayloadType: pt,
				SequenceNumber: st.seq, Timestamp: st.ts, SSRC: st.ssrc,
			}, Payload: payload}
			raw, err := p.Marshal()
			if err != nil {
				panic(err) // a packet of ours
			}
			tr.pkts = append(tr.pkts, raw)
			if op&opSeqMask == seqBack {
				st.seq += back // only this packet came back: numbering goes on
			}
		}
	}
	return video, audio
}

// script builds a fuzz input from ops, each: control byte, its extra bytes,
// and the payload (its length byte is added).
func script(ops ...[]byte) []byte {
	var out []byte
	for _, op := range ops {
		out = append(out, op...)
	}
	return out
}

func pkt(op byte, extra []byte, payload ...byte) []byte {
	out := append([]byte{op}, extra...)
	return append(append(out, byte(len(payload))), payload...)
}

// H.264 NAL units of a 16x16 baseline stream.
var (
	fuzzSPS = []byte{0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x1e, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x48, 0x99, 0x20}
	fuzzPPS = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
	fuzzIDR = []byte{0x65, 0x88, 0x84, 0x00, 0x33, 0xff}
)

func stapA(nalus ...[]byte) []byte {
	out := []byte{0x78}
	for _, n := range nalus {
		out = append(out, byte(len(n)>>8), byte(len(n)))
		out = append(out, n...)
	}
	return out
}

// FuzzReceive drives the receive side of a WHIP session (and of a WHEP
// pull) end to end into the hub: the video and audio loops a
// PeerConnection's OnTrack runs, fed datagrams decoded from fuzz bytes
// (SSRC changes, any payload type, losses, reordering and duplicates,
// timestamp jumps, FU-A and STAP-A garbage, NAL units of thousands of
// packets, datagrams that are not RTP), writing to a hub stream with a
// reader. Nothing may panic, every unit a reader gets must be well
// formed, and a track's stream time may not step further than a sender's
// clock may jump (media.MaxTimestampJump) plus the time that passed.
func FuzzReceive(f *testing.F) {
	key := pkt(opMarker, nil, stapA(fuzzSPS, fuzzPPS, fuzzIDR)...)
	opus := pkt(opAudio|opMarker, nil, 0xfc, 0xff, 0xfe)
	f.Add(script(key, opus, opus, pkt(opMarker, nil, 0x41, 0x9a, 0x02), opus))
	// A keyframe in FU-A fragments: start, a huge middle, end.
	f.Add(script(
		pkt(0, nil, stapA(fuzzSPS, fuzzPPS)...),
		pkt(0, nil, 0x7c, 0x85, 0x88, 0x84),
		pkt(opRepeat, []byte{40}, 0x7c, 0x05, 0x00, 0x33, 0xff, 0x00, 0x33, 0xff),
		pkt(opMarker, nil, 0x7c, 0x45, 0x80),
		opus,
	))
	// Loss, reordering, a duplicate, a new SSRC, a bad payload type, a
	// timestamp jump backwards, and a datagram that is not RTP.
	f.Add(script(
		key, opus,
		pkt(opMarker|seqLost, nil, 0x41, 0x9a),
		pkt(opMarker|seqBack, []byte{1}, 0x41, 0x9a),
		pkt(opMarker|seqBack, []byte{0}, 0x41, 0x9a),
		pkt(opMarker|opNewSSRC, nil, 0x41, 0x9a),
		pkt(opAudio|opPT, []byte{0x7f}, 0xfc, 0xff),
		pkt(opAudio|opTimestamp, []byte{0x80, 0, 0, 0}, 0xfc, 0xff),
		pkt(seqRaw, nil, 0x80),
		key,
	))
	// STAP-A and FU-A garbage.
	f.Add(script(
		pkt(opMarker, nil, 0x78, 0xff, 0xff, 0x65),
		pkt(0, nil, 0x7c, 0x45),
		pkt(opMarker, nil, 0x7c),
		pkt(opMarker, nil, 0x78, 0x00, 0x00),
		key,
	))

	cert := testCertificate(f)
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, b []byte) {
		start := time.Now()
		video, audio := readScript(b)
		pc, err := webrtc.NewPeerConnection(webrtc.Configuration{Certificates: []webrtc.Certificate{cert}})
		if err != nil {
			t.Fatal(err)
		}
		reg := media.NewRegistry(log)
		pub, err := reg.Publish("live/fuzz", "whip fuzz")
		if err != nil {
			t.Fatal(err)
		}
		rdr, err := pub.NewReader(media.ReaderOptions{Name: "fuzz", QueueSize: 1024})
		if err != nil {
			t.Fatal(err)
		}
		var failed error
		r := New(Config{PC: pc, Log: log, TrackWait: time.Hour, Fail: func(err error) { failed = err }})
		r.Expect(true, true)
		r.SetPublication(pub)

		// The two loops run at once, as OnTrack runs them.
		var wg sync.WaitGroup
		wg.Go(func() { r.receiveVideo(video) })
		wg.Go(func() { r.receiveAudio(audio) })
		wg.Wait()
		r.trackWaitOver() // declares what is ready, as the timer would
		r.Close()
		pub.Close()
		if failed != nil {
			t.Fatalf("the tracks could not be declared: %v", failed)
		}

		tracks := pub.Tracks()
		// A re-anchored clock goes on from its highest time by what passed,
		// at least a frame (up to a second).
		maxStep := media.MaxTimestampJump + time.Since(start) + time.Second
		last := map[*media.Track]time.Duration{}
		for {
			u, _, err := rdr.TryRead()
			if u == nil {
				if !errors.Is(err, media.ErrStreamEnded) {
					t.Fatalf("reader ended with %v, want %v", err, media.ErrStreamEnded)
				}
				break
			}
			checkUnit(t, u, tracks)
			if prev, ok := last[u.Track]; ok && (u.PTS-prev > maxStep || prev-u.PTS > maxStep) {
				t.Fatalf("%s stream time stepped from %v to %v (at most %v)", u.Track.Codec.Name(), prev, u.PTS, maxStep)
			}
			last[u.Track] = u.PTS
		}
		rdr.Close()
	})
}

// checkUnit checks the invariants of a unit the hub hands readers.
func checkUnit(t *testing.T, u *media.Unit, tracks []*media.Track) {
	t.Helper()
	declared := false
	for _, tr := range tracks {
		declared = declared || tr == u.Track
	}
	if !declared {
		t.Fatalf("unit of a track the stream did not declare: %+v", u.Track)
	}
	for _, n := range u.NALUs {
		if len(n) == 0 {
			t.Fatal("empty NAL unit")
		}
	}
	if u.Key && u.Track.IsVideo() && (len(u.NALUs) == 0 || u.NALUs[0][0]&0x1f != 7) {
		t.Fatalf("video keyframe without its SPS in front: %d NAL units", len(u.NALUs))
	}
	if !u.Track.IsVideo() && len(u.Data) == 0 {
		t.Fatal("empty audio unit")
	}
	for _, p := range u.RTP {
		if p == nil {
			t.Fatal("nil RTP packet")
		}
	}
	if u.Track.IsVideo() && len(u.NALUs) == 0 && len(u.RTP) == 0 {
		t.Fatal("video unit with neither NAL units nor RTP packets")
	}
}

// testCertificate is one DTLS certificate for every PeerConnection of a
// test: generating one each costs more than the rest of a fuzz run.
func testCertificate(tb testing.TB) webrtc.Certificate {
	tb.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = pc.Close() }()
	certs := pc.GetConfiguration().Certificates
	if len(certs) == 0 {
		tb.Fatal("no certificate")
	}
	return certs[0]
}
