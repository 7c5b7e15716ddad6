/*
 * loginfloor.c: the machine's floor for a login and its logout.
 *
 * What floor.c is for a message, this is for a login: a bare server that
 * does on the wire the least an ngx_im login needs, with the same
 * connections, and nothing else: no nginx, no module code, no timers, no
 * protocol checks beyond what it must read.  One process, one epoll loop,
 * edge triggered, one write per connection per loop pass (like the
 * module).  Per session:
 *
 *   accept4; one epoll_ctl
 *   read the WebSocket upgrade; answer 101 with a real Sec-WebSocket-Accept
 *   read the CONNECT frame (user, password)
 *   ask the user centre over a kept-alive connection: the same HTTP
 *       request the bench's nginx sends (bench/nginx.conf.in's /_im_auth),
 *       one request at a time on a connection, as nginx's upstream
 *   read its answer, the uid
 *   SUBSCRIBE im:u:<uid> on the subscriber connection, one command for
 *       the logins of the pass
 *   once subscribed: PUBLISH of the 'J' record on im:u:<uid> and LRANGE
 *       of im:inbox:<uid>, pipelined on the inbox connection, the pass's
 *       logins in one write
 *   at LRANGE's answer: CONNECT_ACK
 *   logout: read the DISCONNECT frame, send a close frame, close; the
 *       UNSUBSCRIBEs of the pass in one command
 *
 * What the module does on top (the kick's PUBLISH, the 'M' mark behind
 * the inbox read, the wait for the 'J' to come back, presence, timers,
 * logs, counters) is left out: the module's CPU per login minus this
 * one's is nginx's and the module's own, the rest the machine's.
 *
 *   loginfloor -p port -u user-centre-port -r redis-port [-c cpu] [-l]
 *
 * -l: no user centre; the uid is read from the user name (imgen's
 * benchuser<i> is uid 100000 + i), as a server that checks a signed token
 * itself would: the floor of a login without the round trip.
 *
 * imgen drives it as it drives nginx (imgen -m ws -s idle -p port ...),
 * with the bench's user centre (bench/usercentre-nginx.conf.in) and
 * Redis.  It runs until SIGTERM or SIGINT and then prints one JSON line
 * of counts to stdout.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define IN_MAX    1024            /* a client's input: handshake, frames */
#define OUT_MAX   512             /* a client's output: 101, ack, close */
#define UC_IN     4096            /* one answer of the user centre */
#define RB_MAX    (1 << 20)       /* a Redis connection's buffers */
#define FIFO_MAX  (1 << 18)       /* Redis replies awaited */

enum { T_LISTEN = 1, T_CLIENT, T_UC, T_REDIS };
enum { S_HS, S_CONNECT, S_AUTH, S_SUB, S_INBOX, S_LIVE };

/* a session by descriptor and generation: its descriptor can be another
 * session's by the time an answer comes */
typedef struct {
    int       fd;
    uint32_t  gen;
    uint32_t  uid;
} ref_t;

typedef struct client_s {
    int               type;
    int               fd;
    uint32_t          gen;
    int               state;
    int               dirty;
    int               subscribed;
    uint32_t          uid;
    struct client_s  *next_dirty;
    size_t            in_len, out_len;
    u_char            in[IN_MAX];
    u_char            out[OUT_MAX];
} client_t;

typedef struct uc_s {
    int           type;
    int           fd;
    int           busy;
    ref_t         who;
    struct uc_s  *next_free;
    size_t        in_len, out_len;
    u_char        in[UC_IN];
    u_char        out[1024];
} uc_t;

typedef struct {
    int       type;
    int       fd;
    size_t    in_len, out_len;
    ref_t    *fifo;               /* whose reply comes next */
    uint8_t  *fifo_kind;
    size_t    fifo_head, fifo_tail;
    u_char   *in;
    u_char   *out;
} redis_t;

enum { R_SUB, R_PUBLISH, R_LRANGE };

static struct {
    int   port, uc_port, redis_port, cpu, local;
} o = { 0, 0, 6379, -1, 0 };

static int         ep;
static int         listen_type = T_LISTEN;
static client_t  **clients;       /* by descriptor */
static int         maxfd;
static client_t   *dirty;
static uc_t       *uc_free;
static int         uc_count;
static redis_t     sub, inbox;
static int         sub_queued, unsub_queued;
static u_char     *sub_args, *unsub_args;
static size_t      sub_len, unsub_len;
static volatile sig_atomic_t  stop;

