package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"trunkgate/alerts"

	"trunkgate/api"
	"trunkgate/bridge"
	"trunkgate/call"
	"trunkgate/console"
	"trunkgate/flood"
	"trunkgate/internal/tlsconf"
	"trunkgate/keys"
	"trunkgate/ledger"
	"trunkgate/media"
	"trunkgate/metrics"
	"trunkgate/refusal"
	"trunkgate/sandbox"
	"trunkgate/sip"
	"trunkgate/trunks"
)

type serveConfig struct {
	sipAddr, httpAddr, rtpPorts, publicIP, dbPath                        string
	demo, resumeHoldTone                                                 bool
	demoNumber                                                           string
	rtpTimeout, drainTimeout, dialTimeout, appPing, appStats, firstAudio time.Duration
	checkpoint, nodeTimeout                                              time.Duration
	ringTimeout, probeInterval, gatewayTimeout                           time.Duration
	blockedPrefixes                                                      defaultList
	serverHeader, node                                                   string
	unknownSource                                                        string
	floodRequests                                                        int
	floodWindow, floodBan, sipTCPIdle, alertCheck                        time.Duration
	floodAction                                                          string
	floodExempt                                                          listFlag
	logLevel, logFormat                                                  string
	debugAddr                                                            string
	tlsCert, tlsKey, tlsCA, sipTLSAddr                                   string
	httpAllowPlain                                                       bool
}

func runServe(args []string) error {
	var c serveConfig
	fs := newFlags("serve", "serve [flags]")
	fs.StringVar(&c.sipAddr, "sip-addr", "127.0.0.1:5060", "SIP listen address, UDP and TCP (host:port)")
	fs.StringVar(&c.httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address: REST API, metrics, WebSocket")
	fs.StringVar(&c.rtpPorts, "rtp-ports", "10000-20000", "RTP port range (even ports; RTCP on port+1)")
	fs.StringVar(&c.publicIP, "public-ip", "", "address carriers reach the edge at, put in SDP and Contact (default: the SIP host, or 127.0.0.1)")
	fs.StringVar(&c.dbPath, "db", "data/trunkgate.db", "the database: a SQLite file, or postgres://user@host/db for several edges sharing one PostgreSQL")
	fs.BoolVar(&c.demo, "demo", false, "seed a demo test key and trunk pointed at the built-in echo app")
	fs.StringVar(&c.demoNumber, "demo-number", "+15550100", "the demo trunk's number")
	fs.DurationVar(&c.rtpTimeout, "rtp-timeout", 30*time.Second, "hang up a call when no RTP arrives for this long")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, how long live calls may go on before the edge hangs them up")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 5*time.Second, "how long to wait for an AI application's WebSocket handshake")
	fs.DurationVar(&c.firstAudio, "app-first-audio", 0, "hang up a call whose app has sent no audio this long after the answer (0 = no deadline)")
	fs.DurationVar(&c.appStats, "app-stats-interval", 5*time.Second, "how often apps that opted in to the protocol extensions get a stats event (0 = never)")
	fs.BoolVar(&c.resumeHoldTone, "resume-hold-tone", false, "while a call waits for its app to resume a dropped stream (a trunk's resume grace), the caller hears a 425 Hz beep every 2 s instead of silence")
	fs.DurationVar(&c.appPing, "app-ping", 10*time.Second, "WebSocket ping interval toward AI applications; an app that does not answer within it is hung up (0 = no pings)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate chain: SIP over TLS, and HTTPS and WSS for the REST API, console and /v1/calls/stream (reloaded on SIGHUP)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.BoolVar(&c.httpAllowPlain, "http-allow-plain", false, "serve plain HTTP on an address that is not loopback (keys would cross the network in clear)")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM CA bundle that carrier gateways (SIP over TLS) and AI applications (wss://) are verified against (default: the system's roots)")
	fs.StringVar(&c.sipTLSAddr, "sip-tls-addr", "", "SIP over TLS listen address (default with --tls-cert: the --sip-addr host, port 5061; \"off\" for none)")
	fs.DurationVar(&c.checkpoint, "checkpoint-interval", 5*time.Second, "how often live calls are checkpointed for crash recovery")
	fs.DurationVar(&c.ringTimeout, "ring-timeout", 30*time.Second, "how long an outbound call may ring (trunks may set their own)")
	fs.DurationVar(&c.probeInterval, "gateway-probe-interval", 10*time.Second, "how often a gateway marked down is asked with OPTIONS")
	fs.DurationVar(&c.gatewayTimeout, "gateway-timeout", call.FirstResponseTimeout, "how long a gateway may stay silent before the next one is tried")
	c.blockedPrefixes.vals = append([]string(nil), call.HighCostPrefixes...)
	fs.Var(&c.blockedPrefixes, "blocked-prefixes", "outbound destinations no key may call, comma-separated (default: the high-cost list in the README; \"none\" for none)")
	fs.StringVar(&c.serverHeader, "server-header", "trunkgate", "the SIP Server and User-Agent header value; empty sends none")
	fs.StringVar(&c.unknownSource, "unknown-source", "drop", "INVITEs from a source no trunk allows: drop (no answer) or reject (403, the same for every number)")
	fs.IntVar(&c.floodRequests, "flood-requests", 60, "SIP requests a source may send per --flood-window before it is banned (0 = no limit)")
	fs.DurationVar(&c.floodWindow, "flood-window", 2*time.Second, "the flood guard's counting window")
	fs.DurationVar(&c.floodBan, "flood-ban", 60*time.Second, "how long a flooding source is banned")
	fs.DurationVar(&c.sipTCPIdle, "sip-tcp-idle", 2*time.Minute, "close a SIP TCP connection idle this long (0 = never)")
	fs.StringVar(&c.floodAction, "flood-action", "drop", "requests from a banned source: drop, or reject (503)")
	fs.Var(&c.floodExempt, "flood-exempt", "CIDRs the flood guard never counts, besides the trunks' carrier networks (repeat or comma-separate)")
	fs.DurationVar(&c.alertCheck, "alert-check-interval", 2*time.Second, "how often spend and live calls are held against each key's alert rules")
	fs.StringVar(&c.node, "node-name", defaultNodeName(), "this edge's name among edges sharing one database")
	fs.DurationVar(&c.nodeTimeout, "node-timeout", ledger.DeadAfter,
		"on a shared PostgreSQL: how long an edge may miss its heartbeats before another frees its channels and closes its calls")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.debugAddr, "debug-addr", "", "if set, serve Go's pprof profiles here (keep it on loopback)")
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", pos)
	}
	log, err := newLogger(c.logLevel, c.logFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(ctx, c, log)
}

