#!/usr/bin/python3
"""bench/summary.py DIR - the one table of a bench/all.sh run: for every
benchmark, workload and transport, blockd's median beside the best
peer's, their ratio (> 1: blockd better, for rates and for times alike)
and, where the benchmark measured it, the server CPU per unit of work;
then blockd's 4 KiB QD1 read rate against the transport's own round-trip
ceiling; then each benchmark's full ratio table.  Writes DIR/summary.png
(blockd / best peer, one bar a row) with gnuplot when it is installed.

blockd's own variants (blockd-qcow2, blockd-nbd, blockd-plain) are not
peers: each gets its ratio to blockd in the last column instead."""
import os
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict

LOWER_IS_BETTER = {"us", "ms", "s"}
CPU_FIELDS = {"srv_cpu_per_gib_s": "s", "srv_cpu_per_io_us": "us",
              "srv_cpu_per_conn_us": "us"}
SOURCES = ("clients", "load", "tls", "qmp")


def parse(path):
    """{(workload, transport): {name: [values]}} and {workload: unit}.
    The harness's CEILING lines (tceil) count as runs of "tceil"."""
    runs = defaultdict(lambda: defaultdict(list))
    units = {}
    if not os.path.exists(path):
        return runs, units
    with open(path) as f:
        for line in f:
            if line.startswith("CEILING "):
                line = line.replace("CEILING ", "RUN name=tceil ", 1)
            if not line.startswith("RUN "):
                continue
            kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
            w = kv.get("workload", kv.get("test"))
            try:
                value = float(kv["value"])
            except (KeyError, ValueError):
                continue
            key = (w, kv.get("transport", "?"))
            runs[key][kv["name"]].append(value)
            units[w] = kv.get("unit", "")
            for field, unit in CPU_FIELDS.items():
                if field in kv:
                    cw = w + "-cpu"
                    runs[(cw, key[1])][kv["name"]].append(float(kv[field]))
                    units[cw] = unit
    return runs, units


def better(unit, a, b):
    """Ratio of a against b, > 1 when a is the better one."""
    if a == 0 or b == 0:
        return None
    return b / a if unit in LOWER_IS_BETTER else a / b


def headline(d):
    rows = []
    for src in SOURCES:
        runs, units = parse(os.path.join(d, src, "raw.txt"))
        for (w, tr), by_name in sorted(runs.items()):
            med = {n: statistics.median(v) for n, v in by_name.items()}
            if "blockd" not in med or "tceil" in med:
                continue
            b, unit = med["blockd"], units[w]
            peers = {n: v for n, v in med.items()
                     if not n.startswith("blockd")}
            best = None
            if peers:
                pick = min if unit in LOWER_IS_BETTER else max
                name = pick(peers, key=peers.get)
                best = (name, peers[name], better(unit, b, peers[name]))
            variants = ["%s %.2fx" % (n, better(unit, v, b))
                        for n, v in sorted(med.items())
                        if n.startswith("blockd-") and better(unit, v, b)]
            rows.append((src, w, tr, b, unit, best, variants))
    return rows


def ceiling(d):
    """blockd's QD1 4 KiB read IOPS (nbdload) against tceil's NBD-shaped
    QD1 round trips on the same transport."""
    runs, _ = parse(os.path.join(d, "clients", "raw.txt"))
    tc = {k: v for k, v in runs.items() if "tceil" in v}
    load, _ = parse(os.path.join(d, "load", "raw.txt"))
    out = []
    for (w, tr), by_name in sorted(tc.items()):
        out.append("tceil %-22s %-5s %12.1f (median of %d)"
                   % (w, tr, statistics.median(by_name["tceil"]),
                      len(by_name["tceil"])))
    qd1 = tc.get(("4k_read_rtt_qd1", "unix"), {}).get("tceil")
    b = load.get(("randread1", "unix"), {}).get("blockd")
    if qd1 and b:
        r = statistics.median(b) / statistics.median(qd1)
        out.append("blockd QD1 4 KiB reads (nbdload, unix) reach %.0f%% of "
                   "the transport's round trips (target >= 85%%)" % (100 * r))
    return out


