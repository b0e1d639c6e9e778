#!/usr/bin/env python3
"""Medians of bench/loadtest.sh's runs, per step and SFU, as Markdown tables with
Meridian/Janus ratios, str0m-spike/Meridian ratios where the spike ran, and
Meridian/before ratios where an earlier build ran (TARGETS with `before`). Usage: bench/loadtest_table.py DIR (files TARGET.SCENARIO.PUBS.SUBS.RUN.json)."""
import glob
import json
import os
import statistics
import sys
from collections import defaultdict

runs = defaultdict(dict)  # (scenario, pubs, subs) -> target -> [report]
for path in glob.glob(os.path.join(sys.argv[1], "*.json")):
    target, scenario, pubs, subs, _run = os.path.basename(path)[: -len(".json")].split(".")
    with open(path) as f:
        runs[(scenario, int(pubs), int(subs))].setdefault(target, []).append(json.load(f))

FIELDS = [  # (column, report key, format)
    ("tracks", "tracks_received", "{:.0f}"),
    ("stalled", "tracks_stalled", "{:.0f}"),
    ("packets/s", "packets_per_second", "{:.0f}"),
    ("loss %", "loss_percent", "{:.2f}"),
    ("delay p50 ms", "delay_p50_ms", "{:.2f}"),
    ("delay p99 ms", "delay_p99_ms", "{:.2f}"),
    ("CPU µs/packet", "sfu_cpu_us_per_packet", "{:.1f}"),
    ("RSS MiB", "sfu_rss_mib", "{:.0f}"),
]


def median(reports, key):
    values = [r[key] for r in reports if r.get(key) is not None]
    return statistics.median(values) if values else None


def table(scenario, steps, left, right, title):
    print(f"\n{scenario} (medians; {title} / ratio)\n")
    print("| publishers | subscribers | runs | " + " | ".join(c for c, _, _ in FIELDS) + " |")
    print("|---" * (3 + len(FIELDS)) + "|")
    for step in steps:
        by = runs[step]
        m, j = by.get(left, []), by.get(right, [])
        cells = []
        for _, key, fmt in FIELDS:
            a, b = median(m, key), median(j, key)
            fa = fmt.format(a) if a is not None else "-"
            fb = fmt.format(b) if b is not None else "-"
            ratio = f"{a / b:.2f}" if a is not None and b else "-"
            cells.append(f"{fa} / {fb} / {ratio}")
        print(f"| {step[1]} | {step[2]} | {len(m)}+{len(j)} | " + " | ".join(cells) + " |")


for scenario in ("livestream", "audio-room", "meeting"):
    steps = sorted(k for k in runs if k[0] == scenario)
    if not steps:
        continue
    table(scenario, steps, "meridian", "janus", "Meridian / Janus")
    spiked = [k for k in steps if "str0m" in runs[k]]
    if spiked:
        table(scenario, spiked, "str0m", "meridian", "str0m spike / Meridian")
    earlier = [k for k in steps if "before" in runs[k]]
    if earlier:
        table(scenario, earlier, "meridian", "before", "Meridian / the earlier build")
