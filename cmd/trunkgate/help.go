package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// version is set at build time (make build: -ldflags "-X main.version=…");
// otherwise the module version or the VCS revision Go recorded.
var version = ""

// versionString is what `trunkgate version` prints.
func versionString() string {
	v, rev, dirty := version, "", false
	goVersion := ""
	if info, ok := debug.ReadBuildInfo(); ok {
		goVersion = info.GoVersion
		if v == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	if rev != "" {
		return fmt.Sprintf("trunkgate %s (%s, %s)", v, rev, goVersion)
	}
	return fmt.Sprintf("trunkgate %s (%s)", v, goVersion)
}

// groupHelp is the help of each command that has subcommands: what each
// does, and an example.
var groupHelp = map[string]string{
	"keys": `Usage: trunkgate keys create|list|show|set|rotate|revoke|alerts|resume [flags]

  create   make a key (test unless --live); its text is shown once
  list     every key with its status, limits and channels in use
  show     one key
  set      change a key's limits (effective at the next call)
  rotate   new text for a key; the old one works for --grace
  revoke   end a key: refused at once, its live calls hung up within a second
  alerts   a key's alert rules (spend thresholds, spikes, destinations)
  resume   lift an alert's suspension

Examples:
  trunkgate keys create --name acme --live --max-channels 20 --cps 5 --spend-cap 50000000
  trunkgate keys set KEY_ID --max-channels 30
  trunkgate keys rotate KEY_ID --grace 24h
  trunkgate keys revoke KEY_ID

Run "trunkgate keys SUBCOMMAND -h" for its flags.
`,
	"trunks": `Usage: trunkgate trunks create|list|show|delete [flags]

  create   an inbound trunk (numbers → AI app) or, with --outbound, carrier gateways
  list     every trunk
  show     one trunk
  delete   remove a trunk

Examples:
  trunkgate trunks create --key KEY_ID --number +15550123 --ai-url wss://agent.example/stream --allow 198.51.100.0/24
  trunkgate trunks create --outbound --key KEY_ID --gateway 'sip:gw.carrier.example;transport=tls' --caller-id +15550123

Run "trunkgate trunks create -h" for its flags.
`,
	"calls": `Usage: trunkgate calls list|hangup [flags]

  list     live calls on every edge
  hangup   end a live call (BYE, CDR written)

Examples:
  trunkgate calls list
  trunkgate calls hangup CALL_ID
`,
	"rates": `Usage: trunkgate rates list|set|delete|import [--key ID] ...

  list     the edge's destination rates (or a key's, with --key)
  set      one prefix's rate per minute, in currency micros
  delete   remove a prefix
  import   a CSV of prefix,rate

Examples:
  trunkgate rates set --prefix +44 --rate 0.009 --description UK
  trunkgate rates import --key KEY_ID --file rates.csv
`,
	"alerts": `Usage: trunkgate alerts list [--key ID] [--rule RULE] [--limit N]

  list     alerts that fired (configure them with: trunkgate keys alerts KEY_ID ...)

Example:
  trunkgate alerts list --key KEY_ID
`,
}

// commandExamples are added to each command's flag help.
var commandExamples = map[string]string{
	"serve":         "trunkgate serve --demo\n  trunkgate serve --sip-addr 0.0.0.0:5060 --public-ip 203.0.113.10 --tls-cert edge.pem --tls-key edge.key",
	"keys create":   "trunkgate keys create --name acme --live --max-channels 20 --cps 5 --rate 12000 --spend-cap 50000000",
	"keys list":     "trunkgate keys list --json",
	"keys show":     "trunkgate keys show KEY_ID",
	"keys set":      "trunkgate keys set KEY_ID --max-channels 30 --block-prefix +44",
	"keys rotate":   "trunkgate keys rotate KEY_ID --grace 24h",
	"keys revoke":   "trunkgate keys revoke KEY_ID",
	"keys alerts":   "trunkgate keys alerts KEY_ID --url https://ops.example/hook --thresholds 50,80,100 --action spend=suspend",
	"keys resume":   "trunkgate keys resume KEY_ID",
	"trunks create": "trunkgate trunks create --key KEY_ID --number +15550123 --ai-url wss://agent.example/stream --allow 198.51.100.0/24 --media-encryption allow",
	"trunks list":   "trunkgate trunks list",
	"trunks show":   "trunkgate trunks show TRUNK_ID",
	"trunks delete": "trunkgate trunks delete TRUNK_ID",
	"calls list":    "trunkgate calls list",
	"calls hangup":  "trunkgate calls hangup CALL_ID",
	"call":          "trunkgate call --key tg_test_... --to +15005550006 --seconds 5",
	"cdrs":          "trunkgate cdrs --key KEY_ID --since 2026-11-01 --json",
	"audit":         "trunkgate audit --target KEY_ID --limit 20",
	"rates list":    "trunkgate rates list --key KEY_ID",
	"rates set":     "trunkgate rates set --prefix +44 --rate 0.009 --description UK",
	"rates delete":  "trunkgate rates delete --prefix +44",
	"rates import":  "trunkgate rates import --file rates.csv",
	"usage":         "trunkgate usage --month 2026-11 --by day,trunk --csv",
	"alerts list":   "trunkgate alerts list --key KEY_ID",
	"echo-app":      "trunkgate echo-app --addr 127.0.0.1:9090",
}

// printExample writes a command's example after its flags.
func printExample(w io.Writer, name string) {
	if ex, ok := commandExamples[name]; ok {
		fmt.Fprintf(w, "\nExample:\n  %s\n", ex)
	}
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch strings.TrimLeft(arg, "-") {
	case "h", "help":
		return true
	}
	return false
}
