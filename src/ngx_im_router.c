/*
 * ngx_im_router.c: where a uid's sessions are, and getting messages there.
 *
 * Owns the worker's table uid -> local sessions (an rbtree of
 * ngx_im_user_t, each with the routes of its sessions), the Redis
 * subscription of each uid in it, delivery, and the dispatch of the
 * records that arrive from Redis and from sibling workers
 * (ngx_im_traffic.h).  A message goes to the local sessions, to the
 * uid's channel for the other workers and nodes and, in write-through,
 * first to the inbox: the rest only once Redis has it.  The login policy
 * is ngx_im_presence.c's, the channel skip for a uid nobody else holds
 * ngx_im_alone.c's.
 *
 * With an im_zone, the other workers of this node that hold the uid (the
 * directory says which) get it by datagram instead, and ignore the
 * channel copy of this node's traffic.  A worker hears its own channel
 * traffic as well: a write-through message it ignores (its sessions had it
 * directly or read it from the inbox), of another one Seq tells which of
 * its sessions got it directly already.
 */

#include "ngx_im_router.h"
#include "ngx_im_redis.h"
#include "ngx_im_store.h"
#include "ngx_im_dir.h"
#include "ngx_im_ipc.h"
#include "ngx_im_traffic.h"
#include "ngx_im_presence.h"
#include "ngx_im_alone.h"
#include "ngx_im_events.h"
#include "ngx_im_direct.h"


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


static void ngx_im_router_message(u_char *channel, size_t clen,
    u_char *data, size_t len);
static void ngx_im_router_ipc(u_char *data, size_t len);
static void ngx_im_router_receipt_local(ngx_im_user_t *u, u_char *p,
    size_t n);
static void ngx_im_router_traffic(uint32_t uid, u_char *data, size_t len,
    ngx_uint_t ipc);
static void ngx_im_router_subscribed(u_char *channel, size_t clen);
static void ngx_im_router_unsubscribed(u_char *channel, size_t clen);
static void ngx_im_router_sub_connected(void);
static void ngx_im_router_inbox_connected(void);
static void ngx_im_router_subscribe(ngx_im_user_t *u);
static void ngx_im_router_confirmed(u_char *channel, size_t clen);
static void ngx_im_router_resubscribe(void);
static void ngx_im_router_tx(ngx_im_msg_t *msg, uint32_t *uids,
    ngx_uint_t n, ngx_im_ticket_t *t, u_char *buf, size_t len);
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


static void ngx_im_router_watch_subscribe(void);
static uint32_t ngx_im_router_hash(const u_char *origin, size_t len);
static void ngx_im_router_marked(ngx_im_user_t *u, uint64_t nonce);
static void ngx_im_router_watch_acked(im_traffic_t *t);


static ngx_im_router_acked_pt  ngx_im_router_acked_handler;

static ngx_im_spares_t         ngx_im_spare_rcpts =
    ngx_im_spares(ngx_im_rcpt_t, 4096);


/*
 * After the subscriber connection came back, the uids are subscribed again
 * a batch at a time (one SUBSCRIBE of NGX_IM_ROUTER_RESUB channels), the
 * next batch once Redis has confirmed every subscription asked before it:
 * a worker of 17,000 uids no longer sends 17,000 SUBSCRIBEs, and then
 * 17,000 inbox reads, into a Redis that may be slow already.  Redis sets
 * the pace.  Logins meanwhile subscribe at once, as always.
 */

#define NGX_IM_ROUTER_RESUB  1024

static ngx_uint_t              ngx_im_router_resubscribing;
static uint32_t                ngx_im_router_resub_from;
static ngx_uint_t              ngx_im_router_resub_mark;
/* SUBSCRIBEs of channels sent and confirmed since the connection came */
static ngx_uint_t              ngx_im_router_subs_sent;
static ngx_uint_t              ngx_im_router_subs_done;

/* this worker's id hashed: the origin of its messages (ngx_im_msg_t) */
static uint32_t                ngx_im_router_origin;

static ngx_im_redis_handlers_t  ngx_im_router_handlers = {
    ngx_im_router_message,
    ngx_im_router_subscribed,
    ngx_im_router_unsubscribed,
    ngx_im_router_sub_connected,
    ngx_im_router_inbox_connected
};


