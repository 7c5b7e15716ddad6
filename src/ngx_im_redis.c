/*
 * ngx_im_redis.c: the worker's Redis connections, their commands and
 * replies, and pub/sub.
 *
 * Owns the worker's connections (inbox, group, subscriber, events: each an
 * ngx_im_redis_conn_t, which connects, logs in, watches and reconnects),
 * the RESP formatting of commands straight into a connection's output,
 * the callback ring that pairs replies with commands, and the subscriber
 * connection's traffic: (un)subscriptions of a pass in one command, each
 * message handed to the router; with im_redis_sentinel, the restart of
 * the connections when the master moves; with im_redis_wait, the WAIT
 * that ends a pass's appends and the acknowledgements held until it
 * answers.  Nothing here knows about messages or sessions.
 */

#include "ngx_im_redis.h"
#include "ngx_im_redis_conn.h"
#include "ngx_im_redis_sentinel.h"


typedef struct {
    ngx_im_redis_cb_pt    cb;
    void                 *data;
    uint64_t              sent;     /* microseconds, for the latency */
} ngx_im_redis_req_t;


/* the callbacks of the commands sent on a connection, oldest at first */
typedef struct {
    ngx_im_redis_req_t   *ring;
    ngx_uint_t            first;
    ngx_uint_t            n;
    ngx_uint_t            size;     /* a power of 2, or 0 */
} ngx_im_redis_queue_t;


static void ngx_im_redis_ready_handler(ngx_im_redis_conn_t *rc);
static ngx_int_t ngx_im_redis_reply_handler(ngx_im_redis_conn_t *rc,
    redisReply *reply);
static void ngx_im_redis_down_handler(ngx_im_redis_conn_t *rc);
static ngx_int_t ngx_im_redis_ping(ngx_im_redis_conn_t *rc);
static void ngx_im_redis_flush_handler(ngx_im_redis_conn_t *rc);
static ngx_uint_t ngx_im_redis_used(ngx_uint_t i);
static void ngx_im_redis_master(void);
static void ngx_im_redis_waited(redisReply *reply, void *data);
static void ngx_im_redis_wait_release(redisReply *reply);
static ngx_int_t ngx_im_redis_answer(ngx_im_redis_conn_t *rc,
    redisReply *reply);
static ngx_int_t ngx_im_redis_grow(ngx_im_redis_queue_t *q);
static void ngx_im_redis_fail_all(ngx_im_redis_queue_t *q);
static void ngx_im_redis_sub_reply(ngx_im_redis_conn_t *rc,
    redisReply *reply);
static void ngx_im_redis_batch_reset(void);
static void ngx_im_redis_batch_handler(ngx_event_t *ev);
static u_char *ngx_im_redis_num(u_char *p, u_char lead, size_t n);


static const char  *ngx_im_redis_names[NGX_IM_REDIS_N] = {
    "inbox", "group", "sub", "events"
};

static ngx_im_redis_conn_t       ngx_im_redis_conns[NGX_IM_REDIS_N];
static ngx_im_redis_queue_t      ngx_im_redis_queues[NGX_IM_REDIS_N];
static ngx_im_redis_server_t     ngx_im_redis_server;
static ngx_im_redis_handlers_t  *ngx_im_redis_handlers;
/* nginx's debug log reads a descriptor out of every timer's data */
static ngx_connection_t          ngx_im_redis_dummy;

static ngx_im_redis_conn_handlers_t  ngx_im_redis_conn_handlers = {
    ngx_im_redis_ready_handler,
    ngx_im_redis_reply_handler,
    ngx_im_redis_down_handler,
    ngx_im_redis_ping,
    ngx_im_redis_flush_handler
};


/*
 * im_redis_wait: the appends an acknowledgement rests on mark the pass
 * (ngx_im_redis_wait_mark), and the inbox connection's output of the pass
 * then ends with one WAIT, which counts every write of the connection so
 * far.  An append's reply comes before the WAIT behind it, so the
 * acknowledgements held at a WAIT's reply (ngx_im_redis_after_wait) are
 * exactly those that WAIT covers.
 */

