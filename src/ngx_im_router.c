/*
 * ngx_im_router.c: where a uid's sessions are, and getting messages there.
 *
 * Owns the worker's table uid -> local sessions (an rbtree), the Redis
 * subscription of each uid in it, the login policy (kick through the uid's
 * channel, reject through a presence key), and delivery: a message goes to
 * the local sessions at once, to the inbox (write-through), and to the
 * uid's channel for the other workers and nodes.
 *
 * With an im_zone, the other workers of this node that hold the uid (the
 * zone's directory says which) get it by datagram instead, and ignore the
 * channel copy of this node's traffic.
 *
 * Traffic, binary, the same on channels and datagrams:
 *   'D' OriginLen:8 Origin Flags:8 Seq:64 Entry      a message
 *   'K' OriginLen:8 Origin Flags:8 ClientId:8 Token:64   a login elsewhere
 *   'J' OriginLen:8 Origin Flags:8 [Nonce:64]  a worker subscribed to
 *                                       the channel
 *   'S' OriginLen:8 Origin Flags:8      load the inbox again
 *   'A' OriginLen:8 Origin Flags:8 Nonce:64  a worker heard this 'J'
 * Flags: 1 the message is in the inbox; 2 this node's workers must take
 * the channel copy too (a datagram could not be sent).  A worker hears its
 * own channel traffic as well: a write-through message it ignores (its
 * sessions had it directly or read it from the inbox), of another one Seq
 * tells which of its sessions got it directly already.
 *
 * Alone: most users are online in one place.  When a PUBLISH to a uid's
 * channel reaches only this worker's own subscription, the uid is marked
 * alone and later messages skip the channel (and its echo) while it stays
 * so: they go to the local sessions and, in write-through, the inbox.  Any
 * worker that subscribes to a channel announces it with 'J' once the
 * subscription is confirmed (and again whenever the connection it went out
 * on comes back).  A newcomer is subscribed before its 'J' arrives, so the
 * messages skipped meanwhile must still reach it: every skipped message is
 * kept for NGX_IM_KEEP_MS, and a worker that was alone for the uid, on a
 * foreign 'J', publishes those of that uid again, marks it shared, and
 * publishes 'S' behind its appends so the holders load the inbox again
 * (anything older and not yet acked).  When the keep is full a message is
 * published instead of skipped.  The mark is dropped whenever the
 * subscription is not known to be in place.
 *
 * Order for the newcomer (PROTOCOL.md 3.4): it merges the inbox it read
 * with what its channel brought meanwhile, so a replayed message must be
 * there by the time it reads.  Its 'J' carries a nonce, every worker that
 * hears it answers with 'A' and that nonce (an alone one behind its
 * replay and 'S'), and the newcomer reads the inbox once PUBLISH's count
 * of answers has come, or after NGX_IM_KEEP_MS (ngx_im_hold_t).  A uid
 * nobody else holds is read at once, after the one round trip of its 'J'.
 */

#include "ngx_im_router.h"
#include "ngx_im_redis.h"
#include "ngx_im_store.h"
#include "ngx_im_zone.h"


#define NGX_IM_SUB_NONE           0
#define NGX_IM_SUB_SUBSCRIBING    1
#define NGX_IM_SUB_SUBSCRIBED     2
#define NGX_IM_SUB_UNSUBSCRIBING  3

#define NGX_IM_T_STORED           1
#define NGX_IM_T_ALL              2


typedef struct ngx_im_hold_s  ngx_im_hold_t;

typedef struct {
    ngx_rbtree_node_t      node;        /* key: uid */
    ngx_queue_t            sessions;
    uint32_t               stamp;       /* changes when "alone" may not */
    uint32_t               ttl_set;     /* the inbox's TTL given then */
    uint32_t               nsessions;
    unsigned               sub:2;
    unsigned               alone:1;     /* no other node holds the uid */
    ngx_im_hold_t         *hold;        /* a newcomer waits for answers */
} ngx_im_user_t;


/* a newcomer's wait for the answers to its 'J' (see the top comment) */

struct ngx_im_hold_s {
    uint64_t               nonce;
    ngx_int_t              expected;    /* -1 until PUBLISH has counted */
    ngx_uint_t             got;
    ngx_event_t            timer;
    ngx_im_user_t         *user;
};


/* the PUBLISH of a 'J', for its count */
typedef struct {
    uint64_t               nonce;
    uint32_t               uid;
} ngx_im_jpub_t;


/* skipped messages, kept in case a subscriber turns up: one ring per
 * worker, oldest first */

#define NGX_IM_KEEP_MS    500
#define NGX_IM_KEEP_MAX   262144

typedef struct {
    ngx_im_msg_t          *msg;
    ngx_msec_t             at;
    uint32_t               uid;
} ngx_im_kept_t;


/* a PUBLISH whose subscriber count may tell that a uid is alone */
typedef struct {
    uint32_t               uid;
    uint32_t               stamp;
} ngx_im_probe_t;


typedef struct {
    ngx_im_pub_t          *pub;
    ngx_im_msg_t          *msg;
    uint32_t               uid;
    ngx_uint_t             local;
    ngx_uint_t             self;
    uint32_t               stamp;       /* 0: not a probe */
} ngx_im_rcpt_t;


static void ngx_im_router_message(u_char *channel, size_t clen,
    u_char *data, size_t len);
static void ngx_im_router_ipc(u_char *data, size_t len);
static void ngx_im_router_traffic(uint32_t uid, u_char *data, size_t len,
    ngx_uint_t ipc);
static ngx_int_t ngx_im_router_peers(uint32_t uid, u_char *data,
    size_t len);
