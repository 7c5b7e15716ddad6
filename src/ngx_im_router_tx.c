/*
 * ngx_im_router_tx.c: getting one message to its recipients, stored and
 * published.
 *
 * ngx_im_router_deliver() hands a message to each recipient uid: to the
 * sessions of this worker (the uid table, ngx_im_table.c), to the uid's
 * channel for the other workers and nodes and, in write-through, first to
 * the inbox, in one transaction with the PUBLISH (decision 037): the
 * pushes here only once Redis has the message.  In offline-only the
 * pushes and the datagrams to the sibling workers go at once, and the
 * PUBLISH's count says whether anyone took it or it is stored.  The
 * sender's ticket is served once per recipient.  What arrives for a uid
 * (the dispatch) is ngx_im_router.c's.
 */

#include "ngx_im_router_int.h"
#include "ngx_im_redis.h"
#include "ngx_im_store.h"
#include "ngx_im_dir.h"
#include "ngx_im_traffic.h"
#include "ngx_im_alone.h"
#include "ngx_im_events.h"
#include "ngx_im_direct.h"
#include "ngx_im_owe.h"


/* an offline-only recipient whose PUBLISH count decides whether to store */
typedef struct {
    ngx_im_ticket_t       *ticket;
    ngx_im_msg_t          *msg;
    uint32_t               uid;
    uint32_t               stamp;       /* 0: not a probe */
    unsigned               local:1;     /* a session here took it */
    unsigned               self:1;      /* this worker is subscribed */
} ngx_im_rcpt_t;


typedef struct ngx_im_tx_s  ngx_im_tx_t;

/* write-through: a recipient in a transaction, its commands' places in
 * EXEC's reply */
typedef struct {
    ngx_im_tx_t           *tx;
    uint32_t               uid;
    uint32_t               stamp;       /* the PUBLISH probes: alone? */
    uint16_t               at;          /* its RPUSH */
    uint16_t               pub;         /* its PUBLISH + 1, 0: none */
    unsigned               ttl_sent:1;
    unsigned               publish:1;   /* on the channel too */
    unsigned               offline:1;   /* the PUBLISH's count: event */
    unsigned               batch:1;     /* counted in the batch */
} ngx_im_tx_rcpt_t;


/* write-through: the appends and PUBLISHes of a message's recipients (up
 * to NGX_IM_ROUTER_TX of them) in one MULTI ... EXEC, or, when none of
 * them needs the channel, plain appends */
struct ngx_im_tx_s {
    ngx_im_ticket_t       *ticket;
    ngx_im_msg_t          *msg;
    ngx_uint_t             n;
    ngx_uint_t             pending;     /* replies to come */
    ngx_uint_t             direct;      /* may go without Redis */
    ngx_uint_t             held;        /* served at WAIT's reply */
    ngx_im_tx_rcpt_t       rcpts[1];
};


/* recipients per transaction: a large group's EXEC holds Redis no
 * longer than a pipelined page of commands would */
#define NGX_IM_ROUTER_TX      128


/*
 * Write-through appends of group messages go in batches (decision 048).
 * While the plain appends of earlier group messages are under way, those
 * of the next ones wait, and leave together once the last of the batch
 * is answered, sorted by uid (each uid's in the order they came).  A
 * member's pushes leave at its append's reply (decision 037), so a
 * member of several group messages answered together gets them in one
 * send, as it did when the pushes went before the appends.  Redis runs
 * the connection's commands in order anyway: the wait adds a turn of the
 * worker to the next messages' appends, no more.  Any other append or
 * transaction sends the waiting ones first, so no uid's order changes.
 */

typedef struct {
    uint32_t               uid;
    uint32_t               order;       /* of arrival: the sort is stable */
    ngx_im_tx_rcpt_t      *rcpt;
} ngx_im_next_t;

/* how a message's appends go: alone, in the batch, waiting for it */
#define NGX_IM_ROUTER_ONE     0
#define NGX_IM_ROUTER_BATCH   1
#define NGX_IM_ROUTER_WAIT    2

static ngx_im_next_t          *ngx_im_router_next;
static ngx_uint_t              ngx_im_router_nnext;
static ngx_uint_t              ngx_im_router_next_size;
/* the appends of the batch under way whose replies are to come */
static ngx_uint_t              ngx_im_router_batch;
/* the end of a pass that starts a batch */
static ngx_event_t             ngx_im_router_next_ev;


