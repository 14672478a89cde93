// Command loadtest measures a live-media server from the outside, speaking
// only standard RTMP and WHEP, so it can be pointed at the bridge or at any
// other server for a side-by-side comparison.
//
// It can publish an FLV file to an RTMP URL at real time (looping, and
// stamping every video frame with its wall-clock send time in an H.264 SEI),
// open N WHEP viewers against a WHEP URL at a given ramp rate, and sample the
// server process's CPU and memory from /proc. Per viewer it measures the
// time from POST to the first complete keyframe (TTFF), the receive bitrate,
// RTP loss and, from the SEI stamps, the end-to-end delay of every frame.
//
// Usage:
//
//	loadtest -publish rtmp://127.0.0.1/live/test -file h264-aac.flv -loop -sei \
//	         -whep http://127.0.0.1:8080/whep/live/test -n 100 -rate 20 -duration 30s \
//	         -pid $(pidof bridge) -json out.json
//
// A run goes: publish (if -publish) and wait -warmup (the server's CPU
// baseline is taken then), start the viewers at -rate per second, wait
// until every one connected or failed plus -settle, then hold -duration at
// full load (the window for CPU, RSS, bitrate and delay), then DELETE every
// session and, with -after, keep publishing that long before reading the
// server's memory again (does it give back what the viewers took?). Without
// -whep it only publishes (for -duration, or until the file ends or Ctrl-C).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type options struct {
	publish, file  string
	loop, sei      bool
	whep, token    string
	n              int
	rate           float64
	duration       time.Duration
	warmup, settle time.Duration
	after          time.Duration
	setupTimeout   time.Duration
	pid            int
	jsonPath       string
	loopback       bool
	iceIPs         string
	rcvbuf         int
	quiet          bool
	metrics        string
	metricsToken   string
}