static void ngx_im_router_subscribed(u_char *channel, size_t clen);
static void ngx_im_router_unsubscribed(u_char *channel, size_t clen);
static void ngx_im_router_sub_connected(void);
static void ngx_im_router_inbox_connected(void);
static void ngx_im_router_subscribe(ngx_im_user_t *u);
static void ngx_im_router_stored(redisReply *reply, void *data);
static void ngx_im_router_published(redisReply *reply, void *data);
static void ngx_im_router_presence(redisReply *reply, void *data);
static ngx_int_t ngx_im_router_claim(ngx_im_session_t *s, char *script,
    u_char *stale, size_t slen, ngx_im_ref_t *ref);
static void ngx_im_router_unkeep(ngx_msec_t older_than);
static uint32_t ngx_im_router_stamp(void);
static void ngx_im_router_announce(ngx_im_user_t *u);
static void ngx_im_router_unhold(ngx_im_user_t *u);
static void ngx_im_router_sync_all(ngx_im_user_t *u);


/* the reject policy's claim of a presence key (see ngx_im_router_claim) */
static char  ngx_im_router_claim_script[] =
    "local v = redis.call('get', KEYS[1]) "
    "if not v or v == ARGV[3] then "
    "redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end "
    "return v";


static ngx_rbtree_t            ngx_im_users;
static ngx_rbtree_node_t       ngx_im_users_sentinel;
static ngx_uint_t              ngx_im_nusers;
static uint64_t                ngx_im_seq;
static uint32_t                ngx_im_stamp;
static ngx_im_spares_t         ngx_im_spare_probes =
    ngx_im_spares(ngx_im_probe_t, 4096);

static ngx_im_kept_t          *ngx_im_kept;
static ngx_uint_t              ngx_im_kept_head;
static ngx_uint_t              ngx_im_kept_n;
static ngx_event_t             ngx_im_kept_ev;

static ngx_im_redis_handlers_t  ngx_im_router_handlers = {
    ngx_im_router_message,
    ngx_im_router_subscribed,
    ngx_im_router_unsubscribed,
    ngx_im_router_sub_connected,
    ngx_im_router_inbox_connected
};


ngx_int_t
ngx_im_router_init(ngx_cycle_t *cycle)
{
    ngx_rbtree_init(&ngx_im_users, &ngx_im_users_sentinel,
                    ngx_rbtree_insert_value);

    return ngx_im_redis_init(cycle, &ngx_im_router_handlers);
}


ngx_int_t
ngx_im_router_init_zone(ngx_cycle_t *cycle)
{
    return ngx_im_zone_init_process(cycle, ngx_im_router_ipc);
}


void
ngx_im_router_exit(void)
{
    if (ngx_im_kept) {
        ngx_im_router_unkeep(0);

        if (ngx_im_kept_ev.timer_set) {
            ngx_del_timer(&ngx_im_kept_ev);
        }
    }

    ngx_im_zone_exit_process();
    ngx_im_redis_exit();
}


ngx_uint_t
ngx_im_router_users(void)
{
    return ngx_im_nusers;
}


static ngx_im_user_t *
ngx_im_router_find(uint32_t uid)
{
    return (ngx_im_user_t *) ngx_im_rbtree_lookup(&ngx_im_users, uid);
}


static ngx_im_user_t *
ngx_im_router_user(uint32_t uid)
{
    ngx_im_user_t  *u;

    u = ngx_im_router_find(uid);
    if (u) {
        return u;
    }

    u = ngx_im_slab_alloc(sizeof(ngx_im_user_t));
    if (u == NULL) {
        return NULL;
    }

    u->node.key = uid;
    u->stamp = ngx_im_router_stamp();
    ngx_queue_init(&u->sessions);
    ngx_rbtree_insert(&ngx_im_users, &u->node);
    ngx_im_nusers++;

    return u;
}


static void
ngx_im_router_free(ngx_im_user_t *u)
{
    if (u->hold) {
        ngx_im_router_unhold(u);
    }

    ngx_rbtree_delete(&ngx_im_users, &u->node);
    ngx_im_nusers--;
    ngx_im_slab_free(u);
}


static size_t
ngx_im_router_channel(u_char *buf, uint32_t uid)
{
    return ngx_sprintf(buf, "im:u:%uD", uid) - buf;
}


static ngx_im_user_t *
ngx_im_router_channel_user(u_char *channel, size_t clen)
{
    ngx_int_t  uid;

    if (clen <= 5 || ngx_strncmp(channel, "im:u:", 5) != 0) {
        return NULL;
    }

    uid = ngx_atoi(channel + 5, clen - 5);
    if (uid == NGX_ERROR) {
        return NULL;
    }

    return ngx_im_router_find((uint32_t) uid);
}


/* traffic records */

#define NGX_IM_HEAD_LEN  (3 + ngx_im_worker_id.len)
#define NGX_IM_D_LEN(msg)  (NGX_IM_HEAD_LEN + 8 + (msg)->entry_len)


/* Type OriginLen Origin Flags */

static u_char *
ngx_im_router_head(u_char *p, u_char type, u_char flags)
{
    *p++ = type;
    *p++ = (u_char) ngx_im_worker_id.len;
    p = ngx_cpymem(p, ngx_im_worker_id.data, ngx_im_worker_id.len);
    *p++ = flags;

    return p;
}


static u_char *
ngx_im_router_put_u64(u_char *p, uint64_t v)
{
    p = im_put_u32(p, (uint32_t) (v >> 32));
    return im_put_u32(p, (uint32_t) v);
}


static uint64_t
ngx_im_router_get_u64(u_char *p)
{
    return ((uint64_t) im_get_u32(p) << 32) | im_get_u32(p + 4);
}


/* 'D': the head, Seq and the message; NGX_IM_D_LEN(msg) bytes */

static u_char *
ngx_im_router_d(u_char *p, u_char flags, uint64_t seq, ngx_im_msg_t *msg)
{
    p = ngx_im_router_head(p, 'D', flags);
    p = ngx_im_router_put_u64(p, seq);

    return ngx_cpymem(p, msg->entry, msg->entry_len);
}


