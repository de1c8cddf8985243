package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"trunkgate/api"
	"trunkgate/billing"
)

// runUsage prints a usage report: a table, JSON, or CSV streamed as it
// is read.
func runUsage(args []string) error {
	var cf clientFlags
	fs := newFlags("usage", "usage [--key ID] [--month YYYY-MM | --day YYYY-MM-DD | --since T --until T] [--by day,trunk] [--tz ZONE] [--csv|--json]")
	cf.register(fs)
	keyID := fs.String("key", "", "only this key's usage (default: every key)")
	month := fs.String("month", "", "the month, YYYY-MM (default: this month)")
	day := fs.String("day", "", "one day, YYYY-MM-DD")
	since := fs.String("since", "", "from (RFC 3339 or YYYY-MM-DD, inclusive)")
	until := fs.String("until", "", "to (RFC 3339 or YYYY-MM-DD, exclusive; default now)")
	by := fs.String("by", "", "group by, comma-separated: key, trunk, direction, prefix, country, and one of hour, day, month")
	tz := fs.String("tz", "", "time zone of days and months, e.g. Europe/Paris (default UTC)")
	asCSV := fs.Bool("csv", false, "print CSV")
	pos, err := parseFlags(fs, args)
	if err == nil {
		err = noArgs(pos)
	}
	if err != nil {
		return err
	}
	if *asCSV && cf.json {
		return errors.New("usage: --csv or --json, not both")
	}
	q := url.Values{}
	for name, v := range map[string]string{"key_id": *keyID, "month": *month, "day": *day, "since": *since, "until": *until,
		"by": *by, "tz": *tz} {
		if v != "" {
			q.Set(name, v)
		}
	}
	return withBackend(&cf, func(ctx context.Context, b backend) error {
		if *asCSV {
			_, err := b.Usage(ctx, q, os.Stdout)
			return err
		}
		rep, err := b.Usage(ctx, q, nil)
		if done, err := cf.printedJSON(rep, err); done {
			return err
		}
		return printUsage(rep)
	})
}

func printUsage(rep *api.UsageReport) error {
	fmt.Printf("Usage %s to %s (%s)", rep.Since.Format("2006-01-02 15:04"), rep.Until.Format("2006-01-02 15:04"), rep.TZ)
	if rep.KeyID != "" {
		fmt.Printf(", key %s", rep.KeyID)
	}
	fmt.Println()
	w := table()
	var head []string
	period := ""
	for _, d := range rep.By {
		switch d {
		case "hour", "day", "month":
			period = d
		}
	}
	if period != "" {
		head = append(head, strings.ToUpper(period))
	}
	for _, d := range rep.By {
		if d != period {
			head = append(head, strings.ToUpper(d))
		}
	}
	head = append(head, "CALLS", "ANSWERED", "BILLED S", "COST", "AVG COST")
	fmt.Fprintln(w, strings.Join(head, "\t"))
	line := func(cells []any, r billing.UsageRow) {
		row(w, append(cells, r.Calls, r.Answered, r.BilledSeconds, money(r.CostMicros), money(r.AvgCostMicros))...)
	}
	for _, r := range rep.Rows {
		var cells []any
		if period != "" {
			cells = append(cells, r.Period)
		}
		for _, d := range rep.By {
			switch d {
			case "key":
				cells = append(cells, r.KeyID)
			case "trunk":
				cells = append(cells, r.TrunkID)
			case "direction":
				cells = append(cells, r.Direction)
			case "prefix":
				cells = append(cells, r.Prefix)
			case "country":
				cells = append(cells, r.Country)
			}
		}
		line(cells, r)
	}
	blank := make([]any, len(head)-5)
	for i := range blank {
		blank[i] = ""
	}
	if len(blank) > 0 {
		blank[0] = "TOTAL"
	}
	line(blank, rep.Totals)
	return w.Flush()
}
