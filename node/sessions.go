package node

import (
	"errors"
	"fmt"
	"strings"

	"github.com/wishbridge/bridge/access"
)

// sessionID returns a new id for a forward or pull session: prefix and a
// counter, unique in the node's life.
func (n *Node) sessionID(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, n.sessionSeq.Add(1))
}

// StateWaitingForLease is the state of a pull, in a cluster, while another
// node holds its lease (and runs it) or the registry cannot say: it starts
// here once this node takes the lease. "running" otherwise.
const StateWaitingForLease = "waiting for lease"

// Sessions lists the node's own sessions for the admin API: the running
// forwards (as of the forward manager's last scan) and pulls. A pull over
// SRT reports its connection's bytes and packet counters.
func (n *Node) Sessions() []access.Session {
	var out []access.Session
	if runs := n.fwd.liveRuns.Load(); runs != nil {
		for _, run := range *runs {
			out = append(out, run.session)
		}
	}
	n.pulls.mu.Lock()
	runs := make([]*pullRun, 0, len(n.pulls.running))
	for _, run := range n.pulls.running {
		runs = append(runs, run)
	}
	n.pulls.mu.Unlock()
	for _, run := range runs { // the puller's statistics outside the table's lock
		s := run.session
		if n.waitingForLease(run.spec) {
			s.State = StateWaitingForLease
		}
		if run.srt != nil {
			if st, ok := run.srt.Stats(); ok {
				s.Bytes, s.HasBytes = st.BytesReceived, true
				s.PacketsLost, s.PacketsRetransmitted, s.HasPackets = st.PacketsLost, st.PacketsRetransmitted, true
			}
		}
		out = append(out, s)
	}
	return out
}

// waitingForLease reports whether spec's pull waits for its lease: in a
// cluster, a pull (not a relay) whose lease this node does not hold (the
// pull's run holds it while the pull runs: see leased, ownership.go).
func (n *Node) waitingForLease(spec pullSpec) bool {
	if n.ownership == nil || spec.kind == pullRelay {
		return false
	}
	n.leases.mu.Lock()
	defer n.leases.mu.Unlock()
	_, held := n.leases.held[leaseName(spec.path)]
	return !held
}

// EndSession ends the forward or pull id (the admin API's kick) and
// reports whether the node had it. Both are the config's to run, so an
// ended one starts again as if new: a forward at once, a pull at once or,
// on demand, for the next reader. Kicking one makes it reconnect.
func (n *Node) EndSession(id, reason string) bool {
	switch {
	case strings.HasPrefix(id, "fwd-"):
		runs := n.fwd.liveRuns.Load()
		if runs == nil {
			return false
		}
		for _, run := range *runs {
			if run.session.ID == id {
				// The forward's session ends with reason at INFO.
				run.kicked.Store(true)
				run.stop(errors.New(reason))
				return true
			}
		}
	case strings.HasPrefix(id, "pull-"):
		n.pulls.mu.Lock()
		var found *pullRun
		for _, run := range n.pulls.running {
			if run.session.ID == id {
				found = run
			}
		}
		n.pulls.mu.Unlock()
		if found == nil {
			return false
		}
		n.pulls.forget(found, errors.New(reason)) // its session ends with reason at INFO
		<-found.done
		n.pulls.reconcile()
		return true
	}
	return false
}

// restartIfKicked asks for a scan once a kicked forward's runner has
// returned, which starts it again.
func (f *forwards) restartIfKicked(run *forwardRun) {
	if run.kicked.Load() {
		f.reconcile()
	}
}
