/*
 * ngx_http_im_api_module.c: the admin HTTP API (im_api).
 *
 * Owns the location that "im_api;" marks: which endpoint a request asks
 * for (the last part of its path), its arguments (query string or a JSON
 * body, parsed with cJSON, unknown fields refused), its answer (JSON built
 * with cJSON) and keeping the request alive while Redis answers.  What the
 * endpoints do is other parts' business: presence reads the registry of
 * live sessions (ngx_im_presence.c), kick sends an 'L' record there too,
 * publish goes through the session layer's pipeline without a session
 * (ngx_http_im_api_publish.c, ngx_im_publish.c), the inbox is the
 * store's (ngx_im_store.c).  Access control is nginx's own (allow/deny,
 * auth_request) in the same location; docs/API.md is the contract,
 * docs/decisions/027-admin-api.md says why.
 *
 * A request waits for Redis with r->main->count raised by the body read
 * and is finalized from the last callback; the request and its pool live
 * until then, whether or not the client is still there.  POST publish,
 * with its wait for the recipients' acks, is ngx_http_im_api_publish.c's.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <cjson/cJSON.h>

#include "ngx_im.h"
#include "ngx_im_uids.h"
#include "ngx_im_store.h"
#include "ngx_im_presence.h"
#include "ngx_im_publish.h"
#include "ngx_im_router.h"
#include "ngx_im_traffic.h"
#include "ngx_http_im_api.h"


static ngx_int_t ngx_http_im_api_handler(ngx_http_request_t *r);
static void ngx_http_im_api_body(ngx_http_request_t *r);
static void ngx_http_im_api_cleanup(void *data);

static ngx_int_t ngx_http_im_api_presence(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_presence_read(redisReply *reply, void *data);
static ngx_int_t ngx_http_im_api_kick(ngx_http_im_api_ctx_t *ctx,
    cJSON *body);
static void ngx_http_im_api_kick_read(redisReply *reply, void *data);


static char *ngx_http_im_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_im_api_commands[] = {

    { ngx_string("im_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_im_api,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_im_api_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_im_api_module = {
    NGX_MODULE_V1,
    &ngx_http_im_api_module_ctx,           /* module context */
    ngx_http_im_api_commands,              /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* the endpoints: the last part of the path */

typedef struct {
    ngx_str_t              name;
    ngx_uint_t             endpoint;
    ngx_uint_t             methods;
} ngx_http_im_api_route_t;


static ngx_http_im_api_route_t  ngx_http_im_api_routes[] = {
    { ngx_string("presence"), NGX_IM_API_PRESENCE,
      NGX_HTTP_GET|NGX_HTTP_HEAD },
    { ngx_string("publish"), NGX_IM_API_PUBLISH, NGX_HTTP_POST },
    { ngx_string("kick"), NGX_IM_API_KICK, NGX_HTTP_POST },
    { ngx_string("inbox"), NGX_IM_API_INBOX,
      NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_DELETE },
    { ngx_null_string, 0, 0 }
};


