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
#   BENCH_IDLE_WORKERS  nginx workers for the idle scenario   4
#   BENCH_PORT_BASE  ports: +95 ws, +96 tcp, +79 redis, +90 user centre, +83 mqtt,
#                    +97 bare relay   38000
#   BENCH_MAIN       more main-context directives for nginx, e.g. the events:
#                    "im_events_stream im:events maxlen=100000;"   ""
#   IM_MODULE        module path   build/nginx/objs/ngx_im_module.so
#   BENCH_OUT        output folder bench/out/<date>
#
# Layout on 2 cores: for 1:1, latency and fan-out the nginx worker (one,
# worker_cpu_affinity 01), Redis and mosquitto run on CPU 0, the generator
# (taskset -c 1) on CPU 1. The idle scenario uses BENCH_IDLE_WORKERS workers and
# several generator processes (one process holds at most 20,000 descriptors
# here) with source addresses 127.0.0.2.. so the ports don't run out.

set -u -o pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
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
IDLE_WORKERS=${BENCH_IDLE_WORKERS:-4}
PB=${BENCH_PORT_BASE:-38000}
IM_MODULE=${IM_MODULE:-$REPO/build/nginx/objs/ngx_im_module.so}
MAIN_EXTRA=${BENCH_MAIN:-}
STREAM_MODULE=${IM_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
NGINX=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
OUT=${BENCH_OUT:-$HERE/out/$(date +%Y%m%d-%H%M%S)$( [[ $QUICK == 1 ]] && echo -quick)}
IMGEN=$HERE/bin/imgen
FLOOR=$HERE/bin/floor
GID=7001
UID_BASE=100000

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
CMDS=$OUT/commands.txt
NOTES=$OUT/notes.txt
: > "$RESULTS"; : > "$CMDS"; : > "$NOTES"

log() { echo "bench: $*" >&2; }
note() { echo "$*" >> "$NOTES"; log "$*"; }

# ---------------------------------------------------------------------------
# processes we started, stopped by pid on exit

PIDS=()
SYSCTL_RESTORE=
cleanup() {
    local p
    if [[ -n $SYSCTL_RESTORE ]]; then
        sysctl -qw "net.core.netdev_max_backlog=$SYSCTL_RESTORE" 2>/dev/null
    fi
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    sleep 0.5
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
    local p n=()
    for p in "${PIDS[@]}"; do [[ $p != "$1" ]] && n+=("$p"); done
    PIDS=("${n[@]}")
}

stop_pid() {    # pid [signal]: signal, wait up to 10 s, then KILL
    local pid=$1 sig=${2:-TERM} i
    kill -"$sig" "$pid" 2>/dev/null || { forget_pid "$pid"; return 0; }
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    forget_pid "$pid"
}

wait_port() {   # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------------
# preparation

# a block of six ports nobody listens on (other servers may run here)
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for ((try = 0; try < 40; try++)); do
    WS_PORT=$((PB + 95)) TCP_PORT=$((PB + 96)) REDIS_PORT=$((PB + 79))
    UC_PORT=$((PB + 90)) MQTT_PORT=$((PB + 83)) FLOOR_PORT=$((PB + 97))
    busy=0
    for p in $WS_PORT $TCP_PORT $REDIS_PORT $UC_PORT $MQTT_PORT $FLOOR_PORT; do
        port_busy "$p" && busy=1
    done
    (( busy == 0 )) && break
    PB=$((PB + 100))
done
(( busy == 0 )) || { log "no free port block found"; exit 1; }

make -s -C "$HERE" bin/imgen bin/floor >&2 || { log "cannot build imgen or floor"; exit 1; }

if [[ $RUN_IM == auto ]]; then
    if [[ -f $IM_MODULE ]]; then RUN_IM=1; else RUN_IM=0; note "IM server not run: $IM_MODULE not built"; fi
fi
if [[ $RUN_IM == 1 ]]; then
    # a copy, so a rebuild in the tree during the run changes nothing
    cp "$IM_MODULE" "$OUT/ngx_im_module.so" || { log "cannot copy $IM_MODULE"; exit 1; }
    echo "module: $(realpath --relative-to="$REPO" "$IM_MODULE" 2>/dev/null || echo "$IM_MODULE"), built $(date -u -r "$IM_MODULE" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$IM_MODULE" | cut -c1-16)" >> "$OUT/machine.txt.pre"
    IM_MODULE=$OUT/ngx_im_module.so
fi
if [[ $RUN_PEER == 1 ]] && ! command -v mosquitto >/dev/null; then
    note "mosquitto not run: not installed (apt-get install mosquitto)"
    RUN_PEER=0
fi

max_users=$((2 * PAIRS))
(( MEMBERS + 1 > max_users )) && max_users=$((MEMBERS + 1))
for n in $IDLE; do (( n > max_users )) && max_users=$n; done
"$IMGEN" --gen-users "$max_users" --uid-base $UID_BASE > "$OUT/users.txt"

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc: $(nproc)"
    echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
    echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
    echo "kernel: $(uname -sr)"
    echo "nginx: $($NGINX -v 2>&1 | sed 's/.*version: //')"
    echo "redis: $(redis-server --version | sed 's/^Redis server //; s/ sha=.*//')"
    echo "mosquitto: $(mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version //p' | head -1)"
    echo "gcc: $(gcc --version | head -1)"
    echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
    echo "descriptors per process: $(ulimit -Hn)"
    echo "quick: $QUICK"
    cat "$OUT/machine.txt.pre" 2>/dev/null
} > "$OUT/machine.txt"
rm -f "$OUT/machine.txt.pre"

