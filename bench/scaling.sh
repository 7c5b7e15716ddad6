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

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
MODES=${SCALE_MODES:-write_through offline_only}
PAIRS=${SCALE_PAIRS:-1000}
MEMBERS_LIST=${SCALE_MEMBERS:-1000 10000}
DURATION=${SCALE_DURATION:-5}
WARMUP=${SCALE_WARMUP:-1}
DRAIN=${SCALE_DRAIN:-1}
PARTS=${SCALE_PARTS:-4 5 6}
PB=${SCALE_PORT_BASE:-20000}
PAYLOAD=128
IM_MODULE=${IM_MODULE:-$REPO/build/nginx/objs/ngx_im_module.so}
STREAM_MODULE=${IM_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
NGINX=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
OUT=${SCALE_OUT:-$HERE/out/$(date +%Y%m%d-%H%M%S)-scaling}
IMGEN=$HERE/bin/imgen
GID=7001
UID_BASE=100000

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl CMDS=$OUT/commands.txt NOTES=$OUT/notes.txt
: > "$RESULTS"; : > "$CMDS"; : > "$NOTES"
log() { echo "scaling: $*" >&2; }
note() { echo "$*" >> "$NOTES"; log "$*"; }

PIDS=()
SYSCTL_RESTORE=
cleanup() {
    local p
    [[ -n $SYSCTL_RESTORE ]] && sysctl -qw "net.core.netdev_max_backlog=$SYSCTL_RESTORE" 2>/dev/null
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { local p n=(); for p in "${PIDS[@]}"; do [[ $p != "$1" ]] && n+=("$p"); done; PIDS=("${n[@]}"); }
stop_pid() {
    local pid=$1 sig=${2:-TERM} i
    kill -"$sig" "$pid" 2>/dev/null || { forget_pid "$pid"; return 0; }
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    forget_pid "$pid"
}
wait_port() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for ((try = 0; try < 40; try++)); do
    A_WS=$((PB + 95)) A_TCP=$((PB + 96)) B_WS=$((PB + 97)) B_TCP=$((PB + 98))
    REDIS_PORT=$((PB + 79)) UC_PORT=$((PB + 90))
    busy=0
    for p in $A_WS $A_TCP $B_WS $B_TCP $REDIS_PORT $UC_PORT; do port_busy "$p" && busy=1; done
    (( busy == 0 )) && break
    PB=$((PB + 100))
done
(( busy == 0 )) || { log "no free port block"; exit 1; }

make -s -C "$HERE" bin/imgen >&2 || exit 1
[[ -f $IM_MODULE ]] || { log "$IM_MODULE not built (make -f Makefile.dev build)"; exit 1; }
cp "$IM_MODULE" "$OUT/ngx_im_module.so"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc: $(nproc)"
    echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
    echo "module: sha256 $(sha256sum "$IM_MODULE" | cut -c1-16), built $(date -u -r "$IM_MODULE" '+%Y-%m-%d %H:%M UTC')"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/machine.txt"
IM_MODULE=$OUT/ngx_im_module.so

max_m=0
for m in $MEMBERS_LIST; do (( m > max_m )) && max_m=$m; done
max_users=$((2 * PAIRS)); (( max_m + 1 > max_users )) && max_users=$((max_m + 1))
"$IMGEN" --gen-users "$max_users" --uid-base $UID_BASE > "$OUT/users.txt"

nb=$(sysctl -n net.core.netdev_max_backlog 2>/dev/null || echo 0)
if (( nb < 16384 )) && sysctl -qw net.core.netdev_max_backlog=16384 2>/dev/null; then
    SYSCTL_RESTORE=$nb
fi

taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$OUT" --logfile "$OUT/redis.log" --daemonize no &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
wait_port "$REDIS_PORT" 10 || { log "redis did not start"; exit 1; }
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
perl "$REPO/tools/im-usercentre" --listen "127.0.0.1:$UC_PORT" --users "$OUT/users.txt" \
    --workers 2 > "$OUT/usercentre.log" 2>&1 &
PIDS+=("$!")
wait_port "$UC_PORT" 20 || { log "user centre did not start"; exit 1; }

# nginx node: name node_id workers delivery ws_port tcp_port -> NGX_PID, NGX_WORKERS
declare -A NPID NWORK
start_node() {
    local name=$1 node=$2 workers=$3 dv=$4 ws=$5 tcp=$6 dir=$OUT/nginx-$1 reuse="" aff i
    mkdir -p "$dir/tmp"
    aff="worker_cpu_affinity$(for ((i = 0; i < workers; i++)); do printf ' 01'; done);"
    (( workers > 1 )) && reuse=reuseport
    sed -e "s|@DIR@|$dir|g" -e "s|@STREAM_MODULE@|$STREAM_MODULE|g" \
        -e "s|@IM_MODULE@|$IM_MODULE|g" -e "s|@WORKERS@|$workers|g" \
        -e "s|@AFFINITY@|$aff|g" -e "s|@WORKER_CONNECTIONS@|19000|g" \
        -e "s|@DELIVERY@|$dv|g" -e "s|@WS_PORT@|$ws|g" \
        -e "s|@TCP_PORT@|$tcp|g" -e "s|@REDIS_PORT@|$REDIS_PORT|g" \
        -e "s|@UC_PORT@|$UC_PORT|g" -e "s|@REUSEPORT@|$reuse|g" \
        -e "s|^im_delivery .*|&\nim_node_id $node;|" \
        -e "s|^    access_log off;|    log_format imw '\$im_uid \$pid';\n    access_log off;|" \
        -e "s|^            im_websocket;|&\n            access_log $dir/sessions.log imw;|" \
        "$HERE/nginx.conf.in" > "$dir/nginx.conf"
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -t > "$dir/test.log" 2>&1 \
        || { note "nginx $name rejected: $(grep -m1 emerg "$dir/test.log")"; return 1; }
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" 2>> "$dir/stderr.log" &
    NPID[$name]=$!; PIDS+=("$!")
    wait_port "$ws" 10 || { note "nginx $name did not listen"; return 1; }
    sleep 0.2
    kill -0 "${NPID[$name]}" 2>/dev/null \
        || { note "nginx $name exited: $(grep -m1 emerg "$dir/error.log" "$dir/stderr.log" 2>/dev/null)"; return 1; }
    for ((i = 0; i < 50; i++)); do
        NWORK[$name]=$(pgrep -P "${NPID[$name]}" | paste -sd, -)
        [[ $(tr ',' '\n' <<< "${NWORK[$name]}" | grep -c .) -ge $workers ]] && break
        sleep 0.1
    done
    sleep 0.3
}
stop_node() {
    local name=$1 f=$OUT/nginx-$1/error.log bad
    stop_pid "${NPID[$name]}" QUIT
    bad=$(grep -E '\[(alert|emerg|crit)\]|exited on signal' "$f" 2>/dev/null | head -3)
    [[ -n $bad ]] && note "nginx $name error.log: $bad"
    return 0
}

gen() {   # label timeout imgen-args...
    local label=$1 tmo=$2; shift 2
    local cmd=(taskset -c 1 "$IMGEN" --label "$label" -T "$tmo" -l "$PAYLOAD" "$@")
    echo "${cmd[*]}" | sed "s|$HERE/|bench/|g" >> "$CMDS"
    log "run $label"
    local line
    line=$(timeout $((tmo + 15)) "${cmd[@]}" 2> "$OUT/gen-${label//\//_}.log")
    [[ -z $line ]] && line="{\"label\":\"$label\",\"error\":\"no result ($(tail -1 "$OUT/gen-${label//\//_}.log" | tr -d '"\\'))\"}"
    echo "$line" >> "$RESULTS"
    log "  $line"
}
traffic() { echo -d "$DURATION" -W "$WARMUP" --drain "$DRAIN"; }
fresh_inbox() { rcli -n 0 FLUSHDB > /dev/null; }

# share of pairs (2j, 2j+1) whose two sessions are on different worker pids
cross_share() {   # label sessions.log
    awk -v label="$1" -v base=$UID_BASE '
        $1 ~ /^[0-9]+$/ { w[$1] = $2 }
        END { n = 0; x = 0
              for (u in w) { i = u - base; if (i % 2 == 0 && ((u + 1) in w)) { n++; if (w[u] != w[u + 1]) x++ } }
              printf "{\"label\":\"%s\",\"pairs_seen\":%d,\"cross_worker_pairs\":%d,\"cross_share\":%.3f}\n", label, n, x, n ? x / n : 0 }' "$2"
}

seed_group() {   # members
    local i
    rcli -n 1 DEL "im_group:$GID" > /dev/null
    for ((i = 0; i <= $1; i += 1000)); do
        seq $((UID_BASE + i)) $((UID_BASE + (i + 999 < $1 ? i + 999 : $1))) \
            | xargs redis-cli -p "$REDIS_PORT" -n 1 SADD "im_group:$GID" > /dev/null
    done
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
        NPID[nodeA]= NPID[nodeB]=
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
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"
log "results: $RESULTS"
/usr/bin/python3 "$HERE/scaling.py" --out "$OUT" --report "${SCALE_REPORT:-$HERE/SCALING.md}" \
    --rel "$(realpath --relative-to="$REPO" "$OUT")" || log "report failed"
log "report: ${SCALE_REPORT:-$HERE/SCALING.md}"