static ngx_int_t
ngx_http_im_api_handler(ngx_http_request_t *r)
{
    u_char                   *p, *last;
    ngx_int_t                 rc;
    ngx_str_t                 name;
    ngx_pool_cleanup_t       *cln;
    ngx_http_im_api_ctx_t    *ctx;
    ngx_http_im_api_route_t  *route;

    last = r->uri.data + r->uri.len;

    if (last > r->uri.data && last[-1] == '/') {
        last--;
    }

    for (p = last; p > r->uri.data && p[-1] != '/'; p--) {
        /* void */
    }

    name.data = p;
    name.len = last - p;

    for (route = ngx_http_im_api_routes; route->name.len; route++) {
        if (name.len == route->name.len
            && ngx_strncmp(name.data, route->name.data, name.len) == 0)
        {
            break;
        }
    }

    if (route->name.len == 0) {
        ngx_im_stats->api_errors++;
        return ngx_http_im_api_error(r, NGX_HTTP_NOT_FOUND,
                                     "no endpoint \"%V\": presence, "
                                     "publish, kick or inbox", &name);
    }

    if (!(r->method & route->methods)) {
        ngx_im_stats->api_errors++;
        return ngx_http_im_api_error(r, NGX_HTTP_NOT_ALLOWED,
                                     "method %V not allowed here",
                                     &r->method_name);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_im_api_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->endpoint = route->endpoint;

    if (ctx->endpoint == NGX_IM_API_INBOX && r->method == NGX_HTTP_DELETE) {
        ctx->endpoint = NGX_IM_API_RECALL;
    }

    ngx_im_stats->api[ctx->endpoint]++;

    /* cJSON's memory is malloc's: given back with the request */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_im_api_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_im_api_module);

    /* every request goes on from the body handler; a body read on disk
     * is read back whole there */

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_im_api_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_im_api_cleanup(void *data)
{
    ngx_http_im_api_ctx_t  *ctx = data;

    ngx_http_im_api_wait_end(ctx);

    if (ctx->out) {
        cJSON_Delete(ctx->out);
        ctx->out = NULL;
    }
}


/* the request's body, whole, or an empty string */

static ngx_int_t
ngx_http_im_api_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char                    *p;
    size_t                     len;
    ssize_t                    n;
    ngx_buf_t                 *b;
    ngx_chain_t               *cl;
    ngx_http_request_body_t   *rb;

    ngx_str_null(body);

    rb = r->request_body;

    if (rb == NULL) {
        return NGX_OK;
    }

    if (rb->temp_file) {
        len = (size_t) rb->temp_file->file.offset;

        body->data = ngx_pnalloc(r->pool, len);
        if (body->data == NULL) {
            return NGX_ERROR;
        }

        n = ngx_read_file(&rb->temp_file->file, body->data, len, 0);
        if (n != (ssize_t) len) {
            return NGX_ERROR;
        }

        body->len = len;
        return NGX_OK;
    }

    len = 0;

    for (cl = rb->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;
    body->len = len;

    for (cl = rb->bufs; cl; cl = cl->next) {
        b = cl->buf;
        p = ngx_cpymem(p, b->pos, b->last - b->pos);
    }

    return NGX_OK;
}


/* the body as a JSON object of the fields allowed (NULL-terminated);
 * NULL with *err set: the reason to answer 400 with */

static cJSON *
ngx_http_im_api_json(ngx_http_request_t *r, ngx_str_t *body,
    const char **allowed, u_char *err, size_t size)
{
    cJSON        *json, *f;
    const char  **a, *where;

    if (body->len == 0) {
        ngx_snprintf(err, size, "a JSON object is expected in the body%Z");
        return NULL;
    }

    json = cJSON_ParseWithLengthOpts((const char *) body->data, body->len,
                                     &where, 0);
    if (json == NULL) {
        where = cJSON_GetErrorPtr();
        ngx_snprintf(err, size, "malformed JSON at byte %uz%Z",
                     where ? (size_t) (where - (const char *) body->data)
                           : (size_t) 0);
        return NULL;
    }

    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        ngx_snprintf(err, size, "a JSON object is expected in the body%Z");
        return NULL;
    }

    for (f = json->child; f; f = f->next) {
        for (a = allowed; *a; a++) {
            if (ngx_strcmp(f->string, *a) == 0) {
                break;
            }
        }

        if (*a == NULL) {
            ngx_snprintf(err, size, "unknown field \"%s\"%Z", f->string);
            cJSON_Delete(json);
            return NULL;
        }
    }

    return json;
}


/* a uid or gid: a whole number from 1 to 4294967295 */

ngx_int_t
ngx_http_im_api_json_u32(cJSON *json, const char *name, ngx_uint_t zero,
    uint32_t *v, u_char *err, size_t size)
{
    double  d;
    cJSON  *f;

    f = cJSON_GetObjectItemCaseSensitive(json, name);

    if (f == NULL) {
        return NGX_DECLINED;
    }

    if (!cJSON_IsNumber(f)) {
        ngx_snprintf(err, size, "\"%s\" must be a number%Z", name);
        return NGX_ERROR;
    }

    d = f->valuedouble;

    if (d != (double) (uint32_t) d || (d == 0 && !zero)) {
        ngx_snprintf(err, size, "\"%s\" must be a whole number from %d "
                     "to 4294967295%Z", name, zero ? 0 : 1);
        return NGX_ERROR;
    }

    *v = (uint32_t) d;

    return NGX_OK;
}


/* "1001,1002": sorted, each once; 0 is no uid */

