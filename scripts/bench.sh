#!/usr/bin/env bash
# bench.sh: what `make bench` runs, in one go and within about 20 minutes
# on a 2-core machine:
#   1. the Go micro-benchmarks (-benchtime 200ms), to bench/results/micro-<time>.txt;
#   2. for each N in $NS (default "100 400"), the anchor (Kamailio +
#      rtpengine, userspace, ANCHOR_DIR, default ../shared/bench-anchor)
#      and then trunkgate (scripts/loadtest.sh), back to back, same N;
#   3. call setups a second, anchor then trunkgate, at each rate in $RATES
#      (default "1000 1500") for CPS_S seconds (default 10);
# then writes one table with the ratios into docs/PERFORMANCE.md between
# the bench markers (date, cores, each figure). Without the anchor folder,
# or without kamailio/rtpengine installed, the anchor columns are empty.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
NS=${NS:-"100 400"}
RATES=${RATES:-"1000 1500"}
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

ROWS=$(mktemp)
for N in $NS; do
	anchor=""
	if [ $have_anchor = 1 ]; then
		log "anchor N=$N"
		anchor=$(ANCHOR_OUT=$ROOT/bench/anchor "$ANCHOR_DIR/run.sh" "$N" 2>/dev/null | tail -n1 || true)
		head=$( { ls -t "$ANCHOR_DIR"/results/summary.tsv "$ROOT"/bench/anchor/results/summary.tsv 2>/dev/null || true; } | head -n1)
		[ -n "$head" ] && anchor_head=$(head -n1 "$head") || anchor_head=""
	fi
	log "trunkgate N=$N"
	edge=$(./scripts/loadtest.sh "$N" 2>/dev/null | tail -n1)
	edge_head=$(head -n1 bench/results/summary.tsv)
	printf 'load\t%s\t%s\t%s\t%s\t%s\n' "$N" "${anchor_head:-}" "$anchor" "$edge_head" "$edge" >>"$ROWS"
done
for R in $RATES; do
	anchor=""
	if [ $have_anchor = 1 ]; then
		log "anchor cps $R/s"
		anchor=$(bash "$ANCHOR_DIR/cps.sh" "$R" "$CPS_S" 2>/dev/null | tail -n1 || true)
	fi
	log "trunkgate cps $R/s"
	edge=$(./scripts/cps.sh "$R" "$CPS_S" 2>/dev/null | tail -n1 || true)
	printf 'cps\t%s\t%s\t%s\n' "$R" "$anchor" "$edge" >>"$ROWS"
done

python3 - "$ROWS" "$STAMP" "$(nproc)" "bench/results/micro-$STAMP.txt" <<'PY'
import re, sys
rows_file, stamp, cores, micro = sys.argv[1:5]
def tsv(head, line):
    if not head or not line:
        return {}
    return dict(zip(head.split("\t"), line.split("\t")))
def num(d, k):
    try:
        return float(d[k])
    except (KeyError, ValueError):
        return None
def fmt(x, p=2):
    return "–" if x is None else f"{x:.{p}f}"
def ratio(a, b):
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}×"
load, cps = [], []
for line in open(rows_file):
    f = line.rstrip("\n").split("\t")
    if f[0] == "load":
        _, n, ah, a, eh, e = (f + [""] * 6)[:6]
        A, E = tsv(ah, a), tsv(eh, e)
        rt, ed = num(A, "rtpe_ms/s/call"), num(E, "edge_ms_s_per_call")
        load.append(f"| {n} | {fmt(rt)} | {fmt(num(A, 'kam_ms/s'), 1)} | {fmt(ed)} | **{ratio(ed, rt)}** | "
                    f"{fmt(num(E, 'rss_kb_per_call'), 0)} KB | {fmt(num(E, 'goroutines_per_call'), 1)} | "
                    f"{fmt(num(E, 'app_ms_s'), 0)} + {fmt(num(E, 'uac_sipp_ms_s'), 0)} | {E.get('uac_failed', '–')} | "
                    f"{E.get('frames_dropped', '–')} | {E.get('rtp_lost', '–')} | {E.get('setup_ms_mean', '–')} |")
    else:
        _, r, a, e = (f + [""] * 4)[:4]
        def grab(s, pat):
            m = re.search(pat, s)
            return float(m.group(1)) if m else None
        kam, rtpe = grab(a, r"kamailio ([\d.]+)"), grab(a, r"rtpengine ([\d.]+)")
        anc = kam + rtpe if kam is not None and rtpe is not None else None
        ed = grab(e, r"edge ([\d.]+) ms/call")
        cps.append(f"| {r} | {fmt(anc, 3)} | {fmt(grab(a, r'failed (\d+)'), 0)} | {fmt(ed, 3)} | **{ratio(ed, anc)}** | "
                   f"{fmt(grab(e, r'failed (\d+)'), 0)} | {fmt(grab(e, r'setup_mean_ms ([\d.]+)'))} | "
                   f"{fmt(grab(e, r'setup_p99_ms ([\d.]+)'))} | {fmt(grab(e, r'echo_app ([\d.]+)'), 3)} + {fmt(grab(e, r'sipp_uac ([\d.]+)'), 3)} |")
out = [f"<!-- bench:start -->",
       f"`make bench`, {stamp}, {cores} cores; micro-benchmarks in `{micro}`.",
       "",
       "| N | rtpengine ms/s per call | Kamailio ms/s | trunkgate edge ms/s per call | edge ÷ rtpengine | edge RSS per call | goroutines per call | load generators ms/s (echo app + SIPp) | failed | frames dropped | RTP lost | setup ms |",
       "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", *load, "",
       "| calls/s | Kamailio + rtpengine ms per call | failed | trunkgate edge ms per call | edge ÷ anchor | failed | setup mean ms | setup p99 ms | load generators ms per call (echo app + SIPp) |",
       "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", *cps,
       "<!-- bench:end -->"]
doc = open("docs/PERFORMANCE.md").read()
block = "\n".join(out)
if "<!-- bench:start -->" in doc:
    doc = re.sub(r"<!-- bench:start -->.*?<!-- bench:end -->", lambda _: block, doc, flags=re.S)
else:
    doc = doc.rstrip("\n") + "\n\n## `make bench`: the edge beside the anchor, one run\n\n" + block + "\n"
open("docs/PERFORMANCE.md", "w").write(doc)
print(block)
PY
rm -f "$ROWS"
