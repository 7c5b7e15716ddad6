#!/usr/bin/python3
"""bench/tail.py: where a fixed-rate run's latency tail comes from.

Reads a run's latency series (imgen/floor --series-out: per millisecond of
intended send time, the messages and the largest latency) and a scheduler
trace of both CPUs over the same window (`perf sched record -k mono -C 0,1`,
then `perf sched script` as text), and says:

- the series' shape: the share of milliseconds whose slowest message waited
  more than 0.5, 1, 2 and 5 ms, and its episodes (runs of such milliseconds);
- for each episode, what the two CPUs did from its first millisecond for as
  long as its peak latency: the server's processes, the generator, idle,
  other processes; and the longest single run of another task in it;
- how much CPU time went to tasks whose switch-out the trace does not show
  (in this VM the sandbox's agent, at nice -10: its runs end unseen; the
  time from the switch to it to the next event on that CPU is counted).

An episode is put in the first class that fits:
  other task > 1 ms   a task that is neither server nor generator held a CPU
                      for more than 1 ms in one run (a neighbour, the agent,
                      perf itself, a kernel thread);
  server busy         CPU 0 was more than 80 % the server's: a queue there;
  CPU 0 idle          CPU 0 idle more than 30 %: the wait was elsewhere (the
                      generator, or CPU 1);
  others CPU 0 / 1    other tasks more than 20 % of a CPU;
  mixed               none of these.

  bench/tail.py --series S --sched T --server nginx,redis-server \
      [--gen imgen] [--threshold 1000] [-v]
"""

import argparse
import bisect
import collections
import re


def read_series(path):
    start, ser = None, {}
    for line in open(path):
        if line.startswith('# start_mono_ns'):
            start = int(line.split()[2]) / 1e9
        elif line[0] != '#':
            ms, _, mx = map(int, line.split())
            ser[ms] = mx
    return start, ser


SW = re.compile(r'^\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s*(.*)$')
NEXT = re.compile(r'next_comm=(.+?) next_pid=(\d+)')


def read_runs(path):
    """(cpu, begin, end, comm, untraced) from consecutive events per CPU"""
    runs, last = [], {}
    for line in open(path):
        m = SW.match(line)
        if not m:
            continue
        comm, pid, cpu, t = m.group(1), m.group(2), int(m.group(3)), float(m.group(4))
        ev, rest = m.group(5), m.group(6)
        if pid == '0':
            comm = '<idle>'
        if cpu in last:
            t0, to_pid, to_comm = last[cpu]
            if to_pid is not None and to_pid != pid:
                # switched to to_pid, and the next event is another task's:
                # to_pid's switch-out is not in the trace
                runs.append((cpu, t0, t, to_comm, True))
            else:
                runs.append((cpu, t0, t, comm, False))
        to_pid = to_comm = None
        if ev == 'sched_switch':
            n = NEXT.search(rest)
            if n:
                to_comm, to_pid = n.group(1), n.group(2)
                if to_pid == '0':
                    to_comm = '<idle>'
        last[cpu] = (t, to_pid, to_comm)
    return runs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--series', required=True)
    ap.add_argument('--sched', required=True)
    ap.add_argument('--server', required=True)
    ap.add_argument('--gen', default='imgen,floor')
    ap.add_argument('--threshold', type=int, default=1000, help='us')
    ap.add_argument('-v', action='store_true')
    a = ap.parse_args()
    server, gen = a.server.split(','), a.gen.split(',')

    start, ser = read_series(a.series)
    runs = read_runs(a.sched)
    runs.sort(key=lambda r: r[1])
    begins = [r[1] for r in runs]
    tmin, tmax = runs[0][1], runs[-1][2]

    n = len(ser)
    print('%s: %d ms; slowest message over 0.5 ms in %.1f %% of them, '
          'over 1 ms %.1f %%, 2 ms %.1f %%, 5 ms %.1f %%' % (
              a.series.split('/')[-1], n,
              *(100.0 * sum(1 for v in ser.values() if v > t) / n
                for t in (500, 1000, 2000, 5000))))

    def cat(cpu, comm):
        if comm == '<idle>':
            return 'idle'
        if cpu == 0 and comm in server:
            return 'server'
        if cpu == 1 and comm in gen:
            return 'gen'
        return 'other'

    eps, cur = [], None
    for ms in sorted(ser):
        if ser[ms] > a.threshold:
            if cur and ms == cur[1] + 1:
                cur[1], cur[2] = ms, max(cur[2], ser[ms])
            else:
                cur = [ms, ms, ser[ms]]
                eps.append(cur)

    klass = collections.Counter()
    lens = []
    for s, e, peak in eps:
        b0 = start + s / 1000
        b1 = b0 + min(peak, 50000) / 1e6
        if b0 < tmin or b1 > tmax:
            continue
        lens.append(e - s + 1)
        use = {0: collections.Counter(), 1: collections.Counter()}
        longest = (0.0, '')
        i = max(0, bisect.bisect_left(begins, b0 - 0.1))
        for cpu, r0, r1, comm, untraced in runs[i:]:
            if r0 > b1:
                break
            o = min(r1, b1) - max(r0, b0)
            if o <= 0 or cpu not in use:
                continue
            c = cat(cpu, comm)
            use[cpu][c] += o
            if c == 'other' and r1 - r0 > longest[0]:
                longest = (r1 - r0, '%s%s on CPU %d' % (
                    comm, ' (untraced)' if untraced else '', cpu))
        d = b1 - b0
        c0 = {k: v / d for k, v in use[0].items()}
        c1 = {k: v / d for k, v in use[1].items()}
        if longest[0] > 0.001:
            k = 'other task > 1 ms'
        elif c0.get('server', 0) > 0.8:
            k = 'server busy'
        elif c0.get('idle', 0) > 0.3:
            k = 'CPU 0 idle'
        elif c0.get('other', 0) > 0.2:
            k = 'others CPU 0'
        elif c1.get('other', 0) > 0.2:
            k = 'others CPU 1'
        else:
            k = 'mixed'
        klass[k] += 1
        if a.v:
            print('  %5d-%5d ms peak %6d us  CPU 0 %s  CPU 1 %s  longest other %.2f ms %s: %s' % (
                s, e, peak,
                ' '.join('%s %.0f%%' % (x, y * 100) for x, y in sorted(c0.items())),
                ' '.join('%s %.0f%%' % (x, y * 100) for x, y in sorted(c1.items())),
                longest[0] * 1e3, longest[1], k))
    lens.sort()
    print('  episodes over %d us in the trace: %d (%s); length median %s ms, max %s ms' % (
        a.threshold, len(lens), ', '.join('%s %d' % kv for kv in klass.most_common()),
        lens[len(lens) // 2] if lens else '-', lens[-1] if lens else '-'))

    unt = collections.defaultdict(list)
    for cpu, r0, r1, comm, untraced in runs:
        if untraced and comm != '<idle>':
            unt[(cpu, comm)].append(r1 - r0)
    for (cpu, comm), g in sorted(unt.items()):
        g.sort()
        if g[-1] < 1e-3:
            continue
        print('  untraced runs of %s on CPU %d: %d, %.1f ms in all over %.1f s, '
              'p99 %.2f ms, max %.2f ms, over 1 ms: %d' % (
                  comm, cpu, len(g), sum(g) * 1e3, tmax - tmin,
                  g[int(len(g) * .99)] * 1e3, g[-1] * 1e3, sum(1 for x in g if x > 1e-3)))


if __name__ == '__main__':
    main()