# Loopback packets wait in a per-CPU backlog (net.core.netdev_max_backlog,
# 1000 by default); a generator that flushes a thousand connections in one
# pass overflows it, and every dropped segment costs a retransmission timeout
# (>= 200 ms) that shows up as latency. Raised for the run, restored after.
nb=$(sysctl -n net.core.netdev_max_backlog 2>/dev/null || echo 0)
if (( nb < 16384 )); then
    if sysctl -qw net.core.netdev_max_backlog=16384 2>/dev/null; then
        SYSCTL_RESTORE=$nb
        note "net.core.netdev_max_backlog raised from $nb to 16384 for the run (restored at the end)"
    else
        note "net.core.netdev_max_backlog is $nb and could not be raised: expect loopback drops"
    fi
fi
echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"

# ---------------------------------------------------------------------------
# services

REDIS_PID= UC_PID= NGX_PID= MQ_PID=

start_redis() {
    taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --dir "$OUT" --logfile "$OUT/redis.log" --daemonize no &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_port "$REDIS_PORT" 10 || { log "redis did not start"; exit 1; }
}

rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

start_uc() {
    perl "$REPO/tools/im-usercentre" --listen "127.0.0.1:$UC_PORT" --users "$OUT/users.txt" \
        --workers 2 > "$OUT/usercentre.log" 2>&1 &
    UC_PID=$!
    PIDS+=("$UC_PID")
    wait_port "$UC_PORT" 20 || { log "user centre did not start"; exit 1; }
}

