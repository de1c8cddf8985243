package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"trunkgate/billing"
	"trunkgate/keys"
)

// UsageQueryFrom reads a usage report request, the same for REST and the
// CLI: key_id, a range (month=YYYY-MM, day=YYYY-MM-DD, or since and
// until; default: this month), by=day,trunk,... and tz (default UTC).
func UsageQueryFrom(v url.Values, now time.Time) (billing.UsageQuery, error) {
	q := billing.UsageQuery{KeyID: v.Get("key_id"), By: billing.ParseDims(v.Get("by")), TZ: time.UTC}
	if name := v.Get("tz"); name != "" {
		tz, err := time.LoadLocation(name)
		if err != nil {
			return q, fmt.Errorf("%w: tz %q: want an IANA time zone such as Europe/Paris", billing.ErrInvalidQuery, name)
		}
		q.TZ = tz
	}
	var err error
	switch {
	case v.Get("month") != "":
		q.Since, q.Until, err = billing.MonthRange(v.Get("month"), q.TZ)
	case v.Get("day") != "":
		q.Since, q.Until, err = billing.DayRange(v.Get("day"), q.TZ)
	case v.Get("since") != "" || v.Get("until") != "":
		if q.Since, err = parseWhen(v.Get("since"), q.TZ); err == nil {
			q.Until, err = parseWhen(v.Get("until"), q.TZ)
		}
		if err == nil && v.Get("until") == "" {
			q.Until = now
		}
	default:
		q.Since, q.Until, err = billing.MonthRange(now.In(q.TZ).Format("2006-01"), q.TZ)
	}
	if err != nil {
		return q, err
	}
	return q, q.Validate()
}

// parseWhen reads an RFC 3339 time, or a date (midnight in tz).
func parseWhen(s string, tz *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02", s, tz); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%w: %q: want an RFC 3339 time or YYYY-MM-DD", billing.ErrInvalidQuery, s)
}

// UsageReport is the JSON form of a report.
type UsageReport struct {
	usageHead
	Rows   []billing.UsageRow `json:"rows"`
	Totals billing.UsageRow   `json:"totals"`
}

// usageHead is what a report says of itself before its rows.
type usageHead struct {
	KeyID string    `json:"key_id,omitempty"`
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	TZ    string    `json:"tz"`
	By    []string  `json:"by"`
}

// usage answers GET /v1/usage as JSON or, with format=csv, CSV; both are
// written as the rows come. A key without keys:admin sees its own usage
// only.
func (a *API) usage(w http.ResponseWriter, r *http.Request, p principal) {
	q, err := UsageQueryFrom(r.URL.Query(), time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if !p.key.HasScope(keys.ScopeKeysAdmin) {
		if q.KeyID != "" && q.KeyID != p.key.ID {
			writeError(w, http.StatusForbidden, "forbidden", "a key without keys:admin sees only its own usage")
			return
		}
		q.KeyID = p.key.ID
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "json" && format != "csv" {
		writeError(w, http.StatusBadRequest, "bad_request", "format: want json or csv")
		return
	}
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="usage.csv"`)
		out, err := billing.NewUsageCSV(w, q)
		if err == nil {
			if _, err = billing.Report(r.Context(), a.cfg.Usage, q, out.Row); err == nil {
				err = out.Close()
			}
		}
		a.streamFailed(r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	by := q.By
	if by == nil {
		by = []string{}
	}
	head, _ := json.Marshal(usageHead{KeyID: q.KeyID, Since: q.Since, Until: q.Until, TZ: q.TZ.String(), By: by})
	// The report's head (its closing brace left off), its rows one by one,
	// then the totals.
	fmt.Fprintf(w, "%s,\"rows\":[", head[:len(head)-1])
	n := 0
	enc := json.NewEncoder(w)
	totals, err := billing.Report(r.Context(), a.cfg.Usage, q, func(row billing.UsageRow) error {
		if n > 0 {
			if _, err := w.Write([]byte(",")); err != nil {
				return err
			}
		}
		n++
		return enc.Encode(row)
	})
	if err == nil {
		t, _ := json.Marshal(totals)
		_, err = fmt.Fprintf(w, "],\"totals\":%s}\n", t)
	}
	a.streamFailed(r, err)
}

// streamFailed ends a response that failed after its status was sent:
// the client must see a broken response, not a short report.
func (a *API) streamFailed(r *http.Request, err error) {
	if err == nil || errors.Is(err, r.Context().Err()) {
		return
	}
	a.cfg.Log.Error("usage report failed mid-stream", "error", err)
	panic(http.ErrAbortHandler)
}
