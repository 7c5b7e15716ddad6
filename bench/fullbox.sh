#!/bin/bash
# bench/fullbox.sh: a full box and a reconnect storm (issue 20 item 2,
# issue 21 item 3), in one run on 127.0.0.1:
#
#   1. its own Redis, a user centre that is not the bottleneck (Debian's
#      nginx answering from a map: bench/usercentre-nginx.conf.in) and
#      nginx with the module (bench/nginx.conf.in, write-through,
#      FULLBOX_WORKERS workers behind a reuseport listener);
#   2. imgen -s box logs FULLBOX_N sessions in (memory per session: PSS of
#      every nginx process after the logins minus before, over the
#      sessions; Redis's used_memory before and after);
#   3. 1:1 messages at FULLBOX_RATE/s among them (2j -> 2j+1): a steady
#      window of FULLBOX_DURATION s after FULLBOX_WARMUP s;
#   4. at the window's end, kill -9 of the master and every worker at once
#      while the generator keeps its schedule, nginx started again at once
#      (FULLBOX_DOWN s later); every session comes back on its own (imgen:
#      a random wait up to FULLBOX_JITTER s, then 50 ms doubled per failed
#      attempt up to 5 s); FULLBOX_AFTER s of traffic once all are back,
#      then a drain until every acked message was received (at most 60 s);
#   5. samples every 0.5 s (imgen: sessions up, logins, messages; /metrics
#      of the server each second) and a plot of them (gnuplot, when it is
#      installed).
#
#   bench/fullbox.sh                          200,000 sessions, 12 workers
#   FULLBOX_N=20000 FULLBOX_WORKERS=2 FULLBOX_PROCS=2 bench/fullbox.sh
#
# Writes bench/out/<date>-fullbox/{result.json,summary.txt,sessions.png,
# samples.txt,server.txt,phases.txt,events.txt,metrics-*.txt,...} and
# prints the summary. Everything it starts is stopped by pid at the end.
#
# Knobs: FULLBOX_N (200000), FULLBOX_WORKERS (12), FULLBOX_CONNECTIONS
#   (worker_connections, 19000), FULLBOX_PROCS (imgen -P, 12),
#   FULLBOX_SRC (imgen -S, 16 source addresses), FULLBOX_CONCURRENCY
#   (imgen -C: connects and logins in flight per process, 1000),
#   FULLBOX_UC_WORKERS (the user centre's workers, 2; run at nice -10: it
#   stands for a service on machines of its own, and must not starve),
#   FULLBOX_RATE (20000), FULLBOX_WARMUP (5), FULLBOX_DURATION (20),
#   FULLBOX_AFTER (15), FULLBOX_JITTER (2), FULLBOX_DOWN (0),
#   FULLBOX_DRAIN (the bound of the drain, 60),
#   FULLBOX_PIN (none: the scheduler places everything; split: nginx and
#   Redis on CPU 0, the generator and the user centre on CPU 1),
#   FULLBOX_LOG (the error log's level, info: a line per session end with
#   its reason), FULLBOX_MAIN (more directives for the main context, e.g.
#   "im_ping_interval 5s;"), FULLBOX_PORT_BASE (22000), FULLBOX_MODULE (the build).

set -u -o pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
N=${FULLBOX_N:-200000}
WORKERS=${FULLBOX_WORKERS:-12}
WCONN=${FULLBOX_CONNECTIONS:-19000}
PROCS=${FULLBOX_PROCS:-12}
SRC=${FULLBOX_SRC:-16}
CONC=${FULLBOX_CONCURRENCY:-1000}
UC_WORKERS=${FULLBOX_UC_WORKERS:-2}
RATE=${FULLBOX_RATE:-20000}
WARMUP=${FULLBOX_WARMUP:-5}
DURATION=${FULLBOX_DURATION:-20}
AFTER=${FULLBOX_AFTER:-15}
JITTER=${FULLBOX_JITTER:-2}
DOWN=${FULLBOX_DOWN:-0}
PIN=${FULLBOX_PIN:-none}
LOGLEVEL=${FULLBOX_LOG:-info}
MAIN=${FULLBOX_MAIN:-}
PB=${FULLBOX_PORT_BASE:-22000}
MODULE=${FULLBOX_MODULE:-$IM_BUILD}
OUT=${FULLBOX_OUT:-$HERE/out/$(date +%Y%m%d-%H%M%S)-fullbox}
STORM_WAIT=180
DRAIN=${FULLBOX_DRAIN:-60}

