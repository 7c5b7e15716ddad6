#!/bin/sh
# nginx with a few more main-context lines, for e2e.test.js: tools/im-devrun starts
# "$IM_NGINX -p DIR/ -c DIR/nginx.conf"; with IM_NGINX pointing here, this copies
# that configuration with $IM_E2E_NGINX_EXTRA appended (e.g. "im_ping_interval 2s;",
# valid at the end of the file, after load_module) and runs Debian's nginx on the
# copy in its place (exec: same pid, same signals).
set -eu
conf=
prev=
for a in "$@"; do
    if [ "$prev" = "-c" ]; then conf=$a; fi
    prev=$a
done
[ -n "$conf" ] || { echo "nginx-extra.sh: no -c argument" >&2; exit 2; }
extra=${conf%.conf}.e2e.conf
{ cat "$conf"; printf '\n# added by js/testlib/nginx-extra.sh\n%s\n' "${IM_E2E_NGINX_EXTRA:-}"; } > "$extra"
for a in "$@"; do
    shift
    if [ "$a" = "$conf" ]; then set -- "$@" "$extra"; else set -- "$@" "$a"; fi
done
exec "${IM_E2E_NGINX:-/usr/sbin/nginx}" "$@"
