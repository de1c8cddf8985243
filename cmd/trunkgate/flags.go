package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// newFlags makes a flag set whose flags default to TRUNKGATE_* variables.
func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: trunkgate %s\n\nFlags (each also read from TRUNKGATE_<FLAG>):\n", synopsis)
		fs.PrintDefaults()
		printExample(fs.Output(), name)
	}
	return fs
}

func envName(flagName string) string {
	return "TRUNKGATE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses flags given before or after positional arguments
// ("keys set ID --max-channels 2"), then fills flags not given from their
// TRUNKGATE_* variables. It returns the positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, e)
			}
		}
	})
	return positional, err
}

// listFlag collects repeated or comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}

// defaultList is a list flag with a default that a first -flag (or its
// environment variable) replaces rather than extends.
type defaultList struct {
	vals []string
	set  bool
}

func (l *defaultList) String() string { return strings.Join(l.vals, ",") }

func (l *defaultList) Set(v string) error {
	if !l.set {
		l.vals, l.set = nil, true
	}
	return (*listFlag)(&l.vals).Set(v)
}
