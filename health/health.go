// Package health answers the two questions a load balancer or an
// orchestrator asks: is the process alive (/healthz: 200 while it can
// answer at all), and should it get traffic (/readyz: 200 with every
// registered check passing, 503 with the reason while the process drains
// for shutdown or a check fails). Both answer JSON.
//
// A Checker's zero value is ready: no checks, not draining. Checks are
// registered by the parts that know what "ready" means for them (e.g. the
// ACME certificate manager: a certificate for every configured domain);
// the shutdown code calls Drain on the first SIGTERM, before it ends any
// session, so load balancers stop sending new clients while the old ones
// are wound down.
package health

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/wishbridge/bridge/internal/panics"
)

// CheckTimeout bounds one check's run within a /readyz request: a check
// that has not answered by then counts as failing ("did not answer within
// 2s"). Probes time out after a few seconds (Kubernetes: 1 s by default,
// load balancers 2-5 s); 2 s answers before most of them give up.
const CheckTimeout = 2 * time.Second

// maxChecks bounds the registered checks: each is registered once at start
// by a component (certificates, a cluster registry); 64 is far beyond that.
const maxChecks = 64

// Checker holds the readiness checks and the draining state. Safe for
// concurrent use; the zero value is ready.
type Checker struct {
	mu       sync.Mutex
	draining string   // guarded by mu: the reason given to Drain; "" while not draining
	checks   []*check // guarded by mu; in registration order
}

// check is one registered check. At most one run of it is in flight: a
// check that hangs costs one goroutine, however often /readyz is asked.
type check struct {
	name string
	f    func() error
	info bool // RegisterInfo's: reported, never failing readiness

	mu      sync.Mutex
	running chan struct{} // guarded by mu: closed when the run in flight ends; nil if none
	err     error         // guarded by mu: the last run's result
}

// Register adds a check: f returns nil while name is ready, otherwise an
// error saying what is missing. f is called on each /readyz request (at
// most one call in flight per check, bounded by CheckTimeout), so it must
// be cheap. A name registered again replaces the earlier check.
func (c *Checker) Register(name string, f func() error) {
	c.add(&check{name: name, f: f})
}

// RegisterInfo adds an informational check: run and reported like
// Register's (its error says what is degraded), but it never makes the
// process not ready. A component whose failure the other nodes share (a
// cluster's Redis) reports through it: failing readiness for it would have
// a load balancer drain every node at once, while each can still serve
// what it has.
func (c *Checker) RegisterInfo(name string, f func() error) {
	c.add(&check{name: name, f: f, info: true})
}

// add registers nc, replacing a check of the same name.
func (c *Checker) add(nc *check) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, ch := range c.checks {
		if ch.name == nc.name {
			c.checks[i] = nc
			return
		}
	}
	if len(c.checks) >= maxChecks {
		panic(fmt.Sprintf("health: more than %d checks registered (adding %q)", maxChecks, nc.name))
	}
	c.checks = append(c.checks, nc)
}

// Drain makes /readyz answer 503 with reason from now on (the process is
// shutting down). The first reason stays; later calls change nothing.
func (c *Checker) Drain(reason string) {
	if reason == "" {
		reason = "draining"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.draining == "" {
		c.draining = reason
	}
}

// Draining returns the reason given to Drain, "" while not draining.
func (c *Checker) Draining() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining
}

// Result is one check's outcome in a Report.
type Result struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Informational: the check does not count for readiness
	// (RegisterInfo).
	Informational bool `json:"informational,omitempty"`
}

// Report is the /readyz body.
type Report struct {
	// Ready is true when the process takes traffic: not draining, every
	// check passing.
	Ready bool `json:"ready"`
	// Reason says why it is not ready ("" when it is): the Drain reason,
	// or the failing checks with their errors.
	Reason string   `json:"reason,omitempty"`
	Checks []Result `json:"checks"`
}

// Check runs every check (concurrently, each bounded by CheckTimeout) and
// reports.
func (c *Checker) Check() Report {
	c.mu.Lock()
	checks := append([]*check(nil), c.checks...)
	draining := c.draining
	c.mu.Unlock()

	rep := Report{Checks: make([]Result, len(checks))}
	waits := make([]chan struct{}, len(checks))
	for i, ch := range checks {
		waits[i] = ch.start()
	}
	deadline := time.NewTimer(CheckTimeout)
	defer deadline.Stop()
	late := false // the deadline has passed: look, do not wait
	var failed []string
	for i, ch := range checks {
		r := Result{Name: ch.name, Informational: ch.info}
		answered := false
		if late {
			select {
			case <-waits[i]:
				answered = true
			default:
			}
		} else {
			select {
			case <-waits[i]:
				answered = true
			case <-deadline.C:
				late = true
			}
		}
		if !answered {
			r.Error = fmt.Sprintf("did not answer within %v", CheckTimeout)
		} else if err := ch.result(); err != nil {
			r.Error = err.Error()
		}
		r.OK = r.Error == ""
		if !r.OK && !ch.info {
			failed = append(failed, ch.name+": "+r.Error)
		}
		rep.Checks[i] = r
	}
	switch {
	case draining != "":
		rep.Reason = draining
	case len(failed) > 0:
		rep.Reason = "failing checks: " + strings.Join(failed, "; ")
	default:
		rep.Ready = true
	}
	return rep
}

// start runs the check unless a run is in flight, and returns the channel
// closed when that run ends.
func (ch *check) start() chan struct{} {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.running != nil {
		return ch.running
	}
	done := make(chan struct{})
	ch.running = done
	go func() {
		defer panics.Recover("health check", slog.Default(), nil)
		var err error
		if panics.Do("health check "+ch.name, slog.Default(), func() { err = ch.f() }) {
			err = fmt.Errorf("check %q panicked (see the error log)", ch.name)
		}
		ch.mu.Lock()
		ch.err, ch.running = err, nil
		ch.mu.Unlock()
		close(done)
	}()
	return done
}

func (ch *check) result() error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.err
}

// Mount adds GET /healthz and GET /readyz to mux.
func (c *Checker) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", c.serveHealthz)
	mux.HandleFunc("GET /readyz", c.serveReadyz)
}

// serveHealthz answers 200 {"alive":true}: the process serves HTTP. It
// checks nothing else, so an orchestrator restarts only a process that
// cannot answer at all.
func (c *Checker) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"alive": true})
}

// serveReadyz answers the Report: 200 when ready, 503 with the reason
// otherwise (draining, or a check failing).
func (c *Checker) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	rep := c.Check()
	status := http.StatusOK
	if !rep.Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, rep)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
