#!/bin/bash
# bench/storm.sh: a login storm (issue 21 item 2). STORM_N WebSocket logins
# as fast as imgen opens them (-C: that many connects and logins in flight
# per generator process), against STORM_WORKERS nginx workers behind a
# reuseport listener, with Redis pinned to the same core as every worker;
# meanwhile STORM_RATE messages/s flow between 100 pairs logged in before.
# The user centre (tools/im-usercentre, Perl) is the slowest part of a
# login here: its connect and read timeouts are raised so that logins wait
# for it rather than fail. After each run it scrapes /metrics: Redis reconnects, PINGs of the
# watchdog, failed Redis commands, messages refused for Redis, logins.
#
#   bench/storm.sh                        this build, 50,000 logins
#   STORM_N=20000 STORM_MODULES="/tmp/main.so build/nginx/objs/ngx_im_module.so" \
#       bench/storm.sh                    the same storm for each module, in turn,
#                                         same run: the comparison
#
# Writes bench/out/<date>-storm/{results.jsonl,metrics-*.txt,commands.txt,...}
# and prints one summary line per module.
#
# Knobs: STORM_N (50000), STORM_WORKERS (2), STORM_PROCS (imgen -P, 3),
#        STORM_SRC (imgen -S source addresses, 4: 64k ports each),
#        STORM_CONCURRENCY (imgen -C, 5000), STORM_TIMEOUT (im_redis_timeout,
#        3s: the default), STORM_RATE (200), STORM_MODULES (the build),
#        STORM_PORT_BASE (21000), STORM_UC (perl: tools/im-usercentre;
#        nginx: bench/usercentre-login.conf.in on CPU 1, not the bottleneck).

set -u -o pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
N=${STORM_N:-50000}
WORKERS=${STORM_WORKERS:-2}
PROCS=${STORM_PROCS:-3}
SRC=${STORM_SRC:-4}
CONC=${STORM_CONCURRENCY:-5000}
RTIMEOUT=${STORM_TIMEOUT:-3s}
RATE=${STORM_RATE:-200}
MODULES=${STORM_MODULES:-$REPO/build/nginx/objs/ngx_im_module.so}
PB=${STORM_PORT_BASE:-21000}
UC=${STORM_UC:-perl}
STREAM_MODULE=${IM_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
NGINX=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
OUT=${STORM_OUT:-$HERE/out/$(date +%Y%m%d-%H%M%S)-storm}
IMGEN=$HERE/bin/imgen
UID_BASE=100000
PAIRS=100

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl CMDS=$OUT/commands.txt
: > "$RESULTS"; : > "$CMDS"
log() { echo "storm: $*" >&2; }

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
    WS=$((PB + 95)) REDIS_PORT=$((PB + 79)) UC_PORT=$((PB + 90))
    busy=0
    for p in $WS $REDIS_PORT $UC_PORT; do port_busy "$p" && busy=1; done
    (( busy == 0 )) && break
    PB=$((PB + 100))
done
(( busy == 0 )) || { log "no free port block"; exit 1; }

make -s -C "$HERE" bin/imgen >&2 || exit 1
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc: $(nproc)"
    echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "storm: N=$N workers=$WORKERS procs=$PROCS src=$SRC concurrency=$CONC im_redis_timeout=$RTIMEOUT rate=$RATE usercentre=$UC"
} > "$OUT/machine.txt"

# as run.sh: loopback drops segments past the default 1000 when thousands
# of connections flush at once, and each drop costs a retransmission
nb=$(sysctl -n net.core.netdev_max_backlog 2>/dev/null || echo 0)
if (( nb < 16384 )) && sysctl -qw net.core.netdev_max_backlog=16384 2>/dev/null; then
    SYSCTL_RESTORE=$nb
fi

# benchuser0..2*PAIRS-1 talk, the storm logs in the users after them
"$IMGEN" --gen-users $((N + 2 * PAIRS)) --uid-base $UID_BASE > "$OUT/users.txt"
if [[ $UC == nginx ]]; then
    mkdir -p "$OUT/tmp"
    sed -e "s|@DIR@|$OUT|g" -e "s|@UC_PORT@|$UC_PORT|g" \
        "$HERE/usercentre-login.conf.in" > "$OUT/usercentre.conf"
    taskset -c 1 "$NGINX" -p "$OUT" -c "$OUT/usercentre.conf" \
        > "$OUT/usercentre.log" 2>&1 &
else
    perl "$REPO/tools/im-usercentre" --listen "127.0.0.1:$UC_PORT" \
        --users "$OUT/users.txt" --workers 2 > "$OUT/usercentre.log" 2>&1 &
fi
PIDS+=("$!")
wait_port "$UC_PORT" 20 || { log "user centre did not start"; exit 1; }

