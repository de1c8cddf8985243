#!/usr/bin/env python3
"""pacing.py PCAP PTIME_MS: how evenly the edge's RTP left, from a capture
on loopback (dumpcap -P: the kernel's timestamps, taken as each packet
crossed the interface). Per RTP stream (source port and SSRC), the gaps
between consecutive packets; over all streams, their percentiles, the
share within PTIME ± 2 ms, and the loss seen in sequence numbers. Prints
one line: key value pairs."""
import struct
import sys

path, ptime = sys.argv[1], float(sys.argv[2])
data = open(path, "rb").read()
magic = struct.unpack("<I", data[:4])[0]
endian, nano = {0xA1B2C3D4: ("<", False), 0xA1B23C4D: ("<", True), 0xD4C3B2A1: (">", False), 0x4D3CB2A1: (">", True)}[magic]
linktype = struct.unpack(endian + "I", data[20:24])[0]
link_hdr = {1: 14, 113: 16, 276: 20}.get(linktype, 14)  # Ethernet (loopback), Linux SLL, SLL2
streams = {}
off = 24
while off + 16 <= len(data):
    sec, frac, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
    pkt = data[off + 16:off + 16 + incl]
    off += 16 + incl
    t = sec + frac / (1e9 if nano else 1e6)
    ip = pkt[link_hdr:]
    if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
        continue
    ihl = (ip[0] & 15) * 4
    udp = ip[ihl:]
    src = struct.unpack(">H", udp[:2])[0]
    rtp = udp[8:]
    if src % 2 or len(rtp) < 12 or rtp[0] >> 6 != 2 or 72 <= (rtp[1] & 0x7F) <= 76:
        continue  # RTCP (odd ports, or payload types 200-204 seen as 72-76)
    seq = struct.unpack(">H", rtp[2:4])[0]
    ssrc = struct.unpack(">I", rtp[8:12])[0]
    streams.setdefault((src, ssrc), []).append((t, seq))
gaps, lost, expected = [], 0, 0
for pkts in streams.values():
    pkts.sort()
    for (t0, s0), (t1, s1) in zip(pkts, pkts[1:]):
        step = (s1 - s0) & 0xFFFF
        if step == 0 or step > 1000:
            continue
        expected += step
        lost += step - 1
        if step == 1:
            gaps.append((t1 - t0) * 1000)
gaps.sort()


def pct(p):
    return gaps[min(len(gaps) - 1, int(len(gaps) * p / 100))] if gaps else float("nan")


within = sum(1 for g in gaps if abs(g - ptime) <= 2) / max(1, len(gaps)) * 100
print(f"streams {len(streams)} gaps {len(gaps)} p1 {pct(1):.2f} p5 {pct(5):.2f} p50 {pct(50):.2f} p95 {pct(95):.2f} "
      f"p99 {pct(99):.2f} within2ms_pct {within:.2f} lost_pct {lost / max(1, expected) * 100:.3f}")
