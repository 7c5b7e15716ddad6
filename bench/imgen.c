/*
 * imgen: load generator for ngx_im (WebSocket, TCP backend framing) and for
 * an MQTT 3.1.1 broker (the reference peer), same scenarios for both.
 *
 * One epoll loop per process, non-blocking sockets, edge triggered; -P n
 * forks n worker processes, the parent only coordinates (shared memory),
 * samples server CPU and memory from /proc, and prints one JSON line.
 *
 * Scenarios:
 *   idle    open N sessions, log in, hold; memory per session (mode http:
 *           N HTTP/1.1 keep-alive connections that made one GET each, the
 *           plain-nginx reference for an idle client)
 *   pairs   K sender->receiver pairs, closed loop, window w per sender
 *   rate    K pairs, open loop at a fixed total rate; latency measured from
 *           the intended send time (coordinated omission avoided)
 *   fanout  one sender, a group of M online members; deliveries/s and the
 *           time until the last member has each message
 *   box     a full box: N sessions in pairs, an open loop at a fixed rate
 *           among them, and a reconnect storm: every session that loses its
 *           connection comes back (jitter, bounded backoff) and logs in
 *           again; a ledger per process (ledger.h) counts every message
 *           that was acked and never received
 *
 * The IM codec is the project's own (src/ngx_im_proto.[ch],
 * src/ngx_im_wsframe.[ch]); MQTT is in bench/mqtt.h.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "imcodec.h"
#include "mqtt.h"
#include "hist.h"
#include "series.h"
#include "procstat.h"
#include "timers.h"
#include "ledger.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ------------------------------------------------------------------ */
/* options */

enum { M_WS, M_TCP, M_MQTT, M_HTTP };
enum { S_IDLE, S_PAIRS, S_RATE, S_FANOUT, S_BOX };

static struct {
    int      mode, scen;
    char     host[64];
    int      port, tcp_port, recv_port;
    long     tcp_conns;
    char     path[128];
    int      procs;
    long     sessions, pairs, members;
    int      window;
    double   rate;
    uint32_t gid;
    double   duration, warmup, hold, settle, drain, timeout, login_timeout;
    int      payload;
    int      nsrc;
    int      conc;
    long     user_base;
    uint32_t uid_base;
    long     max_msgs;
    char     cpu_pids[512], aux_pids[512], mem_pids[512];
    char     label[128];
    char     hist_out[256];
    char     series_out[256];
    int      verbose;
    /* box */
    double   attempt_timeout, backoff_max, jitter, storm_wait, after;
    char     samples[256], phase_file[256], lost_file[256], ledger_dump[256];
    int      tick_us;
} o;

static const char *mode_name[] = { "ws", "tcp", "mqtt", "http" };
static const char *scen_name[] = { "idle", "pairs", "rate", "fanout", "box" };

/* ------------------------------------------------------------------ */
/* time */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = { t / 1000000000ull, t % 1000000000ull };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "imgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void vlog(const char *fmt, ...)
{
    va_list ap;
    if (!o.verbose) return;
    va_start(ap, fmt);
    fprintf(stderr, "imgen[%d]: ", (int) getpid());
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* shared state between parent and workers */

typedef struct {
    /* per-process results, written by each worker before it exits */
    uint64_t ok, fail, retries, closed, refused, errors, logout;
    uint64_t sent, acked, delivered, sent_m, acked_m, delivered_m;
    uint64_t dups, gaps, stale, lost;
    uint64_t login_ns;            /* from start to all sessions of this worker up */
    uint64_t gen_cpu_us;          /* worker CPU during the measured window */
    uint64_t members_seen;        /* fanout: members of this worker that are live */
    hist_t   lat;                 /* pairs/rate: send->receive (per delivery) */
    hist_t   last;                /* fanout: send->last member (per message) */
    hist_t   first;               /* fanout: send->first member (per message) */
    hist_t   each;                /* fanout: send->each member (per delivery) */
    hist_t   login;               /* first TCP connect -> CONNECT_ACK (per session) */

    /* box: read by the parent while the run goes on */
    uint64_t live, in_flight;     /* sessions up; connects/logins under way */
    uint64_t drop_rst, drop_eof, drop_bye;   /* live sessions lost: reset,
                                     end of stream, the server's goodbye */
    uint64_t refused_conn;        /* connect: ECONNREFUSED (nobody listens) */
    uint64_t reset_login;         /* reset or closed before CONNECT_ACK */
    uint64_t login_timeouts;      /* no CONNECT_ACK within the attempt's time */
    uint64_t hs_fail, other_fail; /* handshake answer not 101; the rest */
    uint64_t permanent;           /* LOGOUT: not reconnected */
    uint64_t skipped;             /* sends due while the sender was down */
    uint64_t pub_refused, misrouted, ledger_full;
    uint64_t owed;                /* acked, not received yet */
    uint64_t received;            /* distinct messages received */
    uint64_t first_drop_ns;       /* the first live session lost */
    uint64_t last_login_ns;       /* the latest successful login */
    uint64_t after[5];            /* failed attempts after the driver's
                                     SIGUSR1 (the server listens again):
                                     connect refused, reset or closed before
                                     CONNECT_ACK, refused, timed out,
                                     handshake */
    ledger_sum_t sum;             /* at the end */
    hist_t   lat_after;           /* box: messages due after the window */
} wres_t;

typedef struct {
    volatile int      ready;      /* workers whose sessions are all up (or failed) */
    volatile int      go;         /* parent: start traffic */
    volatile int      stop;       /* parent: stop now */
    volatile int      done;       /* workers finished */
    volatile int      send_stop;  /* box: parent: stop sending (drain) */
    volatile int      restarted;  /* box: the driver's SIGUSR1 came */
    volatile uint64_t t0, m_start, m_end, t_end;
    volatile uint64_t live_members;  /* fanout: members live across workers */
    uint32_t          runid;
    wres_t            res[];      /* o.procs entries, then fanout arrays */
} shm_t;

static shm_t    *shm;
static uint32_t *fo_cnt;          /* fanout: members that have message seq */
static uint64_t *fo_last;         /* fanout: latest receive time of seq */
static uint64_t *fo_first;        /* fanout: earliest receive time of seq */
static uint64_t *fo_sent;         /* fanout: intended send time of seq */

/* ------------------------------------------------------------------ */
/* connections */

enum { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_LOGIN, ST_SUBSCRIBE, ST_LIVE,
       ST_CLOSED, ST_FAILED };
enum { R_IDLE, R_SENDER, R_RECEIVER, R_MEMBER, R_FSENDER, R_TCPMUX };

typedef struct conn conn_t;

struct conn {
    int        fd;
    uint8_t    kind;         /* M_WS, M_TCP, M_MQTT, M_HTTP */
    uint8_t    state;
    uint8_t    role;
    uint8_t    dirty;
    uint8_t    tries;
    uint8_t    wblocked;
    uint8_t    mask[4];
    uint32_t   gen;          /* box: bumped at each change of attempt */
    uint32_t   uidx;         /* user index (benchuser<uidx>) */
    uint32_t   uid;
    uint32_t   peer_uid;     /* sender: the receiver's uid */
    conn_t    *peer;         /* sender <-> receiver in the same process */
    conn_t    *via;          /* --tcp-conns: the shared TCP connection of a sender */
    uint32_t   sid;          /* sender id carried in the msgid */
    uint16_t   mqtt_pid;

    uint8_t   *ib;           /* leftover input (partial frame) */
    uint32_t   ilen, icap;
    uint8_t   *ob;           /* pending output */
    uint32_t   olen, ooff, ocap;

    im_ws_parser_t wsp;

    /* sender side */
    uint64_t   sent, acked, delivered;   /* delivered: receipts at the peer */
    /* receiver side */
    uint64_t   expect;       /* next sequence number expected */
    uint64_t   t_conn;       /* first connect() of this session */
};

static conn_t  *conns;
static long     nconns;
static int      ep;
static conn_t **dirty;
static long     ndirty;
static wres_t  *R;           /* this worker's results */
static int      wid;         /* worker id */
static uint32_t runid;
static uint8_t *scratch;
#define SCRATCH (256 * 1024)

static uint32_t rnd_state = 2463534242u;
static uint32_t xrand(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 17;
    rnd_state ^= rnd_state << 5;
    return rnd_state;
}

static double rand01(void)
{
    return xrand() / 4294967296.0;
}

static void mark_dirty(conn_t *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        dirty[ndirty++] = c;
    }
}

static uint8_t *out_reserve(conn_t *c, size_t n)
{
    if (c->ooff && c->ooff == c->olen) {
        c->ooff = c->olen = 0;
    }
    if (c->olen + n > c->ocap) {
        if (c->ooff) {
            memmove(c->ob, c->ob + c->ooff, c->olen - c->ooff);
            c->olen -= c->ooff;
            c->ooff = 0;
        }
        if (c->olen + n > c->ocap) {
            size_t cap = c->ocap ? c->ocap : 512;
            while (cap < c->olen + n) cap *= 2;
            c->ob = realloc(c->ob, cap);
            if (c->ob == NULL) die("out of memory");
            c->ocap = cap;
        }
    }
    return c->ob + c->olen;
}

static void out_commit(conn_t *c, size_t n)
{
    c->olen += n;
    mark_dirty(c);
}

/* one protocol message, framed for the connection's transport */
static void send_msg(conn_t *c, const uint8_t *m, size_t n)
{
    uint8_t *p;

    if (c->kind == M_WS) {
        p = out_reserve(c, n + 14);
        out_commit(c, im_ws_build_masked(p, IM_WS_OP_BINARY, 1, m, n, c->mask));
    } else {                      /* TCP backend: [Len:32][message] */
        p = out_reserve(c, n + 4);
        p[0] = n >> 24; p[1] = n >> 16; p[2] = n >> 8; p[3] = n;
        memcpy(p + 4, m, n);
        out_commit(c, n + 4);
    }
}

static void send_raw(conn_t *c, const uint8_t *m, size_t n)
{
    memcpy(out_reserve(c, n), m, n);
    out_commit(c, n);
}

static void conn_fail(conn_t *c, const char *why);

static void flush_conn(conn_t *c)
{
    c->dirty = 0;
    if (c->fd < 0) return;
    while (c->ooff < c->olen) {
        ssize_t n = write(c->fd, c->ob + c->ooff, c->olen - c->ooff);
        if (n > 0) {
            c->ooff += n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            c->wblocked = 1;
            return;
        }
        conn_fail(c, "write");
        return;
    }
    c->ooff = c->olen = 0;
    c->wblocked = 0;
    /* give back big buffers of idle connections */
    if (c->ocap > 65536) {
        free(c->ob);
        c->ob = NULL;
        c->ocap = 0;
    }
}

static void flush_all(void)
{
    for (long i = 0; i < ndirty; i++) {
        flush_conn(dirty[i]);
    }
    ndirty = 0;
}

/* ------------------------------------------------------------------ */
/* connection set-up */

static struct sockaddr_in dst_ws, dst_tcp, dst_recv;
static long npairs_local;          /* pairs/rate: pairs of this worker */
static long mux_first;             /* --tcp-conns: index of the first shared connection */
static long src_rr;
static long in_progress;          /* connects/logins in flight */
static long *pending;             /* ring of conn indices waiting to connect */
static long pend_head, pend_tail, pend_cap;
static long n_live, n_done_login; /* live; live or permanently failed */
static tm_heap_t tmq;              /* box: next connects, login deadlines */
static ledger_t  ledger;           /* box: every message of this process */
static uint32_t *ledger_pair;      /* box: the pair (sender id) of each */


static void pend_push(long i)
{
    pending[pend_tail % pend_cap] = i;
    pend_tail++;
}