/* a record to the uid's channel, on the inbox connection: behind every
 * append this worker made */

static ngx_int_t
ngx_im_router_publish(uint32_t uid, u_char *data, size_t len,
    ngx_im_redis_cb_pt cb, void *cbdata)
{
    u_char       channel[32];
    const char  *argv[3];
    size_t       argvlen[3];

    argv[0] = "PUBLISH";
    argvlen[0] = 7;
    argv[1] = (char *) channel;
    argvlen[1] = ngx_im_router_channel(channel, uid);
    argv[2] = (char *) data;
    argvlen[2] = len;

    return ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, cb, cbdata, 3, argv,
                            argvlen);
}


/* alone (see the comment at the top) */

/* never 0, which marks a publish that is no probe; a wrap after 2^32
 * changes is harmless: a probe is answered within seconds */

static uint32_t
ngx_im_router_stamp(void)
{
    if (++ngx_im_stamp == 0) {
        ngx_im_stamp = 1;
    }

    return ngx_im_stamp;
}


static void
ngx_im_router_shared(ngx_im_user_t *u)
{
    u->alone = 0;
    u->stamp = ngx_im_router_stamp();
}


static ngx_uint_t
ngx_im_router_alone(ngx_im_user_t *u)
{
    return u->alone && u->sub == NGX_IM_SUB_SUBSCRIBED
           && ngx_im_redis_ready(NGX_IM_REDIS_SUB);
}


/* whether the count a PUBLISH to u's channel returns can tell */
static ngx_uint_t
ngx_im_router_probing(ngx_im_user_t *u)
{
    return u != NULL && !u->alone && u->sub == NGX_IM_SUB_SUBSCRIBED
           && ngx_im_redis_ready(NGX_IM_REDIS_SUB);
}


static void
ngx_im_router_learn(uint32_t uid, uint32_t stamp, redisReply *reply)
{
    ngx_im_user_t  *u;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER
        || reply->integer != 1)
    {
        return;
    }

    u = ngx_im_router_find(uid);

    /* the stamp is the same: no foreign 'J', no change of subscription
     * since the PUBLISH left, so the one subscriber was this worker */

    if (u && u->stamp == stamp && u->sub == NGX_IM_SUB_SUBSCRIBED
        && ngx_im_redis_ready(NGX_IM_REDIS_SUB))
    {
        u->alone = 1;
    }
}


static void
ngx_im_router_probed(redisReply *reply, void *data)
{
    ngx_im_probe_t  *pr = data;

    ngx_im_router_learn(pr->uid, pr->stamp, reply);

    ngx_im_spare_put(&ngx_im_spare_probes, pr);
}


static ngx_im_probe_t *
ngx_im_router_probe(ngx_im_user_t *u)
{
    ngx_im_probe_t  *pr;

    pr = ngx_im_spare_get(&ngx_im_spare_probes);
    if (pr == NULL) {
        return NULL;
    }

    pr->uid = (uint32_t) u->node.key;
    pr->stamp = u->stamp;

    return pr;
}


static void
ngx_im_router_unkeep(ngx_msec_t older_than)
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
ngx_im_router_keep_handler(ngx_event_t *ev)
{
    ngx_im_router_unkeep(NGX_IM_KEEP_MS);

    if (ngx_im_kept_n) {
        ngx_add_timer(ev, NGX_IM_KEEP_MS);
    }
}


/* NGX_DECLINED: no room, publish it */

static ngx_int_t
ngx_im_router_keep(uint32_t uid, ngx_im_msg_t *msg)
{
    ngx_im_kept_t  *k;

    if (ngx_im_kept == NULL) {
        ngx_im_kept = ngx_alloc(NGX_IM_KEEP_MAX * sizeof(ngx_im_kept_t),
                                ngx_cycle->log);
        if (ngx_im_kept == NULL) {
            return NGX_DECLINED;
        }

        ngx_im_kept_ev.handler = ngx_im_router_keep_handler;
        ngx_im_kept_ev.log = ngx_cycle->log;
        ngx_im_kept_ev.data = &ngx_im_kept_ev;
        ngx_im_kept_ev.cancelable = 1;
    }

    ngx_im_router_unkeep(NGX_IM_KEEP_MS);

    if (ngx_im_kept_n == NGX_IM_KEEP_MAX) {
        return NGX_DECLINED;
    }

    k = &ngx_im_kept[(ngx_im_kept_head + ngx_im_kept_n) % NGX_IM_KEEP_MAX];
    k->msg = ngx_im_msg_ref(msg);
    k->at = ngx_current_msec;
    k->uid = uid;
    ngx_im_kept_n++;

    if (!ngx_im_kept_ev.timer_set) {
        ngx_add_timer(&ngx_im_kept_ev, NGX_IM_KEEP_MS);
    }

    return NGX_OK;
}


/* a newcomer for uid: what was skipped for it lately goes to the channel */

static void
ngx_im_router_replay(uint32_t uid)
{
    u_char         *buf, *p;
    size_t          size;
    uint64_t        seq;
    ngx_uint_t      i, n, flags;
    ngx_im_kept_t  *k;

    flags = (ngx_im_get_conf()->delivery == NGX_IM_WRITE_THROUGH)
            ? NGX_IM_T_STORED : 0;

    /* this worker's own sessions had them: the echo skips them all */
    seq = ngx_im_seq;

    buf = NULL;
    size = 0;

    for (i = 0, n = ngx_im_kept_n; i < n; i++) {
        k = &ngx_im_kept[(ngx_im_kept_head + i) % NGX_IM_KEEP_MAX];

        if (k->uid != uid) {
            continue;
        }

        if (NGX_IM_D_LEN(k->msg) > size) {
            if (buf) {
                ngx_free(buf);
            }

            size = NGX_IM_D_LEN(k->msg);

            buf = ngx_alloc(size, ngx_cycle->log);
            if (buf == NULL) {
                return;
            }
        }

        p = ngx_im_router_d(buf, (u_char) flags, seq, k->msg);

        (void) ngx_im_router_publish(uid, buf, p - buf, NULL, NULL);
    }

    if (buf) {
        ngx_free(buf);
    }
}


