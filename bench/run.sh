#!/bin/bash
# bench/run.sh: benchmark driver of issue 7.
#
#   bench/run.sh                  full run, writes bench/REPORT.md and bench/latency.png
#   BENCH_QUICK=1 bench/run.sh    smoke run (well under a minute), report in bench/out/<run>/
#   make -C bench run | quick     the same through make (make -f Makefile.dev bench = run)
#
# Starts its own redis-server, dev user centre (tools/im-usercentre), nginx with
# the module (bench/nginx.conf.in) and mosquitto (the reference peer), all on
# 127.0.0.1 with ports of their own, runs the scenarios of issue 7 with
# bench/bin/imgen and stops everything it started (by pid).
#
# Knobs (environment; defaults full / quick):
#   BENCH_MODES      delivery modes             "write_through offline_only"
#   BENCH_IDLE       idle session counts        "10000 50000" / "1000"
#   BENCH_PAIRS      1:1 pairs                  1000 / 100
#   BENCH_WINDOW     messages in flight per sender (pairs, fanout)  4
#   BENCH_FANOUT_WIDE  the fan-out again with this many group messages in
#                    flight ("" to skip)        16
#   BENCH_RATE       open-loop total rate       20000 / 2000
#   BENCH_MEMBERS    fan-out group members      1000 / 100
#   BENCH_DURATION   measured seconds           10 / 1
#   BENCH_WARMUP     warm-up seconds            2 / 0.3
#   BENCH_DRAIN      seconds to wait for in-flight messages after the window  2 / 0.5
#   BENCH_HOLD       idle: seconds the sessions are held (memory read after SETTLE)  8 / 1.5
#   BENCH_SETTLE     idle: seconds between the last login and the memory reading     3 / 0.5
#   BENCH_PAYLOAD    payload bytes              128
#   BENCH_REPEAT     runs of each 1:1, latency and fan-out scenario; the report
#                    takes the median run and lists the others   3 / 1
#   BENCH_IM         run the IM server: auto (if the module is built) | 0 | 1
#   BENCH_PEER       run mosquitto: 1 | 0
#   BENCH_FLOOR      run the bare relay (bench/floor.c, the machine's floor for
#                    the fixed-rate and fan-out scenarios): 1 | 0
#   BENCH_TCP        also run 1:1 and fan-out with senders on the TCP API: 1 | 0
#   BENCH_SCENARIOS  which of the traffic scenarios run (for every server):
#                    pairs (1:1 saturated), rate (fixed rate), fanout (and
#                    the wide one)            "pairs rate fanout"
#   BENCH_IDLE_WORKERS  nginx workers for the idle scenario   4
#   BENCH_PORT_BASE  ports: +95 ws, +96 tcp, +79 redis, +90 user centre, +83 mqtt,
#                    +97 bare relay   24000 (below the ephemeral ports)
#   BENCH_MAIN       more main-context directives for nginx, e.g. the events:
#                    "im_events_stream im:events maxlen=100000;"   ""
#   BENCH_REPLICA    1: a replica of the bench's Redis (port +78, CPU 0), for
#                    BENCH_MAIN="im_redis_wait 1;" and the run without it  0
#   BENCH_REDIS_CPU  the CPU Redis is pinned to (an experiment: the issue's
#                    layout has it beside the worker)   0
#   BENCH_SHIELD     1: run in an autogroup of its own at nice -20, so that
#                    other sessions' load on a shared machine gets a CPU
#                    mostly when the bench's processes leave it (the kernel
#                    groups tasks by session: nice alone weighs only within
#                    one's own session)   0
#   IM_MODULE        module path   build/nginx/objs/ngx_im_module.so
#   BENCH_OUT        output folder bench/out/<date>
#
# Layout on 2 cores: for 1:1, latency and fan-out the nginx worker (one,
# worker_cpu_affinity 01), Redis and mosquitto run on CPU 0, the generator
# (taskset -c 1) on CPU 1. The idle scenario uses BENCH_IDLE_WORKERS workers and
# several generator processes (one process holds at most 20,000 descriptors
# here) with source addresses 127.0.0.2.. so the ports don't run out.

set -u -o pipefail