static void conn_reset_buffers(conn_t *c)
{
    c->ilen = 0;
    c->olen = c->ooff = 0;
    c->wblocked = 0;
    if (c->kind == M_WS) {        /* a new connection: no frame half read */
        imc_ws_free(&c->wsp);
        imc_ws_init(&c->wsp);
    }
}

static void conn_close_fd(conn_t *c, int rst)
{
    if (c->fd >= 0) {
        if (rst) {
            struct linger lg = { 1, 0 };
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(c->fd);       /* also removes it from the epoll set */
        c->fd = -1;
    }
}

static void conn_start(conn_t *c)
{
    struct sockaddr_in *dst = (c->kind == M_TCP) ? &dst_tcp
        : (c->role == R_RECEIVER || c->role == R_MEMBER) ? &dst_recv : &dst_ws;
    int fd, one = 1;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s (descriptor limit? use more -P)", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    if (o.nsrc > 0) {
        struct sockaddr_in src;
        memset(&src, 0, sizeof(src));
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t) (src_rr++ % o.nsrc));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *) &src, sizeof(src)) < 0) {
            die("bind source address: %s", strerror(errno));
        }
    }

    c->fd = fd;
    c->state = ST_CONNECTING;
    if (c->t_conn == 0) c->t_conn = now_ns();   /* retries count from the first */
    conn_reset_buffers(c);
    in_progress++;
    if (o.scen == S_BOX) {
        R->in_flight = in_progress;
        if (tm_push(&tmq, now_ns() + (uint64_t) (o.attempt_timeout * 1e9),
                    c - conns, c->gen, TM_DEADLINE) < 0) {
            die("out of memory");
        }
    }

    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                              .data.ptr = c };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));

    if (connect(fd, (struct sockaddr *) dst, sizeof(*dst)) < 0 && errno != EINPROGRESS) {
        conn_fail(c, "connect");
    }
}

static void start_pending(void)
{
    while (pend_head < pend_tail && in_progress < o.conc) {
        long i = pending[pend_head % pend_cap];
        pend_head++;
        conn_start(&conns[i]);
    }
}

static void became_live(conn_t *c)
{
    c->state = ST_LIVE;
    in_progress--;
    n_live++;
    n_done_login++;
    if (c->role != R_TCPMUX) R->ok++;     /* shared TCP connections are not sessions */
    if (c->kind != M_TCP && c->t_conn) hist_add(&R->login, now_ns() - c->t_conn);
    if (c->role == R_MEMBER) {
        __sync_fetch_and_add(&shm->live_members, 1);
    }
    if (o.scen == S_BOX) {
        c->tries = 0;
        c->gen++;
        R->live = n_live;
        R->in_flight = in_progress;
        R->last_login_ns = now_ns();
    }
}

/* box: a connection lost, live or while logging in: count why, and come
 * back later. A live session waits a random time up to --jitter (clients
 * dropped together must not return together); a failed attempt waits
 * 50 ms doubled per failure, at most --backoff-max, times 0.5..1. */
static void box_fail(conn_t *c, const char *why, int err)
{
    int      was = c->state;
    uint64_t now = now_ns();
    double   delay;

    if (was == ST_IDLE || was == ST_CLOSED || was == ST_FAILED) return;
    conn_close_fd(c, 0);
    c->gen++;

    if (was == ST_LIVE) {
        n_live--;
        R->live = n_live;
        if (!strcmp(why, "disconnect") || !strcmp(why, "ws close")) R->drop_bye++;
        else if (err == ECONNRESET) R->drop_rst++;
        else R->drop_eof++;
        if (R->first_drop_ns == 0 && shm->go && now >= shm->m_end) {
            R->first_drop_ns = now;         /* the storm's start, as seen here */
        }
        delay = o.jitter * rand01();
    } else {
        in_progress--;
        R->in_flight = in_progress;
        int k = -1;
        if (!strcmp(why, "connect") && err == ECONNREFUSED) R->refused_conn++, k = 0;
        else if (!strcmp(why, "timeout")) R->login_timeouts++, k = 3;
        else if (!strcmp(why, "refused")) k = 2;     /* counted by on_im */
        else if (!strcmp(why, "handshake")) R->hs_fail++, k = 4;
        else if (!strcmp(why, "eof") || !strcmp(why, "read") || !strcmp(why, "write")
                 || (!strcmp(why, "connect") && err == ECONNRESET)
                 || !strcmp(why, "ws close")
                 || !strcmp(why, "disconnect")) R->reset_login++, k = 1;
        else R->other_fail++;
        if (k >= 0 && shm->restarted) R->after[k]++;
        if (c->tries < 30) c->tries++;
        delay = 0.05 * (double) (1u << (c->tries < 8 ? c->tries : 8));
        if (delay > o.backoff_max) delay = o.backoff_max;
        delay *= 0.5 + 0.5 * rand01();
        R->retries++;
    }
    vlog("session %u: %s (%s), again in %.3f s", c->uidx, why, strerror(err), delay);

    if (!strcmp(why, "logout")) {        /* logged in elsewhere: stay out */
        c->state = ST_FAILED;
        R->permanent++;
        return;
    }
    c->state = shm->stop ? ST_CLOSED : ST_IDLE;
    if (c->state == ST_IDLE
        && tm_push(&tmq, now + (uint64_t) (delay * 1e9), c - conns, c->gen, TM_START) < 0) {
        die("out of memory");
    }
}

static void conn_fail(conn_t *c, const char *why)
{
    int was = c->state;

    if (o.scen == S_BOX) {
        box_fail(c, why, errno);
        return;
    }

    conn_close_fd(c, 0);
    if (was == ST_LIVE) {
        c->state = ST_CLOSED;
        n_live--;
        R->closed++;
        if (c->role == R_MEMBER) __sync_fetch_and_sub(&shm->live_members, 1);
        vlog("session %u closed: %s", c->uidx, why);
        return;
    }
    if (was == ST_CLOSED || was == ST_FAILED || was == ST_IDLE) return;

    in_progress--;
    if (++c->tries < 3 && !shm->stop) {
        R->retries++;
        c->state = ST_IDLE;
        pend_push(c - conns);
        vlog("session %u retry after %s (%s)", c->uidx, why, strerror(errno));
        return;
    }
    c->state = ST_FAILED;
    n_done_login++;
    R->fail++;
    vlog("session %u failed: %s", c->uidx, why);
}

/* sends what a connection sends once TCP is up */
static void on_connected(conn_t *c)
{
    char buf[512];
    uint8_t m[256];
    int n;

    if (c->kind == M_TCP) {
        became_live(c);
        return;
    }

    if (c->kind == M_MQTT) {
        char user[32], pass[32], cid[32];
        snprintf(user, sizeof(user), "benchuser%u", c->uidx);
        snprintf(pass, sizeof(pass), "pw%u", c->uidx);
        snprintf(cid, sizeof(cid), "imgen-%u", c->uid);
        n = mqtt_connect(m, cid, user, pass, 300);
        send_raw(c, m, n);
        c->state = ST_LOGIN;
        return;
    }

    if (c->kind == M_HTTP) {       /* one request, then an idle keep-alive */
        n = snprintf(buf, sizeof(buf),
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n",
                     o.path, o.host, o.port);
        send_raw(c, (uint8_t *) buf, n);
        c->state = ST_LOGIN;
        return;
    }

    /* WebSocket upgrade */
    uint8_t key[16];
    char k64[32];
    for (int i = 0; i < 16; i++) key[i] = xrand();
    b64(k64, key, 16);
    n = snprintf(buf, sizeof(buf),
                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n",
                 o.path, o.host, o.port, k64);
    send_raw(c, (uint8_t *) buf, n);
    c->state = ST_HANDSHAKE;
}

static void ws_login(conn_t *c)
{
    char user[32], pass[32];
    uint8_t m[128];
    int ul = snprintf(user, sizeof(user), "benchuser%u", c->uidx);
    int pl = snprintf(pass, sizeof(pass), "pw%u", c->uidx);

    send_msg(c, m, imc_connect(m, user, ul, pass, pl));
    c->state = ST_LOGIN;
}

/* ------------------------------------------------------------------ */
/* payload: fixed-position JSON so the receiver parses it cheaply
 *   {"t":"<16 hex: intended send time>","s":"<8 hex: seq>","r":"<8 hex: run>",
 *    "content":{"type":"text","text":"xxxx"}}                               */

#define PL_T 6
#define PL_S 29
#define PL_R 44
#define PL_MIN 91

static uint8_t payload_tmpl[65536];

static void payload_init(void)
{
    int n = sprintf((char *) payload_tmpl,
                    "{\"t\":\"%016x\",\"s\":\"%08x\",\"r\":\"%08x\","
                    "\"content\":{\"type\":\"text\",\"text\":\"", 0, 0, runid);
    while (n < o.payload - 3) payload_tmpl[n++] = 'x';
    memcpy(payload_tmpl + n, "\"}}", 3);
}

static const char hexd[] = "0123456789abcdef";

static inline void put_hex(uint8_t *p, uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--) {
        p[i] = hexd[v & 15];
        v >>= 4;
    }
}

static inline int get_hex(const uint8_t *p, int digits, uint64_t *v)
{
    uint64_t r = 0;
    for (int i = 0; i < digits; i++) {
        uint8_t ch = p[i];
        if (ch >= '0' && ch <= '9') r = (r << 4) | (ch - '0');
        else if (ch >= 'a' && ch <= 'f') r = (r << 4) | (ch - 'a' + 10);
        else return -1;
    }
    *v = r;
    return 0;
}

/* msgid: 8 hex run, 8 hex sender, 16 hex seq */
static inline void make_msgid(uint8_t *id, uint32_t sid, uint64_t seq)
{
    put_hex(id, runid, 8);
    put_hex(id + 8, sid, 8);
    put_hex(id + 16, seq, 16);
}

/* ------------------------------------------------------------------ */
/* traffic */

static uint64_t t0, m_start, m_end, t_end;
static series_t series;           /* rate: latency per ms (--series-out) */
static int      traffic_on, sending_on;
static conn_t  *fsender;          /* fanout sender of this worker (worker 0) */
static uint64_t fo_complete;      /* fanout: messages every member has */
static long     fo_members;       /* fanout: total members */
static uint8_t  mqtt_topic_buf[64];

static void send_one(conn_t *c, uint64_t intended)
{
    uint8_t  msgid[32];
    uint64_t seq = c->sent;
    uint8_t *pl = payload_tmpl;
    uint8_t  m[66000];
    size_t   n;

    if (o.scen == S_BOX) {          /* the message's number in the ledger */
        int64_t j = ledger_new(&ledger);
        if (j < 0) {
            R->ledger_full++;
            return;
        }
        seq = (uint64_t) j;
        ledger_pair[j] = c->sid;
    }

    put_hex(pl + PL_T, intended, 16);
    put_hex(pl + PL_S, seq, 8);

    if (c->kind == M_MQTT) {
        int tl;
        if (c->role == R_FSENDER) tl = sprintf((char *) mqtt_topic_buf, "g/%u", o.gid);
        else tl = sprintf((char *) mqtt_topic_buf, "u/%u", c->peer_uid);
        if (++c->mqtt_pid == 0) c->mqtt_pid = 1;
        n = mqtt_publish(out_reserve(c, o.payload + tl + 16), mqtt_topic_buf, tl,
                         c->mqtt_pid, pl, o.payload);
        out_commit(c, n);
    } else {
        make_msgid(msgid, c->sid, seq);
        if (c->role == R_FSENDER) n = imc_group(m, o.gid, msgid, pl, o.payload);
        else n = imc_publish(m, c->peer_uid, msgid, pl, o.payload);
        send_msg(c->via ? c->via : c, m, n);
    }

    if (c->role == R_FSENDER && seq < (uint64_t) o.max_msgs) fo_sent[seq] = intended;

    c->sent++;
    R->sent++;
    if (intended >= m_start && intended < m_end) R->sent_m++;
}

