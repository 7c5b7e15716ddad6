/*
 * ngx_im_redis.c: what the worker's Redis connections share, and the
 * command path.
 *
 * Owns the worker's connections (inbox, group, subscriber, events: each an
 * ngx_im_redis_conn_t, which connects, logs in, watches and reconnects)
 * with their callback rings, and the router's handlers; the RESP
 * formatting of commands straight into a connection's output, with each
 * command's callback at the end of its connection's ring; the flush of
 * the inbox connection; in cluster mode, which master's connection a
 * command goes to, a transaction's way to one master (MULTI held until
 * its first key names the master) and the copy of each command's bytes
 * kept until its reply, for a redirect (from a list of spares).  It is
 * the lowest of the Redis files and calls none of the others, which stand
 * on it: what a reply makes of a command is ngx_im_redis_redirect.c's,
 * pub/sub ngx_im_redis_pubsub.c's, the WAIT of im_redis_wait
 * ngx_im_redis_wait.c's, the connections' start, end and handlers
 * ngx_im_redis_worker.c's.  Nothing here knows about messages or
 * sessions.
 */

#include "ngx_im_redis_int.h"
#include "ngx_im_alloc.h"


static void ngx_im_redis_tx_begin(ngx_im_redis_cb_pt cb, void *data);
static ngx_int_t ngx_im_redis_tx_cmd(ngx_uint_t which, ngx_im_redis_cb_pt cb,
    void *data, int argc, const char **argv, const size_t *argvlen);
static ngx_int_t ngx_im_redis_tx_keep(u_char *bytes, size_t len,
    ngx_im_redis_cb_pt cb, void *data);
static void ngx_im_redis_tx_copy(ngx_im_redis_conn_t *rc);
static ngx_im_redis_copy_t *ngx_im_redis_copy(u_char *bytes, size_t len);
static ngx_im_redis_copy_t *ngx_im_redis_copy_alloc(size_t len,
    ngx_uint_t cmds);
static void ngx_im_redis_copy_done(ngx_im_redis_copy_t *copy);


ngx_im_redis_conn_t              ngx_im_redis_conns[NGX_IM_REDIS_N];
ngx_im_redis_queue_t             ngx_im_redis_queues[NGX_IM_REDIS_N];
ngx_uint_t                       ngx_im_redis_group_apart;
ngx_im_redis_handlers_t         *ngx_im_redis_handlers;
ngx_connection_t                 ngx_im_redis_dummy;
ngx_uint_t                       ngx_im_redis_clustered;
ngx_uint_t                       ngx_im_redis_exiting;


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


/* the transaction being queued (see ngx_im_redis_tx_cmd): its bytes and
 * its commands' callbacks so far, for its copy */
static ngx_uint_t                ngx_im_redis_tx_open;
static struct {
    ngx_im_redis_conn_t         *rc;
    ngx_im_redis_cb_pt           cb;     /* MULTI's */
    void                        *data;
    u_char                      *buf;
    size_t                       len;
    size_t                       size;
    ngx_im_redis_txcb_t         *cbs;
    ngx_uint_t                   n;
    ngx_uint_t                   ncbs;
} ngx_im_redis_tx;


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
        rc = ngx_im_redis_role_conn(which);
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


static void
ngx_im_redis_tx_begin(ngx_im_redis_cb_pt cb, void *data)
{
    ngx_im_redis_tx_open = 1;
    ngx_im_redis_tx.rc = NULL;
    ngx_im_redis_tx.cb = cb;
    ngx_im_redis_tx.data = data;
}


/*
 * Cluster mode: a transaction (MULTI ... EXEC, decision 037) goes to the
 * master of its first key, whole; the router makes one per recipient, so
 * its keys are of one slot.  Sent again alone, a command would run
 * outside its transaction: the transaction keeps one copy of all its
 * bytes instead, made at EXEC from what its commands left in
 * ngx_im_redis_tx, and is sent again whole when a redirect at queue time
 * aborted it (EXECABORT) or EXEC itself was redirected (decision 047).
 */

static ngx_int_t
ngx_im_redis_tx_cmd(ngx_uint_t which, ngx_im_redis_cb_pt cb, void *data,
    int argc, const char **argv, const size_t *argvlen)
{
    ngx_int_t             slot, rv;
    ngx_uint_t            end, exec;
    ngx_im_redis_conn_t  *rc;

    static const char    *multi[1] = { "MULTI" };
    static size_t         multilen[1] = { 5 };

    exec = (argvlen[0] == 4 && ngx_strncmp(argv[0], "EXEC", 4) == 0);
    end = exec
          || (argvlen[0] == 7 && ngx_strncmp(argv[0], "DISCARD", 7) == 0);

    rc = ngx_im_redis_tx.rc;

    if (rc == NULL) {
        slot = ngx_im_redis_cluster_slot(argc, argv, argvlen);

        rc = ngx_im_redis_cluster_conn(which,
                                       slot == NGX_DECLINED ? 0 : slot);

        ngx_im_redis_tx.len = 0;
        ngx_im_redis_tx.n = 0;

        if (rc == NULL
            || ngx_im_redis_send(rc, ngx_im_redis_tx.cb, ngx_im_redis_tx.data,
                                 1, multi, multilen, NGX_IM_REDIS_KEEP_TX)
               != NGX_OK)
        {
            if (end) {
                ngx_im_redis_tx_open = 0;
            }

            return NGX_ERROR;
        }

        ngx_im_redis_tx.rc = rc;
    }

    /* DISCARD: no copy, nothing is sent again */
    rv = ngx_im_redis_send(rc, cb, data, argc, argv, argvlen,
                           (end && !exec) ? 0 : NGX_IM_REDIS_KEEP_TX);

    if (end) {
        if (rv == NGX_OK && exec) {
            ngx_im_redis_tx_copy(rc);
        }

        ngx_im_redis_tx_open = 0;
        ngx_im_redis_tx.rc = NULL;
    }

    return rv;
}


