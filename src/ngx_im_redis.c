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
#include "ngx_im_redis_cluster.h"
#include "ngx_im_alloc.h"


/* in cluster mode, a command's bytes kept until its reply: a redirect
 * sends them again elsewhere */
typedef struct {
    size_t                len;
    ngx_uint_t            redirects;
    ngx_msec_t            made;     /* for TRYAGAIN's bound */
    /* u_char             bytes[len]; */
} ngx_im_redis_copy_t;


/*
 * A command's copy comes from a list of spares when it is small, as the
 * commands of a message are: with a malloc and a free per command, libc's
 * allocator had 13 % of a worker's samples in a 1:1 write-through run on a
 * cluster (perf, bench/cluster.sh), 6 % with the spares.
 */

#define NGX_IM_REDIS_COPY_SMALL  512

typedef struct {
    ngx_im_redis_copy_t   hdr;
    u_char                bytes[NGX_IM_REDIS_COPY_SMALL];
} ngx_im_redis_copy_small_t;

static ngx_im_spares_t  ngx_im_redis_copies =
    ngx_im_spares(ngx_im_redis_copy_small_t, 4096);


typedef struct {
    ngx_im_redis_cb_pt    cb;
    void                 *data;
    uint64_t              sent;     /* microseconds, for the latency */
    ngx_im_redis_copy_t  *copy;     /* cluster mode only */
} ngx_im_redis_req_t;


/* the callbacks of the commands sent on a connection, oldest at first */
typedef struct {
    ngx_im_redis_req_t   *ring;
    ngx_uint_t            first;
    ngx_uint_t            n;
    ngx_uint_t            size;     /* a power of 2, or 0 */
} ngx_im_redis_queue_t;


/* cluster mode: commands answered TRYAGAIN, sent again in a while */
typedef struct {
    ngx_im_redis_conn_t  *rc;
    ngx_im_redis_req_t    req;
} ngx_im_redis_retry_t;


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
static ngx_int_t ngx_im_redis_pubsub(ngx_im_redis_conn_t *rc,
    redisReply *reply, const char *kind, size_t klen, redisReply **type,
    redisReply **chan);
static void ngx_im_redis_sub_reply(ngx_im_redis_conn_t *rc,
    redisReply *reply);
static void ngx_im_redis_batch_reset(void);
static void ngx_im_redis_batch_handler(ngx_event_t *ev);
static u_char *ngx_im_redis_num(u_char *p, u_char lead, size_t n);
static ngx_int_t ngx_im_redis_send(ngx_im_redis_conn_t *rc,
    ngx_im_redis_cb_pt cb, void *data, int argc, const char **argv,
    const size_t *argvlen, ngx_uint_t keep);
static ngx_int_t ngx_im_redis_tx_cmd(ngx_uint_t which,
    ngx_im_redis_cb_pt cb, void *data, int argc, const char **argv,
    const size_t *argvlen);
static ngx_im_redis_copy_t *ngx_im_redis_copy(u_char *bytes, size_t len);
static void ngx_im_redis_copy_free(ngx_im_redis_copy_t *copy);
static ngx_int_t ngx_im_redis_redirect(ngx_im_redis_conn_t *rc,
    ngx_im_redis_req_t *req, redisReply *reply);
static void ngx_im_redis_read_map(void);
static void ngx_im_redis_map_handler(ngx_event_t *ev);
static ngx_int_t ngx_im_redis_retry(ngx_im_redis_conn_t *rc,
    ngx_im_redis_req_t *req);
static void ngx_im_redis_retry_handler(ngx_event_t *ev);
static void ngx_im_redis_retry_fail(void);
static ngx_int_t ngx_im_redis_ssub_cmd(ngx_uint_t which, u_char *channel,
    size_t len);
static void ngx_im_redis_ssub_reply(ngx_im_redis_conn_t *rc,
    redisReply *reply);


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

/* cluster mode: the slot map's reads (one at a time, one more when asked
 * meanwhile, again in a second when none could be made), and an
 * SSUBSCRIBE queued since the last flush */
