#!/usr/bin/env python3
"""fullbox.py: the summary and the plot of one bench/fullbox.sh run.

    fullbox.py bench/out/<run>      prints the summary, writes sessions.png
                                    (with gnuplot) and summary.json

Reads the folder's result.json (imgen -s box), samples.txt (imgen, every
0.5 s), server.txt (/metrics, each second), events.txt (the driver's kill
and restart), phases.txt (imgen's phases), memory.txt, metrics-*.txt and
errors-*.txt.
"""
import json
import os
import re
import shutil
import subprocess
import sys

out = sys.argv[1]


def path(name):
    return os.path.join(out, name)


def lines(name):
    try:
        return open(path(name)).read().splitlines()
    except OSError:
        return []


def metrics(name):
    m = {}
    for l in lines(name):
        r = re.match(r'^(im_\S+) (\S+)$', l)
        if r:
            m[r.group(1)] = float(r.group(2))
    return m


res = json.loads((lines("result.json") or ["{}"])[0])
st, ms, stm = res.get("storm", {}), res.get("messages", {}), res.get("steady", {})
samples = [l.split() for l in lines("samples.txt") if l and l[0] != "#"]
phases = {}
for l in lines("phases.txt"):
    t, name = l.split()
    phases.setdefault(name, float(t))
events = []
for l in lines("events.txt"):
    t, what = l.split(" ", 1)
    events.append((float(t), what))
before, after = metrics("metrics-before-kill.txt"), metrics("metrics-after.txt")

t_kill = next((t for t, w in events if w.startswith("kill")), None)
t_listen = next((t for t, w in events if w.startswith("listening")), None)
t_back = st.get("back_realtime") or None


def g(m, k):
    v = m.get(k)
    return "?" if v is None else "%d" % v


def pct(h, k):
    return h.get(k, 0) / 1e3 if h else 0


lat, lat2 = stm.get("latency_us", {}), ms.get("latency_after_us", {})
mb = res.get("bytes_per_session", {})
mem = {l.split(":")[0]: l for l in lines("memory.txt")}


def redis_used(tag):
    r = re.search(r'used_memory=(\d+)', mem.get(tag, ""))
    return int(r.group(1)) if r else None


r0, r1 = redis_used("idle"), redis_used("logged in")
s = []
p = s.append
p("sessions: %s of %s logged in in %.1f s (%s logins/s)"
  % (res.get("sessions") if res.get("login_timeout") is False else "NOT all",
     res.get("sessions"), res.get("login_s", 0), res.get("logins_per_s")))
if mb:
    p("memory: nginx PSS %.0f bytes per session (RSS %.0f), %d kB before, %d kB after"
      % (mb["pss"], mb["rss"], res["mem_before_kb"]["pss"], res["mem_after_kb"]["pss"]))
if r0 is not None and r1 is not None:
    p("redis: used_memory %.1f MB idle, %.1f MB with the sessions (%.0f bytes per session)"
      % (r0 / 1e6, r1 / 1e6, (r1 - r0) / max(1, res.get("sessions", 1))))
p("steady window %.1f s at %s msgs/s: sent %s, acked %s, delivered %s (%s/s); "
  "latency p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.1f ms"
  % (res.get("window_s", 0), res.get("rate"), stm.get("sent"), stm.get("acked"),
     stm.get("delivered"), stm.get("delivered_per_s"), lat.get("p50", 0) / 1e3,
     lat.get("p99", 0) / 1e3, lat.get("p999", 0) / 1e3, lat.get("max", 0) / 1e3))
p("  CPU in the window, %% of one core: nginx workers %s (%s us per message), "
  "Redis %s, generator %s; machine %s %% of 2 cores, steal %s %%"
  % (stm.get("srv_cpu_pct"), stm.get("srv_cpu_us_per_msg"), stm.get("aux_cpu_pct"),
     stm.get("gen_cpu_pct"), stm.get("machine_cpu_pct"), stm.get("steal_cpu_pct")))
p("storm: sessions lost before the kill: %s; dropped by the kill: reset %s, closed %s, "
  "goodbye %s" % (st.get("drops_before"), st.get("dropped_rst"), st.get("dropped_eof"),
                  st.get("dropped_goodbye")))
if t_kill and t_listen:
    p("  nginx killed at +0, listening again at +%.2f s" % (t_listen - t_kill))
if st.get("all_back"):
    p("  all %s back %.2f s after the first drop the clients saw%s"
      % (res.get("sessions"), st.get("back_s"),
         ", %.2f s after nginx listened again" % (t_back - t_listen)
         if t_back and t_listen else ""))
else:
    p("  NOT all back: %s live at the end" % st.get("live_at_end"))
p("  logins during the whole run %s; attempts that failed: connect refused %s "
  "(nginx down), reset or closed by the server before CONNECT_ACK %s, "
  "login refused %s, login timed out %s, handshake failed %s, other %s; logouts %s"
  % (st.get("logins"), st.get("connect_refused"), st.get("reset_before_login"),
     st.get("login_refused"), st.get("login_timeouts"), st.get("handshake_failed"),
     st.get("other_failures"), st.get("logouts")))
ar = st.get("after_restart", {})
if ar.get("signalled"):
    p("  of them after nginx listened again: connect refused %s, reset or closed by "
      "the server before CONNECT_ACK %s, login refused %s, login timed out %s, "
      "handshake failed %s"
      % (ar.get("connect_refused"), ar.get("reset_before_login"), ar.get("login_refused"),
         ar.get("login_timeouts"), ar.get("handshake_failed")))
