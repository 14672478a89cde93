// Package rtmpwire is the RTMP wire format for the bridge's RTMP clients
// and the limits its server holds peers to: AMF0 values (amf.go), the
// chunk stream in both directions (chunk.go), the simple handshake
// (handshake.go), rtmp:// and rtmps:// URLs (url.go) and one client that
// plays or publishes (client.go), used by the RTMP pull (ingest/rtmp) and
// the RTMP push (egress/rtmp). The RTMP server stays go-rtmp behind the
// ingest's chunk guard, which takes its limits from here (MessageLimit).
//
// go-rtmp's own client side (v0.0.7) is not used: it has no play; its
// Stream.Connect, CreateStream and Publish wait without a timeout
// ("TODO: support timeout") and do not wait for onStatus ("TODO: Support
// onStatus"), so a refused publish cannot be told from an accepted one;
// its chunk reader takes any message of up to 16 MiB on any number of
// chunk streams (one MaxMessageSize for every message type), never reads
// the extended timestamp ffmpeg and librtmp repeat on fmt 3 chunks, and
// its AMF0 decoder recurses without a depth bound.
//
// Everything a peer controls is bounded: message sizes per message type
// (MessageLimit), the number of chunk streams (MaxChunkStreams), AMF0
// nesting (MaxAMFDepth) and string lengths (by the message holding them).
package rtmpwire

import "github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

// RTMP message type ids (RTMP specification 5.4, 7.1).
const (
	TypeSetChunkSize     = 1
	TypeAbort            = 2
	TypeAck              = 3
	TypeUserControl      = 4
	TypeWindowAckSize    = 5
	TypeSetPeerBandwidth = 6
	TypeAudio            = 8
	TypeVideo            = 9
	TypeDataAMF3         = 15
	TypeCommandAMF3      = 17
	TypeDataAMF0         = 18
	TypeCommandAMF0      = 20
	TypeAggregate        = 22
)

// User control events (RTMP specification 7.1.7).
const (
	EventStreamBegin     = 0
	EventSetBufferLength = 3
	EventPingRequest     = 6
	EventPingResponse    = 7
)

// Limits on what a peer may send, the same for the server (through the
// ingest's chunk guard) and the clients.
const (
	// HandshakeSize is C0 + C1 + C2 (or S0 + S1 + S2), which precede the
	// chunk stream.
	HandshakeSize = 1 + 1536 + 1536
	// MaxChunkStreams bounds the chunk streams a peer may open (ffmpeg
	// uses 5, OBS fewer than 8, servers fewer still).
	MaxChunkStreams = 16
	// MaxChunkSize is the largest Set Chunk Size accepted: the largest
	// message length, so effectively any; memory is bounded per message.
	MaxChunkSize = 0xffffff
	// MaxCommandMessageSize bounds AMF command and data messages (and
	// every other message not listed below). Real ones are well under
	// 2 KiB; the bound keeps go-rtmp's recursive AMF0 decoder (behind the
	// guard) within a few MiB of stack, and bounds every AMF0 string.
	MaxCommandMessageSize = 16 << 10
	// MaxControlMessageSize bounds protocol control messages (types 1-6),
	// whose bodies are at most 10 bytes.
	MaxControlMessageSize = 64
	// MaxVideoMessageSize is one H.264 access unit at mediacommon's limit
	// plus the FLV tag header and NAL unit length prefixes.
	MaxVideoMessageSize = h264.MaxAccessUnitSize + 64<<10
	// MaxAudioMessageSize is well above one AAC frame (at most 6144 bits
	// per channel) or any FLV audio frame an encoder sends.
	MaxAudioMessageSize = 64 << 10
	// MaxAMFDepth bounds nesting in decoded AMF0 values: real peers nest
	// once or twice (onStatus's info object, a "data" object inside it,
	// metadata's trackinfo), and a recursive decoder must not let a peer
	// choose its depth.
	MaxAMFDepth = 8
)

// MessageLimit is the largest message of type typeID a peer may send.
// media says whether audio and video may be large (the peer is an
// accepted publisher, or a server a client plays from); aggregates lets
// aggregate messages be as large as video then (a server may send them;
// a publisher does not).
func MessageLimit(typeID uint8, media, aggregates bool) uint32 {
	switch {
	case typeID >= TypeSetChunkSize && typeID <= TypeSetPeerBandwidth:
		return MaxControlMessageSize
	case typeID == TypeVideo && media:
		return MaxVideoMessageSize
	case typeID == TypeAudio && media:
		return MaxAudioMessageSize
	case typeID == TypeAggregate && aggregates && media:
		return MaxVideoMessageSize
	default:
		return MaxCommandMessageSize
	}
}
