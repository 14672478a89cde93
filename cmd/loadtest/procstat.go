package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// procSample is one reading of a process's CPU time and resident memory.
type procSample struct {
	At     time.Time `json:"-"`
	T      float64   `json:"t"`       // seconds since the run started
	CPU    float64   `json:"cpu_s"`   // utime+stime, seconds
	RSSKiB int64     `json:"rss_kib"` // VmRSS
	Phase  string    `json:"phase"`
}

// clockTicks is the kernel's USER_HZ (getconf CLK_TCK; 100 if that fails).
func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}

// readProc reads utime+stime (seconds) from /proc/PID/stat and VmRSS (KiB)
// from /proc/PID/status. pid 0 means this process.
func readProc(pid int, hz float64) (cpu float64, rssKiB int64, err error) {
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return 0, 0, err
	}
	cpu, err = parseStatCPU(stat, hz)
	if err != nil {
		return 0, 0, err
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range bytes.Split(status, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(rest))
			if len(f) >= 1 {
				rssKiB, _ = strconv.ParseInt(f[0], 10, 64)
			}
			break
		}
	}
	return cpu, rssKiB, nil
}

// parseStatCPU returns utime+stime in seconds from a /proc/PID/stat line.
// The command name (field 2) may hold spaces and parentheses: fields are
// counted after its last ')'.
func parseStatCPU(stat []byte, hz float64) (float64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc stat line")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc stat line")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc stat line")
	}
	return float64(ut+st) / hz, nil
}

// sampler reads a process every second.
type sampler struct {
	pid   int
	hz    float64
	start time.Time

	mu      sync.Mutex
	samples []procSample
	phase   string
	err     error
}

func (s *sampler) setPhase(p string) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

// sample takes one reading now, records it and returns it.
func (s *sampler) sample() (procSample, error) {
	cpu, rss, err := readProc(s.pid, s.hz)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return procSample{}, err
	}
	p := procSample{At: now, T: now.Sub(s.start).Seconds(), CPU: cpu, RSSKiB: rss, Phase: s.phase}
	s.samples = append(s.samples, p)
	return p, nil
}

func (s *sampler) run(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_, _ = s.sample()
		case <-stop:
			return
		}
	}
}

// window summarises the samples taken in [from, to]: CPU use as a percentage
// of one core between the first and last of them, and mean RSS.
func (s *sampler) window(from, to time.Time) (cpuPct float64, rssKiB int64, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first, last *procSample
	var rssSum int64
	for i := range s.samples {
		p := &s.samples[i]
		if p.At.Before(from) || p.At.After(to) {
			continue
		}
		if first == nil {
			first = p
		}
		last = p
		rssSum += p.RSSKiB
		n++
	}
	if n == 0 {
		return 0, 0, 0
	}
	if d := last.At.Sub(first.At).Seconds(); d > 0 {
		cpuPct = (last.CPU - first.CPU) / d * 100
	}
	return cpuPct, rssSum / int64(n), n
}

func (s *sampler) all() []procSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]procSample(nil), s.samples...)
}

// machineCPU reads the machine's busy and total CPU time (all cores, in
// clock ticks) from the first line of /proc/stat.
func machineCPU() (busy, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat")
	}
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("unexpected /proc/stat")
		}
		if i >= 8 {
			break // guest time is already counted in user
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}

// selfUDPDrops sums the kernel's drop counters (receive buffer full) of
// this process's UDP sockets, from /proc/net/udp{,6}: loss counted there
// happened at the loadtest, not in the server or on the way.
func selfUDPDrops() (int64, error) {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	mine := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(l, "socket:["); ok {
			mine[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var total int64
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		total += udpDrops(b, mine)
	}
	return total, nil
}

// udpDrops sums the drops column of a /proc/net/udp table for the sockets
// whose inode is in inodes.
func udpDrops(table []byte, inodes map[string]bool) int64 {
	var total int64
	for i, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
		if i == 0 || len(f) < 13 || !inodes[f[9]] {
			continue
		}
		if d, err := strconv.ParseInt(f[len(f)-1], 10, 64); err == nil {
			total += d
		}
	}
	return total
}