p("  new nginx: redis reconnects %s, redis failed commands %s, refused for Redis %s, "
  "logins ok %s, other results %s"
  % (g(after, "im_redis_reconnects_total"), g(after, "im_redis_failed_total"),
     g(after, 'im_refused_total{reason="store"}'),
     g(after, 'im_logins_total{result="accepted"}'),
     "; ".join("%s %d" % (k.split("=")[1].strip('"}'), v) for k, v in after.items()
               if k.startswith("im_logins_total{") and "accepted" not in k) or "-"))
p("  old nginx at the kill: redis reconnects %s"
  % g(before, "im_redis_reconnects_total"))
p("messages, whole run: sent %s, acked %s, received %s, refused %s; "
  "ACKED BUT NEVER RECEIVED %s; sent without an answer (connection lost) %s, "
  "of them received %s; duplicates %s, misrouted %s; due while the sender was "
  "down (not sent) %s; drain %.1f s"
  % (ms.get("sent"), ms.get("acked"), ms.get("received"), ms.get("refused"),
     ms.get("acked_never_received"), ms.get("unacked"), ms.get("unacked_received"),
     ms.get("dups"), ms.get("misrouted"), ms.get("skipped_sender_down"),
     ms.get("drain_s", 0)))
p("  latency of messages due after the steady window (storm included): p50 %.1f ms, "
  "p99 %.1f ms, max %.1f ms"
  % (lat2.get("p50", 0) / 1e3, lat2.get("p99", 0) / 1e3, lat2.get("max", 0) / 1e3))
p("  " + " ".join(lines("inboxes.txt")))
if lines("lost-check.txt"):
    p("  " + " ".join(lines("lost-check.txt")))
for name, what in (("ends-error-before-kill.txt", "sessions ended, old nginx"),
                   ("ends-error.txt", "sessions ended, new nginx")):
    e = lines(name)
    if e:
        p("%s: %s" % (what, "; ".join(" ".join(l.split()) for l in e[:8])))
for name in ("errors-error-before-kill.txt", "errors-error.txt"):
    e = lines(name)
    if e:
        p("%s:" % name)
        for l in e[:8]:
            p("  " + l.strip())
text = "\n".join(s)
print(text)

summary = {"result": res, "t_kill": t_kill, "t_listen": t_listen,
           "redis_used_memory": [r0, r1],
           "new_nginx": {k: v for k, v in after.items()
                         if k.startswith(("im_redis", "im_logins", "im_refused"))}}
json.dump(summary, open(path("summary.json"), "w"), indent=1)

# the plot: sessions over time, client's and server's view, messages/s
if not samples or not shutil.which("gnuplot"):
    sys.exit(0)
t0 = float(samples[0][1]) - float(samples[0][0])
with open(path("plot-samples.txt"), "w") as f:
    prev = None
    for r in samples:
        t, live, recv = float(r[1]) - t0, int(r[2]), int(r[8])
        rate = 0
        if prev:
            dt = t - prev[0]
            rate = (recv - prev[1]) / dt if dt > 0 else 0
        prev = (t, recv)
        f.write("%.2f %d %.0f\n" % (t, live, rate))
with open(path("plot-server.txt"), "w") as f:
    for l in lines("server.txt"):
        r = l.split()
        if len(r) >= 2 and r[1] != "nan":
            f.write("%.2f %s\n" % (float(r[0]) - t0, r[1]))
marks = []
for t, name in ((t_kill, "kill -9"), (t_listen, "nginx listens"), (t_back, "all back")):
    if t:
        marks.append("set arrow from %.2f, graph 0 to %.2f, graph 1 nohead dt 2 lc rgb 'gray40'\n"
                     "set label '%s' at %.2f, graph 0.97 rotate by 90 right offset -0.6,0"
                     % (t - t0, t - t0, name, t - t0))
for name in ("up", "steady"):
    if name in phases:
        marks.append("set arrow from %.2f, graph 0 to %.2f, graph 1 nohead dt 3 lc rgb 'gray70'\n"
                     "set label '%s' at %.2f, graph 0.03 rotate by 90 left offset -0.6,0"
                     % (phases[name] - t0, phases[name] - t0,
                        {"up": "all logged in", "steady": "steady window"}[name],
                        phases[name] - t0))
gp = """set terminal pngcairo size 1000,520 noenhanced
set output '%s'
set title 'Sessions over time: %s sessions, %s msgs/s 1:1, kill -9 of nginx and the reconnect storm'
set xlabel 'seconds since the generator started'
set ylabel 'sessions logged in'
set y2label 'messages received per second'
set ytics nomirror
set y2tics
set xrange [-2:*]
set yrange [0:*]
set y2range [0:*]
set grid
set key bottom right
%s
plot '%s' using 1:2 with lines lw 2 title 'logged in (generator)', \\
     '%s' using 1:2 with points pt 7 ps 0.5 title 'im_sessions (/metrics)', \\
     '%s' using 1:3 axes x1y2 with lines lc rgb '#999999' title 'received/s (right axis)'
""" % (path("sessions.png"), res.get("sessions"), res.get("rate"), "\n".join(marks),
       path("plot-samples.txt"), path("plot-server.txt"), path("plot-samples.txt"))
try:
    subprocess.run(["gnuplot"], input=gp, text=True, check=True, timeout=60)
except Exception as e:  # noqa
    print("plot failed:", e)