func parsePortRange(s string) (int, int, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("--rtp-ports %q: want MIN-MAX", s)
	}
	return a, b, nil
}

// edge is everything serve wires together.
func serve(ctx context.Context, c serveConfig, log *slog.Logger) error {
	sipHost, _, err := net.SplitHostPort(c.sipAddr)
	if err != nil {
		return fmt.Errorf("--sip-addr: %w", err)
	}
	publicIP, err := choosePublicIP(c.publicIP, sipHost)
	if err != nil {
		return err
	}
	minPort, maxPort, err := parsePortRange(c.rtpPorts)
	if err != nil {
		return err
	}
	bindIP := netip.IPv4Unspecified()
	if a, err := netip.ParseAddr(sipHost); err == nil {
		bindIP = a
	}
	ports, err := media.NewPortPool(bindIP, minPort, maxPort)
	if err != nil {
		return err
	}

	e, err := openEdge(ctx, c.dbPath, c.node, true, log)
	if err != nil {
		return err
	}
	defer e.db.Close()
	defer e.audit.Close()
	e.meter.SetCheckpointInterval(c.checkpoint)
	// On a shared PostgreSQL the edge joins the others first (refusing a
	// name a running edge has), then closes the calls of its own earlier
	// run under the same name; other edges close a dead edge's calls when
	// its heartbeat stops. Alone on its SQLite file, it closes every call
	// left live.
	ledgerCtx, stopLedger := context.WithCancel(context.Background())
	defer stopLedger()
	ledgerDone := make(chan struct{})
	var recoverNodes []string
	if e.shared != nil {
		e.shared.DeadAfter = c.nodeTimeout
		if err := e.shared.Join(ctx); err != nil {
			return err
		}
		go func() {
			defer close(ledgerDone)
			e.runShared(ledgerCtx, log)
		}()
		recoverNodes = []string{e.node}
	} else {
		close(ledgerDone)
	}
	recovered, err := e.meter.Recover(ctx, recoverNodes...)
	if err != nil {
		return fmt.Errorf("recover live calls: %w", err)
	}
	for _, cdr := range recovered {
		log.Warn("closed a call left live by the last run, billed to its last checkpoint",
			"call_id", cdr.CallID, "key_id", cdr.KeyID, "billed_seconds", cdr.BilledSeconds)
	}
	if err := bootstrapAdmin(ctx, e.manager, log); err != nil {
		return err
	}

	httpCert, err := httpCertificate(c)
	if err != nil {
		return err
	}
	httpLn, err := net.Listen("tcp", c.httpAddr)
	if err != nil {
		return fmt.Errorf("listen http %s: %w", c.httpAddr, err)
	}
	defer httpLn.Close()
	httpURL := "http://" + httpLn.Addr().String()
	if httpCert != nil {
		httpLn = tls.NewListener(httpLn, tlsconf.ServerConfig(httpCert))
		httpURL = "https://" + httpLn.Addr().String()
	}
	appTLS, err := tlsconf.ClientConfig(c.tlsCA)
	if err != nil {
		return fmt.Errorf("--tls-ca: %w", err)
	}
	sipTLSAddr, err := sipTLSListen(c, httpCert)
	if err != nil {
		return err
	}
	var sipTLS *tls.Config
	gatewayTLS := appTLS.Clone()
	if httpCert != nil {
		sipTLS = tlsconf.ServerConfig(httpCert)
		// Gateways that ask for a client certificate get the edge's own.
		gatewayTLS.GetClientCertificate = httpCert.ClientCertificate
	}

	sip.SetLogger(sipLogger(log))
	met := metrics.New(keyUsage{e.admitter, e.meter})
	if e.shared != nil {
		met.WatchCluster(func() metrics.ClusterStats {
			st := e.shared.Stats()
			return metrics.ClusterStats{Nodes: st.Nodes, SyncFailures: st.SyncFailures, DeadNodes: st.DeadNodes}
		})
	}
	// The sandbox carrier of test keys: its own SIP user agent on loopback.
	sandboxCtx, stopSandbox := context.WithCancel(context.Background())
	defer stopSandbox()
	sandboxCarrier, err := sandbox.Start(sandboxCtx, netip.MustParseAddr("127.0.0.1"), sipLogger(log))
	if err != nil {
		return err
	}
	gateways := trunks.NewHealth(3, log)
	blocked, err := blockList(c.blockedPrefixes.vals)
	if err != nil {
		return err
	}
	if c.unknownSource != "drop" && c.unknownSource != "reject" {
		return fmt.Errorf("--unknown-source %q: want drop or reject", c.unknownSource)
	}
	screen, err := floodGuard(c, e, met, log)
	if err != nil {
		return err
	}
	watch := alerts.New(alerts.Config{Store: e.alerts, Keys: e.admitter, Suspender: e.manager, Spend: e.meter, Live: e.ledger,
		Usage: e.cdrs, Audit: e.audit, Log: log, CheckEvery: c.alertCheck})
	calls := call.NewManager(call.Config{
		Trunks: e.trunks, Admitter: timedAdmission{call.Admission(e.admitter), met}, Ledger: e.ledger, Media: call.Ports(ports), Apps: call.AppsOver(appTLS), Meter: e.meter,
		Audit: e.audit, Metrics: met, Watch: watch, Sandbox: sandboxCarrier.Trunk(), Gateways: gateways, BlockedPrefixes: blocked,
		UnknownSourceReply: c.unknownSource == "reject",
		RingTimeout:        c.ringTimeout, GatewayTimeout: c.gatewayTimeout, MediaIP: publicIP, RTPTimeout: c.rtpTimeout, DialTimeout: c.dialTimeout, AppPing: c.appPing, StatsEvery: c.appStats, FirstAudio: c.firstAudio, ResumeHoldTone: c.resumeHoldTone, Log: log,
	})
	nonceKey, err := e.changes.Secret(ctx, "sip-digest-nonce")
	if err != nil {
		return err
	}
	sipSrv, err := sip.Listen(sip.Config{Addr: c.sipAddr, ContactIP: publicIP, Handler: calls, Log: sipLogger(log),
		UserAgent: c.serverHeader, Screen: screen, ScreenReply: c.floodAction == "reject", TCPIdle: c.sipTCPIdle,
		NonceKey: nonceKey, Observer: met, TLSAddr: sipTLSAddr, TLS: sipTLS, TLSClient: gatewayTLS})
	if err != nil {
		return err
	}
	calls.SetCarrier(call.Carriers(sipSrv))
	web := console.New(e.manager, log)
	restAPI := api.New(api.Config{
		Sessions: web, Keys: e.manager, Admitter: e.admitter, Audit: e.audit, Trunks: e.trunks, Calls: calls, Gateways: gateways,
		CDRs: e.cdrs, Rates: e.rates, Usage: e.cdrs, Spend: e.meter, Alerts: e.alerts, Metrics: met.Handler(), Log: log,
	})
	mux := http.NewServeMux()
	mux.Handle("/", restAPI)
	web.Register(mux)
	var demo *demoInfo
	if c.demo {
		keyFile := filepath.Join(dataDir(c.dbPath), "demo-test-key")
		if demo, err = seedDemo(ctx, e, c.demoNumber, "ws://"+httpLn.Addr().String()+"/demo/echo", keyFile, log); err != nil {
			return err
		}
		mux.Handle("/demo/echo", &bridge.EchoApp{Log: log, Secret: demo.secretFor})
	}
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	if c.debugAddr != "" {
		dbg, err := net.Listen("tcp", c.debugAddr)
		if err != nil {
			return fmt.Errorf("--debug-addr: %w", err)
		}
		defer dbg.Close()
		dmux := http.NewServeMux()
		dmux.HandleFunc("/debug/pprof/", pprof.Index)
		dmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		dmux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		dmux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		go (&http.Server{Handler: dmux, ReadHeaderTimeout: 10 * time.Second}).Serve(dbg)
	}
	follower, err := e.changes.Follow(ctx)
	if err != nil {
		return err
	}
	meterCtx, stopMeter := context.WithCancel(context.Background())
	meterDone := make(chan struct{})
	go func() {
		defer close(meterDone)
		e.meter.Run(meterCtx)
	}()
	followCtx, stopFollow := context.WithCancel(context.Background())
	defer stopFollow()
	followDone := make(chan struct{})
	go func() {
		defer close(followDone)
		e.follow(followCtx, follower, log)
	}()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		watch.Run(watchCtx)
	}()
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpSrv.Serve(httpLn) }()
	sipCtx, stopSIP := context.WithCancel(context.Background())
	sipDone := make(chan error, 1)
	go func() { sipDone <- sipSrv.Serve(sipCtx) }()
	go gateways.Probe(sipCtx, call.Pinger(sipSrv), c.probeInterval)
	restAPI.SetReady(true)
	hupDone := reloadOnHangup(sipCtx, httpCert, log)

	sipHostPort := net.JoinHostPort(publicIP.String(), strconv.Itoa(sipSrv.Port()))
	up := []any{"sip", sipHostPort, "http", httpURL, "rtp_ports", fmt.Sprintf("%d-%d", minPort, maxPort), "db", e.db.sql.Where}
	if p := sipSrv.TLSPort(); p != 0 {
		up = append(up, "sip_tls", net.JoinHostPort(publicIP.String(), strconv.Itoa(p)))
	}
	log.Info("trunkgate up", up...)
	printBanner(os.Stdout, sipHostPort, httpURL, c, demo)

	select {
	case <-ctx.Done():
	case err := <-httpDone:
		stopSIP()
		stopMeter()
		return fmt.Errorf("http server: %w", err)
	}

	// Drain: refuse new calls (503), let live ones finish up to the
	// deadline, then hang up the rest and write their CDRs.
	log.Info("draining", "live_calls", calls.Live(), "deadline", c.drainTimeout)
	e.admitter.SetDraining(true)
	restAPI.SetDraining(true)
	met.SetDraining(true)
	drainCtx, cancel := context.WithTimeout(context.Background(), c.drainTimeout)
	if err := calls.Wait(drainCtx); err != nil {
		n := calls.HangupAll(refusal.Draining)
		log.Info("drain deadline reached; hanging up", "calls", n)
		waitCtx, cancelWait := context.WithTimeout(context.Background(), 10*time.Second)
		_ = calls.Wait(waitCtx)
		cancelWait()
	}
	cancel()
	stopSIP()
	<-sipDone
	<-hupDone
	stopSandbox()
	sandboxCarrier.Wait()
	stopMeter()
	<-meterDone
	stopWatch()
	<-watchDone
	stopFollow()
	<-followDone
	stopLedger()
	<-ledgerDone
	if e.shared != nil {
		leaveCtx, cancelLeave := context.WithTimeout(context.Background(), 5*time.Second)
		if err := e.shared.Leave(leaveCtx); err != nil {
			log.Error("leaving the shared ledger", "error", err)
		}
		cancelLeave()
	}
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	_ = httpSrv.Shutdown(shutdownCtx)
	cancelShutdown()
	log.Info("trunkgate stopped")
	return nil
}

