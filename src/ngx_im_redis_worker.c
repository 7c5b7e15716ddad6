/*
 * ngx_im_redis_worker.c: the worker's Redis connections started, watched
 * and stopped.
 *
 * Owns the servers the connections go to (im_redis, with im_group_redis
 * the group connection's own), their start at worker start and their end
 * at its exit, which of them a configuration uses, what each does when it
 * comes up, answers and goes (the handlers ngx_im_redis_conn.c calls:
 * the subscriber's replies to pub/sub, a lost inbox connection's WAITs to
 * im_redis_wait, a lost master to the sentinels or the slot map), the
 * watchdog's PING, with im_redis_sentinel the restart of the connections
 * when the master moves, and whether a role's connection is ready or
 * away.  It is the top of the Redis files: it calls the parts below it
 * (ngx_im_redis_pubsub.c, ngx_im_redis_wait.c,
 * ngx_im_redis_redirect.c, and ngx_im_redis.c under them all), and gives
 * the redirects the one thing they call back up: what the first slot
 * map makes of the connections that came before it.
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
static void ngx_im_redis_mapped(void);
static void ngx_im_redis_group_init(ngx_im_conf_t *imcf);


static const char  *ngx_im_redis_names[NGX_IM_REDIS_N] = {
    "inbox", "group", "sub", "events"
};

static ngx_im_redis_server_t     ngx_im_redis_server;
/* im_group_redis: the group connection's own Redis, never a cluster's
 * slot (docs/decisions/045-group-redis.md) */
static ngx_im_redis_server_t     ngx_im_redis_group_server;


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
        ngx_im_redis_redirect_init(cycle, ngx_im_redis_mapped);

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


ngx_uint_t
ngx_im_redis_ready(ngx_uint_t which)
{
    if (ngx_im_redis_routed(which)) {
        return ngx_im_redis_cluster_ready(which);
    }

    return ngx_im_redis_role_conn(which)->state == NGX_IM_REDIS_READY;
}


ngx_uint_t
ngx_im_redis_away(ngx_uint_t which)
{
    ngx_im_redis_conn_t  *rc;

    if (ngx_im_redis_routed(which)) {
        return ngx_im_redis_cluster_away(which)
               || ngx_im_redis_cluster_down();
    }

    rc = ngx_im_redis_role_conn(which);

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


/* cluster mode: the slot map is read for the first time, and the
 * connections that came before it are of use now */

static void
ngx_im_redis_mapped(void)
{
    ngx_im_redis_sub_connected(NULL);

    if (ngx_im_redis_handlers->inbox_connected) {
        ngx_im_redis_handlers->inbox_connected();
    }
}
