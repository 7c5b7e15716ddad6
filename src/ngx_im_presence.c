/*
 * ngx_im_presence.c: the login policy and the presence keys.
 *
 * Owns what happens between a good answer from the user centre and the
 * CONNECT_ACK: under "kick" the older session of the same (uid, ClientId)
 * is replaced here and, by a 'K' record on the uid's channel and to the
 * sibling workers, everywhere else.  Older and newer are by when the
 * logins started (their CONNECT was read: the route's token), not by when
 * they were answered: a login that started before the live session of
 * its (uid, ClientId) loses (CONNECT_ACK 1), here at once, elsewhere when
 * the holder of the newer session answers its 'K' with its own
 * (docs/decisions/042-busy-is-not-dead.md).  Under "reject" the login
 * claims the presence key "im:p:<uid>:<ClientId>" (a Lua script, so that
 * checking and taking it is one step) and is refused while another live
 * session holds it.  The key is refreshed with the heartbeat and removed
 * when the session leaves.
 *
 * With "im_max_sessions n" the login then registers in "im:s:<uid>", a
 * hash of the uid's live sessions on every node, each with its deadline
 * (refreshed with the heartbeat, as the presence key), its login time and
 * its ClientId.  One more than n follows the login policy: under "kick"
 * the oldest go, by a 'K' for their ClientId as above; under "reject" the
 * new login is refused with code 1 (docs/decisions/023-per-uid-limits.md).
 * With an im_api location (imcf->registry) every login registers there
 * too, without a cap and without waiting for the answer, so that the
 * admin API can tell where a uid's sessions are; the entry then also
 * holds the session's Role (docs/decisions/027-admin-api.md).
 */

#include "ngx_im_presence.h"
#include "ngx_im_redis.h"


static ngx_im_route_t *ngx_im_presence_kick(ngx_im_user_t *u,
    uint8_t client_id, ngx_uint_t own, ngx_uint_t timed, uint64_t token);
static ngx_uint_t ngx_im_presence_newer(ngx_im_user_t *u, uint8_t client_id,
    uint64_t token);
static void ngx_im_presence_lost(ngx_im_route_t *r);
static void ngx_im_presence_answer(redisReply *reply, void *data);
static ngx_int_t ngx_im_presence_claim(ngx_im_route_t *r, char *script,
    u_char *stale, size_t slen, ngx_im_ref_t *ref);
static void ngx_im_presence_everywhere(ngx_im_route_t *r, ngx_im_user_t *u,
    uint8_t client_id);
static void ngx_im_presence_count(ngx_im_route_t *r, ngx_im_ref_t *ref);
static void ngx_im_presence_counted(redisReply *reply, void *data);
static void ngx_im_presence_register(ngx_im_route_t *r);


/* the reject policy's claim of a presence key (see ngx_im_presence_claim) */
static char  ngx_im_presence_claim_script[] =
    "local v = redis.call('get', KEYS[1]) "
    "if not v or v == ARGV[3] then "
    "redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end "
    "return v";


/*
 * im_max_sessions: EVAL script 1 im:s:<uid> <worker id:token> <max>
 * <ClientId> <ttl> <kick> <Role>.  Entries are "<deadline> <login time>
 * <ClientId> <Role>" (seconds, microseconds, Redis's clock; builds from
 * before the Role wrote none, and fields after the ClientId are not
 * read here).  Entries past their deadline go,
 * and so does one of the login's ClientId (replaced, or stale); beyond the
 * cap the answer is 0 (reject) or the ClientIds of the oldest, which make
 * room (kick).
 */
static char  ngx_im_presence_count_script[] =
    "local now = tonumber(redis.call('time')[1]) "
    "local max, ttl = tonumber(ARGV[2]), tonumber(ARGV[4]) "
    "local all = redis.call('hgetall', KEYS[1]) "
    "local live = {} "
    "for i = 1, #all, 2 do "
    "local d, l, c = string.match(all[i + 1], '^(%d+) (%d+) (%d+)') "
    "if not d or tonumber(d) < now or c == ARGV[3] then "
    "redis.call('hdel', KEYS[1], all[i]) "
    "else live[#live + 1] = {tonumber(l), all[i], c} end end "
    "local out = {} "
    "if #live >= max then "
    "if ARGV[5] ~= '1' then return 0 end "
    "table.sort(live, function(a, b) return a[1] < b[1] end) "
    "for i = 1, #live - max + 1 do "
    "redis.call('hdel', KEYS[1], live[i][2]) "
    "out[#out + 1] = live[i][3] end end "
    "local t = redis.call('time') "
    "redis.call('hset', KEYS[1], ARGV[1], (now + ttl) .. ' ' .. t[1] "
    ".. string.format('%06d', tonumber(t[2])) .. ' ' .. ARGV[3] .. ' ' "
    ".. ARGV[6]) "
    "redis.call('expire', KEYS[1], ttl) "
    "return out";


