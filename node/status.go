package node

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/wishbridge/bridge/config"
	ingestsrt "github.com/wishbridge/bridge/ingest/srt"
	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/metrics"
	"github.com/wishbridge/bridge/rtc"
)

// Streams lists the hub's streams as the metrics see them: readers, how
// each arrives (the kind its ingest set) and, for SRT, the connection's
// statistics (the listener's, Options.SRTStats, or the pull's).
func (n *Node) Streams() []metrics.Stream {
	paths := n.reg.Paths()
	out := make([]metrics.Stream, 0, len(paths))
	for _, path := range paths {
		st, ok := n.reg.Get(path)
		if !ok {
			continue // ended since Paths
		}
		s := metrics.Stream{Path: path, Readers: st.Readers(), Ingest: string(st.PublisherKind())}
		var stats ingestsrt.Stats
		isSRT := false
		if n.srtStats != nil {
			stats, isSRT = n.srtStats(path)
		}
		if !isSRT {
			stats, isSRT = n.pulls.srtStats(path)
		}
		if isSRT {
			s.SRT = &metrics.SRTStats{
				Since:                stats.Since,
				RTT:                  stats.RTT,
				PacketsReceived:      stats.PacketsReceived,
				PacketsLost:          stats.PacketsLost,
				PacketsRetransmitted: stats.PacketsRetransmitted,
				PacketsDropped:       stats.PacketsDropped,
				BytesReceived:        stats.BytesReceived,
				DemuxErrors:          stats.DemuxErrors,
			}
		}
		out = append(out, s)
	}
	return out
}

// Pulls lists the running pullers; Forwards the running forward runners
// (as of the forward manager's last scan).
func (n *Node) Pulls() []metrics.Runner    { return n.pulls.runners() }
func (n *Node) Forwards() []metrics.Runner { return n.fwd.runners() }

// PublicPaths lists the live streams anyone may be shown: those whose
// route needs no read key (Policy.Private). Private streams are never
// listed (index page, metrics without the token); their readers know their
// names.
func (n *Node) PublicPaths() []string {
	var out []string
	for _, p := range n.reg.Paths() {
		if !n.Policy(p).Private {
			out = append(out, p)
		}
	}
	return out
}

// MetricsHandler serves the metrics: with metrics.token configured, only
// to scrapes that carry it (the running config's, so a reload changes it
// for the next scrape), which get full; without one, public to anyone
// (which sums private paths, see metrics.PrivatePath). A refused scrape is
// answered 401 and logged once per address per interval.
func (n *Node) MetricsHandler(full, public http.Handler) http.Handler {
	var refused ratelog.Limiter
	refuse := func(w http.ResponseWriter, r *http.Request, msg string) {
		if ok, k := refused.Allow(addrlimit.AddrOf(r.RemoteAddr).String()); ok {
			n.log.Warn("metrics scrape refused: "+msg, "peer", r.RemoteAddr, "suppressed", k)
		}
		rtc.WriteError(w, rtc.Errorf(http.StatusUnauthorized, "%s", msg))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := n.Config().Metrics.Token
		if want == "" {
			public.ServeHTTP(w, r)
			return
		}
		switch got := rtc.BearerToken(r); {
		case got == "":
			refuse(w, r, "metrics need a bearer token (Authorization: Bearer ...)")
		case !secretEqual(got, want):
			refuse(w, r, "wrong bearer token")
		default:
			full.ServeHTTP(w, r)
		}
	})
}

// OpenPublishing describes the routes of cfg anyone may publish to (no
// publish_key, no pull) over a listener bound to a non-loopback address
// (listeners: by config.Ingest* protocol), with the config key that closes
// each; "" when there are none. The process logs it once as a warning: the
// embedded default is open for a first run on a laptop, which is a mistake
// on a server.
func OpenPublishing(cfg *config.Config, listeners map[string]net.Addr) string {
	public := map[string]bool{}
	for proto, a := range listeners {
		if ip := addrlimit.AddrOf(a); !ip.IsValid() || !ip.IsLoopback() {
			public[proto] = true
		}
	}
	var open []string
	for i, r := range cfg.Routes {
		if r.PublishKey != "" || r.Pull != "" {
			continue
		}
		var protos []string
		for _, p := range r.Ingest {
			if public[p] {
				protos = append(protos, p)
			}
		}
		if len(protos) > 0 {
			open = append(open, fmt.Sprintf("routes[%d] %q (%s): set routes[%d].publish_key", i, r.Path, strings.Join(protos, ", "), i))
		}
	}
	return strings.Join(open, "; ")
}

// srtStats returns the statistics of the SRT connection pulling path, if
// one is up.
func (p *pulls) srtStats(path string) (ingestsrt.Stats, bool) {
	p.mu.Lock()
	run := p.running[path]
	p.mu.Unlock()
	if run == nil || run.srt == nil {
		return ingestsrt.Stats{}, false
	}
	return run.srt.Stats()
}

// runners lists the running pullers.
func (p *pulls) runners() []metrics.Runner {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]metrics.Runner, 0, len(p.running))
	for path, run := range p.running {
		out = append(out, metrics.Runner{Path: path, Kind: run.spec.kind})
	}
	return out
}
