/*
 * ngx_im_alone.c: skipping the channel of a uid nobody else holds.
 *
 * Owns the alone mark of the router's uid records, the probes that set it
 * (a PUBLISH whose count says that this worker's subscription was its
 * only listener), and the 'J' / 'S' / 'A' records with a newcomer's hold.
 *
 * Most users are online in one place.  When a PUBLISH to a uid's channel
 * reaches only this worker's own subscription, the uid is marked alone and
 * later messages skip the channel (and its echo) while it stays so: they
 * go to the local sessions and, in write-through, the inbox.  Any worker
 * that subscribes to a channel announces it with 'J' once the subscription
 * is confirmed (and again whenever the connection it went out on comes
 * back).  A worker that hears a foreign 'J' marks the uid shared, from
 * then on publishes its messages on the channel, and answers 'A' with the
 * 'J''s nonce (an alone one behind an 'S', so that the holders load the
 * inbox again).  The mark is dropped whenever the subscription is not
 * known to be in place, and a probe's answer counts only if nothing
 * changed while it was under way (a stamp per uid record).
 *
 * The newcomer's hold (docs/PROTOCOL.md 3.4): its sessions read the inbox,
 * and get their CONNECT_ACK, once every other subscriber PUBLISH counted
 * has answered and its own 'J' is back on the channel (behind the copies
 * of this worker's earlier deliveries to the uid), or after
 * im_redis_timeout.
 * So every worker that holds the uid publishes on the channel before the
 * client sees CONNECT_ACK: a message accepted after it reaches the new
 * session, and nothing skipped before it needs replaying (a replay would
 * reach the session behind newer messages).  What was accepted before is
 * in the inbox, or went to the devices online then.  A uid nobody else
 * holds is read after the one round trip of its 'J'.
 * docs/decisions/ has the measurements and the residual gap.
 */

#include "ngx_im_alone.h"
#include "ngx_im_timer.h"


/* a newcomer's wait for the answers to its 'J' */

struct ngx_im_hold_s {
    ngx_im_timer_t         timer;
    uint64_t               nonce;
    ngx_int_t              expected;    /* -1 until PUBLISH has counted */
    ngx_uint_t             got;
    unsigned               echo:1;      /* its own 'J' came back */
    ngx_im_user_t         *user;
};


/* the PUBLISH of a 'J', for its count */
typedef struct {
    uint64_t               nonce;
    uint32_t               uid;
} ngx_im_jpub_t;


/* a PUBLISH whose subscriber count may tell that a uid is alone */
typedef struct {
    uint32_t               uid;
    uint32_t               stamp;
} ngx_im_probe_t;


static void ngx_im_alone_unhold(ngx_im_user_t *u);


static ngx_im_spares_t  ngx_im_spare_probes =
    ngx_im_spares(ngx_im_probe_t, 4096);
static ngx_im_spares_t  ngx_im_spare_holds =
    ngx_im_spares(ngx_im_hold_t, 1024);
static ngx_im_spares_t  ngx_im_spare_jpubs =
    ngx_im_spares(ngx_im_jpub_t, 1024);



/* the mark */

static void
ngx_im_alone_shared(ngx_im_user_t *u)
{
    if (u->alone) {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                       "im alone: uid %uD shared", (uint32_t) u->node.key);
    }

    u->alone = 0;
    u->stamp = ngx_im_table_stamp();
}


void
ngx_im_alone_forget(ngx_im_user_t *u)
{
    ngx_im_alone_shared(u);
}


uint32_t
ngx_im_alone_stamp(ngx_im_user_t *u)
{
    /* whether the count a PUBLISH to u's channel returns can tell */

    if (u == NULL || u->alone || u->sub != NGX_IM_SUB_SUBSCRIBED
        || !ngx_im_get_conf()->alone
        || !ngx_im_redis_ready(NGX_IM_REDIS_SUB))
    {
        return 0;
    }

    return u->stamp;
}