ngx_int_t
ngx_im_router_init(ngx_cycle_t *cycle, ngx_im_router_ops_t *ops)
{
    ngx_im_table_init(ops);

    ngx_im_router_origin = ngx_im_router_hash(ngx_im_worker_id.data,
                                              ngx_im_worker_id.len);

    /* datagrams leave after this worker's Redis output: an inbox append
     * reaches Redis before a sibling can push its message, so the
     * recipient's ack (an LREM) cannot overtake it */

    if (ngx_im_ipc_init_process(cycle, ngx_im_router_ipc, ngx_im_redis_flush)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* inbox reads that failed while Redis was loading are made again when
     * it is back, as when the connection comes back */
    ngx_im_store_on_back(ngx_im_router_inbox_connected);

    return ngx_im_redis_init(cycle, &ngx_im_router_handlers);
}


/* never 0, which is an inbox entry's: a worker id hashed */

static uint32_t
ngx_im_router_hash(const u_char *origin, size_t len)
{
    return ngx_crc32_short((u_char *) origin, len) | 1;
}


void
ngx_im_router_exit(void)
{
    ngx_im_ipc_exit_process();
    ngx_im_redis_exit();
}


ngx_uint_t
ngx_im_router_users(void)
{
    return ngx_im_table_count();
}


static void
ngx_im_router_free(ngx_im_user_t *u)
{
    ngx_im_alone_free(u);
    ngx_im_table_remove(u);
}


/* the uid of a channel "im:u:<uid>"; NGX_ERROR: not one of ours */

static ngx_int_t
ngx_im_router_channel_uid(u_char *channel, size_t clen)
{
    return ngx_im_store_channel_uid(channel, clen);
}


static ngx_im_user_t *
ngx_im_router_channel_user(u_char *channel, size_t clen)
{
    ngx_int_t  uid;

    uid = ngx_im_router_channel_uid(channel, clen);
    if (uid == NGX_ERROR) {
        return NULL;
    }

    return ngx_im_table_find((uint32_t) uid);
}


ngx_int_t
ngx_im_router_join(ngx_im_route_t *r)
{
    ngx_im_user_t  *u;

    u = ngx_im_table_add(r->uid);
    if (u == NULL) {
        return NGX_ERROR;
    }

    if (u->nsessions == 0 && ngx_im_dir_add(r->uid) != NGX_OK) {
        if (u->sub == NGX_IM_SUB_NONE) {
            ngx_im_router_free(u);
        }
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&u->sessions, &r->link);
    u->nsessions++;

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, ngx_im_table_ops()->log(r), 0,
                   "im router: uid %uD joined, sessions %ui sub %ui",
                   r->uid, (ngx_uint_t) u->nsessions, (ngx_uint_t) u->sub);

    r->user = u;
    r->live_seq = ngx_im_table_next_seq();

    switch (u->sub) {

    case NGX_IM_SUB_SUBSCRIBED:
        if (!ngx_im_alone_holding(u)) {
            /*
             * Settled: what this worker delivered before went to the
             * sessions here then, or elsewhere, or to the inbox, which
             * the session reads now.  Its channel copy, still on its
             * way, would reach the session behind what comes directly
             * from now on: every copy counts as had (no Seq is below
             * 1).
             */
            r->live_seq = 1;
            ngx_im_table_ops()->sync(r);
        }
        /* else read with the others when the answers are in */
        break;

    case NGX_IM_SUB_NONE:
        ngx_im_router_subscribe(u);
        break;

    default:
        /* SUBSCRIBING: synced on the confirmation; UNSUBSCRIBING:
         * subscribed again when that is confirmed */
        break;
    }

    return NGX_OK;
}


