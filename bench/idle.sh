#!/bin/bash
# bench/idle.sh: memory per idle client (issue 20 item 4), the IM server
# beside plain nginx and mosquitto in one run.
#
# Each run starts a fresh server, opens IDLE_N clients with bench/bin/imgen
# -s idle, holds them, and reads the PSS of every server process (nginx:
# master and workers) before the first connection and after the last login;
# (after - before) / clients is the figure. The servers:
#
#   plain      Debian's nginx without the module, IDLE_WORKERS workers, a
#              `return 204` location: N HTTP/1.1 keep-alive connections
#              that made one request each (imgen -m http), the reference
#              an idle IM session is held to
#   im<k>      nginx with each module of IDLE_MODULES (bench/nginx.conf.in,
#              IDLE_WORKERS workers, write-through, im_zone): N WebSocket
#              sessions logged in through the user centre (imgen -m ws)
#   mosquitto  N MQTT clients, CONNECT + SUBSCRIBE u/<uid> QoS 1
#
# The servers take turns within a repetition, IDLE_REPEAT repetitions; the
# summary gives each server's median and every run.
#
#   bench/idle.sh
#   IDLE_MODULES="/tmp/main.so build/nginx/objs/ngx_im_module.so" bench/idle.sh
#
# Knobs: IDLE_N (10000), IDLE_REPEAT (3), IDLE_WORKERS (4), IDLE_MODULES
#        (the build), IDLE_PLAIN (1), IDLE_PEER (1: mosquitto),
#        IDLE_HOLD (8 s), IDLE_SETTLE (3 s), IDLE_PORT_BASE (22000).
# Writes bench/out/<date>-idle/{results.jsonl,summary.txt,commands.txt,...}.