/* imcf->registry without a cap: EVAL script 1 im:s:<uid> <worker id:token>
 * <ClientId> <ttl> <Role>, the entry as above */
static char  ngx_im_presence_register_script[] =
    "local t = redis.call('time') "
    "redis.call('hset', KEYS[1], ARGV[1], "
    "(tonumber(t[1]) + tonumber(ARGV[3])) .. ' ' .. t[1] "
    ".. string.format('%06d', tonumber(t[2])) .. ' ' .. ARGV[2] .. ' ' "
    ".. ARGV[4]) "
    "redis.call('expire', KEYS[1], ARGV[3]) "
    "return 1";


/* the admin API's read: EVAL script n im:s:<uid>...; entries past their
 * deadline are left to the next login's count to remove */
static char  ngx_im_presence_sessions_script[] =
    "local now = tonumber(redis.call('time')[1]) "
    "local out = {} "
    "for k = 1, #KEYS do "
    "local all = redis.call('hgetall', KEYS[k]) "
    "local live = {} "
    "for i = 1, #all, 2 do "
    "local d = tonumber(string.match(all[i + 1], '^(%d+) ')) "
    "if d and d >= now then "
    "live[#live + 1] = all[i] live[#live + 1] = all[i + 1] end end "
    "out[k] = live end "
    "return out";


/* the heartbeat: a later deadline for this session's entry, if it still
 * has one (a session that made room for a newer one has not) */
static char  ngx_im_presence_refresh_script[] =
    "local v = redis.call('hget', KEYS[1], ARGV[1]) "
    "if not v then return 0 end "
    "local now = tonumber(redis.call('time')[1]) "
    "redis.call('hset', KEYS[1], ARGV[1], (now + tonumber(ARGV[2])) "
    ".. string.match(v, ' .*$')) "
    "redis.call('expire', KEYS[1], ARGV[2]) "
    "return 1";


static size_t
ngx_im_presence_key(u_char *buf, ngx_im_route_t *r)
{
    return ngx_im_store_presence_key(buf, r->uid, (int) r->client_id);
}


static size_t
ngx_im_presence_sessions_key(u_char *buf, ngx_im_route_t *r)
{
    return ngx_im_store_sessions_key(buf, r->uid);
}


static size_t
ngx_im_presence_value(u_char *buf, ngx_im_route_t *r)
{
    return ngx_sprintf(buf, "%V:%uL", &ngx_im_worker_id, r->token) - buf;
}


static time_t
ngx_im_presence_ttl(void)
{
    ngx_im_conf_t  *imcf = ngx_im_get_conf();

    /* outlives two missed refreshes, gone soon after a crash */
    return (time_t) ((3 * imcf->ping_interval + imcf->ping_timeout) / 1000)
           + 1;
}


