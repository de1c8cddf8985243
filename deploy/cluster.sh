#!/usr/bin/env bash
# Two trunkgate edges on one PostgreSQL behind a Kamailio dispatcher, all on
# loopback, in the foreground: Ctrl-C (or SIGTERM) stops everything. No
# containers: Debian's postgresql and kamailio packages and bin/trunkgate.
#
#   deploy/cluster.sh            # then place calls at 127.0.0.1:$LB_PORT
#
# Ports and places can be changed from the environment:
#   LB_PORT (5060)  EDGE_A_SIP (5071) EDGE_B_SIP (5072)  EDGE_A_HTTP (8081)
#   EDGE_B_HTTP (8082)  EDGE_A_RTP (10000-14999)  EDGE_B_RTP (15000-19999)
#   PG_PORT (55432)  APP_ADDR (127.0.0.1:9090)
#   STATE (data/cluster: logs, pids, the admin key)  TRUNKGATE_BIN
#   NODE_TIMEOUT (15s: when a silent edge's calls are closed by the other)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LB_PORT=${LB_PORT:-5060}
EDGE_A_SIP=${EDGE_A_SIP:-5071}
EDGE_B_SIP=${EDGE_B_SIP:-5072}
EDGE_A_HTTP=${EDGE_A_HTTP:-8081}
EDGE_B_HTTP=${EDGE_B_HTTP:-8082}
EDGE_A_RTP=${EDGE_A_RTP:-10000-14999}
EDGE_B_RTP=${EDGE_B_RTP:-15000-19999}
PG_PORT=${PG_PORT:-55432}
APP_ADDR=${APP_ADDR:-127.0.0.1:9090}
NODE_TIMEOUT=${NODE_TIMEOUT:-15s}
STATE=${STATE:-$ROOT/data/cluster}
BIN=${TRUNKGATE_BIN:-$ROOT/bin/trunkgate}
NUMBER=${NUMBER:-+15550100}

