# shellcheck shell=bash disable=SC2034  # variables for the scripts
# bench/lib.sh: what the bench drivers share. Sourced by run.sh, storm.sh,
# login.sh, idle.sh, scaling.sh and fullbox.sh before their knobs:
#
#   BENCH_TAG=bench     # the prefix of log lines; the script's name if unset
#   source "$(dirname "$0")/lib.sh"
#
# It owns, once:
#   paths       HERE (bench/), REPO, IMGEN, FLOOR, IM_BUILD (the module as
#               built), NGINX (TEST_NGINX_BINARY), STREAM_MODULE
#               (IM_STREAM_MODULE), UID_BASE (imgen's users: 100000 + i)
#   messages    log (stderr), note (also into $NOTES when a script keeps it)
#   output      open_out (results.jsonl, commands.txt), open_notes,
#               record_cmd, gen_line (one generator run, bounded, its JSON
#               line), each_module (a run per module, summary.txt)
#   processes   PIDS: everything started, stopped by pid on exit (TERM,
#               then KILL; the exit trap); stop_pid, forget_pid
#   ports       port_busy, wait_port, port_taken, port_block (a block of
#               ports nobody holds)
#   the machine facts (machine.txt lines), raise_backlog (the loopback
#               backlog for the run, restored on exit)
#   services    start_redis, rcli, fresh_inbox, seed_group, gen_users,
#               start_uc_perl (tools/im-usercentre), start_uc_nginx
#               (usercentre-nginx.conf.in), start_mosquitto, started, im_conf
#               (nginx.conf.in rendered), nginx_up, nginx_alerts,
#               error_counts, keep_module
# Each script keeps its knobs, its scenarios and its summary. Everything
# listens on 127.0.0.1.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
IMGEN=$HERE/bin/imgen
FLOOR=$HERE/bin/floor
IM_BUILD=$REPO/build/nginx/objs/ngx_im_module.so
NGINX=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
STREAM_MODULE=${IM_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
UID_BASE=100000
BENCH_TAG=${BENCH_TAG:-$(basename "$0" .sh)}

log() { echo "$BENCH_TAG: $*" >&2; }
note() { [[ -n ${NOTES:-} ]] && echo "$*" >> "$NOTES"; log "$*"; }

# ---------------------------------------------------------------------------
# the output folder: OUT, set by the script

open_out() {
    mkdir -p "$OUT"
    RESULTS=$OUT/results.jsonl
    CMDS=$OUT/commands.txt
    : > "$RESULTS"
    : > "$CMDS"
}

open_notes() {  # notes.txt, which note writes to too
    NOTES=$OUT/notes.txt
    : > "$NOTES"
}

# each_module function: the function (index module) for each module of
# $MODULES in turn, what it prints into summary.txt too. Not in a pipe:
# the function runs in this shell, so the processes it starts are in PIDS
# and the exit trap stops them even when a run is cut short.
each_module() {
    local k=0 mod
    for mod in $MODULES; do
        "$1" "$k" "$mod" > >(tee -a "$OUT/summary.txt")
        wait "$!"
        k=$((k + 1))
    done
    log "results in $OUT"
}

record_cmd() {      # command...: into commands.txt, paths relative
    local c="$*"
    echo "${c//"$HERE"\//bench/}" >> "$CMDS"
}

# One generator run bounded by its own -T (timeout) and 15 s more from
# outside: label timeout command... Its JSON line is left in GEN_LINE, or
# an error line with the last line of its stderr (gen-<label>.log).
GEN_LINE=
gen_line() {
    local label=$1 tmo=$2 glog
    shift 2
    glog=$OUT/gen-${label//\//_}.log
    record_cmd "$@"
    log "run $label"
    GEN_LINE=$(timeout $((tmo + 15)) "$@" 2> "$glog")
    if [[ -z $GEN_LINE ]]; then
        GEN_LINE="{\"label\":\"$label\",\"error\":\"no result"
        GEN_LINE+=" ($(tail -1 "$glog" | tr -d '"\\'))\"}"
    fi
}

# login time bound for n sessions (the Perl user centre does a few
# thousand a second), and generator processes for n idle sessions (one
# process holds at most 20,000 descriptors here)
login_tmo() { echo $(( $1 / 300 + 30 )); }
idle_procs() { echo $(( ($1 + 11999) / 12000 )); }

build_tools() {     # make targets of bench/Makefile
    make -s -C "$HERE" "$@" >&2 || { log "cannot build $*"; exit 1; }
}

# ---------------------------------------------------------------------------
# processes we started, stopped by pid on exit; a script may define
# cleanup_more to print more pids to KILL at the very end (processes whose
# parent was killed, say)

PIDS=()
SYSCTL_RESTORE=
CLEANUP_GRACE=0.5
cleanup() {
    local p more=()
    if [[ -n $SYSCTL_RESTORE ]]; then
        sysctl -qw "net.core.netdev_max_backlog=$SYSCTL_RESTORE" 2>/dev/null
    fi
    if declare -F cleanup_more > /dev/null; then
        read -ra more <<< "$(cleanup_more)"
    fi
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    sleep "$CLEANUP_GRACE"
    for p in "${PIDS[@]}" "${more[@]}"; do
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

# ---------------------------------------------------------------------------
# ports

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {   # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        port_busy "$1" && return 0
        sleep 0.1
    done
    return 1
}

# a port a listener cannot have: listened on, or the local end of a
# connection (an outgoing one's source port, in the ephemeral range)
port_taken() {
    port_busy "$1" \
        || [[ -n $(ss -Htan exclude time-wait "( sport = :$1 )" 2>/dev/null) ]]
}

# Other servers and benches may run here: port_block base NAME=offset...
# sets each NAME to base + offset for the first base (base, base + 100,
# ..., 40 tries) at which none of them is taken, and PB to that base.
port_block() {
    local base=$1 try spec busy
    shift
    for ((try = 0; try < 40; try++)); do
        busy=0
        for spec in "$@"; do
            port_taken $((base + ${spec#*=})) && { busy=1; break; }
        done
        if (( busy == 0 )); then
            for spec in "$@"; do
                printf -v "${spec%%=*}" %d $((base + ${spec#*=}))
            done
            PB=$base
            return 0
        fi
        base=$((base + 100))
    done
    log "no free port block"
    return 1
}

# ---------------------------------------------------------------------------
# the machine

facts() {       # key...: machine.txt lines, in the order asked
    local k
    for k in "$@"; do
        case $k in
        date)   echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')" ;;
        nproc)  echo "nproc: $(nproc)" ;;
        cpu)    echo "cpu: $(lscpu 2>/dev/null \
                    | sed -n 's/^Model name: *//p' | head -1)" ;;
        memory) echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}')" ;;
        kernel) echo "kernel: $(uname -sr)" ;;
        nginx)  echo "nginx: $("$NGINX" -v 2>&1 | sed 's/.*version: //')" ;;
        redis)  echo "redis: $(redis-server --version \
                    | sed 's/^Redis server //; s/ sha=.*//')" ;;
        mosquitto)
                echo "mosquitto: $(mosquitto -h 2>/dev/null \
                    | sed -n 's/^mosquitto version //p' | head -1)" ;;
        gcc)    echo "gcc: $(gcc --version | head -1)" ;;
        commit) echo "commit: $(git -C "$REPO" rev-parse --short HEAD \
                    2>/dev/null)" ;;
        descriptors)
                echo "descriptors per process: $(ulimit -Hn)" ;;
        start)  echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)" ;;
        end)    echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" ;;
        *)      log "facts: no $k" ;;
        esac
    done
}