/* 'S', or 'J' and 'A' with the 8 bytes of a nonce */

static ngx_int_t
ngx_im_router_notice(uint32_t uid, u_char type, u_char *nonce,
    ngx_im_redis_cb_pt cb, void *cbdata)
{
    u_char  buf[3 + 255 + 8], *p;

    p = ngx_im_router_head(buf, type, 0);

    if (nonce) {
        p = ngx_cpymem(p, nonce, 8);
    }

    return ngx_im_router_publish(uid, buf, p - buf, cb, cbdata);
}


/*
 * A newcomer's 'J' and the wait for its answers: the sessions of the uid
 * here read the inbox once every other subscriber PUBLISH counted has
 * answered (a worker alone for the uid answers behind its replay), or
 * when the wait times out (a subscriber that does not answer: one gone
 * since, or a build from before 'A').
 */

static void
ngx_im_router_hold_done(ngx_im_user_t *u)
{
    ngx_im_router_unhold(u);
    ngx_im_router_sync_all(u);
}


static void
ngx_im_router_hold_timeout(ngx_event_t *ev)
{
    ngx_im_hold_t  *h = ev->data;

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "im: uid %uD: %ui of %i answers to its announcement "
                  "came, reading the inbox anyway",
                  (uint32_t) h->user->node.key, h->got, h->expected);

    ngx_im_router_hold_done(h->user);
}


static void
ngx_im_router_unhold(ngx_im_user_t *u)
{
    ngx_im_hold_t  *h = u->hold;

    if (h->timer.timer_set) {
        ngx_del_timer(&h->timer);
    }

    ngx_free(h);
    u->hold = NULL;
}


static void
ngx_im_router_hold_check(ngx_im_user_t *u)
{
    ngx_im_hold_t  *h = u->hold;

    if (h->expected >= 0 && h->got >= (ngx_uint_t) h->expected) {
        ngx_im_router_hold_done(u);
    }
}


static void
ngx_im_router_announced(redisReply *reply, void *data)
{
    ngx_im_jpub_t  *jp = data;
    ngx_im_user_t  *u;

    u = ngx_im_router_find(jp->uid);

    if (u && u->hold && u->hold->nonce == jp->nonce) {

        if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
            /* lost with the connection: nobody to wait for */
            ngx_im_router_hold_done(u);

        } else {
            /* this worker's own subscription counts too */
            u->hold->expected = reply->integer > 0 ? reply->integer - 1 : 0;
            ngx_im_router_hold_check(u);
        }
    }

    ngx_free(jp);
}


static void
ngx_im_router_answered(ngx_im_user_t *u, u_char *p, u_char *last)
{
    uint64_t  nonce;

    if (u == NULL || u->hold == NULL || last - p < 8) {
        return;
    }

    nonce = ngx_im_router_get_u64(p);

    if (nonce == u->hold->nonce) {
        u->hold->got++;
        ngx_im_router_hold_check(u);
    }
}


static void
ngx_im_router_announce(ngx_im_user_t *u)
{
    u_char          nonce[8];
    uint32_t        uid;
    ngx_im_hold_t  *h;
    ngx_im_jpub_t  *jp;

    static uint32_t  nonces;

    uid = (uint32_t) u->node.key;

    if (u->hold) {
        ngx_im_router_unhold(u);
    }

    h = ngx_alloc(sizeof(ngx_im_hold_t), ngx_cycle->log);
    jp = ngx_alloc(sizeof(ngx_im_jpub_t), ngx_cycle->log);

    if (h == NULL || jp == NULL) {
        goto failed;
    }

    ngx_memzero(h, sizeof(ngx_im_hold_t));
    h->nonce = ((uint64_t) ngx_pid << 32) | ++nonces;
    h->expected = -1;
    h->user = u;
    h->timer.handler = ngx_im_router_hold_timeout;
    h->timer.data = h;
    h->timer.log = ngx_cycle->log;
    h->timer.cancelable = 1;

    jp->nonce = h->nonce;
    jp->uid = uid;

    (void) ngx_im_router_put_u64(nonce, h->nonce);

    if (ngx_im_router_notice(uid, 'J', nonce, ngx_im_router_announced, jp)
        != NGX_OK)
    {
        goto failed;
    }

    u->hold = h;
    ngx_add_timer(&h->timer, NGX_IM_KEEP_MS);

    return;

failed:

    /* no announcement: read at once (inbox_connected announces again) */

    if (h) {
        ngx_free(h);
    }

    if (jp) {
        ngx_free(jp);
    }

    ngx_im_router_sync_all(u);
}


/* login policy */

static size_t
ngx_im_router_presence_key(u_char *buf, ngx_im_session_t *s)
{
    return ngx_sprintf(buf, "im:p:%uD:%d", s->uid, (int) s->client_id) - buf;
}


static size_t
ngx_im_router_presence_value(u_char *buf, ngx_im_session_t *s)
{
    return ngx_sprintf(buf, "%V:%uL", &ngx_im_worker_id, s->token) - buf;
}


static time_t
ngx_im_router_presence_ttl(void)
{
    ngx_im_conf_t  *imcf = ngx_im_get_conf();

    /* outlives two missed refreshes, gone soon after a crash */
    return (time_t) ((3 * imcf->ping_interval + imcf->ping_timeout) / 1000)
           + 1;
}