static uint32_t *ngx_im_router_owe(ngx_im_msg_t *msg, uint32_t *uids,
    ngx_uint_t n, ngx_im_ticket_t *t);
static void ngx_im_router_tx(ngx_im_msg_t *msg, uint32_t *uids,
    ngx_uint_t n, ngx_im_ticket_t *t, u_char *buf, size_t len,
    ngx_uint_t how);
static ngx_int_t ngx_im_router_append(ngx_im_tx_rcpt_t *r,
    ngx_uint_t batch);
static ngx_int_t ngx_im_router_wait(ngx_im_tx_rcpt_t *r);
static void ngx_im_router_send_next(void);
static void ngx_im_router_next_handler(ngx_event_t *ev);
static int ngx_libc_cdecl ngx_im_router_next_cmp(const void *one,
    const void *two);
static void ngx_im_router_committed(redisReply *reply, void *data);
static void ngx_im_router_appended(redisReply *reply, void *data);
static void ngx_im_router_waited(redisReply *reply, void *data);
static void ngx_im_router_serve_held(ngx_im_tx_t *tx, ngx_uint_t ok);
static void ngx_im_router_stored_one(ngx_im_tx_t *tx, ngx_im_tx_rcpt_t *r,
    ngx_uint_t ok, redisReply *pub, ngx_uint_t hold);
static void ngx_im_router_tx_done(ngx_im_tx_t *tx);
static void ngx_im_router_refused(uint32_t uid, ngx_im_msg_t *msg,
    ngx_im_ticket_t *t, ngx_uint_t direct);
static void ngx_im_router_stored(redisReply *reply, void *data);
static void ngx_im_router_offline_event(ngx_im_msg_t *msg, uint32_t uid);
static void ngx_im_router_published(redisReply *reply, void *data);

static ngx_im_spares_t         ngx_im_spare_rcpts =
    ngx_im_spares(ngx_im_rcpt_t, 4096);


/* delivery */

ngx_uint_t
ngx_im_router_local(ngx_im_user_t *u, ngx_im_msg_t *msg, ngx_uint_t stored,
    uint64_t after)
{
    ngx_uint_t       n;
    ngx_queue_t     *q, *next;
    ngx_im_route_t  *r;

    n = 0;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        r = ngx_queue_data(q, ngx_im_route_t, link);

        if (r->live_seq <= after) {
            /* had it directly from this worker */
            n++;
            continue;
        }

        if (ngx_im_table_ops()->push(r, msg, stored) == NGX_OK) {
            n++;
        }
    }

    return n;
}