static struct {
    uint64_t  accepted, logins, refused, logouts, closed_early, passes;
    uint64_t  uc_opened, sub_writes, inbox_writes, errors;
} st;


static void
die(const char *m)
{
    fprintf(stderr, "loginfloor: %s: %s\n", m, strerror(errno));
    exit(1);
}


static void
on_signal(int sig)
{
    (void) sig;
    stop = 1;
}


/* ------------------------------------------------------------------ */
/* plumbing */

static int
tcp_connect(int port)
{
    int                 fd, one = 1;
    struct sockaddr_in  sa = { .sin_family = AF_INET };

    sa.sin_port = htons((uint16_t) port);
    sa.sin_addr.s_addr = htonl(0x7f000001);

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        die("socket");
    }

    /* Redis and the user centre get one small write at a time while an
     * earlier one can still be unacknowledged: no Nagle delay (once per
     * connection, as nginx's upstream and hiredis) */
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0
        && errno != EINPROGRESS)
    {
        die("connect");
    }

    return fd;
}


static void
watch(int fd, void *p, uint32_t events)
{
    struct epoll_event  ev;

    ev.events = events;
    ev.data.ptr = p;

    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        die("epoll_ctl");
    }
}


/* writes what it can; 0 when the socket refused for good */
static int
send_some(int fd, u_char *buf, size_t *len)
{
    size_t   off = 0;
    ssize_t  n;

    while (off < *len) {
        n = send(fd, buf + off, *len - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                break;
            }
            return 0;
        }
        off += (size_t) n;
    }

    memmove(buf, buf + off, *len - off);
    *len -= off;

    return 1;
}


/* ------------------------------------------------------------------ */
/* clients */

static void
client_output(client_t *c, const void *p, size_t n)
{
    if (c->out_len + n > OUT_MAX) {
        st.errors++;
        return;
    }

    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;

    if (!c->dirty) {
        c->dirty = 1;
        c->next_dirty = dirty;
        dirty = c;
    }
}


static void
unsubscribe(uint32_t uid)
{
    int   n;
    char  ch[32];

    n = snprintf(ch, sizeof(ch), "im:u:%u", uid);
    unsub_len += (size_t) sprintf((char *) unsub_args + unsub_len,
                                  "$%d\r\n%s\r\n", n, ch);
    unsub_queued++;
}


static void
client_close(client_t *c)
{
    /* a subscription not yet confirmed is undone at its confirmation */
    if (c->subscribed && c->state != S_SUB) {
        unsubscribe(c->uid);
    }

    /* the descriptor's next session must not take this one's answers */
    c->gen++;
    c->state = S_HS;
    c->subscribed = 0;
    c->in_len = 0;
    c->out_len = 0;

    close(c->fd);
    c->fd = -1;
}


static void
handshake(client_t *c)
{
    u_char        *e, *k, *ke, key[96], sha[SHA_DIGEST_LENGTH];
    char           acc[32], resp[160];
    size_t         kl;
    int            n, i, j;
    static const char  b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char  guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

    e = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (e == NULL) {
        return;
    }

    k = memmem(c->in, (size_t) (e - c->in), "Sec-WebSocket-Key:", 18);
    if (k == NULL) {
        st.errors++;
        client_close(c);
        return;
    }

    k += 18;
    while (*k == ' ') {
        k++;
    }

    for (ke = k; *ke != '\r'; ke++) { /* void */ }

    kl = (size_t) (ke - k);
    if (kl + sizeof(guid) - 1 > sizeof(key)) {
        st.errors++;
        client_close(c);
        return;
    }

    memcpy(key, k, kl);
    memcpy(key + kl, guid, sizeof(guid) - 1);
    SHA1(key, kl + sizeof(guid) - 1, sha);

    for (i = 0, j = 0; i < 18; i += 3) {
        acc[j++] = b64[sha[i] >> 2];
        acc[j++] = b64[((sha[i] & 3) << 4) | (sha[i + 1] >> 4)];
        acc[j++] = b64[((sha[i + 1] & 15) << 2) | (sha[i + 2] >> 6)];
        acc[j++] = b64[sha[i + 2] & 63];
    }
    acc[j++] = b64[sha[18] >> 2];
    acc[j++] = b64[((sha[18] & 3) << 4) | (sha[19] >> 4)];
    acc[j++] = b64[(sha[19] & 15) << 2];
    acc[j++] = '=';
    acc[j] = '\0';

    n = snprintf(resp, sizeof(resp),
                 "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\nConnection: upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n\r\n", acc);
    client_output(c, resp, (size_t) n);

    e += 4;
    c->in_len -= (size_t) (e - c->in);
    memmove(c->in, e, c->in_len);
    c->state = S_CONNECT;
}


