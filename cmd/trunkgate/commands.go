package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"trunkgate/api"
	"trunkgate/internal/textsafe"
	"trunkgate/keys"
	"trunkgate/trunks"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printedJSON finishes a command whose result is err or, with --json, v
// printed as JSON (an empty list as [], never null). It reports whether
// the command is done; if not, the caller prints v as text.
func (cf *clientFlags) printedJSON(v any, err error) (bool, error) {
	if err != nil {
		return true, err
	}
	if !cf.json {
		return false, nil
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		v = []struct{}{}
	}
	return true, printJSON(v)
}

func table() *tabwriter.Writer { return tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0) }

// row writes one table row, each cell made safe for a terminal: names
// and audit details hold what outsiders sent (a Request-URI user with an
// escape sequence is stored as received, and printed escaped).
func row(w io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		io.WriteString(w, textsafe.Terminal(fmt.Sprint(c)))
	}
	io.WriteString(w, "\n")
}

func withBackend(cf *clientFlags, f func(ctx context.Context, b backend) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := cf.open(ctx)
	if err != nil {
		return err
	}
	defer b.Close()
	return f(ctx, b)
}

func noArgs(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %q", args)
	}
	return nil
}

func oneArg(args []string, what string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("want exactly one %s, got %d arguments", what, len(args))
	}
	return args[0], nil
}

// --- keys ---

// limitFlags are the limit flags of keys create and keys set; only the
// flags given are applied.
type limitFlags struct {
	fs        *flag.FlagSet
	channels  int
	cps       float64
	spendCap  int64
	rate      int64
	inRate    int64
	outRate   int64
	maxSecs   int
	allowed   listFlag
	blocked   listFlag
	noAllowed bool
	noBlocked bool
}

// register adds the limit flags, showing def as their defaults (a new
// key's; zero for keys set, which changes only the flags given).
func (l *limitFlags) register(fs *flag.FlagSet, def keys.Limits) {
	l.fs = fs
	fs.IntVar(&l.channels, "max-channels", def.MaxChannels, "concurrent calls (0 = no limit)")
	fs.Float64Var(&l.cps, "cps", def.CPS, "new calls a second (0 = no limit)")
	fs.Int64Var(&l.spendCap, "spend-cap", 0, "monthly spend cap in currency micros (0 = none)")
	fs.Int64Var(&l.rate, "rate", 0, "rate per minute in currency micros, both directions")
	fs.Int64Var(&l.inRate, "inbound-rate", 0, "inbound rate per minute in currency micros")
	fs.Int64Var(&l.outRate, "outbound-rate", 0, "outbound rate per minute in currency micros (numbers in a rate table cost the table's rate)")
	fs.IntVar(&l.maxSecs, "max-call-seconds", def.MaxCallSeconds, "longest call in seconds (0 = no limit)")
	fs.Var(&l.allowed, "allow-prefix", "outbound destination prefix to allow (repeat or comma-separate)")
	fs.Var(&l.blocked, "block-prefix", "outbound destination prefix to block (repeat or comma-separate)")
	fs.BoolVar(&l.noAllowed, "clear-allowed", false, "remove every allowed prefix")
	fs.BoolVar(&l.noBlocked, "clear-blocked", false, "remove every blocked prefix")
}

func (l *limitFlags) patch() keys.LimitsPatch {
	var p keys.LimitsPatch
	l.fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "max-channels":
			p.MaxChannels = &l.channels
		case "cps":
			p.CPS = &l.cps
		case "spend-cap":
			p.MonthlySpendCap = &l.spendCap
		case "rate":
			p.RatePerMinute = &l.rate
		case "inbound-rate":
			p.InboundRate = &l.inRate
		case "outbound-rate":
			p.OutboundRate = &l.outRate
		case "max-call-seconds":
			p.MaxCallSeconds = &l.maxSecs
		case "allow-prefix":
			v := []string(l.allowed)
			p.AllowedPrefixes = &v
		case "block-prefix":
			v := []string(l.blocked)
			p.BlockedPrefixes = &v
		case "clear-allowed":
			p.AllowedPrefixes = &[]string{}
		case "clear-blocked":
			p.BlockedPrefixes = &[]string{}
		}
	})
	return p
}