void
ngx_im_router_leave(ngx_im_route_t *r)
{
    u_char          channel[32];
    ngx_im_user_t  *u;

    u = r->user;
    if (u == NULL) {
        return;
    }

    ngx_im_presence_leave(r);

    ngx_queue_remove(&r->link);
    r->user = NULL;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ngx_im_table_ops()->log(r), 0,
                   "im router: uid %uD left, sessions %ui", r->uid,
                   (ngx_uint_t) u->nsessions - 1);

    if (--u->nsessions) {
        return;
    }

    ngx_im_dir_del((uint32_t) u->node.key);

    switch (u->sub) {

    case NGX_IM_SUB_SUBSCRIBED:
        if (ngx_im_redis_unsubscribe(channel,
                                     ngx_im_table_channel(channel,
                                                           u->node.key))
            == NGX_OK)
        {
            ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                           "im router: uid %uD unsubscribing",
                           (uint32_t) u->node.key);
            u->sub = NGX_IM_SUB_UNSUBSCRIBING;
            return;
        }

        ngx_im_router_free(u);
        return;

    case NGX_IM_SUB_NONE:
        ngx_im_router_free(u);
        return;

    default:
        /* decided when Redis confirms */
        return;
    }
}


/* subscriptions */

static void
ngx_im_router_subscribe(ngx_im_user_t *u)
{
    u_char  channel[32];

    if (ngx_im_redis_subscribe(channel,
                               ngx_im_table_channel(channel, u->node.key))
        == NGX_OK)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                       "im router: uid %uD subscribing",
                       (uint32_t) u->node.key);
        u->sub = NGX_IM_SUB_SUBSCRIBING;
        ngx_im_router_subs_sent++;
        return;
    }

    /* no pub/sub now: serve the inbox anyway; subscribed again, and
     * synced again, when the connection is back */

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "im router: uid %uD not subscribed, no pub/sub",
                   (uint32_t) u->node.key);

    u->sub = NGX_IM_SUB_NONE;
    ngx_im_table_sync(u);
}


static void
ngx_im_router_subscribed(u_char *channel, size_t clen)
{
    /* confirmations come in the order of the channels asked */
    ngx_im_router_subs_done++;

    ngx_im_router_confirmed(channel, clen);

    if (ngx_im_router_resubscribing
        && ngx_im_router_subs_done >= ngx_im_router_resub_mark)
    {
        ngx_im_router_resubscribe();
    }
}


static void
ngx_im_router_confirmed(u_char *channel, size_t clen)
{
    u_char          buf[32];
    ngx_im_user_t  *u;

    u = ngx_im_router_channel_user(channel, clen);
    if (u == NULL) {
        return;
    }

    if (u->nsessions == 0) {
        if (ngx_im_redis_unsubscribe(buf,
                                     ngx_im_table_channel(buf, u->node.key))
            == NGX_OK)
        {
            u->sub = NGX_IM_SUB_UNSUBSCRIBING;

        } else {
            ngx_im_router_free(u);
        }

        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "im router: uid %uD subscribed", (uint32_t) u->node.key);

    u->sub = NGX_IM_SUB_SUBSCRIBED;
    ngx_im_alone_forget(u);

    /* from now on every message reaches us, and the inbox holds the rest
     * once a worker elsewhere that skipped this channel has replayed what
     * it skipped: the sessions read it when the answers are in */
    ngx_im_alone_announce(u);
}


static void
ngx_im_router_unsubscribed(u_char *channel, size_t clen)
{
    u_char          mine[7 + IM_TRAFFIC_ORIGIN_MAX];
    ngx_im_user_t  *u;

    u = ngx_im_router_channel_user(channel, clen);
    if (u == NULL) {

        if (ngx_im_worker_id.len <= IM_TRAFFIC_ORIGIN_MAX
            && clen == ngx_im_store_worker_channel(mine,
                                                   ngx_im_worker_id.data,
                                                   ngx_im_worker_id.len)
            && ngx_memcmp(channel, mine, clen) == 0)
        {
            /* never asked: the worker's channel moved with its slot */
            ngx_im_router_watch_subscribe();
        }

        return;
    }

    if (u->sub == NGX_IM_SUB_SUBSCRIBED && ngx_im_get_conf()->redis_cluster)
    {
        /*
         * Not asked: a cluster's shard channel whose slot moved.  The
         * uid is subscribed again (at the new owner), and its sessions
         * read the inbox again once that is confirmed, as after a lost
         * subscriber connection: what was published meanwhile is there.
         */
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                       "im router: uid %uD unsubscribed by Redis",
                       (uint32_t) u->node.key);

        u->sub = NGX_IM_SUB_NONE;
        ngx_im_alone_forget(u);

        if (u->nsessions) {
            ngx_im_router_subscribe(u);
            return;
        }

        ngx_im_router_free(u);
        return;
    }

    if (u->sub != NGX_IM_SUB_UNSUBSCRIBING) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "im router: uid %uD unsubscribed",
                   (uint32_t) u->node.key);

    u->sub = NGX_IM_SUB_NONE;

    if (u->nsessions) {
        /* a login came while the unsubscribe was under way */
        ngx_im_router_subscribe(u);
        return;
    }

    ngx_im_router_free(u);
}


