package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Stream is what the metrics show of one stream in the hub.
type Stream struct {
	// Path is the stream path ("live/cam1").
	Path string
	// Ingest is how the stream arrives: "rtmp", "srt", "whip", or for a
	// pulled stream "rtmp_pull", "srt_pull", "whep_pull". "" is reported
	// as "unknown".
	Ingest string
	// Readers is how many readers the hub feeds: WHEP viewers, RTMP and
	// SRT readers, forward targets and shared transcoders.
	Readers int
	// SRT holds the SRT connection's statistics when one publishes the
	// stream (SRT ingest or SRT pull); nil otherwise.
	SRT *SRTStats
}

// SRTStats are the receive statistics of one SRT connection. The counters
// start at zero with each connection (Since); Prometheus's rate() and
// increase() take such resets in their stride.
type SRTStats struct {
	// Since is when the connection was accepted or made; it is the
	// counters' created timestamp.
	Since                time.Time
	RTT                  time.Duration // smoothed round-trip time
	PacketsReceived      uint64        // data packets, retransmissions included
	PacketsLost          uint64        // found missing (most are then retransmitted)
	PacketsRetransmitted uint64        // retransmitted data packets received
	PacketsDropped       uint64        // given up on: too late for the latency
	BytesReceived        uint64        // headers included
	DemuxErrors          uint64        // MPEG-TS errors: continuity gaps, corrupt packets
}

// streamCollector reports each stream's publication and readers, and the
// SRT statistics of streams an SRT connection publishes.
type streamCollector struct {
	streams func() []Stream

	published, readers *prometheus.Desc
	srtRTT             *prometheus.Desc
	srtCounters        []srtCounter
}

// srtCounter is one counter of SRTStats.
type srtCounter struct {
	desc  *prometheus.Desc
	value func(*SRTStats) uint64
}

func newStreamCollector(streams func() []Stream) *streamCollector {
	path := []string{"path"}
	counter := func(name, help string, value func(*SRTStats) uint64) srtCounter {
		return srtCounter{desc: prometheus.NewDesc("bridge_srt_ingest_"+name, help+" Since the connection started.", path, nil), value: value}
	}
	return &streamCollector{
		streams: streams,
		published: prometheus.NewDesc("bridge_stream_published",
			"1 for each stream in the hub (publishing, or waiting for its publisher to come back within the route's grace); ingest is how it arrives.",
			[]string{"path", "ingest"}, nil),
		readers: prometheus.NewDesc("bridge_stream_readers",
			"Readers the hub feeds from the stream: WHEP viewers, RTMP and SRT readers, forward targets and shared transcoders.",
			path, nil),
		srtRTT: prometheus.NewDesc("bridge_srt_ingest_rtt_seconds",
			"Smoothed round-trip time of the SRT connection publishing the stream.", path, nil),
		srtCounters: []srtCounter{
			counter("packets_received_total", "Data packets received on the SRT connection publishing the stream, retransmissions included.",
				func(s *SRTStats) uint64 { return s.PacketsReceived }),
			counter("packets_lost_total", "Data packets the receiver found missing (most are recovered by retransmission).",
				func(s *SRTStats) uint64 { return s.PacketsLost }),
			counter("packets_retransmitted_total", "Retransmitted data packets received.",
				func(s *SRTStats) uint64 { return s.PacketsRetransmitted }),
			counter("packets_dropped_total", "Data packets given up on, too late to be delivered within the latency.",
				func(s *SRTStats) uint64 { return s.PacketsDropped }),
			counter("bytes_received_total", "Bytes received on the SRT connection publishing the stream, headers included.",
				func(s *SRTStats) uint64 { return s.BytesReceived }),
			counter("demux_errors_total", "MPEG-TS errors (continuity gaps, corrupt packets, unparsable PES) in the stream.",
				func(s *SRTStats) uint64 { return s.DemuxErrors }),
		},
	}
}

func (c *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.published
	ch <- c.readers
	ch <- c.srtRTT
	for _, sc := range c.srtCounters {
		ch <- sc.desc
	}
}

func (c *streamCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.streams() {
		path := labelValue(s.Path)
		constMetric(ch, c.published, prometheus.GaugeValue, 1, path, labelValue(s.Ingest))
		constMetric(ch, c.readers, prometheus.GaugeValue, float64(s.Readers), path)
		if s.SRT == nil {
			continue
		}
		constMetric(ch, c.srtRTT, prometheus.GaugeValue, s.SRT.RTT.Seconds(), path)
		for _, sc := range c.srtCounters {
			v := float64(sc.value(s.SRT))
			if s.SRT.Since.IsZero() {
				constMetric(ch, sc.desc, prometheus.CounterValue, v, path)
				continue
			}
			m, err := prometheus.NewConstMetricWithCreatedTimestamp(sc.desc, prometheus.CounterValue, v, s.SRT.Since, path)
			if err != nil {
				m = prometheus.NewInvalidMetric(sc.desc, err)
			}
			ch <- m
		}
	}
}