func main() {
	var o options
	flag.StringVar(&o.publish, "publish", "", "RTMP URL to publish -file to, e.g. rtmp://127.0.0.1:1935/live/test (empty: use an existing stream)")
	flag.StringVar(&o.file, "file", "", "FLV file to publish (H.264 video, any audio)")
	flag.BoolVar(&o.loop, "loop", false, "loop the file forever")
	flag.BoolVar(&o.sei, "sei", false, "stamp every video frame with its send time in an H.264 SEI (for the delay measurement)")
	flag.StringVar(&o.whep, "whep", "", "WHEP URL to open the viewers against, e.g. http://127.0.0.1:8080/whep/live/test")
	flag.StringVar(&o.token, "token", "", "bearer token for the WHEP requests")
	flag.IntVar(&o.n, "n", 10, "number of WHEP viewers")
	flag.Float64Var(&o.rate, "rate", 20, "viewers started per second")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "time at full load, after the ramp (publish-only: how long to publish, 0 = until the file ends)")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "wait this long before the first viewer (with -publish or -pid; the server's CPU/RSS baseline is taken then)")
	flag.DurationVar(&o.settle, "settle", 2*time.Second, "wait this long after the last viewer connected before the full-load window")
	flag.DurationVar(&o.setupTimeout, "setup-timeout", 15*time.Second, "a viewer not connected (ICE+DTLS) this long after its POST counts as failed")
	flag.IntVar(&o.pid, "pid", 0, "server process id: sample its CPU and RSS from /proc every second")
	flag.StringVar(&o.jsonPath, "json", "", "write the results as JSON to this file")
	flag.BoolVar(&o.loopback, "loopback", false, "offer loopback ICE candidates too (for a server that only has 127.0.0.1)")
	flag.StringVar(&o.iceIPs, "ice-ip", "", "comma-separated local IPs to gather ICE candidates on (default: every interface)")
	flag.IntVar(&o.rcvbuf, "rcvbuf", 1<<20, "kernel receive buffer of each viewer's UDP socket in bytes (capped by net.core.rmem_max; 0: the system default)")
	flag.BoolVar(&o.quiet, "q", false, "no progress lines")
	flag.StringVar(&o.metrics, "metrics", "", "the bridge's metrics URL (e.g. http://127.0.0.1:8080/metrics): report the delay it adds per viewer, from its "+sendDelayMetric+" histogram over the full-load window")
	flag.StringVar(&o.metricsToken, "metrics-token", "", "bearer token for -metrics")
	flag.DurationVar(&o.after, "after", 0, "with -metrics: after the viewers left, wait this long (still publishing) and read the server's RSS and heap in use again")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: loadtest [-publish rtmp://... -file X.flv [-loop] [-sei]] [-whep http://... -n N -rate R -duration D] [-pid PID] [-json out.json]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 || (o.publish == "" && o.whep == "") {
		flag.Usage()
		os.Exit(2)
	}
	if o.publish != "" && o.file == "" {
		fatalf("-publish needs -file")
	}
	if o.n < 1 || o.rate <= 0 {
		fatalf("-n must be at least 1 and -rate positive")
	}
	if o.after > 0 && (o.metrics == "" || o.whep == "") {
		fatalf("-after needs -whep and -metrics (the server's memory is read from its metrics)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadtest: "+format+"\n", args...)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s loadtest: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// sleep waits d or until ctx ends; it reports whether it slept the whole d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func run(ctx context.Context, o options) error {
	start := time.Now()
	res := &result{WHEP: o.whep, Publish: o.publish, SEI: o.sei, Viewers: o.n, Rate: o.rate}
	hz := clockTicks()

	var server *sampler
	stopSampling := make(chan struct{})
	defer close(stopSampling)
	if o.pid != 0 {
		server = &sampler{pid: o.pid, hz: hz, start: start, phase: "warmup"}
		if _, err := server.sample(); err != nil {
			return fmt.Errorf("-pid %d: %w", o.pid, err)
		}
		go server.run(stopSampling)
	}
	self := &sampler{pid: 0, hz: hz, start: start, phase: "warmup"}

	// The publisher.
	var pub *publisher
	pubDone := make(chan error, 1)
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	if o.publish != "" {
		f, err := readFLVFile(o.file)
		if err != nil {
			return err
		}
		if o.sei && f.LengthSize == 0 {
			return fmt.Errorf("%s: no AVC sequence header, cannot stamp SEI", o.file)
		}
		pub = &publisher{url: o.publish, file: f, loop: o.loop, sei: o.sei, setupLimit: 10 * time.Second}
		if err := pub.start(ctx); err != nil {
			return fmt.Errorf("publish %s: %w", o.publish, err)
		}
		logf("publishing %s to %s (loop %v, SEI %v)", o.file, o.publish, o.loop, o.sei)
		go func() { pubDone <- pub.run(pubCtx) }()
	}

	if o.whep == "" {
		// Publish only.
		var timeout <-chan time.Time
		if o.duration > 0 {
			timeout = time.After(o.duration)
		}
		var err error
		select {
		case err = <-pubDone:
		case <-timeout:
		case <-ctx.Done():
		}
		stopPub()
		logf("published %d video frames, %.1f MB", pub.frames.Load(), float64(pub.bytes.Load())/1e6)
		return err
	}

	var pubErr atomic.Pointer[error]
	if pub != nil {
		go func() {
			if err := <-pubDone; err != nil {
				pubErr.Store(&err)
				logf("publisher stopped: %v", err)
			}
		}()
	}

	// Baseline: the stream flows, no viewers yet.
	baseFrom := time.Now()
	if server != nil {
		_, _ = server.sample()
	}
	if (pub != nil || server != nil) && !sleep(ctx, o.warmup) {
		return ctx.Err()
	}
	var baseRSS int64
	if server != nil {
		s, _ := server.sample()
		baseRSS = s.RSSKiB
		server.setPhase("ramp")
	}
	var err error
	if o.metrics != "" {
		res.Memory = &memoryStats{}
		if res.Memory.Baseline, err = scrapeMemory(ctx, o.metrics, o.metricsToken); err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
	}
	baseTo := time.Now() // after the sample: windows include their end samples
	if pub != nil {
		if e := pubErr.Load(); e != nil {
			return fmt.Errorf("publisher: %w", *e)
		}
	}

	var ips []net.IP
	for _, s := range strings.Split(o.iceIPs, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("-ice-ip: %q is not an IP address", s)
		}
		ips = append(ips, ip)
	}
	api, err := newViewerAPI(o.loopback, ips, o.rcvbuf)
	if err != nil {
		return err
	}
	var steady atomic.Bool
	vo := &viewerOptions{
		url: o.whep, token: o.token, api: api, setupTimeout: o.setupTimeout, steady: &steady,
		http: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second},
		},
	}

	// Ramp.
	viewersCtx, stopViewers := context.WithCancel(context.Background())
	defer stopViewers()
	viewers := make([]*viewer, o.n)
	var setupWG, doneWG sync.WaitGroup
	var ready atomic.Int64
	rampStart := time.Now()
	logf("starting %d viewers at %.0f/s", o.n, o.rate)
	interval := time.Duration(float64(time.Second) / o.rate)
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	printProgress := func() {
		if o.quiet {
			return
		}
		conn, keys := 0, 0
		var bytes int64
		for _, v := range viewers {
			if v == nil {
				continue
			}
			if v.connectedAt.Load() != 0 {
				conn++
			}
			if v.firstKeyAt.Load() != 0 {
				keys++
			}
			bytes += v.bytes.Load()
		}
		line := fmt.Sprintf("%.0fs: %d started, %d ready, %d connected, %d with a keyframe, %.1f MB received",
			time.Since(rampStart).Seconds(), countStarted(viewers), ready.Load(), conn, keys, float64(bytes)/1e6)
		if server != nil {
			if s, err := server.sample(); err == nil {
				line += fmt.Sprintf(", server RSS %.0f MiB", float64(s.RSSKiB)/1024)
			}
		}
		logf("%s", line)
	}
	for i := range viewers {
		if i > 0 {
			next := rampStart.Add(time.Duration(i) * interval)
			for wait := time.Until(next); wait > 0; wait = time.Until(next) {
				select {
				case <-time.After(wait):
				case <-progress.C:
					printProgress()
				case <-ctx.Done():
				}
				if ctx.Err() != nil {
					break
				}
			}
		}
		if ctx.Err() != nil {
			break
		}
		v := &viewer{id: i, opt: vo}
		viewers[i] = v
		setupWG.Add(1)
		doneWG.Add(1)
		go func() {
			defer doneWG.Done()
			v.run(viewersCtx, func() { ready.Add(1); setupWG.Done() })
		}()
	}
	res.RampSeconds = time.Since(rampStart).Seconds()
	allReady := make(chan struct{})
	go func() { setupWG.Wait(); close(allReady) }()