void
ngx_im_alone_learn(uint32_t uid, uint32_t stamp, redisReply *reply)
{
    ngx_im_user_t  *u;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER
        || reply->integer != 1)
    {
        return;
    }

    u = ngx_im_table_find(uid);

    /* the stamp is the same: no foreign 'J', no change of subscription
     * since the PUBLISH left, so the one subscriber was this worker */

    if (u && u->stamp == stamp && u->sub == NGX_IM_SUB_SUBSCRIBED
        && ngx_im_redis_ready(NGX_IM_REDIS_SUB))
    {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                       "im alone: uid %uD alone, channel skipped", uid);
        u->alone = 1;
    }
}


void *
ngx_im_alone_probe(ngx_im_user_t *u)
{
    uint32_t         stamp;
    ngx_im_probe_t  *pr;

    stamp = ngx_im_alone_stamp(u);
    if (stamp == 0) {
        return NULL;
    }

    pr = ngx_im_spare_get(&ngx_im_spare_probes);
    if (pr == NULL) {
        return NULL;
    }

    pr->uid = (uint32_t) u->node.key;
    pr->stamp = stamp;

    return pr;
}


void
ngx_im_alone_probed(redisReply *reply, void *data)
{
    ngx_im_probe_t  *pr = data;

    ngx_im_alone_learn(pr->uid, pr->stamp, reply);

    ngx_im_spare_put(&ngx_im_spare_probes, pr);
}


void
ngx_im_alone_probe_free(void *data)
{
    ngx_im_spare_put(&ngx_im_spare_probes, data);
}


ngx_uint_t
ngx_im_alone_skip(ngx_im_user_t *u)
{
    if (!u->alone || u->sub != NGX_IM_SUB_SUBSCRIBED
        || !ngx_im_redis_ready(NGX_IM_REDIS_SUB))
    {
        return 0;
    }

    ngx_im_stats->channel_skipped++;

    return 1;
}


/* 'S', or 'J' and 'A' with a nonce */

static ngx_int_t
ngx_im_alone_notice(uint32_t uid, u_char type, uint64_t *nonce,
    ngx_im_redis_cb_pt cb, void *cbdata)
{
    u_char  buf[IM_TRAFFIC_NOTICE_MAX];
    size_t  len;

    len = im_traffic_build_notice(buf, type, ngx_im_worker_id.data,
                                  ngx_im_worker_id.len, nonce);

    return ngx_im_table_publish(uid, buf, len, cb, cbdata);
}


/*
 * A newcomer's 'J' and the wait for its answers: the sessions of the uid
 * here read the inbox once every other subscriber PUBLISH counted has
 * answered (a worker alone for the uid answers behind its 'S'), or
 * when the wait times out (a subscriber that does not answer: one gone
 * since, or a build from before 'A').
 */

static void
ngx_im_alone_hold_done(ngx_im_user_t *u)
{
    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "im alone: uid %uD hold over, %ui of %i answers",
                   (uint32_t) u->node.key, u->hold->got,
                   u->hold->expected);

    ngx_im_alone_unhold(u);
    ngx_im_table_sync(u);
}


static void
ngx_im_alone_hold_timeout(ngx_im_timer_t *t)
{
    ngx_im_hold_t  *h = (ngx_im_hold_t *) t;

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "im: uid %uD: %ui of %i answers to its announcement "
                  "came%s, reading the inbox anyway",
                  (uint32_t) h->user->node.key, h->got, h->expected,
                  h->echo ? "" : ", not its own copy");

    ngx_im_alone_hold_done(h->user);
}


static void
ngx_im_alone_unhold(ngx_im_user_t *u)
{
    ngx_im_hold_t  *h = u->hold;

    ngx_im_timer_del(&h->timer);
    ngx_im_spare_put(&ngx_im_spare_holds, h);
    u->hold = NULL;
}


ngx_uint_t
ngx_im_alone_holding(ngx_im_user_t *u)
{
    return u->hold != NULL;
}


void
ngx_im_alone_free(ngx_im_user_t *u)
{
    if (u->hold) {
        ngx_im_alone_unhold(u);
    }
}


static void
ngx_im_alone_hold_check(ngx_im_user_t *u)
{
    ngx_im_hold_t  *h = u->hold;

    if (h->expected >= 0 && h->got >= (ngx_uint_t) h->expected && h->echo) {
        ngx_im_alone_hold_done(u);
    }
}