sha16() { sha256sum "$1" | cut -c1-16; }

# keep_module tag module copy: run a copy, so that a rebuild in the tree
# during the run changes nothing; machine.txt names the original
keep_module() {
    cp "$2" "$3" || { log "cannot copy $2"; return 1; }
    echo "$1: $2 sha256 $(sha16 "$2")" >> "$OUT/machine.txt"
}

# Loopback packets wait in a per-CPU backlog (net.core.netdev_max_backlog,
# 1000 by default); a generator that flushes a thousand connections in one
# pass overflows it, and every dropped segment costs a retransmission
# timeout (>= 200 ms) that shows up as latency. Raised for the run,
# restored on exit.
raise_backlog() {
    local nb
    nb=$(sysctl -n net.core.netdev_max_backlog 2>/dev/null || echo 0)
    (( nb < 16384 )) || return 0
    if sysctl -qw net.core.netdev_max_backlog=16384 2>/dev/null; then
        SYSCTL_RESTORE=$nb
        note "net.core.netdev_max_backlog raised from $nb to 16384 for the" \
             "run (restored at the end)"
    else
        note "net.core.netdev_max_backlog is $nb and could not be raised:" \
             "expect loopback drops"
    fi
}

# ---------------------------------------------------------------------------
# services. A cpu argument pins the process with taskset ("" leaves it to
# the scheduler); taskset and nice exec, so $! is the server's own pid,
# which imgen's --cpu-pids and --aux-pids need.

