#!/usr/bin/env python3
"""bench-table.py RUN STAMP CORES MICRO: the table of a `make bench` run
(the files scripts/bench.sh left in RUN), written into docs/PERFORMANCE.md
between the bench markers and printed."""
import glob
import os
import re
import sys

run, stamp, cores, micro = sys.argv[1:5]


def tsv(path):
    try:
        head, line = open(path).read().splitlines()[:2]
    except (OSError, ValueError):
        return {}
    return dict(zip(head.split("\t"), line.split("\t")))


def text(path):
    try:
        return open(path).read().strip()
    except OSError:
        return ""


def num(d, k):
    try:
        return float(d[k])
    except (KeyError, ValueError):
        return None


def grab(s, pat):
    m = re.search(pat, s)
    return float(m.group(1)) if m else None


def fmt(x, p=2):
    return "–" if x is None else f"{x:.{p}f}"


def ratio(a, b):
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def key(path):
    return int(re.search(r"-(\d+)-", os.path.basename(path)).group(1))


load = []
for path in sorted(glob.glob(f"{run}/load-*-edge.tsv"), key=key):
    n = key(path)
    E, A, Z = tsv(path), tsv(f"{run}/load-{n}-anchor.tsv"), tsv(f"{run}/load-{n}-null.tsv")
    rt, ed, nb = num(A, "rtpe_ms/s/call"), num(E, "edge_ms_s_per_call"), num(Z, "edge_ms_s_per_call")
    gens = f"{fmt(num(E, 'app_ms_s'), 0)} + {fmt(num(E, 'uac_sipp_ms_s'), 0)}"
    load.append(f"| {n} | {fmt(rt)} | {fmt(num(A, 'kam_ms/s'), 1)} | {fmt(ed)} | **{ratio(ed, rt)}** | "
                f"{fmt(nb)} | **{ratio(ed, nb)}** | {fmt(num(Z, 'rss_kb_per_call'), 0)} KB | "
                f"{fmt(num(E, 'rss_kb_per_call'), 0)} KB | {fmt(num(E, 'goroutines_per_call'), 1)} | {gens} | "
                f"{E.get('uac_failed', '–')} | {E.get('frames_dropped', '–')} | {E.get('rtp_lost', '–')} | "
                f"{E.get('setup_ms_mean', '–')} | {E.get('setup_under_20ms_pct', '–')} % | "
                f"{E.get('pacing_p5', '–')} / {E.get('pacing_p50', '–')} / {E.get('pacing_p95', '–')} | "
                f"{E.get('pacing_within2ms_pct', '–')} % | {E.get('pacing_lost_pct', '–')} % |")

cps = []
for path in sorted(glob.glob(f"{run}/cps-*-edge.txt"), key=key):
    r = key(path)
    e, a = text(path), text(f"{run}/cps-{r}-anchor.txt")
    kam, rtpe = grab(a, r"kamailio ([\d.]+)"), grab(a, r"rtpengine ([\d.]+)")
    anc = kam + rtpe if kam is not None and rtpe is not None else None
    ed = grab(e, r"edge ([\d.]+) ms/call")
    a_fail, e_fail = grab(a, r"failed (\d+)"), grab(e, r"failed (\d+)")
    mean, p99 = grab(e, r"setup_mean_ms ([\d.]+)"), grab(e, r"setup_p99_ms ([\d.]+)")
    gens = f"{fmt(grab(e, r'echo_app ([0-9.]+)'), 3)} + {fmt(grab(e, r'sipp_uac ([0-9.]+)'), 3)}"
    cps.append(f"| {r} | {fmt(anc, 3)} | {fmt(a_fail, 0)} | {fmt(ed, 3)} | **{ratio(ed, anc)}** | {fmt(e_fail, 0)} | "
               f"{fmt(mean)} | {fmt(p99)} | {gens} |")

block = "\n".join([
    "<!-- bench:start -->",
    f"`make bench`, {stamp}, {cores} cores; micro-benchmarks in `{micro}`, the raw measurements in `{run}` (not committed).",
    "",
    "| N | rtpengine ms/s per call | Kamailio ms/s | trunkgate edge ms/s per call | edge ÷ rtpengine "
    "| null bridge ms/s per call | edge ÷ null bridge | null bridge RSS per call | edge RSS per call "
    "| goroutines per call | load generators ms/s (echo app + SIPp) | failed | frames dropped | RTP lost | setup ms mean "
    "| setup under 20 ms | gaps toward SIPp p5 / p50 / p95 ms (ptime 30) | gaps within 30 ± 2 ms | RTP lost toward SIPp |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    *load,
    "",
    "| calls/s | Kamailio + rtpengine ms per call | failed | trunkgate edge ms per call | edge ÷ anchor | failed "
    "| setup mean ms | setup p99 ms | load generators ms per call (echo app + SIPp) |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    *cps,
    "<!-- bench:end -->",
])
doc = open("docs/PERFORMANCE.md").read()
if "<!-- bench:start -->" in doc:
    doc = re.sub(r"<!-- bench:start -->.*?<!-- bench:end -->", lambda _: block, doc, flags=re.S)
else:
    doc = doc.rstrip("\n") + "\n\n## `make bench`: the edge beside the anchor, in one run\n\n" + block + "\n"
open("docs/PERFORMANCE.md", "w").write(doc)
print(block)
