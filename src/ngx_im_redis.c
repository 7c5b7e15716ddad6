/*
 * ngx_im_redis.c: the worker's Redis connections and their commands.
 *
 * Owns the worker's connections (inbox, group, subscriber, events: each an
 * ngx_im_redis_conn_t, which connects, logs in, watches and reconnects),
 * what they do when they come up, answer and go, the RESP formatting of
 * commands straight into a connection's output, the callback ring that
 * pairs replies with commands, the flush of the inbox connection, the
 * watchdog's PING, and with im_redis_sentinel the restart of the
 * connections when the master moves; in cluster mode, which master's
 * connection a command goes to; with im_group_redis, the group
 * connection to a Redis of its own, in cluster mode too.  Pub/sub is
 * ngx_im_redis_pubsub.c's, the WAIT of im_redis_wait ngx_im_redis_wait.c's,
 * and a cluster's copies and redirects ngx_im_redis_redirect.c's.  Nothing
 * here knows about messages or sessions.
 */

#include "ngx_im_redis_int.h"
#include "ngx_im_redis_sentinel.h"


static void ngx_im_redis_ready_handler(ngx_im_redis_conn_t *rc);
static ngx_int_t ngx_im_redis_reply_handler(ngx_im_redis_conn_t *rc,
    redisReply *reply);
static void ngx_im_redis_down_handler(ngx_im_redis_conn_t *rc);
static ngx_int_t ngx_im_redis_ping(ngx_im_redis_conn_t *rc);
static ngx_uint_t ngx_im_redis_used(ngx_uint_t i);
static void ngx_im_redis_master(void);
static void ngx_im_redis_group_init(ngx_im_conf_t *imcf);
static void ngx_im_redis_fail_all(ngx_im_redis_queue_t *q);


static const char  *ngx_im_redis_names[NGX_IM_REDIS_N] = {
    "inbox", "group", "sub", "events"
};

ngx_im_redis_conn_t              ngx_im_redis_conns[NGX_IM_REDIS_N];
static ngx_im_redis_queue_t      ngx_im_redis_queues[NGX_IM_REDIS_N];
static ngx_im_redis_server_t     ngx_im_redis_server;
/* im_group_redis: the group connection's own Redis, never a cluster's
 * slot (docs/decisions/045-group-redis.md) */
static ngx_im_redis_server_t     ngx_im_redis_group_server;
static ngx_uint_t                ngx_im_redis_group_apart;
ngx_im_redis_handlers_t         *ngx_im_redis_handlers;
ngx_connection_t                 ngx_im_redis_dummy;
ngx_uint_t                       ngx_im_redis_clustered;
ngx_uint_t                       ngx_im_redis_exiting;


/* a command of this role goes to its slot's master: in cluster mode, but
 * for the group sets on a Redis of their own (im_group_redis) */
#define ngx_im_redis_routed(which)                                           \
    (ngx_im_redis_clustered                                                  \
     && !((which) == NGX_IM_REDIS_GROUP && ngx_im_redis_group_apart))


static ngx_im_redis_conn_handlers_t  ngx_im_redis_conn_handlers = {
    ngx_im_redis_ready_handler,
    ngx_im_redis_reply_handler,
    ngx_im_redis_down_handler,
    ngx_im_redis_ping,
    ngx_im_redis_wait_flush
};


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
    s->ssl = imcf->redis_ssl ? imcf->redis_ssl_ctx : NULL;