static ngx_int_t
ngx_im_redis_tx_keep(u_char *bytes, size_t len, ngx_im_redis_cb_pt cb,
    void *data)
{
    u_char               *p;
    size_t                size;
    ngx_im_redis_txcb_t  *cbs;

    if (ngx_im_redis_tx.len + len > ngx_im_redis_tx.size) {
        size = ngx_max(2 * (ngx_im_redis_tx.len + len), 1024);

        p = ngx_alloc(size, ngx_cycle->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (ngx_im_redis_tx.buf) {
            ngx_memcpy(p, ngx_im_redis_tx.buf, ngx_im_redis_tx.len);
            ngx_free(ngx_im_redis_tx.buf);
        }

        ngx_im_redis_tx.buf = p;
        ngx_im_redis_tx.size = size;
    }

    if (ngx_im_redis_tx.n == ngx_im_redis_tx.ncbs) {
        size = ngx_im_redis_tx.ncbs ? 2 * ngx_im_redis_tx.ncbs : 16;

        cbs = ngx_alloc(size * sizeof(ngx_im_redis_txcb_t), ngx_cycle->log);
        if (cbs == NULL) {
            return NGX_ERROR;
        }

        if (ngx_im_redis_tx.cbs) {
            ngx_memcpy(cbs, ngx_im_redis_tx.cbs,
                       ngx_im_redis_tx.n * sizeof(ngx_im_redis_txcb_t));
            ngx_free(ngx_im_redis_tx.cbs);
        }

        ngx_im_redis_tx.cbs = cbs;
        ngx_im_redis_tx.ncbs = size;
    }

    ngx_memcpy(ngx_im_redis_tx.buf + ngx_im_redis_tx.len, bytes, len);
    ngx_im_redis_tx.len += len;

    cbs = &ngx_im_redis_tx.cbs[ngx_im_redis_tx.n++];
    cbs->cb = cb;
    cbs->data = data;

    return NGX_OK;
}


/*
 * EXEC is queued: the transaction's copy, and every command of it (the
 * last ones on the connection's ring) pointed to it.  Without memory for
 * it the transaction goes as it did before there were copies: a redirect
 * refuses it.
 */

static void
ngx_im_redis_tx_copy(ngx_im_redis_conn_t *rc)
{
    ngx_uint_t             i, n;
    ngx_im_redis_copy_t   *copy;
    ngx_im_redis_queue_t  *q;

    n = ngx_im_redis_tx.n;

    copy = ngx_im_redis_copy_alloc(ngx_im_redis_tx.len, n);
    if (copy == NULL) {
        return;
    }

    ngx_memcpy(copy + 1, ngx_im_redis_tx.cbs,
               (n - 1) * sizeof(ngx_im_redis_txcb_t));
    ngx_memcpy(ngx_im_redis_copy_bytes(copy), ngx_im_redis_tx.buf,
               ngx_im_redis_tx.len);

    q = rc->data;

    for (i = 1; i <= n; i++) {
        q->ring[(q->first + q->n - i) & (q->size - 1)].copy = copy;
    }
}


static ngx_im_redis_copy_t *
ngx_im_redis_copy_alloc(size_t len, ngx_uint_t cmds)
{
    size_t                size;
    ngx_im_redis_copy_t  *copy;

    size = (cmds - 1) * sizeof(ngx_im_redis_txcb_t) + len;

    copy = (size <= NGX_IM_REDIS_COPY_SMALL)
           ? ngx_im_spare_get(&ngx_im_redis_copies)
           : ngx_alloc(sizeof(ngx_im_redis_copy_t) + size, ngx_cycle->log);
    if (copy == NULL) {
        return NULL;
    }

    copy->len = len;
    copy->redirects = 0;
    copy->made = ngx_current_msec;
    copy->cmds = cmds;
    copy->answered = 0;
    copy->to = NULL;
    copy->asking = 0;
    copy->tryagain = 0;

    return copy;
}


static ngx_im_redis_copy_t *
ngx_im_redis_copy(u_char *bytes, size_t len)
{
    ngx_im_redis_copy_t  *copy;

    copy = ngx_im_redis_copy_alloc(len, 1);
    if (copy == NULL) {
        return NULL;
    }

    ngx_memcpy(copy + 1, bytes, len);

    return copy;
}


void
ngx_im_redis_copy_free(ngx_im_redis_copy_t *copy)
{
    if ((copy->cmds - 1) * sizeof(ngx_im_redis_txcb_t) + copy->len
        <= NGX_IM_REDIS_COPY_SMALL)
    {
        ngx_im_spare_put(&ngx_im_redis_copies, copy);

    } else {
        ngx_free(copy);
    }
}


static void
ngx_im_redis_copy_done(ngx_im_redis_copy_t *copy)
{
    if (copy->cmds > 1 && ++copy->answered < copy->cmds) {
        return;
    }

    ngx_im_redis_copy_free(copy);
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

    rc = ngx_im_redis_role_conn(which);

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


/* the connection is gone: what it was asked fails, oldest first */

void
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


