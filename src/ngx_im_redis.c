/*
 * ngx_im_redis.c: hiredis on nginx's event loop.
 *
 * Owns the per-worker Redis connections: the hiredis event adapter (level
 * triggered, since hiredis reads once per readiness), AUTH and SELECT on
 * connect, a watchdog that drops a connection whose commands stop being
 * answered (hiredis 0.14 has no timeouts of its own), and reconnection with
 * exponential backoff.  Once a connection is ready, hiredis only connects,
 * writes and parses: commands and their callbacks are kept here (see
 * ngx_im_redis_cmd).  Nothing here knows about messages or sessions.
 */

#include "ngx_im_redis.h"


#define NGX_IM_REDIS_DOWN        0
#define NGX_IM_REDIS_CONNECTING  1
#define NGX_IM_REDIS_READY       2

#define NGX_IM_REDIS_BACKOFF_MIN   100
#define NGX_IM_REDIS_BACKOFF_MAX   5000


typedef struct ngx_im_redis_chunk_s  ngx_im_redis_chunk_t;

struct ngx_im_redis_chunk_s {
    ngx_im_redis_chunk_t  *next;
    u_char                *last;
    u_char                *end;
};


typedef struct {
    ngx_im_redis_cb_pt    cb;
    void                 *data;
    uint64_t              sent;     /* microseconds, for the latency */
} ngx_im_redis_req_t;


typedef struct {
    ngx_uint_t           which;
    ngx_uint_t           state;
    redisAsyncContext   *ac;
    ngx_connection_t    *c;
    ngx_int_t            db;
    ngx_uint_t           setup;      /* AUTH/SELECT replies still due */
    ngx_uint_t           pending;    /* commands without a reply */
    ngx_uint_t           dirty;      /* commands queued in this pass */
    ngx_msec_t           progress;   /* last sign of life */
    ngx_msec_t           probe;      /* a PING sent then, or 0 */
    ngx_msec_t           backoff;
    ngx_event_t          reconnect;
    ngx_im_redis_chunk_t *arena;    /* the reply being read, newest first */
    ngx_im_redis_req_t   *ring;     /* commands sent, oldest at first */
    ngx_uint_t            first;
    ngx_uint_t            n;
    ngx_uint_t            size;     /* a power of 2, or 0 */
} ngx_im_redis_conn_t;


static void ngx_im_redis_connect(ngx_im_redis_conn_t *rc);
static void ngx_im_redis_down(ngx_im_redis_conn_t *rc);
static void ngx_im_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_im_redis_watchdog_handler(ngx_event_t *ev);
static void ngx_im_redis_connected(const redisAsyncContext *ac, int status);
static void ngx_im_redis_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_im_redis_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_im_redis_fail_all(ngx_im_redis_conn_t *rc);
static ngx_int_t ngx_im_redis_grow(ngx_im_redis_conn_t *rc);
static ngx_uint_t ngx_im_redis_ready_read(ngx_im_redis_conn_t *rc);
static ngx_int_t ngx_im_redis_answer(ngx_im_redis_conn_t *rc,
    redisReply *reply);
static void ngx_im_redis_sub_reply(ngx_im_redis_conn_t *rc,
    redisReply *reply);

static void ngx_im_redis_add_read(void *privdata);
static void ngx_im_redis_del_read(void *privdata);
static void ngx_im_redis_add_write(void *privdata);
static void ngx_im_redis_del_write(void *privdata);
static void ngx_im_redis_cleanup(void *privdata);
static void ngx_im_redis_read_handler(ngx_event_t *ev);
static void *ngx_im_redis_new_string(const redisReadTask *task, char *str,
    size_t len);
static void *ngx_im_redis_new_array(const redisReadTask *task, int elements);
static void *ngx_im_redis_new_integer(const redisReadTask *task,
    long long value);
static void *ngx_im_redis_new_nil(const redisReadTask *task);
static void ngx_im_redis_free_reply(void *reply);
static void ngx_im_redis_write_handler(ngx_event_t *ev);
static void ngx_im_redis_batch_reset(void);
static void ngx_im_redis_batch_handler(ngx_event_t *ev);
static void ngx_im_redis_write_all(ngx_event_t *ev);
static ngx_int_t ngx_im_redis_ping(ngx_im_redis_conn_t *rc);
static void ngx_im_redis_alive(ngx_im_redis_conn_t *rc);
static u_char *ngx_im_redis_num(u_char *p, u_char lead, size_t n);


static ngx_im_redis_conn_t       ngx_im_redis_conns[NGX_IM_REDIS_N];
static ngx_im_redis_handlers_t  *ngx_im_redis_handlers;
static ngx_event_t               ngx_im_redis_watchdog;
/* nginx's debug log reads a descriptor out of every timer's data */
static ngx_connection_t          ngx_im_redis_dummy;
static ngx_uint_t                ngx_im_redis_exiting;
/* the connection whose replies hiredis is parsing now */
static ngx_im_redis_conn_t      *ngx_im_redis_reading;


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
/* writes the connections with commands queued in the pass, at its end */
static ngx_event_t               ngx_im_redis_write_ev;