static void
ngx_im_router_sub_connected(void)
{
    ngx_im_user_t  *u, *next;

    ngx_im_router_subs_sent = 0;
    ngx_im_router_subs_done = 0;

    ngx_im_router_watch_subscribe();

    for (u = ngx_im_table_first(); u; u = next) {
        next = ngx_im_table_next(u);

        u->sub = NGX_IM_SUB_NONE;
        ngx_im_alone_forget(u);

        if (u->nsessions == 0) {
            ngx_im_router_free(u);
        }
    }

    if (ngx_im_table_count()) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "im router: pub/sub back, %ui uids to subscribe "
                      "again, %d at a time",
                      ngx_im_table_count(), NGX_IM_ROUTER_RESUB);
    }

    ngx_im_router_resubscribing = 1;
    ngx_im_router_resub_from = 0;
    ngx_im_router_resubscribe();
}


/* the next batch of the resubscription (see NGX_IM_ROUTER_RESUB) */

static void
ngx_im_router_resubscribe(void)
{
    ngx_uint_t      n;
    ngx_im_user_t  *u, *next;

    n = 0;

    for (u = ngx_im_table_from(ngx_im_router_resub_from);
         u && n < NGX_IM_ROUTER_RESUB;
         u = next)
    {
        next = ngx_im_table_next(u);

        if (u->sub != NGX_IM_SUB_NONE || u->nsessions == 0) {
            /* subscribed by a login meanwhile, or being left */
            continue;
        }

        if (!ngx_im_redis_ready(NGX_IM_REDIS_SUB)) {
            /* gone again: it starts over when it is back */
            ngx_im_router_resubscribing = 0;
            return;
        }

        ngx_im_router_subscribe(u);
        n++;
    }

    if (u == NULL) {
        ngx_log_debug0(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                       "im router: resubscription complete");
        ngx_im_router_resubscribing = 0;
        return;
    }

    ngx_im_router_resub_from = (uint32_t) u->node.key;
    ngx_im_router_resub_mark = ngx_im_router_subs_sent;
}


static void
ngx_im_router_inbox_connected(void)
{
    ngx_im_user_t  *u;

    /* loads that failed while Redis was away, and announcements that
     * may have been lost with the connection; a uid still waiting for
     * its turn in the resubscription reads its inbox once subscribed */

    for (u = ngx_im_table_first(); u; u = ngx_im_table_next(u)) {

        if (u->sub == NGX_IM_SUB_SUBSCRIBED) {
            ngx_im_alone_announce(u);

        } else if (!(ngx_im_router_resubscribing
                     && u->sub == NGX_IM_SUB_NONE))
        {
            ngx_im_table_sync(u);
        }
    }
}


/* delivery */

static ngx_uint_t
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
    uint32_t        stamp;
    ngx_int_t       rc;
    ngx_uint_t      i, m, stored, local, siblings;
    ngx_im_user_t  *u;
    ngx_im_rcpt_t  *rcpt;

    stored = (ngx_im_get_conf()->delivery == NGX_IM_WRITE_THROUGH);

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

        /* t may be served whole, and freed, in the last of these */

        for (i = 0; i < n; i += m) {
            /* in a Redis Cluster a transaction's keys must be of one
             * slot: one recipient per transaction */
            m = ngx_im_get_conf()->redis_cluster
                ? 1 : ngx_min(n - i, NGX_IM_ROUTER_TX);
            ngx_im_router_tx(msg, uids + i, m, t, buf, len);
        }

        if (buf) {
            ngx_free(buf);
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
    ngx_im_ticket_t *t, u_char *buf, size_t len)
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
            u = ngx_im_table_find(r->uid);

            if (ngx_im_store_push(r->uid, msg, u ? &u->ttl_set : NULL,
                                  ngx_im_router_appended, r)
                != NGX_OK)
            {
                tx->pending--;
                ngx_im_router_refused(r->uid, msg, t, direct);
            }
        }

        ngx_im_router_tx_done(tx);
        return;
    }

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

    ngx_im_tx_t  *tx;

    tx = r->tx;

    /* a plain append's store held it for WAIT already */
    ngx_im_router_stored_one(tx, r, ngx_im_store_pushed(reply) == NGX_OK,
                             NULL, 0);

    ngx_im_router_tx_done(tx);
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


