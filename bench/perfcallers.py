#!/usr/bin/env python3
# bench/perfcallers.py: `perf script -F ip,sym,dso` of a call-graph profile
# on stdin; prints the share of samples per kind of work: "K <libc call>"
# for time in the kernel under that system call, "U <function>" for user
# space, each followed by the named nginx/module frames that led there
# (innermost first). Arguments: frames to show (3), lines (30).
import collections
import sys

depth = int(sys.argv[1]) if len(sys.argv) > 1 else 3
lines = int(sys.argv[2]) if len(sys.argv) > 2 else 30
outer = {'main', '_start', 'ngx_master_process_cycle', 'ngx_spawn_process',
         'ngx_process_events_and_timers', '[unknown]'}
count = collections.Counter()
total = 0
for sample in sys.stdin.read().split('\n\n'):
    frames = []
    for line in sample.strip().split('\n'):
        parts = line.strip().split(None, 1)
        if len(parts) < 2 or ' (' not in parts[1]:
            continue
        sym, dso = parts[1].rsplit(' (', 1)
        frames.append((sym, dso))
    if not frames:
        continue
    total += 1
    kernel = 'kernel' in frames[0][1]
    user = [f for f, d in frames if 'kernel' not in d
            and f not in outer and not f.startswith('__libc_start')]
    count[('K ' if kernel else 'U ') + ' < '.join(user[:depth + 1])] += 1
for key, n in count.most_common(lines):
    print('%5.1f%%  %s' % (100.0 * n / total, key))
print('%d samples' % total)