void
ngx_im_router_deliver(ngx_im_msg_t *msg, uint32_t *uids, ngx_uint_t n,
    ngx_im_ticket_t *t)
{
    u_char         *buf, *flags;
    size_t          len;
    uint32_t        stamp, *rest;
    ngx_int_t       rc;
    ngx_uint_t      i, m, stored, local, siblings, how;
    ngx_im_user_t  *u;
    ngx_im_rcpt_t  *rcpt;

    stored = (ngx_im_get_conf()->delivery == NGX_IM_WRITE_THROUGH);
    rest = NULL;

    t->remaining = n;

    /* its place in this worker's order, for the queues of the sessions
     * that get it now and of those that get its copy later */
    msg->seq = ngx_im_table_next_seq();
    msg->origin = ngx_im_router_origin;

    /*
     * One 'D' record for all the recipients, its flags byte patched for
     * each.  It is the one allocation per message (not per recipient)
     * left on the heap: its size follows the message's, up to
     * im_max_message, and a worker-wide buffer could be reused under a
     * delivery that a refusal's answer starts inside this one.
     */

    len = IM_TRAFFIC_D_LEN(ngx_im_worker_id.len, msg->entry_len);
    buf = ngx_alloc(len, ngx_cycle->log);
    flags = NULL;

    if (buf) {
        (void) im_traffic_build_d(buf, ngx_im_worker_id.data,
                                  ngx_im_worker_id.len,
                                  stored ? IM_TRAFFIC_STORED : 0,
                                  msg->seq, msg->entry,
                                  msg->entry_len);
        flags = buf + IM_TRAFFIC_FLAGS_AT(ngx_im_worker_id.len);
    }

    if (stored) {
        if (buf) {
            /* the sibling workers take the channel's copy: see
             * ngx_im_router_tx() */
            *flags |= IM_TRAFFIC_ALL;
        }

        /* every part of a message goes the same way */
        how = (n == 1) ? NGX_IM_ROUTER_ONE : NGX_IM_ROUTER_WAIT;

        if (how == NGX_IM_ROUTER_WAIT && buf && ngx_im_owe_on()) {
            /* members here only: one record for all, no appends */
            rest = ngx_im_router_owe(msg, uids, n, t);

            if (rest) {
                n = rest[0];
                uids = rest + 1;
            }
        }

        /* t may be served whole, and freed, in the last of these */

        for (i = 0; i < n; i += m) {
            /* in a Redis Cluster a transaction's keys must be of one
             * slot: one recipient per transaction */
            m = ngx_im_get_conf()->redis_cluster
                ? 1 : ngx_min(n - i, NGX_IM_ROUTER_TX);
            ngx_im_router_tx(msg, uids + i, m, t, buf, len, how);
        }

        if (buf) {
            ngx_free(buf);
        }

        if (rest) {
            ngx_free(rest);
        }

        return;
    }

    /* offline-only: pushed at once, stored when nobody took it */

    siblings = !ngx_im_dir_alone();

    for (i = 0; i < n; i++) {

        u = ngx_im_table_find(uids[i]);
        local = u ? ngx_im_router_local(u, msg, 0, 0) : 0;

        /* this node's other workers: by datagram, no Redis in between */

        rc = NGX_DECLINED;

        if (buf) {
            /*
             * Unless a datagram goes, the siblings that hear the channel
             * copy take it.  A sibling whose last session of the uid has
             * just left may still be subscribed, and PUBLISH then counts
             * it as a taker; when it holds no other uid it is not even
             * among the directory's holders (ngx_im_dir_alone), and no
             * lookup is made: the flag must be set then too.
             */
            *flags |= IM_TRAFFIC_ALL;

            if (siblings) {
                rc = ngx_im_table_peers(uids[i], buf, len);

                if (rc == NGX_OK) {
                    *flags &= ~IM_TRAFFIC_ALL;
                    local++;
                }
            }
        }

        /* nobody elsewhere: the channel is skipped */

        if (u && local && rc != NGX_AGAIN && ngx_im_alone_skip(u)) {
            ngx_im_ticket_served(t, 1);
            continue;
        }

        /* a sibling worker's subscription would count too */
        stamp = (rc == NGX_DECLINED) ? ngx_im_alone_stamp(u) : 0;

        rcpt = buf ? ngx_im_spare_get(&ngx_im_spare_rcpts) : NULL;

        if (rcpt == NULL) {
            ngx_im_ticket_served(t, local > 0);
            continue;
        }

        rcpt->ticket = t;
        rcpt->msg = ngx_im_msg_ref(msg);
        rcpt->uid = uids[i];
        rcpt->local = (local > 0);
        /* this worker's own subscription is no taker (its echo is not
         * delivered), but only a confirmed one is surely counted: one being
         * made or undone: PUBLISH's count then says one too many */
        rcpt->self = (u && u->sub != NGX_IM_SUB_NONE);
        rcpt->stamp = stamp;

        if (ngx_im_table_publish(uids[i], buf, len, ngx_im_router_published,
                                  rcpt)
            != NGX_OK)
        {
            ngx_im_msg_unref(rcpt->msg);
            ngx_im_spare_put(&ngx_im_spare_rcpts, rcpt);
            ngx_im_ticket_served(t, local > 0);
        }
    }

    if (buf) {
        ngx_free(buf);
    }
}


/*
 * Write-through group messages (decision 052): the members with sessions
 * on this worker and on no other worker or node need no PUBLISH, and get
 * no append either: they are owed, one record for all of them
 * (ngx_im_owe.c), pushed at its reply.  The others (returned: their count,
 * then their uids, on the heap; NULL when none was owed) go as before.
 * The appends that wait for their batch leave first: no uid's message
 * overtakes an earlier one.
 */