/*
 * A mark behind an inbox read (docs/decisions/040): published on the uid's
 * channel right after the LRANGE, on the same connection, it comes back on
 * the subscription behind the copies of every message published before
 * the read, those whose appends the read saw among them.  The session
 * merges the read with what came live once the mark is back, so that an
 * entry of the inbox whose copy is still on its way is not pushed ahead of
 * older copies.  NGX_DECLINED: no subscription in place to bring it back.
 */

ngx_int_t
ngx_im_router_mark(ngx_im_route_t *r, uint64_t nonce)
{
    u_char  buf[IM_TRAFFIC_NOTICE_MAX];
    size_t  len;

    if (r->user == NULL || r->user->sub != NGX_IM_SUB_SUBSCRIBED
        || !ngx_im_redis_ready(NGX_IM_REDIS_SUB))
    {
        return NGX_DECLINED;
    }

    len = im_traffic_build_notice(buf, 'M', ngx_im_worker_id.data,
                                  ngx_im_worker_id.len, &nonce);

    return ngx_im_table_publish(r->uid, buf, len, NULL, NULL);
}


static void
ngx_im_router_marked(ngx_im_user_t *u, uint64_t nonce)
{
    ngx_queue_t     *q, *next;
    ngx_im_route_t  *r;

    if (u == NULL) {
        return;
    }

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        r = ngx_queue_data(q, ngx_im_route_t, link);

        ngx_im_table_ops()->marked(r, nonce);
    }
}


/*
 * Receipts go where kicks go: to the sessions here, to the siblings that
 * hold the uid, and on the uid's channel for other nodes (the siblings
 * ignore that copy unless a datagram could not be sent).  The channel's
 * "alone" skip of messages is not applied: a receipt is rarer than a
 * message and opt-in.
 */

void
ngx_im_router_receipt(uint32_t to, const u_char *msgid, uint32_t by)
{
    u_char          rec[IM_SIZE_RECEIPT];
    u_char          buf[IM_TRAFFIC_R_LEN(IM_TRAFFIC_ORIGIN_MAX,
                                         IM_SIZE_RECEIPT)];
    size_t          n, len;
    ngx_im_user_t  *u;

    n = im_build_receipt(rec, msgid, by);

    u = ngx_im_table_find(to);
    if (u) {
        ngx_im_router_receipt_local(u, rec, n);
    }

    len = im_traffic_build_r(buf, ngx_im_worker_id.data, ngx_im_worker_id.len,
                             0, rec, n);

    if (ngx_im_table_peers(to, buf, len) != NGX_OK) {
        buf[IM_TRAFFIC_FLAGS_AT(ngx_im_worker_id.len)] |= IM_TRAFFIC_ALL;
    }

    (void) ngx_im_table_publish(to, buf, len, NULL, NULL);
}


static void
ngx_im_router_receipt_local(ngx_im_user_t *u, u_char *p, size_t n)
{
    ngx_queue_t     *q;
    ngx_im_route_t  *r;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = ngx_queue_next(q))
    {
        r = ngx_queue_data(q, ngx_im_route_t, link);
        ngx_im_table_ops()->receipt(r, p, n);
    }
}


/*
 * Acks of watched messages.  Unwatched messages never come here (the
 * delivery layer tests msg->watch).  The record is small and rare: at
 * most one per session that acks a watched message.
 */