NGX_WORKERS=
start_nginx() {     # name workers pinned(0|1) delivery
    local name=$1 workers=$2 pinned=$3 delivery=$4 dir=$OUT/nginx-$1 aff="" reuse="" wc
    mkdir -p "$dir/tmp"
    if [[ $pinned == 1 ]]; then aff="worker_cpu_affinity 01;"; fi
    if (( workers > 1 )); then reuse=reuseport; fi
    wc=19000
    sed -e "s|@DIR@|$dir|g" -e "s|@STREAM_MODULE@|$STREAM_MODULE|g" \
        -e "s|@IM_MODULE@|$IM_MODULE|g" -e "s|@WORKERS@|$workers|g" \
        -e "s|@AFFINITY@|$aff|g" -e "s|@WORKER_CONNECTIONS@|$wc|g" \
        -e "s|@DELIVERY@|$delivery|g" -e "s|@WS_PORT@|$WS_PORT|g" \
        -e "s|@TCP_PORT@|$TCP_PORT|g" -e "s|@REDIS_PORT@|$REDIS_PORT|g" \
        -e "s|@UC_PORT@|$UC_PORT|g" -e "s|@REUSEPORT@|$reuse|g" \
        -e "s|@MAIN@|$MAIN_EXTRA|g" \
        "$HERE/nginx.conf.in" > "$dir/nginx.conf"
    # a module still being written may lack a directive: leave it out, say so
    local d syms
    syms=$(strings "$IM_MODULE")    # not "strings | grep -q": SIGPIPE under pipefail
    for d in im_zone im_delivery im_metrics; do
        if ! grep -qx "$d" <<< "$syms"; then
            sed -Ei "s|^([[:space:]]*)($d[ ;])|\1# not in this build: \2|" \
                "$dir/nginx.conf"
            grep -qs "directive $d" "$NOTES" || note "the module has no directive $d: left out"
        fi
    done
    if ! "$NGINX" -p "$dir" -c "$dir/nginx.conf" -t > "$dir/test.log" 2>&1; then
        note "nginx config $name rejected: $(grep -m1 emerg "$dir/test.log")"
        return 1
    fi
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" 2>> "$dir/stderr.log" &
    NGX_PID=$!
    PIDS+=("$NGX_PID")
    if ! wait_port "$WS_PORT" 10; then
        note "nginx $name did not listen: $(tail -2 "$dir/error.log" 2>/dev/null)"
        stop_nginx
        return 1
    fi
    local i
    for ((i = 0; i < 50; i++)); do
        NGX_WORKERS=$(pgrep -P "$NGX_PID" | paste -sd, -)
        [[ $(tr ',' '\n' <<< "$NGX_WORKERS" | grep -c .) -ge $workers ]] && break
        sleep 0.1
    done
    sleep 0.2       # Redis connections of the workers
}

stop_nginx() {
    [[ -n $NGX_PID ]] || return 0
    stop_pid "$NGX_PID" QUIT
    NGX_PID=
}

check_nginx_log() {     # name
    local f=$OUT/nginx-$1/error.log
    [[ -f $f ]] || return 0
    local bad
    bad=$(grep -E '\[(alert|emerg|crit)\]|exited on signal' "$f" | head -5)
    [[ -n $bad ]] && note "nginx $1 error.log: $bad"
    return 0
}

start_mosquitto() {
    local dir=$OUT/mosquitto
    mkdir -p "$dir"
    cat > "$dir/mosquitto.conf" <<EOF
# reference peer, started by bench/run.sh (not the system service)
per_listener_settings false
user root
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
log_dest file $dir/mosquitto.log
log_type error
log_type warning
EOF
    taskset -c 0 mosquitto -c "$dir/mosquitto.conf" > "$dir/stderr.log" 2>&1 &
    MQ_PID=$!
    PIDS+=("$MQ_PID")
    wait_port "$MQTT_PORT" 10 || { note "mosquitto did not start"; return 1; }
}

stop_mosquitto() {
    [[ -n $MQ_PID ]] || return 0
    stop_pid "$MQ_PID" TERM
    MQ_PID=
}

# ---------------------------------------------------------------------------
# one generator run: label timeout(s) pin(0|1) imgen-args...