if [[ ${BENCH_SHIELD:-0} == 1 && -z ${BENCH_SHIELDED:-} ]]; then
    export BENCH_SHIELDED=1
    exec setsid bash -c 'echo -20 > /proc/$$/autogroup && exec "$@"' _ "$0" "$@"
fi

BENCH_TAG=bench
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
QUICK=${BENCH_QUICK:-0}

q() { if [[ $QUICK == 1 ]]; then echo "$2"; else echo "$1"; fi; }

MODES=${BENCH_MODES:-write_through offline_only}
IDLE=${BENCH_IDLE:-$(q "10000 50000" "1000")}
PAIRS=${BENCH_PAIRS:-$(q 1000 100)}
WINDOW=${BENCH_WINDOW:-4}
FANOUT_WIDE=${BENCH_FANOUT_WIDE-16}
RATE=${BENCH_RATE:-$(q 20000 2000)}
MEMBERS=${BENCH_MEMBERS:-$(q 1000 100)}
DURATION=${BENCH_DURATION:-$(q 10 1)}
WARMUP=${BENCH_WARMUP:-$(q 2 0.3)}
DRAIN=${BENCH_DRAIN:-$(q 2 0.5)}
HOLD=${BENCH_HOLD:-$(q 8 1.5)}
REPEAT=${BENCH_REPEAT:-$(q 3 1)}
SETTLE=${BENCH_SETTLE:-$(q 3 0.5)}
PAYLOAD=${BENCH_PAYLOAD:-128}
RUN_IM=${BENCH_IM:-auto}
RUN_PEER=${BENCH_PEER:-1}
RUN_FLOOR=${BENCH_FLOOR:-1}
RUN_TCP=${BENCH_TCP:-1}
SCENARIOS=" ${BENCH_SCENARIOS:-pairs rate fanout} "
IDLE_WORKERS=${BENCH_IDLE_WORKERS:-4}
PB=${BENCH_PORT_BASE:-24000}
IM_MODULE=${IM_MODULE:-$IM_BUILD}
MAIN_EXTRA=${BENCH_MAIN:-}
RUN_REPLICA=${BENCH_REPLICA:-0}
OUT=${BENCH_OUT:-$HERE/out/$(date +%Y%m%d-%H%M%S)$( [[ $QUICK == 1 ]] && echo -quick)}
GID=7001

open_out
open_notes

# ---------------------------------------------------------------------------
# preparation

port_block "$PB" WS_PORT=95 TCP_PORT=96 REDIS_PORT=79 UC_PORT=90 \
    MQTT_PORT=83 FLOOR_PORT=97 REPLICA_PORT=78 || exit 1

build_tools bin/imgen bin/floor

if [[ $RUN_IM == auto ]]; then
    if [[ -f $IM_MODULE ]]; then RUN_IM=1; else RUN_IM=0; note "IM server not run: $IM_MODULE not built"; fi
fi
if [[ $RUN_IM == 1 ]]; then
    # a copy, so a rebuild in the tree during the run changes nothing
    cp "$IM_MODULE" "$OUT/ngx_im_module.so" || { log "cannot copy $IM_MODULE"; exit 1; }
    echo "module: $(realpath --relative-to="$REPO" "$IM_MODULE" 2>/dev/null || echo "$IM_MODULE"), built $(date -u -r "$IM_MODULE" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha16 "$IM_MODULE")" >> "$OUT/machine.txt.pre"
    IM_MODULE=$OUT/ngx_im_module.so
fi
if [[ $RUN_PEER == 1 ]] && ! command -v mosquitto >/dev/null; then
    note "mosquitto not run: not installed (apt-get install mosquitto)"
    RUN_PEER=0
fi

max_users=$((2 * PAIRS))
(( MEMBERS + 1 > max_users )) && max_users=$((MEMBERS + 1))
for n in $IDLE; do (( n > max_users )) && max_users=$n; done
gen_users "$max_users"

{
    facts date nproc cpu memory kernel nginx redis mosquitto gcc commit \
        descriptors
    echo "quick: $QUICK"
    cat "$OUT/machine.txt.pre" 2>/dev/null
} > "$OUT/machine.txt"
rm -f "$OUT/machine.txt.pre"

raise_backlog
facts start >> "$OUT/machine.txt"

# ---------------------------------------------------------------------------
# services