void
ngx_im_presence_login(ngx_im_route_t *r)
{
    ngx_queue_t          *q;
    ngx_im_ref_t         *ref;
    ngx_im_user_t        *u;
    ngx_im_conf_t        *imcf;
    ngx_im_route_t       *other;
    ngx_im_router_ops_t  *ops;

    imcf = ngx_im_get_conf();
    ops = ngx_im_table_ops();

    u = ngx_im_table_find(r->uid);

    if (imcf->login_policy == NGX_IM_LOGIN_REJECT) {

        if (u) {
            for (q = ngx_queue_head(&u->sessions);
                 q != ngx_queue_sentinel(&u->sessions);
                 q = ngx_queue_next(q))
            {
                other = ngx_queue_data(q, ngx_im_route_t, link);

                if (other->client_id == r->client_id) {
                    ops->login_done(r, 1);
                    return;
                }
            }
        }

        ref = ngx_im_ref_alloc(r);
        if (ref == NULL) {
            ops->login_done(r, 2);
            return;
        }

        if (ngx_im_presence_claim(r, ngx_im_presence_claim_script, NULL, 0,
                                  ref)
            != NGX_OK)
        {
            ngx_im_ref_free(ref);
            ops->login_done(r, 2);
            return;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ops->log(r), 0,
                       "im presence: uid %uD client %d claiming",
                       r->uid, (int) r->client_id);

        r->ref = ref;
        return;
    }

    /* kick: the older session of this (uid, ClientId) goes; a newer one
     * here, which started after this login, stays and this login lost
     * (an attempt its client gave up on, answered late) */

    if (u && ngx_im_presence_newer(u, r->client_id, r->token)) {
        ngx_im_presence_lost(r);
        return;
    }

    if (imcf->max_sessions == 0) {
        ngx_im_presence_everywhere(r, u, r->client_id);

        if (imcf->registry) {
            ngx_im_presence_register(r);
        }

        ops->login_done(r, 0);
        return;
    }

    ref = ngx_im_ref_alloc(r);
    if (ref == NULL) {
        ops->login_done(r, 2);
        return;
    }

    r->ref = ref;
    ngx_im_presence_count(r, ref);
}


/* the sessions of (r's uid, client_id) go, here at once and on every
 * other worker and node by a 'K' record; r's own login stays */

static void
ngx_im_presence_everywhere(ngx_im_route_t *r, ngx_im_user_t *u,
    uint8_t client_id)
{
    u_char  buf[IM_TRAFFIC_K_LEN(IM_TRAFFIC_ORIGIN_MAX)];
    size_t  len;

    if (u) {
        (void) ngx_im_presence_kick(u, client_id, 0, 0, 0);
    }

    /* the token is when the login started: a holder of a newer session
     * keeps it (IM_TRAFFIC_TIMED) */
    len = im_traffic_build_k(buf, ngx_im_worker_id.data,
                             ngx_im_worker_id.len, IM_TRAFFIC_TIMED,
                             client_id, r->token);

    if (ngx_im_table_peers(r->uid, buf, len) != NGX_OK) {
        buf[IM_TRAFFIC_FLAGS_AT(ngx_im_worker_id.len)] |= IM_TRAFFIC_ALL;
    }

    /* Redis down: the other session stays until it ends by itself */
    (void) ngx_im_table_publish(r->uid, buf, len, NULL, NULL);
}


/* a 'K': a login elsewhere (or here, on a sibling) of this ClientId */

void
ngx_im_presence_kicked(ngx_im_user_t *u, ngx_uint_t own, im_traffic_t *t)
{
    uint32_t         uid;
    ngx_im_route_t  *newer;

    uid = (uint32_t) u->node.key;

    newer = ngx_im_presence_kick(u, t->client_id, own,
                                 !own && (t->flags & IM_TRAFFIC_TIMED),
                                 t->token);

    if (newer) {
        /* the login of that 'K' started before this session: it lost,
         * and hears so from this session's own 'K' (u may be gone, not
         * newer) */
        ngx_log_error(NGX_LOG_INFO, ngx_im_table_ops()->log(newer), 0,
                      "im: uid %uD client %d: an older login elsewhere "
                      "lost to this session", uid, (int) t->client_id);
        ngx_im_presence_everywhere(newer, NULL, newer->client_id);
    }
}


/* a session of client_id here that started after token */

static ngx_uint_t
ngx_im_presence_newer(ngx_im_user_t *u, uint8_t client_id, uint64_t token)
{
    ngx_queue_t     *q;
    ngx_im_route_t  *r;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = ngx_queue_next(q))
    {
        r = ngx_queue_data(q, ngx_im_route_t, link);

        if (r->client_id == client_id && r->token > token) {
            return 1;
        }
    }

    return 0;
}


static void
ngx_im_presence_lost(ngx_im_route_t *r)
{
    ngx_im_stats->stale_logins++;

    ngx_log_error(NGX_LOG_INFO, ngx_im_table_ops()->log(r), 0,
                  "im: uid %uD client %d: a login that started later "
                  "holds the session, this one lost", r->uid,
                  (int) r->client_id);

    ngx_im_table_ops()->login_done(r, 1);
}