/*
 * The clock is read once per event loop pass for the commands (they all
 * leave at its end) and once per read for the replies: two system-call-free
 * clock reads per batch rather than two per command.
 */
static uint64_t                  ngx_im_redis_stamp;

static redisReplyObjectFunctions  ngx_im_redis_reply_fns = {
    ngx_im_redis_new_string,
    ngx_im_redis_new_array,
    ngx_im_redis_new_integer,
    ngx_im_redis_new_nil,
    ngx_im_redis_free_reply
};


/* the watchdog looks a few times per timeout, at most once a second */

static ngx_msec_t
ngx_im_redis_tick(ngx_im_conf_t *imcf)
{
    return ngx_max(ngx_min(imcf->redis_timeout / 4, 1000), 50);
}


ngx_int_t
ngx_im_redis_init(ngx_cycle_t *cycle, ngx_im_redis_handlers_t *handlers)
{
    ngx_uint_t            i;
    ngx_im_conf_t        *imcf;
    ngx_im_redis_conn_t  *rc;

    imcf = ngx_im_get_conf();

    ngx_im_redis_handlers = handlers;
    ngx_im_redis_exiting = 0;

    for (i = 0; i < NGX_IM_REDIS_N; i++) {
        rc = &ngx_im_redis_conns[i];
        ngx_memzero(rc, sizeof(ngx_im_redis_conn_t));

        rc->which = i;
        rc->db = (i == NGX_IM_REDIS_GROUP) ? imcf->group_db : imcf->redis_db;
        rc->backoff = NGX_IM_REDIS_BACKOFF_MIN;

        rc->reconnect.handler = ngx_im_redis_reconnect_handler;
        rc->reconnect.data = rc;
        rc->reconnect.log = cycle->log;
        rc->reconnect.cancelable = 1;

        if (i == NGX_IM_REDIS_GROUP && imcf->group_db == imcf->redis_db) {
            /* one connection serves both */
            continue;
        }

        if (i == NGX_IM_REDIS_EVENTS && !imcf->redis_events) {
            continue;
        }

        ngx_im_redis_connect(rc);
    }

    ngx_im_redis_dummy.fd = (ngx_socket_t) -1;
    ngx_im_redis_watchdog.data = &ngx_im_redis_dummy;
    ngx_im_redis_watchdog.handler = ngx_im_redis_watchdog_handler;
    ngx_im_redis_watchdog.log = cycle->log;
    ngx_im_redis_watchdog.cancelable = 1;
    ngx_add_timer(&ngx_im_redis_watchdog, ngx_im_redis_tick(imcf));

    ngx_im_redis_batch_ev.data = &ngx_im_redis_dummy;
    ngx_im_redis_batch_ev.handler = ngx_im_redis_batch_handler;
    ngx_im_redis_batch_ev.log = cycle->log;

    ngx_im_redis_write_ev.data = &ngx_im_redis_dummy;
    ngx_im_redis_write_ev.handler = ngx_im_redis_write_all;
    ngx_im_redis_write_ev.log = cycle->log;

    ngx_im_redis_batch_reset();

    return NGX_OK;
}


/*
 * At exit: what the worker last asked of Redis (the removals of the last
 * acks above all) leaves now, as far as the socket takes it at once; the
 * event loop that would have written it is over.
 */

static void
ngx_im_redis_flush_at_exit(ngx_im_redis_conn_t *rc)
{
    int  done;

    if (rc->state == NGX_IM_REDIS_READY) {
        (void) redisBufferWrite(&rc->ac->c, &done);
    }
}


