package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPrivateStreamsSummed: streams a scrape may not name share the
// PrivatePath label and are summed into one series each, as Prometheus
// requires (duplicate series would fail the whole scrape).
func TestPrivateStreamsSummed(t *testing.T) {
	streams := []Stream{
		{Path: PrivatePath, Ingest: "rtmp", Readers: 2},
		{Path: PrivatePath, Ingest: "rtmp", Readers: 3, SRT: &SRTStats{Since: time.Now(), RTT: time.Millisecond, PacketsReceived: 10}},
		{Path: PrivatePath, Ingest: "srt", Readers: 1, SRT: &SRTStats{Since: time.Now(), RTT: 5 * time.Millisecond, PacketsReceived: 5}},
		{Path: "live/open", Ingest: "whip", Readers: 7},
	}
	c := newStreamCollector(func() []Stream { return streams })
	want := `
# HELP bridge_stream_readers Readers the hub feeds from the stream: WHEP viewers, RTMP and SRT readers, forward targets and shared transcoders.
# TYPE bridge_stream_readers gauge
bridge_stream_readers{path="(private)"} 6
bridge_stream_readers{path="live/open"} 7
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "bridge_stream_readers"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "bridge_stream_published"); n != 3 {
		t.Errorf("%d published series, want 3: (private) rtmp, (private) srt, live/open", n)
	}
	wantSRT := `
# HELP bridge_srt_ingest_rtt_seconds Smoothed round-trip time of the SRT connection publishing the stream.
# TYPE bridge_srt_ingest_rtt_seconds gauge
bridge_srt_ingest_rtt_seconds{path="(private)"} 0.005
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantSRT), "bridge_srt_ingest_rtt_seconds"); err != nil {
		t.Error(err)
	}
}