static inline uint64_t inflight(conn_t *c)
{
    uint64_t done = c->acked < c->delivered ? c->acked : c->delivered;
    return c->sent - done;
}

static void pairs_refill(conn_t *s)
{
    if (!sending_on || s->state != ST_LIVE) return;
    uint64_t now = now_ns();
    while (inflight(s) < (uint64_t) o.window) {
        send_one(s, now);
    }
}

static void fanout_refill(void)
{
    conn_t *s = fsender;
    if (s == NULL || s->state != ST_LIVE) return;
    /* completion from the shared counters (members may live in other workers) */
    while (fo_complete < s->sent && fo_complete < (uint64_t) o.max_msgs
           && fo_cnt[fo_complete] >= (uint32_t) fo_members) {
        uint64_t q = fo_complete, st = fo_sent[q];
        if (st >= m_start && st < m_end) {
            hist_add(&R->last, fo_last[q] - st);
            hist_add(&R->first, fo_first[q] - st);
        }
        fo_complete++;
    }
    s->delivered = fo_complete;
    if (!sending_on) return;
    uint64_t now = now_ns();
    while (inflight(s) < (uint64_t) o.window && s->sent < (uint64_t) o.max_msgs) {
        send_one(s, now);
    }
}

static inline void atomic_max(volatile uint64_t *p, uint64_t v)
{
    uint64_t cur = *p;
    while (v > cur) {
        uint64_t prev = __sync_val_compare_and_swap(p, cur, v);
        if (prev == cur) break;
        cur = prev;
    }
}

static inline void atomic_min(volatile uint64_t *p, uint64_t v)
{
    uint64_t cur = *p;
    while (cur == 0 || v < cur) {
        uint64_t prev = __sync_val_compare_and_swap(p, cur, v);
        if (prev == cur) break;
        cur = prev;
    }
}

/* a push arrived at a receiver/member; returns 0 when it belongs to this run */
static void on_push(conn_t *c, const uint8_t *pl, size_t len)
{
    uint64_t t, seq, rid, now = now_ns();

    if (len < PL_MIN || get_hex(pl + PL_T, 16, &t) || get_hex(pl + PL_S, 8, &seq)
        || get_hex(pl + PL_R, 8, &rid) || rid != runid) {
        R->stale++;
        return;
    }
    if (seq < c->expect) {
        R->dups++;
        return;
    }
    if (seq > c->expect) R->gaps += seq - c->expect;
    c->expect = seq + 1;

    R->delivered++;
    if (now >= m_start && now < m_end) R->delivered_m++;

    if (c->role == R_MEMBER) {
        if (seq < (uint64_t) o.max_msgs) {
            atomic_max(&fo_last[seq], now);
            atomic_min(&fo_first[seq], now);
            __sync_fetch_and_add(&fo_cnt[seq], 1);
            if (t >= m_start && t < m_end) hist_add(&R->each, now - t);
        }
        return;
    }

    if (t >= m_start && t < m_end) {
        hist_add(&R->lat, now - t);
        series_add(&series, t, now - t);
    }
    if (c->peer) {
        c->peer->delivered++;
        if (o.scen == S_PAIRS) pairs_refill(c->peer);
    }
}

/* box: a push at a receiver, checked against the ledger */
static void box_push(conn_t *c, const im_msg_t *m)
{
    uint64_t t, j, rid, sid, now = now_ns();
    int      r;

    if (m->payload_len < PL_MIN || get_hex(m->payload + PL_T, 16, &t)
        || get_hex(m->payload + PL_S, 8, &j) || get_hex(m->payload + PL_R, 8, &rid)
        || rid != runid) {
        R->stale++;
        return;
    }
    if (m->msgid == NULL || get_hex(m->msgid + 8, 8, &sid) || c->peer == NULL
        || sid != c->peer->sid) {
        R->misrouted++;
        return;
    }
    r = ledger_recv(&ledger, j);
    if (r < 0) {
        R->stale++;
        return;
    }
    if (r == 0) {
        R->dups++;
        return;
    }
    R->received++;
    R->delivered++;
    R->owed = ledger.owed;
    if (now >= m_start && now < m_end) R->delivered_m++;
    if (t >= m_start && t < m_end) hist_add(&R->lat, now - t);
    else if (t >= m_end) hist_add(&R->lat_after, now - t);
}

/* box: a PUB_ACK (or a refusal) names the message by its MsgId */
static void box_ack(conn_t *c, const im_msg_t *m, int refused)
{
    uint64_t j, now = now_ns();

    if (m->msgid == NULL || get_hex(m->msgid + 16, 16, &j)) {
        R->errors++;
        return;
    }
    if (refused) {
        if (ledger_refused(&ledger, j) < 0) R->errors++;
        R->pub_refused++;
        return;
    }
    switch (ledger_ack(&ledger, j)) {
    case 1:
        c->acked++;
        R->acked++;
        R->owed = ledger.owed;
        if (now >= m_start && now < m_end) R->acked_m++;
        return;
    case 0:
        R->dups++;
        return;
    default:
        R->errors++;
    }
}

static void on_sender_ack(conn_t *c)
{
    uint64_t now = now_ns();
    c->acked++;
    R->acked++;
    if (now >= m_start && now < m_end) R->acked_m++;
    if (o.scen == S_PAIRS) pairs_refill(c);
}

/* ------------------------------------------------------------------ */
/* input: IM protocol messages */

static void on_im(conn_t *c, const uint8_t *p, size_t n)
{
    im_msg_t m;
    uint8_t  a[64];

    if (imc_parse(p, n, &m) != 0) {
        R->errors++;
        vlog("session %u: unparsable message cmd %d len %zu", c->uidx, n ? p[0] : -1, n);
        return;
    }

    switch (m.cmd) {
    case IM_CMD_CONNECT_ACK:
        if (c->state != ST_LOGIN) return;
        if (m.code != 0) {
            R->refused++;
            vlog("session %u: CONNECT_ACK %d", c->uidx, m.code);
            conn_fail(c, "refused");
            return;
        }
        became_live(c);
        return;

    case IM_CMD_PUBLISH:            /* 1:1 push */
    case IM_CMD_GROUP_PUBLISH:      /* group push */
    case IM_CMD_GROUP_PART_PUBLISH:
        send_msg(c, a, imc_ack(a, m.cmd + 1, m.msgid));
        if (o.scen == S_BOX) box_push(c, &m);
        else on_push(c, m.payload, m.payload_len);
        return;

    case IM_CMD_PUB_ACK:
    case IM_CMD_GROUP_PUB_ACK:
    case IM_CMD_GROUP_PART_PUB_ACK:
        if (c->role == R_TCPMUX) {
            /* shared TCP connection: the MsgId names the sender (pair) */
            uint64_t sid;
            if (m.msgid == NULL || get_hex(m.msgid + 8, 8, &sid)) {
                R->errors++;
                return;
            }
            long k = (long) sid - (long) conns[0].sid;
            if (k < 0 || k >= npairs_local) {
                R->errors++;
                return;
            }
            on_sender_ack(&conns[2 * k]);
            return;
        }
        if (o.scen == S_BOX) box_ack(c, &m, 0);
        else on_sender_ack(c);
        return;

    case IM_CMD_PING:
        send_msg(c, a, imc_simple(a, IM_CMD_PING_RESP));
        return;

    case IM_CMD_PING_RESP:
        return;

    case IM_CMD_INVALID:
        if (o.scen == S_BOX && m.msgid != NULL) {   /* a publish refused */
            box_ack(c, &m, 1);
            return;
        }
        R->errors++;
        vlog("session %u: INVALID_PACKET", c->uidx);
        return;

    case IM_CMD_LOGOUT:
        R->logout++;
        conn_fail(c, "logout");
        return;

    case IM_CMD_DISCONNECT:
        conn_fail(c, "disconnect");
        return;

    default:
        R->errors++;
        return;
    }
}

/* returns bytes consumed */
static size_t in_ws(conn_t *c, uint8_t *buf, size_t len)
{
    size_t off = 0;

    if (c->state == ST_HANDSHAKE) {
        uint8_t *e = memmem(buf, len, "\r\n\r\n", 4);
        if (e == NULL) {
            if (len > 8192) conn_fail(c, "handshake too long");
            return 0;
        }
        if (len < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0) {
            vlog("session %u: handshake answer %.*s", c->uidx, (int) (len < 40 ? len : 40), buf);
            conn_fail(c, "handshake");
            return len;
        }
        off = e + 4 - buf;
        ws_login(c);
    }

    while (off < len && c->fd >= 0) {
        imc_ws_event_t ev;
        size_t used = 0;
        int rc = imc_ws_parse(&c->wsp, buf + off, len - off, &used, &ev);
        off += used;
        switch (rc) {
        case IMC_WS_AGAIN:
            if (used == 0) return off;
            continue;
        case IMC_WS_MESSAGE:
            on_im(c, ev.data, ev.len);
            break;
        case IMC_WS_PING: {
            uint8_t *p = out_reserve(c, ev.len + 14);
            out_commit(c, im_ws_build_masked(p, IM_WS_OP_PONG, 1, ev.data, ev.len, c->mask));
            break;
        }
        case IMC_WS_PONG:
            break;
        case IMC_WS_CLOSE:
            conn_fail(c, "ws close");
            return len;
        default:
            R->errors++;
            conn_fail(c, "ws frame error");
            return len;
        }
    }
    return off;
}

/* mode http: the response to the one GET (any 2xx without a body, such as
 * "return 204"), then nothing; the connection is held as a keep-alive */
static size_t in_http(conn_t *c, uint8_t *buf, size_t len)
{
    uint8_t *e = memmem(buf, len, "\r\n\r\n", 4);

    if (c->state != ST_LOGIN) {
        R->errors++;
        conn_fail(c, "http: unexpected bytes");
        return len;
    }
    if (e == NULL) {
        if (len > 8192) conn_fail(c, "http: response too long");
        return 0;
    }
    if (len < 10 || memcmp(buf, "HTTP/1.1 2", 10) != 0) {
        vlog("session %u: answer %.*s", c->uidx, (int) (len < 40 ? len : 40), buf);
        R->refused++;
        conn_fail(c, "http status");
        return len;
    }
    became_live(c);
    return e + 4 - buf;
}

static size_t in_tcp(conn_t *c, uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (len - off >= 4 && c->fd >= 0) {
        uint32_t n = ((uint32_t) buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8)
                     | buf[off + 3];
        if (n > 1 << 20) {
            conn_fail(c, "tcp frame too long");
            return len;
        }
        if (len - off - 4 < n) break;
        on_im(c, buf + off + 4, n);
        off += 4 + n;
    }
    return off;
}

static size_t in_mqtt(conn_t *c, uint8_t *buf, size_t len)
{
    size_t off = 0;
    uint8_t a[8];

    while (off < len && c->fd >= 0) {
        mqtt_pkt_t pk;
        int used = mqtt_parse(buf + off, len - off, &pk);
        if (used == 0) break;
        if (used < 0) {
            R->errors++;
            conn_fail(c, "mqtt parse");
            return len;
        }
        off += used;

        switch (pk.type) {
        case MQTT_CONNACK:
            if (c->state != ST_LOGIN) break;
            if (pk.rc != 0) {
                R->refused++;
                conn_fail(c, "connack");
                break;
            }
            if (c->role == R_SENDER || c->role == R_FSENDER) {
                became_live(c);
            } else {
                char t[32];
                int tl = (c->role == R_MEMBER) ? sprintf(t, "g/%u", o.gid)
                                               : sprintf(t, "u/%u", c->uid);
                uint8_t m[64];
                send_raw(c, m, mqtt_subscribe(m, 1, (uint8_t *) t, tl, 1));
                c->state = ST_SUBSCRIBE;
            }
            break;
        case MQTT_SUBACK:
            if (c->state != ST_SUBSCRIBE) break;
            if (pk.rc == 0x80) {
                R->refused++;
                conn_fail(c, "suback");
                break;
            }
            became_live(c);
            break;
        case MQTT_PUBLISH:
            if (pk.qos > 0) send_raw(c, a, mqtt_puback(a, pk.pid));
            on_push(c, pk.payload, pk.payload_len);
            break;
        case MQTT_PUBACK:
            on_sender_ack(c);
            break;
        case MQTT_PINGRESP:
            break;
        default:
            R->errors++;
            break;
        }
    }
    return off;
}

