/*
 * ngx_im_alone.c: skipping the channel of a uid nobody else holds.
 *
 * Owns the alone mark of the router's uid records, the probes that set it
 * (a PUBLISH whose count says that this worker's subscription was its
 * only listener), the keep of skipped messages, and the 'J' / 'S' / 'A'
 * records with a newcomer's hold.
 *
 * Most users are online in one place.  When a PUBLISH to a uid's channel
 * reaches only this worker's own subscription, the uid is marked alone and
 * later messages skip the channel (and its echo) while it stays so: they
 * go to the local sessions and, in write-through, the inbox.  Any worker
 * that subscribes to a channel announces it with 'J' once the subscription
 * is confirmed (and again whenever the connection it went out on comes
 * back).  A newcomer is subscribed before its 'J' arrives, so the messages
 * skipped meanwhile must still reach it: every skipped message is kept for
 * NGX_IM_KEEP_MS, and a worker that was alone for the uid, on a foreign
 * 'J', publishes those of that uid again, marks it shared, and publishes
 * 'S' behind its appends so the holders load the inbox again (anything
 * older and not yet acked).  When the keep is full a message is published
 * instead of skipped.  The mark is dropped whenever the subscription is
 * not known to be in place, and a probe's answer counts only if nothing
 * changed while it was under way (a stamp per uid record).
 *
 * Order for the newcomer (docs/PROTOCOL.md 3.4): it merges the inbox it
 * read with what its channel brought meanwhile, so a replayed message must
 * be there by the time it reads.  Its 'J' carries a nonce, every worker
 * that hears it answers with 'A' and that nonce (an alone one behind its
 * replay and 'S'), and the newcomer reads the inbox once PUBLISH's count
 * of answers has come, or after NGX_IM_KEEP_MS (ngx_im_hold_t).  A uid
 * nobody else holds is read at once, after the one round trip of its 'J'.
 * docs/decisions/ has the measurements and the residual gap.
 */

#include "ngx_im_alone.h"
#include "ngx_im_timer.h"


/* skipped messages, kept in case a subscriber turns up: one ring per
 * worker, oldest first */

#define NGX_IM_KEEP_MS    500
#define NGX_IM_KEEP_MAX   262144


typedef struct {
    ngx_im_msg_t          *msg;
    ngx_msec_t             at;
    uint32_t               uid;
} ngx_im_kept_t;


/* a newcomer's wait for the answers to its 'J' */