void
ngx_im_router_login(ngx_im_session_t *s)
{
    u_char            *p, *buf;
    ngx_queue_t       *q, *next;
    ngx_im_ref_t      *ref;
    ngx_im_user_t     *u;
    ngx_im_conf_t     *imcf;
    ngx_im_session_t  *other;

    imcf = ngx_im_get_conf();

    u = ngx_im_router_find(s->uid);

    if (imcf->login_policy == NGX_IM_LOGIN_REJECT) {

        if (u) {
            for (q = ngx_queue_head(&u->sessions);
                 q != ngx_queue_sentinel(&u->sessions);
                 q = ngx_queue_next(q))
            {
                other = ngx_queue_data(q, ngx_im_session_t, user_link);

                if (other->client_id == s->client_id) {
                    ngx_im_session_login_done(s, 1);
                    return;
                }
            }
        }

        ref = ngx_alloc(sizeof(ngx_im_ref_t), s->connection->log);
        if (ref == NULL) {
            ngx_im_session_login_done(s, 2);
            return;
        }

        ref->session = s;

        if (ngx_im_router_claim(s, ngx_im_router_claim_script, NULL, 0, ref)
            != NGX_OK)
        {
            ngx_free(ref);
            ngx_im_session_login_done(s, 2);
            return;
        }

        s->login_ref = ref;
        return;
    }

    /* kick: the older session of this (uid, ClientId) goes, here ... */

    if (u) {
        for (q = ngx_queue_head(&u->sessions);
             q != ngx_queue_sentinel(&u->sessions);
             q = next)
        {
            next = ngx_queue_next(q);
            other = ngx_queue_data(q, ngx_im_session_t, user_link);

            if (other->client_id == s->client_id) {
                ngx_im_session_kick(other);
            }
        }
    }

    /* ... and on every other worker and node */

    buf = ngx_alloc(NGX_IM_HEAD_LEN + 1 + 8, s->connection->log);

    if (buf) {
        p = ngx_im_router_head(buf, 'K', 0);
        *p++ = s->client_id;
        p = ngx_im_router_put_u64(p, s->token);

        if (ngx_im_router_peers(s->uid, buf, p - buf) != NGX_OK) {
            buf[NGX_IM_HEAD_LEN - 1] |= NGX_IM_T_ALL;
        }

        /* Redis down: the other session stays until it ends by itself */
        (void) ngx_im_router_publish(s->uid, buf, p - buf, NULL, NULL);
        ngx_free(buf);
    }

    ngx_im_session_login_done(s, 0);
}


/*
 * The reject policy's presence key "im:p:<uid>:<ClientId>" holds the live
 * session's "<worker id>:<token>".  A login claims it; when another holds
 * it, and that holder is a worker of this node that is gone (killed, and
 * respawned under another pid) or this worker without such a session, the
 * claim takes it over; a holder elsewhere expires with its TTL.
 */

static ngx_int_t
ngx_im_router_claim(ngx_im_session_t *s, char *script, u_char *stale,
    size_t slen, ngx_im_ref_t *ref)
{
    u_char       key[64], val[NGX_MAX_ERROR_STR], ttl[NGX_INT_T_LEN];
    const char  *argv[7];
    size_t       argvlen[7];

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = script;
    argvlen[1] = ngx_strlen(script);
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (char *) key;
    argvlen[3] = ngx_im_router_presence_key(key, s);
    argv[4] = (char *) val;
    argvlen[4] = ngx_im_router_presence_value(val, s);
    argv[5] = (char *) ttl;
    argvlen[5] = ngx_sprintf(ttl, "%T", ngx_im_router_presence_ttl()) - ttl;
    argv[6] = stale ? (char *) stale : "";
    argvlen[6] = stale ? slen : 0;

    return ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_router_presence, ref,
                            7, argv, argvlen);
}


static ngx_uint_t
ngx_im_router_stale(ngx_im_session_t *s, u_char *v, size_t len)
{
    u_char     *p, *last;
    size_t      plen;
    ngx_pid_t   pid;

    /* "<node>/<instance>:<pid>:<token>"; this node's part ends at the
     * colon before the pid, as in this worker's id */

    plen = ngx_im_worker_id.len;
    while (plen && ngx_im_worker_id.data[plen - 1] != ':') {
        plen--;
    }

    if (plen == 0 || len <= plen
        || ngx_memcmp(v, ngx_im_worker_id.data, plen) != 0)
    {
        return 0;
    }

    p = v + plen;
    last = ngx_strlchr(p, v + len, ':');
    if (last == NULL) {
        return 0;
    }

    pid = ngx_atoi(p, last - p);
    if (pid == NGX_ERROR) {
        return 0;
    }

    if (pid == ngx_pid) {
        /* here: the table was searched already, no such session */
        return 1;
    }

    return kill(pid, 0) == -1 && ngx_errno == NGX_ESRCH;
}


static void
ngx_im_router_presence(redisReply *reply, void *data)
{
    ngx_im_ref_t      *ref = data;
    ngx_im_session_t  *s;

    s = ref->session;

    if (s == NULL) {
        ngx_free(ref);
        return;
    }

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        s->login_ref = NULL;
        ngx_free(ref);
        ngx_im_session_login_done(s, 2);
        return;
    }

    if (reply->type == REDIS_REPLY_STRING
        && ngx_im_router_stale(s, (u_char *) reply->str, reply->len)
        && ngx_im_router_claim(s, ngx_im_router_claim_script,
                               (u_char *) reply->str, reply->len, ref)
           == NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: uid %uD client %d: presence of a gone worker "
                      "taken over", s->uid, (int) s->client_id);
        return;
    }

    s->login_ref = NULL;
    ngx_free(ref);

    ngx_im_session_login_done(s, reply->type == REDIS_REPLY_INTEGER
                                 && reply->integer == 1 ? 0 : 1);
}


