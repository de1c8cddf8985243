// Command trunkgate is the SIP trunking edge for voice AI: `serve` runs the
// edge; `keys`, `trunks`, `calls`, `cdrs` and `audit` operate it through
// its REST API (or the database directly with --db).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

const usage = `trunkgate — SIP trunking edge for voice AI

Usage:
  trunkgate serve [flags]                 run the edge (SIP, RTP, WebSocket, REST)
  trunkgate keys create|list|show|set|rotate|revoke|alerts|resume ...
  trunkgate trunks create|list|show|delete ...
  trunkgate calls list|hangup ...
  trunkgate call --to +E164 [--key KEY]   place an outbound call from the terminal (a test key reaches the sandbox)
  trunkgate cdrs [flags]                  list call detail records
  trunkgate audit [flags]                 list the audit log
  trunkgate rates list|set|delete|import  destination rate tables (the edge's, or a key's with --key)
  trunkgate usage [flags]                 usage report: calls, seconds, cost by key, trunk, prefix, day... (--csv)
  trunkgate alerts list [flags]           alerts that fired (spend thresholds, spikes, new or blocked destinations)
  trunkgate echo-app [--addr HOST:PORT]   run the demo echo AI app on its own
  trunkgate version                       the build's version

Every flag has a TRUNKGATE_* environment variable (--sip-addr: TRUNKGATE_SIP_ADDR).
Operator commands talk to --server with the key in TRUNKGATE_ADMIN_KEY,
or, with --db PATH, to the database directly (for when the edge is down).
Run "trunkgate <command> -h" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	if help, ok := groupHelp[os.Args[1]]; ok && (len(args) == 0 || isHelp(args[0])) {
		if len(args) == 0 {
			fmt.Fprint(os.Stderr, help)
			os.Exit(2)
		}
		fmt.Print(help)
		return
	}
	switch os.Args[1] {
	case "serve":
		err = runServe(args)
	case "keys":
		err = runKeys(args)
	case "trunks":
		err = runTrunks(args)
	case "calls":
		err = runCalls(args)
	case "call":
		err = runCall(args)
	case "cdrs":
		err = runCDRs(args)
	case "audit":
		err = runAudit(args)
	case "rates":
		err = runRates(args)
	case "usage":
		err = runUsage(args)
	case "alerts":
		err = runAlerts(args)
	case "echo-app":
		err = runEchoApp(args)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	case "version", "--version":
		fmt.Println(versionString())
		return
	default:
		fmt.Fprintf(os.Stderr, "trunkgate: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the flags were printed
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "trunkgate:", err)
		os.Exit(1)
	}
}