func runKeys(args []string) error {
	if len(args) == 0 {
		return errors.New("keys: want create, list, show, set, rotate, revoke, alerts or resume")
	}
	var cf clientFlags
	sub, args := args[0], args[1:]
	switch sub {
	case "alerts", "resume":
		return runKeyAlerts(sub, args)
	case "create":
		fs := newFlags("keys create", "keys create --name NAME [--live] [--scopes ...] [limits]")
		cf.register(fs)
		name := fs.String("name", "", "a label for the key")
		live := fs.Bool("live", false, "a live key (reaches carriers); default is a test key")
		var scopes listFlag
		fs.Var(&scopes, "scopes", "scopes: calls:inbound, calls:outbound, usage:read, keys:admin (default calls:inbound,calls:outbound,usage:read)")
		var lf limitFlags
		lf.register(fs, keys.DefaultLimits())
		pos, err := parseFlags(fs, args)
		if err == nil {
			err = noArgs(pos)
		}
		if err != nil {
			return err
		}
		if len(scopes) == 0 {
			scopes = listFlag{"calls:inbound", "calls:outbound", "usage:read"}
		}
		limits, err := lf.patch().Apply(keys.DefaultLimits())
		if err != nil {
			return err
		}
		spec := keys.CreateSpec{Name: *name, Mode: keys.Test, Scopes: scopes, Limits: &limits}
		if *live {
			spec.Mode = keys.Live
		}
		return withBackend(&cf, func(ctx context.Context, b backend) error {
			c, err := b.CreateKey(ctx, spec)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c)
			}
			fmt.Printf("Created key %s (%s). Store the key now: it is shown only once.\n\n  %s\n\nSigning secret for X-Trunkgate-Signature:\n\n  %s\n\n",
				c.Key.ID, c.Key.Mode, c.APIKey, c.SigningSecret)
			return printKey(c.Key)
		})
	case "list":
		fs := newFlags("keys list", "keys list")
		cf.register(fs)
		pos, err := parseFlags(fs, args)
		if err == nil {
			err = noArgs(pos)
		}
		if err != nil {
			return err
		}
		return withBackend(&cf, func(ctx context.Context, b backend) error {
			all, err := b.ListKeys(ctx)
			if done, err := cf.printedJSON(all, err); done {
				return err
			}
			w := table()
			fmt.Fprintln(w, "ID\tNAME\tMODE\tSTATUS\tSCOPES\tCHANNELS\tCPS\tSPEND CAP\tCREATED")
			for _, k := range all {
				row(w, k.ID, k.Name, k.Mode, k.Status, scopeList(k.Scopes), fmt.Sprintf("%d/%d", k.ChannelsInUse, k.Limits.MaxChannels),
					k.Limits.CPS, k.Limits.MonthlySpendCap, k.CreatedAt.Format(time.RFC3339))
			}
			return w.Flush()
		})
	case "show", "set", "rotate", "revoke":
		fs := newFlags("keys "+sub, "keys "+sub+" KEY_ID")
		cf.register(fs)
		var lf limitFlags
		grace := keys.DefaultGrace
		if sub == "set" {
			lf.register(fs, keys.Limits{})
		}
		if sub == "rotate" {
			fs.DurationVar(&grace, "grace", keys.DefaultGrace, "how long the old key keeps working")
		}
		pos, err := parseFlags(fs, args)
		if err != nil {
			return err
		}
		id, err := oneArg(pos, "key id")
		if err != nil {
			return err
		}
		return withBackend(&cf, func(ctx context.Context, b backend) error {
			switch sub {
			case "show":
				k, err := b.GetKey(ctx, id)
				if done, err := cf.printedJSON(k, err); done {
					return err
				}
				return printKey(k)
			case "set":
				p := lf.patch()
				if p.Empty() {
					return errors.New("keys set: give at least one limit flag")
				}
				k, err := b.SetLimits(ctx, id, p)
				if done, err := cf.printedJSON(k, err); done {
					return err
				}
				fmt.Println("Limits changed; they apply to the next call.")
				return printKey(k)
			case "rotate":
				c, err := b.Rotate(ctx, id, grace)
				if done, err := cf.printedJSON(c, err); done {
					return err
				}
				fmt.Printf("Rotated key %s. The new key (shown only once):\n\n  %s\n\nThe old key works until %s.\n",
					id, c.APIKey, c.Key.PrevExpiresAt.Format(time.RFC3339))
				return nil
			default:
				n, err := b.Revoke(ctx, id)
				if err != nil {
					return err
				}
				if cf.json {
					return printJSON(map[string]any{"id": id, "status": "revoked", "live_calls_ended": n})
				}
				fmt.Printf("Revoked key %s; %d live call(s) are being hung up.\n", id, n)
				return nil
			}
		})
	}
	return fmt.Errorf("keys: unknown subcommand %q", sub)
}