ngx_int_t
ngx_http_im_api_uid_list(ngx_http_im_api_ctx_t *ctx, ngx_str_t *v,
    u_char *err, size_t size)
{
    u_char     *p, *last, *comma;
    ngx_int_t   n;

    ctx->uids = ngx_palloc(ctx->request->pool,
                           NGX_HTTP_IM_API_MAX_UIDS * sizeof(uint32_t));
    if (ctx->uids == NULL) {
        return NGX_ERROR;
    }

    p = v->data;
    last = p + v->len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        n = ngx_atoi(p, comma - p);

        if (n <= 0 || n > (ngx_int_t) 0xffffffff) {
            ngx_snprintf(err, size, "\"%*s\" is not a uid (1 to "
                         "4294967295)%Z", (size_t) (comma - p), p);
            return NGX_DECLINED;
        }

        if (ctx->nuids == NGX_HTTP_IM_API_MAX_UIDS) {
            ngx_snprintf(err, size, "more than %d uids%Z",
                         NGX_HTTP_IM_API_MAX_UIDS);
            return NGX_DECLINED;
        }

        ctx->uids[ctx->nuids++] = (uint32_t) n;
        p = comma + 1;
    }

    if (ctx->nuids == 0) {
        ngx_snprintf(err, size, "no uid given%Z");
        return NGX_DECLINED;
    }

    ctx->nuids = ngx_im_uids_unique(ctx->uids, ctx->nuids);

    return NGX_OK;
}


/* a query argument, unescaped; NGX_DECLINED: absent */

ngx_int_t
ngx_http_im_api_arg(ngx_http_request_t *r, char *name, ngx_str_t *v)
{
    u_char     *dst, *src;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK) {
        return NGX_DECLINED;
    }

    v->data = ngx_pnalloc(r->pool, raw.len);
    if (v->data == NULL) {
        return NGX_ERROR;
    }

    src = raw.data;
    dst = v->data;
    ngx_unescape_uri(&dst, &src, raw.len, 0);
    v->len = dst - v->data;

    return NGX_OK;
}


/* a MsgId: 32 bytes of text, or 64 hex digits for any 32 bytes */

ngx_int_t
ngx_http_im_api_msgid(ngx_str_t *v, u_char *msgid)
{
    ngx_int_t   hi, lo;
    ngx_uint_t  i;

    if (v->len == IM_MSGID_LEN) {
        ngx_memcpy(msgid, v->data, IM_MSGID_LEN);
        return NGX_OK;
    }

    if (v->len != 2 * IM_MSGID_LEN) {
        return NGX_ERROR;
    }

    for (i = 0; i < IM_MSGID_LEN; i++) {
        hi = ngx_hextoi(&v->data[2 * i], 1);
        lo = ngx_hextoi(&v->data[2 * i + 1], 1);

        if (hi == NGX_ERROR || lo == NGX_ERROR) {
            return NGX_ERROR;
        }

        msgid[i] = (u_char) (hi * 16 + lo);
    }

    return NGX_OK;
}


/* a MsgId in an answer: as text when it is printable, else in hex */

void
ngx_http_im_api_add_msgid(cJSON *obj, const u_char *msgid)
{
    char        text[2 * IM_MSGID_LEN + 1];
    ngx_uint_t  i, printable;

    printable = 1;

    for (i = 0; i < IM_MSGID_LEN; i++) {
        if (msgid[i] < 0x20 || msgid[i] > 0x7e || msgid[i] == '"'
            || msgid[i] == '\\')
        {
            printable = 0;
            break;
        }
    }

    if (printable) {
        ngx_memcpy(text, msgid, IM_MSGID_LEN);
        text[IM_MSGID_LEN] = '\0';
        cJSON_AddStringToObject(obj, "msgid", text);
        return;
    }

    *ngx_hex_dump((u_char *) text, (u_char *) msgid, IM_MSGID_LEN) = '\0';
    cJSON_AddStringToObject(obj, "msgid_hex", text);
}