mkdir -p "$OUT/srv/tmp"
log() { echo "fullbox: $(date -u +%T) $*" >&2; }
now() { date +%s.%N | cut -c1-14; }

# NPID, WPIDS: the nginx with the module, master and workers (the current
# ones); the workers of a master killed by -9 are KILLed at the end too
NPID="" WPIDS=""
CLEANUP_GRACE=1
cleanup_more() { echo "${WPIDS//,/ }"; }

# waits (at most $2 s) for a phase line of imgen's
wait_phase() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        grep -qE " ($1)\$" "$OUT/phases.txt" 2>/dev/null && return 0
        kill -0 "$GEN" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
pss_of() {   # pids... -> kB
    local p t=0 v
    for p in "$@"; do
        v=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null)
        t=$((t + ${v:-0}))
    done
    echo $t
}
redis_mem() {
    redis-cli -p "$REDIS_PORT" info memory | tr -d '\r' |
        awk -F: '$1 == "used_memory" || $1 == "used_memory_rss" { printf "%s=%s ", $1, $2 }'
}
metrics() { curl -s -m "${1:-5}" "http://127.0.0.1:$WS/metrics"; }

port_block "$PB" WS=95 TCP=96 REDIS_PORT=79 UC_PORT=90 || exit 1

case $PIN in
split) SRV_CPU=0 GEN_CPU=(taskset -c 1)
       AFF="worker_cpu_affinity$(for ((i = 0; i < WORKERS; i++)); do printf ' 01'; done);"
       UC_AFF="worker_cpu_affinity$(for ((i = 0; i < UC_WORKERS; i++)); do printf ' 10'; done);" ;;
*)     SRV_CPU="" GEN_CPU=() AFF="" UC_AFF="" ;;
esac

build_tools bin/imgen
cp "$MODULE" "$OUT/srv/ngx_im_module.so"
{
    facts date
    echo "nproc: $(nproc), memory: $(free -m | awk '/^Mem:/ { print $2 " MB, " $7 " MB available" }')"
    echo "kernel: $(uname -r)"
    facts commit
    echo "module: $MODULE sha256 $(sha16 "$MODULE")"
    facts start
    echo "other processes over 5 % CPU at start:"
    ps -eo pid,pcpu,comm --sort=-pcpu | awk 'NR > 1 && $2 > 5 { print "  " $0 }'
    echo "fullbox: N=$N workers=$WORKERS worker_connections=$WCONN procs=$PROCS"\
         "src=$SRC concurrency=$CONC rate=$RATE warmup=$WARMUP duration=$DURATION"\
         "after=$AFTER jitter=$JITTER down=$DOWN pin=$PIN"
    for k in net.core.somaxconn net.ipv4.ip_local_port_range net.ipv4.tcp_max_tw_buckets \
             net.ipv4.tcp_tw_reuse net.core.netdev_max_backlog fs.nr_open; do
        echo "$k = $(sysctl -n $k 2>/dev/null | tr '\t' ' ')"
    done
    echo "descriptors per process (ulimit -Hn): $(ulimit -Hn)"
} > "$OUT/machine.txt"

raise_backlog

start_redis "$OUT" "$SRV_CPU" --maxclients 10000 || exit 1
RPID=$REDIS_PID

# the user centre
start_uc_nginx "$OUT/uc" "$UC_WORKERS" "$UC_AFF" nice -n -10 || exit 1

# nginx with the module
im_conf "$OUT/srv/nginx.conf" DIR="$OUT/srv" \
    IM_MODULE="$OUT/srv/ngx_im_module.so" WORKERS="$WORKERS" AFFINITY="$AFF" \
    WORKER_CONNECTIONS="$WCONN" DELIVERY=write_through WS_PORT="$WS" \
    TCP_PORT="$TCP" REUSEPORT=reuseport MAIN="$MAIN" \
    -e "s|error.log warn;|error.log $LOGLEVEL;|" || exit 1
