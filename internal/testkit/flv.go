package testkit

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
	"github.com/wishbridge/bridge/transcode/av"
)

// FLVMedia is a fixture read into hub units.
type FLVMedia struct {
	Video, Audio *media.Track
	Units        []*media.Unit // in file order
}

// ReadFLV reads an FLV file into units the way the RTMP ingest makes them:
// H.264 through transcode.H264Normalizer (SPS and PPS in front of every
// IDR), PTS = DTS + composition time; raw AAC frames.
func ReadFLV(t testing.TB, name string) *FLVMedia {
	t.Helper()
	b, err := os.ReadFile(Fixture(name))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 13 || string(b[:3]) != "FLV" {
		t.Fatalf("%s is not FLV", name)
	}
	m := &FLVMedia{}
	var norm *transcode.H264Normalizer
	for pos := int(binary.BigEndian.Uint32(b[5:9])) + 4; pos+11 <= len(b); {
		typ := b[pos]
		size := int(b[pos+1])<<16 | int(b[pos+2])<<8 | int(b[pos+3])
		ts := int64(b[pos+4])<<16 | int64(b[pos+5])<<8 | int64(b[pos+6]) | int64(b[pos+7])<<24
		body := b[pos+11 : pos+11+size]
		pos += 11 + size + 4
		dts := time.Duration(ts) * time.Millisecond
		switch typ {
		case 9:
			if body[0]&0x0f != 7 {
				t.Fatalf("video codec %d", body[0]&0x0f)
			}
			cts := int32(uint32(body[2])<<24|uint32(body[3])<<16|uint32(body[4])<<8) >> 8
			data := body[5:]
			switch body[1] {
			case 0:
				nsps := int(data[5] & 0x1f)
				if nsps != 1 {
					t.Fatalf("%d SPS", nsps)
				}
				l := int(binary.BigEndian.Uint16(data[6:]))
				sps := bytes.Clone(data[8 : 8+l])
				p := 8 + l + 1
				pl := int(binary.BigEndian.Uint16(data[p:]))
				pps := bytes.Clone(data[p+2 : p+2+pl])
				norm = transcode.NewH264Normalizer(sps, pps)
				if m.Video == nil {
					m.Video = &media.Track{Codec: media.H264{SPS: sps, PPS: pps}}
				}
			case 1:
				var nalus [][]byte
				for p := 0; p+4 <= len(data); {
					l := int(binary.BigEndian.Uint32(data[p:]))
					nalus = append(nalus, bytes.Clone(data[p+4:p+4+l]))
					p += 4 + l
				}
				au, idr := norm.Normalize(nalus)
				if au == nil {
					continue
				}
				m.Units = append(m.Units, &media.Unit{Track: m.Video, DTS: dts, PTS: dts + time.Duration(cts)*time.Millisecond, Key: idr, NALUs: au})
			}
		case 8:
			if body[0]>>4 != 10 {
				t.Fatalf("audio format %d", body[0]>>4)
			}
			if body[1] == 0 {
				var asc mpeg4audio.AudioSpecificConfig
				if err := asc.Unmarshal(body[2:]); err != nil {
					t.Fatal(err)
				}
				if m.Audio == nil {
					m.Audio = &media.Track{Codec: media.AAC{Config: bytes.Clone(body[2:]), SampleRate: asc.SampleRate, Channels: int(asc.ChannelConfig)}}
				}
				continue
			}
			m.Units = append(m.Units, &media.Unit{Track: m.Audio, DTS: dts, PTS: dts, Key: true, Data: bytes.Clone(body[2:])})
		}
	}
	if m.Video == nil || m.Audio == nil || len(m.Units) == 0 {
		t.Fatalf("%s: no video or audio", name)
	}
	return m
}

// Until returns the units with DTS before d.
func Until(units []*media.Unit, d time.Duration) []*media.Unit {
	var out []*media.Unit
	for _, u := range units {
		if u.DTS < d {
			out = append(out, u)
		}
	}
	return out
}

// WithOpus returns m with its audio transcoded to Opus (20 ms packets at
// 64 kbit/s), as a WHIP source would send it: video units unchanged.
func WithOpus(t testing.TB, m *FLVMedia) *FLVMedia {
	t.Helper()
	if !av.Available() {
		t.Skip("built without FFmpeg")
	}
	c := m.Audio.Codec.(media.AAC)
	dec, err := av.NewDecoder("aac", c.Config, c.SampleRate, c.Channels)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	enc, err := av.NewEncoder("opus", 48000, 2, 64000)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	out := &FLVMedia{Video: m.Video, Audio: &media.Track{Codec: media.Opus{Channels: 2}}}
	for _, u := range m.Units {
		if u.Track != m.Audio {
			out.Units = append(out.Units, u)
			continue
		}
		frames, err := dec.Decode(u.Data, media.ClockTicks(u.PTS, c.SampleRate))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			pkts, err := enc.Encode(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pkts {
				pts := time.Duration(p.PTS) * time.Second / 48000
				out.Units = append(out.Units, &media.Unit{Track: out.Audio, PTS: pts, DTS: pts, Key: true, Data: p.Data})
			}
		}
	}
	return out
}

// Publish registers path with m's tracks. Units written later must be
// copies pointing at the returned tracks (see Feed).
func Publish(t testing.TB, reg *media.Registry, path string, m *FLVMedia) *media.Publication {
	t.Helper()
	p, err := reg.Publish(path, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetTracks(m.Video, m.Audio); err != nil {
		t.Fatal(err)
	}
	return p
}

// Feed writes units to p in real time (speed 1; 2 is twice as fast),
// starting now, and shifted by offset. It returns when done or ctx ends.
func Feed(ctx context.Context, p *media.Publication, units []*media.Unit, speed float64, offset time.Duration) {
	if len(units) == 0 {
		return
	}
	start := time.Now()
	first := units[0].DTS
	for _, u := range units {
		at := start.Add(time.Duration(float64(u.DTS-first) / speed))
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
		c := *u
		c.PTS += offset
		c.DTS += offset
		p.Write(&c)
	}
}