void
ngx_im_router_acked(ngx_im_msg_t *msg, uint32_t uid, uint8_t client_id)
{
    u_char        buf[IM_TRAFFIC_W_LEN(IM_TRAFFIC_ORIGIN_MAX)];
    u_char        channel[7 + NGX_IM_WATCH_MAX];
    size_t        len, argvlen[3];
    uint64_t      now, after;
    ngx_int_t     pid;
    ngx_time_t   *tp;
    const char   *argv[3];
    im_traffic_t  t;

    tp = ngx_timeofday();
    now = (uint64_t) tp->sec * 1000 + tp->msec;
    after = (now > msg->accepted) ? now - msg->accepted : 0;

    if (after > 0xffffffff) {
        after = 0xffffffff;
    }

    len = im_traffic_build_w(buf, ngx_im_worker_id.data,
                             ngx_im_worker_id.len, 0, msg->watch_token, uid,
                             client_id, (uint32_t) after, msg->msgid);

    if (msg->watch_len == ngx_im_worker_id.len
        && ngx_memcmp(msg->watch, ngx_im_worker_id.data, msg->watch_len)
           == 0)
    {
        /* the waiting request is here */
        if (im_traffic_parse(buf, len, &t) == IM_OK) {
            ngx_im_router_watch_acked(&t);
        }

        return;
    }

    /* a sibling: the same node and instance, another pid */

    if (msg->watch_len > ngx_im_node_prefix_len
        && ngx_memcmp(msg->watch, ngx_im_worker_id.data,
                      ngx_im_node_prefix_len)
           == 0)
    {
        pid = ngx_atoi(msg->watch + ngx_im_node_prefix_len,
                       msg->watch_len - ngx_im_node_prefix_len);

        if (pid > 0 && ngx_im_ipc_send((ngx_pid_t) pid, uid, buf, len)
                       == NGX_OK)
        {
            return;
        }
    }

    /* another node, or no datagram: the waiting worker's channel */

    argv[0] = "PUBLISH";
    argvlen[0] = 7;
    argv[1] = (char *) channel;
    argvlen[1] = ngx_im_store_worker_channel(channel, msg->watch,
                                             msg->watch_len);
    argv[2] = (char *) buf;
    argvlen[2] = len;

    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 3, argv,
                            argvlen);
}


void
ngx_im_router_on_acked(ngx_im_router_acked_pt handler)
{
    ngx_im_router_acked_handler = handler;
}


/* a 'W' for this worker: a delivery without Redis, or the API's wait */

static void
ngx_im_router_watch_acked(im_traffic_t *t)
{
    if (t->token & NGX_IM_WATCH_DIRECT) {
        ngx_im_direct_acked(t->token);
        return;
    }

    if (ngx_im_router_acked_handler) {
        ngx_im_router_acked_handler(t);
    }
}


/* with im_api, each worker hears the acks for its waiting publishes on a
 * channel of its own, subscribed whenever pub/sub (re)connects */

static void
ngx_im_router_watch_subscribe(void)
{
    u_char  channel[7 + IM_TRAFFIC_ORIGIN_MAX];

    if (!ngx_im_get_conf()->registry
        || ngx_im_worker_id.len > IM_TRAFFIC_ORIGIN_MAX)
    {
        return;
    }

    /* its confirmation counts among those the resubscription paces by */
    if (ngx_im_redis_subscribe(channel,
                               ngx_im_store_worker_channel(channel,
                                                   ngx_im_worker_id.data,
                                                   ngx_im_worker_id.len))
        == NGX_OK)
    {
        ngx_im_router_subs_sent++;
    }
}


/* records from the channels and from sibling workers: untrusted input,
 * decoded by ngx_im_traffic.c, ignored when they do not parse */

static void
ngx_im_router_message(u_char *channel, size_t clen, u_char *data,
    size_t len)
{
    u_char        mine[7 + IM_TRAFFIC_ORIGIN_MAX];
    ngx_int_t     uid;
    im_traffic_t  t;

    uid = ngx_im_router_channel_uid(channel, clen);

    if (uid != NGX_ERROR) {
        ngx_im_router_traffic((uint32_t) uid, data, len, 0);
        return;
    }

    /* "im:w:<worker id>": acks for this worker's waiting publishes */

    if (ngx_im_worker_id.len <= IM_TRAFFIC_ORIGIN_MAX
        && clen == ngx_im_store_worker_channel(mine, ngx_im_worker_id.data,
                                               ngx_im_worker_id.len)
        && ngx_memcmp(channel, mine, clen) == 0
        && im_traffic_parse(data, len, &t) == IM_OK
        && t.type == 'W')
    {
        ngx_im_router_watch_acked(&t);
    }
}