static ngx_uint_t                ngx_im_redis_wait_marked;
static ngx_uint_t                ngx_im_redis_waits;     /* WAITs sent */
static ngx_im_redis_queue_t      ngx_im_redis_held;
static ngx_uint_t                ngx_im_redis_wait_short; /* refusing */
static ngx_uint_t                ngx_im_redis_wait_refused;


/*
 * The channels to (un)subscribe in this event loop pass, as RESP bulk
 * strings after room for the command's header: one SUBSCRIBE with many
 * channels at the end of the pass, not a command and a write per login
 * (see ngx_im_redis_subscribe).
 */

#define NGX_IM_REDIS_BATCH_MAX   1024    /* channels per command */
#define NGX_IM_REDIS_BATCH_HDR   48      /* "*1025\r\n$11\r\nUNSUBSCRIBE\r\n" */

typedef struct {
    const char          *cmd;
    u_char              *buf;
    size_t               len;       /* from buf + NGX_IM_REDIS_BATCH_HDR */
    size_t               size;
    ngx_uint_t           n;
} ngx_im_redis_batch_t;

static ngx_im_redis_batch_t      ngx_im_redis_batches[2] = {
    { "SUBSCRIBE", NULL, 0, 0, 0 },
    { "UNSUBSCRIBE", NULL, 0, 0, 0 }
};
static ngx_event_t               ngx_im_redis_batch_ev;


ngx_int_t
ngx_im_redis_init(ngx_cycle_t *cycle, ngx_im_redis_handlers_t *handlers)
{
    ngx_int_t               db;
    ngx_uint_t              i;
    ngx_im_conf_t          *imcf;
    ngx_im_redis_conn_t    *rc;
    ngx_im_redis_server_t  *s;

    imcf = ngx_im_get_conf();

    ngx_im_redis_handlers = handlers;

    s = &ngx_im_redis_server;
    s->addrs = imcf->redis_addrs;
    s->naddrs = imcf->redis_naddrs;
    s->user = imcf->redis_user;
    s->password = imcf->redis_password;
    s->timeout = imcf->redis_timeout;
#if (NGX_SSL)
    s->ssl = imcf->redis_ssl_ctx;
#endif
    s->ssl_name = imcf->redis_ssl_name;
    s->ssl_verify = imcf->redis_ssl_verify;
    s->master = 0;

    ngx_im_redis_wait_marked = 0;
    ngx_im_redis_waits = 0;
    ngx_im_redis_wait_short = 0;

    if (imcf->sentinels
        && ngx_im_redis_sentinel_init(cycle, s, ngx_im_redis_master)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_IM_REDIS_N; i++) {
        rc = &ngx_im_redis_conns[i];

        /* the subscriber connection has no database */
        db = (i == NGX_IM_REDIS_GROUP) ? imcf->group_db
             : (i == NGX_IM_REDIS_SUB) ? 0 : imcf->redis_db;

        ngx_im_redis_conn_init(rc, s, db, ngx_im_redis_names[i],
                               &ngx_im_redis_conn_handlers, NULL);
        rc->index = i;

        if (ngx_im_redis_used(i)) {
            /* with Sentinel and no master known yet: away until it is */
            ngx_im_redis_conn_connect(rc);
        }
    }

    ngx_im_redis_dummy.fd = (ngx_socket_t) -1;
    ngx_im_redis_batch_ev.data = &ngx_im_redis_dummy;
    ngx_im_redis_batch_ev.handler = ngx_im_redis_batch_handler;
    ngx_im_redis_batch_ev.log = cycle->log;
    ngx_im_redis_batch_reset();

    return NGX_OK;
}