static void subscribe(client_t *c);


static uint32_t
digits(const u_char *p, size_t n)
{
    uint32_t  v = 0;

    while (n--) {
        v = v * 10 + (uint32_t) (*p++ - '0');
    }

    return v;
}


static void
ask(client_t *c, const u_char *user, size_t ul, const u_char *pass,
    size_t pl)
{
    uc_t    *u;
    size_t   n;

    if (o.local) {
        if (ul > 9 && ul < 19 && memcmp(user, "benchuser", 9) == 0) {
            c->uid = 100000 + (uint32_t) digits(user + 9, ul - 9);
            subscribe(c);
            return;
        }
        st.errors++;
        client_close(c);
        return;
    }

    u = uc_free;

    if (u) {
        uc_free = u->next_free;

    } else {
        /* as nginx: a connection of its own when none is idle */
        u = calloc(1, sizeof(uc_t));
        if (u == NULL) {
            die("calloc");
        }
        u->type = T_UC;
        u->fd = tcp_connect(o.uc_port);
        watch(u->fd, u, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
        uc_count++;
        st.uc_opened++;
    }

    u->busy = 1;
    u->who.fd = c->fd;
    u->who.gen = c->gen;

    /* byte for byte what bench/nginx.conf.in's /_im_auth sends */
    n = (size_t) snprintf((char *) u->out, sizeof(u->out),
            "POST /auth?username=%.*s&password=%.*s HTTP/1.1\r\n"
            "Accept: application/json\r\n"
            "Content-Type: application/x-www-form-urlencoded;charset=utf-8"
            "\r\n"
            "X-IM-User: %.*s\r\n"
            "X-IM-Pass: %.*s\r\n"
            "Host: im_usercentre\r\n"
            "Content-Length: %zu\r\n"
            "\r\n"
            "username=%.*s&password=%.*s",
            (int) ul, user, (int) pl, pass,
            (int) ul, user, (int) pl, pass,
            ul + pl + sizeof("username=&password=") - 1,
            (int) ul, user, (int) pl, pass);
    u->out_len = n;

    /* at once, as nginx's upstream writes its request */
    if (!send_some(u->fd, u->out, &u->out_len)) {
        die("send to the user centre");
    }

    c->state = S_AUTH;
}


static void
subscribe(client_t *c)
{
    int    n;
    char   ch[32];
    ref_t *r;

    n = snprintf(ch, sizeof(ch), "im:u:%u", c->uid);
    sub_len += (size_t) sprintf((char *) sub_args + sub_len,
                                "$%d\r\n%s\r\n", n, ch);
    sub_queued++;

    sub.fifo_kind[sub.fifo_tail % FIFO_MAX] = R_SUB;
    r = &sub.fifo[sub.fifo_tail++ % FIFO_MAX];
    r->fd = c->fd;
    r->gen = c->gen;
    r->uid = c->uid;

    c->state = S_SUB;
    c->subscribed = 1;
}


/* one frame of the client: 0 when more bytes are needed, -1 on a
 * violation, else the bytes it took; *op and the unmasked payload */
static ssize_t
ws_frame(u_char *p, size_t n, int *op, u_char **pl, size_t *len)
{
    size_t  h = 2, l, i;
    u_char *m;

    if (n < 2) {
        return 0;
    }

    if (!(p[1] & 0x80)) {
        return -1;                         /* a client masks */
    }

    l = p[1] & 0x7f;
    if (l == 126) {
        if (n < 4) {
            return 0;
        }
        l = ((size_t) p[2] << 8) | p[3];
        h = 4;

    } else if (l == 127) {
        return -1;                         /* never in a login */
    }

    if (n < h + 4 + l) {
        return h + 4 + l > IN_MAX ? -1 : 0;
    }

    m = p + h;
    for (i = 0; i < l; i++) {
        p[h + 4 + i] ^= m[i & 3];
    }

    *op = p[0] & 0x0f;
    *pl = p + h + 4;
    *len = l;

    return (ssize_t) (h + 4 + l);
}


static void
client_frames(client_t *c)
{
    int       op;
    u_char   *pl, *p;
    size_t    len, ul, pwl, off = 0;
    ssize_t   used;
    static const u_char  bye[] = { 0x88, 0x02, 0x03, 0xe8 };  /* 1000 */

    while (c->fd >= 0) {
        used = ws_frame(c->in + off, c->in_len - off, &op, &pl, &len);
        if (used == 0) {
            break;
        }

        if (used < 0 || op == 8) {
            client_close(c);
            return;
        }

        off += (size_t) used;

        if (op != 2 || len == 0) {
            continue;
        }

        if (pl[0] == 1 && c->state == S_CONNECT) {          /* CONNECT */
            if (len < 5) {
                st.errors++;
                client_close(c);
                return;
            }
            ul = ((size_t) pl[1] << 8) | pl[2];
            if (3 + ul + 2 > len) {
                st.errors++;
                client_close(c);
                return;
            }
            p = pl + 3 + ul;
            pwl = ((size_t) p[0] << 8) | p[1];
            if (3 + ul + 2 + pwl > len) {
                st.errors++;
                client_close(c);
                return;
            }
            ask(c, pl + 3, ul, p + 2, pwl);
            continue;
        }

        if (pl[0] == 9) {                                   /* DISCONNECT */
            size_t  bl = sizeof(bye);

            st.logouts++;
            (void) send_some(c->fd, (u_char *) bye, &bl);
            client_close(c);
            return;
        }
    }

    if (c->fd >= 0) {
        c->in_len -= off;
        memmove(c->in, c->in + off, c->in_len);
    }
}


static void
client_read(client_t *c)
{
    ssize_t  n;
    size_t   room;

    for ( ;; ) {
        room = IN_MAX - c->in_len;
        if (room == 0) {
            st.errors++;
            client_close(c);
            return;
        }

        n = recv(c->fd, c->in + c->in_len, room, 0);

        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            if (c->state != S_LIVE) {
                st.closed_early++;
            }
            client_close(c);
            return;
        }

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }

        c->in_len += (size_t) n;

        if (c->state == S_HS) {
            handshake(c);
        }

        if (c->fd >= 0 && c->state != S_HS) {
            client_frames(c);
        }

        if (c->fd < 0 || (size_t) n < room) {
            return;                        /* a short read: drained */
        }
    }
}