func scopeList(s []keys.Scope) string {
	parts := make([]string, len(s))
	for i, x := range s {
		parts[i] = string(x)
	}
	return strings.Join(parts, ",")
}

func printKey(k api.KeyView) error {
	w := table()
	l := k.Limits
	fmt.Fprintf(w, "id\t%s\nname\t%s\nmode\t%s\nstatus\t%s\nscopes\t%s\n", k.ID, textsafe.Terminal(k.Name), k.Mode, k.Status, scopeList(k.Scopes))
	fmt.Fprintf(w, "max_channels\t%d (in use: %d)\ncps\t%g\nmonthly_spend_cap\t%d\ninbound_rate_per_minute\t%d\noutbound_rate_per_minute\t%d\nmax_call_seconds\t%d\n",
		l.MaxChannels, k.ChannelsInUse, l.CPS, l.MonthlySpendCap, l.InboundRate, l.OutboundRate, l.MaxCallSeconds)
	remaining := "no cap"
	if r := k.Spend.Remaining; r != nil {
		remaining = money(*r)
	}
	fmt.Fprintf(w, "spend this month\t%s (live calls: %s)\nremaining under the cap\t%s\n", money(k.Spend.MonthToDate),
		money(k.Spend.Live), remaining)
	if k.Suspended != "" {
		fmt.Fprintf(w, "SUSPENDED\t%s (trunkgate keys resume %s)\n", textsafe.Terminal(k.Suspended), k.ID)
	}
	if a := k.Alerts; a.URL != "" || len(a.Actions) > 0 || len(a.SpendThresholds) > 0 {
		fmt.Fprintf(w, "alerts\t%s thresholds %v actions %v\n", textsafe.Terminal(dash(a.URL)), a.Thresholds(), a.Actions)
	}
	fmt.Fprintf(w, "allowed_prefixes\t%s\nblocked_prefixes\t%s\ncreated\t%s\n", strings.Join(l.AllowedPrefixes, ","),
		strings.Join(l.BlockedPrefixes, ","), k.CreatedAt.Format(time.RFC3339))
	if !k.PrevExpiresAt.IsZero() {
		fmt.Fprintf(w, "previous key valid until\t%s\n", k.PrevExpiresAt.Format(time.RFC3339))
	}
	return w.Flush()
}

// --- trunks ---

