#!/usr/bin/env bash
# loadtest.sh [N...]: whole-system load on trunkgate with SIPp, the same
# traffic as ../shared/bench-anchor (Kamailio + rtpengine): N concurrent
# 30 s PCMA calls (ptime 30, g711a.pcap), N/RAMP new calls a second. Each
# call is answered by the edge, bridged over WebSocket to an echo app in
# its own process, and the echo is sent back to SIPp as RTP.
#
# CPU (utime+stime from /proc, ms per wall second; 1000 = one core) and RSS
# of the edge, the app and SIPp are sampled over WINDOW s once N calls are
# up. Results: bench/results/<time>/ and a line in bench/results/summary.tsv.
# ANCHOR=1 also runs the anchor with the same N first (needs kamailio and
# rtpengine-daemon installed; see ../shared/bench-anchor/README.md).
# PACING=1 then captures 5 s of the edge's RTP (dumpcap, kernel timestamps)
# and measures the gaps between packets (scripts/pacing.py).
# BRIDGE=null runs bench/nullbridge in the edge's place (the same sockets
# and packets, no processing): the floor of per-packet I/O.
# Env: RAMP (30) SETTLE (5) WINDOW (20) BRIDGE (edge|null).
set -euo pipefail
cd "$(dirname "$0")/.."
RAMP=${RAMP:-30}
SETTLE=${SETTLE:-5}
WINDOW=${WINDOW:-20}
NS=("${@:-100}")
ROOT=$(pwd)
BIN=$ROOT/bin/trunkgate
[ -x "$BIN" ] || go build -o "$BIN" ./cmd/trunkgate
BRIDGE=${BRIDGE:-edge}
[ "$BRIDGE" = null ] && go build -o bin/nullbridge ./bench/nullbridge
mkdir -p bench/results
ulimit -n 20000 2>/dev/null || true

log() { echo "[$(date +%T)] $*" >&2; }

ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
metric() { curl -s "$HTTP/metrics" | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {printf "%d", s}'; }

newkey() {
	local id secret
	id=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 12)
	secret=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)
	echo "tg_live_${id}_${secret}"
}