waitReady:
	for {
		select {
		case <-allReady:
			break waitReady
		case <-progress.C:
			printProgress()
		case <-ctx.Done():
			break waitReady
		}
	}
	if ctx.Err() == nil {
		sleep(ctx, o.settle)
	}

	// Full load.
	steadyFrom := time.Now()
	startCount := snapshot(viewers)
	_, _ = self.sample()
	if server != nil {
		server.setPhase("full")
		_, _ = server.sample()
	}
	mBusy0, mTotal0, mErr := machineCPU()
	var delay0, wait0 map[string]histogram
	if o.metrics != "" {
		if delay0, err = scrapeHistograms(ctx, o.metrics, o.metricsToken, sendDelayMetric); err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
		if wait0, err = scrapeHistograms(ctx, o.metrics, o.metricsToken, batchWaitMetric); err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
	}
	steady.Store(true)
	logf("full load: %d of %d viewers ready after %.1f s; measuring for %v", ready.Load(), o.n, time.Since(rampStart).Seconds(), o.duration)
	end := time.After(o.duration)
measure:
	for {
		select {
		case <-end:
			break measure
		case <-progress.C:
			printProgress()
		case <-ctx.Done():
			break measure
		}
	}
	steady.Store(false)
	endCount := snapshot(viewers)
	if mBusy1, mTotal1, err := machineCPU(); err == nil && mErr == nil && mTotal1 > mTotal0 {
		res.MachineCPUPct = round2(float64(mBusy1-mBusy0) / float64(mTotal1-mTotal0) * 100 * float64(runtime.NumCPU()))
	}
	res.LoadAvg = loadAvg()
	if d, err := selfUDPDrops(); err == nil {
		res.ClientUDPDrops = d
	}
	res.SteadySeconds = time.Since(steadyFrom).Seconds()
	if o.metrics != "" {
		delay1, err := scrapeHistograms(ctx, o.metrics, o.metricsToken, sendDelayMetric)
		if err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
		wait1, err := scrapeHistograms(ctx, o.metrics, o.metricsToken, batchWaitMetric)
		if err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
		res.BridgeDelayMs = map[string]dist{}
		for kind, h := range delay1 {
			res.BridgeDelayMs[kind] = delayBetween(delay0[kind], h)
		}
		w := delayBetween(wait0[""], wait1[""])
		res.BatchWaitMs = &w
		if res.Memory.Full, err = scrapeMemory(ctx, o.metrics, o.metricsToken); err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
	}
	if server != nil {
		_, _ = server.sample()
		server.setPhase("teardown")
	}
	selfEnd, _ := self.sample()
	steadyTo := time.Now()

	// Teardown.
	stopViewers()
	done := make(chan struct{})
	go func() { doneWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		logf("some viewers did not close within 20 s")
	}
	if o.metrics != "" {
		// The publisher goes on, as at the baseline: what the server
		// holds then beyond the baseline is what the viewers left.
		if res.Memory.Left, err = scrapeMemory(ctx, o.metrics, o.metricsToken); err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
		if o.after > 0 {
			if server != nil {
				server.setPhase("after")
			}
			logf("viewers gone; reading the server's memory again in %v", o.after)
			if !sleep(ctx, o.after) {
				return ctx.Err()
			}
			after, err := scrapeMemory(ctx, o.metrics, o.metricsToken)
			if err != nil {
				return fmt.Errorf("-metrics: %w", err)
			}
			res.Memory.After, res.Memory.AfterSeconds = &after, o.after.Seconds()
		}
	}
	stopPub()
	if pub != nil {
		res.PublisherFrames = pub.frames.Load()
		if e := pubErr.Load(); e != nil {
			res.PublisherError = (*e).Error()
		}
	}

	collect(res, viewers, startCount, endCount, steadyFrom)
	if cpu, _, n := self.window(steadyFrom, steadyTo); n >= 2 {
		res.ClientCPUPct = round2(cpu)
	}
	res.ClientRSSKiB = selfEnd.RSSKiB
	if server != nil {
		ss := &serverStats{PID: o.pid, RSSBaselineKiB: baseRSS, Samples: server.all()}
		ss.CPUBaselinePct, _, _ = server.window(baseFrom, baseTo)
		var n int
		ss.CPUFullPct, ss.RSSFullKiB, n = server.window(steadyFrom, steadyTo)
		for _, s := range ss.Samples {
			if s.Phase == "full" {
				ss.RSSMaxKiB = max(ss.RSSMaxKiB, s.RSSKiB)
			}
		}
		if n >= 2 && res.Connected > 0 {
			ss.CPUPer100Pct = round2((ss.CPUFullPct - ss.CPUBaselinePct) / float64(res.Connected) * 100)
			ss.CPUPer100RawPct = round2(ss.CPUFullPct / float64(res.Connected) * 100)
			ss.RSSPerViewerKiB = round2(float64(ss.RSSFullKiB-ss.RSSBaselineKiB) / float64(res.Connected))
		}
		ss.CPUBaselinePct, ss.CPUFullPct = round2(ss.CPUBaselinePct), round2(ss.CPUFullPct)
		res.Server = ss
	}

	res.printSummary(os.Stdout)
	if o.jsonPath != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if res.Connected == 0 {
		return errors.New("no viewer connected")
	}
	return nil
}