// httpCertificate loads --tls-cert and --tls-key, or refuses plain HTTP
// where it would carry keys across a network.
func httpCertificate(c serveConfig) (*tlsconf.Certificate, error) {
	if c.tlsCert == "" && c.tlsKey == "" {
		if !c.httpAllowPlain && !loopback(c.httpAddr) {
			return nil, fmt.Errorf("--http-addr %s is not a loopback address: serve HTTPS (--tls-cert, --tls-key) "+
				"or pass --http-allow-plain", c.httpAddr)
		}
		return nil, nil
	}
	if c.tlsCert == "" || c.tlsKey == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	return tlsconf.LoadCertificate(c.tlsCert, c.tlsKey)
}

// sipTLSListen is where SIP over TLS listens: --sip-tls-addr, else with
// a certificate the --sip-addr host on port 5061 (RFC 3261 §19.1.2), else
// nowhere.
func sipTLSListen(c serveConfig, cert *tlsconf.Certificate) (string, error) {
	switch {
	case c.sipTLSAddr == "off":
		return "", nil
	case c.sipTLSAddr != "" && cert == nil:
		return "", errors.New("--sip-tls-addr needs --tls-cert and --tls-key")
	case c.sipTLSAddr != "":
		return c.sipTLSAddr, nil
	case cert == nil:
		return "", nil
	}
	host, _, err := net.SplitHostPort(c.sipAddr)
	if err != nil {
		return "", fmt.Errorf("--sip-addr %q: %w", c.sipAddr, err)
	}
	return net.JoinHostPort(host, "5061"), nil
}

