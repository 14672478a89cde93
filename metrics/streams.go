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
			"1 for each stream in the hub (publishing, or waiting for its publisher to come back within the route's grace); ingest is how it arrives. Under path=\"(private)\", the number of streams whose paths this scrape may not see.",
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
	for _, s := range merge(c.streams()) {
		path := labelValue(s.Path)
		for _, in := range s.ingests {
			constMetric(ch, c.published, prometheus.GaugeValue, float64(in.n), path, labelValue(in.kind))
		}
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

// PrivatePath is the path label of streams whose paths a scrape may not
// see (see Sources.Streams): they are summed under it.
const PrivatePath = "(private)"

// merged is the streams of one path label summed: one series per label
// set, as Prometheus requires, however many streams share PrivatePath.
type merged struct {
	Stream
	ingests []ingestCount
}

type ingestCount struct {
	kind string
	n    int
}

// merge sums the streams that share a path (only PrivatePath does in
// practice): readers and SRT counters add up, the SRT RTT is the worst,
// and the counters lose their created timestamp (no one start time).
func merge(streams []Stream) []merged {
	out := make([]merged, 0, len(streams))
	index := make(map[string]int, len(streams))
	for _, s := range streams {
		i, seen := index[s.Path]
		if !seen {
			index[s.Path] = len(out)
			m := merged{Stream: s, ingests: []ingestCount{{s.Ingest, 1}}}
			if s.SRT != nil {
				srt := *s.SRT
				m.SRT = &srt
			}
			out = append(out, m)
			continue
		}
		m := &out[i]
		m.Readers += s.Readers
		found := false
		for j := range m.ingests {
			if m.ingests[j].kind == s.Ingest {
				m.ingests[j].n++
				found = true
			}
		}
		if !found {
			m.ingests = append(m.ingests, ingestCount{s.Ingest, 1})
		}
		if m.SRT != nil {
			m.SRT.Since = time.Time{} // several connections: no one start
		}
		if s.SRT == nil {
			continue
		}
		if m.SRT == nil {
			m.SRT = &SRTStats{}
		}
		a, b := m.SRT, s.SRT
		a.RTT = max(a.RTT, b.RTT)
		a.PacketsReceived += b.PacketsReceived
		a.PacketsLost += b.PacketsLost
		a.PacketsRetransmitted += b.PacketsRetransmitted
		a.PacketsDropped += b.PacketsDropped
		a.BytesReceived += b.BytesReceived
		a.DemuxErrors += b.DemuxErrors
	}
	return out
}