/*
 * u's sessions of client_id go; with own (the login was this worker's),
 * not the login itself nor a newer one (a token at least its own); with
 * timed (the login's token is its start), not one that started later:
 * the last of those is returned, to answer for it.  A kick may end the
 * record u with its last session: the loop reads only the next link it
 * took before.
 */

static ngx_im_route_t *
ngx_im_presence_kick(ngx_im_user_t *u, uint8_t client_id, ngx_uint_t own,
    ngx_uint_t timed, uint64_t token)
{
    ngx_uint_t       n;
    ngx_queue_t     *q;
    ngx_im_route_t  *r, *newer;

    n = u->nsessions;
    q = ngx_queue_head(&u->sessions);
    newer = NULL;

    while (n--) {
        r = ngx_queue_data(q, ngx_im_route_t, link);
        q = ngx_queue_next(q);

        if (r->client_id != client_id || (own && r->token >= token)) {
            continue;
        }

        if (timed && r->token > token) {
            newer = r;
            continue;
        }

        ngx_im_table_ops()->kick(r, 0);
    }

    return newer;
}


/*
 * The admin API's kick: the sessions here at once, the siblings that hold
 * the uid by datagram, other nodes on the uid's channel (as a login's 'K';
 * the siblings ignore that copy unless a datagram could not be sent).
 */

static void
ngx_im_presence_logout_local(ngx_im_user_t *u, uint8_t scope,
    uint8_t client_id)
{
    ngx_uint_t       n;
    ngx_queue_t     *q;
    ngx_im_route_t  *r;

    n = u->nsessions;
    q = ngx_queue_head(&u->sessions);

    /* a kick may end the record u with its last session, as above */

    while (n--) {
        r = ngx_queue_data(q, ngx_im_route_t, link);
        q = ngx_queue_next(q);

        if (scope == IM_TRAFFIC_L_EVERY || r->client_id == client_id) {
            ngx_im_table_ops()->kick(r, 1);
        }
    }
}


void
ngx_im_presence_logout(uint32_t uid, uint8_t scope, uint8_t client_id)
{
    u_char          buf[IM_TRAFFIC_L_LEN(IM_TRAFFIC_ORIGIN_MAX)];
    size_t          len;
    ngx_im_user_t  *u;

    u = ngx_im_table_find(uid);
    if (u) {
        ngx_im_presence_logout_local(u, scope, client_id);
    }

    len = im_traffic_build_l(buf, ngx_im_worker_id.data,
                             ngx_im_worker_id.len, 0, scope, client_id);

    if (ngx_im_table_peers(uid, buf, len) != NGX_OK) {
        buf[IM_TRAFFIC_FLAGS_AT(ngx_im_worker_id.len)] |= IM_TRAFFIC_ALL;
    }

    (void) ngx_im_table_publish(uid, buf, len, NULL, NULL);
}


/*
 * In cluster mode the uids' keys are on the masters of their slots, and
 * one script may not touch keys of several slots: one script per uid,
 * and the answers gathered (each copied out of its reply, which lives
 * only during its callback) into the one answer of n entries the caller
 * reads.  A failed read fails the whole, as on one Redis.
 */

typedef struct {
    ngx_im_redis_cb_pt   cb;
    void                *data;
    ngx_uint_t           left;
    ngx_uint_t           failed;
    redisReply           root;
    redisReply          *error;      /* the first error, copied */
    /* redisReply       *element[n]; */
} ngx_im_presence_gather_t;


static redisReply *
ngx_im_presence_copy(redisReply *r)
{
    size_t       i;
    redisReply  *c;

    c = ngx_calloc(sizeof(redisReply) + (r->str ? r->len + 1 : 0),
                   ngx_cycle->log);
    if (c == NULL) {
        return NULL;
    }

    c->type = r->type;
    c->integer = r->integer;
    c->len = r->len;

    if (r->str) {
        c->str = (char *) (c + 1);
        ngx_memcpy(c->str, r->str, r->len);
    }

    if (r->type == REDIS_REPLY_ARRAY && r->elements) {
        c->element = ngx_calloc(r->elements * sizeof(redisReply *),
                                ngx_cycle->log);
        if (c->element == NULL) {
            ngx_free(c);
            return NULL;
        }

        c->elements = r->elements;

        for (i = 0; i < r->elements; i++) {
            c->element[i] = ngx_im_presence_copy(r->element[i]);
            if (c->element[i] == NULL) {
                c->elements = i;
                return c;
            }
        }
    }

    return c;
}