void
ngx_im_redis_exit(void)
{
    ngx_uint_t            i;
    ngx_im_redis_conn_t  *rc;

    ngx_im_redis_exiting = 1;

    if (ngx_im_redis_watchdog.timer_set) {
        ngx_del_timer(&ngx_im_redis_watchdog);
    }

    if (ngx_im_redis_batch_ev.posted) {
        ngx_delete_posted_event(&ngx_im_redis_batch_ev);
    }

    if (ngx_im_redis_write_ev.posted) {
        ngx_delete_posted_event(&ngx_im_redis_write_ev);
    }

    for (i = 0; i < NGX_IM_REDIS_N; i++) {
        rc = &ngx_im_redis_conns[i];

        if (rc->reconnect.timer_set) {
            ngx_del_timer(&rc->reconnect);
        }

        if (rc->ac) {
            ngx_im_redis_flush_at_exit(rc);
            ngx_im_redis_fail_all(rc);
            redisAsyncFree(rc->ac);
            rc->ac = NULL;
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


static void
ngx_im_redis_connect(ngx_im_redis_conn_t *rc)
{
    redisAsyncContext  *ac;
    ngx_connection_t   *c;
    ngx_im_conf_t      *imcf;

    imcf = ngx_im_get_conf();

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "im redis: connection %ui connecting to %V:%i",
                   rc->which, &imcf->redis_host, imcf->redis_port);

    ac = redisAsyncConnect((char *) imcf->redis_host.data,
                           (int) imcf->redis_port);
    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im redis: out of memory");
        ngx_add_timer(&rc->reconnect, rc->backoff);
        return;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im redis: connect to %V:%i failed: %s",
                      &imcf->redis_host, imcf->redis_port, ac->errstr);
        redisAsyncFree(ac);
        ngx_add_timer(&rc->reconnect, rc->backoff);
        return;
    }

    ac->c.reader->fn = &ngx_im_redis_reply_fns;

    c = ngx_get_connection(ac->c.fd, ngx_cycle->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_add_timer(&rc->reconnect, rc->backoff);
        return;
    }

    /* replies wanted at once, not after a delayed ACK */
    {
        int  on = 1;

        (void) setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(int));
    }

    c->data = rc;
    c->read->handler = ngx_im_redis_read_handler;
    c->write->handler = ngx_im_redis_write_handler;
    c->read->log = ngx_cycle->log;
    c->write->log = ngx_cycle->log;

    rc->ac = ac;
    rc->c = c;
    rc->state = NGX_IM_REDIS_CONNECTING;
    rc->pending = 0;
    rc->probe = 0;
    rc->progress = ngx_current_msec;

    ac->data = rc;
    ac->ev.data = rc;
    ac->ev.addRead = ngx_im_redis_add_read;
    ac->ev.delRead = ngx_im_redis_del_read;
    ac->ev.addWrite = ngx_im_redis_add_write;
    ac->ev.delWrite = ngx_im_redis_del_write;
    ac->ev.cleanup = ngx_im_redis_cleanup;

    redisAsyncSetDisconnectCallback(ac, ngx_im_redis_disconnected);

    /* hiredis detects the end of a non-blocking connect on the first
     * write event: this call asks for it, so the adapter is set first */
    redisAsyncSetConnectCallback(ac, ngx_im_redis_connected);
}


static void
ngx_im_redis_connected(const redisAsyncContext *cac, int status)
{
    redisAsyncContext    *ac = (redisAsyncContext *) cac;
    ngx_im_conf_t        *imcf;
    ngx_im_redis_conn_t  *rc;
    const char           *argv[2];
    size_t                argvlen[2];
    char                  db[NGX_INT_T_LEN];

    rc = ac->data;

    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im redis: connect failed: %s", ac->errstr);
        /* hiredis frees the context after this returns */
        ngx_im_redis_down(rc);
        return;
    }

    imcf = ngx_im_get_conf();

    rc->setup = 0;
    rc->progress = ngx_current_msec;

    if (imcf->redis_password.len) {
        argv[0] = "AUTH";
        argvlen[0] = 4;
        argv[1] = (char *) imcf->redis_password.data;
        argvlen[1] = imcf->redis_password.len;

        if (redisAsyncCommandArgv(ac, ngx_im_redis_setup_reply, rc, 2, argv,
                                  argvlen)
            == REDIS_OK)
        {
            rc->setup++;
        }
    }

    if (rc->db != 0 && rc->which != NGX_IM_REDIS_SUB) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = db;
        argvlen[1] = ngx_sprintf((u_char *) db, "%i", rc->db) - (u_char *) db;

        if (redisAsyncCommandArgv(ac, ngx_im_redis_setup_reply, rc, 2, argv,
                                  argvlen)
            == REDIS_OK)
        {
            rc->setup++;
        }
    }

    if (rc->setup == 0) {
        ngx_im_redis_setup_reply(ac, NULL, NULL);
    }
}


static void
ngx_im_redis_setup_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply           *reply = r;
    ngx_im_redis_conn_t  *rc;

    rc = ac->data;

    if (privdata) {
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "im redis: setup failed: %s",
                          reply ? reply->str : "connection lost");
            if (reply) {
                /* freeing from a callback is deferred by hiredis */
                redisAsyncFree(ac);
            }
            return;
        }

        if (--rc->setup) {
            return;
        }
    }

    rc->state = NGX_IM_REDIS_READY;
    ngx_im_gauges->redis_up++;
    rc->backoff = NGX_IM_REDIS_BACKOFF_MIN;
    rc->progress = ngx_current_msec;

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "im redis: connection %ui ready", rc->which);

    if (rc->which == NGX_IM_REDIS_SUB) {
        if (ngx_im_redis_handlers->sub_connected) {
            ngx_im_redis_handlers->sub_connected();
        }

    } else if (rc->which == NGX_IM_REDIS_INBOX) {
        if (ngx_im_redis_handlers->inbox_connected) {
            ngx_im_redis_handlers->inbox_connected();
        }
    }
}


