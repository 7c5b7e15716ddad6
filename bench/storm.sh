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
#        nginx: bench/usercentre-nginx.conf.in, one worker on CPU 1, not
#        the bottleneck), STORM_LOG (the error log's level, warn; info adds
#        a line per session end, counted by reason in ends-run<k>.txt and
#        the summary), STORM_MAIN (more main-context directives, e.g.
#        "im_logins_in_flight 0;").

set -u -o pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
N=${STORM_N:-50000}
WORKERS=${STORM_WORKERS:-2}
PROCS=${STORM_PROCS:-3}
SRC=${STORM_SRC:-4}
CONC=${STORM_CONCURRENCY:-5000}
RTIMEOUT=${STORM_TIMEOUT:-3s}
RATE=${STORM_RATE:-200}
MODULES=${STORM_MODULES:-$IM_BUILD}
PB=${STORM_PORT_BASE:-21000}
UC=${STORM_UC:-perl}
LOGLEVEL=${STORM_LOG:-warn}
MAIN=${STORM_MAIN:-}
OUT=${STORM_OUT:-$HERE/out/$(date +%Y%m%d-%H%M%S)-storm}
PAIRS=100

open_out
port_block "$PB" WS=95 TCP_PORT=96 REDIS_PORT=79 UC_PORT=90 || exit 1
build_tools bin/imgen
{
    facts date nproc commit start
    echo "storm: N=$N workers=$WORKERS procs=$PROCS src=$SRC concurrency=$CONC im_redis_timeout=$RTIMEOUT rate=$RATE usercentre=$UC"
} > "$OUT/machine.txt"

raise_backlog

# benchuser0..2*PAIRS-1 talk, the storm logs in the users after them
gen_users $((N + 2 * PAIRS))
if [[ $UC == nginx ]]; then
    start_uc_nginx "$OUT/uc" 1 "" taskset -c 1 || exit 1
else
    start_uc_perl "$OUT/users.txt" "$OUT/usercentre.log" || exit 1
fi

run_one() {   # index module
    local k=$1 mod=$2 dir=$OUT/run$1 aff i npid workers rpid rate_pid line
    mkdir -p "$dir/tmp"
    keep_module "run$k" "$mod" "$dir/ngx_im_module.so" || return 1

    # Redis on CPU 0, as every worker
    start_redis "$dir" 0 || return 1
    rpid=$REDIS_PID

    aff="worker_cpu_affinity$(for ((i = 0; i < WORKERS; i++)); do printf ' 01'; done);"
    im_conf "$dir/nginx.conf" DIR="$dir" IM_MODULE="$dir/ngx_im_module.so" \
        WORKERS="$WORKERS" AFFINITY="$aff" DELIVERY=write_through \
        WS_PORT="$WS" TCP_PORT="$TCP_PORT" REUSEPORT=reuseport \
        MAIN="im_redis_timeout $RTIMEOUT; $MAIN" \
        -e "s|error.log warn;|error.log $LOGLEVEL;|" \
        -e "s|proxy_connect_timeout 2s;|proxy_connect_timeout 30s;|" \
        -e "s|proxy_read_timeout 10s;|proxy_read_timeout 60s;|" || return 1
    nginx_up "$dir" "$dir/nginx.conf" "$WS" "$WORKERS" \
        || { log "nginx did not listen"; return 1; }
    npid=$NGX_PID
    sleep 1
    workers=$(pgrep -P "$npid" | paste -sd, -)

    # the talkers: logged in first, then messages all through the storm
    local rate_cmd=(taskset -c 1 "$IMGEN" --label "run$k-talk" -s rate
        -p "$WS" -k $PAIRS -r "$RATE" -d 60 -W 1 --drain 10 -T 200)
    record_cmd "${rate_cmd[@]}"
    "${rate_cmd[@]}" > "$dir/talk.json" 2> "$dir/talk.log" &
    rate_pid=$!
    sleep 3

    local cmd=(taskset -c 1 "$IMGEN" --label "run$k-storm" -s idle -p "$WS"
        -n "$N" -P "$PROCS" -S "$SRC" -C "$CONC" -u $((2 * PAIRS))
        --hold 2 --settle 0 --login-timeout 300 -T 400
        --cpu-pids "$workers" --aux-pids "$rpid")
    record_cmd "${cmd[@]}"
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
    grep -oE 'session end( before login)?: [^,]+' "$dir/error.log" | sort \
        | uniq -c | sort -rn > "$OUT/ends-run$k.txt"
    error_counts '\[(alert|emerg|crit|error)\]|timed out|PING sent' \
        "$dir/error.log" > "$OUT/errors-run$k.txt"

    stop_pid "$npid" QUIT
    stop_pid "$rpid" TERM

    python3 - "$OUT/metrics-run$k.txt" "$line" "$(cat "$dir/talk.json")" "$mod" \
        "$dir/spread.txt" "$OUT/ends-run$k.txt" <<'PY'
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
print("storm: %s: logins answered 0/1/2/3: %s/%s/%s/%s; kicked %s, stale logins %s, "
      "busy spared %s, logins queued %s (timed out %s)"
      % (sys.argv[4], g('im_logins_total{result="accepted"}'),
         g('im_logins_total{result="duplicate"}'),
         g('im_logins_total{result="unavailable"}'),
         g('im_logins_total{result="denied"}'), g('im_kicks_total'),
         g('im_stale_logins_total'), g('im_busy_spared_total'),
         g('im_login_queued_total'), g('im_login_queue_timeouts_total')))
ends = [l.split(None, 1) for l in open(sys.argv[6]) if l.strip()]
if ends:
    print("storm: %s: session ends: %s" % (sys.argv[4], "; ".join(
        "%s %s" % (e[1].strip().replace('session end', '').lstrip(': '), e[0])
        for e in ends)))
PY
}

each_module run_one
