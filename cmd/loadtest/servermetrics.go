package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The bridge's histograms of the delay it adds (its /metrics endpoint;
// other servers do not have them, -metrics is for the bridge only): per
// unit per WHEP viewer up to the UDP socket (metrics.SendDelay, by kind),
// and per batch of packets in the socket's send queue (metrics.BatchWait).
const (
	sendDelayMetric = "bridge_whep_send_delay_seconds"
	batchWaitMetric = "bridge_udp_batch_wait_seconds"
)

// histogram is a Prometheus classic histogram's cumulative buckets, by
// upper bound (seconds; +Inf last).
type histogram map[float64]float64

// scrape reads a Prometheus text-format endpoint and calls each for every
// line.
func scrape(ctx context.Context, url, token string, each func(line string) error) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/plain")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if err := each(sc.Text()); err != nil {
			return err
		}
	}
	return sc.Err()
}

// scrapeHistograms reads the histograms called name from a Prometheus
// text-format endpoint, by the value of their "kind" label ("" without one).
func scrapeHistograms(ctx context.Context, url, token, name string) (map[string]histogram, error) {
	out := map[string]histogram{}
	err := scrape(ctx, url, token, func(line string) error {
		rest, ok := strings.CutPrefix(line, name+"_bucket{")
		if !ok {
			return nil
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			return nil
		}
		kind, le := labelOf(labels, "kind"), labelOf(labels, "le")
		bound, err1 := strconv.ParseFloat(le, 64) // "+Inf" parses as +Inf
		count, err2 := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("unreadable line in %s: %q", url, line)
		}
		if out[kind] == nil {
			out[kind] = histogram{}
		}
		out[kind][bound] = count
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s has no %s histogram (is it the bridge's metrics endpoint, with metrics enabled?)", url, name)
	}
	return out, nil
}

// The server's memory, from the Go and process collectors every
// Prometheus Go client serves: the resident set and the heap spans in
// use (live objects and the free space in their spans).
const (
	rssMetric       = "process_resident_memory_bytes"
	heapInuseMetric = "go_memstats_heap_inuse_bytes"
)

// memReading is the server's memory at one moment, in MiB.
type memReading struct {
	RSSMiB       float64 `json:"rss_mib"`
	HeapInuseMiB float64 `json:"heap_inuse_mib"`
}

// scrapeMemory reads the server's RSS and heap in use from its metrics.
func scrapeMemory(ctx context.Context, url, token string) (memReading, error) {
	var m memReading
	var seen int
	err := scrape(ctx, url, token, func(line string) error {
		name, value, ok := strings.Cut(line, " ")
		if !ok || (name != rssMetric && name != heapInuseMetric) {
			return nil
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return fmt.Errorf("unreadable line in %s: %q", url, line)
		}
		v = round2(v / (1 << 20))
		if name == rssMetric {
			m.RSSMiB = v
		} else {
			m.HeapInuseMiB = v
		}
		seen++
		return nil
	})
	if err == nil && seen < 2 {
		err = fmt.Errorf("%s lacks %s or %s (a Go server with the process collector?)", url, rssMetric, heapInuseMetric)
	}
	return m, err
}

// labelOf returns the value of label name in a Prometheus label set
// (`a="1",b="2"`); stream paths never reach this histogram's labels, so
// values have no escaped quotes.
func labelOf(labels, name string) string {
	for _, kv := range strings.Split(labels, ",") {
		if v, ok := strings.CutPrefix(kv, name+`="`); ok {
			return strings.TrimSuffix(v, `"`)
		}
	}
	return ""
}

// delayBetween summarizes the observations made between two scrapes of a
// histogram, in milliseconds: count and quantiles interpolated within
// buckets, as PromQL's histogram_quantile does (so they are as precise
// as the bucket bounds).
func delayBetween(before, after histogram) dist {
	bounds := make([]float64, 0, len(after))
	for b := range after {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	cum := make([]float64, len(bounds))
	for i, b := range bounds {
		cum[i] = after[b] - before[b]
	}
	if len(cum) == 0 || cum[len(cum)-1] <= 0 {
		return dist{}
	}
	total := cum[len(cum)-1]
	q := func(p float64) float64 {
		rank := p * total
		for i, c := range cum {
			if c < rank {
				continue
			}
			lo, below := 0.0, 0.0
			if i > 0 {
				lo, below = bounds[i-1], cum[i-1]
			}
			hi := bounds[i]
			if math.IsInf(hi, 1) {
				return lo * 1000 // beyond the last bound: report the bound
			}
			if c == below {
				return hi * 1000
			}
			return (lo + (hi-lo)*(rank-below)/(c-below)) * 1000
		}
		return bounds[len(bounds)-1] * 1000
	}
	return dist{N: int(total), P50: round2(q(0.50)), P95: round2(q(0.95)), P99: round2(q(0.99))}
}
