/*
 * floor.c: the machine's floor for the fixed-rate latency scenario.
 *
 * A bare relay and its client, nothing else: no WebSocket, no protocol
 * codec, no Redis, no nginx. The relay (a child process, one epoll loop,
 * edge triggered, one write per connection per loop pass, like the module)
 * forwards each message from a sender's connection to its receiver's and
 * answers the sender with a short ack; the receiver acks back and the relay
 * drops that ack. That is the module's system-call pattern per 1:1 message
 * in offline-only mode: two reads, two writes and a share of epoll_wait.
 *
 * The client drives K pairs open loop at a fixed total rate with the same
 * schedule as imgen's "rate" scenario (message j at t0 + j/rate, round robin,
 * epoll_pwait2 with a 20 us timeout) and measures each message from its
 * intended send time to its arrival at the receiver.
 *
 * What it tells: the latency tail this VM gives a relay that does nothing,
 * at the same rate, the same connection count and the same CPU layout
 * (relay on CPU 0, client on CPU 1). The part of the IM server's tail above
 * this floor is the server's; the part below it is the machine's.
 *
 * It also fans out: "-s fanout" makes one sender's messages go to M members,
 * W messages in flight, each acked by every member, as imgen's fanout; a
 * member's pushes of several messages leave in one write, as in the module.
 *
 *   floor [-s rate|fanout] [-k pairs] [-r rate] [-M members] [-w window]
 *         [-d seconds] [-W warmup] [-p port] [-l payload] [-T timeout]
 *         [--label S] [--hist-out FILE] [--series-out FILE]
 *
 * Prints one JSON line with imgen's field names: srv_* are the relay's.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"
#include "series.h"
#include "procstat.h"

/* a record: [len:16][kind:16][dst:32][t:64][seq:64][payload], little
 * endian, len counts the whole record */
enum { K_HELLO = 1, K_MSG, K_SACK, K_ACK };
#define HDR 24
#define BUF 16384

typedef struct conn_s {
    int            fd;
    uint32_t       id;
    int            dirty;
    struct conn_s *next_dirty;
    size_t         in_len, out_len;
    uint8_t        in[BUF];
    uint8_t        out[BUF];
} conn_t;

static struct {
    long     pairs;
    double   rate, dur, warm;
    int      port, payload;
    const char *hist_out;
    const char *series_out;
    int      fanout;
    long     members, window;
    const char *label;
    int      timeout;
} o = { 1000, 20000, 10, 2, 38097, 128, NULL, NULL, 0, 1000, 4, "floor", 120 };

static conn_t *dirty;
static long    nconns;                /* pairs: 2 per pair; fanout: members + 1 */

static void die(const char *m)
{
    fprintf(stderr, "floor: %s: %s\n", m, strerror(errno));
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static void pin(int cpu)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    (void) sched_setaffinity(0, sizeof(s), &s);
}

static void put(conn_t *c, uint16_t kind, uint32_t dst, uint64_t t,
                uint64_t seq, const uint8_t *pl, size_t pn)
{
    uint8_t *p;
    uint16_t len = (uint16_t) (HDR + pn);

    if (c->out_len + len > BUF) {
        fprintf(stderr, "floor: output of %u full\n", c->id);
        exit(1);
    }
    p = c->out + c->out_len;
    memcpy(p, &len, 2);
    memcpy(p + 2, &kind, 2);
    memcpy(p + 4, &dst, 4);
    memcpy(p + 8, &t, 8);
    memcpy(p + 16, &seq, 8);
    if (pn) memcpy(p + HDR, pl, pn);
    c->out_len += len;
    if (!c->dirty) {
        c->dirty = 1;
        c->next_dirty = dirty;
        dirty = c;
    }
}

