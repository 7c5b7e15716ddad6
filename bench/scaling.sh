#!/bin/bash
# bench/scaling.sh: the "Benchmark (not a test)" figures of issues 4, 5 and 6.
#
#   bench/scaling.sh        writes bench/out/<date>-scaling/{results.jsonl,commands.txt,...}
#                           and bench/SCALING.md (through scaling.py)
#
# Issue 4  1:1 pairs (-k PAIRS, window 4), every push acked, in three topologies:
#          same worker   one node, worker_processes 1
#          two workers   one node, worker_processes 2, im_zone, reuseport listener:
#                        pairs split by the kernel's reuseport hash; the share of
#                        pairs whose sender and receiver sit on different workers
#                        is read from the access log ($im_uid $pid at login)
#          two nodes     two nginx instances (im_node_id A and B), one redis-server;
#                        senders log in on node A, receivers on node B
#                        (imgen --recv-port): every message crosses nodes
#          In all three, every nginx worker is pinned to CPU 0 (with Redis) and the
#          generator to CPU 1, so the server side always has one core and the CPU
#          per message is comparable.
# Issue 5  fan-out to 1,000 and 10,000 online members, window 1 (one message at a
#          time: time until the last member has it) and window 4 (throughput);
#          plus bench/group-read.sh (SMEMBERS vs SSCAN hold time of Redis).
# Issue 6  backend TCP API pushes over 1 and over 100 pipelined connections
#          (imgen -m tcp --tcp-conns N), PAIRS recipients online, window 4 per pair.
# Each in both delivery modes.
#
# Knobs: SCALE_MODES ("write_through offline_only"), SCALE_PAIRS (1000),
#        SCALE_MEMBERS ("1000 10000"), SCALE_DURATION (5), SCALE_WARMUP (1),
#        SCALE_DRAIN (1), SCALE_PORT_BASE (20000, below the ephemeral port range), SCALE_PARTS ("4 5 6").

set -u -o pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
MODES=${SCALE_MODES:-write_through offline_only}
PAIRS=${SCALE_PAIRS:-1000}
MEMBERS_LIST=${SCALE_MEMBERS:-1000 10000}
DURATION=${SCALE_DURATION:-5}
WARMUP=${SCALE_WARMUP:-1}
DRAIN=${SCALE_DRAIN:-1}
PARTS=${SCALE_PARTS:-4 5 6}
PB=${SCALE_PORT_BASE:-20000}
PAYLOAD=128
IM_MODULE=${IM_MODULE:-$IM_BUILD}
OUT=${SCALE_OUT:-$HERE/out/$(date +%Y%m%d-%H%M%S)-scaling}
GID=7001

open_out
open_notes

port_block "$PB" A_WS=95 A_TCP=96 B_WS=97 B_TCP=98 REDIS_PORT=79 \
    UC_PORT=90 || exit 1

build_tools bin/imgen
[[ -f $IM_MODULE ]] || { log "$IM_MODULE not built (make -f Makefile.dev build)"; exit 1; }
cp "$IM_MODULE" "$OUT/ngx_im_module.so"
{
    facts date nproc commit
    echo "module: sha256 $(sha16 "$IM_MODULE"), built $(date -u -r "$IM_MODULE" '+%Y-%m-%d %H:%M UTC')"
    facts start
} > "$OUT/machine.txt"
IM_MODULE=$OUT/ngx_im_module.so

max_m=0
for m in $MEMBERS_LIST; do (( m > max_m )) && max_m=$m; done
max_users=$((2 * PAIRS)); (( max_m + 1 > max_users )) && max_users=$((max_m + 1))
gen_users "$max_users"

raise_backlog

start_redis "$OUT" 0 || exit 1
start_uc_perl "$OUT/users.txt" "$OUT/usercentre.log" || exit 1

# nginx node: name node_id workers delivery ws_port tcp_port -> NGX_PID, NGX_WORKERS
declare -A NPID NWORK
start_node() {
    local name=$1 node=$2 workers=$3 dv=$4 ws=$5 tcp=$6 dir=$OUT/nginx-$1 reuse="" aff i
    mkdir -p "$dir/tmp"
    aff="worker_cpu_affinity$(for ((i = 0; i < workers; i++)); do printf ' 01'; done);"
    (( workers > 1 )) && reuse=reuseport
    im_conf "$dir/nginx.conf" DIR="$dir" IM_MODULE="$IM_MODULE" \
        WORKERS="$workers" AFFINITY="$aff" DELIVERY="$dv" WS_PORT="$ws" \
        TCP_PORT="$tcp" REUSEPORT="$reuse" \
        -e "s|^im_delivery .*|&\nim_node_id $node;|" \
        -e "s|^    access_log off;|    log_format imw '\$im_uid \$pid';\n    access_log off;|" \
        -e "s|^            im_websocket;|&\n            access_log $dir/sessions.log imw;|" \
        || return 1
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -t > "$dir/test.log" 2>&1 \
        || { note "nginx $name rejected: $(grep -m1 emerg "$dir/test.log")"; return 1; }
    local up=0
    nginx_up "$dir" "$dir/nginx.conf" "$ws" "$workers" || up=1
    NPID[$name]=$NGX_PID NWORK[$name]=$NGX_WORKERS
    if (( up != 0 )); then
        note "nginx $name did not listen or exited: $(grep -m1 emerg "$dir/error.log" "$dir/stderr.log" 2>/dev/null)"
        return 1
    fi
    sleep 0.5       # the workers' Redis connections
}
stop_node() {
    local name=$1 bad
    stop_pid "${NPID[$name]}" QUIT
    bad=$(nginx_alerts "$OUT/nginx-$1/error.log" 3)
    [[ -n $bad ]] && note "nginx $name error.log: $bad"
    return 0
}