static void
ngx_im_alone_announced(redisReply *reply, void *data)
{
    ngx_im_jpub_t  *jp = data;
    ngx_im_user_t  *u;

    u = ngx_im_table_find(jp->uid);

    if (u && u->hold && u->hold->nonce == jp->nonce) {

        if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
            /* lost with the connection: nobody to wait for */
            ngx_im_alone_hold_done(u);

        } else {
            /* this worker's own subscription counts too */
            u->hold->expected = reply->integer > 0 ? reply->integer - 1 : 0;
            ngx_im_alone_hold_check(u);
        }
    }

    ngx_im_spare_put(&ngx_im_spare_jpubs, jp);
}


void
ngx_im_alone_announce(ngx_im_user_t *u)
{
    uint32_t        uid;
    ngx_im_hold_t  *h;
    ngx_im_jpub_t  *jp;

    static uint32_t  nonces;

    uid = (uint32_t) u->node.key;

    if (u->hold) {
        ngx_im_alone_unhold(u);
    }

    h = ngx_im_spare_get(&ngx_im_spare_holds);
    jp = ngx_im_spare_get(&ngx_im_spare_jpubs);

    if (h == NULL || jp == NULL) {
        goto failed;
    }

    ngx_memzero(h, sizeof(ngx_im_hold_t));
    h->nonce = ((uint64_t) ngx_pid << 32) | ++nonces;
    h->expected = -1;
    h->user = u;

    jp->nonce = h->nonce;
    jp->uid = uid;

    if (ngx_im_alone_notice(uid, 'J', &h->nonce, ngx_im_alone_announced, jp)
        != NGX_OK)
    {
        goto failed;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "im alone: uid %uD announced, hold %uL", uid, h->nonce);

    u->hold = h;
    /* at most as long as a Redis that does not answer is waited
     * for: a busy machine must not end the hold early */
    ngx_im_timer_add(&h->timer, ngx_im_get_conf()->redis_timeout,
                     ngx_im_alone_hold_timeout);

    return;

failed:

    /* no announcement: read at once (the inbox connection announces again
     * when it is back) */

    if (h) {
        ngx_im_spare_put(&ngx_im_spare_holds, h);
    }

    if (jp) {
        ngx_im_spare_put(&ngx_im_spare_jpubs, jp);
    }

    ngx_im_table_sync(u);
}


void
ngx_im_alone_record(uint32_t uid, ngx_im_user_t *u, im_traffic_t *t,
    ngx_uint_t own)
{
    if (own) {
        /*
         * This worker's own 'J' back on the channel: the copies of its
         * earlier deliveries to the uid, published before it on the same
         * connection, are in, so the newcomer's queue has them in order
         * before the inbox is read.
         */
        if (t->type == 'J' && t->has_nonce && u && u->hold
            && t->nonce == u->hold->nonce)
        {
            u->hold->echo = 1;
            ngx_im_alone_hold_check(u);
        }

        return;
    }

    switch (t->type) {

    case 'S':
        if (u && u->hold == NULL) {
            /* else read when the answers are in */
            ngx_im_table_sync(u);
        }
        return;

    case 'A':
        if (u && u->hold && t->nonce == u->hold->nonce) {
            u->hold->got++;
            ngx_im_alone_hold_check(u);
        }
        return;

    default: /* 'J' */
        break;
    }

    /* the newcomer reads the inbox on the answer: this worker's acks held
     * back (decision 051) go to Redis before it, on the same connection */
    ngx_im_store_flush();

    if (u && u->alone) {
        /* behind this worker's appends of what it skipped */
        (void) ngx_im_alone_notice(uid, 'S', NULL, NULL, NULL);
    }

    if (u) {
        ngx_im_alone_shared(u);
    }

    /* the newcomer reads its inbox on this, and from now on this worker
     * publishes; a subscription just going away answers too, it was
     * counted */
    if (t->has_nonce) {
        (void) ngx_im_alone_notice(uid, 'A', &t->nonce, NULL, NULL);
    }
}