struct ngx_im_hold_s {
    ngx_im_timer_t         timer;
    uint64_t               nonce;
    ngx_int_t              expected;    /* -1 until PUBLISH has counted */
    ngx_uint_t             got;
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


static void ngx_im_alone_unkeep(ngx_msec_t older_than);
static void ngx_im_alone_unhold(ngx_im_user_t *u);


static ngx_im_spares_t  ngx_im_spare_probes =
    ngx_im_spares(ngx_im_probe_t, 4096);
static ngx_im_spares_t  ngx_im_spare_holds =
    ngx_im_spares(ngx_im_hold_t, 1024);
static ngx_im_spares_t  ngx_im_spare_jpubs =
    ngx_im_spares(ngx_im_jpub_t, 1024);

static ngx_im_kept_t   *ngx_im_kept;
static ngx_uint_t       ngx_im_kept_head;
static ngx_uint_t       ngx_im_kept_n;
static ngx_im_timer_t   ngx_im_kept_timer;


void
ngx_im_alone_exit(void)
{
    if (ngx_im_kept) {
        ngx_im_alone_unkeep(0);
        ngx_im_timer_del(&ngx_im_kept_timer);
    }
}


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


/* the keep */

static void
ngx_im_alone_unkeep(ngx_msec_t older_than)
{
    ngx_im_kept_t  *k;

    while (ngx_im_kept_n) {
        k = &ngx_im_kept[ngx_im_kept_head];

        if ((ngx_msec_int_t) (ngx_current_msec - k->at) < (ngx_msec_int_t)
                                                          older_than)
        {
            break;
        }

        ngx_im_msg_unref(k->msg);
        ngx_im_kept_head = (ngx_im_kept_head + 1) % NGX_IM_KEEP_MAX;
        ngx_im_kept_n--;
    }
}


static void
ngx_im_alone_keep_handler(ngx_im_timer_t *t)
{
    ngx_im_alone_unkeep(NGX_IM_KEEP_MS);

    if (ngx_im_kept_n) {
        ngx_im_timer_add(t, NGX_IM_KEEP_MS, ngx_im_alone_keep_handler);
    }
}


/* NGX_DECLINED: no room, publish it */

static ngx_int_t
ngx_im_alone_keep(uint32_t uid, ngx_im_msg_t *msg)
{
    ngx_im_kept_t  *k;

    if (ngx_im_kept == NULL) {
        /* 6 MB, allocated once per worker, and only once a uid is alone */
        ngx_im_kept = ngx_alloc(NGX_IM_KEEP_MAX * sizeof(ngx_im_kept_t),
                                ngx_cycle->log);
        if (ngx_im_kept == NULL) {
            return NGX_DECLINED;
        }
    }

    ngx_im_alone_unkeep(NGX_IM_KEEP_MS);

    if (ngx_im_kept_n == NGX_IM_KEEP_MAX) {
        return NGX_DECLINED;
    }

    k = &ngx_im_kept[(ngx_im_kept_head + ngx_im_kept_n) % NGX_IM_KEEP_MAX];
    k->msg = ngx_im_msg_ref(msg);
    k->at = ngx_current_msec;
    k->uid = uid;
    ngx_im_kept_n++;

    if (!ngx_im_timer_set(&ngx_im_kept_timer)) {
        ngx_im_timer_add(&ngx_im_kept_timer, NGX_IM_KEEP_MS,
                         ngx_im_alone_keep_handler);
    }

    return NGX_OK;
}


ngx_uint_t
ngx_im_alone_skip(ngx_im_user_t *u, ngx_im_msg_t *msg)
{
    if (!u->alone || u->sub != NGX_IM_SUB_SUBSCRIBED
        || !ngx_im_redis_ready(NGX_IM_REDIS_SUB))
    {
        return 0;
    }

    if (ngx_im_alone_keep((uint32_t) u->node.key, msg) != NGX_OK) {
        return 0;
    }

    ngx_im_stats->channel_skipped++;

    return 1;
}


/* a newcomer for uid: what was skipped for it lately goes to the channel */

static void
ngx_im_alone_replay(uint32_t uid)
{
    u_char         *buf;
    size_t          size, len;
    uint64_t        seq;
    ngx_uint_t      i, n, flags;
    ngx_im_kept_t  *k;

    flags = (ngx_im_get_conf()->delivery == NGX_IM_WRITE_THROUGH)
            ? IM_TRAFFIC_STORED : 0;

    /* this worker's own sessions had them: the echo skips them all */
    seq = ngx_im_table_seq();

    buf = NULL;
    size = 0;

    for (i = 0, n = ngx_im_kept_n; i < n; i++) {
        k = &ngx_im_kept[(ngx_im_kept_head + i) % NGX_IM_KEEP_MAX];

        if (k->uid != uid) {
            continue;
        }

        len = IM_TRAFFIC_D_LEN(ngx_im_worker_id.len, k->msg->entry_len);

        if (len > size) {
            if (buf) {
                ngx_free(buf);
            }

            size = len;

            buf = ngx_alloc(size, ngx_cycle->log);
            if (buf == NULL) {
                return;
            }
        }

        len = im_traffic_build_d(buf, ngx_im_worker_id.data,
                                 ngx_im_worker_id.len, (u_char) flags, seq,
                                 k->msg->entry, k->msg->entry_len);

        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                       "im alone: uid %uD: a kept message replayed", uid);

        (void) ngx_im_table_publish(uid, buf, len, NULL, NULL);
    }

    if (buf) {
        ngx_free(buf);
    }
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
 * answered (a worker alone for the uid answers behind its replay), or
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
                  "came, reading the inbox anyway",
                  (uint32_t) h->user->node.key, h->got, h->expected);

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

    if (h->expected >= 0 && h->got >= (ngx_uint_t) h->expected) {
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
    ngx_im_timer_add(&h->timer, NGX_IM_KEEP_MS, ngx_im_alone_hold_timeout);

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
ngx_im_alone_record(uint32_t uid, ngx_im_user_t *u, im_traffic_t *t)
{
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

    if (u && u->alone) {
        /* the newcomer may have subscribed before these were skipped;
         * older ones, not acked yet, are in the inbox */
        ngx_im_alone_replay(uid);
        (void) ngx_im_alone_notice(uid, 'S', NULL, NULL, NULL);
    }

    if (u) {
        ngx_im_alone_shared(u);
    }

    /* behind the replay: the newcomer reads its inbox on this; a
     * subscription just going away answers too, it was counted */
    if (t->has_nonce) {
        (void) ngx_im_alone_notice(uid, 'A', &t->nonce, NULL, NULL);
    }
}
