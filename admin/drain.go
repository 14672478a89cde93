package admin

import (
	"net/http"
	"time"
)

// drainState is the answer of POST and DELETE /node/drain (openapi.json:
// Drain).
type drainState struct {
	Draining bool       `json:"draining"`
	Changed  bool       `json:"changed"`
	Since    *time.Time `json:"since,omitempty"`
}

// serveDrain stops new sessions on this node (Config.Drain): 200 with the
// state, whether it was draining already or not; 404 when the process has
// no drain.
func (h *Handler) serveDrain(w http.ResponseWriter, r *http.Request) { h.setDrain(w, r, true) }

// serveUndrain takes new sessions again: 200 with the state; 404 as
// serveDrain.
func (h *Handler) serveUndrain(w http.ResponseWriter, r *http.Request) { h.setDrain(w, r, false) }

func (h *Handler) setDrain(w http.ResponseWriter, r *http.Request, on bool) {
	if h.cfg.Drain == nil || h.cfg.Drained == nil {
		writeError(w, http.StatusNotFound, "this bridge cannot drain")
		return
	}
	st := drainState{Changed: h.cfg.Drain(on)}
	if since, ok := h.cfg.Drained(); ok {
		st.Draining, st.Since = true, &since
	}
	if st.Changed {
		h.log.Info("node drain changed through the API", "draining", st.Draining, "peer", r.RemoteAddr)
	}
	writeJSON(w, http.StatusOK, st)
}