func runTrunks(args []string) error {
	if len(args) == 0 {
		return errors.New("trunks: want create, list, show or delete")
	}
	var cf clientFlags
	sub, args := args[0], args[1:]
	fs := newFlags("trunks "+sub, "trunks "+sub)
	cf.register(fs)
	var spec trunks.Spec
	var numbers, sources, params, gateways, headers, passed listFlag
	var outbound bool
	var clientCAFile string
	if sub == "create" {
		fs.StringVar(&spec.KeyID, "key", "", "id of the key that owns the trunk")
		fs.StringVar(&spec.Name, "name", "", "a label")
		fs.BoolVar(&outbound, "outbound", false, "an outbound trunk: the key's calls go out through its gateways")
		fs.Var(&gateways, "gateway", "outbound: carrier gateway sip:HOST[:PORT][;transport=udp|tcp|tls][;priority=N][;weight=N] (repeat; sips:HOST is TLS)")
		fs.StringVar(&spec.AuthUsername, "auth-user", "", "outbound: username for the carrier's digest challenges")
		fs.StringVar(&spec.AuthPassword, "auth-password", "", "outbound: its password (or TRUNKGATE_AUTH_PASSWORD, which stays out of ps)")
		fs.StringVar(&spec.CallerID, "caller-id", "", "outbound: the number every call presents (default: the app's from, if it is one of the key's numbers)")
		fs.IntVar(&spec.MaxChannels, "max-channels", 0, "outbound: the trunk's own channel cap (0 = only the key's)")
		fs.Var(&headers, "header", "outbound: SIP header NAME=VALUE added to every INVITE (repeat)")
		fs.IntVar(&spec.RingTimeoutSeconds, "ring-timeout", 0, "outbound: seconds a call may ring (0 = the edge's --ring-timeout)")
		fs.Var(&numbers, "number", "E.164 number the trunk takes calls for (repeat or comma-separate)")
		fs.StringVar(&spec.AIURL, "ai-url", "", "ws:// or wss:// URL of the AI application")
		fs.Var(&sources, "allow", "source CIDR carriers call from (repeat; 0.0.0.0/0 for any)")
		fs.StringVar(&spec.Format, "format", "twilio", "stream format: twilio (JSON, μ-law) or l16 (binary PCM)")
		fs.IntVar(&spec.SampleRate, "sample-rate", 8000, "L16 sample rate: 8000 or 16000")
		fs.Var(&params, "param", "custom parameter NAME=VALUE for start.customParameters (repeat)")
		fs.StringVar(&spec.DigestUsername, "digest-user", "", "carriers must authenticate INVITEs with SIP digest as this user")
		fs.StringVar(&spec.DigestPassword, "digest-password", "", "digest password (or TRUNKGATE_DIGEST_PASSWORD, which stays out of ps)")
		fs.StringVar(&spec.MediaEncryption, "media-encryption", "off", "SRTP: off, allow (inbound: SRTP when offered) or require (SRTP only; SDES keys only over TLS)")
		fs.StringVar(&clientCAFile, "tls-client-ca", "", "inbound: PEM CA file; carriers must present a client certificate from it over TLS (mutual TLS)")
		fs.Var(&passed, "sip-header", "inbound: an INVITE header the app gets in start.customParameters: X-..., User-to-User, Diversion, P-Asserted-Identity, ... (repeat)")
		fs.BoolVar(&spec.ProtocolExtensions, "extensions", false, "inbound: the app's streams get trunkgate's protocol extensions (mark status, cleared); off, exactly Twilio's messages")
		fs.IntVar(&spec.ResumeGraceSeconds, "resume-grace", 0, "inbound: seconds an answered call waits for its app when the app's socket drops, while the edge redials it (0: hang up at once)")
		fs.StringVar(&spec.TLSClientSubject, "tls-client-subject", "", "inbound: with --tls-client-ca, the common name or DNS name the carrier's certificate must carry")
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	return withBackend(&cf, func(ctx context.Context, b backend) error {
		switch sub {
		case "create":
			spec.Numbers, spec.AllowedSources, spec.SIPHeaders = numbers, sources, passed
			if clientCAFile != "" {
				pem, err := os.ReadFile(clientCAFile)
				if err != nil {
					return fmt.Errorf("--tls-client-ca: %w", err)
				}
				spec.TLSClientCA = string(pem)
			}
			if spec.DigestUsername != "" && spec.DigestPassword == "" {
				spec.DigestPassword = os.Getenv("TRUNKGATE_DIGEST_PASSWORD")
			}
			var err error
			if spec.Params, err = pairs("--param", params); err != nil {
				return err
			}
			for _, g := range gateways {
				spec.Gateways = append(spec.Gateways, trunks.GatewaySpec{URI: g})
			}
			if spec.AuthUsername != "" && spec.AuthPassword == "" {
				spec.AuthPassword = os.Getenv("TRUNKGATE_AUTH_PASSWORD")
			}
			if spec.Headers, err = pairs("--header", headers); err != nil {
				return err
			}
			if len(spec.Headers) == 0 {
				spec.Headers = nil
			}
			if outbound {
				// The stream format is the application's choice per call.
				spec.Direction, spec.Format, spec.SampleRate, spec.Params = trunks.Outbound, "", 0, nil
			}
			t, err := b.CreateTrunk(ctx, spec)
			if done, err := cf.printedJSON(t, err); done {
				return err
			}
			fmt.Printf("Created trunk %s.\n", t.ID)
			return printTrunks([]*trunks.Trunk{t})
		case "list":
			all, err := b.ListTrunks(ctx)
			if done, err := cf.printedJSON(all, err); done {
				return err
			}
			return printTrunks(all)
		case "show", "delete":
			id, err := oneArg(pos, "trunk id")
			if err != nil {
				return err
			}
			if sub == "delete" {
				if err := b.DeleteTrunk(ctx, id); err != nil {
					return err
				}
				fmt.Printf("Deleted trunk %s.\n", id)
				return nil
			}
			t, err := b.GetTrunk(ctx, id)
			if done, err := cf.printedJSON(t, err); done {
				return err
			}
			return printTrunks([]*trunks.Trunk{t})
		}
		return fmt.Errorf("trunks: unknown subcommand %q", sub)
	})
}

// pairs reads repeated NAME=VALUE flags.
func pairs(flagName string, list []string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range list {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("%s %q: want NAME=VALUE", flagName, p)
		}
		out[k] = v
	}
	return out, nil
}