func countStarted(vs []*viewer) int {
	n := 0
	for _, v := range vs {
		if v != nil {
			n++
		}
	}
	return n
}

// counters is a snapshot of every viewer's byte and frame counts.
type counters struct{ bytes, frames []int64 }

func snapshot(vs []*viewer) counters {
	c := counters{make([]int64, len(vs)), make([]int64, len(vs))}
	for i, v := range vs {
		if v != nil {
			c.bytes[i], c.frames[i] = v.bytes.Load(), v.frames.Load()
		}
	}
	return c
}

// collect fills res from the viewers, once they are all done.
func collect(res *result, viewers []*viewer, start, end counters, steadyFrom time.Time) {
	var connect, ttff, delays, rates, fps []float64
	var perSecond [][]float64 // delays by second of the full-load window
	var frames, stamped int64
	var exp, lost [2]int64 // video, audio
	for i, v := range viewers {
		if v == nil {
			continue
		}
		v.mu.Lock()
		tracks := v.tracks
		v.mu.Unlock()
		c := v.connectedAt.Load()
		if c == 0 {
			res.Failed++
			reason := "unknown"
			if v.err != nil {
				reason = v.err.Error()
			}
			if res.FailureReasons == nil {
				res.FailureReasons = map[string]int{}
			}
			res.FailureReasons[reason]++
			continue
		}
		res.Connected++
		if v.err != nil {
			res.Lost++
		}
		connect = append(connect, float64(time.Unix(0, c).Sub(v.postAt))/1e6)
		if d, ok := v.ttff(); ok {
			ttff = append(ttff, float64(d)/1e6)
		} else {
			res.NoKeyframe++
		}
		if res.SteadySeconds > 0 {
			rates = append(rates, float64(end.bytes[i]-start.bytes[i])*8/res.SteadySeconds/1000)
			fps = append(fps, float64(end.frames[i]-start.frames[i])/res.SteadySeconds)
		}
		for _, t := range tracks {
			k := 1
			if t.kind == "video" {
				k = 0
				frames += t.frames
				stamped += t.stamped
			}
			exp[k] += t.seq.expected()
			lost[k] += t.seq.lost()
			for _, d := range t.delays {
				delays = append(delays, float64(d.ms))
				sec := max(0, int(time.Unix(0, d.at).Sub(steadyFrom)/time.Second))
				for len(perSecond) <= sec {
					perSecond = append(perSecond, nil)
				}
				perSecond[sec] = append(perSecond[sec], float64(d.ms))
			}
		}
	}
	res.ConnectMs = summarize(connect)
	res.TTFFMs = summarize(ttff)
	res.DelayMs = summarize(delays)
	for _, sec := range perSecond {
		res.DelayBySecond = append(res.DelayBySecond, summarize(sec))
	}
	if res.Connected > 0 {
		res.FramesPerViewer = round2(float64(frames) / float64(res.Connected))
	}
	if frames > 0 {
		res.StampedFraction = round2(float64(stamped) / float64(frames))
	}
	pct := func(l, e int64) float64 {
		if e == 0 {
			return 0
		}
		return math.Round(float64(l)/float64(e)*100*1e4) / 1e4
	}
	res.PacketsExpected, res.PacketsLost = exp[0]+exp[1], lost[0]+lost[1]
	res.LossPct = pct(res.PacketsLost, res.PacketsExpected)
	res.VideoLossPct = pct(lost[0], exp[0])
	res.AudioLossPct = pct(lost[1], exp[1])
	if r := summarize(rates); r.N > 0 {
		res.BitrateKbpsAvg, res.BitrateKbpsMin = r.Avg, r.Min
	}
	if r := summarize(fps); r.N > 0 {
		res.FPSAvg, res.FPSMin = r.Avg, r.Min
	}
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
