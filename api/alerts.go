package api

import (
	"context"
	"net/http"
	"strconv"

	"trunkgate/alerts"
	"trunkgate/keys"
)

// AlertList lists alerts that fired (alerts.SQLStore).
type AlertList interface {
	List(ctx context.Context, f alerts.Filter) ([]alerts.Alert, error)
}

func (a *API) setAlerts(w http.ResponseWriter, r *http.Request, p principal) {
	var c keys.AlertConfig
	if !decode(w, r, &c) {
		return
	}
	k, err := a.cfg.Keys.SetAlerts(r.Context(), p.actor(), r.PathValue("id"), c)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, a.view(k))
}

// resumeKey lifts an alert's suspension.
func (a *API) resumeKey(w http.ResponseWriter, r *http.Request, p principal) {
	k, err := a.cfg.Keys.Resume(r.Context(), p.actor(), r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, a.view(k))
}

func (a *API) listAlerts(w http.ResponseWriter, r *http.Request, p principal) {
	f := alerts.Filter{KeyID: r.URL.Query().Get("key_id"), Rule: r.URL.Query().Get("rule")}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "bad_request", "limit: want 1 to 10000")
			return
		}
		f.Limit = n
	}
	list, err := a.cfg.Alerts.List(r.Context(), f)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"alerts": list})
}
