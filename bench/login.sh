#!/bin/bash
# bench/login.sh: what a login and a logout cost (issue 20 item 1). One
# nginx worker and Redis on CPU 0; the user centre (nginx answering from a
# map, bench/usercentre-nginx.conf.in: not the bottleneck) and the
# generator on CPU 1. Each run logs LOGIN_N WebSocket sessions in
# (LOGIN_CONCURRENCY connects and logins in flight), holds them 2 s and
# closes them; imgen reads the worker's utime+stime from /proc before the
# first connect, after the last CONNECT_ACK and once the closes are done:
#   srv_cpu_us_per_login, srv_cpu_us_per_logout   worker CPU / sessions
#   logins_per_s                                  sessions / login time
#   login_us p50/p99                              first connect -> CONNECT_ACK
#
#   bench/login.sh                         this build, 3 runs of 10,000
#   LOGIN_MODULES="/tmp/main.so build/nginx/objs/ngx_im_module.so" \
#       bench/login.sh                     each module in turn, same run
#   LOGIN_PERF=1 bench/login.sh            also a perf profile (cpu-clock,
#                                          call graphs) of the worker over
#                                          one more run: perf-run<k>.txt
#   LOGIN_FLOOR=1 bench/login.sh           the login floor too (after the
#                                          modules): bench/bin/loginfloor, a
#                                          bare epoll server doing what a
#                                          login needs on the wire, with the
#                                          same user centre and Redis, in
#                                          the worker's place on CPU 0;
#                                          LOGIN_FLOOR=2: and the floor
#                                          without the user centre (-l)
#   LOGIN_MODULES="x.so local:x.so"        local:<module>: the auth location
#                                          answers from the user centre's
#                                          map in the same nginx (no proxy,
#                                          no round trip to the user centre)
#
# Writes bench/out/<date>-login/{results.jsonl,summary.txt,commands.txt,...}
#
# Knobs: LOGIN_N (10000), LOGIN_REPEAT (3), LOGIN_CONCURRENCY (1000),
#        LOGIN_PROCS (imgen -P, 1), LOGIN_MODULES (the build),
#        LOGIN_DELIVERY (write_through), LOGIN_PERF (0), LOGIN_FLOOR (0),
#        LOGIN_KEEPALIVE (the upstream keepalive of the user centre, as in
#        bench/nginx.conf.in: 1024), LOGIN_PORT_BASE (23000).

set -u -o pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
N=${LOGIN_N:-10000}
REPEAT=${LOGIN_REPEAT:-3}
CONC=${LOGIN_CONCURRENCY:-1000}
PROCS=${LOGIN_PROCS:-1}
MODULES=${LOGIN_MODULES:-$IM_BUILD}
DELIVERY=${LOGIN_DELIVERY:-write_through}
PERF=${LOGIN_PERF:-0}
FLOOR_RUN=${LOGIN_FLOOR:-0}
KEEPALIVE=${LOGIN_KEEPALIVE:-1024}
PB=${LOGIN_PORT_BASE:-23000}
OUT=${LOGIN_OUT:-$HERE/out/$(date +%Y%m%d-%H%M%S)-login}

open_out
port_block "$PB" WS=95 TCP_PORT=96 REDIS_PORT=79 UC_PORT=90 || exit 1
build_tools bin/imgen
if [[ $FLOOR_RUN == 1 || $FLOOR_RUN == 2 ]]; then
    build_tools bin/loginfloor
    MODULES="$MODULES floor"
    # 2: also the floor without the user centre (loginfloor -l)
    [[ $FLOOR_RUN == 2 ]] && MODULES="$MODULES floor-local"
fi
{
    facts date nproc commit start
    echo "login: N=$N repeat=$REPEAT concurrency=$CONC procs=$PROCS" \
        "delivery=$DELIVERY keepalive=$KEEPALIVE"
} > "$OUT/machine.txt"

start_uc_nginx "$OUT/uc" 1 "" taskset -c 1 || exit 1