static void
ngx_im_presence_free_copy(redisReply *c)
{
    size_t  i;

    if (c == NULL) {
        return;
    }

    for (i = 0; i < c->elements; i++) {
        ngx_im_presence_free_copy(c->element[i]);
    }

    if (c->element) {
        ngx_free(c->element);
    }

    ngx_free(c);
}


typedef struct {
    ngx_im_presence_gather_t  *g;
    ngx_uint_t                 k;
} ngx_im_presence_part_t;


static void
ngx_im_presence_gathered(redisReply *reply, void *data)
{
    ngx_im_presence_part_t    *part = data;
    ngx_uint_t                 i;
    ngx_im_presence_gather_t  *g;

    g = part->g;

    if (reply == NULL) {
        g->failed = 1;

    } else if (reply->type == REDIS_REPLY_ERROR) {
        if (g->error == NULL) {
            g->error = ngx_im_presence_copy(reply);
        }

        g->failed = 1;

    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1
               && g->root.element[part->k] == NULL)
    {
        g->root.element[part->k] = ngx_im_presence_copy(reply->element[0]);
        if (g->root.element[part->k] == NULL) {
            g->failed = 1;
        }

    } else {
        g->failed = 1;
    }

    if (--g->left) {
        return;
    }

    g->cb(g->failed ? g->error : &g->root, g->data);

    for (i = 0; i < g->root.elements; i++) {
        ngx_im_presence_free_copy(g->root.element[i]);
    }

    ngx_im_presence_free_copy(g->error);
    ngx_free(g);
}


static ngx_int_t
ngx_im_presence_sessions_each(uint32_t *uids, ngx_uint_t n,
    ngx_im_redis_cb_pt cb, void *data)
{
    u_char                     key[NGX_IM_STORE_KEY_LEN];
    ngx_uint_t                 i, sent;
    const char                *argv[4];
    size_t                     argvlen[4];
    ngx_im_presence_part_t    *parts;
    ngx_im_presence_gather_t  *g;

    g = ngx_calloc(sizeof(ngx_im_presence_gather_t)
                   + n * (sizeof(redisReply *)
                          + sizeof(ngx_im_presence_part_t)),
                   ngx_cycle->log);
    if (g == NULL) {
        return NGX_ERROR;
    }

    g->cb = cb;
    g->data = data;
    g->root.type = REDIS_REPLY_ARRAY;
    g->root.elements = n;
    g->root.element = (redisReply **) (g + 1);
    parts = (ngx_im_presence_part_t *) (g->root.element + n);

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = ngx_im_presence_sessions_script;
    argvlen[1] = sizeof(ngx_im_presence_sessions_script) - 1;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (char *) key;

    /* one more than the scripts: the last callback is not the one of a
     * script sent while others are still being sent */
    g->left = n + 1;
    sent = 0;

    for (i = 0; i < n; i++) {
        parts[i].g = g;
        parts[i].k = i;

        argvlen[3] = ngx_im_store_sessions_key(key, uids[i]);

        if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_presence_gathered,
                             &parts[i], 4, argv, argvlen)
            != NGX_OK)
        {
            break;
        }

        sent++;
    }

    if (sent < n) {
        g->failed = 1;
        g->left -= n - sent;
    }

    if (sent == 0) {
        ngx_free(g);
        return NGX_ERROR;
    }

    /* the extra count */
    if (--g->left == 0) {
        /* cannot be: the scripts' replies come in later passes */
        g->cb(NULL, g->data);
        ngx_free(g);
    }

    return NGX_OK;
}


