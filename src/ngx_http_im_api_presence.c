/*
 * ngx_http_im_api_presence.c: the admin API's presence and kick.
 *
 * Both read the registry of live sessions (ngx_im_presence.c): presence
 * answers with each uid's sessions, node by node; kick names the
 * sessions it ends and sends the 'L' record to the uid's channel.  The
 * sessions of a reply are also listed by POST publish
 * (ngx_http_im_api_users()).
 */

#include "ngx_http_im_api.h"
#include "ngx_im_presence.h"
#include "ngx_im_traffic.h"


static void ngx_http_im_api_presence_read(redisReply *reply, void *data);
static void ngx_http_im_api_kick_read(redisReply *reply, void *data);


ngx_int_t
ngx_http_im_api_presence(ngx_http_im_api_ctx_t *ctx)
{
    ngx_int_t  answer;

    if (ngx_http_im_api_uid_arg(ctx, 0, "the argument uid is missing "
                                "(uid=1001,1002)", &answer)
        != NGX_OK)
    {
        return answer;
    }

    if (ngx_im_presence_sessions(ctx->uids, ctx->nuids,
                                 ngx_http_im_api_presence_read, ctx)
        != NGX_OK)
    {
        return ngx_http_im_api_error(ctx->request,
                                     NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "Redis is not reachable");
    }

    return NGX_DONE;
}


/*
 * One registry entry as a JSON session: the field is
 * "<node>/<instance>:<pid>:<token>", the value "<deadline> <login time,
 * us> <ClientId> [<Role>]".  NULL: not an entry this build understands.
 */

static cJSON *
ngx_http_im_api_session(redisReply *field, redisReply *value,
    ngx_str_t *node, ngx_int_t *client_id)
{
    u_char     *p, *last, *slash, *colon, *sp;
    cJSON      *s;
    uint64_t    since;
    ngx_int_t   pid, cid, role;
    char        name[256];

    if (field->type != REDIS_REPLY_STRING
        || value->type != REDIS_REPLY_STRING)
    {
        return NULL;
    }

    p = (u_char *) field->str;
    last = p + field->len;

    slash = ngx_strlchr(p, last, '/');
    if (slash == NULL || slash - p >= (ssize_t) sizeof(name)) {
        return NULL;
    }

    colon = ngx_strlchr(slash, last, ':');
    if (colon == NULL) {
        return NULL;
    }

    sp = ngx_strlchr(colon + 1, last, ':');
    if (sp == NULL) {
        return NULL;
    }

    pid = ngx_atoi(colon + 1, sp - colon - 1);
    if (pid == NGX_ERROR) {
        return NULL;
    }

    node->data = p;
    node->len = slash - p;

    /* the value */

    p = (u_char *) value->str;
    last = p + value->len;

    sp = ngx_strlchr(p, last, ' ');                     /* after deadline */
    if (sp == NULL) {
        return NULL;
    }

    p = sp + 1;
    sp = ngx_strlchr(p, last, ' ');                     /* login time */
    if (sp == NULL) {
        return NULL;
    }

    since = (uint64_t) ngx_atoof(p, sp - p);
    if ((off_t) since == NGX_ERROR) {
        return NULL;
    }

    p = sp + 1;
    sp = ngx_strlchr(p, last, ' ');

    cid = ngx_atoi(p, (sp ? sp : last) - p);
    if (cid == NGX_ERROR) {
        return NULL;
    }

    role = -1;

    if (sp) {
        role = ngx_atoi(sp + 1, last - sp - 1);
    }

    s = cJSON_CreateObject();
    if (s == NULL) {
        return NULL;
    }

    ngx_memcpy(name, node->data, node->len);
    name[node->len] = '\0';

    cJSON_AddStringToObject(s, "node", name);
    cJSON_AddNumberToObject(s, "worker", (double) pid);
    cJSON_AddNumberToObject(s, "client_id", (double) cid);

    if (role >= 0) {
        cJSON_AddNumberToObject(s, "role", (double) role);

    } else {
        /* registered by a build from before the Role (im_max_sessions) */
        cJSON_AddNullToObject(s, "role");
    }

    cJSON_AddNumberToObject(s, "since_ms", (double) (since / 1000));

    *client_id = cid;

    return s;
}


/*
 * The users of the answer, from the script's reply: per uid its live
 * sessions.  Sessions of one ClientId only when client_id >= 0.  Adds
 * the counts per node to nodes when it is not NULL.
 */