static void
ngx_http_im_api_body(ngx_http_request_t *r)
{
    u_char                  err[256];
    cJSON                  *json;
    ngx_int_t               rc;
    ngx_str_t               body;
    ngx_http_im_api_ctx_t  *ctx;

    static const char  *kick_fields[] = { "uid", "client_id", NULL };
    static const char  *publish_fields[] = { "from", "to", "gid", "uids",
                                             "msgid", "payload", "wait",
                                             NULL };

    ctx = ngx_http_get_module_ctx(r, ngx_http_im_api_module);

    if (ngx_http_im_api_read_body(r, &body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    json = NULL;

    switch (ctx->endpoint) {

    case NGX_IM_API_KICK:
    case NGX_IM_API_PUBLISH:
        json = ngx_http_im_api_json(r, &body,
                                    ctx->endpoint == NGX_IM_API_KICK
                                    ? kick_fields : publish_fields,
                                    err, sizeof(err));
        if (json == NULL) {
            ngx_im_stats->api_errors++;
            ngx_http_finalize_request(r,
                ngx_http_im_api_error(r, NGX_HTTP_BAD_REQUEST, "%s", err));
            return;
        }

        rc = (ctx->endpoint == NGX_IM_API_KICK)
             ? ngx_http_im_api_kick(ctx, json)
             : ngx_http_im_api_publish(ctx, json);

        cJSON_Delete(json);
        break;

    case NGX_IM_API_PRESENCE:
        rc = ngx_http_im_api_presence(ctx);
        break;

    case NGX_IM_API_INBOX:
        rc = ngx_http_im_api_inbox(ctx);
        break;

    default: /* NGX_IM_API_RECALL */
        rc = ngx_http_im_api_recall(ctx);
        break;
    }

    if (rc == NGX_DONE) {
        /* Redis answers later; the last callback finalizes */
        return;
    }

    ngx_http_finalize_request(r, rc);
}


/* the answer to a request that waited: once, from the last callback */

void
ngx_http_im_api_finish(ngx_http_im_api_ctx_t *ctx, ngx_uint_t status)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (status >= NGX_HTTP_BAD_REQUEST) {
        ngx_im_stats->api_errors++;
        rc = ngx_http_im_api_error(r, status,
                                   status == NGX_HTTP_SERVICE_UNAVAILABLE
                                   ? "Redis did not answer" : "failed");

    } else {
        rc = ngx_http_im_api_send(r, status, ctx->out);
    }

    ngx_http_finalize_request(r, rc);
}


/* presence */

static ngx_int_t
ngx_http_im_api_presence(ngx_http_im_api_ctx_t *ctx)
{
    u_char               err[256];
    ngx_int_t            rc;
    ngx_str_t            v;
    ngx_http_request_t  *r;

    r = ctx->request;

    rc = ngx_http_im_api_arg(r, "uid", &v);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_im_stats->api_errors++;
        return ngx_http_im_api_error(r, NGX_HTTP_BAD_REQUEST,
                                     "the argument uid is missing "
                                     "(uid=1001,1002)");
    }

    rc = ngx_http_im_api_uid_list(ctx, &v, err, sizeof(err));

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_im_stats->api_errors++;
        return ngx_http_im_api_error(r, NGX_HTTP_BAD_REQUEST, "%s", err);
    }

    if (ngx_im_presence_sessions(ctx->uids, ctx->nuids,
                                 ngx_http_im_api_presence_read, ctx)
        != NGX_OK)
    {
        ngx_im_stats->api_errors++;
        return ngx_http_im_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
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

static ngx_int_t
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
        ngx_im_stats->api_errors++;
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
        ngx_im_stats->api_errors++;
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
        ngx_im_stats->api_errors++;
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


/* answers */

ngx_int_t
ngx_http_im_api_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *fmt, ...)
{
    u_char      reason[512], *p;
    cJSON      *json;
    va_list     args;
    ngx_int_t   rc;
    const char *name;

    va_start(args, fmt);
    p = ngx_vslprintf(reason, reason + sizeof(reason) - 1, fmt, args);
    va_end(args);
    *p = '\0';

    switch (status) {
    case NGX_HTTP_BAD_REQUEST:
        name = "bad_request";
        break;
    case NGX_HTTP_NOT_FOUND:
        name = "not_found";
        break;
    case NGX_HTTP_NOT_ALLOWED:
        name = "method_not_allowed";
        break;
    case NGX_HTTP_CONFLICT:
        name = "refused";
        break;
    case NGX_HTTP_NOT_IMPLEMENTED:
        name = "not_implemented";
        break;
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        name = "unavailable";
        break;
    default:
        name = "internal_error";
        break;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json = cJSON_CreateObject();
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cJSON_AddStringToObject(json, "error", name);
    cJSON_AddStringToObject(json, "reason", (char *) reason);

    rc = ngx_http_im_api_send(r, status, json);

    cJSON_Delete(json);

    return rc;
}


ngx_int_t
ngx_http_im_api_send(ngx_http_request_t *r, ngx_uint_t status, cJSON *json)
{
    char         *text;
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    text = json ? cJSON_PrintUnformatted(json) : NULL;
    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(text);

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        cJSON_free(text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, text, len);
    *b->last++ = '\n';
    cJSON_free(text);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* configuration */

static char *
ngx_http_im_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_im_conf_t             *imcf;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_http_im_api_handler;

    imcf = ngx_im_conf_enable(cf);
    if (imcf == NULL) {
        return NGX_CONF_ERROR;
    }

    /* presence needs every login registered (ngx_im_presence.c) */
    imcf->registry = 1;

    return NGX_CONF_OK;
}