# started variable port seconds what: the process just started in the
# background into PIDS and the variable; waits for its port
started() {
    printf -v "$1" %d "$!"
    PIDS+=("$!")
    wait_port "$2" "$3" || { note "$4 did not start"; return 1; }
}

gen_users() {   # n: benchuser<i> pw<i> <UID_BASE + i> into $OUT/users.txt
    "$IMGEN" --gen-users "$1" --uid-base $UID_BASE > "$OUT/users.txt"
}

# BENCH_REDIS_SCHED=batch: Redis as SCHED_BATCH (chrt -b), which the
# kernel does not let preempt the task that wakes it (an experiment)
start_redis() {     # dir cpu [redis-server options...] -> REDIS_PID
    local dir=$1 on_cpu=()
    [[ -n $2 ]] && on_cpu=(taskset -c "$2")
    [[ ${BENCH_REDIS_SCHED:-} == batch ]] && on_cpu=(chrt -b 0 "${on_cpu[@]}")
    shift 2
    "${on_cpu[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save '' --appendonly no --dir "$dir" --logfile "$dir/redis.log" \
        --daemonize no "$@" &
    started REDIS_PID "$REDIS_PORT" 10 redis
}

rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

fresh_inbox() { rcli -n 0 FLUSHDB > /dev/null; }

seed_group() {      # members: users 0..members in im_group:$GID (db 1)
    local i
    rcli -n 1 DEL "im_group:$GID" > /dev/null
    for ((i = 0; i <= $1; i += 1000)); do
        seq $((UID_BASE + i)) $((UID_BASE + (i + 999 < $1 ? i + 999 : $1))) \
            | xargs redis-cli -p "$REDIS_PORT" -n 1 SADD "im_group:$GID" \
            > /dev/null
    done
}

start_uc_perl() {   # users-file log -> UC_PID: tools/im-usercentre
    perl "$REPO/tools/im-usercentre" --listen "127.0.0.1:$UC_PORT" \
        --users "$1" --workers 2 > "$2" 2>&1 &
    started UC_PID "$UC_PORT" 20 "the user centre"
}

# A user centre that is not the bottleneck: Debian's nginx answering from a
# map (usercentre-nginx.conf.in), in dir (its config, logs and temp files).
# start_uc_nginx dir workers affinity [wrapper...], the wrapper being,
# say, "taskset -c 1" or "nice -n -10" -> UC_PID
start_uc_nginx() {
    local dir=$1 workers=$2 aff=$3
    shift 3
    mkdir -p "$dir/tmp"
    sed -e "s|@DIR@|$dir|g" -e "s|@UC_PORT@|$UC_PORT|g" \
        -e "s|@UC_WORKERS@|$workers|g" -e "s|@AFFINITY@|$aff|g" \
        "$HERE/usercentre-nginx.conf.in" > "$dir/nginx.conf"
    "$@" "$NGINX" -p "$dir" -c "$dir/nginx.conf" 2>> "$dir/stderr.log" &
    started UC_PID "$UC_PORT" 10 "the user centre"
}