say() { printf '%s\n' "cluster: $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { say "$1 not found: $2"; exit 1; }; }
need kamailio "apt-get install kamailio"
MODULES=$(dirname "$(find /usr/lib -path '*kamailio/modules/dispatcher.so' 2>/dev/null | head -1)")
[ -f "$MODULES/dispatcher.so" ] || { say "Kamailio's dispatcher module not found: apt-get install kamailio"; exit 1; }
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[ -x "$PG_BIN/initdb" ] || { say "PostgreSQL not found: apt-get install postgresql"; exit 1; }
if [ ! -x "$BIN" ]; then
	say "building $BIN"
	(cd "$ROOT" && go build -o "$BIN" ./cmd/trunkgate)
fi
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
# A state directory from an earlier run: its logs would answer wait_for.
rm -f "$STATE"/*.log "$STATE"/*.out "$STATE"/*.pid "$STATE/ready"

# PostgreSQL refuses to run as root: as root it runs as the postgres user,
# in a directory of its own under /tmp.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PG_DIR=""
PIDS=()
cleanup() {
	trap - EXIT INT TERM
	say "stopping"
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [ -n "$PG_DIR" ]; then
		if [ -f "$PG_DIR/data/postmaster.pid" ] &&
			! as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 20 stop >/dev/null 2>&1; then
			say "PostgreSQL did not stop; killing it"
			kill -9 "$(head -1 "$PG_DIR/data/postmaster.pid")" 2>/dev/null || true
		fi
		rm -rf "$PG_DIR"
	fi
}
trap cleanup EXIT
trap 'exit 0' INT TERM
PG_DIR=$(mktemp -d /tmp/trunkgate-cluster-pg.XXXXXX)
if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DIR"; fi

say "PostgreSQL on 127.0.0.1:$PG_PORT"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U trunkgate --auth=trust -E UTF8 >"$STATE/postgres-init.log"
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 30 \
	-o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$PG_DIR -c max_connections=100" start >/dev/null
as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U trunkgate trunkgate
DB="postgres://trunkgate@127.0.0.1:$PG_PORT/trunkgate?sslmode=disable"

# wait_for FILE PATTERN: until a log line appears (or 30 s pass).
wait_for() {
	for _ in $(seq 300); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	say "timed out waiting for '$2' in $1"; tail -20 "$1" >&2; exit 1
}

say "echo app (the AI application) on $APP_ADDR"
"$BIN" echo-app --addr "$APP_ADDR" >"$STATE/app.log" 2>&1 &
PIDS+=($!)

edge() { # edge NAME SIP HTTP RTP
	# Its stdout holds the admin key the first start prints: private.
	(umask 077; : >"$STATE/$1.out")
	"$BIN" serve --db "$DB" --node-name "$1" --sip-addr "127.0.0.1:$2" --http-addr "127.0.0.1:$3" --rtp-ports "$4" \
		--node-timeout "$NODE_TIMEOUT" --drain-timeout 5s >"$STATE/$1.out" 2>"$STATE/$1.log" &
	PIDS+=($!)
	echo $! >"$STATE/$1.pid"
	wait_for "$STATE/$1.log" 'msg="trunkgate up"'
}
say "edge-a: SIP 127.0.0.1:$EDGE_A_SIP, REST http://127.0.0.1:$EDGE_A_HTTP"
unset TRUNKGATE_ADMIN_KEY
edge edge-a "$EDGE_A_SIP" "$EDGE_A_HTTP" "$EDGE_A_RTP"
# The first edge on an empty database prints the admin key once; the
# second imports the same key.
TRUNKGATE_ADMIN_KEY=$(sed -n 's/^ *export TRUNKGATE_ADMIN_KEY=//p' "$STATE/edge-a.out")
export TRUNKGATE_ADMIN_KEY
(umask 077; echo "$TRUNKGATE_ADMIN_KEY" >"$STATE/admin-key")
say "edge-b: SIP 127.0.0.1:$EDGE_B_SIP, REST http://127.0.0.1:$EDGE_B_HTTP"
edge edge-b "$EDGE_B_SIP" "$EDGE_B_HTTP" "$EDGE_B_RTP"

say "a key and a trunk for $NUMBER (created on edge-a, in force on both)"
export TRUNKGATE_SERVER="http://127.0.0.1:$EDGE_A_HTTP"
KEY_ID=$("$BIN" keys create --name cluster-demo --max-channels 10 --json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' | head -1)
"$BIN" trunks create --key "$KEY_ID" --number "$NUMBER" --ai-url "ws://$APP_ADDR/" --allow 127.0.0.1/32 >/dev/null
echo "$KEY_ID" >"$STATE/key-id"

say "Kamailio dispatcher on 127.0.0.1:$LB_PORT (UDP and TCP)"
cat >"$STATE/dispatcher.list" <<LIST
1 sip:127.0.0.1:$EDGE_A_SIP 0 0
1 sip:127.0.0.1:$EDGE_B_SIP 0 0
LIST
sed -e "s|@LB_ADDR@|127.0.0.1|g" -e "s|@LB_PORT@|$LB_PORT|g" -e "s|@DISPATCHER_LIST@|$STATE/dispatcher.list|g" \
	-e "s|@MODULES@|$MODULES/|g" \
	"$ROOT/deploy/kamailio-dispatcher.cfg" >"$STATE/kamailio.cfg"
kamailio -f "$STATE/kamailio.cfg" -DD -E -w "$STATE" -Y "$STATE" -P "$STATE/kamailio.pid" -m 64 -M 8 >"$STATE/kamailio.log" 2>&1 &
PIDS+=($!)
wait_for "$STATE/kamailio.log" "Listening on"

cat >&2 <<DONE

cluster: up. Carriers send INVITEs to 127.0.0.1:$LB_PORT; two edges take them:
  export TRUNKGATE_ADMIN_KEY=\$(cat $STATE/admin-key)
  sipp 127.0.0.1:$LB_PORT -sf testdata/sipp/uac_demo.xml -s $NUMBER -m 8 -r 4     # calls, spread over both
  TRUNKGATE_SERVER=http://127.0.0.1:$EDGE_B_HTTP bin/trunkgate calls list       # every edge's calls
  bin/trunkgate cdrs --server http://127.0.0.1:$EDGE_A_HTTP --key $KEY_ID          # each CDR names its node
  kill -9 \$(cat $STATE/edge-a.pid)                                              # edge-b carries on alone
Logs in $STATE. Ctrl-C stops everything.
DONE
echo ready >"$STATE/ready"
wait "${PIDS[@]}"