static void
ngx_im_router_ipc(u_char *data, size_t len)
{
    ngx_im_router_traffic(im_get_u32(data), data + 4, len - 4, 1);
}


static void
ngx_im_router_traffic(uint32_t uid, u_char *data, size_t len, ngx_uint_t ipc)
{
    ngx_uint_t      own, node;
    im_traffic_t    t;
    ngx_im_msg_t   *msg;
    ngx_im_user_t  *u;

    if (im_traffic_parse(data, len, &t) != IM_OK) {
        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                       "im router: uid %uD: a record of %uz bytes that "
                       "does not parse", uid, len);
        return;
    }

    own = (t.origin_len == ngx_im_worker_id.len
           && ngx_memcmp(t.origin, ngx_im_worker_id.data, t.origin_len)
              == 0);

    /* same node: the part of the worker id before the pid */
    node = (t.origin_len > ngx_im_node_prefix_len
            && ngx_memcmp(t.origin, ngx_im_worker_id.data,
                          ngx_im_node_prefix_len)
               == 0);

    if (t.type == 'W') {
        /* only by datagram, addressed to this worker */
        if (ipc) {
            ngx_im_router_watch_acked(&t);
        }

        return;
    }

    if (t.type == 'M') {
        /* a session's own mark behind its inbox read (another worker's
         * means nothing here) */
        if (own) {
            ngx_im_router_marked(ngx_im_table_find(uid), t.nonce);
        }

        return;
    }

    if (t.type == 'J' || t.type == 'S' || t.type == 'A') {
        /* from every worker but this one, siblings too: a sibling past
         * the directory's slots gets no datagrams */

        ngx_im_alone_record(uid, ngx_im_table_find(uid), &t, own);

        return;
    }

    if (!ipc && node && !own && !(t.flags & IM_TRAFFIC_ALL)) {
        /* the datagram brought it already */
        return;
    }

    u = ngx_im_table_find(uid);

    if (t.type == 'K') {
        if (u) {
            ngx_im_presence_kicked(u, own, &t);
        }

        return;
    }

    if (t.type == 'L') {
        /* this worker's own went to its sessions directly */
        if (u && !own) {
            ngx_im_presence_logged_out(u, &t);
        }

        return;
    }

    if (t.type == 'R') {
        /* this worker's own receipts went to its sessions directly */
        if (u && !own && t.entry_len == IM_SIZE_RECEIPT
            && t.entry[0] == IM_CMD_RECEIPT)
        {
            ngx_im_router_receipt_local(u, (u_char *) t.entry,
                                        t.entry_len);
        }

        return;
    }

    /* 'D' */

    if (own && (t.flags & IM_TRAFFIC_STORED)) {
        /* this worker's own write-through message: the sessions here
         * that were live then had it directly, and those that joined
         * since read it from the inbox, in its place (pushed now it
         * would go behind what they got directly: a new session's
         * SUBSCRIBE can overtake this worker's last publishes) */
        return;
    }

    msg = ngx_im_msg_from_entry((u_char *) t.entry, t.entry_len);
    if (msg == NULL) {
        return;
    }

    msg->seq = t.seq;
    msg->origin = own ? ngx_im_router_origin
                      : ngx_im_router_hash(t.origin, t.origin_len);

    if ((u == NULL
         || ngx_im_router_local(u, msg, t.flags & IM_TRAFFIC_STORED,
                                own ? t.seq : 0) == 0)
        && !(t.flags & IM_TRAFFIC_STORED) && !own
        && !ngx_im_msg_direct(msg))
    {
        /* offline-only: the publisher counted this worker as a taker, and
         * there is none any more */
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                       "im router: uid %uD has no taker here any more, "
                       "stored", uid);
        (void) ngx_im_store_push(uid, msg, NULL, NULL, NULL);
    }

    ngx_im_msg_unref(msg);
}