func printTrunks(all []*trunks.Trunk) error {
	var in, out []*trunks.Trunk
	for _, t := range all {
		if t.Direction == trunks.Outbound {
			out = append(out, t)
		} else {
			in = append(in, t)
		}
	}
	if len(in) > 0 || len(out) == 0 {
		if err := printInbound(in); err != nil {
			return err
		}
	}
	if len(out) == 0 {
		return nil
	}
	if len(in) > 0 {
		fmt.Println()
	}
	w := table()
	fmt.Fprintln(w, "ID\tKEY\tOUTBOUND GATEWAYS\tCALLER ID\tCHANNELS\tAUTH USER\tHEADERS\tSRTP")
	for _, t := range out {
		gws := make([]string, len(t.Gateways))
		for i, g := range t.Gateways {
			gws[i] = fmt.Sprintf("%s;priority=%d;weight=%d", g.URI, g.Priority, g.Weight)
		}
		hdrs := make([]string, 0, len(t.Headers))
		for k, v := range t.Headers {
			hdrs = append(hdrs, k+"="+v)
		}
		row(w, t.ID, t.KeyID, strings.Join(gws, " "), dash(t.CallerID), t.MaxChannels, dash(t.AuthUser), dash(strings.Join(hdrs, ",")),
			dash(t.MediaEncryption))
	}
	return w.Flush()
}