set -u -o pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
N=${IDLE_N:-10000}
REPEAT=${IDLE_REPEAT:-3}
WORKERS=${IDLE_WORKERS:-4}
MODULES=${IDLE_MODULES:-$REPO/build/nginx/objs/ngx_im_module.so}
RUN_PLAIN=${IDLE_PLAIN:-1}
RUN_PEER=${IDLE_PEER:-1}
HOLD=${IDLE_HOLD:-8}
SETTLE=${IDLE_SETTLE:-3}
PB=${IDLE_PORT_BASE:-22000}
STREAM_MODULE=${IM_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
NGINX=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
OUT=${IDLE_OUT:-$HERE/out/$(date +%Y%m%d-%H%M%S)-idle}
IMGEN=$HERE/bin/imgen
UID_BASE=100000

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl CMDS=$OUT/commands.txt
: > "$RESULTS"; : > "$CMDS"
log() { echo "idle: $*" >&2; }

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

forget_pid() {
    local p n=()
    for p in "${PIDS[@]}"; do [[ $p != "$1" ]] && n+=("$p"); done
    PIDS=("${n[@]}")
}

stop_pid() {    # pid signal: signal, wait up to 10 s, then KILL
    local pid=$1 i
    kill -"$2" "$pid" 2>/dev/null || { forget_pid "$pid"; return 0; }
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
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
    WS=$((PB + 95)) HTTP=$((PB + 94)) REDIS_PORT=$((PB + 79))
    UC_PORT=$((PB + 90)) MQTT_PORT=$((PB + 83))
    busy=0
    for p in $WS $HTTP $REDIS_PORT $UC_PORT $MQTT_PORT $((PB + 96)); do
        port_busy "$p" && busy=1
    done
    (( busy == 0 )) && break
    PB=$((PB + 100))
done
(( busy == 0 )) || { log "no free port block"; exit 1; }

make -s -C "$HERE" bin/imgen >&2 || exit 1
if [[ $RUN_PEER == 1 ]] && ! command -v mosquitto >/dev/null; then
    log "mosquitto not installed: left out"
    RUN_PEER=0
fi
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc: $(nproc)"
    echo "nginx: $($NGINX -v 2>&1 | sed 's/.*version: //')"
    echo "mosquitto: $(mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version //p' | head -1)"
    echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "idle: N=$N repeat=$REPEAT workers=$WORKERS hold=$HOLD settle=$SETTLE"
} > "$OUT/machine.txt"

# as run.sh: loopback drops segments past the default 1000 when thousands
# of connections flush at once
nb=$(sysctl -n net.core.netdev_max_backlog 2>/dev/null || echo 0)
if (( nb < 16384 )) && sysctl -qw net.core.netdev_max_backlog=16384 2>/dev/null; then
    SYSCTL_RESTORE=$nb
fi

"$IMGEN" --gen-users "$N" --uid-base $UID_BASE > "$OUT/users.txt"
perl "$REPO/tools/im-usercentre" --listen "127.0.0.1:$UC_PORT" \
    --users "$OUT/users.txt" --workers 2 > "$OUT/usercentre.log" 2>&1 &
PIDS+=("$!")
wait_port "$UC_PORT" 20 || { log "user centre did not start"; exit 1; }
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$OUT" --logfile "$OUT/redis.log" --daemonize no &
PIDS+=("$!")
wait_port "$REDIS_PORT" 10 || { log "redis did not start"; exit 1; }

k=0
for mod in $MODULES; do
    cp "$mod" "$OUT/im$k.so" || exit 1
    echo "im$k: $mod sha256 $(sha256sum "$mod" | cut -c1-16)" >> "$OUT/machine.txt"
    k=$((k + 1))
done
NMOD=$k

procs=$(( (N + 11999) / 12000 ))
lt=$(( N / 300 + 30 ))

gen() {     # label mem-pids imgen-args...
    local label=$1 pids=$2 line
    shift 2
    local cmd=("$IMGEN" --label "$label" -T $((lt + 30)) -s idle -n "$N" -P "$procs"
        -S 8 --hold "$HOLD" --settle "$SETTLE" --login-timeout "$lt"
        --mem-pids "$pids" "$@")
    echo "${cmd[*]}" | sed "s|$HERE/|bench/|g" >> "$CMDS"
    log "run $label"
    line=$(timeout $((lt + 45)) "${cmd[@]}" 2> "$OUT/gen-$label.log")
    [[ -z $line ]] && line="{\"label\":\"$label\",\"error\":\"no result\"}"
    echo "$line" >> "$RESULTS"
}

NPID=
nginx_start() {     # dir conf
    "$NGINX" -p "$1" -c "$2" 2>> "$1/stderr.log" &
    NPID=$!; PIDS+=("$NPID")
    wait_port "$3" 10 || { log "nginx did not listen: $1"; return 1; }
    local i
    for ((i = 0; i < 50; i++)); do
        [[ $(pgrep -P "$NPID" | grep -c .) -ge $WORKERS ]] && break
        sleep 0.1
    done
    sleep 0.5       # the workers' Redis connections
}

workers_of() { pgrep -P "$1" | paste -sd, -; }

run_plain() {   # rep
    local dir=$OUT/plain-r$1
    mkdir -p "$dir/tmp"
    cat > "$dir/nginx.conf" <<EOF
# plain nginx, started by bench/idle.sh: the idle keep-alive reference
user root;
daemon off;
master_process on;
worker_processes $WORKERS;
worker_rlimit_nofile 20000;
error_log $dir/error.log warn;
pid $dir/nginx.pid;
events {
    worker_connections 19000;
    multi_accept on;
}
http {
    access_log off;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path       $dir/tmp/proxy;
    fastcgi_temp_path     $dir/tmp/fastcgi;
    uwsgi_temp_path       $dir/tmp/uwsgi;
    scgi_temp_path        $dir/tmp/scgi;
    keepalive_timeout 3600s;
    server {
        listen 127.0.0.1:$HTTP reuseport backlog=8192;
        location / {
            return 204;
        }
    }
}
EOF
    nginx_start "$dir" "$dir/nginx.conf" "$HTTP" || return 1
    gen "plain-r$1" "$NPID,$(workers_of "$NPID")" -m http -p "$HTTP" --path / -C 200
    stop_pid "$NPID" QUIT
}

run_im() {      # k rep
    local dir=$OUT/im$1-r$2
    mkdir -p "$dir/tmp"
    redis-cli -p "$REDIS_PORT" FLUSHALL > /dev/null
    sed -e "s|@DIR@|$dir|g" -e "s|@STREAM_MODULE@|$STREAM_MODULE|g" \
        -e "s|@IM_MODULE@|$OUT/im$1.so|g" -e "s|@WORKERS@|$WORKERS|g" \
        -e "s|@AFFINITY@||g" -e "s|@WORKER_CONNECTIONS@|19000|g" \
        -e "s|@DELIVERY@|write_through|g" -e "s|@WS_PORT@|$WS|g" \
        -e "s|@TCP_PORT@|$((PB + 96))|g" -e "s|@REDIS_PORT@|$REDIS_PORT|g" \
        -e "s|@UC_PORT@|$UC_PORT|g" -e "s|@REUSEPORT@|reuseport|g" \
        -e "s|@MAIN@||g" "$HERE/nginx.conf.in" > "$dir/nginx.conf"
    nginx_start "$dir" "$dir/nginx.conf" "$WS" || return 1
    local w
    w=$(workers_of "$NPID")
    gen "im$1-r$2" "$NPID,$w" -m ws -p "$WS" -C 200 --cpu-pids "$w"
    stop_pid "$NPID" QUIT
    grep -E '\[(alert|emerg|crit)\]|exited on signal' "$dir/error.log" \
        | head -5 | sed "s/^/idle: im$1-r$2: /" >&2
}

run_peer() {    # rep
    local dir=$OUT/mosquitto-r$1 mpid
    mkdir -p "$dir"
    cat > "$dir/mosquitto.conf" <<EOF
# reference peer, started by bench/idle.sh (not the system service)
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
    mosquitto -c "$dir/mosquitto.conf" > "$dir/stderr.log" 2>&1 &
    mpid=$!; PIDS+=("$mpid")
    wait_port "$MQTT_PORT" 10 || { log "mosquitto did not start"; return 1; }
    gen "mosquitto-r$1" "$mpid" -m mqtt -p "$MQTT_PORT" -C 50 --cpu-pids "$mpid"
    stop_pid "$mpid" TERM
}

for ((r = 1; r <= REPEAT; r++)); do
    [[ $RUN_PLAIN == 1 ]] && run_plain "$r"
    for ((k = 0; k < NMOD; k++)); do run_im "$k" "$r"; done
    if [[ $RUN_PEER == 1 ]]; then
        if (( N > 19000 )); then
            log "mosquitto left out: one process holds at most 20,000 descriptors"
        else
            run_peer "$r"
        fi
    fi
done
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"

python3 - "$RESULTS" <<'PY' | tee "$OUT/summary.txt"
import json, re, statistics, sys
runs = {}
for l in open(sys.argv[1]):
    j = json.loads(l)
    name = re.sub(r'-r\d+$', '', j['label'])
    b = j.get('bytes_per_session')
    runs.setdefault(name, []).append(
        (b['pss'], b['rss'], j.get('sessions_ok'), j.get('sessions'))
        if b else None)
print("| server | PSS bytes/client, median | each run (PSS) | RSS, median "
      "| clients up |")
print("|---|---|---|---|---|")
for name, rs in runs.items():
    ok = [r for r in rs if r]
    if not ok:
        print("| %s | failed | | | |" % name)
        continue
    print("| %s | %.0f | %s | %.0f | %s |" % (
        name, statistics.median(r[0] for r in ok),
        " / ".join("%.0f" % r[0] for r in ok),
        statistics.median(r[1] for r in ok),
        " / ".join("%s of %s" % (r[2], r[3]) for r in ok)))
PY
log "results in $OUT"
