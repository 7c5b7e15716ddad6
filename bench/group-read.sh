#!/usr/bin/env bash
# How long Redis is held by reading a group's members: one SMEMBERS of a
# large set against the SSCAN COUNT 2048 steps the module uses. Redis's own
# SLOWLOG gives each command's execution time, without the network.
#   bench/group-read.sh [members] [count]     (default 10000 2048)
set -eu
n=${1:-10000}
count=${2:-2048}
runs=20
dir=$(mktemp -d)
sock=$dir/redis.sock
redis-server --port 0 --unixsocket "$sock" --save '' --appendonly no \
    --dir "$dir" --daemonize yes --pidfile "$dir/r.pid" \
    --logfile "$dir/r.log" >/dev/null
trap 'kill "$(cat "$dir/r.pid" 2>/dev/null)" 2>/dev/null; rm -rf "$dir"' EXIT
cli() { redis-cli -s "$sock" "$@"; }
for _ in $(seq 50); do cli ping >/dev/null 2>&1 && break; sleep 0.1; done
cli ping >/dev/null || { cat "$dir/r.log"; exit 1; }

seq 1 "$n" | sed 's/^/SADD g /' | cli >/dev/null
cli config set slowlog-log-slower-than 0 >/dev/null
cli config set slowlog-max-len 100000 >/dev/null

stats() {
    cli eval "local m,s,c=0,0,0
        for _,e in ipairs(redis.call('slowlog','get',100000)) do
          if string.lower(e[4][1])==ARGV[1] then
            c=c+1 s=s+e[3] if e[3]>m then m=e[3] end end end
        return {c,s,m}" 0 "$1" | tr '\n' ' '
}

cli slowlog reset >/dev/null
for _ in $(seq $runs); do cli smembers g >/dev/null; done
read -r c s m <<<"$(stats smembers)"
echo "SMEMBERS, $n members: mean $((s / c)) us, max $m us, in one call"

cli slowlog reset >/dev/null
for _ in $(seq $runs); do
    cur=0
    while :; do
        cur=$(cli sscan g "$cur" count "$count" > "$dir/out"; head -1 "$dir/out")
        [ "$cur" = 0 ] && break
    done
done
read -r c s m <<<"$(stats sscan)"
echo "SSCAN COUNT $count, $n members: $((c / runs)) calls per read," \
     "mean $((s / c)) us, max $m us per call, $((s / runs)) us per read"