static uint32_t *
ngx_im_router_owe(ngx_im_msg_t *msg, uint32_t *uids, ngx_uint_t n,
    ngx_im_ticket_t *t)
{
    uint32_t       *owed, *rest;
    ngx_uint_t      i, nowed, nrest;
    ngx_im_user_t  *u;

    owed = ngx_alloc((2 * n + 1) * sizeof(uint32_t), ngx_cycle->log);
    if (owed == NULL) {
        return NULL;
    }

    rest = owed + n;
    nowed = 0;
    nrest = 0;

    for (i = 0; i < n; i++) {
        u = ngx_im_table_find(uids[i]);

        if (u && !ngx_queue_empty(&u->sessions) && ngx_im_alone_skip(u)) {
            owed[nowed++] = uids[i];

        } else {
            rest[1 + nrest++] = uids[i];
        }
    }

    if (nowed == 0) {
        ngx_free(owed);
        return NULL;
    }

    ngx_im_router_send_next();

    rest[0] = (uint32_t) nrest;

    /* the ticket counts every member: it cannot be served whole here
     * while the others are to come */
    ngx_im_owe_deliver(msg, owed, nowed, t);

    /* the caller frees it from its start */
    ngx_memmove(owed, rest, (nrest + 1) * sizeof(uint32_t));

    return owed;
}


/*
 * Write-through.  Each recipient's append and its channel PUBLISH leave
 * together, in a transaction (MULTI, RPUSH, PUBLISH, ..., EXEC on the
 * inbox connection), and its pushes to this worker's sessions only at
 * EXEC's reply, once Redis has the message.  So a refused message
 * reached nobody, whatever failed: the connection (the commands fail at
 * once, or their replies never come), or Redis answering an error at
 * queue time (LOADING after a restart, OOM, READONLY), which aborts the
 * EXEC and the PUBLISH with it; the sender's resend is no duplicate (but
 * after ngx_im_direct.c's refusal, which follows a push).  And an inbox
 * read followed by its mark (decision 040) finds each message either in
 * the list or ahead of the mark on the channel: nothing can come between
 * an append and its PUBLISH.
 *
 * The sibling workers take the channel's copy too (IM_TRAFFIC_ALL set,
 * no datagram): a datagram could leave only at the reply, and might
 * reach a sibling after the mark of a read made behind the append.
 *
 * Replies come in the order of the transactions, so the pushes leave in
 * the order the messages were accepted, and a recipient's ack (an LREM)
 * follows its append.  A recipient here waits one Redis round trip for
 * its push (decision 037).
 */

