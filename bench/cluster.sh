#!/bin/bash
# bench/cluster.sh: 1:1 write-through on one Redis and on a Redis Cluster of
# three masters, in one run (issue 16 item 5; docs/decisions/043-redis-cluster.md).
#
#   bench/cluster.sh                 writes bench/CLUSTER.md (about 2 min)
#   CLUSTER_REPEAT=1 bench/cluster.sh
#
# Starts its own redis-server (one), three more with cluster-enabled joined by
# `redis-cli --cluster create`, tools/im-usercentre, and nginx with a copy of
# the built module (bench/nginx.conf.in: one worker on CPU 0; with
# "im_redis_cluster on;" for the cluster), all on 127.0.0.1; runs
# bench/bin/imgen's 1:1 scenario (pairs, write_through) against each in
# turn, CLUSTER_REPEAT times, alternating, and stops what it started, by pid.
# Every Redis runs on CPU 0 with the worker, the generator on CPU 1 (the
# layout of bench/run.sh); the Redis CPU is the sum over the servers of the
# variant (imgen --aux-pids).
#
# Knobs: CLUSTER_PAIRS (1000), CLUSTER_DURATION (10 s), CLUSTER_WARMUP (2 s),
# CLUSTER_REPEAT (3), BENCH_WINDOW (4), CLUSTER_PORT_BASE (22000: the bus
# ports, +10000, stay below the ephemeral range), CLUSTER_OUT (a folder of
# the caller's: the report goes there), IM_MODULE.

set -u -o pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
PAIRS=${CLUSTER_PAIRS:-1000}
DURATION=${CLUSTER_DURATION:-10}
WARMUP=${CLUSTER_WARMUP:-2}
REPEAT=${CLUSTER_REPEAT:-3}
WINDOW=${BENCH_WINDOW:-4}
PAYLOAD=128
PB=${CLUSTER_PORT_BASE:-22000}
IM_MODULE=${IM_MODULE:-$IM_BUILD}
OUT=${CLUSTER_OUT:-$HERE/out/$(date +%Y%m%d-%H%M%S)-cluster}

open_out
# below the ephemeral range, and so are the cluster's bus ports (+10000)
port_block "$PB" WS_PORT=95 TCP_PORT=96 REDIS_PORT=79 UC_PORT=90 \
    C1=81 C2=82 C3=83 B1=10081 B2=10082 B3=10083 || exit 1
build_tools bin/imgen
[[ -f $IM_MODULE ]] || { log "$IM_MODULE not built"; exit 1; }
{
    facts date nproc redis commit start
    echo "cluster: pairs=$PAIRS duration=$DURATION repeat=$REPEAT"
} > "$OUT/machine.txt"
keep_module module "$IM_MODULE" "$OUT/ngx_im_module.so" || exit 1
IM_MODULE=$OUT/ngx_im_module.so
gen_users $((2 * PAIRS))

# one Redis, and three with cluster-enabled joined into a cluster; all on
# CPU 0 with the worker
mkdir -p "$OUT/redis-one"
start_redis "$OUT/redis-one" 0 || exit 1
R1=$REDIS_PID
ONE_PORT=$REDIS_PORT
KPIDS=()
for port in $C1 $C2 $C3; do
    mkdir -p "$OUT/redis-$port"
    REDIS_PORT=$port start_redis "$OUT/redis-$port" 0 --cluster-enabled yes \
        --cluster-config-file "$OUT/redis-$port/nodes.conf" || exit 1
    KPIDS+=("$REDIS_PID")
done
REDIS_PORT=$ONE_PORT
redis-cli --cluster create "127.0.0.1:$C1" "127.0.0.1:$C2" "127.0.0.1:$C3" \
    --cluster-yes > "$OUT/cluster-create.log" 2>&1 \
    || { log "cluster create failed"; exit 1; }
for ((i = 0; i < 100; i++)); do
    ok=1
    for p in $C1 $C2 $C3; do
        redis-cli -p "$p" CLUSTER INFO | grep -q cluster_state:ok || ok=0
    done
    (( ok )) && break
    sleep 0.1
done

start_uc_perl "$OUT/users.txt" "$OUT/usercentre.log" || exit 1

