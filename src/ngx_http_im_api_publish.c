/*
 * ngx_http_im_api_publish.c: the admin API's POST publish.
 *
 * Owns building a message from the request's JSON and handing it to the
 * session layer's pipeline without a session (ngx_im_publish_api()), the
 * answer with each recipient's outcome, and the wait: this worker's table
 * of publishes waiting for their recipients' acks, which come back as 'W'
 * records (docs/decisions/032-publish-wait.md).
 */

#include "ngx_http_im_api.h"
#include "ngx_im_uids.h"
#include "ngx_im_store.h"
#include "ngx_im_presence.h"
#include "ngx_im_publish.h"
#include "ngx_im_router.h"
#include "ngx_im_traffic.h"


static void ngx_http_im_api_published(void *data, ngx_int_t rc,
    ngx_uint_t why, uint32_t *to, ngx_uint_t n);
static void ngx_http_im_api_publish_read(redisReply *reply, void *data);
static ngx_int_t ngx_http_im_api_wait_start(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_wait_timer(ngx_event_t *ev);
static void ngx_http_im_api_acked(im_traffic_t *t);
static void ngx_http_im_api_wait_known(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_wait_mark(ngx_http_im_api_ctx_t *ctx,
    uint32_t uid);
static void ngx_http_im_api_wait_check(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_wait_answer(ngx_http_im_api_ctx_t *ctx);


/* publish: a client's message built from the JSON, through the same
 * pipeline as a client's, from the system (uid 0) or a given uid */

ngx_int_t
ngx_http_im_api_publish(ngx_http_im_api_ctx_t *ctx, cJSON *body)
{
    u_char               err[256], *buf, *uids_be;
    size_t               plen, n;
    uint32_t             from, to, gid, uid;
    cJSON               *f, *payload, *list;
    ngx_int_t            rc, has_to, has_gid;
    ngx_str_t            v;
    im_msg_t             m;
    ngx_uint_t           nuids, i;
    ngx_im_conf_t       *imcf;
    ngx_http_request_t  *r;

    r = ctx->request;
    imcf = ngx_im_get_conf();

#define ngx_http_im_api_bad()                                                 \
    return ngx_http_im_api_error(r, NGX_HTTP_BAD_REQUEST, "%s", err)

    from = 0;

    if (ngx_http_im_api_json_u32(body, "from", 1, &from, err, sizeof(err))
        == NGX_ERROR)
    {
        ngx_http_im_api_bad();
    }

    rc = ngx_http_im_api_json_u32(body, "to", 0, &to, err, sizeof(err));
    if (rc == NGX_ERROR) {
        ngx_http_im_api_bad();
    }

    has_to = (rc == NGX_OK);

    rc = ngx_http_im_api_json_u32(body, "gid", 0, &gid, err, sizeof(err));
    if (rc == NGX_ERROR) {
        ngx_http_im_api_bad();
    }

    has_gid = (rc == NGX_OK);

    if (has_to == has_gid) {
        ngx_snprintf(err, sizeof(err), "exactly one of \"to\" (a uid) and "
                     "\"gid\" (a group) is needed%Z");
        ngx_http_im_api_bad();
    }

    list = cJSON_GetObjectItemCaseSensitive(body, "uids");

    if (list && (!has_gid || !cJSON_IsArray(list))) {
        ngx_snprintf(err, sizeof(err), "\"uids\" is an array of uids, with "
                     "\"gid\" (a message to part of the group)%Z");
        ngx_http_im_api_bad();
    }

    nuids = list ? (ngx_uint_t) cJSON_GetArraySize(list) : 0;

    if (list && (nuids == 0 || nuids > 65535)) {
        ngx_snprintf(err, sizeof(err), "\"uids\" must list 1 to 65535 "
                     "uids%Z");
        ngx_http_im_api_bad();
    }

    payload = cJSON_GetObjectItemCaseSensitive(body, "payload");

    if (!cJSON_IsString(payload)) {
        ngx_snprintf(err, sizeof(err), "\"payload\" (a string) is "
                     "missing%Z");
        ngx_http_im_api_bad();
    }

    plen = ngx_strlen(payload->valuestring);

    if (plen > imcf->max_payload || plen > 65535) {
        ngx_snprintf(err, sizeof(err), "the payload of %uz bytes is over "
                     "im_max_payload (%uz)%Z", plen, imcf->max_payload);
        ngx_http_im_api_bad();
    }

    f = cJSON_GetObjectItemCaseSensitive(body, "wait");

    if (f) {
        if (!cJSON_IsNumber(f) || !(f->valuedouble >= 0)
            || f->valuedouble > NGX_HTTP_IM_API_MAX_WAIT)
        {
            ngx_snprintf(err, sizeof(err), "\"wait\" must be a number of "
                         "seconds from 0 to %d%Z", NGX_HTTP_IM_API_MAX_WAIT);
            ngx_http_im_api_bad();
        }

        /* milliseconds, at least 1 when not 0 */
        ctx->wait = (ngx_msec_t) (f->valuedouble * 1000);

        if (ctx->wait == 0 && f->valuedouble > 0) {
            ctx->wait = 1;
        }

        if (ctx->wait && ngx_im_worker_id.len > NGX_IM_WATCH_MAX) {
            ngx_snprintf(err, sizeof(err), "\"wait\" needs an im_node_id "
                         "of at most %d bytes%Z",
                         NGX_IM_WATCH_MAX - 32);
            ngx_http_im_api_bad();
        }
    }

    f = cJSON_GetObjectItemCaseSensitive(body, "msgid");

    if (f) {
        if (!cJSON_IsString(f)) {
            ngx_snprintf(err, sizeof(err), "\"msgid\" must be a string%Z");
            ngx_http_im_api_bad();
        }

        v.data = (u_char *) f->valuestring;
        v.len = ngx_strlen(f->valuestring);

        if (ngx_http_im_api_msgid(&v, ctx->msgid) != NGX_OK) {
            ngx_snprintf(err, sizeof(err), "\"msgid\" must be 32 bytes of "
                         "text or 64 hex digits%Z");
            ngx_http_im_api_bad();
        }

    } else {
        /* 32 hex digits: the time and a random part */
        (void) ngx_sprintf(ctx->msgid, "%016xL%08xD%08xD",
                           (uint64_t) ngx_time(), (uint32_t) ngx_random(),
                           (uint32_t) ngx_random());
    }

    /* the uid list of a part-group message, big-endian */

    uids_be = NULL;

    if (nuids) {
        uids_be = ngx_pnalloc(r->pool, 4 * nuids);
        if (uids_be == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        for (i = 0; i < nuids; i++) {
            f = cJSON_GetArrayItem(list, (int) i);

            if (!cJSON_IsNumber(f) || f->valuedouble < 1
                || f->valuedouble != (double) (uint32_t) f->valuedouble)
            {
                ngx_snprintf(err, sizeof(err), "\"uids\"[%ui] is not a uid "
                             "(1 to 4294967295)%Z", i);
                ngx_http_im_api_bad();
            }

            uid = (uint32_t) f->valuedouble;
            (void) im_put_u32(uids_be + 4 * i, uid);
        }

        if (ctx->wait) {
            /* the asked uids the group does not take are "refused" */
            ctx->asked = ngx_palloc(r->pool, nuids * sizeof(uint32_t));
            if (ctx->asked == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            for (i = 0; i < nuids; i++) {
                ctx->asked[i] = im_get_u32(uids_be + 4 * i);
            }

            ctx->nasked = ngx_im_uids_unique(ctx->asked, nuids);
        }
    }

#undef ngx_http_im_api_bad

    n = has_to ? IM_SIZE_PUBLISH(plen)
        : nuids ? IM_SIZE_PART(nuids, plen) : IM_SIZE_GROUP(plen);

    buf = ngx_pnalloc(r->pool, n);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (has_to) {
        n = im_build_publish(buf, to, ctx->msgid,
                             (u_char *) payload->valuestring,
                             (uint16_t) plen);

    } else if (nuids) {
        n = im_build_part(buf, gid, ctx->msgid, (uint16_t) nuids, uids_be,
                          (u_char *) payload->valuestring, (uint16_t) plen);

    } else {
        n = im_build_group(buf, gid, ctx->msgid,
                           (u_char *) payload->valuestring, (uint16_t) plen);
    }

    if (im_parse_client(buf, n, &m) != IM_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->from = from;
    ctx->target = has_to ? to : gid;     /* for a refusal's reason */

    if (ctx->wait && ngx_http_im_api_wait_start(ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_im_publish_api(from, buf, n, &m,
                           ctx->wait ? &ngx_im_worker_id : NULL,
                           ctx->wait_node.key, ngx_http_im_api_published,
                           ctx)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* answered from the callback, maybe already */
    return NGX_DONE;
}


static void
ngx_http_im_api_published(void *data, ngx_int_t rc, ngx_uint_t why,
    uint32_t *to, ngx_uint_t n)
{
    ngx_http_im_api_ctx_t  *ctx = data;

    ngx_int_t            rv;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (rc == NGX_DECLINED) {
        rv = (why == NGX_IM_PUB_NOT_MEMBER)
             ? ngx_http_im_api_error(r, NGX_HTTP_CONFLICT,
                                     "refused: uid %uD is not a member of "
                                     "group %uD", ctx->from, ctx->target)
             : (why == NGX_IM_PUB_NOBODY)
             ? ngx_http_im_api_error(r, NGX_HTTP_CONFLICT,
                                     "refused: no recipient in group %uD "
                                     "(the sender aside)", ctx->target)
             : ngx_http_im_api_error(r, NGX_HTTP_BAD_REQUEST,
                                     "refused: not a valid message");

        ngx_http_finalize_request(r, rv);
        return;
    }

    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r,
            ngx_http_im_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  "failed: Redis could not take the "
                                  "message for every recipient"));
        return;
    }

    ctx->out = cJSON_CreateObject();
    if (ctx->out == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_im_api_add_msgid(ctx->out, ctx->msgid);
    cJSON_AddNumberToObject(ctx->out, "from", (double) ctx->from);
    cJSON_AddStringToObject(ctx->out, "outcome", "accepted");
    cJSON_AddNumberToObject(ctx->out, "recipients", (double) n);

    if (ctx->wait && n) {
        /* the recipients, sorted, each with a flag "acked" */
        ctx->uids = ngx_palloc(r->pool, n * sizeof(uint32_t));
        ctx->acked = ngx_pcalloc(r->pool, n);

        if (ctx->uids == NULL || ctx->acked == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        ngx_memcpy(ctx->uids, to, n * sizeof(uint32_t));
        ctx->nuids = ngx_im_uids_unique(ctx->uids, n);

        if (n > NGX_HTTP_IM_API_MAX_LIST) {
            /* no registry read: every recipient may ack */
            ngx_http_im_api_wait_known(ctx);
            return;
        }
    }

    if (n == 0 || n > NGX_HTTP_IM_API_MAX_LIST) {
        ngx_http_im_api_finish(ctx, NGX_HTTP_OK);
        return;
    }

    /* per recipient: pushed to a live session, or stored for later */

    if (ctx->uids == NULL) {
        ctx->uids = ngx_palloc(r->pool, n * sizeof(uint32_t));
        if (ctx->uids == NULL) {
            ngx_http_im_api_finish(ctx, NGX_HTTP_OK);
            return;
        }

        ngx_memcpy(ctx->uids, to, n * sizeof(uint32_t));
        ctx->nuids = n;
    }

    if (ngx_im_presence_sessions(ctx->uids, n, ngx_http_im_api_publish_read,
                                 ctx)
        != NGX_OK)
    {
        ngx_http_im_api_finish(ctx, NGX_HTTP_OK);
    }
}


static void
ngx_http_im_api_publish_read(redisReply *reply, void *data)
{
    ngx_http_im_api_ctx_t  *ctx = data;

    int          nsessions;
    cJSON       *users, *u, *list, *rcpt;
    ngx_uint_t   i;

    users = cJSON_CreateArray();

    if (users == NULL || reply == NULL || reply->type == REDIS_REPLY_ERROR
        || ngx_http_im_api_users(users, NULL, reply, ctx->uids, ctx->nuids,
                                 -1)
           != NGX_OK)
    {
        /* accepted; where it went is not known */
        cJSON_Delete(users);
        ngx_http_im_api_finish(ctx, NGX_HTTP_OK);
        return;
    }

    if (ctx->wait) {
        /* the sessions per recipient now; the answer when they acked */
        ctx->nsess = ngx_palloc(ctx->request->pool,
                                ctx->nuids * sizeof(int));
        if (ctx->nsess == NULL) {
            cJSON_Delete(users);
            ngx_http_im_api_finish(ctx, NGX_HTTP_OK);
            return;
        }

        for (i = 0; i < ctx->nuids; i++) {
            u = cJSON_GetArrayItem(users, (int) i);
            ctx->nsess[i] = cJSON_GetArraySize(
                             cJSON_GetObjectItemCaseSensitive(u, "sessions"));
        }

        cJSON_Delete(users);
        ngx_http_im_api_wait_known(ctx);
        return;
    }

    list = cJSON_AddArrayToObject(ctx->out, "delivery");

    for (i = 0; i < ctx->nuids; i++) {
        u = cJSON_GetArrayItem(users, (int) i);
        nsessions = cJSON_GetArraySize(
                        cJSON_GetObjectItemCaseSensitive(u, "sessions"));

        rcpt = cJSON_CreateObject();
        cJSON_AddItemToArray(list, rcpt);
        cJSON_AddNumberToObject(rcpt, "uid", (double) ctx->uids[i]);
        cJSON_AddStringToObject(rcpt, "outcome",
                                nsessions ? "pushed" : "stored");
        cJSON_AddNumberToObject(rcpt, "sessions", nsessions);
    }

    cJSON_Delete(users);

    ngx_http_im_api_finish(ctx, NGX_HTTP_OK);
}


/*
 * A publish with a wait.  The message is watched (stored form 3): a
 * session that acks it anywhere sends a 'W' record back to this worker
 * (ngx_im_router_acked()), which finds the request here by its token.
 * The answer leaves when every recipient that had live sessions has
 * acked, or when the wait is over; before the recipients are known (the
 * pipeline and the registry read hold the request's context) a wait that
 * is over only marks the request, and the last callback answers.
 */

static ngx_rbtree_t       ngx_http_im_api_waits;
static ngx_rbtree_node_t  ngx_http_im_api_waits_sentinel;
static uint64_t           ngx_http_im_api_last_token;


static ngx_int_t
ngx_http_im_api_wait_start(ngx_http_im_api_ctx_t *ctx)
{
    ngx_http_request_t  *r;

    r = ctx->request;

    if (ngx_http_im_api_waits.root == NULL) {
        ngx_rbtree_init(&ngx_http_im_api_waits,
                        &ngx_http_im_api_waits_sentinel,
                        ngx_rbtree_insert_value);
        ngx_im_router_on_acked(ngx_http_im_api_acked);
    }

    ctx->acks = ngx_array_create(r->pool, 4, sizeof(ngx_http_im_api_ack_t));
    if (ctx->acks == NULL) {
        return NGX_ERROR;
    }

    /* unique in this worker, and the worker's id is in the watch */
    ctx->wait_node.key = (ngx_rbtree_key_t) ++ngx_http_im_api_last_token;
    ngx_rbtree_insert(&ngx_http_im_api_waits, &ctx->wait_node);
    ctx->waiting = 1;

    ctx->wait_ev.handler = ngx_http_im_api_wait_timer;
    ctx->wait_ev.data = ctx;
    ctx->wait_ev.log = r->connection->log;
    ngx_add_timer(&ctx->wait_ev, ctx->wait);

    return NGX_OK;
}


/* the request is finalized: it leaves the table, its timer goes */

void
ngx_http_im_api_wait_end(ngx_http_im_api_ctx_t *ctx)
{
    if (ctx->waiting) {
        ngx_rbtree_delete(&ngx_http_im_api_waits, &ctx->wait_node);
        ctx->waiting = 0;
    }

    if (ctx->wait_ev.timer_set) {
        ngx_del_timer(&ctx->wait_ev);
    }
}


static void
ngx_http_im_api_wait_timer(ngx_event_t *ev)
{
    ngx_http_im_api_ctx_t  *ctx = ev->data;

    ctx->timed_out = 1;
    ngx_http_im_api_wait_check(ctx);
}


/* a 'W' record for this worker: untrusted, checked against the request */

static void
ngx_http_im_api_acked(im_traffic_t *t)
{
    u_char                 *p, *last;
    ngx_int_t               pid;
    ngx_rbtree_node_t      *node, *sentinel;
    ngx_http_im_api_ack_t  *ack;
    ngx_http_im_api_ctx_t  *ctx;

    if (ngx_http_im_api_waits.root == NULL) {
        return;
    }

    node = ngx_http_im_api_waits.root;
    sentinel = ngx_http_im_api_waits.sentinel;

    while (node != sentinel && node->key != (ngx_rbtree_key_t) t->token) {
        node = ((ngx_rbtree_key_t) t->token < node->key) ? node->left
                                                         : node->right;
    }

    if (node == sentinel) {
        /* answered already, or another worker's before a restart */
        return;
    }

    ctx = (ngx_http_im_api_ctx_t *)
              ((u_char *) node - offsetof(ngx_http_im_api_ctx_t, wait_node));

    if (ngx_memcmp(t->entry, ctx->msgid, IM_MSGID_LEN) != 0) {
        return;
    }

    if (ctx->acks->nelts >= NGX_HTTP_IM_API_MAX_ACKS) {
        ctx->acks_dropped++;

    } else {
        ack = ngx_array_push(ctx->acks);
        if (ack == NULL) {
            return;
        }

        ack->uid = t->uid;
        ack->client_id = t->client_id;
        ack->after_ms = t->after_ms;

        /* origin: "<node>/<instance>:<pid>" */
        p = (u_char *) t->origin;
        last = p + t->origin_len;

        ack->node.data = p;
        ack->node.len = 0;
        ack->worker = 0;

        for ( /* void */ ; p < last; p++) {
            if (*p == '/' && ack->node.len == 0) {
                ack->node.len = p - ack->node.data;
            }

            if (*p == ':') {
                pid = ngx_atoi(p + 1, last - p - 1);
                ack->worker = (pid > 0) ? (ngx_pid_t) pid : 0;
            }
        }

        /* a C string for cJSON */
        p = ngx_pnalloc(ctx->request->pool, ack->node.len + 1);

        if (p == NULL) {
            ack->node.len = 0;

        } else {
            *ngx_cpymem(p, ack->node.data, ack->node.len) = '\0';
            ack->node.data = p;
        }
    }

    if (ctx->known) {
        ngx_http_im_api_wait_mark(ctx, t->uid);
        ngx_http_im_api_wait_check(ctx);
    }
}


/* the recipients are known: which of them the answer waits for */

static void
ngx_http_im_api_wait_known(ngx_http_im_api_ctx_t *ctx)
{
    ngx_uint_t              i;
    ngx_http_im_api_ack_t  *ack;

    ctx->known = 1;
    ctx->left = 0;

    for (i = 0; i < ctx->nuids; i++) {
        if (ctx->nsess == NULL || ctx->nsess[i] > 0) {
            ctx->left++;
        }
    }

    ack = ctx->acks->elts;

    for (i = 0; i < ctx->acks->nelts; i++) {
        ngx_http_im_api_wait_mark(ctx, ack[i].uid);
    }

    ngx_http_im_api_wait_check(ctx);
}


static void
ngx_http_im_api_wait_mark(ngx_http_im_api_ctx_t *ctx, uint32_t uid)
{
    uint32_t    *p;
    ngx_uint_t   i;

    p = bsearch(&uid, ctx->uids, ctx->nuids, sizeof(uint32_t),
                ngx_im_uid_cmp);
    if (p == NULL) {
        return;
    }

    i = p - ctx->uids;

    if (ctx->acked[i]) {
        return;
    }

    ctx->acked[i] = 1;

    if ((ctx->nsess == NULL || ctx->nsess[i] > 0) && ctx->left) {
        ctx->left--;
    }
}


static void
ngx_http_im_api_wait_check(ngx_http_im_api_ctx_t *ctx)
{
    if (ctx->known && ctx->waiting && (ctx->left == 0 || ctx->timed_out)) {
        ngx_http_im_api_wait_answer(ctx);
    }
}


static int ngx_libc_cdecl
ngx_http_im_api_ack_cmp(const void *one, const void *two)
{
    const ngx_http_im_api_ack_t  *a = one;
    const ngx_http_im_api_ack_t  *b = two;

    if (a->uid != b->uid) {
        return (a->uid < b->uid) ? -1 : 1;
    }

    return (a->after_ms < b->after_ms) ? -1 : (a->after_ms > b->after_ms);
}


static void
ngx_http_im_api_wait_answer(ngx_http_im_api_ctx_t *ctx)
{
    cJSON                  *list, *rcpt, *acks, *a;
    uint32_t               *p;
    ngx_uint_t              i, j, nacked;
    ngx_http_im_api_ack_t  *ack;

    /* out of the table now: later acks are not for this answer */
    ngx_http_im_api_wait_end(ctx);

    nacked = 0;

    for (i = 0; i < ctx->nuids; i++) {
        nacked += ctx->acked[i];
    }

    cJSON_AddNumberToObject(ctx->out, "acked", (double) nacked);

    if (ctx->acks_dropped) {
        cJSON_AddNumberToObject(ctx->out, "acks_not_listed",
                                (double) ctx->acks_dropped);
    }

    if (ctx->nsess == NULL) {
        /* past NGX_HTTP_IM_API_MAX_LIST: the counts only */
        ngx_http_im_api_finish(ctx, NGX_HTTP_OK);
        return;
    }

    ack = ctx->acks->elts;
    ngx_qsort(ack, ctx->acks->nelts, sizeof(ngx_http_im_api_ack_t),
              ngx_http_im_api_ack_cmp);

    list = cJSON_AddArrayToObject(ctx->out, "delivery");
    if (list == NULL) {
        ngx_http_im_api_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    j = 0;

    for (i = 0; i < ctx->nuids; i++) {
        rcpt = cJSON_CreateObject();
        cJSON_AddItemToArray(list, rcpt);
        cJSON_AddNumberToObject(rcpt, "uid", (double) ctx->uids[i]);
        cJSON_AddStringToObject(rcpt, "outcome",
                                ctx->acked[i] ? "acked"
                                : ctx->nsess[i] ? "pushed" : "stored");
        cJSON_AddNumberToObject(rcpt, "sessions", ctx->nsess[i]);

        acks = cJSON_AddArrayToObject(rcpt, "acks");

        while (j < ctx->acks->nelts && ack[j].uid < ctx->uids[i]) {
            j++;
        }

        for ( /* void */ ; j < ctx->acks->nelts && ack[j].uid == ctx->uids[i];
             j++)
        {
            a = cJSON_CreateObject();
            cJSON_AddItemToArray(acks, a);
            cJSON_AddNumberToObject(a, "client_id", ack[j].client_id);
            cJSON_AddNumberToObject(a, "after_ms", ack[j].after_ms);

            if (ack[j].node.len) {
                cJSON_AddStringToObject(a, "node", (char *) ack[j].node.data);
            }

            if (ack[j].worker) {
                cJSON_AddNumberToObject(a, "worker", ack[j].worker);
            }
        }
    }

    /* a part-group's uids that the group did not take */

    for (i = 0; i < ctx->nasked; i++) {
        p = bsearch(&ctx->asked[i], ctx->uids, ctx->nuids, sizeof(uint32_t),
                    ngx_im_uid_cmp);
        if (p) {
            continue;
        }

        rcpt = cJSON_CreateObject();
        cJSON_AddItemToArray(list, rcpt);
        cJSON_AddNumberToObject(rcpt, "uid", (double) ctx->asked[i]);
        cJSON_AddStringToObject(rcpt, "outcome", "refused");
        cJSON_AddStringToObject(rcpt, "reason",
                                ctx->asked[i] == ctx->from
                                ? "the sender" : "not a member of the group");
    }

    ngx_http_im_api_finish(ctx, NGX_HTTP_OK);
}