start_nginx() {     # name workers pinned(0|1) delivery
    local name=$1 workers=$2 pinned=$3 delivery=$4 dir=$OUT/nginx-$1 aff="" reuse=""
    mkdir -p "$dir/tmp"
    if [[ $pinned == 1 ]]; then aff="worker_cpu_affinity 01;"; fi
    if (( workers > 1 )); then reuse=reuseport; fi
    im_conf "$dir/nginx.conf" DIR="$dir" IM_MODULE="$IM_MODULE" \
        WORKERS="$workers" AFFINITY="$aff" DELIVERY="$delivery" \
        WS_PORT="$WS_PORT" TCP_PORT="$TCP_PORT" REUSEPORT="$reuse" \
        MAIN="$MAIN_EXTRA" || return 1
    # a module still being written may lack a directive: leave it out, say so
    local d syms
    syms=$(strings "$IM_MODULE")    # not "strings | grep -q": SIGPIPE under pipefail
    for d in im_zone im_delivery; do
        if ! grep -qx "$d" <<< "$syms"; then
            sed -Ei "s|^([[:space:]]*)(${d}[ ;])|\1# not in this build: \2|" \
                "$dir/nginx.conf"
            grep -qs "directive $d" "$NOTES" || note "the module has no directive $d: left out"
        fi
    done
    if ! "$NGINX" -p "$dir" -c "$dir/nginx.conf" -t > "$dir/test.log" 2>&1; then
        note "nginx config $name rejected: $(grep -m1 emerg "$dir/test.log")"
        return 1
    fi
    if ! nginx_up "$dir" "$dir/nginx.conf" "$WS_PORT" "$workers"; then
        note "nginx $name did not listen: $(tail -2 "$dir/error.log" 2>/dev/null)"
        stop_nginx
        return 1
    fi
    sleep 0.2       # Redis connections of the workers
}

stop_nginx() {
    [[ -n $NGX_PID ]] || return 0
    stop_pid "$NGX_PID" QUIT
    NGX_PID=
}

check_nginx_log() {     # name
    local bad
    bad=$(nginx_alerts "$OUT/nginx-$1/error.log")
    [[ -n $bad ]] && note "nginx $1 error.log: $bad"
    return 0
}

stop_mosquitto() {
    [[ -n ${MQ_PID:-} ]] || return 0
    stop_pid "$MQ_PID" TERM
    MQ_PID=
}

# ---------------------------------------------------------------------------
# one generator run: label timeout(s) pin(0|1) imgen-args...

scen() { [[ $SCENARIOS == *" $1 "* ]]; }