ngx_int_t
ngx_im_presence_sessions(uint32_t *uids, ngx_uint_t n,
    ngx_im_redis_cb_pt cb, void *data)
{
    u_char       *keys, *p, nkeys[NGX_INT_T_LEN];
    size_t       *argvlen;
    ngx_int_t     rc;
    ngx_uint_t    i;
    const char  **argv;

    if (ngx_im_get_conf()->redis_cluster) {
        return ngx_im_presence_sessions_each(uids, n, cb, data);
    }

    /* one allocation: the argument vectors and the keys */

    keys = ngx_alloc((n + 3) * (sizeof(char *) + sizeof(size_t))
                     + n * sizeof("im:s:{4294967295}"), ngx_cycle->log);
    if (keys == NULL) {
        return NGX_ERROR;
    }

    argv = (const char **) keys;
    argvlen = (size_t *) (argv + n + 3);
    p = (u_char *) (argvlen + n + 3);

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = ngx_im_presence_sessions_script;
    argvlen[1] = sizeof(ngx_im_presence_sessions_script) - 1;
    argv[2] = (char *) nkeys;
    argvlen[2] = ngx_sprintf(nkeys, "%ui", n) - nkeys;

    for (i = 0; i < n; i++) {
        argv[3 + i] = (char *) p;
        argvlen[3 + i] = ngx_im_store_sessions_key(p, uids[i]);
        p += argvlen[3 + i];
    }

    rc = ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, cb, data, (int) (n + 3), argv,
                          argvlen);

    ngx_free(keys);

    return rc;
}


void
ngx_im_presence_logged_out(ngx_im_user_t *u, im_traffic_t *t)
{
    ngx_im_presence_logout_local(u, t->scope, t->client_id);
}


/*
 * The reject policy's presence key "im:p:<uid>:<ClientId>" holds the live
 * session's "<worker id>:<token>".  A login claims it; when another holds
 * it, and that holder is a worker of this node that is gone (killed, and
 * respawned under another pid) or this worker without such a session, the
 * claim takes it over; a holder elsewhere expires with its TTL.
 */

/* EVAL script 1 <key> <value> [args]: a Lua script on a key of this
 * session, on the inbox connection */

static ngx_int_t
ngx_im_presence_script(u_char *key, size_t klen, u_char *val, size_t vlen,
    char *script, ngx_uint_t nargs, const char **args, size_t *lens,
    ngx_im_redis_cb_pt cb, void *data)
{
    ngx_uint_t   i;
    const char  *argv[7];
    size_t       argvlen[7];

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = script;
    argvlen[1] = ngx_strlen(script);
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (char *) key;
    argvlen[3] = klen;
    argv[4] = (char *) val;
    argvlen[4] = vlen;

    for (i = 0; i < nargs && i < 2; i++) {
        argv[5 + i] = args[i];
        argvlen[5 + i] = lens[i];
    }

    return ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, cb, data, (int) (5 + i),
                            argv, argvlen);
}


/* the same on this session's presence key */

static ngx_int_t
ngx_im_presence_eval(ngx_im_route_t *r, char *script, ngx_uint_t nargs,
    const char **args, size_t *lens, ngx_im_redis_cb_pt cb, void *data)
{
    u_char  key[64], val[NGX_MAX_ERROR_STR];

    return ngx_im_presence_script(key, ngx_im_presence_key(key, r), val,
                                  ngx_im_presence_value(val, r), script,
                                  nargs, args, lens, cb, data);
}


static ngx_int_t
ngx_im_presence_claim(ngx_im_route_t *r, char *script, u_char *stale,
    size_t slen, ngx_im_ref_t *ref)
{
    u_char       ttl[NGX_INT_T_LEN];
    const char  *args[2];
    size_t       lens[2];

    args[0] = (char *) ttl;
    lens[0] = ngx_sprintf(ttl, "%T", ngx_im_presence_ttl()) - ttl;
    args[1] = stale ? (char *) stale : "";
    lens[1] = stale ? slen : 0;

    return ngx_im_presence_eval(r, script, 2, args, lens,
                                ngx_im_presence_answer, ref);
}


static ngx_uint_t
ngx_im_presence_stale(u_char *v, size_t len)
{
    u_char     *p, *last;
    size_t      plen;
    ngx_pid_t   pid;

    /* "<node>/<instance>:<pid>:<token>"; this node's part ends at the
     * colon before the pid, as in this worker's id */

    plen = ngx_im_node_prefix_len;

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
ngx_im_presence_answer(redisReply *reply, void *data)
{
    ngx_im_ref_t  *ref = data;

    ngx_im_route_t       *r;
    ngx_im_router_ops_t  *ops;

    r = ref->data;

    if (r == NULL) {
        /* the session is gone */
        ngx_im_ref_free(ref);
        return;
    }

    ops = ngx_im_table_ops();

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        r->ref = NULL;
        ngx_im_ref_free(ref);
        ops->login_done(r, 2);
        return;
    }

    if (reply->type == REDIS_REPLY_STRING
        && ngx_im_presence_stale((u_char *) reply->str, reply->len)
        && ngx_im_presence_claim(r, ngx_im_presence_claim_script,
                                 (u_char *) reply->str, reply->len, ref)
           == NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, ops->log(r), 0,
                      "im: uid %uD client %d: presence of a gone worker "
                      "taken over", r->uid, (int) r->client_id);
        return;
    }

    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1
        && ngx_im_get_conf()->max_sessions)
    {
        /* the key is ours: the number of sessions next */
        ngx_im_presence_count(r, ref);
        return;
    }

    r->ref = NULL;
    ngx_im_ref_free(ref);

    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
        if (ngx_im_get_conf()->registry) {
            ngx_im_presence_register(r);
        }

        ops->login_done(r, 0);
        return;
    }

    ops->login_done(r, 1);
}


