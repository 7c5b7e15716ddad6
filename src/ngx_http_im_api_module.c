/*
 * ngx_http_im_api_module.c: the admin HTTP API (im_api).
 *
 * Owns the location that "im_api;" marks: which endpoint a request asks
 * for (the last part of its path and its method), the request's context,
 * its body read whole and handed to the endpoint, and keeping the request
 * alive while Redis answers.  Reading arguments and writing answers is
 * ngx_http_im_api_request.c's.  What the endpoints do is other parts'
 * business: presence and kick read the registry of live sessions
 * (ngx_http_im_api_presence.c, ngx_im_presence.c), publish goes through
 * the session layer's pipeline without a session
 * (ngx_http_im_api_publish.c, ngx_im_publish.c), the inbox is the
 * store's (ngx_http_im_api_inbox.c, ngx_im_store.c).  Access control is
 * nginx's own (allow/deny, auth_request) in the same location;
 * docs/API.md is the contract, docs/decisions/027-admin-api.md says why.
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
#include "ngx_http_im_api.h"


static ngx_int_t ngx_http_im_api_handler(ngx_http_request_t *r);
static void ngx_http_im_api_body(ngx_http_request_t *r);
static void ngx_http_im_api_cleanup(void *data);


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
        return ngx_http_im_api_error(r, NGX_HTTP_NOT_FOUND,
                                     "no endpoint \"%V\": presence, "
                                     "publish, kick or inbox", &name);
    }

    if (!(r->method & route->methods)) {
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