# an IM run's Redis commands and wake-ups, per message acked by its
# recipient (the whole run, warm-up and drain included): Redis's INFO
# commandstats and the voluntary context switches (a blocking
# epoll_wait each) of the worker and of Redis, from /proc; one line
# per run in calls.txt
ctxsw() {   # pids (comma-separated) -> the sum of their voluntary switches
    local p n=0 v
    for p in ${1//,/ }; do
        v=$(awk '/^voluntary_ctxt_switches/ { print $2 }' \
            "/proc/$p/status" 2>/dev/null)
        n=$((n + ${v:-0}))
    done
    echo "$n"
}
acked_now() {
    curl -s -m 5 "http://127.0.0.1:$WS_PORT/status" 2>/dev/null \
        | sed -n 's/.*"acked":\([0-9]*\).*/\1/p'
}
CALLS_W0='' CALLS_R0='' CALLS_A0=''
calls_start() {
    rcli CONFIG RESETSTAT > /dev/null
    CALLS_W0=$(ctxsw "$NGX_WORKERS") CALLS_R0=$(ctxsw "$REDIS_PID")
    CALLS_A0=$(acked_now)
}
calls_end() {   # label
    local acked w r
    acked=$(( $(acked_now) - ${CALLS_A0:-0} ))
    w=$(( $(ctxsw "$NGX_WORKERS") - CALLS_W0 ))
    r=$(( $(ctxsw "$REDIS_PID") - CALLS_R0 ))
    rcli INFO commandstats | tr -d '\r' | awk -v l="$1${REP:+ r$REP}" \
        -v a="$acked" -v w="$w" -v r="$r" -F'[_:=,]' '
        /^cmdstat_/ { c[$2] = $4; t += $4 }
        END {
            if (a <= 0) a = 1
            printf "%s: %d acked; per message: worker wake-ups %.2f, ", l, a, w / a
            printf "Redis wake-ups %.2f, Redis commands %.2f", r / a, t / a
            for (k in c) printf ", %s %.2f", k, c[k] / a
            printf "\n"
        }' >> "$OUT/calls.txt"
}

# (GEN_BIN: another generator with imgen's options and output, bench/bin/floor)
gen() {
    local label=$1 tmo=$2 pin=$3 arg args=()
    shift 3
    # @REP@ in an argument (a histogram's file) names the repetition
    for arg in "$@"; do args+=("${arg//@REP@/${REP:+-r$REP}}"); done
    local cmd=("${GEN_BIN:-$IMGEN}" --label "$label" -T "$tmo" -l "$PAYLOAD" "${args[@]}")
    [[ $pin == 1 ]] && cmd=(taskset -c 1 "${cmd[@]}")
    local im=0
    [[ -n ${NGX_PID:-} && $label == im/* && $label != */idle-* ]] && im=1
    (( im )) && calls_start
    gen_line "$label" "$tmo" "${cmd[@]}"
    (( im )) && calls_end "$label"
    local line=$GEN_LINE
    [[ -n ${REP:-} ]] && line="{\"rep\":$REP,${line#\{}"
    echo "$line" >> "$RESULTS"
    log "  $line"
    # the node's counters after each run (cumulative: a run's own are the
    # difference with the one before), e.g. WAITs per message
    if [[ -n ${NGX_PID:-} && $label == im/* ]]; then
        curl -s -m 5 "http://127.0.0.1:$WS_PORT/status" \
            > "$OUT/status-${label//\//_}${REP:+-r$REP}.json" 2>/dev/null
    fi
}

# BENCH_REPLICA=1: a replica of the bench's Redis, next to it on CPU 0; it
# streams every write whether or not WAIT asks about it, so the run without
# im_redis_wait has it too
REPLICA_PID=
start_replica() {
    local try
    taskset -c 0 redis-server --port "$REPLICA_PORT" --bind 127.0.0.1 \
        --save '' --appendonly no --dir "$OUT" --logfile "$OUT/replica.log" \
        --daemonize no --replicaof 127.0.0.1 "$REDIS_PORT" &
    started REPLICA_PID "$REPLICA_PORT" 10 replica || return 1
    for ((try = 0; try < 100; try++)); do
        redis-cli -p "$REPLICA_PORT" INFO replication \
            | grep -q 'master_link_status:up' && return 0
        sleep 0.1
    done
    note "the replica did not link"
    return 1
}

# the same generator run REPEAT times: repeat fresh|keep gen-args...; fresh
# empties the inboxes before each run
REP=
repeat() {
    local how=$1 k kind
    shift
    kind=${1##*/}; kind=${kind%%-*}; kind=${kind/fanoutwide/fanout}
    scen "$kind" || return 0
    for ((k = 1; k <= REPEAT; k++)); do
        REP=$k
        [[ $how == fresh ]] && fresh_inbox
        gen "$@"
    done
    REP=
}

traffic_tmo() { awk -v d="$DURATION" -v w="$WARMUP" -v l="$1" 'BEGIN { printf "%d", d + w + l + 15 }'; }

common_traffic() {   # args shared by the traffic scenarios
    echo -d "$DURATION" -W "$WARMUP" -w "$WINDOW" --drain "$DRAIN"
}

run_im_mode() {     # delivery
    local dv=$1 n procs tmo lt

    # (a) idle memory: several workers, several generator processes; a
    # fresh nginx for each count, so no count starts from memory an earlier
    # one left in the workers' heaps
    for n in $IDLE; do
        start_nginx "idle-$dv-$n" "$IDLE_WORKERS" 0 "$dv" || continue
        fresh_inbox
        procs=$(idle_procs "$n")
        lt=$(login_tmo "$n")
        gen "im/$dv/idle-$n" $((lt + 30)) 0 -m ws -p "$WS_PORT" -s idle -n "$n" -P "$procs" \
            -S 8 -C 200 --hold "$HOLD" --settle "$SETTLE" --login-timeout "$lt" \
            --cpu-pids "$NGX_WORKERS" --mem-pids "$NGX_PID,$NGX_WORKERS"
        stop_nginx
        check_nginx_log "idle-$dv-$n"
    done

    # (b) (c) (d): one worker on CPU 0, generator on CPU 1
    if start_nginx "one-$dv" 1 1 "$dv"; then
        tmo=$(traffic_tmo 30)
        repeat fresh "im/$dv/pairs-ws" "$tmo" 1 -m ws -p "$WS_PORT" -s pairs -k "$PAIRS" \
            $(common_traffic) --cpu-pids "$NGX_WORKERS" --aux-pids "$REDIS_PID${REPLICA_PID:+,$REPLICA_PID}"
        repeat fresh "im/$dv/rate-ws" "$tmo" 1 -m ws -p "$WS_PORT" -s rate -k "$PAIRS" -r "$RATE" \
            -d "$DURATION" -W "$WARMUP" --drain "$DRAIN" --cpu-pids "$NGX_WORKERS" --aux-pids "$REDIS_PID${REPLICA_PID:+,$REPLICA_PID}" \
            --hist-out "$OUT/hist-im-$dv-rate@REP@.txt" --series-out "$OUT/series-im-$dv-rate@REP@.txt"
        repeat fresh "im/$dv/fanout-ws" "$tmo" 1 -m ws -p "$WS_PORT" -s fanout -M "$MEMBERS" -g "$GID" \
            $(common_traffic) --cpu-pids "$NGX_WORKERS" --aux-pids "$REDIS_PID${REPLICA_PID:+,$REPLICA_PID}" \
            --hist-out "$OUT/hist-im-$dv-fanout@REP@.txt"
        if [[ -n $FANOUT_WIDE ]]; then
            repeat fresh "im/$dv/fanoutwide-ws" "$tmo" 1 -m ws -p "$WS_PORT" -s fanout -M "$MEMBERS" \
                -g "$GID" -d "$DURATION" -W "$WARMUP" -w "$FANOUT_WIDE" --drain "$DRAIN" \
                --cpu-pids "$NGX_WORKERS" --aux-pids "$REDIS_PID${REPLICA_PID:+,$REPLICA_PID}"
        fi
        if [[ $RUN_TCP == 1 ]] && scen pairs; then
            fresh_inbox
            gen "im/$dv/pairs-tcp" "$tmo" 1 -m tcp -p "$WS_PORT" --tcp-port "$TCP_PORT" -s pairs \
                -k "$PAIRS" $(common_traffic) --cpu-pids "$NGX_WORKERS" --aux-pids "$REDIS_PID${REPLICA_PID:+,$REPLICA_PID}"
        fi
        if [[ $RUN_TCP == 1 ]] && scen fanout; then
            fresh_inbox
            gen "im/$dv/fanout-tcp" "$tmo" 1 -m tcp -p "$WS_PORT" --tcp-port "$TCP_PORT" -s fanout \
                -M "$MEMBERS" -g "$GID" $(common_traffic) --cpu-pids "$NGX_WORKERS" \
                --aux-pids "$REDIS_PID${REPLICA_PID:+,$REPLICA_PID}"
        fi
        stop_nginx
        check_nginx_log "one-$dv"
    fi
}

run_peer() {
    local n procs lt tmo
    start_mosquitto "$OUT/mosquitto" 0 || return
    for n in $IDLE; do
        if (( n > 19000 )); then
            note "mosquitto idle-$n not run: one process holds at most $(ulimit -Hn) descriptors here"
            continue
        fi
        procs=$(idle_procs "$n")
        lt=$(login_tmo "$n")
        gen "mosquitto/-/idle-$n" $((lt + 30)) 0 -m mqtt -p "$MQTT_PORT" -s idle -n "$n" \
            -P "$procs" -S 8 -C 50 --hold "$HOLD" --settle "$SETTLE" --login-timeout "$lt" \
            --cpu-pids "$MQ_PID" --mem-pids "$MQ_PID"
        sleep "$(q 1 0.2)"
    done
    tmo=$(traffic_tmo 30)
    repeat keep "mosquitto/-/pairs-mqtt" "$tmo" 1 -m mqtt -p "$MQTT_PORT" -C 50 -s pairs -k "$PAIRS" \
        $(common_traffic) --cpu-pids "$MQ_PID"
    repeat keep "mosquitto/-/rate-mqtt" "$tmo" 1 -m mqtt -p "$MQTT_PORT" -C 50 -s rate -k "$PAIRS" \
        -r "$RATE" -d "$DURATION" -W "$WARMUP" --drain "$DRAIN" --cpu-pids "$MQ_PID" \
        --hist-out "$OUT/hist-mosquitto-rate@REP@.txt" \
        --series-out "$OUT/series-mosquitto-rate@REP@.txt"
    repeat keep "mosquitto/-/fanout-mqtt" "$tmo" 1 -m mqtt -p "$MQTT_PORT" -C 50 -s fanout \
        -M "$MEMBERS" -g "$GID" $(common_traffic) --cpu-pids "$MQ_PID" \
        --hist-out "$OUT/hist-mosquitto-fanout@REP@.txt"
    if [[ -n $FANOUT_WIDE ]]; then
        repeat keep "mosquitto/-/fanoutwide-mqtt" "$tmo" 1 -m mqtt -p "$MQTT_PORT" -C 50 -s fanout \
            -M "$MEMBERS" -g "$GID" -d "$DURATION" -W "$WARMUP" -w "$FANOUT_WIDE" \
            --drain "$DRAIN" --cpu-pids "$MQ_PID"
    fi
    stop_mosquitto
}

# the machine's floor: a bare relay (bench/floor.c; it pins itself, relay on
# CPU 0, client on CPU 1) in the fixed-rate and fan-out scenarios, so the
# report can tell the server's part of a tail from the VM's
run_floor() {
    local tmo
    tmo=$(traffic_tmo 10)
    GEN_BIN=$FLOOR repeat keep "floor/-/rate-raw" "$tmo" 0 -p "$FLOOR_PORT" -s rate -k "$PAIRS" \
        -r "$RATE" -d "$DURATION" -W "$WARMUP" --hist-out "$OUT/hist-floor-rate@REP@.txt" \
        --series-out "$OUT/series-floor-rate@REP@.txt"
    GEN_BIN=$FLOOR repeat keep "floor/-/fanout-raw" "$tmo" 0 -p "$FLOOR_PORT" -s fanout \
        -M "$MEMBERS" -w "$WINDOW" -d "$DURATION" -W "$WARMUP"
    if [[ -n $FANOUT_WIDE ]]; then
        GEN_BIN=$FLOOR repeat keep "floor/-/fanoutwide-raw" "$tmo" 0 -p "$FLOOR_PORT" -s fanout \
            -M "$MEMBERS" -w "$FANOUT_WIDE" -d "$DURATION" -W "$WARMUP"
    fi
}

# ---------------------------------------------------------------------------

T0=$(date +%s)
if [[ $RUN_FLOOR == 1 ]]; then
    run_floor
fi
if [[ $RUN_PEER == 1 ]]; then
    run_peer
fi
if [[ $RUN_IM == 1 ]]; then
    start_redis "$OUT" "${BENCH_REDIS_CPU:-0}" || exit 1
    if [[ $RUN_REPLICA == 1 ]]; then
        start_replica || exit 1
    fi
    start_uc_perl "$OUT/users.txt" "$OUT/usercentre.log" || exit 1
    seed_group "$MEMBERS"
    for dv in $MODES; do
        run_im_mode "$dv"
    done
fi
echo "elapsed: $(( $(date +%s) - T0 )) s" >> "$OUT/machine.txt"
facts end >> "$OUT/machine.txt"

# ---------------------------------------------------------------------------
# report

# a quick run, or a run into a folder of the caller's (an A/B comparison),
# leaves the committed report alone
if [[ $QUICK == 1 || -n ${BENCH_OUT:-} ]]; then
    REPORT=$OUT/REPORT.md PLOT=$OUT/latency.png
else
    REPORT=$HERE/REPORT.md PLOT=$HERE/latency.png
fi
/usr/bin/python3 "$HERE/report.py" --out "$OUT" --report "$REPORT" --plot "$PLOT" \
    --rel "$(realpath --relative-to="$REPO" "$OUT")" || log "report failed"
log "results: $RESULTS"
log "report: $REPORT"