static void
ngx_im_redis_disconnected(const redisAsyncContext *cac, int status)
{
    redisAsyncContext  *ac = (redisAsyncContext *) cac;

    if (!ngx_im_redis_exiting) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im redis: connection lost: %s",
                      ac->errstr[0] ? ac->errstr : "closed");
    }

    ngx_im_redis_down(ac->data);
}


static void
ngx_im_redis_down(ngx_im_redis_conn_t *rc)
{
    if (rc->ac == NULL) {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "im redis: connection %ui down, reconnect in %M",
                   rc->which, rc->backoff);

    if (rc->state == NGX_IM_REDIS_READY) {
        ngx_im_gauges->redis_up--;
    }

    rc->ac = NULL;
    rc->state = NGX_IM_REDIS_DOWN;
    rc->pending = 0;
    rc->probe = 0;

    if (rc->which == NGX_IM_REDIS_SUB) {
        /* the router subscribes everything again when it is back */
        ngx_im_redis_batch_reset();
    }

    if (!ngx_im_redis_exiting) {
        ngx_im_stats->redis_reconnects++;
    }

    ngx_im_redis_fail_all(rc);

    if (ngx_im_redis_exiting) {
        return;
    }

    if (!rc->reconnect.timer_set) {
        ngx_add_timer(&rc->reconnect, rc->backoff);
    }

    rc->backoff *= 2;
    if (rc->backoff > NGX_IM_REDIS_BACKOFF_MAX) {
        rc->backoff = NGX_IM_REDIS_BACKOFF_MAX;
    }
}


static void
ngx_im_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_im_redis_conn_t  *rc = ev->data;

    if (ngx_im_redis_exiting || rc->ac) {
        return;
    }

    ngx_im_redis_connect(rc);
}


/*
 * A connection with commands unanswered for im_redis_timeout is not yet
 * taken for dead: a Redis busy with a login storm of many workers (tens
 * of thousands of SUBSCRIBEs and presence writes) answers late, and
 * dropping it then makes every worker subscribe all its uids and read
 * all its inboxes again, on top of the storm.  So the connection is dead
 * only when nothing comes back at all: no byte of a reply (replies that
 * wait in the socket mean that this worker is behind, not Redis) and no
 * answer to a PING sent at the first timeout, within a second timeout.
 * A busy Redis answers the PING behind the commands before it; a dead
 * one, a hung one or a lost route never does.
 */

static void
ngx_im_redis_watchdog_handler(ngx_event_t *ev)
{
    int                   n;
    ngx_uint_t            i;
    ngx_msec_t            now, timeout;
    ngx_im_conf_t        *imcf;
    ngx_im_redis_conn_t  *rc;
    redisAsyncContext    *ac;

    imcf = ngx_im_get_conf();
    now = ngx_current_msec;
    timeout = imcf->redis_timeout;

    for (i = 0; i < NGX_IM_REDIS_N; i++) {
        rc = &ngx_im_redis_conns[i];

        if (rc->ac == NULL || rc->c == NULL) {
            continue;
        }

        if (rc->state == NGX_IM_REDIS_READY && rc->pending == 0) {
            rc->probe = 0;
            continue;
        }

        if (now - rc->progress <= timeout) {
            continue;
        }

        if (rc->state == NGX_IM_REDIS_READY) {

            if (ioctl(rc->c->fd, FIONREAD, &n) != -1 && n > 0) {
                rc->progress = now;
                continue;
            }

            if (rc->probe == 0) {
                ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                              "im redis: connection %ui: %ui commands "
                              "unanswered for %M ms, PING sent",
                              i, rc->pending, now - rc->progress);

                if (ngx_im_redis_ping(rc) == NGX_OK) {
                    rc->probe = now;
                    ngx_im_stats->redis_pings++;
                    continue;
                }

            } else if (now - rc->probe <= timeout) {
                continue;
            }
        }

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im redis: connection %ui timed out: nothing "
                      "received for %M ms", i, now - rc->progress);

        ac = rc->ac;
        ngx_im_redis_down(rc);
        redisAsyncFree(ac);
    }

    if (!ngx_im_redis_exiting) {
        ngx_add_timer(ev, ngx_im_redis_tick(imcf));
    }
}


