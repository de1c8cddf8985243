package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"trunkgate/bridge"
)

// runEchoApp serves the demo echo application on its own, as an AI app in
// another process would be (load tests measure the edge without it).
func runEchoApp(args []string) error {
	fs := newFlags("echo-app", "echo-app [--addr HOST:PORT]")
	addr := fs.String("addr", "127.0.0.1:9090", "listen address of the echo app's WebSocket")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	pos, err := parseFlags(fs, args)
	if err == nil {
		err = noArgs(pos)
	}
	if err != nil {
		return err
	}
	log, err := newLogger(*logLevel, "text")
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: &bridge.EchoApp{Log: log}, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	fmt.Printf("echo app listening on ws://%s/\n", ln.Addr())
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}