void
ngx_im_router_refresh(ngx_im_session_t *s)
{
    u_char          key[64], ttl[NGX_INT_T_LEN];
    const char     *argv[3];
    size_t          argvlen[3];
    ngx_im_conf_t  *imcf;

    imcf = ngx_im_get_conf();

    if (imcf->login_policy != NGX_IM_LOGIN_REJECT || s->uid == 0) {
        return;
    }

    argv[0] = "EXPIRE";
    argvlen[0] = 6;
    argv[1] = (char *) key;
    argvlen[1] = ngx_im_router_presence_key(key, s);
    argv[2] = (char *) ttl;
    argvlen[2] = ngx_sprintf(ttl, "%T", ngx_im_router_presence_ttl()) - ttl;

    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 3, argv,
                            argvlen);
}


static void
ngx_im_router_presence_del(ngx_im_session_t *s)
{
    u_char          key[64], val[NGX_MAX_ERROR_STR];
    const char     *argv[5];
    size_t          argvlen[5];

    /* only this session's own key: a newer login may hold it already */
    static char     script[] =
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('del', KEYS[1]) end return 0";

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = script;
    argvlen[1] = sizeof(script) - 1;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (char *) key;
    argvlen[3] = ngx_im_router_presence_key(key, s);
    argv[4] = (char *) val;
    argvlen[4] = ngx_im_router_presence_value(val, s);

    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 5, argv,
                            argvlen);
}


/* the table */