void
ngx_im_redis_exit(void)
{
    ngx_uint_t  i;

    if (ngx_im_redis_batch_ev.posted) {
        ngx_delete_posted_event(&ngx_im_redis_batch_ev);
    }

    if (ngx_im_get_conf()->sentinels) {
        ngx_im_redis_sentinel_exit();
    }

    for (i = 0; i < NGX_IM_REDIS_N; i++) {
        ngx_im_redis_conn_exit(&ngx_im_redis_conns[i]);
        ngx_im_redis_fail_all(&ngx_im_redis_queues[i]);
    }

    ngx_im_redis_wait_release(NULL);
}


static ngx_uint_t
ngx_im_redis_used(ngx_uint_t i)
{
    ngx_im_conf_t  *imcf;

    imcf = ngx_im_get_conf();

    if (i == NGX_IM_REDIS_GROUP && imcf->group_db == imcf->redis_db) {
        /* one connection serves both */
        return 0;
    }

    if (i == NGX_IM_REDIS_EVENTS && !imcf->redis_events) {
        return 0;
    }

    return 1;
}


/*
 * A sentinel named a new master (or the first): every connection goes
 * there now.  What was asked of the old one fails as in a lost
 * connection, and the connections' ready handlers resubscribe and read
 * the inboxes again as after a Redis restart.
 */

static void
ngx_im_redis_master(void)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_IM_REDIS_N; i++) {
        if (ngx_im_redis_used(i)) {
            ngx_im_redis_conn_restart(&ngx_im_redis_conns[i]);
        }
    }
}


static ngx_im_redis_conn_t *
ngx_im_redis_conn(ngx_uint_t which)
{
    ngx_im_conf_t  *imcf;

    if (which == NGX_IM_REDIS_GROUP) {
        imcf = ngx_im_get_conf();

        if (imcf->group_db == imcf->redis_db) {
            which = NGX_IM_REDIS_INBOX;
        }
    }

    return &ngx_im_redis_conns[which];
}


ngx_uint_t
ngx_im_redis_ready(ngx_uint_t which)
{
    return ngx_im_redis_conn(which)->state == NGX_IM_REDIS_READY;
}


ngx_uint_t
ngx_im_redis_away(ngx_uint_t which)
{
    ngx_im_redis_conn_t  *rc;

    rc = ngx_im_redis_conn(which);

    return rc->state != NGX_IM_REDIS_READY && rc->failed;
}


static void
ngx_im_redis_ready_handler(ngx_im_redis_conn_t *rc)
{
    if (rc->index == NGX_IM_REDIS_SUB) {
        if (ngx_im_redis_handlers->sub_connected) {
            ngx_im_redis_handlers->sub_connected();
        }

    } else if (rc->index == NGX_IM_REDIS_INBOX) {
        if (ngx_im_redis_handlers->inbox_connected) {
            ngx_im_redis_handlers->inbox_connected();
        }
    }
}


static ngx_int_t
ngx_im_redis_reply_handler(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    if (rc->index == NGX_IM_REDIS_SUB) {
        ngx_im_redis_sub_reply(rc, reply);
        return NGX_OK;
    }

    return ngx_im_redis_answer(rc, reply);
}


static void
ngx_im_redis_down_handler(ngx_im_redis_conn_t *rc)
{
    if (rc->index == NGX_IM_REDIS_SUB) {
        /* the router subscribes everything again when it is back */
        ngx_im_redis_batch_reset();
    }

    ngx_im_redis_fail_all(&ngx_im_redis_queues[rc->index]);

    if (rc->index == NGX_IM_REDIS_INBOX) {
        /* the WAITs failed above with the rest; nothing is held now */
        ngx_im_redis_waits = 0;
        ngx_im_redis_wait_marked = 0;
        ngx_im_redis_wait_release(NULL);
    }

    if (ngx_im_get_conf()->sentinels && !rc->exiting) {
        /* the master may have moved while the sentinel's connection was
         * away too */
        ngx_im_redis_sentinel_ask();
    }
}


