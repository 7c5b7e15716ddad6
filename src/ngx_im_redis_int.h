/*
 * ngx_im_redis_int.h: what the files of the worker's Redis connections
 * share, in place of statics, lowest first: the connections' shared state
 * and the command path (ngx_im_redis.c); what a reply makes of its
 * command, in cluster mode the redirects (ngx_im_redis_redirect.c);
 * pub/sub (ngx_im_redis_pubsub.c) and WAIT (ngx_im_redis_wait.c); the
 * connections' start, end and handlers (ngx_im_redis_worker.c).  A file
 * calls only the ones before it; the one call back up (the first slot
 * map read) goes through the function the top gives
 * ngx_im_redis_redirect_init().  Included by those files only: nothing
 * above the Redis layer sees a callback ring (t/013-layers.t checks it).
 */

#ifndef _NGX_IM_REDIS_INT_H_INCLUDED_
#define _NGX_IM_REDIS_INT_H_INCLUDED_


#include "ngx_im.h"
#include "ngx_im_redis.h"
#include "ngx_im_redis_conn.h"
#include "ngx_im_redis_cluster.h"


typedef struct {
    ngx_im_redis_cb_pt     cb;
    void                  *data;
} ngx_im_redis_txcb_t;


/*
 * In cluster mode, a command's bytes kept until its reply: a redirect
 * sends them again elsewhere.  A transaction's copy holds all of it,
 * MULTI to EXEC, and the callbacks of its commands but EXEC (whose is the
 * request's); every command of it points to the copy, EXEC's frees it.
 */
typedef struct {
    size_t                 len;
    ngx_uint_t             redirects;
    ngx_msec_t             made;      /* for the bound of sending again */
    ngx_uint_t             cmds;      /* 1, or a transaction's */
    ngx_uint_t             answered;  /* a transaction's replies so far */
    /* where a transaction's queued command was redirected */
    ngx_im_cluster_node_t *to;
    unsigned               asking:1;
    unsigned               tryagain:1;
    /* ngx_im_redis_txcb_t cbs[cmds - 1]; */
    /* u_char              bytes[len]; */
} ngx_im_redis_copy_t;

#define ngx_im_redis_copy_bytes(copy)                                         \
    ((u_char *) ((ngx_im_redis_txcb_t *) ((copy) + 1) + (copy)->cmds - 1))

/* ngx_im_redis_send()'s keep: no copy, a copy, a part of the transaction
 * being queued */
#define NGX_IM_REDIS_KEEP     1
#define NGX_IM_REDIS_KEEP_TX  2


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


/* ngx_im_redis.c: the connections' shared state and the command path */

extern ngx_im_redis_conn_t       ngx_im_redis_conns[NGX_IM_REDIS_N];
/* the callback rings of ngx_im_redis_conns (rc->data) */
extern ngx_im_redis_queue_t      ngx_im_redis_queues[NGX_IM_REDIS_N];
extern ngx_im_redis_handlers_t  *ngx_im_redis_handlers;
/* nginx's debug log reads a descriptor out of every timer's data */
extern ngx_connection_t          ngx_im_redis_dummy;
/* im_redis_cluster, read once per worker: tested for every command */
extern ngx_uint_t                ngx_im_redis_clustered;
/* im_group_redis: the group connection goes to a Redis of its own */
extern ngx_uint_t                ngx_im_redis_group_apart;
extern ngx_uint_t                ngx_im_redis_exiting;

u_char *ngx_im_redis_num(u_char *p, u_char lead, size_t n);
/* keep: in cluster mode, a copy of the bytes for a redirect */
ngx_int_t ngx_im_redis_send(ngx_im_redis_conn_t *rc, ngx_im_redis_cb_pt cb,
    void *data, int argc, const char **argv, const size_t *argvlen,
    ngx_uint_t keep);
ngx_int_t ngx_im_redis_grow(ngx_im_redis_queue_t *q);
/* the connection is gone: what it was asked fails, oldest first */
void ngx_im_redis_fail_all(ngx_im_redis_queue_t *q);
void ngx_im_redis_copy_free(ngx_im_redis_copy_t *copy);


/* a command of this role goes to its slot's master: in cluster mode, but
 * for the group sets on a Redis of their own (im_group_redis) */
#define ngx_im_redis_routed(which)                                           \
    (ngx_im_redis_clustered                                                  \
     && !((which) == NGX_IM_REDIS_GROUP && ngx_im_redis_group_apart))


/* the connection of a role (NGX_IM_REDIS_*) when not routed: the group's
 * is the inbox's when both use one database */

static ngx_inline ngx_im_redis_conn_t *
ngx_im_redis_role_conn(ngx_uint_t which)
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


static ngx_inline ngx_im_redis_queue_t *
ngx_im_redis_queue(ngx_im_redis_conn_t *rc)
{
    if (rc->data == NULL) {
        /* a cluster node's connection: its ring made at first use */
        rc->data = ngx_calloc(sizeof(ngx_im_redis_queue_t), ngx_cycle->log);
    }

    return rc->data;
}


/* a command's callback at the end of the ring, which has room for it */

static ngx_inline void
ngx_im_redis_push(ngx_im_redis_queue_t *q, ngx_im_redis_cb_pt cb,
    void *data, uint64_t sent, ngx_im_redis_copy_t *copy)
{
    ngx_im_redis_req_t  *req;

    req = &q->ring[(q->first + q->n++) & (q->size - 1)];
    req->cb = cb;
    req->data = data;
    req->sent = sent;
    req->copy = copy;
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


/* ngx_im_redis_redirect.c: a reply's command, and in cluster mode a
 * command's copy sent again where the cluster says */

/* mapped: what the first slot map makes of the connections */
void ngx_im_redis_redirect_init(ngx_cycle_t *cycle, void (*mapped)(void));
void ngx_im_redis_redirect_exit(void);
/* the reply to the oldest command of rc: its callback called */
ngx_int_t ngx_im_redis_answer(ngx_im_redis_conn_t *rc, redisReply *reply);
ngx_uint_t ngx_im_redis_cluster_down(void);
void ngx_im_redis_read_map(void);


/* ngx_im_redis_pubsub.c: (un)subscriptions and what the subscriber
 * connection receives */

void ngx_im_redis_pubsub_init(ngx_cycle_t *cycle);
void ngx_im_redis_pubsub_exit(void);
/* the subscriber connection went: nothing of the pass's batches leaves */
void ngx_im_redis_batch_reset(void);
void ngx_im_redis_sub_reply(ngx_im_redis_conn_t *rc, redisReply *reply);
void ngx_im_redis_ssub_reply(ngx_im_redis_conn_t *rc, redisReply *reply);
/* the router subscribes again what rc had (NULL: every connection's) */
void ngx_im_redis_sub_connected(ngx_im_redis_conn_t *rc);


/* ngx_im_redis_wait.c: im_redis_wait */

void ngx_im_redis_wait_init(void);
/* the inbox connection went, and its WAITs failed with it */
void ngx_im_redis_wait_lost(void);
/* the connection's flush handler: a WAIT behind a pass's appends */
void ngx_im_redis_wait_flush(ngx_im_redis_conn_t *rc);
void ngx_im_redis_wait_release(redisReply *reply);


#endif /* _NGX_IM_REDIS_INT_H_INCLUDED_ */
