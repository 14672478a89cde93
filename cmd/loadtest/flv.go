package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
)

// FLV file tag types (Adobe FLV spec v10.1, E.4.1).
const (
	flvTagAudio  = 8
	flvTagVideo  = 9
	flvTagScript = 18
)

// flvTag is one tag of an FLV file. Data aliases the file's bytes.
type flvTag struct {
	Type byte
	TS   uint32 // milliseconds (DTS for video)
	Data []byte
}

// isSequenceHeader reports whether the tag is an AVC or AAC sequence
// header (decoder configuration), sent once before any media.
func (t flvTag) isSequenceHeader() bool {
	switch t.Type {
	case flvTagVideo:
		// CodecID 7 (AVC), AVCPacketType 0.
		return len(t.Data) >= 2 && t.Data[0]&0x0f == 7 && t.Data[1] == 0
	case flvTagAudio:
		// SoundFormat 10 (AAC), AACPacketType 0.
		return len(t.Data) >= 2 && t.Data[0]>>4 == 10 && t.Data[1] == 0
	}
	return false
}

// flvFile is a whole FLV file in memory, split into tags.
type flvFile struct {
	Meta    []byte   // body of the onMetaData script tag (AMF0 "onMetaData", then the object), or nil
	Headers []flvTag // sequence headers, in file order
	Media   []flvTag // audio and video tags (not sequence headers), in file order
	// LengthSize is the NAL unit length size from the AVC sequence header
	// (0 if the file has none).
	LengthSize int
	// Loop is the time one pass of the file lasts: the last tag's
	// timestamp plus one video frame interval. A looped file's next pass is
	// shifted by it.
	Loop uint32
}

func readFLVFile(path string) (*flvFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := parseFLV(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// parseFLV splits an FLV file into tags. The tags alias b.
func parseFLV(b []byte) (*flvFile, error) {
	if len(b) < 9 || string(b[:3]) != "FLV" {
		return nil, errors.New("not an FLV file")
	}
	off := int(uint32(b[5])<<24 | uint32(b[6])<<16 | uint32(b[7])<<8 | uint32(b[8]))
	if off < 9 || off > len(b) {
		return nil, fmt.Errorf("bad FLV header size %d", off)
	}
	f := &flvFile{}
	pos := off + 4 // PreviousTagSize0
	var videoTS []uint32
	var last uint32
	for pos+11 <= len(b) {
		typ := b[pos] & 0x1f // the filter bit (encryption) is not supported
		size := int(b[pos+1])<<16 | int(b[pos+2])<<8 | int(b[pos+3])
		ts := uint32(b[pos+7])<<24 | uint32(b[pos+4])<<16 | uint32(b[pos+5])<<8 | uint32(b[pos+6])
		body := pos + 11
		if body+size > len(b) {
			break // truncated last tag (a file being written): stop there
		}
		t := flvTag{Type: typ, TS: ts, Data: b[body : body+size]}
		pos = body + size + 4
		switch {
		case typ == flvTagScript:
			if f.Meta == nil && isOnMetaData(t.Data) {
				f.Meta = t.Data
			}
			continue
		case typ != flvTagAudio && typ != flvTagVideo:
			continue
		case len(t.Data) == 0:
			continue
		case typ == flvTagVideo && len(t.Data) >= 2 && t.Data[0]&0x0f == 7 && t.Data[1] == 2:
			// AVC end of sequence: not sent, it would end the stream at
			// every loop.
			continue
		case t.isSequenceHeader():
			if typ == flvTagVideo && len(t.Data) >= 10 && f.LengthSize == 0 {
				// AVCDecoderConfigurationRecord byte 4: lengthSizeMinusOne.
				f.LengthSize = int(t.Data[5+4]&3) + 1
			}
			f.Headers = append(f.Headers, t)
			continue
		}
		if typ == flvTagVideo {
			videoTS = append(videoTS, ts)
		}
		last = max(last, ts)
		f.Media = append(f.Media, t)
	}
	if len(f.Media) == 0 {
		return nil, errors.New("FLV file has no audio or video tags")
	}
	f.Loop = last + frameInterval(videoTS)
	return f, nil
}

// isOnMetaData reports whether an AMF0 script body starts with the string
// "onMetaData".
func isOnMetaData(b []byte) bool {
	const name = "onMetaData"
	return len(b) >= 3+len(name) && b[0] == 2 && int(b[1])<<8|int(b[2]) == len(name) && string(b[3:3+len(name)]) == name
}

// frameInterval is the median step between consecutive video timestamps
// (40 ms when there are too few to tell).
func frameInterval(ts []uint32) uint32 {
	var d []uint32
	for i := 1; i < len(ts); i++ {
		if ts[i] > ts[i-1] {
			d = append(d, ts[i]-ts[i-1])
		}
	}
	if len(d) == 0 {
		return 40
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
}