#endif
    s->ssl_name = imcf->redis_ssl_name;
    s->ssl_verify = imcf->redis_ssl_verify;
    s->master = 0;

    ngx_im_redis_wait_init();

    if (imcf->sentinels
        && ngx_im_redis_sentinel_init(cycle, s, ngx_im_redis_master)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_im_redis_dummy.fd = (ngx_socket_t) -1;
    ngx_im_redis_pubsub_init(cycle);

    ngx_im_redis_group_apart = (imcf->group_addrs != NULL);

    if (ngx_im_redis_group_apart) {
        ngx_im_redis_group_init(imcf);
    }

    if (imcf->redis_cluster) {
        ngx_im_redis_redirect_init(cycle);

        return ngx_im_redis_cluster_init(cycle, s,
                                         &ngx_im_redis_conn_handlers);
    }

    for (i = 0; i < NGX_IM_REDIS_N; i++) {
        rc = &ngx_im_redis_conns[i];

        if (i == NGX_IM_REDIS_GROUP && ngx_im_redis_group_apart) {
            continue;
        }

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


static void
ngx_im_redis_group_init(ngx_im_conf_t *imcf)
{
    ngx_im_redis_conn_t    *rc;
    ngx_im_redis_server_t  *s;

    s = &ngx_im_redis_group_server;
    s->addrs = imcf->group_addrs;
    s->naddrs = imcf->group_naddrs;
    s->user = imcf->group_user;
    s->password = imcf->group_password;
    s->timeout = imcf->redis_timeout;
#if (NGX_SSL)
    s->ssl = imcf->group_ssl ? imcf->redis_ssl_ctx : NULL;
#endif
    s->ssl_name = imcf->group_ssl_name;
    s->ssl_verify = imcf->redis_ssl_verify;
    s->master = 0;

    rc = &ngx_im_redis_conns[NGX_IM_REDIS_GROUP];

    ngx_im_redis_conn_init(rc, s, imcf->group_db,
                           ngx_im_redis_names[NGX_IM_REDIS_GROUP],
                           &ngx_im_redis_conn_handlers,
                           &ngx_im_redis_queues[NGX_IM_REDIS_GROUP]);
    rc->index = NGX_IM_REDIS_GROUP;

    ngx_im_redis_conn_connect(rc);
}


void
ngx_im_redis_exit(void)
{
    ngx_uint_t              i, j;
    ngx_im_cluster_node_t  *node;

    ngx_im_redis_pubsub_exit();

    ngx_im_redis_exiting = 1;

    if (ngx_im_get_conf()->sentinels) {
        ngx_im_redis_sentinel_exit();
    }

    if (ngx_im_redis_clustered) {
        ngx_im_redis_redirect_exit();

        ngx_im_redis_cluster_exit();

        if (ngx_im_redis_group_apart) {
            ngx_im_redis_conn_exit(&ngx_im_redis_conns[NGX_IM_REDIS_GROUP]);
            ngx_im_redis_fail_all(&ngx_im_redis_queues[NGX_IM_REDIS_GROUP]);
        }

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

    if (i == NGX_IM_REDIS_GROUP
        && (imcf->group_db == imcf->redis_db || ngx_im_redis_group_apart))
    {
        /* one connection serves both, or the group's is not on this
         * server (im_group_redis) */
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

    if (which == NGX_IM_REDIS_GROUP && !ngx_im_redis_group_apart) {
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
    if (ngx_im_redis_routed(which)) {
        return ngx_im_redis_cluster_ready(which);
    }

    return ngx_im_redis_conn(which)->state == NGX_IM_REDIS_READY;
}


ngx_uint_t
ngx_im_redis_away(ngx_uint_t which)
{
    ngx_im_redis_conn_t  *rc;

    if (ngx_im_redis_routed(which)) {
        return ngx_im_redis_cluster_away(which)
               || ngx_im_redis_cluster_down();
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
        ngx_im_redis_sub_connected(rc);

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
        ngx_im_redis_wait_lost();
    }

    if (rc == &ngx_im_redis_conns[NGX_IM_REDIS_GROUP]
        && ngx_im_redis_group_apart)
    {
        /* im_group_redis: neither the sentinels' master nor the cluster's */
        return;
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

u_char *
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

    if (ngx_im_redis_routed(which)) {
        if (argvlen[0] == 5 && ngx_strncmp(argv[0], "MULTI", 5) == 0) {
            /* sent with the transaction's first key, to its master */
            ngx_im_redis_tx_begin(cb, data);
            return NGX_OK;
        }

        if (ngx_im_redis_tx_open) {
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

    /* a copy for redirects only where the cluster may redirect */
    return ngx_im_redis_send(rc, cb, data, argc, argv, argvlen,
                             ngx_im_redis_routed(which) ? NGX_IM_REDIS_KEEP
                                                        : 0);
}


ngx_int_t
ngx_im_redis_send(ngx_im_redis_conn_t *rc, ngx_im_redis_cb_pt cb,
    void *data, int argc, const char **argv, const size_t *argvlen,
    ngx_uint_t keep)
{
    int                    i;
    u_char                *p, *start;
    size_t                 need;
    ngx_uint_t             spublish;
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

    if (ngx_im_redis_clustered && keep == NGX_IM_REDIS_KEEP) {
        copy = ngx_im_redis_copy(start, p - start);
        if (copy == NULL) {
            return NGX_ERROR;
        }

    } else if (ngx_im_redis_clustered && keep == NGX_IM_REDIS_KEEP_TX) {
        if (ngx_im_redis_tx_keep(start, p - start, cb, data) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    ngx_im_redis_conn_commit(rc, p);

    ngx_im_redis_push(q, cb, data, ngx_im_redis_conn_now(), copy);

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

ngx_int_t
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

    if (ngx_im_redis_routed(which)) {
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


ngx_int_t
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
        switch (ngx_im_redis_redirected(rc, &req, reply)) {

        case NGX_OK:
            /* sent again where the cluster said: answered there */
            return NGX_OK;

        case NGX_DONE:
            /* a transaction's command: its copy goes with EXEC */
            break;

        default:
            ngx_im_redis_copy_free(req.copy);
        }

    } else if (ngx_im_redis_clustered && reply->type == REDIS_REPLY_ERROR
               && reply->len > 6 && ngx_strncmp(reply->str, "MOVED ", 6) == 0)
    {
        /* a command of a transaction kept no copy (DISCARD, or out of
         * memory): not followed, but the next one goes right */
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


/* the connection is gone: what it was asked fails, oldest first */

static void
ngx_im_redis_fail_all(ngx_im_redis_queue_t *q)
{
    ngx_im_redis_req_t  req;

    while (q->n) {
        req = ngx_im_redis_shift(q);

        ngx_im_stats->redis_failed++;

        if (req.copy) {
            ngx_im_redis_copy_done(req.copy);
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
 * subscriptions and answered ["pong", ""] (see ngx_im_redis_pubsub.c).
 */

static ngx_int_t
ngx_im_redis_ping(ngx_im_redis_conn_t *rc)
{
    static const char  *argv[1] = { "PING" };
    static size_t       argvlen[1] = { 4 };

    if (rc->index != NGX_IM_REDIS_SUB) {
        return ngx_im_redis_send(rc, NULL, NULL, 1, argv, argvlen, 0);
    }

    return ngx_im_redis_conn_ping(rc);
}
