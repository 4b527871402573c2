# shellcheck shell=bash
# bench/rounds.sh - the round loop bench/load.sh and bench/rbd.sh share
# (sourced, not run).  bench_rounds TRANSPORT runs ROUNDS rounds; each
# round every server of the SRV array (the order rotating by one each
# round) serves every workload of WORKLOADS on a fresh start:
#   start NAME        the caller's: starts NAME on $SOCK, sets SRV_PID
#   stop              here: stops SRV_PID and waits until it is gone
#   args_for W        the caller's: nbdload's arguments for workload W
#   export_for NAME   optional: the export name NAME serves ("" if unset)
#   after_run NAME W ROUND  optional: runs after nbdload, server still up
# and appends three RUN lines per run to $RAW (the rate, the server CPU
# per unit, the p99 latency) with transport=TRANSPORT, for ratios.py.
# nbdload runs on CPU 1 for SECONDS_PER_RUN seconds.

stop() {
  kill "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
  while kill -0 "$SRV_PID" 2>/dev/null; do sleep 0.05; done
  SRV_PID=""
}

bench_rounds() {
  local transport=$1 round i n name w exp j
  local target=(--unix "$SOCK")
  # tcp: the caller sets TCP_ADDR (HOST:PORT).
  [ "$transport" = tcp ] && target=(--tcp "$TCP_ADDR")
  n=${#SRV[@]}
  for round in $(seq "$ROUNDS"); do
    for i in $(seq 0 $((n - 1))); do
      name=${SRV[$(( (i + round - 1) % n ))]}
      for w in $WORKLOADS; do
        start "$name"
        exp=""
        if declare -F export_for > /dev/null; then
          exp=$(export_for "$name")
        fi
        # shellcheck disable=SC2046
        j=$(taskset -c 1 "$NBDLOAD" "${target[@]}" --export "$exp" \
              $(args_for "$w") --seconds "$SECONDS_PER_RUN" \
              --server-pid "$SRV_PID" --json) ||
          { echo "bench: nbdload failed against $name ($w)" >&2; stop; continue; }
        if declare -F after_run > /dev/null; then
          after_run "$name" "$w" "$round"
        fi
        stop
        /usr/bin/python3 - "$w" "$name" "$round" "$j" "$transport" \
            >> "$RAW" <<'PY'
import json, sys
w, name, rep, j = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
seq = w.startswith("seq")
rate, unit = (j["mib_s"], "MiB/s") if seq else (j["iops"], "IOPS")
cpu, cunit = ((j["server_s_per_gib"], "s") if seq
              else (j["server_us_per_op"], "us"))
common = "transport=%s name=%s rep=%s" % (sys.argv[5], name, rep)
print("RUN workload=%s %s value=%.1f unit=%s" % (w, common, rate, unit))
print("RUN workload=%s-cpu %s value=%.4f unit=%s" % (w, common, cpu, cunit))
print("RUN workload=%s-p99 %s value=%d unit=us" % (w, common, j["p99_us"]))
PY
        tail -3 "$RAW" | cut -c1-120
      done
    done
  done
}
