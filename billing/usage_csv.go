package billing

import (
	"encoding/csv"
	"io"
	"strconv"
)

// UsageCSV writes a report as CSV as its rows come: a header naming the
// report's dimensions (period first) and the sums, then one line a row.
// REST and the CLI's --db mode both write with it.
type UsageCSV struct {
	w   *csv.Writer
	q   UsageQuery
	n   int
	rec []string
}

// Every usageCSVFlushEvery lines the writer hands what it has on (an
// HTTP response sends it as a chunk).
const usageCSVFlushEvery = 500

// NewUsageCSV writes the header for q.
func NewUsageCSV(w io.Writer, q UsageQuery) (*UsageCSV, error) {
	c := &UsageCSV{w: csv.NewWriter(w), q: q}
	var head []string
	if p := q.period(); p != "" {
		head = append(head, p)
	}
	for _, d := range q.By {
		switch d {
		case ByKey:
			head = append(head, "key_id")
		case ByTrunk:
			head = append(head, "trunk_id")
		case ByDirection, ByPrefix, ByCountry:
			head = append(head, d)
		}
	}
	head = append(head, "calls", "answered", "billed_seconds", "cost_micros", "avg_cost_micros")
	return c, c.w.Write(head)
}

// Row writes one row.
func (c *UsageCSV) Row(r UsageRow) error {
	c.rec = c.rec[:0]
	if c.q.period() != "" {
		c.rec = append(c.rec, r.Period)
	}
	for _, d := range c.q.By {
		switch d {
		case ByKey:
			c.rec = append(c.rec, r.KeyID)
		case ByTrunk:
			c.rec = append(c.rec, r.TrunkID)
		case ByDirection:
			c.rec = append(c.rec, r.Direction)
		case ByPrefix:
			c.rec = append(c.rec, r.Prefix)
		case ByCountry:
			c.rec = append(c.rec, r.Country)
		}
	}
	for _, v := range []int64{r.Calls, r.Answered, r.BilledSeconds, r.CostMicros, r.AvgCostMicros} {
		c.rec = append(c.rec, strconv.FormatInt(v, 10))
	}
	if err := c.w.Write(c.rec); err != nil {
		return err
	}
	if c.n++; c.n%usageCSVFlushEvery == 0 {
		c.w.Flush()
	}
	return c.w.Error()
}

// Close flushes what is left.
func (c *UsageCSV) Close() error {
	c.w.Flush()
	return c.w.Error()
}
