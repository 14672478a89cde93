package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SendDelay is the histogram of the delay the bridge adds on its way to
// WHEP viewers: from a unit's arrival at the hub (media.Unit.Arrived) to
// the end of its send to one viewer, once per live unit per viewer (units
// from the GOP cache are left out: they are old on purpose). It covers
// the write-side processors (packetization; AAC->Opus buffering for
// audio), the viewer's queue and the sends through SRTP to the socket, and
// excludes the network and the ingest protocol's own buffering. Register
// it with Metrics.Register; Observe is safe for concurrent use.
type SendDelay struct {
	vec          *prometheus.HistogramVec
	video, audio prometheus.Observer
}

// sendDelayBuckets resolve the sub-5 ms range the bridge aims for and
// reach out to where a viewer would notice.
var sendDelayBuckets = []float64{0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1}

// NewSendDelay returns an empty SendDelay histogram,
// bridge_whep_send_delay_seconds{kind="video"|"audio"}.
func NewSendDelay() *SendDelay {
	vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "bridge_whep_send_delay_seconds",
		Help:    "Delay the bridge adds to live units sent to WHEP viewers: from the unit's arrival at the hub to the end of its send to one viewer (per unit per viewer; audio includes AAC->Opus buffering).",
		Buckets: sendDelayBuckets,
	}, []string{"kind"})
	return &SendDelay{vec: vec, video: vec.WithLabelValues("video"), audio: vec.WithLabelValues("audio")}
}

// Observe records one unit sent to one viewer d after it arrived.
func (s *SendDelay) Observe(video bool, d time.Duration) {
	if video {
		s.video.Observe(d.Seconds())
	} else {
		s.audio.Observe(d.Seconds())
	}
}

// Describe and Collect make SendDelay a prometheus.Collector.
func (s *SendDelay) Describe(ch chan<- *prometheus.Desc) { s.vec.Describe(ch) }

// Collect sends the histogram's current state.
func (s *SendDelay) Collect(ch chan<- prometheus.Metric) { s.vec.Collect(ch) }

// BatchWait is the histogram of how long packets wait in the UDP socket's
// send batches (internal/udpbatch): per batch, from the write of its oldest
// packet to the end of its last sendmmsg. Added to SendDelay, which ends
// when a packet is handed to the socket, it bounds the delay the bridge
// adds. Register it with Metrics.Register; Observe is safe for concurrent
// use.
type BatchWait struct{ h prometheus.Histogram }

// NewBatchWait returns an empty bridge_udp_batch_wait_seconds histogram.
func NewBatchWait() *BatchWait {
	return &BatchWait{h: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "bridge_udp_batch_wait_seconds",
		Help:    "Per batch of packets sent on the WebRTC UDP socket (one or more sendmmsg calls): time from the write of its oldest packet to the end of the batch.",
		Buckets: sendDelayBuckets,
	})}
}

// Observe records one batch of packets whose oldest waited wait.
func (b *BatchWait) Observe(packets int, wait time.Duration) { b.h.Observe(wait.Seconds()) }

// Describe and Collect make BatchWait a prometheus.Collector.
func (b *BatchWait) Describe(ch chan<- *prometheus.Desc) { b.h.Describe(ch) }

// Collect sends the histogram's current state.
func (b *BatchWait) Collect(ch chan<- prometheus.Metric) { b.h.Collect(ch) }