static void
accept_all(int ls)
{
    int        fd;
    client_t  *c;

    /* all that wait, as nginx with multi_accept on */
    for ( ;; ) {
        fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            return;
        }

        if (fd >= maxfd) {
            close(fd);
            st.errors++;
            continue;
        }

        c = clients[fd];
        if (c == NULL) {
            c = calloc(1, sizeof(client_t));
            if (c == NULL) {
                die("calloc");
            }
            c->type = T_CLIENT;
            clients[fd] = c;
        }

        c->fd = fd;
        c->state = S_HS;
        st.accepted++;

        /* no TCP_NODELAY: a login's writes each wait for the peer's
         * answer, so Nagle holds none of them back */
        watch(fd, c, EPOLLIN | EPOLLRDHUP | EPOLLET);
    }
}


/* ------------------------------------------------------------------ */
/* the user centre */

static void
uc_answer(uc_t *u, u_char *body, size_t len)
{
    u_char    *p;
    client_t  *c;
    uint32_t   uid = 0;

    c = clients[u->who.fd];

    u->busy = 0;
    u->next_free = uc_free;
    uc_free = u;

    if (c == NULL || c->gen != u->who.gen || c->state != S_AUTH) {
        return;                            /* the client went */
    }

    p = memmem(body, len, "\"uid\":", 6);
    if (p && memmem(body, len, "\"pass\"", 6)) {
        uid = (uint32_t) strtoul((char *) p + 6, NULL, 10);
    }

    if (uid == 0) {
        static const u_char  refused[] = { 0x82, 0x02, 0x02, 0x02 };

        st.refused++;
        client_output(c, refused, sizeof(refused));
        c->state = S_LIVE;
        return;
    }

    c->uid = uid;
    subscribe(c);
}