static ngx_event_t               ngx_im_redis_map_ev;
static ngx_uint_t                ngx_im_redis_map_reading;
static ngx_uint_t                ngx_im_redis_map_again;
static ngx_uint_t                ngx_im_redis_ssub_new;
/* im_redis_cluster, read once per worker: tested for every command */
static ngx_uint_t                ngx_im_redis_clustered;
static ngx_uint_t                ngx_im_redis_exiting;
static ngx_im_redis_retry_t     *ngx_im_redis_retries;
static ngx_uint_t                ngx_im_redis_nretries;
static ngx_uint_t                ngx_im_redis_retries_size;
static ngx_event_t               ngx_im_redis_retry_ev;

/* cluster mode: the transaction being queued (see ngx_im_redis_tx_cmd) */
static struct {
    ngx_uint_t                   open;
    ngx_im_redis_conn_t         *rc;
    ngx_im_redis_cb_pt           cb;     /* MULTI's */
    void                        *data;
} ngx_im_redis_tx;


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
    ngx_im_redis_clustered = imcf->redis_cluster;

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

    ngx_im_redis_dummy.fd = (ngx_socket_t) -1;
    ngx_im_redis_batch_ev.data = &ngx_im_redis_dummy;
    ngx_im_redis_batch_ev.handler = ngx_im_redis_batch_handler;
    ngx_im_redis_batch_ev.log = cycle->log;
    ngx_im_redis_batch_reset();

    if (imcf->redis_cluster) {
        ngx_im_redis_map_ev.data = &ngx_im_redis_dummy;
        ngx_im_redis_map_ev.handler = ngx_im_redis_map_handler;
        ngx_im_redis_map_ev.log = cycle->log;
        ngx_im_redis_map_ev.cancelable = 1;

        ngx_im_redis_retry_ev.data = &ngx_im_redis_dummy;
        ngx_im_redis_retry_ev.handler = ngx_im_redis_retry_handler;
        ngx_im_redis_retry_ev.log = cycle->log;
        ngx_im_redis_retry_ev.cancelable = 1;

        return ngx_im_redis_cluster_init(cycle, s,
                                         &ngx_im_redis_conn_handlers);
    }

    for (i = 0; i < NGX_IM_REDIS_N; i++) {
        rc = &ngx_im_redis_conns[i];

        /* the subscriber connection has no database */
        db = (i == NGX_IM_REDIS_GROUP) ? imcf->group_db
             : (i == NGX_IM_REDIS_SUB) ? 0 : imcf->redis_db;

        ngx_im_redis_conn_init(rc, s, db, ngx_im_redis_names[i],
                               &ngx_im_redis_conn_handlers,
                               &ngx_im_redis_queues[i]);
        rc->index = i;

        if (ngx_im_redis_used(i)) {
            /* with Sentinel and no master known yet: away until it is */
            ngx_im_redis_conn_connect(rc);
        }
    }

    return NGX_OK;
}