/*
 * The request in RESP, built in one buffer kept by the worker: hiredis's own
 * formatting (sds printf, a malloc and a free per command) was the largest
 * user-space cost of a stored message.
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


static u_char *
ngx_im_redis_format(int argc, const char **argv, const size_t *argvlen,
    size_t *len)
{
    int             i;
    u_char         *p;
    size_t          need;

    static u_char  *buf;
    static size_t   size;

    need = sizeof("*\r\n") - 1 + NGX_INT_T_LEN;

    for (i = 0; i < argc; i++) {
        need += sizeof("$\r\n\r\n") - 1 + NGX_SIZE_T_LEN + argvlen[i];
    }

    if (need > size) {
        if (buf) {
            ngx_free(buf);
        }

        size = ngx_max(need, 4096);

        buf = ngx_alloc(size, ngx_cycle->log);
        if (buf == NULL) {
            size = 0;
            return NULL;
        }
    }

    p = ngx_im_redis_num(buf, '*', argc);

    for (i = 0; i < argc; i++) {
        p = ngx_im_redis_num(p, '$', argvlen[i]);
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = '\r'; *p++ = '\n';
    }

    *len = p - buf;

    return buf;
}


/*
 * A command is appended to hiredis's output buffer as it is, and its
 * callback waits in the connection's own queue: hiredis's async layer
 * would malloc a callback record per command, compare the command's name
 * with three pub/sub commands and shift its list per reply (in a profile of
 * a write-through fan-out, libc fell from 12% of the worker to 5% and
 * hiredis from 5% to 2% without it).  Replies come back in the order of the
 * commands; ngx_im_redis_answer() pairs them.
 */

ngx_int_t
ngx_im_redis_cmd(ngx_uint_t which, ngx_im_redis_cb_pt cb, void *data,
    int argc, const char **argv, const size_t *argvlen)
{
    u_char               *cmd;
    size_t                len;
    ngx_im_redis_req_t   *req;
    ngx_im_redis_conn_t  *rc;

    rc = ngx_im_redis_conn(which);

    if (rc->state != NGX_IM_REDIS_READY) {
        return NGX_ERROR;
    }

    if (rc->n == rc->size && ngx_im_redis_grow(rc) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_im_redis_stamp == 0) {
        ngx_im_redis_stamp = ngx_im_metrics_now();
    }

    cmd = ngx_im_redis_format(argc, argv, argvlen, &len);

    if (cmd == NULL
        || redisAppendFormattedCommand(&rc->ac->c, (char *) cmd, len)
           != REDIS_OK)
    {
        return NGX_ERROR;
    }

    req = &rc->ring[(rc->first + rc->n++) & (rc->size - 1)];
    req->cb = cb;
    req->data = data;
    req->sent = ngx_im_redis_stamp;

    /*
     * Written when the pass ends, by a posted event, not by a write event
     * armed now: that cost two epoll_ctl() calls and a pass of its own per
     * pass that had commands, and at 20,000 1:1 messages/s each message
     * is a pass.  The write event is armed only when the socket does not
     * take everything (redisAsyncHandleWrite()).
     */

    if (!rc->c->write->active) {
        rc->dirty = 1;

        if (!ngx_im_redis_write_ev.posted) {
            ngx_post_event(&ngx_im_redis_write_ev, &ngx_posted_events);
        }
    }

    if (rc->pending++ == 0) {
        rc->progress = ngx_current_msec;
    }

    ngx_im_stats->redis_commands++;

    return NGX_OK;
}


/*
 * The callbacks wait in a ring per connection, in the order of the
 * commands: a record per command from a list of spares, linked, was two
 * cache misses per command in a write-through fan-out (2,000 commands
 * under way per group message of 1,000 members), 8 % of the worker.
 */

static ngx_int_t
ngx_im_redis_grow(ngx_im_redis_conn_t *rc)
{
    ngx_uint_t           i, size;
    ngx_im_redis_req_t  *ring;

    size = rc->size ? 2 * rc->size : 256;

    ring = ngx_alloc(size * sizeof(ngx_im_redis_req_t), ngx_cycle->log);
    if (ring == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < rc->n; i++) {
        ring[i] = rc->ring[(rc->first + i) & (rc->size - 1)];
    }

    if (rc->ring) {
        ngx_free(rc->ring);
    }

    rc->ring = ring;
    rc->size = size;
    rc->first = 0;

    return NGX_OK;
}


/* the oldest command's callback, taken off the ring (a callback may send
 * commands, and the ring then grow) */

static ngx_im_redis_req_t
ngx_im_redis_shift(ngx_im_redis_conn_t *rc)
{
    ngx_im_redis_req_t  req;

    req = rc->ring[rc->first];
    rc->first = (rc->first + 1) & (rc->size - 1);
    rc->n--;

    return req;
}


static ngx_int_t
ngx_im_redis_answer(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    ngx_im_redis_req_t  req;

    if (rc->n == 0) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im redis: connection %ui: a reply to no command",
                      rc->which);
        return NGX_ERROR;
    }

    req = ngx_im_redis_shift(rc);

    if (rc->pending) {
        rc->pending--;
    }

    rc->progress = ngx_current_msec;
    rc->probe = 0;

    ngx_im_metrics_observe(&ngx_im_stats->redis,
                           ngx_im_redis_stamp > req.sent
                           ? ngx_im_redis_stamp - req.sent : 0);

    if (req.cb) {
        req.cb(reply, req.data);
    }

    return NGX_OK;
}


