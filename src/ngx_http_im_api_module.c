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
 * (ngx_im_publish.c), the inbox is the store's (ngx_im_store.c).  Access
 * control is nginx's own (allow/deny, auth_request) in the same location;
 * docs/API.md is the contract, docs/decisions/027-admin-api.md says why.
 *
 * A request waits for Redis with r->main->count raised by the body read
 * and is finalized from the last callback; the request and its pool live
 * until then, whether or not the client is still there.  A publish with
 * a "wait" also waits for its recipients' acks: it sits in this worker's
 * table of waiting publishes (by token) until they came back as 'W'
 * records or its timer went off (docs/decisions/032-publish-wait.md).
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


/* uids one request may name (a part-group list may name more) */
#define NGX_HTTP_IM_API_MAX_UIDS   1000

/* recipients a publish answer lists one by one; beyond, counts only */
#define NGX_HTTP_IM_API_MAX_LIST   1000

/* a publish's "wait", at most, in seconds */
#define NGX_HTTP_IM_API_MAX_WAIT   30

/* acks one waiting publish keeps (to list them); more are counted */
#define NGX_HTTP_IM_API_MAX_ACKS   16000


/* an ack of a watched message, as a 'W' record brought it */
typedef struct {
    uint32_t               uid;
    uint32_t               after_ms;
    ngx_pid_t              worker;
    uint8_t                client_id;
    ngx_str_t              node;
} ngx_http_im_api_ack_t;


typedef struct ngx_http_im_api_ctx_s  ngx_http_im_api_ctx_t;

struct ngx_http_im_api_ctx_s {
    ngx_http_request_t    *request;
    ngx_uint_t             endpoint;       /* NGX_IM_API_* */

    uint32_t              *uids;
    ngx_uint_t             nuids;

    /* recall: Redis replies still due */
    ngx_uint_t             pending;

    /* kick */
    uint8_t                client_id;
    unsigned               every:1;

    /* publish and recall */
    u_char                 msgid[IM_MSGID_LEN];
    uint32_t               from;           /* publish: the sender */
    uint32_t               target;         /* publish: the uid or gid */

    cJSON                 *out;            /* the answer being built */
    cJSON                 *list;           /* an array in it */
    cJSON                 *extra;          /* another one */

    /*
     * A publish with a wait: in the worker's table by token while it
     * waits; the recipients (uids, sorted), their sessions then (nsess,
     * NULL past NGX_HTTP_IM_API_MAX_LIST), which acked, and how many of
     * those it waits for are still to ack (left).
     */
    ngx_msec_t             wait;
    ngx_rbtree_node_t      wait_node;      /* key: the token */
    ngx_event_t            wait_ev;
    ngx_array_t           *acks;           /* ngx_http_im_api_ack_t */
    ngx_uint_t             acks_dropped;
    int                   *nsess;
    u_char                *acked;
    ngx_uint_t             left;
    uint32_t              *asked;          /* a part-group's uids */
    ngx_uint_t             nasked;
    unsigned               waiting:1;      /* in the table */
    unsigned               known:1;        /* the recipients are */
    unsigned               timed_out:1;
};


typedef struct {
    ngx_http_im_api_ctx_t *ctx;
    uint32_t               uid;
} ngx_http_im_api_step_t;


static ngx_int_t ngx_http_im_api_handler(ngx_http_request_t *r);
static void ngx_http_im_api_body(ngx_http_request_t *r);
static void ngx_http_im_api_cleanup(void *data);