start_nginx() {
    nginx_up "$OUT/srv" "$OUT/srv/nginx.conf" "$WS" "$WORKERS" 20 \
        || { log "nginx did not listen"; return 1; }
    NPID=$NGX_PID WPIDS=$NGX_WORKERS
}
start_nginx || exit 1
echo "$(now) nginx $NPID workers $WPIDS" >> "$OUT/events.txt"
sleep 2
echo "idle: nginx PSS $(pss_of "$NPID" ${WPIDS//,/ }) kB; redis $(redis_mem)" \
    >> "$OUT/memory.txt"

# the server's view, each second: sessions and logins from /metrics
( while :; do
      t=$(now)
      metrics | awk -v t="$t" '
          /^im_sessions\{transport="ws"\} / { s = $2 }
          /^im_logins_total\{result="accepted"\}/ { l = $2 }
          /^im_redis_reconnects_total / { r = $2 }
          END { if (s != "") print t, s, l + 0, r + 0; else print t, "nan", "nan", "nan" }'
      sleep 1
  done ) > "$OUT/server.txt" 2> /dev/null &
SCRAPER=$!; PIDS+=("$SCRAPER")

# messages per process: the whole run at the rate, and a margin
MAXMSGS=$(( (RATE * (WARMUP + DURATION + STORM_WAIT + AFTER + 60) / PROCS) * 12 / 10 ))
CMD=("${GEN_CPU[@]}" "$IMGEN" --label fullbox -s box -p "$WS" -n "$N" -P "$PROCS"
     -S "$SRC" -C "$CONC" -r "$RATE" -W "$WARMUP" -d "$DURATION" --after "$AFTER"
     --jitter "$JITTER" --storm-wait $STORM_WAIT --drain $DRAIN --settle 5
     --login-timeout 600 -T 1500 --max-msgs "$MAXMSGS"
     --mem-pids "$NPID,$WPIDS" --cpu-pids "$WPIDS" --aux-pids "$RPID"
     --samples "$OUT/samples.txt" --phase-file "$OUT/phases.txt"
     --lost-file "$OUT/lost" ${FULLBOX_LEDGER:+--ledger-dump "$OUT/ledger"})
echo "${CMD[*]}" | sed "s|$HERE/|bench/|g; s|$OUT/|<out>/|g" > "$OUT/commands.txt"
log "$N sessions, $WORKERS workers, $PROCS generator processes; out: $OUT"
"${CMD[@]}" > "$OUT/result.json" 2> "$OUT/imgen.log" &
GEN=$!; PIDS+=("$GEN")

wait_phase "up|up-timeout" 620 || { log "no logins"; exit 1; }
log "$(grep ' up' "$OUT/phases.txt"); $(tail -1 "$OUT/imgen.log")"
wait_phase "mem" 30
echo "logged in: nginx PSS $(pss_of "$NPID" ${WPIDS//,/ }) kB; redis $(redis_mem)" \
    >> "$OUT/memory.txt"
redis-cli -p "$REDIS_PORT" info keyspace | tr -d '\r' | grep '^db' >> "$OUT/memory.txt"