// protectionColumn is a call's SIP transport and media encryption,
// e.g. "TLS/srtp".
func protectionColumn(transport, media string) string {
	if transport == "" && media == "" {
		return "-"
	}
	return dash(transport) + "/" + dash(media)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printInbound(all []*trunks.Trunk) error {
	w := table()
	fmt.Fprintln(w, "ID\tKEY\tNUMBERS\tAI URL\tSOURCES\tFORMAT\tDIGEST USER\tSRTP\tCLIENT CERT")
	for _, t := range all {
		src := make([]string, len(t.AllowedSources))
		for i, p := range t.AllowedSources {
			src[i] = p.String()
		}
		digest := t.DigestUser
		if digest == "" {
			digest = "-"
		}
		cert := "-"
		if t.WantsClientCert() {
			cert = "required"
			if t.TLSClientSubject != "" {
				cert = t.TLSClientSubject
			}
		}
		row(w, t.ID, t.KeyID, strings.Join(t.Numbers, ","), t.AIURL, strings.Join(src, ","), fmt.Sprintf("%s/%d", t.Format, t.SampleRate), digest,
			dash(t.MediaEncryption), cert)
	}
	return w.Flush()
}

// --- calls, cdrs, audit ---

func runCalls(args []string) error {
	if len(args) == 0 {
		return errors.New("calls: want list or hangup")
	}
	var cf clientFlags
	sub, args := args[0], args[1:]
	fs := newFlags("calls "+sub, "calls "+sub)
	cf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	return withBackend(&cf, func(ctx context.Context, b backend) error {
		switch sub {
		case "list":
			calls, err := b.ListCalls(ctx)
			if done, err := cf.printedJSON(calls, err); done {
				return err
			}
			w := table()
			fmt.Fprintln(w, "CALL\tNODE\tKEY\tTRUNK\tFROM\tTO\tCODEC\tSIP/MEDIA\tSECONDS\tPKTS IN/OUT\tLOST")
			for _, c := range calls {
				row(w, c.CallID, c.Node, c.KeyID, c.TrunkID, c.From, c.To, c.Codec, protectionColumn(c.Transport, c.MediaEncryption), c.DurationMS/1000,
					fmt.Sprintf("%d/%d", c.Media.PacketsIn, c.Media.PacketsOut), c.Media.PacketsLost)
			}
			return w.Flush()
		case "hangup":
			id, err := oneArg(pos, "call id")
			if err != nil {
				return err
			}
			if err := b.Hangup(ctx, id); err != nil {
				return err
			}
			fmt.Printf("Hanging up %s.\n", id)
			return nil
		}
		return fmt.Errorf("calls: unknown subcommand %q", sub)
	})
}

func runCDRs(args []string) error {
	var cf clientFlags
	fs := newFlags("cdrs", "cdrs [--key ID] [--since TIME] [--limit N] [--json]")
	cf.register(fs)
	keyID := fs.String("key", "", "only this key's calls")
	since := fs.String("since", "", "only calls set up since (RFC 3339 or YYYY-MM-DD)")
	limit := fs.Int("limit", 100, "at most this many, newest first")
	pos, err := parseFlags(fs, args)
	if err == nil {
		err = noArgs(pos)
	}
	if err != nil {
		return err
	}
	q := url.Values{}
	if *keyID != "" {
		q.Set("key_id", *keyID)
	}
	if *since != "" {
		q.Set("since", *since)
	}
	q.Set("limit", strconv.Itoa(*limit))
	return withBackend(&cf, func(ctx context.Context, b backend) error {
		cdrs, err := b.ListCDRs(ctx, q)
		if done, err := cf.printedJSON(cdrs, err); done {
			return err
		}
		w := table()
		fmt.Fprintln(w, "CALL\tKEY\tFROM\tTO\tSETUP (UTC)\tCODE\tDURATION MS\tBILLED S\tCOST µ\tHUNG UP BY\tCAUSE\tSIP/MEDIA")
		for _, c := range cdrs {
			row(w, c.CallID, c.KeyID, c.From, c.To, time.UnixMilli(c.SetupMS).UTC().Format("2006-01-02 15:04:05"), c.FinalCode,
				c.DurationMS, c.BilledSeconds, c.CostMicros, c.HangupSide, c.HangupCause, protectionColumn(c.Transport, c.MediaEncryption))
		}
		return w.Flush()
	})
}

func runAudit(args []string) error {
	var cf clientFlags
	fs := newFlags("audit", "audit [--target ID] [--action NAME] [--limit N] [--json]")
	cf.register(fs)
	target := fs.String("target", "", "only entries about (or by) this key, trunk or call id")
	action := fs.String("action", "", "only this action, e.g. key.revoke or call.refuse")
	limit := fs.Int("limit", 100, "at most this many, newest first")
	pos, err := parseFlags(fs, args)
	if err == nil {
		err = noArgs(pos)
	}
	if err != nil {
		return err
	}
	q := url.Values{}
	if *target != "" {
		q.Set("target", *target)
	}
	if *action != "" {
		q.Set("action", *action)
	}
	q.Set("limit", strconv.Itoa(*limit))
	return withBackend(&cf, func(ctx context.Context, b backend) error {
		entries, err := b.Audit(ctx, q)
		if done, err := cf.printedJSON(entries, err); done {
			return err
		}
		w := table()
		fmt.Fprintln(w, "TIME (UTC)\tACTOR\tACTION\tTARGET\tOUTCOME\tDETAIL\tSOURCE")
		for _, e := range entries {
			row(w, e.At.UTC().Format("2006-01-02 15:04:05.000"), e.Actor, e.Action, e.Target, e.Outcome, e.Detail, e.Source)
		}
		return w.Flush()
	})
}