# (GEN_BIN: another generator with imgen's options and output, bench/bin/floor)
gen() {
    local label=$1 tmo=$2 pin=$3 arg args=()
    shift 3
    # @REP@ in an argument (a histogram's file) names the repetition
    for arg in "$@"; do args+=("${arg//@REP@/${REP:+-r$REP}}"); done
    local cmd=("${GEN_BIN:-$IMGEN}" --label "$label" -T "$tmo" -l "$PAYLOAD" "${args[@]}")
    [[ $pin == 1 ]] && cmd=(taskset -c 1 "${cmd[@]}")
    echo "${cmd[*]}" | sed "s|$HERE/|bench/|g" >> "$CMDS"
    log "run $label"
    local line
    line=$(timeout $((tmo + 15)) "${cmd[@]}" 2> "$OUT/gen-${label//\//_}.log")
    if [[ -z $line ]]; then
        line="{\"label\":\"$label\",\"error\":\"no result ($(tail -1 "$OUT/gen-${label//\//_}.log" | tr -d '"\\'))\"}"
    fi
    [[ -n ${REP:-} ]] && line="{\"rep\":$REP,${line#\{}"
    echo "$line" >> "$RESULTS"
    log "  $line"
}

# the same generator run REPEAT times: repeat fresh|keep gen-args...; fresh
# empties the inboxes before each run
REP=
repeat() {
    local how=$1 k
    shift
    for ((k = 1; k <= REPEAT; k++)); do
        REP=$k
        [[ $how == fresh ]] && fresh_inbox
        gen "$@"
    done
    REP=
}

# login time bound for n sessions (the user centre does a few thousand a second)
login_tmo() { echo $(( $1 / 300 + 30 )); }

traffic_tmo() { awk -v d="$DURATION" -v w="$WARMUP" -v l="$1" 'BEGIN { printf "%d", d + w + l + 15 }'; }

seed_group() {
    local i args=()
    for ((i = 0; i <= MEMBERS; i++)); do args+=($((UID_BASE + i))); done
    rcli -n 1 DEL "im_group:$GID" > /dev/null
    rcli -n 1 SADD "im_group:$GID" "${args[@]}" > /dev/null
}

fresh_inbox() { rcli -n 0 FLUSHDB > /dev/null; }

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
        procs=$(( (n + 11999) / 12000 ))
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
            $(common_traffic) --cpu-pids "$NGX_WORKERS" --aux-pids "$REDIS_PID"
        repeat fresh "im/$dv/rate-ws" "$tmo" 1 -m ws -p "$WS_PORT" -s rate -k "$PAIRS" -r "$RATE" \
            -d "$DURATION" -W "$WARMUP" --drain "$DRAIN" --cpu-pids "$NGX_WORKERS" --aux-pids "$REDIS_PID" \
            --hist-out "$OUT/hist-im-$dv-rate@REP@.txt"
        repeat fresh "im/$dv/fanout-ws" "$tmo" 1 -m ws -p "$WS_PORT" -s fanout -M "$MEMBERS" -g "$GID" \
            $(common_traffic) --cpu-pids "$NGX_WORKERS" --aux-pids "$REDIS_PID" \
            --hist-out "$OUT/hist-im-$dv-fanout@REP@.txt"
        if [[ -n $FANOUT_WIDE ]]; then
            repeat fresh "im/$dv/fanoutwide-ws" "$tmo" 1 -m ws -p "$WS_PORT" -s fanout -M "$MEMBERS" \
                -g "$GID" -d "$DURATION" -W "$WARMUP" -w "$FANOUT_WIDE" --drain "$DRAIN" \
                --cpu-pids "$NGX_WORKERS" --aux-pids "$REDIS_PID"
        fi
        if [[ $RUN_TCP == 1 ]]; then
            fresh_inbox
            gen "im/$dv/pairs-tcp" "$tmo" 1 -m tcp -p "$WS_PORT" --tcp-port "$TCP_PORT" -s pairs \
                -k "$PAIRS" $(common_traffic) --cpu-pids "$NGX_WORKERS" --aux-pids "$REDIS_PID"
            fresh_inbox
            gen "im/$dv/fanout-tcp" "$tmo" 1 -m tcp -p "$WS_PORT" --tcp-port "$TCP_PORT" -s fanout \
                -M "$MEMBERS" -g "$GID" $(common_traffic) --cpu-pids "$NGX_WORKERS" \
                --aux-pids "$REDIS_PID"
        fi
        stop_nginx
        check_nginx_log "one-$dv"
    fi
}

run_peer() {
    local n procs lt tmo
    start_mosquitto || return
    for n in $IDLE; do
        if (( n > 19000 )); then
            note "mosquitto idle-$n not run: one process holds at most $(ulimit -Hn) descriptors here"
            continue
        fi
        procs=$(( (n + 11999) / 12000 ))
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
        --hist-out "$OUT/hist-mosquitto-rate@REP@.txt"
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
        -r "$RATE" -d "$DURATION" -W "$WARMUP" --hist-out "$OUT/hist-floor-rate@REP@.txt"
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
    start_redis
    start_uc
    seed_group
    for dv in $MODES; do
        run_im_mode "$dv"
    done
fi
echo "elapsed: $(( $(date +%s) - T0 )) s" >> "$OUT/machine.txt"
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"

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