/* the connection is gone: what it was asked fails, oldest first */

static void
ngx_im_redis_fail_all(ngx_im_redis_conn_t *rc)
{
    ngx_im_redis_req_t  req;

    while (rc->n) {
        req = ngx_im_redis_shift(rc);

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

    /* the next command is of the next pass */
    ngx_im_redis_stamp = 0;

    rc = &ngx_im_redis_conns[NGX_IM_REDIS_INBOX];

    if (rc->state == NGX_IM_REDIS_READY && rc->c
        && (rc->dirty || rc->c->write->active))
    {
        rc->dirty = 0;
        redisAsyncHandleWrite(rc->ac);
    }
}


/* the end of a pass that queued commands: they leave now */

static void
ngx_im_redis_write_all(ngx_event_t *ev)
{
    ngx_uint_t            i;
    ngx_im_redis_conn_t  *rc;

    ngx_im_redis_stamp = 0;

    for (i = 0; i < NGX_IM_REDIS_N; i++) {
        rc = &ngx_im_redis_conns[i];

        if (!rc->dirty) {
            continue;
        }

        rc->dirty = 0;

        if (rc->state == NGX_IM_REDIS_READY && rc->ac) {
            redisAsyncHandleWrite(rc->ac);
        }
    }
}


/* a reply on the subscriber connection that answers one of its requests */

static void
ngx_im_redis_alive(ngx_im_redis_conn_t *rc)
{
    if (rc->pending) {
        rc->pending--;
    }

    rc->progress = ngx_current_msec;
    rc->probe = 0;
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

    if (rc->which != NGX_IM_REDIS_SUB) {
        return ngx_im_redis_cmd(rc->which, NULL, NULL, 1, argv, argvlen);
    }

    if (redisAppendFormattedCommand(&rc->ac->c, "*1\r\n$4\r\nPING\r\n", 14)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    ngx_im_redis_add_write(rc);
    rc->pending++;

    return NGX_OK;
}


/*
 * The subscriber connection bypasses hiredis's pub/sub bookkeeping as well:
 * hiredis keeps a dictionary entry, a key and a callback per channel (about
 * 100 bytes per subscribed uid, scattered over the heap between the login
 * burst's short-lived blocks) and copies and looks up the channel name for
 * every message.  (UN)SUBSCRIBE is appended to the context's output buffer
 * as plain bytes; the channel name of what Redis sends goes to the router,
 * which has its own table.
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


/* the batch as one command in hiredis's output buffer */

static ngx_int_t
ngx_im_redis_batch_close(ngx_im_redis_conn_t *rc, ngx_im_redis_batch_t *b)
{
    u_char  hdr[NGX_IM_REDIS_BATCH_HDR], *p;
    size_t  clen, hlen;

    if (b->n == 0) {
        return NGX_OK;
    }

    clen = ngx_strlen(b->cmd);

    p = ngx_sprintf(hdr, "*%ui\r\n$%uz\r\n%s\r\n", b->n + 1, clen, b->cmd);
    hlen = p - hdr;

    p = b->buf + NGX_IM_REDIS_BATCH_HDR - hlen;
    ngx_memcpy(p, hdr, hlen);

    b->n = 0;

    if (redisAppendFormattedCommand(&rc->ac->c, (char *) p, hlen + b->len)
        != REDIS_OK)
    {
        b->len = 0;
        return NGX_ERROR;
    }

    b->len = 0;

    return NGX_OK;
}


void
ngx_im_redis_flush_subs(void)
{
    int                   done;
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
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "im redis: %s of a batch not queued",
                          ngx_im_redis_batches[i].cmd);
        }
    }

    /* out now; only a failed or partial write arms the write event, whose
     * handler sees it again (and turns an error into a disconnection
     * outside the caller's stack) */
    done = 0;

    if (redisBufferWrite(&rc->ac->c, &done) != REDIS_OK || !done) {
        ngx_im_redis_add_write(rc);
    }
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

    if (rc->pending++ == 0) {
        rc->progress = ngx_current_msec;
    }

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


/*
 * a ready connection: hiredis's reply parser only.  Returns 1 when the
 * read filled hiredis's buffer (16 KB), so that the socket may hold more
 */

#define NGX_IM_REDIS_READ_BUF  (16 * 1024)