static void on_readable(conn_t *c, int to_eof)
{
    for (;;) {
        uint8_t *buf = scratch;
        size_t have = 0;

        if (c->ilen) {                 /* leftover partial frame first */
            memcpy(scratch, c->ib, c->ilen);
            have = c->ilen;
            c->ilen = 0;
        }
        ssize_t n = read(c->fd, buf + have, SCRATCH - have);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            if (have) {                /* put it back */
                memcpy(c->ib, scratch, have);
                c->ilen = have;
            }
            return;
        }
        if (n <= 0) {
            conn_fail(c, n == 0 ? "eof" : "read");
            return;
        }
        size_t len = have + n, used;
        switch (c->kind) {
        case M_WS: used = in_ws(c, buf, len); break;
        case M_TCP: used = in_tcp(c, buf, len); break;
        case M_HTTP: used = in_http(c, buf, len); break;
        default: used = in_mqtt(c, buf, len); break;
        }
        if (c->fd < 0) return;
        if (used < len) {
            size_t left = len - used;
            if (left > c->icap) {
                c->ib = realloc(c->ib, left);
                if (c->ib == NULL) die("out of memory");
                c->icap = left;
            }
            memcpy(c->ib, buf + used, left);
            c->ilen = left;
        } else if (c->icap > 65536) {
            free(c->ib);
            c->ib = NULL;
            c->icap = 0;
        }
        if ((size_t) n < SCRATCH - have && !to_eof) {
            /* short read: the socket was drained; new data raises a new edge.
             * (After RDHUP/HUP read on to see the end of the stream.) */
            return;
        }
    }
}

static void on_event(conn_t *c, uint32_t evs)
{
    if (c->fd < 0) return;

    if (c->state == ST_CONNECTING) {
        if (evs & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            int err = 0;
            socklen_t l = sizeof(err);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
            if (err) {
                errno = err;
                conn_fail(c, "connect");
                return;
            }
            on_connected(c);
        } else {
            return;
        }
    }
    if (evs & EPOLLOUT && c->wblocked) {
        flush_conn(c);
        if (c->fd < 0) return;
    }
    if (evs & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        on_readable(c, (evs & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
    }
}

/* ------------------------------------------------------------------ */
/* worker */

static uint64_t cpu_self_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec * 1000000ull + ru.ru_utime.tv_usec
           + ru.ru_stime.tv_sec * 1000000ull + ru.ru_stime.tv_usec;
}

/* user ranges of worker w among P for a count of units */
static void slice(long units, int w, long *from, long *to)
{
    *from = units * w / o.procs;
    *to = units * (w + 1) / o.procs;
}

static void setup_conn(conn_t *c, int kind, int role, uint32_t uidx)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->kind = kind;
    c->role = role;
    c->uidx = uidx;
    c->uid = o.uid_base + uidx;
    for (int i = 0; i < 4; i++) c->mask[i] = xrand();
    if (kind == M_WS) imc_ws_init(&c->wsp);
}

static void worker(int w)
{
    long from, to, i;
    int mk = (o.mode == M_MQTT || o.mode == M_HTTP) ? o.mode : M_WS;
                                                    /* receivers' transport */
    int sk = o.mode;                                /* senders' transport */
    uint64_t started = now_ns(), cpu_m0 = 0;
    int ready_sent = 0, cpu_m0_taken = 0, cpu_m1_taken = 0;
    uint64_t last_ping = started;
    static struct epoll_event evs[1024];

    wid = w;
    R = &shm->res[w];
    rnd_state ^= (uint32_t) (getpid() * 2654435761u) ^ (uint32_t) started;
    if (!rnd_state) rnd_state = 1;

    scratch = malloc(SCRATCH);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || scratch == NULL) die("epoll/malloc");

    /* build the connection table of this worker */
    switch (o.scen) {
    case S_IDLE:
        slice(o.sessions, w, &from, &to);
        nconns = to - from;
        conns = calloc(nconns ? nconns : 1, sizeof(conn_t));
        for (i = 0; i < nconns; i++) {
            setup_conn(&conns[i], mk, R_IDLE, o.user_base + from + i);
        }
        break;
    case S_PAIRS:
    case S_RATE:
    case S_BOX:
        slice(o.pairs, w, &from, &to);
        npairs_local = to - from;
        nconns = 2 * (to - from);
        mux_first = -1;
        if (o.mode == M_TCP && o.tcp_conns > 0) {
            /* senders share --tcp-conns connections (split over the workers) */
            long mf, mt;
            slice(o.tcp_conns, w, &mf, &mt);
            if (mt - mf < 1) mt = mf + 1;
            mux_first = nconns;
            nconns += mt - mf;
        }
        conns = calloc(nconns ? nconns : 1, sizeof(conn_t));
        for (i = 0; i < to - from; i++) {
            long pair = from + i;
            conn_t *s = &conns[2 * i], *r = &conns[2 * i + 1];
            setup_conn(s, sk, R_SENDER, o.user_base + 2 * pair);
            setup_conn(r, mk, R_RECEIVER, o.user_base + 2 * pair + 1);
            s->peer = r;
            r->peer = s;
            s->peer_uid = r->uid;
            s->sid = pair;
        }
        if (mux_first >= 0) {
            long nm = nconns - mux_first;
            for (i = mux_first; i < nconns; i++) {
                setup_conn(&conns[i], M_TCP, R_TCPMUX, 0);
            }
            for (i = 0; i < npairs_local; i++) {
                conn_t *s = &conns[2 * i];
                s->via = &conns[mux_first + i % nm];
            }
        }
        break;
    case S_FANOUT:
        /* user_base+0 is the sender (worker 0), members are user_base+1.. */
        slice(o.members, w, &from, &to);
        nconns = (to - from) + (w == 0);
        conns = calloc(nconns, sizeof(conn_t));
        i = 0;
        if (w == 0) {
            setup_conn(&conns[0], sk, R_FSENDER, o.user_base);
            fsender = &conns[0];
            i = 1;
        }
        for (long k = from; k < to; k++, i++) {
            setup_conn(&conns[i], mk, R_MEMBER, o.user_base + 1 + k);
        }
        fo_members = o.members;
        break;
    }

    dirty = calloc(nconns + 1, sizeof(conn_t *));
    pend_cap = nconns * 4 + 16;
    pending = calloc(pend_cap, sizeof(long));
    if (o.scen == S_BOX
        && (ledger_init(&ledger, (uint64_t) o.max_msgs) < 0
            || (ledger_pair = calloc(o.max_msgs + 1, sizeof(uint32_t))) == NULL)) {
        die("out of memory");
    }
    for (i = 0; i < nconns; i++) {
        if (conns[i].via) {         /* virtual sender on a shared TCP connection */
            conns[i].state = ST_LIVE;
            n_done_login++;
            R->ok++;                /* counted as up (its connection is checked below) */
            continue;
        }
        pend_push(i);
    }

    for (;;) {
        uint64_t now = now_ns();

        if (o.scen == S_BOX) {
            tm_entry_t e;
            while (tm_pop_due(&tmq, now, &e)) {
                conn_t *c = &conns[e.idx];
                if (e.gen != c->gen) continue;          /* an old attempt's */
                if (e.kind == TM_START && c->state == ST_IDLE && !shm->stop) {
                    pend_push(e.idx);
                } else if (e.kind == TM_DEADLINE
                           && (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE
                               || c->state == ST_LOGIN)) {
                    conn_fail(c, "timeout");
                }
            }
        }

        start_pending();

        if (!ready_sent && o.scen == S_BOX && n_live + (long) R->permanent == nconns) {
            R->login_ns = now - started;
            ready_sent = 1;
            __sync_fetch_and_add(&shm->ready, 1);
        }
        if (!ready_sent && o.scen != S_BOX && n_done_login == nconns) {
            R->login_ns = now - started;
            ready_sent = 1;
            __sync_fetch_and_add(&shm->ready, 1);
            vlog("worker %d: %ld live of %ld", w, n_live, nconns);
        }

        if (!traffic_on && shm->go) {
            traffic_on = 1;
            t0 = shm->t0;
            m_start = shm->m_start;
            m_end = shm->m_end;
            t_end = shm->t_end;
            if (o.series_out[0] && o.scen == S_RATE) {
                series_init(&series, m_start, (double) (m_end - m_start) / 1e9);
            }
            /* fan-out: a message is complete when every member that is up has it */
            if (o.scen == S_FANOUT) {
                fo_members = shm->live_members;
                if (fo_members < 1) fo_members = 1;
            }
        }

        if (shm->stop) break;

        /* MQTT keepalive is 300 s: a PINGREQ every 120 s keeps long holds up */
        if (o.mode == M_MQTT && now - last_ping > 120 * 1000000000ull) {
            uint8_t pr[2];
            last_ping = now;
            for (i = 0; i < nconns; i++) {
                if (conns[i].state == ST_LIVE) send_raw(&conns[i], pr, mqtt_pingreq(pr));
            }
        }

        if (traffic_on) {
            if (!cpu_m0_taken && now >= m_start) {
                cpu_m0 = cpu_self_us();
                cpu_m0_taken = 1;
            }
            if (!cpu_m1_taken && now >= m_end) {
                R->gen_cpu_us = cpu_self_us() - cpu_m0;
                cpu_m1_taken = 1;
            }

            if (o.scen != S_IDLE) {
                int want = now >= t0 && now < m_end;
                if (o.scen == S_BOX) want = now >= t0 && !shm->send_stop;
                if (want && !sending_on) {
                    sending_on = 1;
                    if (o.scen == S_PAIRS) {
                        for (i = 0; i < nconns; i++) {
                            if (conns[i].role == R_SENDER) pairs_refill(&conns[i]);
                        }
                    }
                } else if (!want && sending_on) {
                    sending_on = 0;
                }
            }

            if ((o.scen == S_RATE || o.scen == S_BOX) && sending_on) {
                /* global schedule of this worker: message j at t0 + j/rate_w,
                 * round robin over its senders */
                static uint64_t j;
                static long next_s;
                long ns = npairs_local;
                double rate_w = o.rate * (double) ns / (double) o.pairs;
                if (ns > 0 && rate_w > 0) {
                    for (;;) {
                        uint64_t due = t0 + (uint64_t) ((double) j * 1e9 / rate_w);
                        if (due > now || (o.scen != S_BOX && due >= m_end)) break;
                        conn_t *s = &conns[2 * next_s];
                        if (s->state == ST_LIVE) send_one(s, due);
                        else R->skipped++;
                        j++;
                        if (++next_s == ns) next_s = 0;
                    }
                }
            }

            if (o.scen == S_FANOUT) fanout_refill();

            if (o.scen != S_BOX && now >= t_end) break;
        }

        flush_all();

        /* wait: short when traffic is scheduled, longer otherwise */
        struct timespec ts = { 0, 10 * 1000000 };
        if (traffic_on && o.scen == S_RATE && sending_on) {
            static uint64_t jj;
            (void) jj;
            ts.tv_nsec = 20000;       /* 20 us: schedule granularity */
        } else if (traffic_on && o.scen == S_BOX && sending_on) {
            /* a dozen processes on two cores: coarser */
            ts.tv_nsec = o.tick_us * 1000L;
        } else if (traffic_on && o.scen == S_FANOUT && fsender) {
            ts.tv_nsec = 50000;
        } else if (traffic_on && now < t0) {
            ts.tv_nsec = 1000000;
        }
        int n = epoll_pwait2(ep, evs, 1024, &ts, NULL);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int k = 0; k < n; k++) {
            on_event(evs[k].data.ptr, evs[k].events);
        }
        flush_all();
    }

    if (!cpu_m1_taken && cpu_m0_taken) R->gen_cpu_us = cpu_self_us() - cpu_m0;

    /* lost: sent, never seen by the receiver, after the drain period */
    for (i = 0; i < nconns && o.scen != S_BOX; i++) {
        conn_t *c = &conns[i];
        if (c->role == R_SENDER && c->sent > c->delivered) R->lost += c->sent - c->delivered;
    }
    if (o.scen == S_BOX) {
        ledger_sum(&ledger, &R->sum);
        R->lost = R->sum.lost;
        /* each acked message never received: its recipient and MsgId, for
         * the driver to look for in the recipient's inbox */
        char fn[300];
        FILE *lf;
        snprintf(fn, sizeof(fn), "%s.%d", o.lost_file, w);
        if (o.ledger_dump[0]) {            /* every message: uid, MsgId, state */
            snprintf(fn, sizeof(fn), "%s.%d", o.ledger_dump, w);
            if ((lf = fopen(fn, "w")) != NULL) {
                uint8_t id[33];
                for (uint64_t j = 0; j < ledger.n; j++) {
                    make_msgid(id, ledger_pair[j], j);
                    id[32] = 0;
                    fprintf(lf, "%u %s %u\n", o.uid_base + (uint32_t) (o.user_base
                            + 2 * (uint64_t) ledger_pair[j] + 1), id, ledger.st[j]);
                }
                fclose(lf);
            }
        }
        snprintf(fn, sizeof(fn), "%s.%d", o.lost_file, w);
        if (R->lost && o.lost_file[0] && (lf = fopen(fn, "w")) != NULL) {
            uint8_t id[33];
            for (uint64_t j = 0; j < ledger.n; j++) {
                if ((ledger.st[j] & (LG_ACKED | LG_RECV)) != LG_ACKED) continue;
                make_msgid(id, ledger_pair[j], j);
                id[32] = 0;
                fprintf(lf, "%u %s\n", o.uid_base + (uint32_t) (o.user_base
                        + 2 * (uint64_t) ledger_pair[j] + 1), id);
            }
            fclose(lf);
        }
    }
    if (fsender) R->lost += fsender->sent - fo_complete;

    /* say goodbye and close with RST (no TIME_WAIT pile-up across runs) */
    uint8_t bye[16];
    for (i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        if (c->fd < 0) continue;
        if (c->state == ST_LIVE && c->kind == M_WS) {
            uint8_t m[2];
            send_msg(c, m, imc_simple(m, IM_CMD_DISCONNECT));
        } else if (c->state == ST_LIVE && c->kind == M_MQTT) {
            send_raw(c, bye, mqtt_disconnect(bye));
        }
    }
    flush_all();
    for (i = 0; i < nconns; i++) conn_close_fd(&conns[i], 1);
    if (series.cnt) {
        char sn[300];
        FILE *sf;
        snprintf(sn, sizeof(sn), "%s.%d", o.series_out, w);
        if ((sf = fopen(sn, "w")) != NULL) {
            series_write(&series, sf);
            fclose(sf);
        }
    }
    __sync_fetch_and_add(&shm->done, 1);
    _exit(0);
}