// loopback reports whether a listen address is on loopback alone (an
// empty or unspecified host listens everywhere).
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// reloadOnHangup reads the TLS certificate again on each SIGHUP, until
// ctx ends; the returned channel closes then. Handshakes already made
// keep their certificate; new ones get the new pair.
func reloadOnHangup(ctx context.Context, cert *tlsconf.Certificate, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer close(done)
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			if cert == nil {
				log.Info("SIGHUP: no TLS certificate to reload")
				continue
			}
			if err := cert.Reload(); err != nil {
				log.Error("SIGHUP: TLS certificate not reloaded; the one in use stays", "error", err)
				continue
			}
			leaf := cert.Leaf()
			log.Info("SIGHUP: TLS certificate reloaded", "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
		}
	}()
	return done
}

// floodGuard builds the per-source request limit: carrier networks of the
// trunks and --flood-exempt are never counted; a ban is counted, logged
// and audited once, not once per request.
func floodGuard(c serveConfig, e *edge, met *metrics.Metrics, log *slog.Logger) (func(netip.Addr) bool, error) {
	if c.floodRequests <= 0 {
		return nil, nil
	}
	if c.floodAction != "drop" && c.floodAction != "reject" {
		return nil, fmt.Errorf("--flood-action %q: want drop or reject", c.floodAction)
	}
	var exempt []netip.Prefix
	for _, s := range c.floodExempt {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--flood-exempt %q: %w", s, err)
		}
		exempt = append(exempt, p)
	}
	g := flood.New(flood.Config{Requests: c.floodRequests, Window: c.floodWindow, Ban: c.floodBan,
		Trusted: func(a netip.Addr) bool {
			for _, p := range exempt {
				if p.Contains(a) {
					return true
				}
			}
			return e.trunks.Trusted(a)
		},
		OnBan: func(a netip.Addr, n int, until time.Time) {
			met.FloodBanned()
			log.Warn("source banned for flooding", "source", a, "requests", n, "window", c.floodWindow, "until", until)
			e.audit.Record(keys.AuditEntry{Actor: "sip", Action: "flood.ban", Target: a.String(), Outcome: "denied",
				Detail: fmt.Sprintf("requests=%d window=%s ban=%s", n, c.floodWindow, c.floodBan), Source: a.String()})
		}})
	return func(a netip.Addr) bool {
		if g.Allow(a) {
			return true
		}
		met.Screened()
		return false
	}, nil
}

