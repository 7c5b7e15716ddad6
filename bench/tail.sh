#!/bin/bash
# bench/tail.sh: where the fixed-rate scenario's latency tail comes from.
#
#   bench/tail.sh                 the bare relay and write-through, one run
#                                 each, with a scheduler trace of both CPUs
#   BENCH_OUT=/work/x bench/tail.sh
#
# Runs bench/run.sh (rate scenario only, BENCH_REPEAT=1, no mosquitto; its
# other knobs pass through: IM_MODULE, BENCH_MODES, BENCH_SHIELD, ...) and,
# over each generator's window, `perf sched record -k mono -C 0,1` (the
# clock of the generators' --series-out). Then bench/tail.py puts each
# episode of the latency series next to what the two CPUs did. Needs perf
# (linux-perf). The trace costs CPU itself (perf is a task in it); use it to
# tell where a tail comes from, and plain bench/run.sh for the figures.

set -u -o pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${BENCH_OUT:-$HERE/out/tail-$(date +%Y%m%d-%H%M%S)}
SECS=${TAIL_SECS:-13}           # traced seconds of each window
mkdir -p "$OUT"

command -v perf > /dev/null || { echo "tail: perf not installed" >&2; exit 1; }

BENCH_SCENARIOS=rate BENCH_REPEAT=1 BENCH_PEER=0 BENCH_IDLE=" " BENCH_TCP=0 \
BENCH_FANOUT_WIDE= BENCH_MODES=${BENCH_MODES:-write_through} \
BENCH_OUT=$OUT/bench "$HERE/run.sh" > "$OUT/run.log" 2>&1 &
RUN=$!

# each generator: wait for it, skip its logins (imgen), trace its window
for who in floor imgen; do
    g=
    for ((i = 0; i < 2400; i++)); do
        g=$(pgrep -f -- "bin/$who --label .*rate" | head -1)
        [[ -n $g ]] && break
        kill -0 "$RUN" 2> /dev/null || break
        sleep 0.05
    done
    if [[ -z $g ]]; then
        echo "tail: no $who run seen" >&2
        continue
    fi
    [[ $who == imgen ]] && sleep 0.8
    echo "$who: load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/trace.txt"
    perf sched record -k mono -C 0,1 -o "$OUT/sched-$who.data" \
        -- sleep "$SECS" > "$OUT/perf-$who.log" 2>&1
done
wait "$RUN"

for who in floor imgen; do
    [[ -f $OUT/sched-$who.data ]] || continue
    perf sched script -i "$OUT/sched-$who.data" > "$OUT/sched-$who.txt" \
        2> /dev/null
    rm -f "$OUT/sched-$who.data"
done

{
    cat "$OUT/trace.txt"
    s=$(ls "$OUT"/bench/series-floor-rate*.txt 2> /dev/null | head -1)
    [[ -n $s && -f $OUT/sched-floor.txt ]] &&
        /usr/bin/python3 "$HERE/tail.py" --series "$s" \
            --sched "$OUT/sched-floor.txt" --server floor
    for s in "$OUT"/bench/series-im-*-rate*.txt.0; do
        [[ -f $s && -f $OUT/sched-imgen.txt ]] || continue
        /usr/bin/python3 "$HERE/tail.py" --series "$s" \
            --sched "$OUT/sched-imgen.txt" --server nginx,redis-server
    done
} | tee "$OUT/tail.txt"