static ngx_uint_t
ngx_im_redis_ready_read(ngx_im_redis_conn_t *rc)
{
    ngx_uint_t          full;
    void               *r;
    size_t              had;
    redisAsyncContext  *ac;

    ac = rc->ac;
    had = ac->c.reader->len;

    if (redisBufferRead(&ac->c) != REDIS_OK) {
        goto lost;
    }

    if (ac->c.reader->len > had) {
        /* a part of a reply is a sign of life too: a large one (an inbox,
         * a page of members) may take longer than the timeout to come */
        rc->progress = ngx_current_msec;
    }

    /* the reader's buffer grew by what read() returned */
    full = (ac->c.reader->len - had >= NGX_IM_REDIS_READ_BUF);

    /* the replies' time; the commands their callbacks send leave at the
     * end of this pass */
    ngx_im_redis_stamp = ngx_im_metrics_now();

    for ( ;; ) {
        if (redisGetReply(&ac->c, &r) != REDIS_OK) {
            goto lost;
        }

        if (r == NULL) {
            return full;
        }

        if (rc->which == NGX_IM_REDIS_SUB) {
            ngx_im_redis_sub_reply(rc, r);

        } else if (ngx_im_redis_answer(rc, r) != NGX_OK) {
            ngx_im_redis_free_reply(r);
            goto lost;
        }

        ngx_im_redis_free_reply(r);

        if (rc->ac != ac) {
            return 0;
        }
    }

lost:

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "im redis: connection %ui lost: %s", rc->which,
                  ac->errstr[0] ? ac->errstr : "closed");

    ngx_im_redis_down(rc);
    redisAsyncFree(ac);

    return 0;
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
        ngx_im_redis_alive(rc);
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {

        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
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

    ngx_im_redis_alive(rc);

    if (type->len == 9 && ngx_strncmp(type->str, "subscribe", 9) == 0) {
        ngx_im_redis_handlers->subscribed((u_char *) chan->str, chan->len);

    } else if (type->len == 11
               && ngx_strncmp(type->str, "unsubscribe", 11) == 0)
    {
        ngx_im_redis_handlers->unsubscribed((u_char *) chan->str,
                                            chan->len);
    }
}


/* the event adapter */