static void flush_one(conn_t *c)
{
    size_t off = 0;

    while (off < c->out_len) {
        ssize_t n = send(c->fd, c->out + off, c->out_len - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            die("send");
        }
        off += (size_t) n;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
}

/* one write per connection per loop pass; what the socket did not take
 * stays queued (EPOLLOUT brings it back) */
static void flush_all(void)
{
    while (dirty) {
        conn_t *c = dirty;
        dirty = c->next_dirty;
        c->dirty = 0;
        flush_one(c);
    }
}

static void tune(int fd)
{
    int one = 1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* calls fn for each whole record read from c; 0 when the peer closed */
static int read_records(conn_t *c, void (*fn)(conn_t *, uint8_t *, uint16_t))
{
    for (;;) {
        size_t  room = BUF - c->in_len;
        ssize_t n = recv(c->fd, c->in + c->in_len, room, 0);
        if (n == 0) return 0;
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 1;
            return 0;
        }
        c->in_len += (size_t) n;
        size_t off = 0;
        while (c->in_len - off >= HDR) {
            uint16_t len;
            memcpy(&len, c->in + off, 2);
            if (len < HDR || c->in_len - off < len) break;
            fn(c, c->in + off, len);
            off += len;
        }
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
        if ((size_t) n < room) return 1;      /* short read: drained */
    }
}

/* ------------------------------------------------------------------ */
/* relay */

static conn_t **by_id;

static void relay_record(conn_t *c, uint8_t *r, uint16_t len)
{
    uint16_t kind;
    uint32_t dst;
    uint64_t t, seq;

    memcpy(&kind, r + 2, 2);
    memcpy(&dst, r + 4, 4);
    memcpy(&t, r + 8, 8);
    memcpy(&seq, r + 16, 8);
    switch (kind) {
    case K_HELLO:
        if (dst < nconns) {
            c->id = dst;
            by_id[dst] = c;
        }
        break;
    case K_MSG:
        if (dst == UINT32_MAX) {              /* group: every member */
            for (long m = 1; m <= o.members; m++) {
                if (by_id[m]) put(by_id[m], K_MSG, c->id, t, seq, r + HDR,
                                  len - HDR);
            }
        } else if (dst < nconns && by_id[dst]) {
            put(by_id[dst], K_MSG, c->id, t, seq, r + HDR, len - HDR);
        }
        put(c, K_SACK, dst, 0, seq, NULL, 0);
        break;
    default:                                  /* K_ACK: consumed */
        break;
    }
}

static void relay(int ls)
{
    struct epoll_event ev, evs[1024];
    int ep = epoll_create1(0);

    pin(0);
    by_id = calloc((size_t) nconns, sizeof(conn_t *));
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, -1);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept(ls, NULL, NULL)) >= 0) {
                    conn_t *nc = calloc(1, sizeof(*nc));
                    nc->fd = fd;
                    nc->id = UINT32_MAX;
                    tune(fd);
                    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
                    ev.data.ptr = nc;
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT && c->out_len) flush_one(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (!read_records(c, relay_record)) exit(0);
            }
        }
        flush_all();
    }
}

/* ------------------------------------------------------------------ */
/* client */

static hist_t  lat;
static series_t series;            /* --series-out */

static uint64_t m_start, m_end, delivered, delivered_m, sent, sent_m, sacked;

/* fanout: per message, members that have it and the send time */
#define FO_MAX (1 << 22)
static uint32_t *fo_cnt;
static uint64_t *fo_sent, fo_complete;
static uint8_t payload[65536];

static void client_record(conn_t *c, uint8_t *r, uint16_t len)
{
    uint16_t kind;
    uint64_t t, seq, now;

    (void) len;
    memcpy(&kind, r + 2, 2);
    memcpy(&t, r + 8, 8);
    memcpy(&seq, r + 16, 8);
    if (kind == K_SACK) {
        sacked++;
        return;
    }
    if (kind != K_MSG) return;
    now = now_ns();
    delivered++;
    if (now >= m_start && now < m_end) delivered_m++;
    if (o.fanout) {
        if (seq < FO_MAX && ++fo_cnt[seq] == (uint32_t) o.members) {
            if (fo_sent[seq] >= m_start && fo_sent[seq] < m_end) {
                hist_add(&lat, now - fo_sent[seq]);
            }
        }
    } else if (t >= m_start && t < m_end) {
        hist_add(&lat, now - t);
        series_add(&series, t, now - t);
    }
    put(c, K_ACK, 0, 0, seq, NULL, 0);
}

