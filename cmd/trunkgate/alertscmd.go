package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"trunkgate/alerts"
	"trunkgate/keys"
)

// runAlerts lists the alerts that fired.
func runAlerts(args []string) error {
	if len(args) == 0 || args[0] != "list" {
		return errors.New("alerts: want list (configure a key's alerts with: trunkgate keys alerts KEY_ID ...)")
	}
	var cf clientFlags
	fs := newFlags("alerts list", "alerts list [--key ID] [--rule RULE] [--limit N]")
	cf.register(fs)
	keyID := fs.String("key", "", "only this key's alerts")
	rule := fs.String("rule", "", "only this rule: "+strings.Join(keys.Rules, ", "))
	limit := fs.Int("limit", 100, "at most this many, newest first")
	pos, err := parseFlags(fs, args[1:])
	if err == nil {
		err = noArgs(pos)
	}
	if err != nil {
		return err
	}
	return withBackend(&cf, func(ctx context.Context, b backend) error {
		list, err := b.ListAlerts(ctx, alerts.Filter{KeyID: *keyID, Rule: *rule, Limit: *limit})
		if done, err := cf.printedJSON(list, err); done {
			return err
		}
		w := table()
		fmt.Fprintln(w, "ID\tFIRED (UTC)\tKEY\tRULE\tPERIOD\tACTION\tWEBHOOK\tDETAIL")
		for _, a := range list {
			hook := a.Delivery
			if a.Attempts > 0 {
				hook += " (" + strconv.Itoa(a.Attempts) + ")"
			}
			row(w, a.ID, a.FiredAt.Format("2006-01-02 15:04:05"), a.KeyID, a.Rule, a.Period, a.Action, hook, a.Detail)
		}
		return w.Flush()
	})
}

// runKeyAlerts configures a key's alerts (keys alerts) or lifts an
// alert's suspension (keys resume).
func runKeyAlerts(sub string, args []string) error {
	var cf clientFlags
	fs := newFlags("keys "+sub, "keys "+sub+" KEY_ID")
	cf.register(fs)
	var c keys.AlertConfig
	var thresholds string
	var actions listFlag
	if sub == "alerts" {
		fs.StringVar(&c.URL, "url", "", "where alerts are POSTed (signed with the key's signing secret)")
		fs.StringVar(&thresholds, "thresholds", "", "spend thresholds, percent of the cap (default 80,100)")
		fs.Var(&actions, "action", "RULE=ACTION (notify, suspend, off); rules: "+strings.Join(keys.Rules, ", ")+" (repeat)")
		fs.Float64Var(&c.RateFactor, "rate-factor", 0, "a call-rate spike is this many times the key's 7-day average (default 5)")
		fs.IntVar(&c.RateFloor, "rate-floor", 0, "and at least this many calls in 10 minutes (default 30)")
		fs.Float64Var(&c.ConcurrencyFactor, "concurrency-factor", 0, "a concurrency spike is this many times the average (default 5)")
		fs.IntVar(&c.ConcurrencyFloor, "concurrency-floor", 0, "and at least this many live calls (default 10)")
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	id, err := oneArg(pos, "key id")
	if err != nil {
		return err
	}
	for _, t := range strings.FieldsFunc(thresholds, func(r rune) bool { return r == ',' }) {
		n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(t, "%")))
		if err != nil {
			return fmt.Errorf("--thresholds %q: want percentages such as 80,100", thresholds)
		}
		c.SpendThresholds = append(c.SpendThresholds, n)
	}
	if len(actions) > 0 {
		if c.Actions, err = pairs("--action", actions); err != nil {
			return err
		}
	}
	return withBackend(&cf, func(ctx context.Context, b backend) error {
		if sub == "resume" {
			k, err := b.Resume(ctx, id)
			if done, err := cf.printedJSON(k, err); done {
				return err
			}
			fmt.Printf("Key %s takes calls again.\n", id)
			return nil
		}
		k, err := b.SetAlerts(ctx, id, c)
		if done, err := cf.printedJSON(k, err); done {
			return err
		}
		fmt.Printf("Alerts of key %s set.\n", id)
		return nil
	})
}
