package api

import (
	"errors"
	"net/http"

	"trunkgate/billing"
)

// Destination rate tables: the edge's (no key_id) and each key's.

// keyScope reads ?key_id= (empty: the edge's table) and checks the key
// exists.
func (a *API) keyScope(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.URL.Query().Get("key_id")
	if id == "" {
		return "", true
	}
	if _, err := a.cfg.Keys.Get(r.Context(), id); err != nil {
		a.fail(w, err)
		return "", false
	}
	return id, true
}

func (a *API) listRates(w http.ResponseWriter, r *http.Request, p principal) {
	keyID, ok := a.keyScope(w, r)
	if !ok {
		return
	}
	rows, err := a.cfg.Rates.List(r.Context(), keyID)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"rates": rows})
}

func (a *API) putRate(w http.ResponseWriter, r *http.Request, p principal) {
	var row billing.Rate
	if !decode(w, r, &row) {
		return
	}
	if row.KeyID != "" {
		if _, err := a.cfg.Keys.Get(r.Context(), row.KeyID); err != nil {
			a.fail(w, err)
			return
		}
	}
	row, err := a.cfg.Rates.Put(r.Context(), p.actor(), row)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, row)
}

func (a *API) deleteRate(w http.ResponseWriter, r *http.Request, p principal) {
	keyID, ok := a.keyScope(w, r)
	if !ok {
		return
	}
	found, err := a.cfg.Rates.Delete(r.Context(), p.actor(), keyID, r.PathValue("prefix"))
	switch {
	case err != nil:
		a.fail(w, err)
	case !found:
		writeError(w, http.StatusNotFound, "not_found", "no rate for that prefix")
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// maxDeck bounds an uploaded rate deck.
const maxDeck = 32 << 20

// DeckRefused is the answer to a rate deck with bad lines.
type DeckRefused struct {
	ErrorBody
	Lines []billing.LineError `json:"lines"`
}

// importRates replaces a table with a CSV rate deck (the request body).
func (a *API) importRates(w http.ResponseWriter, r *http.Request, p principal) {
	keyID, ok := a.keyScope(w, r)
	if !ok {
		return
	}
	n, err := a.cfg.Rates.Import(r.Context(), p.actor(), keyID, http.MaxBytesReader(w, r.Body, maxDeck))
	var deck *billing.DeckError
	if errors.As(err, &deck) {
		var body DeckRefused
		body.Error.Code, body.Error.Message, body.Lines = "invalid", err.Error(), deck.Lines
		writeJSON(w, http.StatusBadRequest, body)
		return
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"imported": n})
}