static void client(pid_t rp)
{
    char relay_pid[16], self_pid[16];
    struct sockaddr_in sa = { .sin_family = AF_INET };
    struct epoll_event ev, evs[1024];
    long np = nconns, i;
    conn_t *cs = calloc((size_t) np, sizeof(conn_t));
    int ep = epoll_create1(0);
    double r0 = 0, c0 = 0, s0 = 0;

    pin(1);
    snprintf(relay_pid, sizeof(relay_pid), "%d", (int) rp);
    snprintf(self_pid, sizeof(self_pid), "%d", (int) getpid());
    sa.sin_port = htons((uint16_t) o.port);
    sa.sin_addr.s_addr = htonl(0x7f000001);
    for (i = 0; i < np; i++) {
        conn_t *c = &cs[i];
        int tries = 0;
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        while (connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
            if (++tries > 200) die("connect");
            usleep(10000);
        }
        tune(c->fd);
        c->id = (uint32_t) i;
        put(c, K_HELLO, (uint32_t) i, 0, 0, NULL, 0);
        ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
        ev.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    flush_all();
    usleep(200000);

    uint64_t t0 = now_ns() + 10000000;
    m_start = t0 + (uint64_t) (o.warm * 1e9);
    if (o.series_out && !o.fanout) series_init(&series, m_start, o.dur);
    m_end = m_start + (uint64_t) (o.dur * 1e9);
    uint64_t t_end = m_end + 1000000000ull, j = 0;
    long next = 0;
    int measuring = 0;

    for (;;) {
        uint64_t now = now_ns();
        if (!measuring && now >= m_start) {
            measuring = 1;
            r0 = cpu_of(relay_pid);
            c0 = cpu_of(self_pid);
            (void) machine_busy();
            s0 = machine_steal_s;
        }
        if (o.fanout) {
            /* window: messages sent and not yet acked or not yet with
             * every member, as imgen's fanout */
            while (fo_complete < sent && fo_cnt[fo_complete] >= o.members) {
                fo_complete++;
            }
            uint64_t done = fo_complete < sacked ? fo_complete : sacked;
            while (now >= t0 && now < m_end && sent - done < (uint64_t) o.window
                   && sent < FO_MAX) {
                fo_sent[sent] = now;
                if (now >= m_start) sent_m++;
                put(&cs[0], K_MSG, UINT32_MAX, now, sent, payload,
                    (size_t) o.payload);
                sent++;
            }
        } else {
            for (;;) {
                uint64_t due = t0 + (uint64_t) ((double) j * 1e9 / o.rate);
                if (due > now || due >= m_end) break;
                conn_t *s = &cs[2 * next];
                put(s, K_MSG, (uint32_t) (2 * next + 1), due, j, payload,
                    (size_t) o.payload);
                sent++;
                if (due >= m_start) sent_m++;
                j++;
                if (++next == o.pairs) next = 0;
            }
        }
        if (now >= t_end) break;
        flush_all();
        struct timespec ts = { 0, 20000 };
        int n = epoll_pwait2(ep, evs, 1024, &ts, NULL);
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
            if (evs[k].events & EPOLLOUT && c->out_len) flush_one(c);
            if (evs[k].events & EPOLLIN) (void) read_records(c, client_record);
        }
        flush_all();
        if (measuring == 1 && now >= m_end) {
            measuring = 2;
            r0 = cpu_of(relay_pid) - r0;
            c0 = cpu_of(self_pid) - c0;
            (void) machine_busy();
            s0 = machine_steal_s - s0;
        }
    }

    uint64_t want = o.fanout ? sent * (uint64_t) o.members : sent;

    printf("{\"label\":\"%s\",\"scenario\":\"%s\",\"pairs\":%ld,"
           "\"members\":%ld,\"window\":%ld,\"rate\":%.0f,\"payload\":%d,"
           "\"sent\":%llu,\"delivered\":%llu,\"acked\":%llu,"
           "\"lost\":%llu,\"sent_per_s\":%.0f,\"delivered_per_s\":%.0f,"
           "\"%s\":{\"n\":%llu,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
           "\"p999\":%.1f,\"max\":%.1f},\"srv_cpu_pct\":%.1f,"
           "\"srv_cpu_us_per_msg\":%.2f,\"gen_cpu_pct\":%.1f,"
           "\"steal_cpu_pct\":%.1f}\n",
           o.label, o.fanout ? "fanout" : "rate", o.pairs, o.members,
           o.window, o.rate, o.payload, (unsigned long long) sent,
           (unsigned long long) delivered, (unsigned long long) sacked,
           (unsigned long long) (want > delivered ? want - delivered : 0),
           (double) sent_m / o.dur, (double) delivered_m / o.dur,
           o.fanout ? "last_member_us" : "latency_us",
           (unsigned long long) lat.count, hist_pct(&lat, 50) / 1e3,
           hist_pct(&lat, 90) / 1e3, hist_pct(&lat, 99) / 1e3,
           hist_pct(&lat, 99.9) / 1e3, (double) lat.max / 1e3,
           100 * r0 / o.dur, delivered_m ? r0 * 1e6 / (double) delivered_m : 0,
           100 * c0 / o.dur, 100 * s0 / o.dur);
    if (o.hist_out) {
        FILE *f = fopen(o.hist_out, "w");
        if (f) {
            hist_write_curve(f, &lat, o.label);
            fclose(f);
        }
    }
    if (series.cnt) {
        FILE *f = fopen(o.series_out, "w");
        if (f) {
            series_write(&series, f);
            fclose(f);
        }
    }
}