ngx_int_t
ngx_im_router_join(ngx_im_session_t *s)
{
    ngx_im_user_t  *u;

    u = ngx_im_router_user(s->uid);
    if (u == NULL) {
        return NGX_ERROR;
    }

    if (u->nsessions == 0 && ngx_im_dir_add(s->uid) != NGX_OK) {
        if (u->sub == NGX_IM_SUB_NONE) {
            ngx_im_router_free(u);
        }
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&u->sessions, &s->user_link);
    u->nsessions++;

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im join: uid %uD sessions %ui sub %ui", s->uid,
                   (ngx_uint_t) u->nsessions, (ngx_uint_t) u->sub);
    s->urec = u;
    s->live_seq = ++ngx_im_seq;

    /* live messages wait until the inbox is pushed: order (PROTOCOL.md 5) */
    s->loading = 1;

    switch (u->sub) {

    case NGX_IM_SUB_SUBSCRIBED:
        if (u->hold == NULL) {
            ngx_im_session_sync(s);
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
ngx_im_router_leave(ngx_im_session_t *s)
{
    u_char          channel[32];
    ngx_im_user_t  *u;
    ngx_im_conf_t  *imcf;

    u = s->urec;
    if (u == NULL) {
        return;
    }

    imcf = ngx_im_get_conf();

    if (imcf->login_policy == NGX_IM_LOGIN_REJECT) {
        ngx_im_router_presence_del(s);
    }

    ngx_queue_remove(&s->user_link);
    s->urec = NULL;

    if (--u->nsessions) {
        return;
    }

    ngx_im_dir_del(u->node.key);

    switch (u->sub) {

    case NGX_IM_SUB_SUBSCRIBED:
        if (ngx_im_redis_unsubscribe(channel,
                                     ngx_im_router_channel(channel,
                                                           u->node.key))
            == NGX_OK)
        {
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


static void
ngx_im_router_sync_all(ngx_im_user_t *u)
{
    ngx_queue_t       *q, *next;
    ngx_im_session_t  *s;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_im_session_t, user_link);
        ngx_im_session_sync(s);
    }
}


static void
ngx_im_router_subscribe(ngx_im_user_t *u)
{
    u_char  channel[32];

    if (ngx_im_redis_subscribe(channel,
                               ngx_im_router_channel(channel, u->node.key))
        == NGX_OK)
    {
        u->sub = NGX_IM_SUB_SUBSCRIBING;
        return;
    }

    /* no pub/sub now: serve the inbox anyway; subscribed again, and
     * synced again, when the connection is back */
    u->sub = NGX_IM_SUB_NONE;
    ngx_im_router_sync_all(u);
}


static void
ngx_im_router_subscribed(u_char *channel, size_t clen)
{
    u_char          buf[32];
    ngx_im_user_t  *u;

    u = ngx_im_router_channel_user(channel, clen);
    if (u == NULL) {
        return;
    }

    if (u->nsessions == 0) {
        if (ngx_im_redis_unsubscribe(buf,
                                     ngx_im_router_channel(buf, u->node.key))
            == NGX_OK)
        {
            u->sub = NGX_IM_SUB_UNSUBSCRIBING;

        } else {
            ngx_im_router_free(u);
        }

        return;
    }

    u->sub = NGX_IM_SUB_SUBSCRIBED;
    ngx_im_router_shared(u);

    /* from now on every message reaches us, and the inbox holds the rest
     * once a worker elsewhere that skipped this channel has replayed what
     * it skipped: the sessions read it when the answers are in */
    ngx_im_router_announce(u);
}


static void
ngx_im_router_unsubscribed(u_char *channel, size_t clen)
{
    ngx_im_user_t  *u;

    u = ngx_im_router_channel_user(channel, clen);
    if (u == NULL || u->sub != NGX_IM_SUB_UNSUBSCRIBING) {
        return;
    }

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
    ngx_rbtree_node_t  *node, *next;
    ngx_im_user_t      *u;

    if (ngx_im_users.root == ngx_im_users.sentinel) {
        return;
    }

    node = ngx_rbtree_min(ngx_im_users.root, ngx_im_users.sentinel);

    while (node) {
        next = ngx_rbtree_next(&ngx_im_users, node);
        u = (ngx_im_user_t *) node;

        u->sub = NGX_IM_SUB_NONE;
        ngx_im_router_shared(u);

        if (u->nsessions) {
            ngx_im_router_subscribe(u);

        } else {
            ngx_im_router_free(u);
        }

        node = next;
    }
}


static void
ngx_im_router_inbox_connected(void)
{
    ngx_im_user_t      *u;
    ngx_rbtree_node_t  *node;

    if (ngx_im_users.root == ngx_im_users.sentinel) {
        return;
    }

    /* loads that failed while Redis was away, and announcements that
     * may have been lost with the connection */

    for (node = ngx_rbtree_min(ngx_im_users.root, ngx_im_users.sentinel);
         node;
         node = ngx_rbtree_next(&ngx_im_users, node))
    {
        u = (ngx_im_user_t *) node;

        if (u->sub == NGX_IM_SUB_SUBSCRIBED) {
            ngx_im_router_announce(u);

        } else {
            ngx_im_router_sync_all(u);
        }
    }
}


/* delivery */

static ngx_uint_t
ngx_im_router_local(ngx_im_user_t *u, ngx_im_msg_t *msg, ngx_uint_t stored,
    uint64_t after)
{
    ngx_uint_t         n;
    ngx_queue_t       *q, *next;
    ngx_im_session_t  *s;

    n = 0;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_im_session_t, user_link);

        if (s->live_seq <= after) {
            /* had it directly from this worker */
            n++;
            continue;
        }

        if (ngx_im_session_push(s, msg, stored) == NGX_OK) {
            n++;
        }
    }

    return n;
}


void
ngx_im_router_deliver(ngx_im_msg_t *msg, uint32_t *uids, ngx_uint_t n,
    ngx_im_pub_t *pub)
{
    u_char         *buf, *flags;
    size_t          len;
    uint64_t        seq;
    ngx_uint_t      i, stored, local, probe, peers;
    ngx_int_t       rc;
    ngx_im_user_t  *u;
    ngx_im_conf_t  *imcf;
    ngx_im_rcpt_t  *r;
    ngx_im_probe_t *pr;

    imcf = ngx_im_get_conf();

    stored = (imcf->delivery == NGX_IM_WRITE_THROUGH);
    seq = ngx_im_seq;

    pub->remaining = n;

    len = NGX_IM_D_LEN(msg);
    buf = ngx_alloc(len, ngx_cycle->log);
    flags = NULL;

    if (buf) {
        (void) ngx_im_router_d(buf, stored ? NGX_IM_T_STORED : 0, seq, msg);
        flags = buf + NGX_IM_HEAD_LEN - 1;
    }

    peers = !ngx_im_dir_alone();

    for (i = 0; i < n; i++) {

        u = ngx_im_router_find(uids[i]);
        local = u ? ngx_im_router_local(u, msg, stored, 0) : 0;

        /* this node's other workers: by datagram, no Redis in between */

        rc = NGX_DECLINED;

        if (buf && peers) {
            *flags &= ~NGX_IM_T_ALL;
            rc = ngx_im_router_peers(uids[i], buf, len);

            if (rc == NGX_OK) {
                local++;

            } else if (rc == NGX_AGAIN) {
                *flags |= NGX_IM_T_ALL;
            }
        }

        /* nobody elsewhere: the channel is skipped */

        if (u && local && rc != NGX_AGAIN && ngx_im_router_alone(u)
            && ngx_im_router_keep(uids[i], msg) == NGX_OK)
        {
            ngx_im_stats.channel_skipped++;

            if (!stored) {
                ngx_im_pub_served(pub, 1);
                continue;
            }

            if (ngx_im_store_push(uids[i], msg, &u->ttl_set,
                                  ngx_im_router_stored, pub)
                != NGX_OK)
            {
                ngx_im_pub_served(pub, 0);
            }

            continue;
        }

        /* a sibling worker's subscription would count too */
        probe = (rc == NGX_DECLINED && ngx_im_router_probing(u));

        if (stored) {
            /* write-through: the sender's ack waits for the append; the
             * publish behind it on the same connection cannot overtake */

            if (ngx_im_store_push(uids[i], msg, u ? &u->ttl_set : NULL,
                                  ngx_im_router_stored, pub)
                != NGX_OK)
            {
                ngx_im_pub_served(pub, 0);
                continue;
            }

            if (buf) {
                pr = probe ? ngx_im_router_probe(u) : NULL;

                if (ngx_im_router_publish(uids[i], buf, len,
                                          pr ? ngx_im_router_probed : NULL,
                                          pr)
                    != NGX_OK
                    && pr)
                {
                    ngx_im_spare_put(&ngx_im_spare_probes, pr);
                }
            }

            continue;
        }

        /* offline-only: stored when nobody took it */

        r = ngx_alloc(sizeof(ngx_im_rcpt_t), ngx_cycle->log);

        if (r == NULL || buf == NULL) {
            if (r) {
                ngx_free(r);
            }
            ngx_im_pub_served(pub, local > 0);
            continue;
        }

        r->pub = pub;
        r->msg = ngx_im_msg_ref(msg);
        r->uid = uids[i];
        r->local = local;
        r->self = (u && u->sub == NGX_IM_SUB_SUBSCRIBED);
        r->stamp = probe ? u->stamp : 0;

        if (ngx_im_router_publish(uids[i], buf, len, ngx_im_router_published,
                                  r)
            != NGX_OK)
        {
            ngx_im_msg_unref(r->msg);
            ngx_free(r);
            ngx_im_pub_served(pub, local > 0);
        }
    }

    if (buf) {
        ngx_free(buf);
    }
}


static void
ngx_im_router_stored(redisReply *reply, void *data)
{
    ngx_im_pub_served(data, ngx_im_store_pushed(reply) == NGX_OK);
}


static void
ngx_im_router_published(redisReply *reply, void *data)
{
    ngx_im_rcpt_t  *r = data;
    ngx_int_t       others;

    if (r->stamp) {
        ngx_im_router_learn(r->uid, r->stamp, reply);
    }

    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        others = (ngx_int_t) reply->integer - (ngx_int_t) r->self;

        if (r->local || others > 0) {
            ngx_im_pub_served(r->pub, 1);
            goto done;
        }

        if (ngx_im_store_push(r->uid, r->msg, NULL, ngx_im_router_stored,
                              r->pub)
            == NGX_OK)
        {
            goto done;
        }
    }

    ngx_im_pub_served(r->pub, r->local > 0);

done:

    ngx_im_msg_unref(r->msg);
    ngx_free(r);
}