static void
uc_read(uc_t *u)
{
    ssize_t  n;
    u_char  *e, *cl;
    size_t   hl, bl, room;

    if (u->out_len && !send_some(u->fd, u->out, &u->out_len)) {
        die("send to the user centre");
    }

    for ( ;; ) {
        room = UC_IN - u->in_len;
        n = recv(u->fd, u->in + u->in_len, room, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            /* nginx would connect again; the bench's user centre keeps
             * its connections (keepalive_requests 1000000) */
            errno = n == 0 ? ECONNRESET : errno;
            die("the user centre closed");
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        u->in_len += (size_t) n;

        for ( ;; ) {
            e = memmem(u->in, u->in_len, "\r\n\r\n", 4);
            if (e == NULL) {
                break;
            }
            hl = (size_t) (e + 4 - u->in);
            cl = memmem(u->in, hl, "Content-Length: ", 16);
            bl = cl ? strtoul((char *) cl + 16, NULL, 10) : 0;
            if (u->in_len < hl + bl) {
                break;
            }
            if (u->busy) {
                uc_answer(u, u->in + hl, bl);
            }
            u->in_len -= hl + bl;
            memmove(u->in, u->in + hl + bl, u->in_len);
        }

        if ((size_t) n < room) {
            return;                        /* a short read: drained */
        }
    }
}


/* ------------------------------------------------------------------ */
/* Redis */

/* past one reply, or NULL when it is not all in */
static u_char *
resp_skip(u_char *p, u_char *end)
{
    u_char  *e;
    long     n, i;

    if (p >= end) {
        return NULL;
    }

    e = memchr(p, '\n', (size_t) (end - p));
    if (e == NULL) {
        return NULL;
    }

    switch (*p) {

    case '+':
    case '-':
    case ':':
        return e + 1;

    case '$':
        n = strtol((char *) p + 1, NULL, 10);
        if (n < 0) {
            return e + 1;
        }
        return (end - (e + 1) >= n + 2) ? e + 1 + n + 2 : NULL;

    case '*':
        n = strtol((char *) p + 1, NULL, 10);
        p = e + 1;
        for (i = 0; i < n && p; i++) {
            p = resp_skip(p, end);
        }
        return p;
    }

    errno = EPROTO;
    die("Redis reply");
    return NULL;
}


static void
redis_open(redis_t *r)
{
    r->type = T_REDIS;
    r->fd = tcp_connect(o.redis_port);
    r->in = malloc(RB_MAX);
    r->out = malloc(RB_MAX);
    r->fifo = calloc(FIFO_MAX, sizeof(ref_t));
    r->fifo_kind = calloc(FIFO_MAX, 1);
    if (!r->in || !r->out || !r->fifo || !r->fifo_kind) {
        die("malloc");
    }
    watch(r->fd, r, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
}


static void
redis_append(redis_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
redis_append(redis_t *r, const char *fmt, ...)
{
    va_list  ap;
    int      n;

    va_start(ap, fmt);
    n = vsnprintf((char *) r->out + r->out_len, RB_MAX - r->out_len, fmt, ap);
    va_end(ap);

    if (n < 0 || (size_t) n >= RB_MAX - r->out_len) {
        errno = ENOBUFS;
        die("Redis output");
    }

    r->out_len += (size_t) n;
}


/* the 'J' record: 'J' OriginLen:8 Origin Flags:8 Nonce:64, as
 * src/ngx_im_traffic.h lays it out, then PUBLISH and LRANGE */
static void
announce(client_t *c)
{
    static const char  origin[] = "floor:0";
    u_char             j[2 + sizeof(origin) - 1 + 1 + 8];
    size_t             ol = sizeof(origin) - 1;
    uint64_t           nonce;
    int                i;
    char               ch[32], key[32];
    int                chl, kl;
    ref_t             *f;

    j[0] = 'J';
    j[1] = (u_char) ol;
    memcpy(j + 2, origin, ol);
    j[2 + ol] = 0;
    nonce = ((uint64_t) c->fd << 32) | c->gen;
    for (i = 0; i < 8; i++) {
        j[3 + ol + i] = (u_char) (nonce >> (56 - 8 * i));
    }

    chl = snprintf(ch, sizeof(ch), "im:u:%u", c->uid);
    kl = snprintf(key, sizeof(key), "im:inbox:%u", c->uid);

    redis_append(&inbox, "*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%zu\r\n",
                 chl, ch, sizeof(j));
    memcpy(inbox.out + inbox.out_len, j, sizeof(j));
    inbox.out_len += sizeof(j);
    redis_append(&inbox, "\r\n*4\r\n$6\r\nLRANGE\r\n$%d\r\n%s\r\n"
                 "$1\r\n0\r\n$2\r\n-1\r\n", kl, key);

    f = &inbox.fifo[inbox.fifo_tail % FIFO_MAX];
    inbox.fifo_kind[inbox.fifo_tail++ % FIFO_MAX] = R_PUBLISH;
    f->fd = -1;
    f = &inbox.fifo[inbox.fifo_tail % FIFO_MAX];
    inbox.fifo_kind[inbox.fifo_tail++ % FIFO_MAX] = R_LRANGE;
    f->fd = c->fd;
    f->gen = c->gen;
    f->uid = c->uid;

    c->state = S_INBOX;
}


static int
reply_is(u_char *p, const char *word)
{
    size_t  l = strlen(word);
    char    h[32];
    int     n;

    /* "*3\r\n$<len>\r\n<word>" */
    n = snprintf(h, sizeof(h), "*3\r\n$%zu\r\n", l);
    return memcmp(p, h, (size_t) n) == 0
           && memcmp(p + n, word, l) == 0;
}


static void
redis_reply(redis_t *r, u_char *p)
{
    ref_t     *f;
    client_t  *c;
    int        kind;

    if (r == &sub) {
        if (reply_is(p, "message")) {
            return;                        /* its own 'J', come back */
        }
        if (!reply_is(p, "subscribe")) {
            return;                        /* an unsubscribe's */
        }
    }

    if (r->fifo_head == r->fifo_tail) {
        errno = EPROTO;
        die("a Redis reply nobody waits for");
    }

    kind = r->fifo_kind[r->fifo_head % FIFO_MAX];
    f = &r->fifo[r->fifo_head++ % FIFO_MAX];

    if (f->fd < 0) {
        return;
    }

    c = clients[f->fd];
    if (c == NULL || c->gen != f->gen) {
        if (r == &sub) {
            unsubscribe(f->uid);           /* the session went meanwhile */
        }
        return;
    }

    if (r == &sub) {
        announce(c);
        return;
    }

    if (kind == R_LRANGE) {
        static const u_char  ack[] = { 0x82, 0x02, 0x02, 0x00 };

        /* the inbox is empty in this bench: nothing to push behind it */
        client_output(c, ack, sizeof(ack));
        c->state = S_LIVE;
        st.logins++;
    }
}


static void
redis_read(redis_t *r)
{
    ssize_t  n;
    size_t   room;
    u_char  *p, *q, *end;

    for ( ;; ) {
        room = RB_MAX - r->in_len;
        n = recv(r->fd, r->in + r->in_len, room, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            die("Redis closed");
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        r->in_len += (size_t) n;

        p = r->in;
        end = r->in + r->in_len;
        while ((q = resp_skip(p, end)) != NULL) {
            redis_reply(r, p);
            p = q;
        }
        r->in_len = (size_t) (end - p);
        memmove(r->in, p, r->in_len);

        if ((size_t) n < room) {
            return;                        /* a short read: drained */
        }
    }
}


static void
redis_flush(redis_t *r, uint64_t *writes)
{
    if (r->out_len == 0) {
        return;
    }

    (*writes)++;

    if (!send_some(r->fd, r->out, &r->out_len)) {
        die("send to Redis");
    }

    /* what the socket did not take leaves at EPOLLOUT */
}


/* the end of a pass: the (un)subscriptions of the pass, the inbox
 * connection's commands, then the clients' output */
static void
flush_pass(void)
{
    client_t  *c;

    if (sub_queued) {
        redis_append(&sub, "*%d\r\n$9\r\nSUBSCRIBE\r\n", sub_queued + 1);
        memcpy(sub.out + sub.out_len, sub_args, sub_len);
        sub.out_len += sub_len;
        sub_queued = 0;
        sub_len = 0;
    }

    if (unsub_queued) {
        redis_append(&sub, "*%d\r\n$11\r\nUNSUBSCRIBE\r\n", unsub_queued + 1);
        memcpy(sub.out + sub.out_len, unsub_args, unsub_len);
        sub.out_len += unsub_len;
        unsub_queued = 0;
        unsub_len = 0;
    }

    redis_flush(&sub, &st.sub_writes);
    redis_flush(&inbox, &st.inbox_writes);

    while (dirty) {
        c = dirty;
        dirty = c->next_dirty;
        c->dirty = 0;

        if (c->fd >= 0 && c->out_len
            && !send_some(c->fd, c->out, &c->out_len))
        {
            client_close(c);
        }

        /* a login's few bytes always fit a new socket's buffer: no
         * EPOLLOUT is watched for them */
        if (c->fd >= 0 && c->out_len) {
            st.errors++;
            c->out_len = 0;
        }
    }
}


/* ------------------------------------------------------------------ */

static int
listen_on(int port)
{
    int                 fd, one = 1;
    struct sockaddr_in  sa = { .sin_family = AF_INET };

    sa.sin_port = htons((uint16_t) port);
    sa.sin_addr.s_addr = htonl(0x7f000001);

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        die("socket");
    }

    (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));

    if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
        die("bind");
    }

    /* as bench/nginx.conf.in's listen */
    if (listen(fd, 8192) < 0) {
        die("listen");
    }

    return fd;
}


static void
usage(void)
{
    fprintf(stderr, "usage: loginfloor -p port -u user-centre-port "
            "-r redis-port [-c cpu] [-l]\n");
    exit(2);
}


int
main(int argc, char **argv)
{
    int                 ls, n, i, opt, *tp;
    struct rlimit       rl;
    struct epoll_event  evs[512];
    struct sigaction    sa;

    while ((opt = getopt(argc, argv, "p:u:r:c:l")) != -1) {
        switch (opt) {
        case 'p': o.port = atoi(optarg); break;
        case 'u': o.uc_port = atoi(optarg); break;
        case 'r': o.redis_port = atoi(optarg); break;
        case 'c': o.cpu = atoi(optarg); break;
        case 'l': o.local = 1; break;
        default: usage();
        }
    }

    if (o.port == 0 || (o.uc_port == 0 && !o.local)) {
        usage();
    }

    if (o.cpu >= 0) {
        cpu_set_t  set;

        CPU_ZERO(&set);
        CPU_SET(o.cpu, &set);
        (void) sched_setaffinity(0, sizeof(set), &set);
    }

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        (void) setrlimit(RLIMIT_NOFILE, &rl);
    }
    maxfd = (int) rl.rlim_cur;
    clients = calloc((size_t) maxfd, sizeof(client_t *));
    sub_args = malloc(RB_MAX / 2);
    unsub_args = malloc(RB_MAX / 2);
    if (clients == NULL || sub_args == NULL || unsub_args == NULL) {
        die("calloc");
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    ep = epoll_create1(0);
    if (ep < 0) {
        die("epoll_create1");
    }

    redis_open(&sub);
    redis_open(&inbox);

    ls = listen_on(o.port);
    watch(ls, &listen_type, EPOLLIN);

    fprintf(stderr, "loginfloor: listening on 127.0.0.1:%d\n", o.port);

    while (!stop) {
        n = epoll_wait(ep, evs, 512, -1);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("epoll_wait");
        }

        st.passes++;

        for (i = 0; i < n; i++) {
            tp = evs[i].data.ptr;

            switch (*tp) {

            case T_LISTEN:
                accept_all(ls);
                break;

            case T_CLIENT: {
                client_t  *c = (client_t *) tp;

                if (c->fd < 0) {
                    break;
                }
                if ((evs[i].events & EPOLLOUT) && c->out_len
                    && !send_some(c->fd, c->out, &c->out_len))
                {
                    client_close(c);
                    break;
                }
                if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP
                                     | EPOLLERR))
                {
                    client_read(c);
                }
                break;
            }

            case T_UC:
                uc_read((uc_t *) tp);
                break;

            case T_REDIS: {
                redis_t  *r = (redis_t *) tp;

                if ((evs[i].events & EPOLLOUT) && r->out_len
                    && !send_some(r->fd, r->out, &r->out_len))
                {
                    die("send to Redis");
                }
                if (evs[i].events & EPOLLIN) {
                    redis_read(r);
                }
                break;
            }
            }
        }

        flush_pass();
    }

    printf("{\"accepted\":%lu,\"logins\":%lu,\"refused\":%lu,"
           "\"logouts\":%lu,\"closed_before_login\":%lu,\"passes\":%lu,"
           "\"uc_connections\":%d,\"sub_writes\":%lu,\"inbox_writes\":%lu,"
           "\"errors\":%lu}\n",
           st.accepted, st.logins, st.refused, st.logouts, st.closed_early,
           st.passes, uc_count, st.sub_writes, st.inbox_writes, st.errors);

    return 0;
}