static void
ngx_im_router_tx(ngx_im_msg_t *msg, uint32_t *uids, ngx_uint_t n,
    ngx_im_ticket_t *t, u_char *buf, size_t len, ngx_uint_t how)
{
    ngx_uint_t         i, at, cmds, ttl_sent, direct, local, npub;
    ngx_im_tx_t       *tx;
    ngx_im_user_t     *u;
    ngx_im_tx_rcpt_t  *r;

    /* a client's 1:1 message: may go without Redis when refused */
    direct = (n == 1 && t->remaining == 1 && t->direct);

    tx = ngx_alloc(offsetof(ngx_im_tx_t, rcpts)
                   + n * sizeof(ngx_im_tx_rcpt_t), ngx_cycle->log);
    if (tx == NULL) {
        goto refused;
    }

    tx->ticket = t;
    tx->msg = msg;
    tx->n = n;
    tx->direct = direct;

    /* which recipients need the channel */

    npub = 0;

    for (i = 0; i < n; i++) {
        r = &tx->rcpts[i];

        r->tx = tx;
        r->uid = uids[i];
        r->stamp = 0;
        r->pub = 0;
        r->publish = 0;
        r->offline = 0;
        r->batch = 0;

        if (buf == NULL) {
            /* no memory for the record: the others read the inbox */
            continue;
        }

        u = ngx_im_table_find(uids[i]);
        local = (u && !ngx_queue_empty(&u->sessions));

        /* nobody elsewhere: the channel is skipped */

        if (local && ngx_im_alone_skip(u)) {
            continue;
        }

        r->publish = 1;
        r->stamp = ngx_im_alone_stamp(u);
        /* an event if no node has a session of the uid: the count tells */
        r->offline = (ngx_im_events_on && !local && !r->stamp);
        npub++;
    }

    if (npub == 0) {
        /* nothing to keep together: plain appends, answered one by one */

        tx->msg = ngx_im_msg_ref(msg);
        tx->pending = n + 1;
        tx->held = 0;

        for (i = 0; i < n; i++) {
            r = &tx->rcpts[i];

            if (how == NGX_IM_ROUTER_WAIT && ngx_im_router_wait(r) == NGX_OK)
            {
                continue;
            }

            /* no uid's appends overtake those that wait */
            ngx_im_router_send_next();

            if (ngx_im_router_append(r, how != NGX_IM_ROUTER_ONE)
                != NGX_OK)
            {
                tx->pending--;
                ngx_im_router_refused(r->uid, msg, t, direct);
            }
        }

        ngx_im_router_tx_done(tx);
        return;
    }

    ngx_im_router_send_next();

    if (ngx_im_store_begin(msg, n, npub,
                           npub * NGX_IM_REDIS_CMD_LEN(3,
                                      sizeof("PUBLISH") - 1 + 32 + len))
        != NGX_OK)
    {
        goto refused;
    }

    at = 0;

    for (i = 0; i < n; i++) {
        r = &tx->rcpts[i];
        u = ngx_im_table_find(r->uid);

        cmds = ngx_im_store_append(r->uid, msg, u ? &u->ttl_set : NULL,
                                   &ttl_sent);
        if (cmds == 0) {
            goto discard;
        }

        r->ttl_sent = ttl_sent;
        r->at = (uint16_t) at;
        at += cmds;

        if (!r->publish) {
            continue;
        }

        if (ngx_im_table_publish(r->uid, buf, len, NULL, NULL) != NGX_OK) {
            goto discard;
        }

        r->pub = (uint16_t) ++at;
    }

    tx->msg = ngx_im_msg_ref(msg);
    tx->pending = 1;
    tx->held = 0;

    if (ngx_im_store_commit(ngx_im_router_committed, tx) == NGX_OK) {
        /* the sender's acknowledgement rests on it: with im_redis_wait,
         * a WAIT ends the pass (the plain appends' store does the same) */
        ngx_im_redis_wait_mark();
        return;
    }

    ngx_im_msg_unref(msg);

    goto refused;

discard:

    /* not for want of room, which ngx_im_store_begin() made */
    ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                  "im router: a transaction could not be queued");
    ngx_im_store_discard();

refused:

    if (tx) {
        ngx_free(tx);
    }

    for (i = 0; i < n; i++) {
        ngx_im_router_refused(uids[i], msg, t, direct);
    }
}


static void
ngx_im_router_committed(redisReply *reply, void *data)
{
    ngx_im_tx_t  *tx = data;

    ngx_uint_t         i, ok;
    ngx_im_tx_rcpt_t  *r;

    /* the ticket may be served whole, and freed, at the last recipient */

    for (i = 0; i < tx->n; i++) {
        r = &tx->rcpts[i];

        ok = (ngx_im_store_committed(r->uid, r->ttl_sent, reply, r->at)
              == NGX_OK);

        ngx_im_router_stored_one(tx, r, ok,
                                 r->pub ? ngx_im_store_result(reply,
                                                              r->pub - 1)
                                        : NULL, 1);
    }

    if (tx->held) {
        /* the recipients have it; the sender's acknowledgement waits for
         * the pass's WAIT (im_redis_wait), when it is on */

        switch (ngx_im_redis_after_wait(ngx_im_router_waited, tx)) {

        case NGX_OK:
            tx->pending++;
            break;

        case NGX_ERROR:
            ngx_im_router_serve_held(tx, 0);
            break;

        default: /* NGX_DECLINED: no WAIT */
            ngx_im_router_serve_held(tx, 1);
        }
    }

    ngx_im_router_tx_done(tx);
}


/* the pass's WAIT answered: NULL when too few replicas had the writes */

static void
ngx_im_router_waited(redisReply *reply, void *data)
{
    ngx_im_tx_t  *tx = data;

    ngx_im_router_serve_held(tx, reply != NULL);
    ngx_im_router_tx_done(tx);
}