/*
 * NGX_OK: handed to at least one peer; NGX_DECLINED: no peer;
 * NGX_AGAIN: some peer could not be reached directly
 */

static ngx_int_t
ngx_im_router_peers(uint32_t uid, u_char *data, size_t len)
{
    ngx_int_t   rc, sent;
    ngx_uint_t  i, n;
    ngx_pid_t   pids[NGX_IM_DIR_PIDS];

    n = ngx_im_dir_peers(uid, pids);

    sent = NGX_DECLINED;

    for (i = 0; i < n; i++) {
        rc = ngx_im_ipc_send(pids[i], uid, data, len);

        if (rc == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        if (rc == NGX_OK) {
            sent = NGX_OK;
        }
    }

    return sent;
}


static void
ngx_im_router_message(u_char *channel, size_t clen, u_char *data,
    size_t len)
{
    ngx_int_t  uid;

    if (clen <= 5 || ngx_strncmp(channel, "im:u:", 5) != 0) {
        return;
    }

    uid = ngx_atoi(channel + 5, clen - 5);
    if (uid == NGX_ERROR) {
        return;
    }

    ngx_im_router_traffic((uint32_t) uid, data, len, 0);
}


static void
ngx_im_router_ipc(u_char *data, size_t len)
{
    ngx_im_router_traffic(im_get_u32(data), data + 4, len - 4, 1);
}


static void
ngx_im_router_traffic(uint32_t uid, u_char *data, size_t len, ngx_uint_t ipc)
{
    u_char            *p, *last, flags;
    size_t             olen, plen;
    uint64_t           seq, token;
    ngx_uint_t         own, node;
    ngx_queue_t       *q, *next;
    ngx_im_msg_t      *msg;
    ngx_im_user_t     *u;
    ngx_im_session_t  *s;

    p = data;
    last = data + len;

    if (len < 3 || (size_t) (last - p - 3) < p[1]) {
        return;
    }

    olen = p[1];
    own = (olen == ngx_im_worker_id.len
           && ngx_memcmp(p + 2, ngx_im_worker_id.data, olen) == 0);

    /* same node: the part of the worker id before the colon */
    plen = ngx_im_worker_id.len;
    while (plen && ngx_im_worker_id.data[plen - 1] != ':') {
        plen--;
    }

    node = (olen > plen && ngx_memcmp(p + 2, ngx_im_worker_id.data, plen) == 0);

    flags = p[2 + olen];

    if (data[0] == 'J' || data[0] == 'S' || data[0] == 'A') {
        /* from every worker but this one, siblings too: a sibling past
         * the directory's slots gets no datagrams */

        if (own) {
            return;
        }

        u = ngx_im_router_find(uid);
        p += 3 + olen;

        switch (data[0]) {

        case 'S':
            if (u && u->hold == NULL) {
                /* else read when the answers are in */
                ngx_im_router_sync_all(u);
            }
            return;

        case 'A':
            ngx_im_router_answered(u, p, last);
            return;

        default: /* 'J' */
            break;
        }

        if (u && u->alone) {
            /* the newcomer may have subscribed before these were
             * skipped; older ones, not acked yet, are in the inbox */
            ngx_im_router_replay(uid);
            (void) ngx_im_router_notice(uid, 'S', NULL, NULL, NULL);
        }

        if (u) {
            ngx_im_router_shared(u);
        }

        /* behind the replay: the newcomer reads its inbox on this; a
         * subscription just going away answers too, it was counted */
        if (last - p >= 8) {
            (void) ngx_im_router_notice(uid, 'A', p, NULL, NULL);
        }

        return;
    }

    if (!ipc && node && !own && !(flags & NGX_IM_T_ALL)) {
        /* the datagram brought it already */
        return;
    }

    p += 3 + olen;

    u = ngx_im_router_find(uid);

    switch (data[0]) {

    case 'D':
        if (last - p < 8) {
            return;
        }

        if (own && (flags & NGX_IM_T_STORED)) {
            /* this worker's own write-through message: the sessions here
             * that were live then had it directly, and those that joined
             * since read it from the inbox, in its place (pushed now it
             * would go behind what they got directly: a new session's
             * SUBSCRIBE can overtake this worker's last publishes) */
            return;
        }

        seq = ngx_im_router_get_u64(p);
        p += 8;

        msg = ngx_im_msg_from_entry(p, last - p);
        if (msg == NULL) {
            return;
        }

        if ((u == NULL
             || ngx_im_router_local(u, msg, flags & NGX_IM_T_STORED,
                                    own ? seq : 0) == 0)
            && !(flags & NGX_IM_T_STORED) && !own)
        {
            /* offline-only: the publisher counted this worker as a
             * taker, and there is none any more */
            (void) ngx_im_store_push(uid, msg, NULL, NULL, NULL);
        }

        ngx_im_msg_unref(msg);
        return;

    case 'K':
        if (last - p < 9 || u == NULL) {
            return;
        }

        token = ngx_im_router_get_u64(p + 1);

        for (q = ngx_queue_head(&u->sessions);
             q != ngx_queue_sentinel(&u->sessions);
             q = next)
        {
            next = ngx_queue_next(q);
            s = ngx_queue_data(q, ngx_im_session_t, user_link);

            if (s->client_id != p[0] || (own && s->token >= token)) {
                /* another device, or this login or a newer one here */
                continue;
            }

            ngx_im_session_kick(s);
        }

        return;

    default:
        return;
    }
}