/* ------------------------------------------------------------------ */
/* parent: /proc sampling */

static void mem_of(const char *list, double *rss_kb, double *pss_kb)
{
    int pids[256], n = parse_pids(list, pids, 256);
    *rss_kb = *pss_kb = 0;
    for (int i = 0; i < n; i++) {
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        while (fgets(line, sizeof(line), f)) {
            long v;
            if (sscanf(line, "Rss: %ld kB", &v) == 1) *rss_kb += v;
            else if (sscanf(line, "Pss: %ld kB", &v) == 1) *pss_kb += v;
        }
        fclose(f);
    }
}

/* ------------------------------------------------------------------ */
/* parent */

static pid_t *kids;

static void kill_kids(void)
{
    for (int i = 0; i < o.procs; i++) {
        if (kids[i] > 0) kill(kids[i], SIGKILL);
    }
}

static void on_alarm(int sig)
{
    (void) sig;
    static const char m[] = "imgen: hard timeout, killing workers\n";
    if (write(2, m, sizeof(m) - 1) < 0) {
    }
    if (shm) shm->stop = 1;
    kill_kids();
    _exit(3);
}

static void on_usr1(int sig)
{
    (void) sig;
    if (shm) shm->restarted = 1;
}

static volatile int got_term;
static void on_term(int sig)
{
    (void) sig;
    got_term = 1;
    if (shm) shm->stop = 1;
}

static void jhist(FILE *f, const char *name, hist_t *h)
{
    fprintf(f, ",\"%s\":{\"n\":%" PRIu64 ",\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
               "\"p999\":%.1f,\"max\":%.1f,\"mean\":%.1f}",
            name, h->count, hist_pct(h, 50) / 1e3, hist_pct(h, 90) / 1e3,
            hist_pct(h, 99) / 1e3, hist_pct(h, 99.9) / 1e3, (double) h->max / 1e3,
            h->count ? (double) h->sum / h->count / 1e3 : 0.0);
}

/* ------------------------------------------------------------------ */
/* parent: the full box (logins, traffic, the storm, the drain) */

static uint64_t mono_to_real_ns;    /* CLOCK_REALTIME - CLOCK_MONOTONIC */

static double real_s(uint64_t mono)
{
    return (mono + mono_to_real_ns) / 1e9;
}

static FILE *phase_f;

/* one line per phase, for the driver (bench/fullbox.sh) to wait on */
static void phase(const char *name, uint64_t at)
{
    if (phase_f == NULL) return;
    fprintf(phase_f, "%.3f %s\n", real_s(at), name);
    fflush(phase_f);
}

typedef struct {
    uint64_t live, in_flight, logins, drops, sent, acked, received, owed;
    uint64_t refused_conn, reset_login, login_timeouts, skipped, permanent;
    uint64_t login_refused, first_drop, last_login;
} box_now_t;

static void box_read(box_now_t *b)
{
    memset(b, 0, sizeof(*b));
    for (int w = 0; w < o.procs; w++) {
        wres_t *r = &shm->res[w];
        b->live += r->live;
        b->in_flight += r->in_flight;
        b->logins += r->ok;
        b->drops += r->drop_rst + r->drop_eof + r->drop_bye;
        b->sent += r->sent;
        b->acked += r->acked;
        b->received += r->received;
        b->owed += r->owed;
        b->refused_conn += r->refused_conn;
        b->reset_login += r->reset_login;
        b->login_timeouts += r->login_timeouts;
        b->skipped += r->skipped;
        b->permanent += r->permanent;
        b->login_refused += r->refused;
        if (r->first_drop_ns && (!b->first_drop || r->first_drop_ns < b->first_drop)) {
            b->first_drop = r->first_drop_ns;
        }
        if (r->last_login_ns > b->last_login) b->last_login = r->last_login_ns;
    }
}