void
ngx_im_redis_exit(void)
{
    ngx_uint_t              i, j;
    ngx_im_cluster_node_t  *node;

    if (ngx_im_redis_batch_ev.posted) {
        ngx_delete_posted_event(&ngx_im_redis_batch_ev);
    }

    ngx_im_redis_exiting = 1;

    if (ngx_im_get_conf()->sentinels) {
        ngx_im_redis_sentinel_exit();
    }

    if (ngx_im_redis_clustered) {
        if (ngx_im_redis_map_ev.timer_set) {
            ngx_del_timer(&ngx_im_redis_map_ev);
        }

        if (ngx_im_redis_retry_ev.timer_set) {
            ngx_del_timer(&ngx_im_redis_retry_ev);
        }

        ngx_im_redis_retry_fail();

        ngx_im_redis_cluster_exit();

        for (i = 0; i < ngx_im_redis_cluster_nodes(); i++) {
            node = ngx_im_redis_cluster_node(i);

            for (j = 0; j < NGX_IM_REDIS_N; j++) {
                if (node->conns[j].data) {
                    ngx_im_redis_fail_all(node->conns[j].data);
                }
            }
        }

        return;
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
    if (ngx_im_redis_clustered) {
        return ngx_im_redis_cluster_ready(which);
    }

    return ngx_im_redis_conn(which)->state == NGX_IM_REDIS_READY;
}


ngx_uint_t
ngx_im_redis_away(ngx_uint_t which)
{
    ngx_im_redis_conn_t  *rc;

    if (ngx_im_redis_clustered) {
        return ngx_im_redis_cluster_away(which);
    }

    rc = ngx_im_redis_conn(which);

    return rc->state != NGX_IM_REDIS_READY && rc->failed;
}


static void
ngx_im_redis_ready_handler(ngx_im_redis_conn_t *rc)
{
    if (ngx_im_redis_clustered) {
        /* the map first: a connection is of use once slots point to it */

        if (!ngx_im_redis_cluster_mapped()) {
            if (rc->index == NGX_IM_REDIS_INBOX) {
                ngx_im_redis_read_map();
            }

            return;
        }
    }

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
        if (ngx_im_redis_clustered) {
            ngx_im_redis_ssub_reply(rc, reply);

        } else {
            ngx_im_redis_sub_reply(rc, reply);
        }

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

    if (rc->data) {
        ngx_im_redis_fail_all(rc->data);
    }

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

    if (ngx_im_redis_clustered && !ngx_im_redis_exiting
        && ngx_im_redis_cluster_mapped())
    {
        /* a master gone may be a failover under way: the map tells when
         * a replica took its slots (read again each second until every
         * master answers) */
        ngx_im_redis_read_map();
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
    ngx_int_t             slot;
    ngx_im_redis_conn_t  *rc;

    if (ngx_im_redis_clustered) {
        if (argvlen[0] == 5 && ngx_strncmp(argv[0], "MULTI", 5) == 0) {
            /* sent with the transaction's first key, to its master */
            ngx_im_redis_tx.open = 1;
            ngx_im_redis_tx.rc = NULL;
            ngx_im_redis_tx.cb = cb;
            ngx_im_redis_tx.data = data;
            return NGX_OK;
        }

        if (ngx_im_redis_tx.open) {
            return ngx_im_redis_tx_cmd(which, cb, data, argc, argv,
                                       argvlen);
        }

        /* the connection of the master that serves the command's key */

        slot = ngx_im_redis_cluster_slot(argc, argv, argvlen);

        rc = ngx_im_redis_cluster_conn(which,
                                       slot == NGX_DECLINED ? 0 : slot);
        if (rc == NULL) {
            return NGX_ERROR;
        }

    } else {
        rc = ngx_im_redis_conn(which);
    }

    return ngx_im_redis_send(rc, cb, data, argc, argv, argvlen, 1);
}


/*
 * Cluster mode: a transaction (MULTI ... EXEC, decision 037) goes to the
 * master of its first key, whole; the router makes one per recipient, so
 * its keys are of one slot.  Its commands keep no copy: a redirect at
 * queue time aborts the EXEC (EXECABORT), a refusal, and the map is read
 * again for the next message; sent again alone, a command would run
 * outside its transaction.
 */

static ngx_int_t
ngx_im_redis_tx_cmd(ngx_uint_t which, ngx_im_redis_cb_pt cb, void *data,
    int argc, const char **argv, const size_t *argvlen)
{
    ngx_int_t             slot, rv;
    ngx_uint_t            end;
    ngx_im_redis_conn_t  *rc;

    static const char    *multi[1] = { "MULTI" };
    static size_t         multilen[1] = { 5 };

    end = (argvlen[0] == 4 && ngx_strncmp(argv[0], "EXEC", 4) == 0)
          || (argvlen[0] == 7 && ngx_strncmp(argv[0], "DISCARD", 7) == 0);

    rc = ngx_im_redis_tx.rc;

    if (rc == NULL) {
        slot = ngx_im_redis_cluster_slot(argc, argv, argvlen);

        rc = ngx_im_redis_cluster_conn(which,
                                       slot == NGX_DECLINED ? 0 : slot);

        if (rc == NULL
            || ngx_im_redis_send(rc, ngx_im_redis_tx.cb, ngx_im_redis_tx.data,
                                 1, multi, multilen, 0)
               != NGX_OK)
        {
            if (end) {
                ngx_im_redis_tx.open = 0;
            }

            return NGX_ERROR;
        }

        ngx_im_redis_tx.rc = rc;
    }

    rv = ngx_im_redis_send(rc, cb, data, argc, argv, argvlen, 0);

    if (end) {
        ngx_im_redis_tx.open = 0;
        ngx_im_redis_tx.rc = NULL;
    }

    return rv;
}


static ngx_im_redis_queue_t *
ngx_im_redis_queue(ngx_im_redis_conn_t *rc)
{
    if (rc->data == NULL) {
        /* a cluster node's connection: its ring made at first use */
        rc->data = ngx_calloc(sizeof(ngx_im_redis_queue_t), ngx_cycle->log);
    }

    return rc->data;
}


static ngx_int_t
ngx_im_redis_send(ngx_im_redis_conn_t *rc, ngx_im_redis_cb_pt cb,
    void *data, int argc, const char **argv, const size_t *argvlen,
    ngx_uint_t keep)
{
    int                    i;
    u_char                *p, *start;
    size_t                 need;
    ngx_uint_t             spublish;
    ngx_im_redis_req_t    *req;
    ngx_im_redis_copy_t   *copy;
    ngx_im_redis_queue_t  *q;

    if (rc->state != NGX_IM_REDIS_READY) {
        return NGX_ERROR;
    }

    /* a cluster's channels are sharded: SPUBLISH reaches the subscribers
     * of the channel's shard, where they SSUBSCRIBEd */
    spublish = (ngx_im_redis_clustered && argvlen[0] == 7
                && ngx_strncmp(argv[0], "PUBLISH", 7) == 0);

    need = spublish;

    for (i = 0; i < argc; i++) {
        need += argvlen[i];
    }

    need = NGX_IM_REDIS_CMD_LEN(argc, need);

    q = ngx_im_redis_queue(rc);
    if (q == NULL) {
        return NGX_ERROR;
    }

    if (q->n == q->size && ngx_im_redis_grow(q) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_im_redis_conn_reserve(rc, need);
    if (p == NULL) {
        return NGX_ERROR;
    }

    start = p;

    p = ngx_im_redis_num(p, '*', argc);

    for (i = 0; i < argc; i++) {
        if (i == 0 && spublish) {
            p = ngx_cpymem(p, "$8\r\nSPUBLISH\r\n", 14);
            continue;
        }

        p = ngx_im_redis_num(p, '$', argvlen[i]);
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = '\r'; *p++ = '\n';
    }

    copy = NULL;

    if (ngx_im_redis_clustered && keep) {
        copy = ngx_im_redis_copy(start, p - start);
        if (copy == NULL) {
            return NGX_ERROR;
        }
    }

    ngx_im_redis_conn_commit(rc, p);

    req = &q->ring[(q->first + q->n++) & (q->size - 1)];
    req->cb = cb;
    req->data = data;
    req->sent = ngx_im_redis_conn_now();
    req->copy = copy;

    ngx_im_redis_conn_sent(rc, 1);

    ngx_im_stats->redis_commands++;

    return NGX_OK;
}


static ngx_im_redis_copy_t *
ngx_im_redis_copy(u_char *bytes, size_t len)
{
    ngx_im_redis_copy_t  *copy;

    copy = (len <= NGX_IM_REDIS_COPY_SMALL)
           ? ngx_im_spare_get(&ngx_im_redis_copies)
           : ngx_alloc(sizeof(ngx_im_redis_copy_t) + len, ngx_cycle->log);
    if (copy == NULL) {
        return NULL;
    }

    copy->len = len;
    copy->redirects = 0;
    copy->made = ngx_current_msec;
    ngx_memcpy(copy + 1, bytes, len);

    return copy;
}


static void
ngx_im_redis_copy_free(ngx_im_redis_copy_t *copy)
{
    if (copy->len <= NGX_IM_REDIS_COPY_SMALL) {
        ngx_im_spare_put(&ngx_im_redis_copies, copy);

    } else {
        ngx_free(copy);
    }
}


/*
 * A command sent again, as it was, on another connection (a redirect),
 * with its callback and its copy: ASKING first for an ASK, whose "+OK"
 * goes to no callback.
 */

static ngx_int_t
ngx_im_redis_resend(ngx_im_redis_conn_t *rc, ngx_im_redis_req_t *req,
    ngx_uint_t asking)
{
    ngx_im_redis_req_t    *r;
    ngx_im_redis_queue_t  *q;

    if (rc->state != NGX_IM_REDIS_READY) {
        return NGX_ERROR;
    }

    q = ngx_im_redis_queue(rc);
    if (q == NULL) {
        return NGX_ERROR;
    }

    if (q->size - q->n < 2 && ngx_im_redis_grow(q) != NGX_OK) {
        return NGX_ERROR;
    }

    if (asking) {
        if (ngx_im_redis_conn_append(rc,
                                     (u_char *) "*1\r\n$6\r\nASKING\r\n", 16)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        r = &q->ring[(q->first + q->n++) & (q->size - 1)];
        r->cb = NULL;
        r->data = NULL;
        r->sent = ngx_im_redis_conn_now();
        r->copy = NULL;

        ngx_im_redis_conn_sent(rc, 1);
    }

    if (ngx_im_redis_conn_append(rc, (u_char *) (req->copy + 1),
                                 req->copy->len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    q->ring[(q->first + q->n++) & (q->size - 1)] = *req;

    ngx_im_redis_conn_sent(rc, 1);

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

    if (ngx_im_redis_clustered) {
        /* the master is known at the transaction's first key; every
         * master ready now, its commands are queued in this pass (the
         * ring and the output grow as they come) */
        return ngx_im_redis_cluster_ready(which) ? NGX_OK : NGX_ERROR;
    }

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

    q = rc->data;

    if (q == NULL || q->n == 0) {
        ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                      "im redis: a reply to no command");
        return NGX_ERROR;
    }

    req = ngx_im_redis_shift(q);

    ngx_im_redis_conn_answered(rc);

    if (req.copy) {
        if (reply->type == REDIS_REPLY_ERROR
            && ngx_im_redis_redirect(rc, &req, reply) == NGX_OK)
        {
            /* sent again where the cluster said: answered there */
            return NGX_OK;
        }

        ngx_im_redis_copy_free(req.copy);

    } else if (ngx_im_redis_clustered && reply->type == REDIS_REPLY_ERROR
               && reply->len > 6 && ngx_strncmp(reply->str, "MOVED ", 6) == 0)
    {
        /* a transaction's command: not followed (see
         * ngx_im_redis_tx_cmd), but the next one goes right */
        ngx_im_redis_read_map();
    }

    now = ngx_im_redis_conn_now();
    ngx_im_metrics_observe(&ngx_im_stats->redis,
                           now > req.sent ? now - req.sent : 0);

    if (req.cb) {
        req.cb(reply, req.data);
    }

    return NGX_OK;
}


/*
 * MOVED: the slot lives elsewhere now; the map's entry points there, a
 * whole map read follows, and the command goes there.  The commands of
 * that slot pipelined behind it get the same answer and follow it, in
 * their order.  ASK: this key, this once, on the node importing the
 * slot: ASKING and the command there, the map unchanged.  Any other
 * error (TRYAGAIN, CLUSTERDOWN) is the caller's: a refusal.
 */

#define NGX_IM_REDIS_REDIRECTS  5

static ngx_int_t
ngx_im_redis_redirect(ngx_im_redis_conn_t *rc, ngx_im_redis_req_t *req,
    redisReply *reply)
{
    ngx_im_redirect_t       r;
    ngx_im_cluster_node_t  *node;

    if (ngx_im_slot_redirect((u_char *) reply->str, reply->len, &r)
        == NGX_IM_REDIRECT_NONE)
    {
        if (reply->len >= 8 && ngx_strncmp(reply->str, "TRYAGAIN", 8) == 0)
        {
            /* a script's keys on both sides of a slot being moved */
            return ngx_im_redis_retry(rc, req);
        }

        return NGX_DECLINED;
    }

    if (req->copy->redirects++ == NGX_IM_REDIS_REDIRECTS) {
        ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                      "im redis cluster: %d redirects of one command, "
                      "the last: %s", NGX_IM_REDIS_REDIRECTS, reply->str);
        return NGX_DECLINED;
    }

    node = ngx_im_redis_cluster_redirect(&r);
    if (node == NULL) {
        return NGX_DECLINED;
    }

    if (r.kind == NGX_IM_REDIRECT_MOVED) {
        ngx_im_stats->redis_moved++;
        ngx_im_redis_read_map();

    } else {
        ngx_im_stats->redis_asked++;
    }

    return ngx_im_redis_resend(&node->conns[rc->index], req,
                               r.kind == NGX_IM_REDIRECT_ASK);
}


/* the connection is gone: what it was asked fails, oldest first */

static void
ngx_im_redis_fail_all(ngx_im_redis_queue_t *q)
{
    ngx_im_redis_req_t  req;

    while (q->n) {
        req = ngx_im_redis_shift(q);

        ngx_im_stats->redis_failed++;

        if (req.copy) {
            ngx_im_redis_copy_free(req.copy);
        }

        if (req.cb) {
            req.cb(NULL, req.data);
        }
    }
}


void
ngx_im_redis_flush(void)
{
    ngx_uint_t            i;
    ngx_im_redis_conn_t  *rc;

    if (ngx_im_redis_clustered) {
        for (i = 0; i < ngx_im_redis_cluster_nodes(); i++) {
            rc = &ngx_im_redis_cluster_node(i)->conns[NGX_IM_REDIS_INBOX];

            if (rc->state == NGX_IM_REDIS_READY && rc->last > rc->pos) {
                ngx_im_redis_conn_send(rc);
            }
        }

        ngx_im_redis_conn_clock = 0;
        return;
    }

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
        return ngx_im_redis_send(rc, NULL, NULL, 1, argv, argvlen, 0);
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

    if (ngx_im_redis_clustered) {
        ngx_im_redis_ssub_new = 0;

        for (i = 0; i < ngx_im_redis_cluster_nodes(); i++) {
            rc = &ngx_im_redis_cluster_node(i)->conns[NGX_IM_REDIS_SUB];

            if (rc->state == NGX_IM_REDIS_READY && rc->last > rc->pos) {
                ngx_im_redis_conn_send(rc);
            }
        }

        return;
    }

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
    if (ngx_im_redis_batches[0].n || ngx_im_redis_ssub_new) {
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

    if (ngx_im_redis_clustered) {
        return ngx_im_redis_ssub_cmd(which, channel, len);
    }

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


/*
 * What the replies of a subscriber connection have in common, plain or
 * sharded: the watchdog's PONG, and a message of that kind ("message",
 * "smessage") handed to the router.  NGX_DONE: handled (or not pub/sub
 * at all); NGX_DECLINED: an error reply, the caller's; NGX_OK: *type and
 * *chan are a confirmation's, the caller's.
 */

static ngx_int_t
ngx_im_redis_pubsub(ngx_im_redis_conn_t *rc, redisReply *reply,
    const char *kind, size_t klen, redisReply **type, redisReply **chan)
{
    redisReply  *msg;

    if (reply->type == REDIS_REPLY_STATUS
        || (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
            && reply->element[0]->type == REDIS_REPLY_STRING
            && reply->element[0]->len == 4
            && ngx_strncmp(reply->element[0]->str, "pong", 4) == 0))
    {
        /* the watchdog's PING ("+PONG" with no channel subscribed), which
         * has no place in the ring */
        ngx_im_redis_conn_answered(rc);
        return NGX_DONE;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        return NGX_DECLINED;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {
        return NGX_DONE;
    }

    *type = reply->element[0];
    *chan = reply->element[1];
    msg = reply->element[2];

    if ((*type)->type != REDIS_REPLY_STRING
        || (*chan)->type != REDIS_REPLY_STRING)
    {
        return NGX_DONE;
    }

    if ((*type)->len == klen && ngx_strncmp((*type)->str, kind, klen) == 0)
    {
        rc->progress = ngx_current_msec;
        rc->probe = 0;

        if (msg->type == REDIS_REPLY_STRING) {
            ngx_im_redis_handlers->message((u_char *) (*chan)->str,
                                           (*chan)->len,
                                           (u_char *) msg->str, msg->len);
        }

        return NGX_DONE;
    }

    return NGX_OK;
}


static void
ngx_im_redis_sub_reply(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    redisReply  *type, *chan;

    switch (ngx_im_redis_pubsub(rc, reply, "message", 7, &type, &chan)) {

    case NGX_DECLINED:
        ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                      "im redis: pub/sub: %*s", reply->len, reply->str);
        return;

    case NGX_OK:
        break;

    default:
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
    req->copy = NULL;

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


/*
 * Cluster mode: sharded pub/sub.  A shard channel lives in its slot like
 * a key, and one SSUBSCRIBE may name the channels of one slot only, so
 * each uid's channel is a command of its own on the subscriber connection
 * of its slot's master; a pass's commands still leave in one write per
 * master.  Each waits in the connection's ring with its bytes, like any
 * command in cluster mode: a MOVED answer (the map was behind) sends it
 * again to the master named.  A "sunsubscribe" that is not the answer to
 * the oldest command is the cluster's own (the slot moved away): the
 * router subscribes again, at the new owner.
 */

static ngx_int_t
ngx_im_redis_ssub_cmd(ngx_uint_t which, u_char *channel, size_t len)
{
    const char           *argv[2];
    size_t                argvlen[2];
    ngx_im_redis_conn_t  *rc;

    rc = ngx_im_redis_cluster_conn(NGX_IM_REDIS_SUB,
                                   ngx_im_slot(channel, len));
    if (rc == NULL) {
        return NGX_ERROR;
    }

    argv[0] = which ? "SUNSUBSCRIBE" : "SSUBSCRIBE";
    argvlen[0] = which ? 12 : 10;
    argv[1] = (char *) channel;
    argvlen[1] = len;

    if (ngx_im_redis_send(rc, NULL, NULL, 2, argv, argvlen, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    if (which == 0) {
        ngx_im_redis_ssub_new = 1;
    }

    return NGX_OK;
}


/* the oldest command on the connection is SUNSUBSCRIBE of this channel */

static ngx_uint_t
ngx_im_redis_ssub_asked(ngx_im_redis_conn_t *rc, redisReply *chan)
{
    u_char                *p;
    ngx_im_redis_copy_t   *copy;
    ngx_im_redis_queue_t  *q;

    q = rc->data;

    if (q == NULL || q->n == 0) {
        return 0;
    }

    copy = q->ring[q->first].copy;

    if (copy == NULL || copy->len < 24 + chan->len) {
        return 0;
    }

    p = (u_char *) (copy + 1);

    return ngx_strncmp(p + 4, "$12\r\nSUNSUBSCRIBE\r\n", 19) == 0
           && ngx_memcmp(p + copy->len - 2 - chan->len, chan->str,
                         chan->len)
              == 0;
}


static void
ngx_im_redis_ssub_reply(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    redisReply  *type, *chan;

    switch (ngx_im_redis_pubsub(rc, reply, "smessage", 8, &type, &chan)) {

    case NGX_DECLINED:
        /* an (S)SUBSCRIBE refused: followed when redirected */
        ngx_log_error(NGX_LOG_INFO, &rc->log, 0,
                      "im redis: pub/sub: %*s", reply->len, reply->str);
        (void) ngx_im_redis_answer(rc, reply);
        return;

    case NGX_OK:
        break;

    default:
        return;
    }

    if (type->len == 10 && ngx_strncmp(type->str, "ssubscribe", 10) == 0) {
        (void) ngx_im_redis_answer(rc, reply);
        ngx_im_redis_handlers->subscribed((u_char *) chan->str, chan->len);
        return;
    }

    if (type->len == 12 && ngx_strncmp(type->str, "sunsubscribe", 12) == 0)
    {
        if (ngx_im_redis_ssub_asked(rc, chan)) {
            (void) ngx_im_redis_answer(rc, reply);

        } else {
            ngx_im_stats->redis_moved_channels++;
            ngx_log_error(NGX_LOG_INFO, &rc->log, 0,
                          "im redis cluster: channel %*s moved away",
                          chan->len, chan->str);
            ngx_im_redis_read_map();
        }

        ngx_im_redis_handlers->unsubscribed((u_char *) chan->str,
                                            chan->len);
    }
}


/*
 * The slot map: read at the start from the seed, and again after a MOVED
 * or a channel moved away, from the first master whose inbox connection
 * is ready.
 */

static void
ngx_im_redis_map_read(redisReply *reply, void *data)
{
    ngx_uint_t  first;

    ngx_im_redis_map_reading = 0;

    first = !ngx_im_redis_cluster_mapped();

    if (ngx_im_redis_cluster_map(reply) != NGX_OK) {
        if (!ngx_im_redis_map_ev.timer_set) {
            ngx_add_timer(&ngx_im_redis_map_ev, 1000);
        }

        return;
    }

    if (first) {
        /* the connections that came before the map are of use now */
        ngx_im_redis_handlers->sub_connected();

        if (ngx_im_redis_handlers->inbox_connected) {
            ngx_im_redis_handlers->inbox_connected();
        }
    }

    if (ngx_im_redis_map_again) {
        ngx_im_redis_map_again = 0;
        ngx_im_redis_read_map();
        return;
    }

    if (!ngx_im_redis_cluster_ready(NGX_IM_REDIS_INBOX)
        && !ngx_im_redis_map_ev.timer_set)
    {
        /* a master of the map does not answer: gone for good when a
         * replica is promoted in its place, which a later map says */
        ngx_add_timer(&ngx_im_redis_map_ev, 1000);
    }
}


static void
ngx_im_redis_read_map(void)
{
    static const char  *argv[2] = { "CLUSTER", "SLOTS" };
    static size_t       argvlen[2] = { 7, 5 };

    ngx_uint_t              i;
    ngx_im_cluster_node_t  *node;

    if (ngx_im_redis_exiting) {
        return;
    }

    if (ngx_im_redis_map_reading) {
        ngx_im_redis_map_again = 1;
        return;
    }

    for (i = 0; i < ngx_im_redis_cluster_nodes(); i++) {
        node = ngx_im_redis_cluster_node(i);

        if (ngx_im_redis_send(&node->conns[NGX_IM_REDIS_INBOX],
                              ngx_im_redis_map_read, NULL, 2, argv, argvlen,
                              0)
            == NGX_OK)
        {
            ngx_im_redis_map_reading = 1;
            ngx_im_stats->redis_map_reads++;
            return;
        }
    }

    /* no node answers now: again in a second */

    if (!ngx_im_redis_map_ev.timer_set) {
        ngx_add_timer(&ngx_im_redis_map_ev, 1000);
    }
}


static void
ngx_im_redis_map_handler(ngx_event_t *ev)
{
    ngx_im_redis_read_map();
}


/*
 * TRYAGAIN: a command of several keys (the strike script) while their
 * slot moves and some of the keys are gone already.  It is sent again,
 * whole, on the same connection every 50 ms: once the move is done the
 * old owner answers MOVED, which is followed.  After im_redis_timeout the
 * caller gets the failure (nothing was done: nothing acknowledged).
 */

#define NGX_IM_REDIS_RETRY_DELAY  50

static ngx_int_t
ngx_im_redis_retry(ngx_im_redis_conn_t *rc, ngx_im_redis_req_t *req)
{
    size_t                 size;
    ngx_im_redis_retry_t  *r;

    if (ngx_current_msec - req->copy->made
        >= ngx_im_get_conf()->redis_timeout)
    {
        return NGX_DECLINED;
    }

    if (ngx_im_redis_nretries == ngx_im_redis_retries_size) {
        size = ngx_im_redis_retries_size ? 2 * ngx_im_redis_retries_size
                                         : 16;

        r = ngx_alloc(size * sizeof(ngx_im_redis_retry_t), ngx_cycle->log);
        if (r == NULL) {
            return NGX_DECLINED;
        }

        if (ngx_im_redis_retries) {
            ngx_memcpy(r, ngx_im_redis_retries,
                       ngx_im_redis_nretries * sizeof(ngx_im_redis_retry_t));
            ngx_free(ngx_im_redis_retries);
        }

        ngx_im_redis_retries = r;
        ngx_im_redis_retries_size = size;
    }

    r = &ngx_im_redis_retries[ngx_im_redis_nretries++];
    r->rc = rc;
    r->req = *req;

    ngx_im_stats->redis_tryagain++;

    if (!ngx_im_redis_retry_ev.timer_set) {
        ngx_add_timer(&ngx_im_redis_retry_ev, NGX_IM_REDIS_RETRY_DELAY);
    }

    return NGX_OK;
}


static void
ngx_im_redis_retry_handler(ngx_event_t *ev)
{
    ngx_uint_t            i, n;
    ngx_im_redis_req_t    req;
    ngx_im_redis_retry_t  *r;

    /* a resend may be answered TRYAGAIN again and come back here, but
     * not before this loop is done: replies come in later passes */

    n = ngx_im_redis_nretries;
    ngx_im_redis_nretries = 0;

    for (i = 0; i < n; i++) {
        r = &ngx_im_redis_retries[i];
        req = r->req;

        if (ngx_im_redis_resend(r->rc, &req, 0) == NGX_OK) {
            continue;
        }

        ngx_im_redis_copy_free(req.copy);
        ngx_im_stats->redis_failed++;

        if (req.cb) {
            req.cb(NULL, req.data);
        }
    }
}


static void
ngx_im_redis_retry_fail(void)
{
    ngx_im_redis_req_t  req;

    while (ngx_im_redis_nretries) {
        req = ngx_im_redis_retries[--ngx_im_redis_nretries].req;

        ngx_im_redis_copy_free(req.copy);

        if (req.cb) {
            req.cb(NULL, req.data);
        }
    }
}