ngx_int_t
ngx_http_im_api_users(cJSON *users, cJSON *nodes, redisReply *reply,
    uint32_t *uids, ngx_uint_t n, ngx_int_t client_id)
{
    char         name[256];
    cJSON       *u, *list, *s, *c;
    ngx_int_t    cid;
    ngx_str_t    node;
    ngx_uint_t   i, j, count;
    redisReply  *per;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != n)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        per = reply->element[i];

        u = cJSON_CreateObject();
        if (u == NULL) {
            return NGX_ERROR;
        }

        cJSON_AddItemToArray(users, u);
        cJSON_AddNumberToObject(u, "uid", (double) uids[i]);
        list = cJSON_AddArrayToObject(u, "sessions");
        count = 0;

        if (per->type != REDIS_REPLY_ARRAY) {
            return NGX_ERROR;
        }

        for (j = 0; j + 1 < per->elements; j += 2) {
            s = ngx_http_im_api_session(per->element[j],
                                        per->element[j + 1], &node, &cid);
            if (s == NULL) {
                continue;
            }

            if (client_id >= 0 && cid != client_id) {
                cJSON_Delete(s);
                continue;
            }

            cJSON_AddItemToArray(list, s);
            count++;

            if (nodes == NULL) {
                continue;
            }

            ngx_memcpy(name, node.data, node.len);
            name[node.len] = '\0';

            c = cJSON_GetObjectItemCaseSensitive(nodes, name);

            if (c == NULL) {
                c = cJSON_AddObjectToObject(nodes, name);
                cJSON_AddNumberToObject(c, "sessions", 0);
                cJSON_AddNumberToObject(c, "uids", 0);
                cJSON_AddNumberToObject(c, "last_uid", 0);
            }

            s = cJSON_GetObjectItemCaseSensitive(c, "sessions");
            cJSON_SetNumberValue(s, s->valuedouble + 1);

            /* a uid counts once per node */
            s = cJSON_GetObjectItemCaseSensitive(c, "last_uid");

            if (s->valuedouble != (double) uids[i]) {
                cJSON_SetNumberValue(s, (double) uids[i]);
                s = cJSON_GetObjectItemCaseSensitive(c, "uids");
                cJSON_SetNumberValue(s, s->valuedouble + 1);
            }
        }

        cJSON_AddBoolToObject(u, "online", count > 0);
    }

    if (nodes) {
        for (c = nodes->child; c; c = c->next) {
            cJSON_DeleteItemFromObjectCaseSensitive(c, "last_uid");
        }
    }

    return NGX_OK;
}


static void
ngx_http_im_api_presence_read(redisReply *reply, void *data)
{
    ngx_http_im_api_ctx_t  *ctx = data;

    cJSON  *users, *nodes;

    ctx->out = cJSON_CreateObject();
    if (ctx->out == NULL) {
        ngx_http_im_api_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    users = cJSON_AddArrayToObject(ctx->out, "users");
    nodes = cJSON_AddObjectToObject(ctx->out, "nodes");

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_http_im_api_finish(ctx, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    if (ngx_http_im_api_users(users, nodes, reply, ctx->uids, ctx->nuids,
                              -1)
        != NGX_OK)
    {
        ngx_http_im_api_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_im_api_finish(ctx, NGX_HTTP_OK);
}


/* kick: the sessions are read first, to be named in the answer, then
 * logged out wherever they are */

ngx_int_t
ngx_http_im_api_kick(ngx_http_im_api_ctx_t *ctx, cJSON *body)
{
    u_char               err[256];
    uint32_t             uid, cid;
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = ctx->request;

    rc = ngx_http_im_api_json_u32(body, "uid", 0, &uid, err, sizeof(err));

    if (rc == NGX_DECLINED) {
        ngx_snprintf(err, sizeof(err), "\"uid\" is missing%Z");
    }

    if (rc != NGX_OK) {
        return ngx_http_im_api_error(r, NGX_HTTP_BAD_REQUEST, "%s", err);
    }

    rc = ngx_http_im_api_json_u32(body, "client_id", 1, &cid, err,
                                  sizeof(err));

    if (rc == NGX_OK && cid > 255) {
        ngx_snprintf(err, sizeof(err), "\"client_id\" must be from 0 to "
                     "255%Z");
        rc = NGX_ERROR;
    }

    if (rc == NGX_ERROR) {
        return ngx_http_im_api_error(r, NGX_HTTP_BAD_REQUEST, "%s", err);
    }

    ctx->every = (rc == NGX_DECLINED);
    ctx->client_id = (uint8_t) (ctx->every ? 0 : cid);

    ctx->uids = ngx_palloc(r->pool, sizeof(uint32_t));
    if (ctx->uids == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->uids[0] = uid;
    ctx->nuids = 1;

    if (ngx_im_presence_sessions(ctx->uids, 1, ngx_http_im_api_kick_read,
                                 ctx)
        != NGX_OK)
    {
        /* the kick goes anyway: this node's workers need no Redis */
        ngx_im_presence_logout(uid, IM_TRAFFIC_L_EVERY, 0);
        return ngx_http_im_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "Redis is not reachable: only this "
                                     "node's sessions were logged out");
    }

    return NGX_DONE;
}


static void
ngx_http_im_api_kick_read(redisReply *reply, void *data)
{
    ngx_http_im_api_ctx_t  *ctx = data;

    cJSON      *users, *u;
    ngx_uint_t  failed;

    ngx_im_presence_logout(ctx->uids[0],
                           ctx->every ? IM_TRAFFIC_L_EVERY : IM_TRAFFIC_L_ONE,
                           ctx->client_id);

    ctx->out = cJSON_CreateObject();
    users = cJSON_CreateArray();

    if (ctx->out == NULL || users == NULL) {
        cJSON_Delete(users);
        ngx_http_im_api_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    cJSON_AddNumberToObject(ctx->out, "uid", (double) ctx->uids[0]);

    if (ctx->every) {
        cJSON_AddNullToObject(ctx->out, "client_id");

    } else {
        cJSON_AddNumberToObject(ctx->out, "client_id",
                                (double) ctx->client_id);
    }

    failed = (reply == NULL || reply->type == REDIS_REPLY_ERROR
              || ngx_http_im_api_users(users, NULL, reply, ctx->uids, 1,
                                       ctx->every ? -1 : ctx->client_id)
                 != NGX_OK);

    u = cJSON_GetArrayItem(users, 0);

    if (failed || u == NULL) {
        /* sent, but who was there is not known */
        cJSON_AddNullToObject(ctx->out, "sessions");

    } else {
        cJSON_AddItemToObject(ctx->out, "sessions",
            cJSON_DetachItemFromObjectCaseSensitive(u, "sessions"));
    }

    cJSON_Delete(users);

    ngx_http_im_api_finish(ctx, NGX_HTTP_OK);
}