static void
ngx_im_router_serve_held(ngx_im_tx_t *tx, ngx_uint_t ok)
{
    /* the ticket may be served whole, and freed, at the last one */

    while (tx->held) {
        tx->held--;
        ngx_im_ticket_served(tx->ticket, ok);
    }
}


/* a plain append's reply (no PUBLISH went with it) */

static void
ngx_im_router_appended(redisReply *reply, void *data)
{
    ngx_im_tx_rcpt_t  *r = data;

    ngx_uint_t    batch;
    ngx_im_tx_t  *tx;

    tx = r->tx;
    batch = r->batch;

    /* a plain append's store held it for WAIT already */
    ngx_im_router_stored_one(tx, r, ngx_im_store_pushed(reply) == NGX_OK,
                             NULL, 0);

    if (batch && --ngx_im_router_batch == 0) {
        /* the batch is answered (or failed with the connection): the
         * appends that waited for it leave */
        ngx_im_router_send_next();
    }

    ngx_im_router_tx_done(tx);
}


/* a plain append of r, counted in the batch or not; NGX_ERROR: not sent */

static ngx_int_t
ngx_im_router_append(ngx_im_tx_rcpt_t *r, ngx_uint_t batch)
{
    ngx_im_user_t  *u;

    u = ngx_im_table_find(r->uid);

    r->batch = batch;

    if (ngx_im_store_push(r->uid, r->tx->msg, u ? &u->ttl_set : NULL,
                          ngx_im_router_appended, r)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_im_router_batch += batch;

    return NGX_OK;
}


/* r's append waits for the batch under way; NGX_DECLINED: no room, it
 * goes now */

static ngx_int_t
ngx_im_router_wait(ngx_im_tx_rcpt_t *r)
{
    ngx_uint_t      size;
    ngx_im_next_t  *next;

    if (ngx_im_router_nnext == ngx_im_router_next_size) {

        /* kept for the worker's life, as the callback rings are */

        size = ngx_im_router_next_size ? 2 * ngx_im_router_next_size : 1024;

        next = ngx_alloc(size * sizeof(ngx_im_next_t), ngx_cycle->log);
        if (next == NULL) {
            return NGX_DECLINED;
        }

        if (ngx_im_router_next) {
            ngx_memcpy(next, ngx_im_router_next,
                       ngx_im_router_nnext * sizeof(ngx_im_next_t));
            ngx_free(ngx_im_router_next);
        }

        ngx_im_router_next = next;
        ngx_im_router_next_size = size;
    }

    if (ngx_im_router_nnext == 0 && ngx_im_router_batch == 0
        && !ngx_im_router_next_ev.posted)
    {
        /* no batch under way: this pass's group messages make the next */
        ngx_im_router_next_ev.handler = ngx_im_router_next_handler;
        ngx_im_router_next_ev.log = ngx_cycle->log;
        ngx_post_event(&ngx_im_router_next_ev, &ngx_posted_events);
    }

    next = &ngx_im_router_next[ngx_im_router_nnext];

    next->uid = r->uid;
    next->order = (uint32_t) ngx_im_router_nnext;
    next->rcpt = r;

    ngx_im_router_nnext++;

    return NGX_OK;
}


static void
ngx_im_router_next_handler(ngx_event_t *ev)
{
    if (ngx_im_router_batch == 0) {
        ngx_im_router_send_next();
    }
}


/* the appends that waited leave as the next batch, by uid */

static void
ngx_im_router_send_next(void)
{
    ngx_uint_t         i, n, size;
    ngx_im_tx_t       *tx;
    ngx_im_next_t     *next;
    ngx_im_tx_rcpt_t  *r;

    n = ngx_im_router_nnext;

    if (n == 0) {
        return;
    }

    /* a refusal below may deliver, and start another list */

    next = ngx_im_router_next;
    size = ngx_im_router_next_size;

    ngx_im_router_next = NULL;
    ngx_im_router_next_size = 0;
    ngx_im_router_nnext = 0;

    ngx_qsort(next, n, sizeof(ngx_im_next_t), ngx_im_router_next_cmp);

    for (i = 0; i < n; i++) {
        r = next[i].rcpt;
        tx = r->tx;

        if (ngx_im_router_append(r, 1) != NGX_OK) {
            ngx_im_router_refused(r->uid, tx->msg, tx->ticket, tx->direct);
            ngx_im_router_tx_done(tx);
        }
    }

    if (ngx_im_router_next == NULL) {
        ngx_im_router_next = next;
        ngx_im_router_next_size = size;

    } else {
        ngx_free(next);
    }
}


static int ngx_libc_cdecl
ngx_im_router_next_cmp(const void *one, const void *two)
{
    const ngx_im_next_t  *a = one;
    const ngx_im_next_t  *b = two;

    if (a->uid != b->uid) {
        return (a->uid < b->uid) ? -1 : 1;
    }

    return (a->order < b->order) ? -1 : (a->order > b->order);
}


/* a recipient's append is answered: its pushes here, or its refusal */

static void
ngx_im_router_stored_one(ngx_im_tx_t *tx, ngx_im_tx_rcpt_t *r,
    ngx_uint_t ok, redisReply *pub, ngx_uint_t hold)
{
    ngx_im_user_t  *u;

    if (!ok) {
        ngx_im_router_refused(r->uid, tx->msg, tx->ticket, tx->direct);
        return;
    }

    u = ngx_im_table_find(r->uid);

    if (u) {
        (void) ngx_im_router_local(u, tx->msg, 1, 0);
    }

    if (r->stamp) {
        ngx_im_alone_learn(r->uid, r->stamp, pub);

    } else if (r->offline && pub && pub->type == REDIS_REPLY_INTEGER
               && pub->integer == 0)
    {
        ngx_im_router_offline_event(tx->msg, r->uid);
    }

    if (hold) {
        tx->held++;
        return;
    }

    ngx_im_ticket_served(tx->ticket, 1);
}


static void
ngx_im_router_tx_done(ngx_im_tx_t *tx)
{
    if (--tx->pending == 0) {
        ngx_im_msg_unref(tx->msg);
        ngx_free(tx);
    }
}


/* write-through, the append failed: Redis is away, and a recipient on
 * this node may have the message without it */

static void
ngx_im_router_refused(uint32_t uid, ngx_im_msg_t *msg, ngx_im_ticket_t *t,
    ngx_uint_t direct)
{
    if (!direct || ngx_im_direct_deliver(uid, msg, t) != NGX_OK) {
        ngx_im_ticket_served(t, 0);
    }
}


static void
ngx_im_router_stored(redisReply *reply, void *data)
{
    ngx_im_ticket_served(data, ngx_im_store_pushed(reply) == NGX_OK);
}


/*
 * Events: "stored" says a message waits for a uid with no session on any
 * node, what a push-notification service needs.  In write-through every
 * message is stored; it is for an offline uid when no worker here had a
 * session of it and the PUBLISH reached no subscriber (its count, in
 * EXEC's reply).
 */

static void
ngx_im_router_offline_event(ngx_im_msg_t *msg, uint32_t uid)
{
    uint32_t  gid;

    gid = (msg->push[0] == IM_CMD_PUBLISH) ? 0 : im_get_u32(msg->push + 1);

    ngx_im_events_stored(msg->msgid, msg->from, uid, gid, msg->push_len);
}


static void
ngx_im_router_published(redisReply *reply, void *data)
{
    ngx_im_rcpt_t  *rcpt = data;

    ngx_int_t         others;
    ngx_im_ticket_t  *t;

    t = rcpt->ticket;

    if (rcpt->stamp) {
        ngx_im_alone_learn(rcpt->uid, rcpt->stamp, reply);
    }

    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        others = (ngx_int_t) reply->integer - (ngx_int_t) rcpt->self;

        if (rcpt->local || others > 0) {
            ngx_im_ticket_served(t, 1);
            goto done;
        }

        if (ngx_im_store_push(rcpt->uid, rcpt->msg, NULL,
                              ngx_im_router_stored, t)
            == NGX_OK)
        {
            ngx_im_router_offline_event(rcpt->msg, rcpt->uid);
            goto done;
        }
    }

    ngx_im_ticket_served(t, rcpt->local);

done:

    ngx_im_msg_unref(rcpt->msg);
    ngx_im_spare_put(&ngx_im_spare_rcpts, rcpt);
}