static int parent_box(uint64_t start, double rss0, double pss0)
{
    FILE    *sf = NULL;
    box_now_t b, at_kill;
    uint64_t total = 2 * (uint64_t) o.pairs, now, next_sample = 0;
    uint64_t t_drop = 0, t_back = 0, t_stop = 0, t_settled = 0, login_done = 0;
    uint64_t login_deadline = start + (uint64_t) (o.login_timeout * 1e9);
    int      dropped = 0, back = 0, gave_up = 0, steady_on = 0, steady_off = 0;
    int      login_timed_out = 0;
    double   rss1 = 0, pss1 = 0, cpu0 = 0, cpu1 = 0, aux0 = 0, aux1 = 0;
    double   mb0 = 0, mb1 = 0, st0 = 0, st1 = 0, gen0 = 0, gen1 = 0;
    uint64_t m0 = 0, m1 = 0;
    char     gen_pids[64 * 12] = "";

    for (int w = 0, n = 0; w < o.procs && n < (int) sizeof(gen_pids) - 12; w++) {
        n += sprintf(gen_pids + n, "%s%d", w ? "," : "", (int) kids[w]);
    }
    memset(&at_kill, 0, sizeof(at_kill));
    if (o.samples[0] && (sf = fopen(o.samples, "w")) == NULL) {
        die("open %s: %s", o.samples, strerror(errno));
    }
    if (sf) {
        fprintf(sf, "# t_s realtime live in_flight logins drops sent acked received"
                    " owed refused_conn reset_login login_timeouts skipped"
                    " login_refused\n");
    }
    for (;;) {
        now = now_ns();
        box_read(&b);

        if (sf && now >= next_sample) {
            next_sample = now + 500 * 1000000ull;
            fprintf(sf, "%.3f %.3f %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
                        " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
                        " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
                    (now - start) / 1e9, real_s(now), b.live, b.in_flight, b.logins,
                    b.drops, b.sent, b.acked, b.received, b.owed, b.refused_conn,
                    b.reset_login, b.login_timeouts, b.skipped, b.login_refused);
            fflush(sf);
        }
        if (got_term) break;

        if (!login_done) {          /* the logins: all, or the bound */
            if (shm->ready < o.procs && now <= login_deadline) goto next;
            login_timed_out = shm->ready < o.procs;
            login_done = now;
            t_settled = login_done + (uint64_t) (o.settle * 1e9);
            fprintf(stderr, "imgen: %" PRIu64 " sessions up in %.2f s%s\n", b.live,
                    (login_done - start) / 1e9, login_timed_out ? " (login timeout)" : "");
            phase(login_timed_out ? "up-timeout" : "up", login_done);
            goto next;
        }
        if (!shm->go) {
            if (now < t_settled) goto next;
            mem_of(o.mem_pids, &rss1, &pss1);
            now = now_ns();
            phase("mem", now);
            shm->t0 = now + 50 * 1000000ull;
            shm->m_start = shm->t0 + (uint64_t) (o.warmup * 1e9);
            shm->m_end = shm->m_start + (uint64_t) (o.duration * 1e9);
            shm->t_end = UINT64_MAX;
            __sync_synchronize();
            shm->go = 1;
            goto next;
        }
        if (!steady_on && now >= shm->m_start) {
            steady_on = 1;
            m0 = now;
            cpu0 = cpu_of(o.cpu_pids);
            aux0 = cpu_of(o.aux_pids);
            mb0 = machine_busy();
            st0 = machine_steal_s;
            gen0 = cpu_of(gen_pids);
            phase("steady", now);
        }
        if (!steady_off && now >= shm->m_end) {
            steady_off = 1;
            m1 = now;
            cpu1 = cpu_of(o.cpu_pids);
            aux1 = cpu_of(o.aux_pids);
            mb1 = machine_busy();
            st1 = machine_steal_s;
            gen1 = cpu_of(gen_pids);
            at_kill = b;
            phase("kill", now);     /* the driver kills the server now */
            goto next;
        }
        if (!steady_off) goto next;

        /* the storm: every session down, then all back */
        uint64_t target = total - b.permanent;
        if (!dropped) {
            if (b.live < target && b.first_drop) {
                dropped = 1;
                t_drop = b.first_drop;
                phase("drop", t_drop);
            } else if (now > shm->m_end + (uint64_t) (o.storm_wait * 1e9)) {
                gave_up = 1;
            }
        } else if (!back) {
            if (b.live >= target) {
                back = 1;
                t_back = b.last_login;
                phase("back", t_back);
            } else if (now > t_drop + (uint64_t) (o.storm_wait * 1e9)) {
                gave_up = 1;
            }
        }

        if (!shm->send_stop
            && (gave_up || (back && now >= t_back + (uint64_t) (o.after * 1e9)))) {
            shm->send_stop = 1;
            t_stop = now;
            phase("stop", now);
        }
        /* the drain: until every acked message is in, or the bound */
        if (shm->send_stop && now > t_stop + 200 * 1000000ull
            && ((b.owed == 0 && b.live >= target)
                || now > t_stop + (uint64_t) (o.drain * 1e9))) {
            break;
        }
    next:
        usleep(10000);
    }

    box_read(&b);
    shm->stop = 1;
    phase("end", now_ns());
    for (int w = 0; w < o.procs; w++) {
        int st;
        waitpid(kids[w], &st, 0);
        kids[w] = 0;
    }
    alarm(0);
    if (sf) fclose(sf);

    wres_t *A = calloc(1, sizeof(wres_t));
    uint64_t login_ns = 0;
    for (int w = 0; w < o.procs; w++) {
        wres_t *r = &shm->res[w];
        A->ok += r->ok; A->retries += r->retries; A->refused += r->refused;
        A->errors += r->errors; A->logout += r->logout; A->dups += r->dups;
        A->stale += r->stale; A->sent_m += r->sent_m; A->acked_m += r->acked_m;
        A->delivered_m += r->delivered_m; A->gen_cpu_us += r->gen_cpu_us;
        A->drop_rst += r->drop_rst; A->drop_eof += r->drop_eof;
        A->drop_bye += r->drop_bye; A->refused_conn += r->refused_conn;
        A->reset_login += r->reset_login; A->login_timeouts += r->login_timeouts;
        A->hs_fail += r->hs_fail; A->other_fail += r->other_fail;
        A->permanent += r->permanent; A->skipped += r->skipped;
        A->pub_refused += r->pub_refused; A->misrouted += r->misrouted;
        A->ledger_full += r->ledger_full;
        for (int k = 0; k < 5; k++) A->after[k] += r->after[k];
        A->sum.sent += r->sum.sent; A->sum.acked += r->sum.acked;
        A->sum.received += r->sum.received; A->sum.refused += r->sum.refused;
        A->sum.lost += r->sum.lost; A->sum.unacked += r->sum.unacked;
        A->sum.unacked_received += r->sum.unacked_received;
        A->sum.refused_received += r->sum.refused_received;
        if (r->login_ns > login_ns) login_ns = r->login_ns;
        hist_merge(&A->lat, &r->lat);
        hist_merge(&A->lat_after, &r->lat_after);
    }

    double win = m1 > m0 ? (m1 - m0) / 1e9 : 0, cpu = cpu1 - cpu0, aux = aux1 - aux0;
    FILE *f = stdout;
    fprintf(f, "{\"label\":\"%s\",\"scenario\":\"box\",\"mode\":\"%s\",\"procs\":%d,"
               "\"sessions\":%" PRIu64 ",\"login_s\":%.3f,\"logins_per_s\":%.0f"
               ",\"login_timeout\":%s,\"rate\":%.0f,\"payload\":%d,\"window_s\":%.3f",
            o.label, mode_name[o.mode], o.procs, total, login_ns / 1e9,
            login_ns ? total / (login_ns / 1e9) : 0.0,
            login_timed_out ? "true" : "false", o.rate, o.payload, win);
    if (o.mem_pids[0]) {
        fprintf(f, ",\"mem_before_kb\":{\"rss\":%.0f,\"pss\":%.0f}"
                   ",\"mem_after_kb\":{\"rss\":%.0f,\"pss\":%.0f}"
                   ",\"bytes_per_session\":{\"rss\":%.0f,\"pss\":%.0f}",
                rss0, pss0, rss1, pss1, (rss1 - rss0) * 1024 / total,
                (pss1 - pss0) * 1024 / total);
    }
    fprintf(f, ",\"steady\":{\"sent\":%" PRIu64 ",\"acked\":%" PRIu64
               ",\"delivered\":%" PRIu64 ",\"delivered_per_s\":%.0f",
            A->sent_m, A->acked_m, A->delivered_m, win > 0 ? A->delivered_m / win : 0);
    jhist(f, "latency_us", &A->lat);
    if (o.cpu_pids[0] && win > 0) {
        fprintf(f, ",\"srv_cpu_pct\":%.1f,\"srv_cpu_us_per_msg\":%.2f", 100 * cpu / win,
                A->delivered_m ? cpu * 1e6 / A->delivered_m : 0);
    }
    if (o.aux_pids[0] && win > 0) {
        fprintf(f, ",\"aux_cpu_pct\":%.1f,\"aux_cpu_us_per_msg\":%.2f", 100 * aux / win,
                A->delivered_m ? aux * 1e6 / A->delivered_m : 0);
    }
    if (win > 0) {
        fprintf(f, ",\"gen_cpu_pct\":%.1f,\"machine_cpu_pct\":%.1f"
                   ",\"steal_cpu_pct\":%.1f", 100 * (gen1 - gen0) / win,
                100 * (mb1 - mb0) / win, 100 * (st1 - st0) / win);
    }
    fprintf(f, "}");
    fprintf(f, ",\"storm\":{\"drops_before\":%" PRIu64 ",\"dropped\":%s,\"all_back\":%s"
               ",\"drop_realtime\":%.3f,\"back_realtime\":%.3f,\"back_s\":%.3f"
               ",\"dropped_rst\":%" PRIu64 ",\"dropped_eof\":%" PRIu64
               ",\"dropped_goodbye\":%" PRIu64 ",\"logins\":%" PRIu64
               ",\"connect_refused\":%" PRIu64 ",\"reset_before_login\":%" PRIu64
               ",\"login_refused\":%" PRIu64 ",\"login_timeouts\":%" PRIu64
               ",\"handshake_failed\":%" PRIu64 ",\"other_failures\":%" PRIu64
               ",\"logouts\":%" PRIu64 ",\"live_at_end\":%" PRIu64
               ",\"after_restart\":{\"signalled\":%s,\"connect_refused\":%" PRIu64
               ",\"reset_before_login\":%" PRIu64 ",\"login_refused\":%" PRIu64
               ",\"login_timeouts\":%" PRIu64 ",\"handshake_failed\":%" PRIu64 "}}",
            at_kill.drops, dropped ? "true" : "false", back ? "true" : "false",
            t_drop ? real_s(t_drop) : 0.0, t_back ? real_s(t_back) : 0.0,
            back ? (t_back - t_drop) / 1e9 : -1.0, A->drop_rst, A->drop_eof,
            A->drop_bye, A->ok, A->refused_conn, A->reset_login, A->refused,
            A->login_timeouts, A->hs_fail, A->other_fail, A->logout, b.live,
            shm->restarted ? "true" : "false", A->after[0], A->after[1], A->after[2],
            A->after[3], A->after[4]);
    fprintf(f, ",\"messages\":{\"sent\":%" PRIu64 ",\"acked\":%" PRIu64
               ",\"received\":%" PRIu64 ",\"refused\":%" PRIu64
               ",\"acked_never_received\":%" PRIu64 ",\"unacked\":%" PRIu64
               ",\"unacked_received\":%" PRIu64 ",\"refused_received\":%" PRIu64
               ",\"dups\":%" PRIu64 ",\"misrouted\":%" PRIu64 ",\"stale\":%" PRIu64
               ",\"skipped_sender_down\":%" PRIu64 ",\"ledger_full\":%" PRIu64
               ",\"drain_s\":%.3f",
            A->sum.sent, A->sum.acked, A->sum.received, A->sum.refused, A->sum.lost,
            A->sum.unacked, A->sum.unacked_received, A->sum.refused_received, A->dups,
            A->misrouted, A->stale, A->skipped, A->ledger_full,
            t_stop ? (now_ns() - t_stop) / 1e9 : 0.0);
    jhist(f, "latency_after_us", &A->lat_after);
    fprintf(f, "},\"errors\":%" PRIu64 "}\n", A->errors);
    fflush(f);

    return (login_timed_out || !back || A->sum.lost) ? 1 : 0;
}

static void usage(void)
{
    fprintf(stderr,
"usage: imgen [options]\n"
"  -m, --mode ws|tcp|mqtt|http  transport (tcp: senders use the backend TCP\n"
"                             API, receivers WebSocket; http: idle only, one\n"
"                             GET per connection, then held)          [ws]\n"
"  -s, --scenario idle|pairs|rate|fanout|box                          [pairs]\n"
"  -H, --host ADDR            server address (127.0.0.0/8 only)       [127.0.0.1]\n"
"  -p, --port N               WebSocket or MQTT port                  [9095]\n"
"      --tcp-port N           backend TCP API port (mode tcp)         [19095]\n"
"      --path P               WebSocket (or http mode's) path         [/ws]\n"
"      --recv-port N          receivers/members connect to this WebSocket port\n"
"                             (another node); senders stay on -p     [= -p]\n"
"      --tcp-conns N          mode tcp, pairs/rate: the senders share N backend\n"
"                             connections, requests pipelined; 0: one each [0]\n"
"  -P, --procs N              worker processes                        [1]\n"
"  -n, --sessions N           idle: sessions                          [1000]\n"
"  -k, --pairs K              pairs/rate: sender->receiver pairs      [1000]\n"
"  -w, --window W             pairs/fanout: messages in flight per sender [4]\n"
"  -r, --rate R               rate: total messages/s                  [20000]\n"
"  -M, --members M            fanout: group members (all online)      [1000]\n"
"  -g, --gid G                fanout: group id                        [7001]\n"
"  -d, --duration S           measured seconds                        [10]\n"
"  -W, --warmup S             seconds of traffic before measuring     [2]\n"
"      --hold S               idle: seconds to hold the sessions      [5]\n"
"      --settle S             idle: seconds after login before memory [2]\n"
"      --drain S              seconds to wait for in-flight messages  [2]\n"
"  -l, --payload B            payload bytes (>= %d)                   [128]\n"
"  -S, --src-addrs N          bind sources 127.0.0.2..127.0.0.(N+1) round robin [0]\n"
"  -C, --concurrency C        connects/logins in flight per process   [200]\n"
"  -u, --user-base I          first user index (benchuser<I>)         [0]\n"
"      --uid-base U           uid of benchuser0 (uid = U + index)     [100000]\n"
"      --max-msgs N           fanout: messages tracked                [1048576]\n"
"      --cpu-pids LIST        server pids whose CPU is sampled over the window\n"
"      --aux-pids LIST        more pids sampled separately (Redis)\n"
"      --mem-pids LIST        pids whose RSS/PSS is read before and after login\n"
"      --label S              copied into the JSON line\n"
"  -T, --timeout S            hard bound for the whole run            [120]\n"
"      --login-timeout S      bound for all logins                    [60]\n"
"      --gen-users N          print a users file of N users and exit\n"
"      --hist-out FILE        write the latency percentile curve (fanout: last member)\n"
"      --series-out FILE      rate: per ms of send time, messages and max latency\n"
"                             (FILE.<worker>; bench/series.h)\n"
"  box: -n N sessions, 2j sends to 2j+1 at -r msgs/s in total; -W and -d make\n"
"  the steady window; at its end the driver kills the server (phase \"kill\");\n"
"  sessions come back, then --after S more of traffic, then --drain S at most\n"
"      --attempt-timeout S    one connect + login attempt               [30]\n"
"      --backoff-max S        retry after a failed attempt: 50 ms doubled, at most [5]\n"
"      --jitter S             a dropped session waits 0..S before coming back [2]\n"
"      --storm-wait S         bound for the drop and for the return      [180]\n"
"      --after S              traffic after all are back                 [10]\n"
"      --samples FILE         every 0.5 s: live sessions, logins, messages\n"
"      --phase-file FILE      a line per phase: up mem steady kill drop back stop end\n"
"      --tick-us U            schedule granularity while sending         [250]\n"
"      --lost-file F          F.<process>: \"<recipient uid> <MsgId>\" of each acked\n"
"                             message never received\n"
"      --ledger-dump F        F.<process>: \"<recipient uid> <MsgId> <state>\" of every\n"
"                             message (state: 1 sent, 2 acked, 4 received, 8 refused)\n"
"  SIGUSR1 to imgen (box): the server listens again; failed attempts from then\n"
"  on are counted apart as well (\"after_restart\")\n"
"  -v, --verbose\n", PL_MIN);
    exit(2);
}

