#!/usr/bin/env bash
# cps.sh RATE SECONDS: call setups a second through trunkgate, the same
# short calls as the anchor's cps.sh (testdata/sipp/uac_short.xml: INVITE,
# 200, ACK, 1 s, BYE, no media) at RATE calls/s from a SIPp UAC. Each call
# is admitted, dials the echo app's WebSocket and writes a CDR. Prints one
# line: successes, failures, retransmissions, setup time (SIPp's response
# time: mean, p99 from its repartition), and CPU per call of the edge, the
# echo app and the SIPp UAC (the load generators beside the edge).
# PROFILE=1 also takes a CPU profile of the edge (the path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:?usage: cps.sh RATE SECONDS}
S=${2:?usage: cps.sh RATE SECONDS}
ROOT=$(pwd)
BIN=$ROOT/bin/trunkgate
[ -x "$BIN" ] || go build -o "$BIN" ./cmd/trunkgate
OUT=$(mktemp -d /tmp/trunkgate-cps.XXXX)
ulimit -n 20000 2>/dev/null || true
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

randtext() { tr -dc 'A-Za-z0-9' </dev/urandom 2>/dev/null | head -c "$1" || true; } # tr ends on SIGPIPE
ADMIN="tg_live_$(randtext 12)_$(randtext 32)"
HTTP=http://127.0.0.1:8092
"$BIN" echo-app --addr 127.0.0.1:9092 >"$OUT/app.log" 2>&1 &
APP=$!
PIDS+=($APP)
TRUNKGATE_ADMIN_KEY=$ADMIN "$BIN" serve --db "$OUT/edge.db" --sip-addr 127.0.0.1:5071 --http-addr 127.0.0.1:8092 \
	--rtp-ports 30000-39998 --log-level warn --flood-requests 0 ${PROFILE:+--debug-addr 127.0.0.1:6062} >"$OUT/edge.out" 2>"$OUT/edge.log" &
EDGE=$!
PIDS+=($EDGE)
for _ in $(seq 100); do curl -sf "$HTTP/readyz" >/dev/null && break; sleep 0.1; done
key=$(curl -sf -H "Authorization: Bearer $ADMIN" -d '{"name":"cps","mode":"live","scopes":["calls:inbound"],"limits":{"max_channels":0,"cps":0,"max_call_seconds":0}}' \
	"$HTTP/v1/keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"]["id"])')
curl -sf -H "Authorization: Bearer $ADMIN" -d "{\"key_id\":\"$key\",\"numbers\":[\"+15550100\"],\"ai_url\":\"ws://127.0.0.1:9092/\",\"allowed_sources\":[\"127.0.0.0/8\"]}" \
	"$HTTP/v1/trunks" >/dev/null

e0=$(ticks "$EDGE"); a0=$(ticks "$APP")
(cd "$OUT" && exec timeout $((S + 30)) sipp 127.0.0.1:5071 -sf "$ROOT/testdata/sipp/uac_short.xml" -s +15550100 -i 127.0.0.1 -p 5061 \
	-mi 127.0.0.1 -mp 7100 -r "$R" -m $((R * S)) -l $((R * 3)) -nostdin -trace_stat -stf "$OUT/stat.csv" -fd 1 \
	-trace_rtt -rtt_freq 1 >"$OUT/uac.out" 2>&1) &
UACW=$!
if [ -n "${PROFILE:-}" ]; then # a CPU profile of the edge over the run, beside the results
	curl -s "http://127.0.0.1:6062/debug/pprof/profile?seconds=$((S - 1))" -o "$OUT/cpu.pprof" &
	PROF=$!
fi
sleep 0.3
UAC=$(pgrep -P "$UACW" | head -n1 || true)
u0=$(ticks "$UAC")
u1=$u0
while kill -0 "$UACW" 2>/dev/null; do
	u=$(ticks "$UAC"); [ "$u" -gt 0 ] && u1=$u
	sleep 0.5
done
wait "$UACW" || true
if [ -n "${PROFILE:-}" ]; then
	wait "$PROF" || true
	echo "edge CPU profile: $OUT/cpu.pprof" >&2
fi
e1=$(ticks "$EDGE"); a1=$(ticks "$APP")
python3 - "$R" "$S" "$e0" "$e1" "$a0" "$a1" "$u0" "$u1" "$OUT" <<'PY'
import sys, glob, statistics
R, S, e0, e1, a0, a1, u0, u1 = map(int, sys.argv[1:9]); out = sys.argv[9]
rows = [l.strip().split(";") for l in open(out + "/stat.csv") if l.strip()]
d = dict(zip(rows[0], rows[-1]))
ok, fail = int(d["SuccessfulCall(C)"]), int(d["FailedCall(C)"])
rtts = []
for f in glob.glob(out + "/*_rtt.csv"):
    for line in open(f):
        parts = line.strip().split(";")
        try:
            rtts.append(float(parts[1]))  # Date_ms;response_time_ms;rtd_no
        except (IndexError, ValueError):
            pass  # the header
mean = statistics.mean(rtts) if rtts else float("nan")
p99 = sorted(rtts)[int(len(rtts) * 0.99) - 1] if rtts else float("nan")
per = lambda a, b: (b - a) * 10 / max(ok, 1)
print(f"trunkgate rate {R}/s x {S}s: ok {ok} failed {fail} retrans {d.get('Retransmissions(C)')} "
      f"setup_mean_ms {mean:.2f} setup_p99_ms {p99:.2f} edge {per(e0, e1):.3f} ms/call "
      f"echo_app {per(a0, a1):.3f} ms/call sipp_uac {per(u0, u1):.3f} ms/call")
PY