/* im_max_sessions: the login registers among the uid's live sessions */

static void
ngx_im_presence_count(ngx_im_route_t *r, ngx_im_ref_t *ref)
{
    u_char          key[32], val[NGX_MAX_ERROR_STR], max[NGX_INT_T_LEN],
                    cid[4], ttl[NGX_INT_T_LEN], role[4];
    ngx_im_conf_t  *imcf;
    const char     *argv[10];
    size_t          argvlen[10];

    imcf = ngx_im_get_conf();

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = ngx_im_presence_count_script;
    argvlen[1] = sizeof(ngx_im_presence_count_script) - 1;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (char *) key;
    argvlen[3] = ngx_im_presence_sessions_key(key, r);
    argv[4] = (char *) val;
    argvlen[4] = ngx_im_presence_value(val, r);
    argv[5] = (char *) max;
    argvlen[5] = ngx_sprintf(max, "%ui", imcf->max_sessions) - max;
    argv[6] = (char *) cid;
    argvlen[6] = ngx_sprintf(cid, "%d", (int) r->client_id) - cid;
    argv[7] = (char *) ttl;
    argvlen[7] = ngx_sprintf(ttl, "%T", ngx_im_presence_ttl()) - ttl;
    argv[8] = (imcf->login_policy == NGX_IM_LOGIN_KICK) ? "1" : "0";
    argvlen[8] = 1;
    argv[9] = (char *) role;
    argvlen[9] = ngx_sprintf(role, "%d", (int) r->role) - role;

    if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_presence_counted, ref,
                         10, argv, argvlen)
        != NGX_OK)
    {
        ngx_im_presence_counted(NULL, ref);
    }
}


static void
ngx_im_presence_counted(redisReply *reply, void *data)
{
    ngx_im_ref_t  *ref = data;

    size_t                i;
    ngx_int_t             c;
    ngx_im_user_t        *u;
    ngx_im_route_t       *r;
    ngx_im_router_ops_t  *ops;

    r = ref->data;

    if (r == NULL) {
        /* the session is gone; an entry it made expires */
        ngx_im_ref_free(ref);
        return;
    }

    r->ref = NULL;
    ngx_im_ref_free(ref);

    ops = ngx_im_table_ops();

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        /* the policy could not be applied (docs/PROTOCOL.md 3.1); what
         * the login took is given back, as by a session that leaves */
        ngx_im_presence_leave(r);
        ops->login_done(r, 2);
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        ngx_im_stats->capped[NGX_IM_CAPPED_REFUSED]++;
        ngx_log_error(NGX_LOG_INFO, ops->log(r), 0,
                      "im: uid %uD client %d: login refused, "
                      "im_max_sessions %ui reached", r->uid,
                      (int) r->client_id, ngx_im_get_conf()->max_sessions);
        ngx_im_presence_leave(r);
        ops->login_done(r, 1);
        return;
    }

    if (ngx_im_get_conf()->login_policy == NGX_IM_LOGIN_KICK) {
        /*
         * The kick of the older session of this ClientId leaves now, in
         * the pass the login joins in: a holder of a newer one answers
         * with its own 'K', which must find this login joined.  A newer
         * one may have come here during the count.
         */
        u = ngx_im_table_find(r->uid);

        if (u && ngx_im_presence_newer(u, r->client_id, r->token)) {
            ngx_im_presence_leave(r);
            ngx_im_presence_lost(r);
            return;
        }

        ngx_im_presence_everywhere(r, u, r->client_id);
    }

    /* kick: the oldest made room */

    for (i = 0; i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING) {
            continue;
        }

        c = ngx_atoi((u_char *) reply->element[i]->str,
                     reply->element[i]->len);
        if (c < 0 || c > 255) {
            continue;
        }

        ngx_im_stats->capped[NGX_IM_CAPPED_KICKED]++;
        ngx_log_error(NGX_LOG_INFO, ops->log(r), 0,
                      "im: uid %uD: client %i logged out, im_max_sessions "
                      "%ui reached by client %d", r->uid, c,
                      ngx_im_get_conf()->max_sessions, (int) r->client_id);

        ngx_im_presence_everywhere(r, ngx_im_table_find(r->uid), (uint8_t) c);
    }

    ops->login_done(r, 0);
}