static void
ngx_im_redis_add_read(void *privdata)
{
    ngx_im_redis_conn_t  *rc = privdata;

    if (!rc->c->read->active) {
        (void) ngx_add_event(rc->c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_im_redis_del_read(void *privdata)
{
    ngx_im_redis_conn_t  *rc = privdata;

    if (rc->c->read->active) {
        (void) ngx_del_event(rc->c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_im_redis_add_write(void *privdata)
{
    ngx_im_redis_conn_t  *rc = privdata;

    if (!rc->c->write->active) {
        (void) ngx_add_event(rc->c->write, NGX_WRITE_EVENT,
                             NGX_LEVEL_EVENT);
    }
}


static void
ngx_im_redis_del_write(void *privdata)
{
    ngx_im_redis_conn_t  *rc = privdata;

    if (rc->c->write->active) {
        (void) ngx_del_event(rc->c->write, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_im_redis_cleanup(void *privdata)
{
    ngx_im_redis_conn_t  *rc = privdata;
    ngx_connection_t     *c;

    c = rc->c;
    if (c == NULL) {
        return;
    }

    rc->c = NULL;

    /* hiredis closes the descriptor itself: only forget the events */

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
}


/*
 * hiredis reads at most 16 KB per call.  Once per event loop pass is too
 * little under load: a pass over thousands of client events takes
 * milliseconds, the subscriber connection falls behind the messages
 * published to it and Redis closes it at its pubsub output buffer limit
 * (32 MB), which turns into a resubscription and an inbox reload for every
 * session.  So read on while the socket has more, up to 1 MB per pass.
 */

#define NGX_IM_REDIS_READS  64

static void
ngx_im_redis_read_handler(ngx_event_t *ev)
{
    int                   n;
    ngx_uint_t            i, more;
    ngx_connection_t     *c = ev->data;
    ngx_im_redis_conn_t  *rc = c->data;
    ngx_im_redis_conn_t  *prev;

    for (i = 0; i < NGX_IM_REDIS_READS; i++) {

        if (rc->ac == NULL || rc->c != c) {
            return;
        }

        prev = ngx_im_redis_reading;
        ngx_im_redis_reading = rc;

        if (rc->state == NGX_IM_REDIS_READY) {
            /* a read short of the buffer emptied the socket: no ioctl()
             * to ask (level-triggered: what comes later is reported) */
            more = ngx_im_redis_ready_read(rc);

            ngx_im_redis_reading = prev;

            if (!more || rc->c != c) {
                return;
            }

            continue;
        }

        redisAsyncHandleRead(rc->ac);

        ngx_im_redis_reading = prev;

        if (rc->c != c || ioctl(c->fd, FIONREAD, &n) == -1 || n <= 0) {
            return;
        }
    }
}


static void
ngx_im_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t     *c = ev->data;
    ngx_im_redis_conn_t  *rc = c->data;

    ngx_im_redis_stamp = 0;

    if (rc->ac) {
        redisAsyncHandleWrite(rc->ac);
    }
}


/*
 * Replies are built in an arena per connection rather than with a malloc
 * per element: a group's SSCAN page of 1,000 members was 2,000 mallocs and
 * as many frees, the largest user-space cost of a fan-out.  hiredis builds
 * one reply at a time per connection and frees its root (through the
 * reader's freeObject) before it starts the next, so freeing a root
 * empties its connection's arena.  A root keeps its connection in the
 * word in front of it; the other objects are found only through the root.
 */

#define NGX_IM_REDIS_CHUNK   (64 * 1024)
#define NGX_IM_REDIS_PREFIX  16

#define ngx_im_redis_chunk_hdr                                                \
    ngx_align(sizeof(ngx_im_redis_chunk_t), NGX_IM_REDIS_PREFIX)


static void *
ngx_im_redis_arena_alloc(ngx_im_redis_conn_t *rc, size_t size)
{
    u_char                *p;
    size_t                 n;
    ngx_im_redis_chunk_t  *ch;

    size = ngx_align(size, NGX_IM_REDIS_PREFIX);
    ch = rc->arena;

    if (ch == NULL || (size_t) (ch->end - ch->last) < size) {
        n = ngx_max(NGX_IM_REDIS_CHUNK, ngx_im_redis_chunk_hdr + size);

        ch = ngx_alloc(n, ngx_cycle->log);
        if (ch == NULL) {
            return NULL;
        }

        ch->next = rc->arena;
        ch->last = (u_char *) ch + ngx_im_redis_chunk_hdr;
        ch->end = (u_char *) ch + n;
        rc->arena = ch;
    }

    p = ch->last;
    ch->last += size;

    return p;
}


static redisReply *
ngx_im_redis_new(const redisReadTask *task, int type, size_t extra)
{
    u_char               *p;
    redisReply           *r, *parent;
    ngx_im_redis_conn_t  *rc;

    rc = ngx_im_redis_reading;

    if (rc == NULL) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "im redis: reply parsed outside a read");
        return NULL;
    }

    if (task->parent == NULL) {
        p = ngx_im_redis_arena_alloc(rc, NGX_IM_REDIS_PREFIX
                                         + sizeof(redisReply) + extra);
        if (p == NULL) {
            return NULL;
        }

        *(ngx_im_redis_conn_t **) p = rc;
        r = (redisReply *) (p + NGX_IM_REDIS_PREFIX);

    } else {
        r = ngx_im_redis_arena_alloc(rc, sizeof(redisReply) + extra);
        if (r == NULL) {
            return NULL;
        }

        parent = task->parent->obj;
        parent->element[task->idx] = r;
    }

    ngx_memzero(r, sizeof(redisReply));
    r->type = type;

    return r;
}


static void *
ngx_im_redis_new_string(const redisReadTask *task, char *str, size_t len)
{
    redisReply  *r;

    r = ngx_im_redis_new(task, task->type, len + 1);
    if (r == NULL) {
        return NULL;
    }

    r->str = (char *) (r + 1);
    r->len = len;
    ngx_memcpy(r->str, str, len);
    r->str[len] = '\0';

    return r;
}


static void *
ngx_im_redis_new_array(const redisReadTask *task, int elements)
{
    size_t       n;
    redisReply  *r;

    n = (elements > 0) ? (size_t) elements * sizeof(redisReply *) : 0;

    r = ngx_im_redis_new(task, REDIS_REPLY_ARRAY, n);
    if (r == NULL) {
        return NULL;
    }

    if (n) {
        r->element = (redisReply **) (r + 1);
        ngx_memzero(r->element, n);
    }

    r->elements = (elements > 0) ? (size_t) elements : 0;

    return r;
}


static void *
ngx_im_redis_new_integer(const redisReadTask *task, long long value)
{
    redisReply  *r;

    r = ngx_im_redis_new(task, REDIS_REPLY_INTEGER, 0);
    if (r == NULL) {
        return NULL;
    }

    r->integer = value;

    return r;
}


static void *
ngx_im_redis_new_nil(const redisReadTask *task)
{
    return ngx_im_redis_new(task, REDIS_REPLY_NIL, 0);
}


static void
ngx_im_redis_free_reply(void *reply)
{
    ngx_im_redis_conn_t   *rc;
    ngx_im_redis_chunk_t  *ch;

    rc = *(ngx_im_redis_conn_t **) ((u_char *) reply - NGX_IM_REDIS_PREFIX);

    /* keep one chunk of the standard size */

    while (rc->arena) {
        ch = rc->arena;

        if (ch->next == NULL
            && (size_t) (ch->end - (u_char *) ch) == NGX_IM_REDIS_CHUNK)
        {
            ch->last = (u_char *) ch + ngx_im_redis_chunk_hdr;
            return;
        }

        rc->arena = ch->next;
        ngx_free(ch);
    }
}