run_one() {   # index module
    local k=$1 mod=$2 dir=$OUT/run$1 aff i npid workers rpid rate_pid line
    mkdir -p "$dir/tmp"
    cp "$mod" "$dir/ngx_im_module.so"
    echo "run$k: $mod sha256 $(sha256sum "$mod" | cut -c1-16)" >> "$OUT/machine.txt"

    # Redis on CPU 0, as every worker
    taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --dir "$dir" --logfile "$dir/redis.log" --daemonize no &
    rpid=$!; PIDS+=("$rpid")
    wait_port "$REDIS_PORT" 10 || { log "redis did not start"; return 1; }

    aff="worker_cpu_affinity$(for ((i = 0; i < WORKERS; i++)); do printf ' 01'; done);"
    sed -e "s|@DIR@|$dir|g" -e "s|@STREAM_MODULE@|$STREAM_MODULE|g" \
        -e "s|@IM_MODULE@|$dir/ngx_im_module.so|g" -e "s|@WORKERS@|$WORKERS|g" \
        -e "s|@AFFINITY@|$aff|g" -e "s|@WORKER_CONNECTIONS@|19000|g" \
        -e "s|@DELIVERY@|write_through|g" -e "s|@WS_PORT@|$WS|g" \
        -e "s|@TCP_PORT@|$((PB + 96))|g" -e "s|@REDIS_PORT@|$REDIS_PORT|g" \
        -e "s|@UC_PORT@|$UC_PORT|g" -e "s|@REUSEPORT@|reuseport|g" \
        -e "s|@MAIN@|im_redis_timeout $RTIMEOUT;|" \
        -e "s|proxy_connect_timeout 2s;|proxy_connect_timeout 30s;|" \
        -e "s|proxy_read_timeout 10s;|proxy_read_timeout 60s;|" \
        "$HERE/nginx.conf.in" > "$dir/nginx.conf"
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" 2>> "$dir/stderr.log" &
    npid=$!; PIDS+=("$npid")
    wait_port "$WS" 10 || { log "nginx did not listen"; return 1; }
    sleep 1
    workers=$(pgrep -P "$npid" | paste -sd, -)

    # the talkers: logged in first, then messages all through the storm
    local rate_cmd=(taskset -c 1 "$IMGEN" --label "run$k-talk" -s rate
        -p "$WS" -k $PAIRS -r "$RATE" -d 60 -W 1 --drain 10 -T 200)
    echo "${rate_cmd[*]}" | sed "s|$HERE/|bench/|g" >> "$CMDS"
    "${rate_cmd[@]}" > "$dir/talk.json" 2> "$dir/talk.log" &
    rate_pid=$!
    sleep 3

    local cmd=(taskset -c 1 "$IMGEN" --label "run$k-storm" -s idle -p "$WS"
        -n "$N" -P "$PROCS" -S "$SRC" -C "$CONC" -u $((2 * PAIRS))
        --hold 2 --settle 0 --login-timeout 300 -T 400
        --cpu-pids "$workers" --aux-pids "$rpid")
    echo "${cmd[*]}" | sed "s|$HERE/|bench/|g" >> "$CMDS"
    log "run$k: $N logins ($mod)"
    # the sessions per worker, each second while the storm lasts
    ( while :; do
          curl -s "http://127.0.0.1:$WS/metrics" \
              | awk '/^im_worker_sessions/ { printf "%s ", $2 } END { print "" }'
          sleep 1
      done ) > "$dir/spread.txt" 2> /dev/null &
    local spread_pid=$!
    line=$("${cmd[@]}" 2> "$dir/storm.log")
    kill "$spread_pid" 2> /dev/null; wait "$spread_pid" 2> /dev/null
    [[ -z $line ]] && line="{\"label\":\"run$k-storm\",\"error\":\"no result\"}"
    echo "$line" >> "$RESULTS"
    wait "$rate_pid"
    cat "$dir/talk.json" >> "$RESULTS"

    curl -s "http://127.0.0.1:$WS/metrics" > "$OUT/metrics-run$k.txt"
    grep -E '\[(alert|emerg|crit|error)\]|timed out|PING sent' "$dir/error.log" \
        | sed 's/^[0-9/: ]*//' | sort | uniq -c | sort -rn | head -20 \
        > "$OUT/errors-run$k.txt"

    kill -QUIT "$npid"; wait "$npid" 2>/dev/null
    kill -TERM "$rpid"; wait "$rpid" 2>/dev/null

    python3 - "$OUT/metrics-run$k.txt" "$line" "$(cat "$dir/talk.json")" "$mod" \
        "$dir/spread.txt" <<'PY'
import json, re, sys
m = dict(re.findall(r'^(im_\S+) (\S+)$', open(sys.argv[1]).read(), re.M))
s = json.loads(sys.argv[2]); t = json.loads(sys.argv[3] or '{}')
g = lambda k: m.get(k, '?')
print("storm: %s: logins ok %s of %s (failed %s, retries %s, refused %s) in %.1f s; "
      "redis reconnects %s, pings %s, failed commands %s; "
      "messages sent %s acked %s, refused for Redis %s"
      % (sys.argv[4], s.get('sessions_ok'), s.get('sessions'), s.get('sessions_failed'),
         s.get('retries'), s.get('refused'), s.get('login_s', 0),
         g('im_redis_reconnects_total'), g('im_redis_pings_total'),
         g('im_redis_failed_total'), t.get('sent'), t.get('acked'),
         g('im_refused_total{reason="store"}')))
l = s.get('login_us') or {}
if l:
    print("storm: %s: login time (first connect to CONNECT_ACK) p50 %.1f ms, "
          "p99 %.1f ms; worker CPU %s us per login; talkers' message "
          "latency p99 %.1f ms"
          % (sys.argv[4], l.get('p50', 0) / 1e3, l.get('p99', 0) / 1e3,
             s.get('srv_cpu_us_per_login'),
             (t.get('latency_us') or {}).get('p99', 0) / 1e3))
# the fullest moment: sessions per worker, and the largest over the mean
best = max(([int(x) for x in l.split()] for l in open(sys.argv[5])
            if l.strip()), key=sum, default=[])
if best and sum(best):
    print("storm: %s: sessions per worker at the fullest: %s (largest / mean %.3f)"
          % (sys.argv[4], " ".join(map(str, best)),
             max(best) * len(best) / sum(best)))
PY
}

k=0
for mod in $MODULES; do
    run_one $k "$mod" | tee -a "$OUT/summary.txt"
    k=$((k + 1))
done
log "results in $OUT"