/* the registry without a cap: the login does not wait for it; Redis down,
 * the session is not listed until its next login */

static void
ngx_im_presence_register(ngx_im_route_t *r)
{
    u_char          key[32], val[NGX_MAX_ERROR_STR], cid[4],
                    ttl[NGX_INT_T_LEN], role[4];
    const char     *argv[8];
    size_t          argvlen[8];

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = ngx_im_presence_register_script;
    argvlen[1] = sizeof(ngx_im_presence_register_script) - 1;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (char *) key;
    argvlen[3] = ngx_im_presence_sessions_key(key, r);
    argv[4] = (char *) val;
    argvlen[4] = ngx_im_presence_value(val, r);
    argv[5] = (char *) cid;
    argvlen[5] = ngx_sprintf(cid, "%d", (int) r->client_id) - cid;
    argv[6] = (char *) ttl;
    argvlen[6] = ngx_sprintf(ttl, "%T", ngx_im_presence_ttl()) - ttl;
    argv[7] = (char *) role;
    argvlen[7] = ngx_sprintf(role, "%d", (int) r->role) - role;

    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 8, argv,
                            argvlen);
}


void
ngx_im_presence_refresh(ngx_im_route_t *r)
{
    u_char          key[64], ttl[NGX_INT_T_LEN];
    const char     *argv[3];
    size_t          argvlen[3];
    ngx_im_conf_t  *imcf;

    imcf = ngx_im_get_conf();

    if (r->uid == 0) {
        return;
    }

    if (imcf->max_sessions || imcf->registry) {
        u_char       skey[32], val[NGX_MAX_ERROR_STR];
        const char  *args[1];
        size_t       lens[1];

        args[0] = (char *) ttl;
        lens[0] = ngx_sprintf(ttl, "%T", ngx_im_presence_ttl()) - ttl;

        (void) ngx_im_presence_script(skey,
                                      ngx_im_presence_sessions_key(skey, r),
                                      val, ngx_im_presence_value(val, r),
                                      ngx_im_presence_refresh_script, 1,
                                      args, lens, NULL, NULL);
    }

    if (imcf->login_policy != NGX_IM_LOGIN_REJECT) {
        return;
    }

    argv[0] = "EXPIRE";
    argvlen[0] = 6;
    argv[1] = (char *) key;
    argvlen[1] = ngx_im_presence_key(key, r);
    argv[2] = (char *) ttl;
    argvlen[2] = ngx_sprintf(ttl, "%T", ngx_im_presence_ttl()) - ttl;

    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 3, argv,
                            argvlen);
}


void
ngx_im_presence_leave(ngx_im_route_t *r)
{
    /* only this session's own key: a newer login may hold it already */
    static char  script[] =
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('del', KEYS[1]) end return 0";

    u_char          key[32], val[NGX_MAX_ERROR_STR];
    const char     *argv[3];
    size_t          argvlen[3];
    ngx_im_conf_t  *imcf;

    imcf = ngx_im_get_conf();

    if ((imcf->max_sessions || imcf->registry) && r->uid) {
        argv[0] = "HDEL";
        argvlen[0] = 4;
        argv[1] = (char *) key;
        argvlen[1] = ngx_im_presence_sessions_key(key, r);
        argv[2] = (char *) val;
        argvlen[2] = ngx_im_presence_value(val, r);

        (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 3, argv,
                                argvlen);
    }

    if (imcf->login_policy != NGX_IM_LOGIN_REJECT) {
        return;
    }

    (void) ngx_im_presence_eval(r, script, 0, NULL, NULL, NULL, NULL);
}