run_one() {
	local N=$1
	local OUT=$ROOT/bench/results/N${N}-$(date +%Y%m%d-%H%M%S)
	mkdir -p "$OUT"
	local PIDS=()
	cleanup() {
		for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
		for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	}
	trap cleanup RETURN

	ADMIN=$(newkey)
	HTTP=http://127.0.0.1:8091
	"$BIN" echo-app --addr 127.0.0.1:9091 >"$OUT/app.log" 2>&1 &
	APP=$!
	PIDS+=($APP)
	if [ "$BRIDGE" = null ]; then
		bin/nullbridge --sip-addr 127.0.0.1:5070 --http-addr 127.0.0.1:8091 --app ws://127.0.0.1:9091/ --debug-addr 127.0.0.1:6061 >"$OUT/edge.out" 2>"$OUT/edge.log" &
		EDGE=$!
		PIDS+=($EDGE)
		for _ in $(seq 100); do curl -sf "$HTTP/readyz" >/dev/null && break; sleep 0.1; done
	else
		TRUNKGATE_ADMIN_KEY=$ADMIN GOGC=${GOGC:-100} "$BIN" serve --db "$OUT/edge.db" --sip-addr 127.0.0.1:5070 \
			--http-addr 127.0.0.1:8091 --rtp-ports 30000-39998 --log-level warn --rtp-timeout 10s --debug-addr 127.0.0.1:6061 >"$OUT/edge.out" 2>"$OUT/edge.log" &
		EDGE=$!
		PIDS+=($EDGE)
		for _ in $(seq 100); do curl -sf "$HTTP/readyz" >/dev/null && break; sleep 0.1; done
		key=$(curl -sf -H "Authorization: Bearer $ADMIN" -d '{"name":"load","mode":"live","scopes":["calls:inbound"],"limits":{"max_channels":0,"cps":0,"max_call_seconds":0}}' "$HTTP/v1/keys" \
			| python3 -c 'import json,sys; print(json.load(sys.stdin)["key"]["id"])')
		curl -sf -H "Authorization: Bearer $ADMIN" -d "{\"key_id\":\"$key\",\"numbers\":[\"+15550100\"],\"ai_url\":\"ws://127.0.0.1:9091/\",\"allowed_sources\":[\"127.0.0.0/8\"]}" \
			"$HTTP/v1/trunks" >/dev/null
	fi
	local rss0 goroutines0
	rss0=$(rss_kb "$EDGE")
	goroutines0=$(metric go_goroutines)

	log "N=$N: SIPp UAC → trunkgate 127.0.0.1:5070 → echo app; ramp ${RAMP}s"
	timeout $(( RAMP + SETTLE + WINDOW + 90 )) sipp 127.0.0.1:5070 -sf testdata/sipp/uac_load.xml -s +15550100 \
		-i 127.0.0.1 -p 5060 -mi 127.0.0.1 -mp 7000 -l "$N" -r "$N" -rp $(( RAMP * 1000 )) -nostdin \
		-trace_stat -stf "$OUT/uac_stat.csv" -fd 5 -trace_err -error_file "$OUT/uac_err.log" >"$OUT/uac.screen" 2>&1 &
	local UACW=$!
	PIDS+=($UACW)
	sleep 0.5
	local UAC
	UAC=$(pgrep -P "$UACW" | head -n1)

	sleep $(( RAMP + SETTLE ))
	local up0 e0 a0 s0 t0 sys0 idle0
	up0=$(metric trunkgate_channels_in_use)
	e0=$(ticks "$EDGE"); a0=$(ticks "$APP"); s0=$(ticks "$UAC")
	read -r sys0 idle0 < <(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat)
	t0=$(date +%s.%N)
	if [ -n "${PROFILE:-}" ]; then
		curl -s "http://127.0.0.1:6061/debug/pprof/profile?seconds=$(( WINDOW - 1 ))" -o "$OUT/cpu.pprof" &
	fi
	sleep "$WINDOW"
	[ -n "${PROFILE:-}" ] && curl -s "http://127.0.0.1:6061/debug/pprof/heap" -o "$OUT/heap.pprof"
	local up1 e1 a1 s1 t1 sys1 idle1 rss1 goroutines1 heap1
	e1=$(ticks "$EDGE"); a1=$(ticks "$APP"); s1=$(ticks "$UAC")
	read -r sys1 idle1 < <(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat)
	t1=$(date +%s.%N)
	up1=$(metric trunkgate_channels_in_use)
	rss1=$(rss_kb "$EDGE")
	goroutines1=$(metric go_goroutines)
	heap1=$(metric go_memstats_heap_inuse_bytes)

	# Pacing toward the carrier, after the CPU window so that the capture
	# does not weigh on it: 5 s of the edge's RTP as the kernel saw it.
	local pacing=""
	if [ "${PACING:-0}" = 1 ] && [ "$BRIDGE" = edge ] && command -v dumpcap >/dev/null; then
		timeout 15 dumpcap -q -i lo -f "udp src portrange 30000-39998" -a duration:5 -P -w "$OUT/pacing.pcap" 2>/dev/null || true
		pacing=$(python3 scripts/pacing.py "$OUT/pacing.pcap" 30 2>/dev/null || true)
		log "pacing: $pacing"
	fi
	log "window done; SIGUSR1 to the UAC, waiting for its calls to end"
	kill -USR1 "$UAC" 2>/dev/null || true
	local rc=0
	wait "$UACW" || rc=$?
	sleep 2
	local frames_out frames_dropped lost live_after
	frames_out=$(metric trunkgate_app_frames_sent_total)
	frames_dropped=$(metric trunkgate_app_frames_dropped_total)
	lost=$(metric trunkgate_rtp_packets_lost_total)
	live_after=$(metric trunkgate_channels_in_use)
	kill -TERM "$EDGE"; wait "$EDGE" || true
	local cdrs="0 0" billed_ok
	[ "$BRIDGE" = null ] || cdrs=$("$BIN" cdrs --db "$OUT/edge.db" --limit 10000 --json | python3 -c 'import json,sys; c=json.load(sys.stdin); print(len(c), sum(1 for x in c if x["final_code"]==200 and x["billed_seconds"] in (30,31,32)))')
	read -r ncdr billed_ok <<<"$cdrs"
	local ok failed
	ok=$(tail -n1 "$OUT/uac_stat.csv" | awk -F';' -v h="$(head -n1 "$OUT/uac_stat.csv")" 'BEGIN{n=split(h,H,";")} {for(i=1;i<=n;i++) if(H[i]=="SuccessfulCall(C)") print $i}')
	failed=$(tail -n1 "$OUT/uac_stat.csv" | awk -F';' -v h="$(head -n1 "$OUT/uac_stat.csv")" 'BEGIN{n=split(h,H,";")} {for(i=1;i<=n;i++) if(H[i]=="FailedCall(C)") print $i}')

	python3 - "$N" "$OUT" "$pacing" <<PY | tee -a bench/results/summary.tsv
import sys
N, out, pacing = sys.argv[1], sys.argv[2], sys.argv[3]
clk = 100.0
dt = $t1 - $t0
calls = ($up0 + $up1) / 2 or 1
edge = ($e1 - $e0) * 1000 / clk / dt
row = dict(
  N=N, bridge="$BRIDGE", calls_up=calls, edge_ms_s=round(edge, 1), edge_ms_s_per_call=round(edge / calls, 3),
  app_ms_s=round(($a1 - $a0) * 1000 / clk / dt, 1), uac_sipp_ms_s=round(($s1 - $s0) * 1000 / clk / dt, 1),
  sys_busy_ms_s=round((($sys1 - $sys0) - ($idle1 - $idle0)) * 1000 / clk / dt),
  edge_rss_mb=round($rss1 / 1024, 1), rss_kb_per_call=round(($rss1 - $rss0) / calls, 1),
  heap_inuse_mb=round($heap1 / 1048576, 1), goroutines=$goroutines1, goroutines_per_call=round(($goroutines1 - $goroutines0) / calls, 1),
  uac_ok=$ok, uac_failed=$failed, uac_rc=$rc, cdrs=$ncdr, cdrs_billed_30s=$billed_ok,
  frames_to_app=$frames_out, frames_dropped=$frames_dropped, rtp_lost=$lost, live_after=$live_after,
)
import os
rows = [l.strip().split(";") for l in open(os.path.join(out, "uac_stat.csv")) if l.strip()]
h, last = rows[0], rows[-1]
hh, mm, ss, us = last[h.index("ResponseTime1(C)")].split(":")
row["setup_ms_mean"] = round((int(hh) * 3600 + int(mm) * 60 + int(ss)) * 1000 + int(us) / 1000, 1)
under20 = sum(int(last[h.index(k)]) for k in h if k.startswith("ResponseTimeRepartition1_<") and int(k.split("<")[1]) <= 20)
row["setup_under_20ms_pct"] = round(100 * under20 / max(1, int(last[h.index("SuccessfulCall(C)")])), 1)
p = pacing.split()
p = dict(zip(p[::2], p[1::2]))
for k in ("p5", "p50", "p95", "within2ms_pct", "lost_pct"):
    row["pacing_" + k] = p.get(k, "")
with open(os.path.join(out, "row.tsv"), "w") as f:
    f.write("\t".join(row) + "\n" + "\t".join(str(v) for v in row.values()) + "\n")
summary = os.path.join(os.path.dirname(out), "summary.tsv")
if not os.path.exists(summary) or os.path.getsize(summary) == 0:
    print("\t".join(row))
print("\t".join(str(v) for v in row.values()))
PY
}

for N in "${NS[@]}"; do
	if [ "${ANCHOR:-0}" = 1 ] && [ -x ../shared/bench-anchor/run.sh ]; then
		log "anchor (Kamailio + rtpengine) with N=$N"
		RAMP=$RAMP SETTLE=$SETTLE WINDOW=$WINDOW ../shared/bench-anchor/run.sh "$N" | tail -n1
	fi
	run_one "$N"
done
