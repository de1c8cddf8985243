package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"trunkgate/billing"
)

// runRates manages destination rate tables: the edge's, or a key's with
// --key.
func runRates(args []string) error {
	if len(args) == 0 {
		return errors.New("rates: want list, set, delete or import")
	}
	var cf clientFlags
	sub, args := args[0], args[1:]
	fs := newFlags("rates "+sub, "rates list|set|delete|import [--key ID] ...")
	cf.register(fs)
	keyID := fs.String("key", "", "the key's own table (default: the edge's)")
	prefix := fs.String("prefix", "", "set, delete: the destination prefix, e.g. +44 or +4420")
	rate := fs.String("rate", "", "set: the price of a minute, a decimal in the currency (0.012)")
	micros := fs.Int64("rate-micros", -1, "set: the price of a minute in currency micros (12000)")
	desc := fs.String("description", "", "set: what the prefix is, e.g. UK London")
	file := fs.String("file", "", "import: the CSV rate deck (- for stdin); it replaces the whole table")
	pos, err := parseFlags(fs, args)
	if err == nil {
		err = noArgs(pos)
	}
	if err != nil {
		return err
	}
	return withBackend(&cf, func(ctx context.Context, b backend) error {
		switch sub {
		case "list":
			rows, err := b.ListRates(ctx, *keyID)
			if done, err := cf.printedJSON(rows, err); done {
				return err
			}
			w := table()
			fmt.Fprintln(w, "PREFIX\tRATE/MIN\tMICROS/MIN\tDESCRIPTION")
			for _, r := range rows {
				row(w, r.Prefix, money(r.PerMinute), r.PerMinute, r.Description)
			}
			return w.Flush()
		case "set":
			r := billing.Rate{KeyID: *keyID, Prefix: *prefix, PerMinute: *micros, Description: *desc}
			switch {
			case *rate != "" && *micros >= 0:
				return errors.New("rates set: give --rate or --rate-micros, not both")
			case *rate != "":
				if r.PerMinute, err = billing.ParseMoney(*rate); err != nil {
					return err
				}
			case *micros < 0:
				return errors.New("rates set: --rate or --rate-micros is required")
			}
			r, err := b.PutRate(ctx, r)
			if done, err := cf.printedJSON(r, err); done {
				return err
			}
			fmt.Printf("%s now costs %s a minute.\n", r.Prefix, money(r.PerMinute))
			return nil
		case "delete":
			if err := b.DeleteRate(ctx, *keyID, *prefix); err != nil {
				return err
			}
			fmt.Printf("Rate for %s deleted.\n", *prefix)
			return nil
		case "import":
			in := os.Stdin
			if *file != "-" {
				if *file == "" {
					return errors.New("rates import: --file is required (- for stdin)")
				}
				if in, err = os.Open(*file); err != nil {
					return err
				}
				defer in.Close()
			}
			n, err := b.ImportRates(ctx, *keyID, in)
			var deck *billing.DeckError
			if errors.As(err, &deck) {
				for _, l := range deck.Lines {
					fmt.Fprintf(os.Stderr, "%s:%d: %s\n", *file, l.Line, l.Error)
				}
				return fmt.Errorf("rate deck refused, nothing imported: %d bad line(s)", len(deck.Lines))
			}
			if err != nil {
				return err
			}
			fmt.Printf("Imported %d rates.\n", n)
			return nil
		}
		return fmt.Errorf("rates: unknown subcommand %q", sub)
	})
}

// money prints currency micros as a decimal amount: 12000 → 0.012000.
func money(micros int64) string {
	sign := ""
	if micros < 0 {
		sign, micros = "-", -micros
	}
	return fmt.Sprintf("%s%d.%06d", sign, micros/1_000_000, micros%1_000_000)
}