/*
 * The request in RESP, written straight into the connection's output:
 * hiredis's own formatting (sds printf, a malloc and a free per command)
 * was the largest user-space cost of a stored message.
 */

static u_char *
ngx_im_redis_num(u_char *p, u_char lead, size_t n)
{
    u_char   tmp[NGX_SIZE_T_LEN], *t;

    t = tmp + sizeof(tmp);

    do {
        *--t = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    *p++ = lead;
    p = ngx_cpymem(p, t, tmp + sizeof(tmp) - t);
    *p++ = '\r'; *p++ = '\n';

    return p;
}


/*
 * A command's callback waits in the connection's own queue: hiredis's
 * async layer would malloc a callback record per command, compare the
 * command's name with three pub/sub commands and shift its list per reply
 * (in a profile of a write-through fan-out, libc fell from 12% of the
 * worker to 5% and hiredis from 5% to 2% without it).  Replies come back
 * in the order of the commands; ngx_im_redis_answer() pairs them.
 */

ngx_int_t
ngx_im_redis_cmd(ngx_uint_t which, ngx_im_redis_cb_pt cb, void *data,
    int argc, const char **argv, const size_t *argvlen)
{
    int                    i;
    u_char                *p;
    size_t                 need;
    ngx_im_redis_req_t    *req;
    ngx_im_redis_conn_t   *rc;
    ngx_im_redis_queue_t  *q;

    rc = ngx_im_redis_conn(which);

    if (rc->state != NGX_IM_REDIS_READY) {
        return NGX_ERROR;
    }

    need = 0;

    for (i = 0; i < argc; i++) {
        need += argvlen[i];
    }

    need = NGX_IM_REDIS_CMD_LEN(argc, need);

    q = &ngx_im_redis_queues[rc->index];

    if (q->n == q->size && ngx_im_redis_grow(q) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_im_redis_conn_reserve(rc, need);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_im_redis_num(p, '*', argc);

    for (i = 0; i < argc; i++) {
        p = ngx_im_redis_num(p, '$', argvlen[i]);
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = '\r'; *p++ = '\n';
    }

    ngx_im_redis_conn_commit(rc, p);

    req = &q->ring[(q->first + q->n++) & (q->size - 1)];
    req->cb = cb;
    req->data = data;
    req->sent = ngx_im_redis_conn_now();

    ngx_im_redis_conn_sent(rc, 1);

    ngx_im_stats->redis_commands++;

    return NGX_OK;
}


/*
 * The callbacks wait in a ring per connection, in the order of the
 * commands: a record per command from a list of spares, linked, was two
 * cache misses per command in a write-through fan-out (2,000 commands
 * under way per group message of 1,000 members), 8 % of the worker
 * (decision 038).
 */

static ngx_int_t
ngx_im_redis_grow(ngx_im_redis_queue_t *q)
{
    ngx_uint_t           i, size;
    ngx_im_redis_req_t  *ring;

    size = q->size ? 2 * q->size : 256;

    ring = ngx_alloc(size * sizeof(ngx_im_redis_req_t), ngx_cycle->log);
    if (ring == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < q->n; i++) {
        ring[i] = q->ring[(q->first + i) & (q->size - 1)];
    }

    if (q->ring) {
        ngx_free(q->ring);
    }

    q->ring = ring;
    q->size = size;
    q->first = 0;

    return NGX_OK;
}


ngx_int_t
ngx_im_redis_room(ngx_uint_t which, ngx_uint_t n, size_t size)
{
    ngx_im_redis_conn_t   *rc;
    ngx_im_redis_queue_t  *q;

    rc = ngx_im_redis_conn(which);

    if (rc->state != NGX_IM_REDIS_READY) {
        return NGX_ERROR;
    }

    q = &ngx_im_redis_queues[rc->index];

    while (q->size - q->n < n) {
        if (ngx_im_redis_grow(q) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_im_redis_conn_reserve(rc, size) ? NGX_OK : NGX_ERROR;
}


/* the oldest command's callback, taken off the ring (a callback may send
 * commands, and the ring then grow) */

static ngx_inline ngx_im_redis_req_t
ngx_im_redis_shift(ngx_im_redis_queue_t *q)
{
    ngx_im_redis_req_t  req;

    req = q->ring[q->first];
    q->first = (q->first + 1) & (q->size - 1);
    q->n--;

    return req;
}


static ngx_int_t
ngx_im_redis_answer(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    uint64_t               now;
    ngx_im_redis_req_t     req;
    ngx_im_redis_queue_t  *q;

    q = &ngx_im_redis_queues[rc->index];

    if (q->n == 0) {
        ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                      "im redis: a reply to no command");
        return NGX_ERROR;
    }

    req = ngx_im_redis_shift(q);

    ngx_im_redis_conn_answered(rc);

    now = ngx_im_redis_conn_now();
    ngx_im_metrics_observe(&ngx_im_stats->redis,
                           now > req.sent ? now - req.sent : 0);

    if (req.cb) {
        req.cb(reply, req.data);
    }

    return NGX_OK;
}


/* the connection is gone: what it was asked fails, oldest first */

static void
ngx_im_redis_fail_all(ngx_im_redis_queue_t *q)
{
    ngx_im_redis_req_t  req;

    while (q->n) {
        req = ngx_im_redis_shift(q);

        ngx_im_stats->redis_failed++;

        if (req.cb) {
            req.cb(NULL, req.data);
        }
    }
}


void
ngx_im_redis_flush(void)
{
    ngx_im_redis_conn_t  *rc;

    rc = &ngx_im_redis_conns[NGX_IM_REDIS_INBOX];

    if (rc->state == NGX_IM_REDIS_READY && rc->last > rc->pos) {
        ngx_im_redis_conn_send(rc);

    } else {
        /* the next command is of the next pass */
        ngx_im_redis_conn_clock = 0;
    }
}


/*
 * The watchdog's question to a connection that has not answered for
 * im_redis_timeout.  On the subscriber connection PING is allowed among
 * subscriptions and answered ["pong", ""] (see ngx_im_redis_sub_reply).
 */

static ngx_int_t
ngx_im_redis_ping(ngx_im_redis_conn_t *rc)
{
    static const char  *argv[1] = { "PING" };
    static size_t       argvlen[1] = { 4 };

    if (rc->index != NGX_IM_REDIS_SUB) {
        return ngx_im_redis_cmd(rc->index, NULL, NULL, 1, argv, argvlen);
    }

    if (ngx_im_redis_conn_append(rc, (u_char *) "*1\r\n$4\r\nPING\r\n", 14)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_im_redis_conn_sent(rc, 1);

    return NGX_OK;
}


/*
 * The subscriber connection has no bookkeeping per channel either
 * (hiredis's async layer kept a dictionary entry, a key and a callback per
 * channel, about 100 bytes per subscribed uid, and copied and looked up
 * the channel name for every message).  (UN)SUBSCRIBE is appended to the
 * connection's output as plain bytes; the channel name of what Redis sends
 * goes to the router, which has its own table.
 *
 * And the channels of an event loop pass go in one command: a login storm
 * completes hundreds of logins per pass in each worker, and a SUBSCRIBE
 * and a write each (as it was) made Redis read, parse and answer
 * hundreds of tiny requests per worker and pass while every other
 * worker's did the same.  Redis answers a command of n channels with n
 * confirmations, so the router's view (one confirmation per channel) does
 * not change.  The batch leaves at the end of the pass, and a SUBSCRIBE
 * before any session's output (ngx_im_redis_flush_new_subs() from
 * ngx_im_output_write): a CONNECT_ACK never leaves before the SUBSCRIBE
 * of its uid.
 */

static void
ngx_im_redis_batch_reset(void)
{
    ngx_uint_t  i;

    for (i = 0; i < 2; i++) {
        ngx_im_redis_batches[i].len = 0;
        ngx_im_redis_batches[i].n = 0;
    }
}


/* the batch as one command in the connection's output */

static ngx_int_t
ngx_im_redis_batch_close(ngx_im_redis_conn_t *rc, ngx_im_redis_batch_t *b)
{
    u_char     hdr[NGX_IM_REDIS_BATCH_HDR], *p;
    size_t     clen, hlen;
    ngx_int_t  rv;

    if (b->n == 0) {
        return NGX_OK;
    }

    clen = ngx_strlen(b->cmd);

    p = ngx_sprintf(hdr, "*%ui\r\n$%uz\r\n%s\r\n", b->n + 1, clen, b->cmd);
    hlen = p - hdr;

    p = b->buf + NGX_IM_REDIS_BATCH_HDR - hlen;
    ngx_memcpy(p, hdr, hlen);

    rv = ngx_im_redis_conn_append(rc, p, hlen + b->len);

    b->n = 0;
    b->len = 0;

    return rv;
}


void
ngx_im_redis_flush_subs(void)
{
    ngx_uint_t            i;
    ngx_im_redis_conn_t  *rc;

    if (ngx_im_redis_batches[0].n == 0 && ngx_im_redis_batches[1].n == 0) {
        return;
    }

    rc = &ngx_im_redis_conns[NGX_IM_REDIS_SUB];

    if (rc->state != NGX_IM_REDIS_READY) {
        ngx_im_redis_batch_reset();
        return;
    }

    for (i = 0; i < 2; i++) {
        if (ngx_im_redis_batch_close(rc, &ngx_im_redis_batches[i])
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ALERT, &rc->log, 0,
                          "im redis: %s of a batch not queued",
                          ngx_im_redis_batches[i].cmd);
        }
    }

    /* out now: a partial write is finished by the write event */
    ngx_im_redis_conn_send(rc);
}


/*
 * UNSUBSCRIBEs wait for the end of the pass: no output depends on them.
 * Sent before every output (as they were), each closing session wrote its
 * own: one write to Redis per logout in bench/login.sh, 2,000 of the
 * 2,304 writes on the subscriber connection over 2,000 logins and logouts
 * (decision 034).
 */

void
ngx_im_redis_flush_new_subs(void)
{
    if (ngx_im_redis_batches[0].n) {
        ngx_im_redis_flush_subs();
    }
}


static void
ngx_im_redis_batch_handler(ngx_event_t *ev)
{
    ngx_im_redis_flush_subs();
}


static ngx_int_t
ngx_im_redis_sub_cmd(ngx_uint_t which, u_char *channel, size_t len)
{
    u_char                *p;
    size_t                 need;
    ngx_im_redis_conn_t   *rc;
    ngx_im_redis_batch_t  *b;

    rc = &ngx_im_redis_conns[NGX_IM_REDIS_SUB];

    if (rc->state != NGX_IM_REDIS_READY) {
        return NGX_ERROR;
    }

    b = &ngx_im_redis_batches[which];

    if (b->n == NGX_IM_REDIS_BATCH_MAX
        && ngx_im_redis_batch_close(rc, b) != NGX_OK)
    {
        return NGX_ERROR;
    }

    need = NGX_IM_REDIS_BATCH_HDR + b->len
           + sizeof("$\r\n\r\n") - 1 + NGX_SIZE_T_LEN + len;

    if (need > b->size) {
        need = ngx_max(need * 2, 16384);

        p = ngx_alloc(need, ngx_cycle->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (b->buf) {
            ngx_memcpy(p, b->buf, NGX_IM_REDIS_BATCH_HDR + b->len);
            ngx_free(b->buf);
        }

        b->buf = p;
        b->size = need;
    }

    p = b->buf + NGX_IM_REDIS_BATCH_HDR + b->len;
    p = ngx_im_redis_num(p, '$', len);
    p = ngx_cpymem(p, channel, len);
    *p++ = '\r'; *p++ = '\n';

    b->len = p - (b->buf + NGX_IM_REDIS_BATCH_HDR);
    b->n++;

    ngx_im_redis_conn_sent(rc, 1);

    if (!ngx_im_redis_batch_ev.posted) {
        ngx_post_event(&ngx_im_redis_batch_ev, &ngx_posted_events);
    }

    return NGX_OK;
}


ngx_int_t
ngx_im_redis_subscribe(u_char *channel, size_t len)
{
    return ngx_im_redis_sub_cmd(0, channel, len);
}


ngx_int_t
ngx_im_redis_unsubscribe(u_char *channel, size_t len)
{
    return ngx_im_redis_sub_cmd(1, channel, len);
}


static void
ngx_im_redis_sub_reply(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    redisReply  *type, *chan, *msg;

    if (reply->type == REDIS_REPLY_STATUS
        || (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
            && reply->element[0]->type == REDIS_REPLY_STRING
            && reply->element[0]->len == 4
            && ngx_strncmp(reply->element[0]->str, "pong", 4) == 0))
    {
        /* the watchdog's PING ("+PONG" with no channel subscribed) */
        ngx_im_redis_conn_answered(rc);
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {

        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                          "im redis: pub/sub: %*s", reply->len, reply->str);
        }

        return;
    }

    type = reply->element[0];
    chan = reply->element[1];
    msg = reply->element[2];

    if (type->type != REDIS_REPLY_STRING
        || chan->type != REDIS_REPLY_STRING)
    {
        return;
    }

    if (type->len == 7 && ngx_strncmp(type->str, "message", 7) == 0) {
        rc->progress = ngx_current_msec;
        rc->probe = 0;

        if (msg->type == REDIS_REPLY_STRING) {
            ngx_im_redis_handlers->message((u_char *) chan->str, chan->len,
                                           (u_char *) msg->str, msg->len);
        }
        return;
    }

    ngx_im_redis_conn_answered(rc);

    if (type->len == 9 && ngx_strncmp(type->str, "subscribe", 9) == 0) {
        ngx_im_redis_handlers->subscribed((u_char *) chan->str, chan->len);

    } else if (type->len == 11
               && ngx_strncmp(type->str, "unsubscribe", 11) == 0)
    {
        ngx_im_redis_handlers->unsubscribed((u_char *) chan->str,
                                            chan->len);
    }
}


/* im_redis_wait: see ngx_im_redis_wait_marked above */

void
ngx_im_redis_wait_mark(void)
{
    if (ngx_im_get_conf()->redis_wait) {
        ngx_im_redis_wait_marked = 1;
    }
}


ngx_int_t
ngx_im_redis_after_wait(ngx_im_redis_cb_pt cb, void *data)
{
    ngx_im_redis_req_t    *req;
    ngx_im_redis_conn_t   *rc;
    ngx_im_redis_queue_t  *q;

    if (ngx_im_get_conf()->redis_wait == 0) {
        return NGX_DECLINED;
    }

    rc = &ngx_im_redis_conns[NGX_IM_REDIS_INBOX];
    q = &ngx_im_redis_held;

    if (rc->state != NGX_IM_REDIS_READY
        || (q->n == q->size && ngx_im_redis_grow(q) != NGX_OK))
    {
        return NGX_ERROR;
    }

    req = &q->ring[(q->first + q->n++) & (q->size - 1)];
    req->cb = cb;
    req->data = data;
    req->sent = 0;

    if (ngx_im_redis_waits == 0) {
        /* no WAIT went behind this write (it was not marked): one at the
         * end of this pass */
        ngx_im_redis_wait_marked = 1;
        ngx_im_redis_conn_commit(rc, rc->last);
    }

    return NGX_OK;
}


/* the inbox connection's output is leaving: a WAIT behind the pass's
 * appends, if any was marked */

static void
ngx_im_redis_flush_handler(ngx_im_redis_conn_t *rc)
{
    u_char          n[NGX_INT_T_LEN], ms[NGX_INT_T_LEN];
    const char     *argv[3];
    size_t          argvlen[3];
    ngx_im_conf_t  *imcf;

    if (rc->index != NGX_IM_REDIS_INBOX || !ngx_im_redis_wait_marked) {
        return;
    }

    ngx_im_redis_wait_marked = 0;

    imcf = ngx_im_get_conf();

    argv[0] = "WAIT";
    argvlen[0] = 4;
    argv[1] = (char *) n;
    argvlen[1] = ngx_sprintf(n, "%ui", imcf->redis_wait) - n;
    argv[2] = (char *) ms;
    argvlen[2] = ngx_sprintf(ms, "%M", imcf->redis_wait_timeout) - ms;

    if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_redis_waited, NULL, 3,
                         argv, argvlen)
        != NGX_OK)
    {
        /* out of memory: what no WAIT will cover is refused now */
        if (ngx_im_redis_waits == 0) {
            ngx_im_redis_wait_release(NULL);
        }

        return;
    }

    ngx_im_redis_waits++;
    ngx_im_stats->redis_waits++;
}


/*
 * WAIT answered the number of replicas that have every write before it.
 * Fewer than im_redis_wait: what it covers is refused (not acknowledged:
 * the master may be lost with it); logged once when it starts and once
 * when it ends, with the count.
 */

static void
ngx_im_redis_waited(redisReply *reply, void *data)
{
    ngx_uint_t      ok;
    ngx_im_conf_t  *imcf;

    if (ngx_im_redis_waits) {
        ngx_im_redis_waits--;
    }

    if (reply == NULL) {
        /* the connection went: it logged why */
        ngx_im_redis_wait_release(NULL);
        return;
    }

    imcf = ngx_im_get_conf();

    ok = (reply->type == REDIS_REPLY_INTEGER
          && reply->integer >= (long long) imcf->redis_wait);

    if (!ok) {
        ngx_im_redis_wait_refused += ngx_im_redis_held.n;
        ngx_im_stats->redis_wait_short += ngx_im_redis_held.n;

        if (!ngx_im_redis_wait_short) {
            ngx_im_redis_wait_short = 1;

            if (reply->type == REDIS_REPLY_INTEGER) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "im redis: WAIT: %L of %ui replicas had the "
                              "writes within %M ms: write-through "
                              "messages are refused until enough do",
                              (int64_t) reply->integer, imcf->redis_wait,
                              imcf->redis_wait_timeout);

            } else {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "im redis: WAIT failed: %*s: write-through "
                              "messages are refused",
                              reply->type == REDIS_REPLY_ERROR
                              ? reply->len : 0, reply->str);
            }
        }

    } else if (ngx_im_redis_wait_short) {
        ngx_im_redis_wait_short = 0;

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "im redis: WAIT: %L replicas have the writes again; "
                      "%ui appends were refused meanwhile",
                      (int64_t) reply->integer,
                      ngx_im_redis_wait_refused);

        ngx_im_redis_wait_refused = 0;
    }

    ngx_im_redis_wait_release(ok ? reply : NULL);
}


/* the held acknowledgements, oldest first: those held now only (one that
 * a callback holds anew waits for the next WAIT) */

static void
ngx_im_redis_wait_release(redisReply *reply)
{
    ngx_uint_t            n;
    ngx_im_redis_req_t    req;
    ngx_im_redis_queue_t  *q;

    q = &ngx_im_redis_held;

    for (n = q->n; n && q->n; n--) {
        req = ngx_im_redis_shift(q);
        req.cb(reply, req.data);
    }
}
