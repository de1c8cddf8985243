#!/usr/bin/env bash
# bench.sh: what `make bench` runs, in one go and within about 20 minutes
# on a 2-core machine:
#   1. the Go micro-benchmarks (-benchtime 200ms), to bench/results/micro-<time>.txt;
#   2. for each N in $NS (default "100 400"), the anchor (Kamailio +
#      rtpengine, userspace, ANCHOR_DIR, default ../shared/bench-anchor)
#      then trunkgate (scripts/loadtest.sh) and then the null bridge
#      (BRIDGE=null: the same sockets and packets, no processing), back to
#      back, same N;
#   3. call setups a second, anchor then trunkgate, at each rate in $RATES
#      (default "600 800 1000 1500") for CPS_S seconds (default 10);
# then writes one table with the ratios into docs/PERFORMANCE.md between
# the bench markers (date, cores, each figure). Without the anchor folder,
# or without kamailio/rtpengine installed, the anchor columns are empty.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
NS=${NS:-"100 400"}
RATES=${RATES:-"600 800 1000 1500"}
CPS_S=${CPS_S:-10}
ANCHOR_DIR=${ANCHOR_DIR:-$ROOT/../shared/bench-anchor}
STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p bench/results
log() { echo "[$(date +%T)] $*" >&2; }
have_anchor=0
if [ -x "$ANCHOR_DIR/run.sh" ] && command -v kamailio >/dev/null && command -v rtpengine >/dev/null; then
	have_anchor=1
else
	log "no anchor (needs $ANCHOR_DIR, kamailio and rtpengine-daemon): trunkgate alone"
fi

log "micro-benchmarks"
go test -run '^$' -bench . -benchmem -benchtime 200ms ./... >"bench/results/micro-$STAMP.txt" 2>&1 || true

RUN=bench/results/bench-$STAMP # one file per measurement, read by the table below
mkdir -p "$RUN"
for N in $NS; do
	if [ $have_anchor = 1 ]; then
		log "anchor N=$N"
		ANCHOR_OUT=$ROOT/bench/anchor "$ANCHOR_DIR/run.sh" "$N" >/dev/null 2>&1 || true
		summary=$( { ls -t "$ANCHOR_DIR"/results/summary.tsv "$ROOT"/bench/anchor/results/summary.tsv 2>/dev/null || true; } | head -n1)
		[ -n "$summary" ] && { head -n1 "$summary"; tail -n1 "$summary"; } >"$RUN/load-$N-anchor.tsv"
	fi
	for bridge in edge null; do
		log "$bridge N=$N"
		PACING=1 BRIDGE=$bridge ./scripts/loadtest.sh "$N" >/dev/null 2>&1 || true
		cp "$(ls -td bench/results/N"$N"-* | head -n1)/row.tsv" "$RUN/load-$N-$bridge.tsv" 2>/dev/null || true
	done
done
for R in $RATES; do
	if [ $have_anchor = 1 ]; then
		log "anchor cps $R/s"
		bash "$ANCHOR_DIR/cps.sh" "$R" "$CPS_S" 2>/dev/null | tail -n1 >"$RUN/cps-$R-anchor.txt" || true
	fi
	log "trunkgate cps $R/s"
	./scripts/cps.sh "$R" "$CPS_S" 2>/dev/null | tail -n1 >"$RUN/cps-$R-edge.txt" || true
done
./scripts/bench-table.py "$RUN" "$STAMP" "$(nproc)" "bench/results/micro-$STAMP.txt"