def chart(d, rows):
    if shutil.which("gnuplot") is None:
        return "no gnuplot: no summary.png (apt-get install gnuplot-nox)"
    data = os.path.join(d, "summary.dat")
    n = 0
    with open(data, "w") as f:
        for src, w, tr, _b, _unit, best, _v in rows:
            if best is None or best[2] is None:
                continue
            f.write('%d "%s %s %s" %.3f\n' % (n, src, w, tr, best[2]))
            n += 1
    if n == 0:
        return "nothing to chart"
    png = os.path.join(d, "summary.png")
    # Bars grow from 1 (level) on a log scale: right when blockd is
    # better, left when it is worse; ratios beyond 1/30..30 are clipped.
    script = """
set terminal pngcairo size 1100,%d font ",9" noenhanced
set output "%s"
set title "blockd / best peer (> 1: blockd better; dashed at 1.5)"
set style fill solid 0.6
set logscale x 2
set xrange [1.0/32:32]
set yrange [-1:%d]
set grid x
set arrow from 1,-1 to 1,%d nohead lc rgb "black"
set arrow from 1.5,-1 to 1.5,%d nohead dt 2 lc rgb "dark-green"
clip(x) = x < 1.0/30 ? 1.0/30 : (x > 30 ? 30 : x)
plot "%s" using (1):1:(1):(clip($3)):($1-0.4):($1+0.4):ytic(2) \\
     with boxxyerror notitle lc rgb "steelblue"
""" % (120 + 16 * n, png, n, n, n, data)
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True,
                       capture_output=True)
    except subprocess.CalledProcessError as e:
        return "gnuplot failed: %s" % e.stderr.strip()
    return "chart: %s" % png


def main():
    d = sys.argv[1]
    head = os.path.join(d, "header.txt")
    if os.path.exists(head):
        print(open(head).read().rstrip())
    rows = headline(d)
    print("\n%-8s %-20s %-9s %12s %-7s  %-34s %7s  %s" % (
        "bench", "workload", "tr", "blockd", "unit", "best peer (median)",
        "ratio", "blockd variants / blockd"))
    for src, w, tr, b, unit, best, variants in rows:
        peer = "%s (%g)" % (best[0], best[1]) if best else "-"
        ratio = "%.2fx" % best[2] if best and best[2] else "-"
        print("%-8s %-20s %-9s %12g %-7s  %-34s %7s  %s" % (
            src, w, tr, b, unit, peer, ratio, ", ".join(variants)))
    print("\nratio: blockd against the best peer on that row, > 1 when "
          "blockd is better (rates: blockd / peer; times, latencies and "
          "CPU per unit: peer / blockd)")
    print()
    for line in ceiling(d):
        print(line)
    path = os.path.join(d, "load", "seqwfloor.txt")
    if os.path.exists(path):
        # the floor under seqwrite: seqwfloor's medians
        lines = open(path).read().rstrip().splitlines()
        k = next((i for i, l in enumerate(lines)
                  if l.startswith("# medians")), len(lines))
        print("\nload/seqwfloor.txt (server CPU per GiB of each server "
              "shape, no NBD):\n%s" % "\n".join(lines[k:]))
    for name in ("scale/many-exports.txt", "jobs/backup.txt",
                 "jobs/mirror.txt"):
        path = os.path.join(d, name)
        if os.path.exists(path):
            # the scripts' own summaries: their last lines
            lines = open(path).read().rstrip().splitlines()
            print("\n%s:\n%s" % (name, "\n".join(lines[-4:])))
    rss = os.path.join(d, "clients", "idle-rss.txt")
    if os.path.exists(rss):
        print("\nidle connections (bench/idle-rss.py):")
        print(open(rss).read().rstrip())
    for src in SOURCES:
        path = os.path.join(d, src, "ratios.txt")
        if os.path.exists(path):
            print("\n%s/ratios.txt:\n%s" % (src, open(path).read().rstrip()))
    print("\n" + chart(d, rows))


if __name__ == "__main__":
    main()
