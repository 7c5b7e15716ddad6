/*
 * ngx_http_im_api_inbox.c: the admin API's inbox: GET lists a uid's
 * stored messages, DELETE recalls one by MsgId from the inboxes of a list
 * of uids or of a group's members, answering which inboxes lost it.
 */

#include "ngx_http_im_api.h"
#include "ngx_im_store.h"
#include "ngx_im_router.h"
#include "ngx_im_uids.h"


static void ngx_http_im_api_inbox_read(redisReply *reply, void *data);
static void ngx_http_im_api_recall_members(void *data, ngx_int_t rc,
    uint32_t *uids, ngx_uint_t n);
static ngx_int_t ngx_http_im_api_recall_start(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_recall_read(redisReply *reply, void *data);
static void ngx_http_im_api_recall_removed(redisReply *reply, void *data);
static void ngx_http_im_api_recall_done(ngx_http_im_api_ctx_t *ctx);


/* the inbox of one uid */

ngx_int_t
ngx_http_im_api_inbox(ngx_http_im_api_ctx_t *ctx)
{
    ngx_int_t  answer;

    if (ngx_http_im_api_uid_arg(ctx, 1, "the argument uid is missing",
                                &answer)
        != NGX_OK)
    {
        return answer;
    }

    if (ngx_im_store_load(ctx->uids[0], ngx_http_im_api_inbox_read, ctx)
        != NGX_OK)
    {
        return ngx_http_im_api_error(ctx->request,
                                     NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "Redis is not reachable");
    }

    return NGX_DONE;
}


/* one inbox entry as JSON */

static cJSON *
ngx_http_im_api_entry(redisReply *e)
{
    cJSON          *j;
    im_msg_t        m;
    uint64_t        at;
    ngx_im_msg_t   *msg;

    j = cJSON_CreateObject();
    if (j == NULL) {
        return NULL;
    }

    msg = (e->type == REDIS_REPLY_STRING)
          ? ngx_im_msg_from_entry((u_char *) e->str, e->len) : NULL;

    if (msg == NULL
        || im_parse_server(msg->push, msg->push_len, &m) != IM_OK)
    {
        /* left for the next login to drop (and count) */
        cJSON_AddBoolToObject(j, "unreadable", 1);
        cJSON_AddNumberToObject(j, "size",
                                e->type == REDIS_REPLY_STRING ? e->len : 0);

        if (msg) {
            ngx_im_msg_unref(msg);
        }

        return j;
    }

    ngx_http_im_api_add_msgid(j, msg->msgid);

    if (msg->entry[0] >= 2) {
        cJSON_AddNumberToObject(j, "from", (double) msg->from);
        at = msg->accepted;

    } else {
        /* stored form 1 keeps neither: the time from the expiry */
        cJSON_AddNullToObject(j, "from");
        at = (uint64_t) (msg->expire - ngx_im_get_conf()->offline_ttl)
             * 1000;
    }

    if (m.cmd != IM_CMD_PUBLISH) {
        cJSON_AddNumberToObject(j, "gid", (double) m.to);
    }

    cJSON_AddNumberToObject(j, "size", (double) m.payload_len);
    cJSON_AddNumberToObject(j, "stored_at_ms", (double) at);
    cJSON_AddNumberToObject(j, "expires", (double) msg->expire);

    ngx_im_msg_unref(msg);

    return j;
}


static void
ngx_http_im_api_inbox_read(redisReply *reply, void *data)
{
    ngx_http_im_api_ctx_t  *ctx = data;

    cJSON       *list, *e;
    ngx_uint_t   i;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        ngx_http_im_api_finish(ctx, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    ctx->out = cJSON_CreateObject();
    if (ctx->out == NULL) {
        ngx_http_im_api_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    cJSON_AddNumberToObject(ctx->out, "uid", (double) ctx->uids[0]);
    list = cJSON_AddArrayToObject(ctx->out, "messages");

    for (i = 0; i < reply->elements; i++) {
        e = ngx_http_im_api_entry(reply->element[i]);
        if (e == NULL) {
            ngx_http_im_api_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        cJSON_AddItemToArray(list, e);
    }

    ngx_http_im_api_finish(ctx, NGX_HTTP_OK);
}


/*
 * Recall: DELETE ...inbox?uid=1002[,1003]&msgid=... or ?gid=7&msgid=...
 * Each inbox is read, and every entry of that MsgId leaves it by LREM of
 * its exact bytes; the answer names the inboxes it left.  A message
 * already pushed to a live session is not taken back from the client.
 * Members owing it in a group record, with no inbox entry, are cleared
 * where the record is (ngx_im_router_recall()).
 */

ngx_int_t
ngx_http_im_api_recall(ngx_http_im_api_ctx_t *ctx)
{
    u_char               err[256];
    ngx_int_t            rc, gid;
    ngx_str_t            v, g;
    ngx_http_request_t  *r;

    r = ctx->request;

    rc = ngx_http_im_api_arg(r, "msgid", &v);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED || ngx_http_im_api_msgid(&v, ctx->msgid) != NGX_OK)
    {
        ngx_snprintf(err, sizeof(err), "the argument msgid (32 bytes of "
                     "text or 64 hex digits) is missing or wrong%Z");
        goto bad;
    }

    ctx->out = cJSON_CreateObject();
    if (ctx->out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_im_api_add_msgid(ctx->out, ctx->msgid);
    ctx->list = cJSON_AddArrayToObject(ctx->out, "removed_from");
    ctx->extra = cJSON_AddArrayToObject(ctx->out, "failed");

    rc = ngx_http_im_api_arg(r, "gid", &g);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK) {
        if (ngx_http_arg(r, (u_char *) "uid", 3, &v) == NGX_OK) {
            ngx_snprintf(err, sizeof(err), "uid or gid, not both%Z");
            goto bad;
        }

        gid = ngx_atoi(g.data, g.len);

        if (gid <= 0 || gid > (ngx_int_t) 0xffffffff) {
            ngx_snprintf(err, sizeof(err), "gid is not a group id (1 to "
                         "4294967295)%Z");
            goto bad;
        }

        cJSON_AddNumberToObject(ctx->out, "gid", (double) gid);

        if (ngx_im_store_members((uint32_t) gid,
                                 ngx_http_im_api_recall_members, ctx)
            != NGX_OK)
        {
            return ngx_http_im_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "Redis is not reachable");
        }

        return NGX_DONE;
    }

    if (ngx_http_im_api_uid_arg(ctx, 0, "the argument uid (or gid) is "
                                "missing", &rc)
        != NGX_OK)
    {
        return rc;
    }

    return ngx_http_im_api_recall_start(ctx);

bad:

    return ngx_http_im_api_error(r, NGX_HTTP_BAD_REQUEST, "%s", err);
}


static void
ngx_http_im_api_recall_members(void *data, ngx_int_t rc, uint32_t *uids,
    ngx_uint_t n)
{
    ngx_http_im_api_ctx_t  *ctx = data;

    if (rc != NGX_OK) {
        ngx_http_im_api_finish(ctx, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    ctx->uids = ngx_palloc(ctx->request->pool,
                           (n ? n : 1) * sizeof(uint32_t));
    if (ctx->uids == NULL) {
        ngx_http_im_api_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(ctx->uids, uids, n * sizeof(uint32_t));
    ctx->nuids = ngx_im_uids_unique(ctx->uids, n);

    rc = ngx_http_im_api_recall_start(ctx);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(ctx->request, rc);
    }
}


static ngx_int_t
ngx_http_im_api_recall_start(ngx_http_im_api_ctx_t *ctx)
{
    ngx_uint_t               i, owed;
    ngx_http_im_api_step_t  *step;

    cJSON_AddNumberToObject(ctx->out, "searched", (double) ctx->nuids);

    /* members who owe it in a group record (decision 052) are not in
     * their inboxes: the workers holding the records clear them first, so
     * that no late append brings it back; those here are counted */

    owed = 0;

    for (i = 0; i < ctx->nuids; i++) {
        owed += ngx_im_router_recall(ctx->uids[i], ctx->msgid);
    }

    cJSON_AddNumberToObject(ctx->out, "owed_cleared", (double) owed);

    step = ngx_palloc(ctx->request->pool,
                      (ctx->nuids ? ctx->nuids : 1)
                      * sizeof(ngx_http_im_api_step_t));
    if (step == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the answer waits for every reply, and for this loop */

    ctx->pending = 1;

    for (i = 0; i < ctx->nuids; i++) {
        step[i].ctx = ctx;
        step[i].uid = ctx->uids[i];

        if (ngx_im_store_load(ctx->uids[i], ngx_http_im_api_recall_read,
                              &step[i])
            != NGX_OK)
        {
            cJSON_AddItemToArray(ctx->extra,
                                 cJSON_CreateNumber((double) ctx->uids[i]));
            continue;
        }

        ctx->pending++;
    }

    if (--ctx->pending == 0) {
        ngx_http_im_api_recall_done(ctx);
    }

    return NGX_DONE;
}


static void
ngx_http_im_api_recall_read(redisReply *reply, void *data)
{
    ngx_http_im_api_step_t  *step = data;

    ngx_uint_t              i;
    ngx_im_msg_t           *msg;
    redisReply             *e;
    ngx_http_im_api_ctx_t  *ctx;

    ctx = step->ctx;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        cJSON_AddItemToArray(ctx->extra,
                             cJSON_CreateNumber((double) step->uid));
        goto done;
    }

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_STRING) {
            continue;
        }

        msg = ngx_im_msg_from_entry((u_char *) e->str, e->len);
        if (msg == NULL) {
            continue;
        }

        if (ngx_memcmp(msg->msgid, ctx->msgid, IM_MSGID_LEN) == 0
            && ngx_im_store_remove_entry(step->uid, (u_char *) e->str,
                                         e->len,
                                         ngx_http_im_api_recall_removed,
                                         step)
               == NGX_OK)
        {
            ctx->pending++;
        }

        ngx_im_msg_unref(msg);
    }

done:

    if (--ctx->pending == 0) {
        ngx_http_im_api_recall_done(ctx);
    }
}


static void
ngx_http_im_api_recall_removed(redisReply *reply, void *data)
{
    ngx_http_im_api_step_t  *step = data;

    cJSON                  *u;
    ngx_http_im_api_ctx_t  *ctx;

    ctx = step->ctx;

    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0) {

        /* an inbox with two copies is named once */

        u = cJSON_GetArrayItem(ctx->list,
                               cJSON_GetArraySize(ctx->list) - 1);

        if (u == NULL || u->valuedouble != (double) step->uid) {
            cJSON_AddItemToArray(ctx->list,
                                 cJSON_CreateNumber((double) step->uid));
        }
    }

    if (--ctx->pending == 0) {
        ngx_http_im_api_recall_done(ctx);
    }
}


static void
ngx_http_im_api_recall_done(ngx_http_im_api_ctx_t *ctx)
{
    cJSON_AddNumberToObject(ctx->out, "removed",
                            cJSON_GetArraySize(ctx->list));

    ngx_http_im_api_finish(ctx, NGX_HTTP_OK);
}