int main(int argc, char **argv)
{
    static struct option lo[] = { { "hist-out", 1, 0, 'H' },
                                  { "series-out", 1, 0, 'S' },
                                  { "scenario", 1, 0, 's' },
                                  { "label", 1, 0, 'L' },
                                  { "members", 1, 0, 'M' },
                                  { "window", 1, 0, 'w' },
                                  { "timeout", 1, 0, 'T' }, { 0, 0, 0, 0 } };
    struct sockaddr_in sa = { .sin_family = AF_INET };
    int ch, one = 1, ls;
    pid_t rp;

    while ((ch = getopt_long(argc, argv, "k:r:d:W:p:l:s:M:w:T:", lo, NULL)) != -1) {
        switch (ch) {
        case 'k': o.pairs = atol(optarg); break;
        case 'r': o.rate = atof(optarg); break;
        case 'd': o.dur = atof(optarg); break;
        case 'W': o.warm = atof(optarg); break;
        case 'p': o.port = atoi(optarg); break;
        case 'l': o.payload = atoi(optarg); break;
        case 'H': o.hist_out = optarg; break;
        case 'S': o.series_out = optarg; break;
        case 's': o.fanout = !strcmp(optarg, "fanout"); break;
        case 'M': o.members = atol(optarg); break;
        case 'w': o.window = atol(optarg); break;
        case 'L': o.label = optarg; break;
        case 'T': o.timeout = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: floor [-s rate|fanout] [-k pairs] [-r rate] "
                            "[-M members] [-w window] [-d s] [-W s] [-p port] "
                            "[-l payload] [-T s] [--label S] [--hist-out FILE]\n"
                            "             [--series-out FILE]\n");
            return 2;
        }
    }
    nconns = o.fanout ? o.members + 1 : 2 * o.pairs;
    if (o.pairs < 1 || o.rate <= 0 || o.payload < 0 || o.payload > 16000
        || o.members < 1 || o.window < 1)
    {
        fprintf(stderr, "floor: bad arguments\n");
        return 2;
    }

    ls = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sa.sin_port = htons((uint16_t) o.port);
    sa.sin_addr.s_addr = htonl(0x7f000001);
    if (bind(ls, (struct sockaddr *) &sa, sizeof(sa)) < 0) die("bind");
    if (listen(ls, 4096) < 0) die("listen");
    fcntl(ls, F_SETFL, fcntl(ls, F_GETFL) | O_NONBLOCK);

    /* bounded: the relay dies with the client, the client by its schedule
     * and, should it hang, by the alarm */
    alarm((unsigned) o.timeout);
    rp = fork();
    if (rp < 0) die("fork");
    if (rp == 0) {
        relay(ls);
        return 0;
    }
    close(ls);
    memset(payload, 'x', sizeof(payload));
    if (o.fanout) {
        fo_cnt = calloc(FO_MAX, sizeof(*fo_cnt));
        fo_sent = calloc(FO_MAX, sizeof(*fo_sent));
    }
    client(rp);
    kill(rp, SIGKILL);
    waitpid(rp, NULL, 0);
    return 0;
}