// blockList normalises --blocked-prefixes; "none" turns the list off.
func blockList(in []string) ([]string, error) {
	var out []string
	for _, p := range in {
		if strings.EqualFold(p, "none") {
			return nil, nil
		}
		n, ok := trunks.NormaliseNumber(p)
		if !ok {
			return nil, fmt.Errorf("--blocked-prefixes: %q is not a number prefix", p)
		}
		out = append(out, n)
	}
	return out, nil
}

func choosePublicIP(flagValue, sipHost string) (netip.Addr, error) {
	if flagValue != "" {
		a, err := netip.ParseAddr(flagValue)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("--public-ip: %w", err)
		}
		return a, nil
	}
	if a, err := netip.ParseAddr(sipHost); err == nil && !a.IsUnspecified() {
		return a, nil
	}
	return netip.MustParseAddr("127.0.0.1"), nil
}

// bootstrapAdmin makes sure an admin key exists. On an empty database it
// imports TRUNKGATE_ADMIN_KEY or makes a new key and prints it once.
func bootstrapAdmin(ctx context.Context, m *keys.Manager, log *slog.Logger) error {
	all, err := m.List(ctx)
	if err != nil {
		return err
	}
	for _, k := range all {
		if k.Status == keys.Active && k.HasScope(keys.ScopeKeysAdmin) {
			return nil
		}
	}
	spec := keys.CreateSpec{Name: "bootstrap admin", Mode: keys.Live,
		Scopes: []string{string(keys.ScopeKeysAdmin), string(keys.ScopeUsageRead)}}
	by := keys.Actor{KeyID: keys.ActorSystem}
	if text := os.Getenv("TRUNKGATE_ADMIN_KEY"); text != "" {
		c, err := m.Import(ctx, by, text, spec)
		if err != nil {
			return fmt.Errorf("TRUNKGATE_ADMIN_KEY: %w", err)
		}
		log.Info("admin key imported from TRUNKGATE_ADMIN_KEY", "key_id", c.Key.ID)
		return nil
	}
	c, err := m.Create(ctx, by, spec)
	if err != nil {
		return err
	}
	log.Info("created the bootstrap admin key; its text is printed once on stdout", "key_id", c.Key.ID)
	fmt.Printf("\n== trunkgate: first start on an empty database ==\n"+
		"Admin key (shown once, store it now; it is not logged):\n\n  export TRUNKGATE_ADMIN_KEY=%s\n\n", c.Text)
	return nil
}

var errDemo = errors.New("demo setup")