start_mosquitto() {     # dir cpu -> MQ_PID, on MQTT_PORT
    local dir=$1 on_cpu=()
    [[ -n $2 ]] && on_cpu=(taskset -c "$2")
    mkdir -p "$dir"
    cat > "$dir/mosquitto.conf" <<EOF
# reference peer, started by bench/$(basename "$0") (not the system service)
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
    "${on_cpu[@]}" mosquitto -c "$dir/mosquitto.conf" > "$dir/stderr.log" 2>&1 &
    started MQ_PID "$MQTT_PORT" 10 mosquitto
}

# nginx.conf.in rendered: im_conf dest NAME=value... [-e sed-expression]...
# Every @NAME@ of the template needs a value; these have defaults:
# STREAM_MODULE, REDIS_PORT, UC_PORT (the script's), WORKER_CONNECTIONS
# (19000), AFFINITY, REUSEPORT and MAIN (empty). The sed expressions, a
# script's own changes, apply after the names.
im_conf() {
    local dest=$1 k args=() extra=()
    local -A v=([STREAM_MODULE]=$STREAM_MODULE [REDIS_PORT]=${REDIS_PORT:-}
                [UC_PORT]=${UC_PORT:-} [WORKER_CONNECTIONS]=19000
                [AFFINITY]="" [REUSEPORT]="" [MAIN]="")
    shift
    while (( $# )); do
        case $1 in
        -e)  extra+=(-e "$2"); shift 2 ;;
        *=*) v[${1%%=*}]=${1#*=}; shift ;;
        *)   log "im_conf: $1?"; return 1 ;;
        esac
    done
    for k in "${!v[@]}"; do args+=(-e "s|@$k@|${v[$k]}|g"); done
    sed "${args[@]}" "${extra[@]}" "$HERE/nginx.conf.in" > "$dest"
    if grep -q '@[A-Z_]*@' "$dest"; then
        log "$dest: no value for $(grep -o '@[A-Z_]*@' "$dest" | sort -u \
            | paste -sd' ' -)"
        return 1
    fi
}

# nginx_up dir conf port workers [seconds]: start nginx (prefix dir, its
# stderr into dir/stderr.log), wait up to seconds (10) for its port and
# half that for its workers -> NGX_PID, NGX_WORKERS (a comma list).
# Fails when the port never opens or the master is gone.
NGX_PID="" NGX_WORKERS=""
nginx_up() {
    local dir=$1 conf=$2 port=$3 workers=$4 secs=${5:-10} i
    NGX_WORKERS=
    "$NGINX" -p "$dir" -c "$conf" 2>> "$dir/stderr.log" &
    NGX_PID=$!
    PIDS+=("$NGX_PID")
    wait_port "$port" "$secs" || return 1
    for ((i = 0; i < secs * 5; i++)); do
        NGX_WORKERS=$(pgrep -P "$NGX_PID" | paste -sd, -)
        (( $(tr ',' '\n' <<< "$NGX_WORKERS" | grep -c .) >= workers )) && break
        sleep 0.1
    done
    kill -0 "$NGX_PID" 2>/dev/null || return 1
    if (( $(tr ',' '\n' <<< "$NGX_WORKERS" | grep -c .) < workers )); then
        log "nginx in $dir: workers $NGX_WORKERS of $workers"
    fi
    return 0
}

# the first n (5) alerts, emergencies, crits and crashes of an error log
nginx_alerts() {
    grep -E '\[(alert|emerg|crit)\]|exited on signal' "$1" 2>/dev/null \
        | head -"${2:-5}"
}

# pattern log: the matching lines without their time stamps, each kind
# once with its count, most first (20 kinds)
error_counts() {
    grep -E "$1" "$2" | sed 's/^[0-9/: ]*//' | sort | uniq -c | sort -rn \
        | head -20
}
