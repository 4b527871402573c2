#!/usr/bin/python3
"""ratios.py [--base NAME] RAW - blockd's (or NAME's) ratio against every
other server, per workload and transport, from the harness's RUN lines
(medians over the rounds).  A ratio > 1 always means the base did better:
for rates it is blockd / peer, for times and latencies peer / blockd."""
import statistics
import sys
from collections import defaultdict

LOWER_IS_BETTER = {"us", "ms", "s"}


def parse(path):
    runs = defaultdict(list)
    units = {}
    with open(path) as f:
        for line in f:
            if not line.startswith("RUN "):
                continue
            kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
            try:
                value = float(kv["value"])
            except (KeyError, ValueError):
                continue
            key = (kv["workload"], kv["transport"], kv["name"])
            runs[key].append(value)
            units[kv["workload"]] = kv.get("unit", "")
    return runs, units


def main():
    args = sys.argv[1:]
    base = "blockd"
    if args[:1] == ["--base"]:
        base, args = args[1], args[2:]
    runs, units = parse(args[0])
    med = {k: statistics.median(v) for k, v in runs.items()}
    peers = sorted({k[2] for k in med} - {base})
    rows = sorted({(k[0], k[1]) for k in med})
    print("%-18s %-5s %15s  %s" % ("workload", "tr", base,
                                    "  ".join("%-22s" % p for p in peers)))
    worst = None
    for w, tr in rows:
        b = med.get((w, tr, base))
        if b is None:
            continue
        cells = []
        for p in peers:
            v = med.get((w, tr, p))
            if v is None or v == 0 or b == 0:
                cells.append("%-22s" % "n/a")
                continue
            r = v / b if units[w] in LOWER_IS_BETTER else b / v
            if p == "qemu-nbd" and (worst is None or r < worst[0]):
                worst = (r, w, tr)
            cells.append("%-22s" % ("%.2fx (%g)" % (r, v)))
        print("%-18s %-5s %15g  %s" % (w, tr, b, "  ".join(cells)))
    if worst:
        print("lowest ratio vs qemu-nbd: %.2fx (%s, %s)" % worst)


if __name__ == "__main__":
    main()