run_one() {   # index module ("floor", "floor-local", "local:<module>")
    local k=$1 mod=$2 tag=$2 dir=$OUT/run$1 npid worker rpid r line perf_pid
    local stat_pid
    mkdir -p "$dir/tmp"

    start_redis "$dir" 0 || return 1
    rpid=$REDIS_PID

    if [[ $mod == floor* ]]; then
        local fcmd=(taskset -c 0 "$HERE/bin/loginfloor" -p "$WS"
            -u "$UC_PORT" -r "$REDIS_PORT")
        [[ $mod == floor-local ]] && fcmd+=(-l)
        echo "run$k: $mod $(sha16 "$HERE/bin/loginfloor")" \
            >> "$OUT/machine.txt"
        record_cmd "${fcmd[@]}"
        "${fcmd[@]}" > "$dir/floor.json" 2> "$dir/error.log" &
        started npid "$WS" 10 "the login floor" || return 1
        worker=$npid
    else
        local auth=() answer
        # shellcheck disable=SC2016
        answer='default_type application/json; return 200 $im_answer;'
        if [[ $mod == local:* ]]; then
            # the auth location answers from the user centre's map in
            # this nginx: the subrequest without the proxy and the user
            # centre's round trip
            mod=${mod#local:}
            # shellcheck disable=SC2016   # nginx's variables, not ours
            sed -n '/^    map /,/^    }/p' "$HERE/usercentre-nginx.conf.in" \
                | sed -e 's|$http_x_im_user|$im_username|' \
                      -e 's|$http_x_im_pass|$im_password|' \
                > "$dir/authmap.conf"
            auth=(-e "s|^http {|http {\n    include $dir/authmap.conf;|"
                  -e "s|proxy_pass http://im_usercentre/auth;|$answer|")
        fi
        keep_module "run$k" "$mod" "$dir/ngx_im_module.so" || return 1
        im_conf "$dir/nginx.conf" DIR="$dir" \
            IM_MODULE="$dir/ngx_im_module.so" WORKERS=1 \
            AFFINITY="worker_cpu_affinity 01;" DELIVERY="$DELIVERY" \
            WS_PORT="$WS" TCP_PORT="$TCP_PORT" \
            -e "s|keepalive 1024;|keepalive $KEEPALIVE;|" "${auth[@]}" \
            || return 1
        nginx_up "$dir" "$dir/nginx.conf" "$WS" 1 \
            || { log "nginx did not listen"; return 1; }
        npid=$NGX_PID
        sleep 1
        worker=$(pgrep -P "$npid" | head -1)
    fi

    local cmd=(taskset -c 1 "$IMGEN" -s idle -p "$WS" -n "$N" -P "$PROCS"
        -C "$CONC" --hold 2 --settle 0 --login-timeout 120 -T 200
        --cpu-pids "$worker" --aux-pids "$rpid")
    record_cmd "${cmd[@]}"
    # a first round warms the worker up (pools, spares, the keep-alive
    # connections to the user centre); it is not counted
    "${cmd[@]}" --label "run$k-warm" > /dev/null 2> "$dir/warm.log"
    for ((r = 0; r < REPEAT; r++)); do
        line=$("${cmd[@]}" --label "run$k-$r" 2> "$dir/imgen-$r.log")
        [[ -z $line ]] \
            && line="{\"label\":\"run$k-$r\",\"error\":\"no result\"}"
        echo "$line" >> "$RESULTS"
        python3 - "$line" "$tag" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); l = s.get('login_us', {})
print("login: %s %s: %s of %s in %.2f s, %s logins/s; worker CPU %s us per "
      "login, %s per logout; Redis %s us per login; login p50 %s ms p99 %s ms"
      % (sys.argv[2], s['label'], s.get('sessions_ok'), s.get('sessions'),
         s.get('login_s', 0), s.get('logins_per_s'),
         s.get('srv_cpu_us_per_login'), s.get('srv_cpu_us_per_logout'),
         s.get('aux_cpu_us_per_login'), round(l.get('p50', 0) / 1e3, 2),
         round(l.get('p99', 0) / 1e3, 2)))
PY
    done
    if [[ $PERF == 1 ]]; then
        # call graphs through DWARF: Debian's nginx has no frame pointers
        perf record -q -e cpu-clock -F 2999 --call-graph dwarf,8192 \
            -p "$worker" -o "$dir/perf.data" > /dev/null 2>&1 &
        perf_pid=$!
        # and the system calls of the same run, by name
        local ev=() sc
        for sc in accept4 epoll_ctl epoll_wait recvfrom sendto writev write \
                  read close setsockopt getsockopt ioctl connect socket \
                  mmap munmap brk madvise; do
            ev+=(-e "syscalls:sys_enter_$sc")
        done
        perf stat -x, "${ev[@]}" -e raw_syscalls:sys_enter -p "$worker" \
            -o "$dir/perf-syscalls.csv" > /dev/null 2>&1 &
        stat_pid=$!
        sleep 0.5
        "${cmd[@]}" --label "run$k-perf" >> "$dir/perf-imgen.json" \
            2> "$dir/perf-imgen.log"
        kill -INT "$perf_pid" "$stat_pid"
        wait "$perf_pid" "$stat_pid" 2>/dev/null
        {
            echo "# $tag: worker CPU by object"
            perf report -i "$dir/perf.data" --no-children --sort dso \
                --stdio -g none 2> /dev/null | grep -v '^#' | grep -v '^$'
            echo "# by the system call or user-space function, and the"
            echo "# nginx/module functions that led there (innermost first)"
            perf script -i "$dir/perf.data" -F ip,sym,dso 2> /dev/null \
                | python3 "$HERE/perfcallers.py" 3 30
            echo "# system calls per login and logout ($N sessions)"
            awk -F, -v n="$N" '$1 ~ /^[0-9]+$/ {
                    e = $3; sub(/^(raw_)?syscalls:sys_enter_?/, "", e)
                    printf "%s %.2f\n", (e == "" ? "all" : e), $1 / n }' \
                "$dir/perf-syscalls.csv"
        } > "$OUT/perf-run$k.txt"
    fi
    error_counts '\[(alert|emerg|crit|error)\]' "$dir/error.log" \
        > "$OUT/errors-run$k.txt"

    if [[ $mod == floor* ]]; then
        stop_pid "$npid" TERM
        log "floor: $(cat "$dir/floor.json")"
    else
        stop_pid "$npid" QUIT
    fi
    stop_pid "$rpid" TERM
}

each_module run_one
