package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
)

// percentile returns the p-th percentile (0 < p <= 100) of sorted values by
// the nearest-rank method: the smallest value such that at least p% of the
// values are at most it. It returns 0 for no values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// dist is a distribution's summary, in milliseconds.
type dist struct {
	N   int     `json:"n"`
	Min float64 `json:"min"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
	Avg float64 `json:"avg"`
}

func summarize(values []float64) dist {
	if len(values) == 0 {
		return dist{}
	}
	s := slices.Clone(values)
	slices.Sort(s)
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	return dist{
		N: len(s), Min: round2(s[0]), Max: round2(s[len(s)-1]), Avg: round2(sum / float64(len(s))),
		P50: round2(percentile(s, 50)), P95: round2(percentile(s, 95)), P99: round2(percentile(s, 99)),
	}
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// serverStats is the server process's resource use, from /proc/PID.
type serverStats struct {
	PID int `json:"pid"`
	// CPU as % of one core: before the viewers (publisher only) and at full
	// load.
	CPUBaselinePct float64 `json:"cpu_baseline_pct"`
	CPUFullPct     float64 `json:"cpu_full_pct"`
	// CPUPer100Pct is (full - baseline) / connected viewers * 100: the
	// marginal cost of 100 viewers in % of one core.
	CPUPer100Pct float64 `json:"cpu_pct_per_100_viewers"`
	// CPUPer100RawPct is full / connected * 100 (baseline included).
	CPUPer100RawPct float64 `json:"cpu_pct_per_100_viewers_raw"`
	RSSBaselineKiB  int64   `json:"rss_baseline_kib"`
	RSSFullKiB      int64   `json:"rss_full_kib"` // mean over the full-load window
	RSSMaxKiB       int64   `json:"rss_max_kib"`
	// RSSPerViewerKiB is (full - baseline) / connected viewers.
	RSSPerViewerKiB float64      `json:"rss_per_viewer_kib"`
	Samples         []procSample `json:"samples"`
}

// memoryStats is the server's memory, from its metrics (-metrics): before
// the viewers (publisher only), at the end of the full-load window, just
// after the viewers left and, with -after, that long later (the publisher
// still on, as before them).
type memoryStats struct {
	Baseline     memReading  `json:"baseline"`
	Full         memReading  `json:"full_load"`
	Left         memReading  `json:"left"`
	After        *memReading `json:"after,omitempty"`
	AfterSeconds float64     `json:"after_s,omitempty"`
}

// result is the run's outcome, written as JSON with -json.
type result struct {
	WHEP           string         `json:"whep"`
	Publish        string         `json:"publish,omitempty"`
	SEI            bool           `json:"sei"`
	Viewers        int            `json:"viewers"`
	Rate           float64        `json:"rate_per_s"`
	RampSeconds    float64        `json:"ramp_s"`
	SteadySeconds  float64        `json:"full_load_s"`
	Connected      int            `json:"connected"`
	Failed         int            `json:"failed"`
	Lost           int            `json:"lost_after_connect"`
	NoKeyframe     int            `json:"connected_without_keyframe"`
	FailureReasons map[string]int `json:"failure_reasons,omitempty"`

	ConnectMs dist `json:"connect_ms"` // POST -> PeerConnection connected
	TTFFMs    dist `json:"ttff_ms"`    // POST -> first complete IDR access unit
	DelayMs   dist `json:"delay_ms"`   // SEI stamp -> access unit received, full-load window
	// BridgeDelayMs is the delay the server itself added per viewer, by
	// kind ("video", "audio"), from its own histogram over the full-load
	// window (-metrics; the bridge only): N, P50, P95, P99.
	BridgeDelayMs map[string]dist `json:"bridge_delay_ms,omitempty"`
	// BatchWaitMs is how long the oldest packet of each batch waited in
	// the bridge's UDP send queue, over the same window (per batch).
	BatchWaitMs *dist `json:"bridge_batch_wait_ms,omitempty"`
	// DelayBySecond is DelayMs for each second of the full-load window.
	DelayBySecond []dist `json:"delay_ms_by_second,omitempty"`

	FramesPerViewer float64 `json:"video_frames_per_viewer"`
	// FPSAvg and FPSMin are video frames received per second per viewer in
	// the full-load window: below the source's rate means frames dropped
	// whole (a server discarding for a slow reader keeps RTP sequence
	// numbers contiguous, so RTP loss does not show it).
	FPSAvg          float64 `json:"video_fps_per_viewer_avg"`
	FPSMin          float64 `json:"video_fps_per_viewer_min"`
	StampedFraction float64 `json:"stamped_fraction"`
	PacketsExpected int64   `json:"packets_expected"`
	PacketsLost     int64   `json:"packets_lost"`
	LossPct         float64 `json:"loss_pct"`
	VideoLossPct    float64 `json:"video_loss_pct"`
	AudioLossPct    float64 `json:"audio_loss_pct"`
	BitrateKbpsAvg  float64 `json:"bitrate_kbps_per_viewer_avg"`
	BitrateKbpsMin  float64 `json:"bitrate_kbps_per_viewer_min"`
	ClientCPUPct    float64 `json:"client_cpu_pct"`
	// MachineCPUPct is every process's CPU use during the full-load window,
	// in % of one core (200 = both cores of a 2-core machine busy); what is
	// not the server's nor the loadtest's is other work on the machine.
	MachineCPUPct float64 `json:"machine_cpu_pct"`
	LoadAvg       string  `json:"loadavg_at_end"`
	ClientRSSKiB  int64   `json:"client_rss_kib"`
	// ClientUDPDrops is packets the kernel dropped at the loadtest's own
	// sockets (receive buffer full) by the end of the full-load window:
	// loss that is the measuring side's, not the server's.
	ClientUDPDrops  int64        `json:"client_udp_drops"`
	PublisherFrames int64        `json:"publisher_frames,omitempty"`
	PublisherError  string       `json:"publisher_error,omitempty"`
	Server          *serverStats `json:"server,omitempty"`
	Memory          *memoryStats `json:"server_memory,omitempty"`
}

// printSummary writes the human-readable summary.
func (r *result) printSummary(w io.Writer) {
	fmt.Fprintf(w, "\n== loadtest: %d viewers of %s (ramp %.0f/s over %.1f s, %.0f s at full load)\n",
		r.Viewers, r.WHEP, r.Rate, r.RampSeconds, r.SteadySeconds)
	if r.Publish != "" {
		fmt.Fprintf(w, "   publisher: %s (SEI stamps: %v, %d video frames sent)\n", r.Publish, r.SEI, r.PublisherFrames)
	}
	if r.PublisherError != "" {
		fmt.Fprintf(w, "   publisher error: %s\n", r.PublisherError)
	}
	row := func(k, v string) { fmt.Fprintf(w, "   %-28s %s\n", k, v) }
	row("viewers connected/failed", fmt.Sprintf("%d / %d (lost after connect %d, no keyframe %d)", r.Connected, r.Failed, r.Lost, r.NoKeyframe))
	for reason, n := range r.FailureReasons {
		row("  failure", fmt.Sprintf("%d x %s", n, reason))
	}
	row("connect ms p50/p95/p99", fmt.Sprintf("%.0f / %.0f / %.0f", r.ConnectMs.P50, r.ConnectMs.P95, r.ConnectMs.P99))
	row("TTFF ms p50/p95/p99", fmt.Sprintf("%.0f / %.0f / %.0f  (max %.0f, n=%d)", r.TTFFMs.P50, r.TTFFMs.P95, r.TTFFMs.P99, r.TTFFMs.Max, r.TTFFMs.N))
	if r.DelayMs.N > 0 {
		row("delay ms p50/p99", fmt.Sprintf("%.1f / %.1f  (max %.1f, %d frames)", r.DelayMs.P50, r.DelayMs.P99, r.DelayMs.Max, r.DelayMs.N))
	} else {
		row("delay ms p50/p99", "- (no SEI stamps received)")
	}
	for _, kind := range []string{"video", "audio"} {
		if d, ok := r.BridgeDelayMs[kind]; ok {
			row("bridge-added "+kind+" ms p50/p99", fmt.Sprintf("%.2f / %.2f  (p95 %.2f, %d units x viewers, server histogram)", d.P50, d.P99, d.P95, d.N))
		}
	}
	if d := r.BatchWaitMs; d != nil {
		row("UDP batch wait ms p50/p99", fmt.Sprintf("%.2f / %.2f  (p95 %.2f, %d batches, server histogram)", d.P50, d.P99, d.P95, d.N))
	}
	row("RTP loss", fmt.Sprintf("%.3f %% (%d of %d; video %.3f %%, audio %.3f %%)", r.LossPct, r.PacketsLost, r.PacketsExpected, r.VideoLossPct, r.AudioLossPct))
	row("receive kbit/s per viewer", fmt.Sprintf("%.0f avg, %.0f min", r.BitrateKbpsAvg, r.BitrateKbpsMin))
	row("video frames per viewer", fmt.Sprintf("%.0f (full load: %.1f fps avg, %.1f min)", r.FramesPerViewer, r.FPSAvg, r.FPSMin))
	if s := r.Server; s != nil {
		row("server CPU % of one core", fmt.Sprintf("%.1f before viewers, %.1f at full load", s.CPUBaselinePct, s.CPUFullPct))
		row("server CPU %/100 viewers", fmt.Sprintf("%.1f (raw %.1f)", s.CPUPer100Pct, s.CPUPer100RawPct))
		row("server RSS MiB", fmt.Sprintf("%.1f before viewers, %.1f at full load (max %.1f)", float64(s.RSSBaselineKiB)/1024, float64(s.RSSFullKiB)/1024, float64(s.RSSMaxKiB)/1024))
		row("server RSS per viewer", fmt.Sprintf("%.0f KiB", s.RSSPerViewerKiB))
	}
	if m := r.Memory; m != nil {
		mem := func(f func(memReading) float64) string {
			out := fmt.Sprintf("%.0f before viewers, %.0f at full load, %.0f when they left", f(m.Baseline), f(m.Full), f(m.Left))
			if m.After != nil {
				out += fmt.Sprintf(", %.0f %.0f s later", f(*m.After), m.AfterSeconds)
			}
			return out
		}
		row("server RSS MiB (metrics)", mem(func(r memReading) float64 { return r.RSSMiB }))
		row("server heap in use MiB", mem(func(r memReading) float64 { return r.HeapInuseMiB }))
	}
	row("loadtest CPU % / RSS", fmt.Sprintf("%.1f %% / %.1f MiB", r.ClientCPUPct, float64(r.ClientRSSKiB)/1024))
	row("loadtest UDP drops", fmt.Sprintf("%d packets dropped by the kernel at the loadtest's sockets (receiver overloaded)", r.ClientUDPDrops))
	row("machine CPU % (all procs)", fmt.Sprintf("%.1f of %d00 (load average %s)", r.MachineCPUPct, runtime.NumCPU(), r.LoadAvg))
	fmt.Fprintln(w)
	fmt.Fprintln(w, markdownHeader)
	fmt.Fprintln(w, r.markdownRow())
}

// markdownHeader heads the table markdownRow makes a row of (bench.sh
// collects the rows of several runs under one header).
// The memory columns are the server's RSS and heap in use (MiB) before
// the viewers, at full load, and -after once they left (bench.sh: 60 s).
const markdownHeader = "| viewers | connected | TTFF p50/p95 ms | delay p50/p99 ms | bridge-added video p50/p99 ms | loss % | kbit/s/viewer | CPU %/100 viewers | RSS KiB/viewer | RSS MiB before / load / after | heap in use MiB before / load / after | loadtest CPU % |\n" +
	"|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"

func (r *result) markdownRow() string {
	delay := "-"
	if r.DelayMs.N > 0 {
		delay = fmt.Sprintf("%.1f / %.1f", r.DelayMs.P50, r.DelayMs.P99)
	}
	bridge := "-"
	if d, ok := r.BridgeDelayMs["video"]; ok && d.N > 0 {
		bridge = fmt.Sprintf("%.2f / %.2f", d.P50, d.P99)
	}
	cpu, rss := "-", "-"
	if r.Server != nil {
		cpu = fmt.Sprintf("%.1f", r.Server.CPUPer100Pct)
		rss = fmt.Sprintf("%.0f", r.Server.RSSPerViewerKiB)
	}
	rssMem, heapMem := "-", "-"
	if m := r.Memory; m != nil && m.After != nil {
		rssMem = fmt.Sprintf("%.0f / %.0f / %.0f", m.Baseline.RSSMiB, m.Full.RSSMiB, m.After.RSSMiB)
		heapMem = fmt.Sprintf("%.0f / %.0f / %.0f", m.Baseline.HeapInuseMiB, m.Full.HeapInuseMiB, m.After.HeapInuseMiB)
	}
	return "| " + strings.Join([]string{
		fmt.Sprint(r.Viewers), fmt.Sprint(r.Connected),
		fmt.Sprintf("%.0f / %.0f", r.TTFFMs.P50, r.TTFFMs.P95), delay, bridge,
		fmt.Sprintf("%.3f", r.LossPct), fmt.Sprintf("%.0f", r.BitrateKbpsAvg), cpu, rss, rssMem, heapMem,
		fmt.Sprintf("%.0f", r.ClientCPUPct)}, " | ") + " |"
}
