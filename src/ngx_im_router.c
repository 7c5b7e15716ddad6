/*
 * ngx_im_router.c: the worker's uids, their subscriptions, and the records
 * that arrive for them.
 *
 * Owns the Redis subscription of each uid in the worker's table
 * (ngx_im_table.c: uid -> local sessions): join and leave, SUBSCRIBE and
 * its confirmation, UNSUBSCRIBE, the paced resubscription after the
 * subscriber connection came back, the worker's own channel for watched
 * acks; and the dispatch of the records that arrive from Redis and from
 * sibling workers (ngx_im_traffic.h).  Getting a message to its
 * recipients is ngx_im_router_tx.c's, receipts, marks and watched acks
 * ngx_im_router_notice.c's; the login policy is ngx_im_presence.c's, the
 * channel skip for a uid nobody else holds ngx_im_alone.c's.
 *
 * With an im_zone, the other workers of this node that hold the uid (the
 * directory says which) get its traffic by datagram instead, and ignore
 * the channel copy of this node's traffic.  A worker hears its own channel
 * traffic as well: a write-through message it ignores (its sessions had it
 * directly or read it from the inbox), of another one Seq tells which of
 * its sessions got it directly already.
 */

#include "ngx_im_router_int.h"
#include "ngx_im_owe.h"
#include "ngx_im_redis.h"
#include "ngx_im_store.h"
#include "ngx_im_dir.h"
#include "ngx_im_ipc.h"
#include "ngx_im_traffic.h"
#include "ngx_im_presence.h"
#include "ngx_im_alone.h"


static void ngx_im_router_message(u_char *channel, size_t clen,
    u_char *data, size_t len);
static void ngx_im_router_ipc(u_char *data, size_t len);
static void ngx_im_router_traffic(uint32_t uid, u_char *data, size_t len,
    ngx_uint_t ipc);
static void ngx_im_router_subscribed(u_char *channel, size_t clen);
static void ngx_im_router_unsubscribed(u_char *channel, size_t clen);
static void ngx_im_router_sub_connected(void);
static void ngx_im_router_inbox_connected(void);
static void ngx_im_router_owe_out(ngx_im_user_t *u);
static void ngx_im_router_subscribe(ngx_im_user_t *u);
static void ngx_im_router_confirmed(u_char *channel, size_t clen);
static void ngx_im_router_resubscribe(void);
static void ngx_im_router_watch_subscribe(void);
static uint32_t ngx_im_router_hash(const u_char *origin, size_t len);


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
uint32_t                       ngx_im_router_origin;

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

    /* the newcomer reads the inbox: what the others here owe goes there
     * first (decision 052) */
    ngx_im_router_owe_out(u);

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

    /* a login elsewhere is not answered from here once the uid has left:
     * its sessions' acks held back go first (decision 051) */
    ngx_im_store_flush();

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
    u_char          channel[32];
    ngx_uint_t      n;
    ngx_im_user_t  *u, *next;

    ngx_im_router_subs_sent = 0;
    ngx_im_router_subs_done = 0;

    ngx_im_router_watch_subscribe();

    n = 0;

    for (u = ngx_im_table_first(); u; u = next) {
        next = ngx_im_table_next(u);

        /* in a cluster, the uids of the master that came back only: the
         * others' subscriptions, and what they deliver, went on */
        if (!ngx_im_redis_sub_lost(channel,
                                   ngx_im_table_channel(channel,
                                                        u->node.key)))
        {
            continue;
        }

        u->sub = NGX_IM_SUB_NONE;
        ngx_im_alone_forget(u);

        if (u->nsessions == 0) {
            ngx_im_router_free(u);
            continue;
        }

        n++;
    }

    ngx_im_stats->resubscribed += n;

    if (n) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "im router: pub/sub back, %ui uids to subscribe "
                      "again, %d at a time", n, NGX_IM_ROUTER_RESUB);
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
ngx_im_router_owe_out(ngx_im_user_t *u)
{
    ngx_queue_t  *q;

    if (u == NULL) {
        return;
    }

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = ngx_queue_next(q))
    {
        ngx_im_table_ops()->owe_out(ngx_queue_data(q, ngx_im_route_t, link));
    }
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

    /* records of owed group messages left by a process gone meanwhile
     * (a crash): delivered again (decision 052) */
    ngx_im_owe_sweep();
}


/* with im_api, each worker hears the acks for its waiting publishes on a
 * channel of its own, subscribed whenever pub/sub (re)connects */

static void
ngx_im_router_watch_subscribe(void)
{
    u_char  channel[7 + IM_TRAFFIC_ORIGIN_MAX];
    size_t  len;

    if (!ngx_im_get_conf()->registry
        || ngx_im_worker_id.len > IM_TRAFFIC_ORIGIN_MAX)
    {
        return;
    }

    len = ngx_im_store_worker_channel(channel, ngx_im_worker_id.data,
                                      ngx_im_worker_id.len);

    if (!ngx_im_redis_sub_lost(channel, len)) {
        /* in a cluster, held by a master that did not go */
        return;
    }

    /* its confirmation counts among those the resubscription paces by */
    if (ngx_im_redis_subscribe(channel, len) == NGX_OK) {
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

        if (t.type == 'J' && !own) {
            /* a session elsewhere reads the inbox on this worker's
             * answer: what the sessions here owe goes there first */
            ngx_im_router_owe_out(ngx_im_table_find(uid));
        }

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

    if (t.type == 'C') {
        /* this worker's own recall cleared its records directly */
        if (u && !own) {
            (void) ngx_im_owe_recall(uid, (u_char *) t.entry);
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
