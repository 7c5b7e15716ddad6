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

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
N=${IDLE_N:-10000}
REPEAT=${IDLE_REPEAT:-3}
WORKERS=${IDLE_WORKERS:-4}
MODULES=${IDLE_MODULES:-$IM_BUILD}
RUN_PLAIN=${IDLE_PLAIN:-1}
RUN_PEER=${IDLE_PEER:-1}
HOLD=${IDLE_HOLD:-8}
SETTLE=${IDLE_SETTLE:-3}
PB=${IDLE_PORT_BASE:-22000}
OUT=${IDLE_OUT:-$HERE/out/$(date +%Y%m%d-%H%M%S)-idle}

open_out
port_block "$PB" WS=95 HTTP=94 REDIS_PORT=79 UC_PORT=90 MQTT_PORT=83 \
    TCP_PORT=96 || exit 1

build_tools bin/imgen
if [[ $RUN_PEER == 1 ]] && ! command -v mosquitto >/dev/null; then
    log "mosquitto not installed: left out"
    RUN_PEER=0
fi
{
    facts date nproc nginx mosquitto commit start
    echo "idle: N=$N repeat=$REPEAT workers=$WORKERS hold=$HOLD settle=$SETTLE"
} > "$OUT/machine.txt"

raise_backlog

gen_users "$N"
start_uc_perl "$OUT/users.txt" "$OUT/usercentre.log" || exit 1
start_redis "$OUT" "" || exit 1

k=0
for mod in $MODULES; do
    keep_module "im$k" "$mod" "$OUT/im$k.so" || exit 1
    k=$((k + 1))
done
NMOD=$k

procs=$(idle_procs "$N")
lt=$(login_tmo "$N")

gen() {     # label mem-pids imgen-args...
    local label=$1 pids=$2
    shift 2
    gen_line "$label" $((lt + 30)) "$IMGEN" --label "$label" -T $((lt + 30)) \
        -s idle -n "$N" -P "$procs" -S 8 --hold "$HOLD" --settle "$SETTLE" \
        --login-timeout "$lt" --mem-pids "$pids" "$@"
    echo "$GEN_LINE" >> "$RESULTS"
}

start_server() {    # dir port: nginx, its workers, their Redis connections
    nginx_up "$1" "$1/nginx.conf" "$2" "$WORKERS" \
        || { log "nginx did not listen: $1"; return 1; }
    sleep 0.5
}

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
    start_server "$dir" "$HTTP" || return 1
    gen "plain-r$1" "$NGX_PID,$NGX_WORKERS" -m http -p "$HTTP" --path / -C 200
    stop_pid "$NGX_PID" QUIT
}

run_im() {      # k rep
    local dir=$OUT/im$1-r$2
    mkdir -p "$dir/tmp"
    rcli FLUSHALL > /dev/null
    im_conf "$dir/nginx.conf" DIR="$dir" IM_MODULE="$OUT/im$1.so" \
        WORKERS="$WORKERS" DELIVERY=write_through WS_PORT="$WS" \
        TCP_PORT="$TCP_PORT" REUSEPORT=reuseport || return 1
    start_server "$dir" "$WS" || return 1
    gen "im$1-r$2" "$NGX_PID,$NGX_WORKERS" -m ws -p "$WS" -C 200 \
        --cpu-pids "$NGX_WORKERS"
    stop_pid "$NGX_PID" QUIT
    nginx_alerts "$dir/error.log" | sed "s/^/idle: im$1-r$2: /" >&2
}

run_peer() {    # rep
    start_mosquitto "$OUT/mosquitto-r$1" "" || return 1
    gen "mosquitto-r$1" "$MQ_PID" -m mqtt -p "$MQTT_PORT" -C 50 \
        --cpu-pids "$MQ_PID"
    stop_pid "$MQ_PID" TERM
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
facts end >> "$OUT/machine.txt"

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
