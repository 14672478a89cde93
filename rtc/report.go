package rtc

import (
	"time"

	"github.com/pion/rtcp"
)

// SenderReportInterval is how often a SenderReporter reports: RFC 3550's
// minimum interval is 5 s, WebRTC stacks report every second so receivers
// lip-sync quickly.
const SenderReportInterval = time.Second

// SenderReporter makes RTCP sender reports for one outgoing RTP stream,
// mapping RTP time to wall-clock time through the media clock: each packet
// is reported at origin + its presentation time, not at the moment it
// happened to be sent. Every track of a stream maps through the same origin,
// so a receiver lip-syncs them exactly, however differently their packets
// were delayed (transcoding buffers audio, pacing differs). The zero value
// is ready; it is used by one goroutine.
type SenderReporter struct {
	SSRC uint32

	packets, octets uint32
	lastTS          uint32
	lastAt          time.Time // wall-clock time of lastTS on the media clock
	nextReport      time.Time
}

// OnPacket records a sent packet: its RTP timestamp, the wall-clock time of
// that timestamp on the media clock, and its payload size.
func (r *SenderReporter) OnPacket(ts uint32, at time.Time, payloadLen int) {
	r.packets++
	r.octets += uint32(payloadLen)
	r.lastTS, r.lastAt = ts, at
}

// Report returns a sender report when one is due at now (and something was
// sent), else nil.
func (r *SenderReporter) Report(now time.Time) *rtcp.SenderReport {
	if r.packets == 0 || now.Before(r.nextReport) {
		return nil
	}
	r.nextReport = now.Add(SenderReportInterval)
	return &rtcp.SenderReport{
		SSRC:        r.SSRC,
		NTPTime:     ntpTime(r.lastAt),
		RTPTime:     r.lastTS,
		PacketCount: r.packets,
		OctetCount:  r.octets,
	}
}

// ntpTime converts t to the 64-bit NTP format (seconds since 1900 in the
// high 32 bits, fraction in the low 32).
func ntpTime(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800 // seconds from 1900 to 1970
	ns := t.UnixNano()
	secs := uint64(ns/1e9) + ntpEpochOffset
	frac := (uint64(ns%1e9) << 32) / 1e9
	return secs<<32 | frac
}