static ngx_int_t ngx_http_im_api_presence(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_presence_read(redisReply *reply, void *data);
static ngx_int_t ngx_http_im_api_kick(ngx_http_im_api_ctx_t *ctx,
    cJSON *body);
static void ngx_http_im_api_kick_read(redisReply *reply, void *data);
static ngx_int_t ngx_http_im_api_publish(ngx_http_im_api_ctx_t *ctx,
    cJSON *body);
static void ngx_http_im_api_published(void *data, ngx_int_t rc,
    ngx_uint_t why, uint32_t *to, ngx_uint_t n);
static void ngx_http_im_api_publish_read(redisReply *reply, void *data);
static ngx_int_t ngx_http_im_api_wait_start(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_wait_timer(ngx_event_t *ev);
static void ngx_http_im_api_wait_end(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_acked(im_traffic_t *t);
static void ngx_http_im_api_wait_known(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_wait_mark(ngx_http_im_api_ctx_t *ctx,
    uint32_t uid);
static void ngx_http_im_api_wait_check(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_wait_answer(ngx_http_im_api_ctx_t *ctx);
static ngx_int_t ngx_http_im_api_inbox(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_inbox_read(redisReply *reply, void *data);
static ngx_int_t ngx_http_im_api_recall(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_recall_members(void *data, ngx_int_t rc,
    uint32_t *uids, ngx_uint_t n);
static ngx_int_t ngx_http_im_api_recall_start(ngx_http_im_api_ctx_t *ctx);
static void ngx_http_im_api_recall_read(redisReply *reply, void *data);
static void ngx_http_im_api_recall_removed(redisReply *reply, void *data);
static void ngx_http_im_api_recall_done(ngx_http_im_api_ctx_t *ctx);

static ngx_int_t ngx_http_im_api_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *fmt, ...);
static ngx_int_t ngx_http_im_api_send(ngx_http_request_t *r,
    ngx_uint_t status, cJSON *json);

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

static ngx_int_t
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

static ngx_int_t
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

static ngx_int_t
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

static ngx_int_t
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

static void
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

static void
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

static ngx_int_t
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


/* publish: a client's message built from the JSON, through the same
 * pipeline as a client's, from the system (uid 0) or a given uid */

static ngx_int_t
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
    ngx_im_stats->api_errors++;                                               \
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
        ngx_im_stats->api_errors++;

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
        ngx_im_stats->api_errors++;
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

static void
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


/* the inbox of one uid */

/* NGX_OK: *uid; else *rc is the answer already given (or to give) */

static ngx_int_t
ngx_http_im_api_one_uid(ngx_http_im_api_ctx_t *ctx, uint32_t *uid,
    ngx_int_t *answer)
{
    u_char              err[256];
    ngx_int_t           rc;
    ngx_str_t           v;
    ngx_http_request_t  *r;

    r = ctx->request;

    rc = ngx_http_im_api_arg(r, "uid", &v);

    if (rc == NGX_ERROR) {
        *answer = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_snprintf(err, sizeof(err), "the argument uid is missing%Z");
        goto bad;
    }

    rc = ngx_http_im_api_uid_list(ctx, &v, err, sizeof(err));

    if (rc == NGX_ERROR) {
        *answer = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        goto bad;
    }

    if (ctx->nuids != 1) {
        ngx_snprintf(err, sizeof(err), "one uid at a time%Z");
        goto bad;
    }

    *uid = ctx->uids[0];

    return NGX_OK;

bad:

    ngx_im_stats->api_errors++;
    *answer = ngx_http_im_api_error(r, NGX_HTTP_BAD_REQUEST, "%s", err);
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_im_api_inbox(ngx_http_im_api_ctx_t *ctx)
{
    uint32_t   uid;
    ngx_int_t  answer;

    if (ngx_http_im_api_one_uid(ctx, &uid, &answer) != NGX_OK) {
        return answer;
    }

    if (ngx_im_store_load(uid, ngx_http_im_api_inbox_read, ctx) != NGX_OK) {
        ngx_im_stats->api_errors++;
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
 */

static ngx_int_t
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
            ngx_im_stats->api_errors++;
            return ngx_http_im_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "Redis is not reachable");
        }

        return NGX_DONE;
    }

    rc = ngx_http_im_api_arg(r, "uid", &v);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_snprintf(err, sizeof(err), "the argument uid (or gid) is "
                     "missing%Z");
        goto bad;
    }

    rc = ngx_http_im_api_uid_list(ctx, &v, err, sizeof(err));

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        goto bad;
    }

    return ngx_http_im_api_recall_start(ctx);

bad:

    ngx_im_stats->api_errors++;
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
    ngx_uint_t               i;
    ngx_http_im_api_step_t  *step;

    cJSON_AddNumberToObject(ctx->out, "searched", (double) ctx->nuids);

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


/* answers */

static ngx_int_t
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


static ngx_int_t
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