run() {     # label redis-port main aux-pids flush-ports...
    local label=$1 port=$2 main=$3 aux=$4 p dir tmo
    shift 4
    for p in "$@"; do redis-cli -p "$p" FLUSHALL > /dev/null; done
    dir=$OUT/nginx-$label-$REP
    mkdir -p "$dir/tmp"
    im_conf "$dir/nginx.conf" DIR="$dir" IM_MODULE="$IM_MODULE" WORKERS=1 \
        AFFINITY="worker_cpu_affinity 01;" DELIVERY=write_through \
        WS_PORT="$WS_PORT" TCP_PORT="$TCP_PORT" REDIS_PORT="$port" \
        MAIN="$main" || exit 1
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -t > "$dir/test.log" 2>&1 \
        || { log "nginx $label rejected: $(grep -m1 emerg "$dir/test.log")"
             exit 1; }
    nginx_up "$dir" "$dir/nginx.conf" "$WS_PORT" 1 \
        || { log "nginx $label did not start"; exit 1; }
    sleep 1     # the worker's connections (and the slot map)
    tmo=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 45 }')
    gen_line "$label-$REP" "$tmo" taskset -c 1 "$IMGEN" --label "$label" \
        -T "$tmo" -l "$PAYLOAD" -m ws -p "$WS_PORT" -s pairs -k "$PAIRS" \
        -d "$DURATION" -W "$WARMUP" -w "$WINDOW" --drain 2 \
        --cpu-pids "$NGX_WORKERS" --aux-pids "$aux"
    echo "{\"rep\":$REP,${GEN_LINE#\{}" >> "$RESULTS"
    log "  $GEN_LINE"
    stop_pid "$NGX_PID" QUIT
    nginx_alerts "$dir/error.log" 3 >&2
}

for ((REP = 1; REP <= REPEAT; REP++)); do
    run one "$ONE_PORT" "" "$R1" "$ONE_PORT"
    run cluster "$C1" "im_redis_cluster on;" \
        "$(IFS=,; echo "${KPIDS[*]}")" "$C1" "$C2" "$C3"
done

facts end >> "$OUT/machine.txt"

# a run into a folder of the caller's leaves the committed report alone
REPORT=$HERE/CLUSTER.md
[[ -n ${CLUSTER_OUT:-} ]] && REPORT=$OUT/CLUSTER.md
/usr/bin/python3 - "$RESULTS" "$OUT/machine.txt" \
    "$(realpath --relative-to="$REPO" "$OUT")" "$PAIRS" "$DURATION" \
    > "$REPORT" <<'EOF'
import json, sys
res, machine, rel, pairs, dur = sys.argv[1:6]
rows = [json.loads(l) for l in open(res) if l.strip()]
print("# 1:1 write-through: one Redis and a Redis Cluster of three masters\n")
print("Written by `bench/cluster.sh` (issue 16 item 5, decision 043). One "
      "nginx worker on CPU 0 with every Redis of the variant, the generator "
      "on CPU 1; %s pairs, %s s measured, runs alternating. Redis CPU: the "
      "sum over the variant's servers. Raw results: `%s/results.jsonl`.\n"
      % (pairs, dur, rel))
print("```")
print(open(machine).read().rstrip())
print("```\n")
print("| variant | run | delivered/s | worker us/msg | Redis us/msg "
      "| Redis CPU % | p50 ms | p99 ms | lost | others' CPU % |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    s = r.get("steady", r)
    lat = s.get("latency_us", {})
    def ms(k):
        v = lat.get(k)
        return "%.1f" % (v / 1000) if isinstance(v, (int, float)) else "-"
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        r.get("label"), r.get("rep"), s.get("delivered_per_s", "-"),
        s.get("srv_cpu_us_per_msg", "-"), s.get("aux_cpu_us_per_msg", "-"),
        s.get("aux_cpu_pct", "-"), ms("p50"), ms("p99"),
        s.get("lost", "-"), s.get("other_cpu_pct", "-")))
print("\n\"others' CPU\": the machine's CPU use not of the server, Redis "
      "or the generator (other work on a shared machine): a run with much "
      "of it is slowed by it.")
EOF
log "results: $RESULTS"
log "report: $REPORT"