int main(int argc, char **argv)
{
    static struct option lo[] = {
        { "mode", 1, 0, 'm' }, { "scenario", 1, 0, 's' }, { "host", 1, 0, 'H' },
        { "port", 1, 0, 'p' }, { "tcp-port", 1, 0, 1 }, { "path", 1, 0, 2 },
        { "procs", 1, 0, 'P' }, { "sessions", 1, 0, 'n' }, { "pairs", 1, 0, 'k' },
        { "window", 1, 0, 'w' }, { "rate", 1, 0, 'r' }, { "members", 1, 0, 'M' },
        { "gid", 1, 0, 'g' }, { "duration", 1, 0, 'd' }, { "warmup", 1, 0, 'W' },
        { "hold", 1, 0, 3 }, { "settle", 1, 0, 4 }, { "drain", 1, 0, 5 },
        { "payload", 1, 0, 'l' }, { "src-addrs", 1, 0, 'S' }, { "concurrency", 1, 0, 'C' },
        { "user-base", 1, 0, 'u' }, { "uid-base", 1, 0, 6 }, { "max-msgs", 1, 0, 7 },
        { "cpu-pids", 1, 0, 8 }, { "aux-pids", 1, 0, 9 }, { "mem-pids", 1, 0, 10 },
        { "label", 1, 0, 11 }, { "timeout", 1, 0, 'T' }, { "login-timeout", 1, 0, 12 },
        { "gen-users", 1, 0, 13 }, { "hist-out", 1, 0, 14 },
        { "series-out", 1, 0, 27 }, { "verbose", 0, 0, 'v' },
        { "recv-port", 1, 0, 15 }, { "tcp-conns", 1, 0, 16 }, { "help", 0, 0, 'h' },
        { "attempt-timeout", 1, 0, 17 }, { "backoff-max", 1, 0, 18 },
        { "jitter", 1, 0, 19 }, { "storm-wait", 1, 0, 20 }, { "after", 1, 0, 21 },
        { "samples", 1, 0, 22 }, { "phase-file", 1, 0, 23 }, { "tick-us", 1, 0, 24 },
        { "lost-file", 1, 0, 25 }, { "ledger-dump", 1, 0, 26 },
        { 0, 0, 0, 0 }
    };
    long gen_users = -1;
    int c;

    o.mode = M_WS;
    o.scen = S_PAIRS;
    strcpy(o.host, "127.0.0.1");
    o.port = 9095;
    o.tcp_port = 19095;
    strcpy(o.path, "/ws");
    o.procs = 1;
    o.sessions = 1000;
    o.pairs = 1000;
    o.members = 1000;
    o.window = 4;
    o.rate = 20000;
    o.gid = 7001;
    o.duration = 10;
    o.warmup = 2;
    o.hold = 5;
    o.settle = 2;
    o.drain = 2;
    o.payload = 128;
    o.conc = 200;
    o.uid_base = 100000;
    o.max_msgs = 1 << 20;
    o.timeout = 120;
    o.login_timeout = 60;
    o.attempt_timeout = 30;
    o.backoff_max = 5;
    o.jitter = 2;
    o.storm_wait = 180;
    o.after = 10;
    o.tick_us = 250;

    while ((c = getopt_long(argc, argv, "m:s:H:p:P:n:k:w:r:M:g:d:W:l:S:C:u:T:vh", lo, NULL))
           != -1) {
        switch (c) {
        case 'm':
            if (!strcmp(optarg, "ws")) o.mode = M_WS;
            else if (!strcmp(optarg, "tcp")) o.mode = M_TCP;
            else if (!strcmp(optarg, "mqtt")) o.mode = M_MQTT;
            else if (!strcmp(optarg, "http")) o.mode = M_HTTP;
            else usage();
            break;
        case 's':
            if (!strcmp(optarg, "idle")) o.scen = S_IDLE;
            else if (!strcmp(optarg, "pairs")) o.scen = S_PAIRS;
            else if (!strcmp(optarg, "rate")) o.scen = S_RATE;
            else if (!strcmp(optarg, "fanout")) o.scen = S_FANOUT;
            else if (!strcmp(optarg, "box")) o.scen = S_BOX;
            else usage();
            break;
        case 15: o.recv_port = atoi(optarg); break;
        case 16: o.tcp_conns = atol(optarg); break;
        case 17: o.attempt_timeout = atof(optarg); break;
        case 18: o.backoff_max = atof(optarg); break;
        case 19: o.jitter = atof(optarg); break;
        case 20: o.storm_wait = atof(optarg); break;
        case 21: o.after = atof(optarg); break;
        case 22: snprintf(o.samples, sizeof(o.samples), "%s", optarg); break;
        case 23: snprintf(o.phase_file, sizeof(o.phase_file), "%s", optarg); break;
        case 24: o.tick_us = atoi(optarg); break;
        case 25: snprintf(o.lost_file, sizeof(o.lost_file), "%s", optarg); break;
        case 26: snprintf(o.ledger_dump, sizeof(o.ledger_dump), "%s", optarg); break;
        case 'H': snprintf(o.host, sizeof(o.host), "%s", optarg); break;
        case 'p': o.port = atoi(optarg); break;
        case 1: o.tcp_port = atoi(optarg); break;
        case 2: snprintf(o.path, sizeof(o.path), "%s", optarg); break;
        case 'P': o.procs = atoi(optarg); break;
        case 'n': o.sessions = atol(optarg); break;
        case 'k': o.pairs = atol(optarg); break;
        case 'w': o.window = atoi(optarg); break;
        case 'r': o.rate = atof(optarg); break;
        case 'M': o.members = atol(optarg); break;
        case 'g': o.gid = strtoul(optarg, NULL, 10); break;
        case 'd': o.duration = atof(optarg); break;
        case 'W': o.warmup = atof(optarg); break;
        case 3: o.hold = atof(optarg); break;
        case 4: o.settle = atof(optarg); break;
        case 5: o.drain = atof(optarg); break;
        case 'l': o.payload = atoi(optarg); break;
        case 'S': o.nsrc = atoi(optarg); break;
        case 'C': o.conc = atoi(optarg); break;
        case 'u': o.user_base = atol(optarg); break;
        case 6: o.uid_base = strtoul(optarg, NULL, 10); break;
        case 7: o.max_msgs = atol(optarg); break;
        case 8: snprintf(o.cpu_pids, sizeof(o.cpu_pids), "%s", optarg); break;
        case 9: snprintf(o.aux_pids, sizeof(o.aux_pids), "%s", optarg); break;
        case 10: snprintf(o.mem_pids, sizeof(o.mem_pids), "%s", optarg); break;
        case 11: snprintf(o.label, sizeof(o.label), "%s", optarg); break;
        case 'T': o.timeout = atof(optarg); break;
        case 12: o.login_timeout = atof(optarg); break;
        case 13: gen_users = atol(optarg); break;
        case 14: snprintf(o.hist_out, sizeof(o.hist_out), "%s", optarg); break;
        case 27: snprintf(o.series_out, sizeof(o.series_out), "%s", optarg); break;
        case 'v': o.verbose = 1; break;
        default: usage();
        }
    }

    if (gen_users >= 0) {
        for (long i = 0; i < gen_users; i++) {
            printf("benchuser%ld pw%ld %lu\n", i, i, (unsigned long) o.uid_base + i);
        }
        return 0;
    }

    if (o.procs < 1 || o.procs > 64) die("--procs 1..64");
    if (o.payload < PL_MIN || o.payload > 32767) die("--payload %d..32767", PL_MIN);
    if (o.window < 1) die("--window >= 1");
    if (o.nsrc < 0 || o.nsrc > 250) die("--src-addrs 0..250");
    if (o.conc < 1) o.conc = 1;
    if (o.scen == S_FANOUT && o.members < 1) die("--members >= 1");
    if (o.scen == S_FANOUT && o.mode == M_TCP && 0) die("");
    if (o.mode == M_HTTP && o.scen != S_IDLE) die("mode http: idle only");
    if (o.scen == S_BOX) {
        if (o.mode != M_WS) die("box: WebSocket only (-m ws)");
        if (o.sessions < 2 || o.sessions % 2) die("box: an even -n >= 2");
        o.pairs = o.sessions / 2;      /* 2j sends to 2j+1 */
        if (o.tick_us < 20 || o.tick_us > 100000) die("--tick-us 20..100000");
    }

    memset(&dst_ws, 0, sizeof(dst_ws));
    dst_ws.sin_family = AF_INET;
    if (inet_pton(AF_INET, o.host, &dst_ws.sin_addr) != 1) die("bad --host %s", o.host);
    if ((ntohl(dst_ws.sin_addr.s_addr) >> 24) != 127) die("--host must be in 127.0.0.0/8");
    dst_tcp = dst_ws;
    dst_ws.sin_port = htons(o.port);
    dst_tcp.sin_port = htons(o.tcp_port);
    dst_recv = dst_ws;
    if (o.recv_port > 0) dst_recv.sin_port = htons(o.recv_port);
    if (o.tcp_conns < 0) die("--tcp-conns >= 0");

    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    mono_to_real_ns = (uint64_t) rt.tv_sec * 1000000000ull + rt.tv_nsec - now_ns();
    if (o.phase_file[0] && (phase_f = fopen(o.phase_file, "w")) == NULL) {
        die("open %s: %s", o.phase_file, strerror(errno));
    }
    runid = (uint32_t) (rt.tv_nsec ^ (rt.tv_sec << 12) ^ getpid());
    rnd_state = runid | 1;
    payload_init();

    /* shared memory: header, per-worker results, fanout arrays */
    size_t hdr = sizeof(shm_t) + o.procs * sizeof(wres_t);
    hdr = (hdr + 63) & ~(size_t) 63;
    size_t fo = (o.scen == S_FANOUT) ? (size_t) o.max_msgs : 0;
    size_t total = hdr + fo * (4 + 8 + 8 + 8);
    void *mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) die("mmap: %s", strerror(errno));
    shm = mem;
    shm->runid = runid;
    fo_last = (uint64_t *) ((char *) mem + hdr);
    fo_first = fo_last + fo;
    fo_sent = fo_first + fo;
    fo_cnt = (uint32_t *) (fo_sent + fo);

    signal(SIGALRM, on_alarm);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR1, on_usr1);
    alarm((unsigned) (o.timeout + 0.999));

    double rss0, pss0, rss1 = 0, pss1 = 0;
    mem_of(o.mem_pids, &rss0, &pss0);

    /* server CPU over the logins: from before the first connect to the last
     * CONNECT_ACK (the clock ticks of /proc: 10 ms, so use thousands) */
    double lcpu0 = cpu_of(o.cpu_pids), laux0 = cpu_of(o.aux_pids);
    uint64_t start = now_ns();
    kids = calloc(o.procs, sizeof(pid_t));
    for (int w = 0; w < o.procs; w++) {
        pid_t p = fork();
        if (p < 0) die("fork: %s", strerror(errno));
        if (p == 0) {
            signal(SIGALRM, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            alarm(0);
            worker(w);
        }
        kids[w] = p;
    }

    if (o.scen == S_BOX) return parent_box(start, rss0, pss0);

    /* wait for all logins */
    uint64_t login_deadline = start + (uint64_t) (o.login_timeout * 1e9);
    int login_timed_out = 0;
    while (shm->ready < o.procs && !got_term) {
        if (now_ns() > login_deadline) {
            login_timed_out = 1;
            break;
        }
        usleep(2000);
    }
    uint64_t login_done = now_ns();
    double lcpu1 = cpu_of(o.cpu_pids), laux1 = cpu_of(o.aux_pids);
    uint64_t ok = 0;
    for (int w = 0; w < o.procs; w++) ok += shm->res[w].ok;
    fprintf(stderr, "imgen: %" PRIu64 " sessions up in %.2f s%s\n", ok,
            (login_done - start) / 1e9, login_timed_out ? " (login timeout)" : "");

    double cpu0 = 0, cpu1 = 0, aux0 = 0, aux1 = 0, mb0 = 0, mb1 = 0, st0 = 0, st1 = 0;
    uint64_t m0 = 0, m1 = 0;

    if (o.scen == S_IDLE) {
        uint64_t t = login_done + (uint64_t) (o.settle * 1e9);
        sleep_until(t);
        mem_of(o.mem_pids, &rss1, &pss1);
        m0 = now_ns();
        cpu0 = cpu_of(o.cpu_pids);
        aux0 = cpu_of(o.aux_pids);
        mb0 = machine_busy();
        st0 = machine_steal_s;
        double rest = o.hold - o.settle;
        uint64_t deadline = m0 + (uint64_t) ((rest > 0 ? rest : 0) * 1e9);
        shm->t0 = shm->m_start = m0;
        shm->m_end = shm->t_end = deadline;
        shm->go = 1;
        while (now_ns() < deadline && !got_term) usleep(10000);
        m1 = now_ns();
        cpu1 = cpu_of(o.cpu_pids);
        aux1 = cpu_of(o.aux_pids);
        mb1 = machine_busy();
        st1 = machine_steal_s;
        shm->stop = 1;
    } else {
        uint64_t t = now_ns() + 50 * 1000000ull;
        shm->t0 = t;
        shm->m_start = t + (uint64_t) (o.warmup * 1e9);
        shm->m_end = shm->m_start + (uint64_t) (o.duration * 1e9);
        shm->t_end = shm->m_end + (uint64_t) (o.drain * 1e9);
        __sync_synchronize();
        shm->go = 1;
        sleep_until(shm->m_start);
        m0 = now_ns();
        cpu0 = cpu_of(o.cpu_pids);
        aux0 = cpu_of(o.aux_pids);
        mb0 = machine_busy();
        st0 = machine_steal_s;
        sleep_until(shm->m_end);
        m1 = now_ns();
        cpu1 = cpu_of(o.cpu_pids);
        aux1 = cpu_of(o.aux_pids);
        mb1 = machine_busy();
        st1 = machine_steal_s;
    }

    /* idle: cpu1 was read just before the workers were told to stop */
    double ocpu0 = o.scen == S_IDLE ? cpu1 : 0, ocpu1 = ocpu0;
    for (int w = 0; w < o.procs; w++) {
        int st;
        waitpid(kids[w], &st, 0);
        kids[w] = 0;
    }
    /* idle: the workers' exit closed every session; the server's CPU for the
     * logouts is what it used until it stops growing (sampled every 0.3 s,
     * at most 20 s) */
    if (o.scen == S_IDLE && o.cpu_pids[0]) {
        for (int k = 0; k < 66; k++) {
            usleep(300000);
            double c = cpu_of(o.cpu_pids);
            if (c == ocpu1 && k > 2) break;
            ocpu1 = c;
        }
    }
    alarm(0);

    /* aggregate */
    wres_t *A = calloc(1, sizeof(wres_t));
    uint64_t login_ns = 0;
    for (int w = 0; w < o.procs; w++) {
        wres_t *r = &shm->res[w];
        A->ok += r->ok; A->fail += r->fail; A->retries += r->retries;
        A->closed += r->closed; A->refused += r->refused; A->errors += r->errors;
        A->logout += r->logout; A->sent += r->sent; A->acked += r->acked;
        A->delivered += r->delivered; A->sent_m += r->sent_m; A->acked_m += r->acked_m;
        A->delivered_m += r->delivered_m; A->dups += r->dups; A->gaps += r->gaps;
        A->stale += r->stale; A->lost += r->lost; A->gen_cpu_us += r->gen_cpu_us;
        if (r->login_ns > login_ns) login_ns = r->login_ns;
        hist_merge(&A->lat, &r->lat);
        hist_merge(&A->last, &r->last);
        hist_merge(&A->first, &r->first);
        hist_merge(&A->each, &r->each);
        hist_merge(&A->login, &r->login);
    }

    double win = (m1 - m0) / 1e9;
    double cpu = cpu1 - cpu0, aux = aux1 - aux0;
    long sessions = o.scen == S_IDLE ? o.sessions
                    : o.scen == S_FANOUT ? o.members + 1 : 2 * o.pairs;

    FILE *f = stdout;
    fprintf(f, "{\"label\":\"%s\",\"scenario\":\"%s\",\"mode\":\"%s\",\"procs\":%d,"
               "\"sessions\":%ld,\"sessions_ok\":%" PRIu64 ",\"sessions_failed\":%" PRIu64
               ",\"retries\":%" PRIu64 ",\"login_s\":%.3f,\"logins_per_s\":%.0f",
            o.label, scen_name[o.scen], mode_name[o.mode], o.procs, sessions, A->ok, A->fail,
            A->retries, login_ns / 1e9, login_ns ? A->ok / (login_ns / 1e9) : 0.0);
    if (o.scen == S_PAIRS || o.scen == S_RATE) {
        fprintf(f, ",\"pairs\":%ld", o.pairs);
        if (o.mode == M_TCP) {
            fprintf(f, ",\"tcp_conns\":%ld", o.tcp_conns > 0 ? o.tcp_conns : o.pairs);
        }
    }
    if (o.recv_port > 0) fprintf(f, ",\"recv_port\":%d", o.recv_port);
    if (o.scen == S_PAIRS || o.scen == S_FANOUT) fprintf(f, ",\"window\":%d", o.window);
    if (o.scen == S_RATE) fprintf(f, ",\"rate\":%.0f", o.rate);
    if (o.scen == S_FANOUT) fprintf(f, ",\"members\":%ld,\"gid\":%u", o.members, o.gid);
    fprintf(f, ",\"payload\":%d,\"window_s\":%.3f", o.payload, win);
    if (o.scen != S_IDLE) {
        double dps = win > 0 ? A->delivered_m / win : 0;
        fprintf(f, ",\"sent\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"delivered\":%" PRIu64
                   ",\"sent_in_window\":%" PRIu64 ",\"acked_in_window\":%" PRIu64
                   ",\"delivered_in_window\":%" PRIu64 ",\"delivered_per_s\":%.0f"
                   ",\"sent_per_s\":%.0f",
                A->sent, A->acked, A->delivered, A->sent_m, A->acked_m, A->delivered_m, dps,
                win > 0 ? A->sent_m / win : 0);
        if (o.scen == S_FANOUT) {
            fprintf(f, ",\"messages_complete\":%" PRIu64, A->last.count);
        }
        fprintf(f, ",\"dups\":%" PRIu64 ",\"gaps\":%" PRIu64 ",\"lost\":%" PRIu64
                   ",\"stale\":%" PRIu64,
                A->dups, A->gaps, A->lost, A->stale);
        if (o.scen == S_FANOUT) {
            jhist(f, "last_member_us", &A->last);
            jhist(f, "first_member_us", &A->first);
            jhist(f, "each_member_us", &A->each);
        } else {
            jhist(f, "latency_us", &A->lat);
        }
        if (o.cpu_pids[0]) {
            fprintf(f, ",\"srv_cpu_s\":%.2f,\"srv_cpu_pct\":%.1f,\"srv_cpu_us_per_msg\":%.2f",
                    cpu, win > 0 ? 100 * cpu / win : 0,
                    A->delivered_m ? cpu * 1e6 / A->delivered_m : 0);
        }
        if (o.aux_pids[0]) {
            fprintf(f, ",\"aux_cpu_s\":%.2f,\"aux_cpu_pct\":%.1f,\"aux_cpu_us_per_msg\":%.2f"
                       ",\"total_cpu_us_per_msg\":%.2f",
                    aux, win > 0 ? 100 * aux / win : 0,
                    A->delivered_m ? aux * 1e6 / A->delivered_m : 0,
                    A->delivered_m ? (cpu + aux) * 1e6 / A->delivered_m : 0);
        }
        fprintf(f, ",\"gen_cpu_pct\":%.1f", win > 0 ? A->gen_cpu_us / 1e4 / win : 0);
        /* all CPUs busy, and what neither the sampled server processes nor the
         * generator used: other load on the machine (kernel softirq work of
         * loopback is partly in here too) */
        if (win > 0) {
            double mb = mb1 - mb0;
            fprintf(f, ",\"machine_cpu_pct\":%.1f,\"other_cpu_pct\":%.1f", 100 * mb / win,
                    100 * (mb - cpu - aux - A->gen_cpu_us / 1e6) / win);
            fprintf(f, ",\"steal_cpu_pct\":%.1f", 100 * (st1 - st0) / win);
        }
    } else if (o.cpu_pids[0]) {
        fprintf(f, ",\"srv_idle_cpu_pct\":%.2f", win > 0 ? 100 * cpu / win : 0);
        fprintf(f, ",\"srv_cpu_s_login\":%.2f,\"srv_cpu_us_per_login\":%.2f"
                   ",\"srv_cpu_s_logout\":%.2f,\"srv_cpu_us_per_logout\":%.2f",
                lcpu1 - lcpu0, A->ok ? (lcpu1 - lcpu0) * 1e6 / A->ok : 0,
                ocpu1 - ocpu0, A->ok ? (ocpu1 - ocpu0) * 1e6 / A->ok : 0);
        if (o.aux_pids[0]) {
            fprintf(f, ",\"aux_cpu_us_per_login\":%.2f",
                    A->ok ? (laux1 - laux0) * 1e6 / A->ok : 0);
        }
    }
    if (o.scen == S_IDLE) jhist(f, "login_us", &A->login);
    if (o.mem_pids[0]) {
        fprintf(f, ",\"mem_before_kb\":{\"rss\":%.0f,\"pss\":%.0f}"
                   ",\"mem_after_kb\":{\"rss\":%.0f,\"pss\":%.0f}",
                rss0, pss0, rss1, pss1);
        if (o.scen == S_IDLE && A->ok) {
            fprintf(f, ",\"bytes_per_session\":{\"rss\":%.0f,\"pss\":%.0f}",
                    (rss1 - rss0) * 1024 / A->ok, (pss1 - pss0) * 1024 / A->ok);
        }
    }
    fprintf(f, ",\"closed\":%" PRIu64 ",\"refused\":%" PRIu64 ",\"logouts\":%" PRIu64
               ",\"errors\":%" PRIu64 ",\"login_timeout\":%s}\n",
            A->closed, A->refused, A->logout, A->errors, login_timed_out ? "true" : "false");
    fflush(f);

    if (o.hist_out[0]) {
        hist_t *h = (o.scen == S_FANOUT) ? &A->last : &A->lat;
        FILE *hf = fopen(o.hist_out, "w");
        if (hf) {
            char what[160];
            snprintf(what, sizeof(what), "%s %s", scen_name[o.scen], o.label);
            hist_write_curve(hf, h, what);
            fclose(hf);
        }
    }

    int bad = login_timed_out || A->ok == 0;
    return bad ? 1 : 0;
}