gen() {   # label timeout imgen-args...
    local label=$1 tmo=$2; shift 2
    gen_line "$label" "$tmo" taskset -c 1 "$IMGEN" --label "$label" -T "$tmo" -l "$PAYLOAD" "$@"
    echo "$GEN_LINE" >> "$RESULTS"
    log "  $GEN_LINE"
}
traffic() { echo -d "$DURATION" -W "$WARMUP" --drain "$DRAIN"; }

# share of pairs (2j, 2j+1) whose two sessions are on different worker pids
cross_share() {   # label sessions.log
    awk -v label="$1" -v base=$UID_BASE '
        $1 ~ /^[0-9]+$/ { w[$1] = $2 }
        END { n = 0; x = 0
              for (u in w) { i = u - base; if (i % 2 == 0 && ((u + 1) in w)) { n++; if (w[u] != w[u + 1]) x++ } }
              printf "{\"label\":\"%s\",\"pairs_seen\":%d,\"cross_worker_pairs\":%d,\"cross_share\":%.3f}\n", label, n, x, n ? x / n : 0 }' "$2"
}

T0=$(date +%s)
for dv in $MODES; do
  for part in $PARTS; do
    case $part in
    4)
        tmo=$(( ${DURATION%.*} + 40 ))
        if start_node one "bench-a" 1 "$dv" "$A_WS" "$A_TCP"; then
            fresh_inbox
            gen "i4/$dv/same-worker" $tmo -m ws -p "$A_WS" -s pairs -k "$PAIRS" -w 4 $(traffic) \
                --cpu-pids "${NWORK[one]}" --aux-pids "$REDIS_PID"
            stop_node one
        fi
        if start_node two "bench-a" 2 "$dv" "$A_WS" "$A_TCP"; then
            fresh_inbox
            : > "$OUT/nginx-two/sessions.log"
            gen "i4/$dv/two-workers" $tmo -m ws -p "$A_WS" -s pairs -k "$PAIRS" -w 4 $(traffic) \
                --cpu-pids "${NWORK[two]}" --aux-pids "$REDIS_PID"
            stop_node two
            cross_share "i4/$dv/two-workers/share" "$OUT/nginx-two/sessions.log" >> "$RESULTS"
            mv "$OUT/nginx-two/sessions.log" "$OUT/nginx-two/sessions-$dv.log"
        fi
        if start_node nodeA "bench-a" 1 "$dv" "$A_WS" "$A_TCP" \
           && start_node nodeB "bench-b" 1 "$dv" "$B_WS" "$B_TCP"; then
            fresh_inbox
            gen "i4/$dv/two-nodes" $tmo -m ws -p "$A_WS" --recv-port "$B_WS" -s pairs -k "$PAIRS" \
                -w 4 $(traffic) --cpu-pids "${NWORK[nodeA]},${NWORK[nodeB]}" --aux-pids "$REDIS_PID"
        fi
        [[ -n ${NPID[nodeA]:-} ]] && stop_node nodeA
        [[ -n ${NPID[nodeB]:-} ]] && stop_node nodeB
        NPID[nodeA]="" NPID[nodeB]=""
        ;;
    5)
        if start_node fan "bench-a" 1 "$dv" "$A_WS" "$A_TCP"; then
            for m in $MEMBERS_LIST; do
                seed_group "$m"
                procs=$(( (m + 9999) / 10000 )); (( m >= 5000 )) && procs=2
                lt=$(( m / 300 + 30 ))
                for w in 1 4; do
                    fresh_inbox
                    gen "i5/$dv/fanout-$m-w$w" $((lt + ${DURATION%.*} + 30)) -m ws -p "$A_WS" -s fanout \
                        -M "$m" -g "$GID" -w "$w" -P "$procs" -S 4 --login-timeout "$lt" $(traffic) \
                        --cpu-pids "${NWORK[fan]}" --aux-pids "$REDIS_PID" \
                        --hist-out "$OUT/hist-$dv-fanout-$m-w$w.txt"
                done
            done
            stop_node fan
        fi
        ;;
    6)
        tmo=$(( ${DURATION%.*} + 40 ))
        if start_node tcp "bench-a" 1 "$dv" "$A_WS" "$A_TCP"; then
            for nc in 1 100; do
                fresh_inbox
                gen "i6/$dv/tcp-conns-$nc" $tmo -m tcp -p "$A_WS" --tcp-port "$A_TCP" -s pairs \
                    -k "$PAIRS" -w 4 --tcp-conns "$nc" $(traffic) \
                    --cpu-pids "${NWORK[tcp]}" --aux-pids "$REDIS_PID"
            done
            stop_node tcp
        fi
        ;;
    esac
  done
done

if [[ " $PARTS " == *" 5 "* ]]; then
    log "group-read.sh $max_m"
    echo "bench/group-read.sh $max_m" >> "$CMDS"
    {
        taskset -c 0 "$HERE/group-read.sh" "$max_m"
        # the module's page size against a smaller and a larger one
        for c in 1000 4096; do
            taskset -c 0 "$HERE/group-read.sh" "$max_m" "$c" | grep SSCAN
        done
    } > "$OUT/group-read.txt" 2>&1
    cat "$OUT/group-read.txt" >&2
fi
echo "elapsed: $(( $(date +%s) - T0 )) s" >> "$OUT/machine.txt"
facts end >> "$OUT/machine.txt"
log "results: $RESULTS"
/usr/bin/python3 "$HERE/scaling.py" --out "$OUT" --report "${SCALE_REPORT:-$HERE/SCALING.md}" \
    --rel "$(realpath --relative-to="$REPO" "$OUT")" || log "report failed"
log "report: ${SCALE_REPORT:-$HERE/SCALING.md}"