wait_phase "kill" $((WARMUP + DURATION + 30)) || { log "no steady window"; exit 1; }
metrics 2 > "$OUT/metrics-before-kill.txt"     # no answer under overload
# every nginx process at once: master and workers
echo "$(now) kill -9 $NPID $WPIDS" >> "$OUT/events.txt"
kill -KILL "$NPID" ${WPIDS//,/ }
{ wait "$NPID"; } 2>/dev/null
forget_pid "$NPID"
# gone, or a zombie (its descriptors are closed then)
for ((i = 0; i < 200; i++)); do
    alive=0
    for p in ${WPIDS//,/ }; do
        [[ $(awk '{ print $3 }' "/proc/$p/stat" 2>/dev/null) =~ ^[^Z]$ ]] && alive=1
    done
    ((alive == 0)) && break
    sleep 0.05
done
echo "$(now) dead" >> "$OUT/events.txt"
mv "$OUT/srv/error.log" "$OUT/error-before-kill.log"
NPID="" WPIDS=""
log "killed nginx; $(tail -1 "$OUT/samples.txt" | awk '{ print $3 }') sessions up"
sleep "$DOWN"
start_nginx || exit 1
echo "$(now) listening (nginx $NPID workers $WPIDS)" >> "$OUT/events.txt"
kill -USR1 "$GEN"       # imgen counts failed attempts from now on apart
log "nginx again"

wait_phase "back" $((STORM_WAIT + 10)) && log "$(grep ' back' "$OUT/phases.txt")"
wait "$GEN"
echo "$(now) generator done" >> "$OUT/events.txt"
metrics > "$OUT/metrics-after.txt"
redis-cli -p "$REDIS_PORT" info stats | tr -d '\r' > "$OUT/redis-stats.txt"
echo "end: redis $(redis_mem)" >> "$OUT/memory.txt"
# what the inboxes still hold: stored, not yet acked by a recipient
redis-cli -p "$REDIS_PORT" eval "local n, t = 0, 0
    for _, k in ipairs(redis.call('KEYS', 'im:inbox:*')) do
        n = n + 1; t = t + redis.call('LLEN', k) end
    return {n, t}" 0 | paste -sd' ' | sed 's/^/inboxes non-empty, messages in them: /' \
    > "$OUT/inboxes.txt"
# with FULLBOX_LEDGER=1: the MsgIds left in the inboxes, with their state in
# the generator's ledger
if [[ -n ${FULLBOX_LEDGER:-} ]]; then
    redis-cli -p "$REDIS_PORT" --scan --pattern 'im:inbox:*' | while read -r k; do
        redis-cli -p "$REDIS_PORT" lrange "$k" 0 -1 | grep -aoE '[0-9a-f]{32}' \
            | sed "s|^|${k#im:inbox:} |"
    done > "$OUT/inbox-ids.txt"
    cat "$OUT"/ledger.* > "$OUT/ledger.txt"
    awk 'NR == FNR { st[$1 " " $2] = $3; next }
         { k = $1 " " $2; print (k in st) ? "state " st[k] : "not in the ledger" }' \
        "$OUT/ledger.txt" "$OUT/inbox-ids.txt" | sort | uniq -c > "$OUT/inbox-states.txt"
fi
# each message acked and never received (the drain is bounded): still in its
# recipient's inbox or dead letters (late), or nowhere (lost)
cat "$OUT"/lost.* 2>/dev/null | head -20000 > "$OUT/lost.txt"
if [[ -s $OUT/lost.txt ]]; then
    stored=0 dead=0 gone=0
    while read -r uid id; do
        if redis-cli -p "$REDIS_PORT" lrange "im:inbox:$uid" 0 -1 | grep -qF "$id"; then
            stored=$((stored + 1))
        elif redis-cli -p "$REDIS_PORT" lrange "im:dead:$uid" 0 -1 | grep -qF "$id"; then
            dead=$((dead + 1))
        else
            gone=$((gone + 1)); echo "$uid $id" >> "$OUT/lost-nowhere.txt"
        fi
    done < "$OUT/lost.txt"
    echo "acked, never received: $(wc -l < "$OUT/lost.txt") looked up;" \
         "in the recipient's inbox $stored, in its dead letters $dead, nowhere $gone" \
        > "$OUT/lost-check.txt"
fi
for f in error-before-kill.log srv/error.log; do
    grep -oE 'session end( before login)?: [^,]+' "$OUT/$f" | sort | uniq -c \
        | sort -rn > "$OUT/ends-$(basename "$f" .log).txt"
    grep -E '\[(alert|emerg|crit|error|warn)\]' "$OUT/$f" \
        | sed -E 's/^[0-9/: ]*//; s/[0-9]+#[0-9]+: \*?[0-9]* ?//; s/client: [0-9.:]+/client/' \
        | sed -E 's/, (server|request|upstream|host|subrequest): .*//' \
        | sort | uniq -c | sort -rn | head -20 > "$OUT/errors-$(basename "$f" .log).txt"
done

python3 "$HERE/fullbox.py" "$OUT" | tee "$OUT/summary.txt"
