
/*
 * ngx_http_im_log.c: what nginx's logs see of a WebSocket session.
 *
 * Owns the $im_* variables (those the auth location builds its request
 * with, and the session's figures for the access log: docs/GUIDE.md 6 and
 * 8), the error log's context of a detached session (its client's
 * address), and the access log line written at a detached session's end
 * with a request made for the log phase.
 */

#include "ngx_http_im.h"


/* a closing detached session's client address, for its access log line */
static u_char  ngx_http_im_addr_text[NGX_SOCKADDR_STRLEN];


u_char *
ngx_http_im_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    u_char            *p;
    u_char             addr[NGX_SOCKADDR_STRLEN];
    ngx_str_t          text;
    ngx_connection_t  *c;

    p = buf;

    if (log->action) {
        p = ngx_snprintf(buf, len, " while %s", log->action);
        len -= p - buf;
    }

    c = log->data;

    if (c->addr_text.len == 0) {
        /* detached: only the sockaddr is kept */
        text.data = addr;
        text.len = ngx_sock_ntop(c->sockaddr, c->socklen, addr,
                                 NGX_SOCKADDR_STRLEN, 0);

        return ngx_snprintf(p, len, ", client: %V", &text);
    }

    return ngx_snprintf(p, len, ", client: %V", &c->addr_text);
}


/*
 * The access log line of a detached session, at its end.  Its request is
 * gone (docs/decisions/009), so one is made for the log phase, with what
 * is still known: the connection (client address, bytes sent, TLS), the
 * configuration of the im_websocket location (its access_log), status
 * 101, $request_time from the session's start and the $im_* variables.
 * The request line, its headers and its variables were not kept:
 * $request, $uri, $http_* and what "set" gave are empty.  A session that
 * ends before it is detached keeps its request, and nginx logs that as
 * usual, with the same $im_* variables.
 */

void
ngx_http_im_log_session(ngx_http_im_ctx_t *ctx)
{
    ngx_uint_t                  i, n;
    ngx_msec_t                  ms;
    ngx_time_t                 *tp;
    ngx_pool_t                 *pool, *cpool;
    ngx_connection_t           *c;
    ngx_http_request_t         *r;
    ngx_http_conf_ctx_t        *conf;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    conf = ctx->detached ? ctx->u.conf : NULL;

    if (conf == NULL) {
        return;
    }

    c = ngx_http_im_ctx_connection(ctx);
    cmcf = conf->main_conf[ngx_http_core_module.ctx_index];

    if (c->addr_text.len == 0) {
        /* $remote_addr: the connection closes after this line, so a
         * buffer of the worker's serves */
        c->addr_text.data = ngx_http_im_addr_text;
        c->addr_text.len = ngx_sock_ntop(c->sockaddr, c->socklen,
                                         ngx_http_im_addr_text,
                                         NGX_SOCKADDR_STRLEN, 0);
    }

    n = cmcf->phases[NGX_HTTP_LOG_PHASE].handlers.nelts;
    h = cmcf->phases[NGX_HTTP_LOG_PHASE].handlers.elts;

    if (n == 0) {
        return;
    }

    pool = ngx_create_pool(1024, c->log);
    if (pool == NULL) {
        return;
    }

    r = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    if (r == NULL) {
        goto done;
    }

    r->ctx = ngx_pcalloc(pool, sizeof(void *) * ngx_http_max_module);
    r->variables = ngx_pcalloc(pool, cmcf->variables.nelts
                                     * sizeof(ngx_http_variable_value_t));
    if (r->ctx == NULL || r->variables == NULL) {
        goto done;
    }

    r->signature = NGX_HTTP_MODULE;
    r->connection = c;
    r->pool = pool;
    r->main = r;
    r->count = 1;

    r->main_conf = conf->main_conf;
    r->srv_conf = conf->srv_conf;
    r->loc_conf = conf->loc_conf;

    r->method = NGX_HTTP_GET;
    ngx_str_set(&r->method_name, "GET");
    r->http_version = NGX_HTTP_VERSION_11;
    ngx_str_set(&r->http_protocol, "HTTP/1.1");

    r->headers_in.content_length_n = -1;
    r->headers_in.keep_alive_n = -1;
    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    r->headers_out.content_length_n = -1;
    r->headers_out.last_modified_time = -1;

    /* $request_time: the session's time */
    ms = ngx_im_session_time(ngx_http_im_ctx_session(ctx));
    tp = ngx_timeofday();
    ms = (ngx_msec_t) tp->sec * 1000 + tp->msec - ms;
    r->start_sec = ms / 1000;
    r->start_msec = ms % 1000;

    ngx_http_set_ctx(r, ctx, ngx_http_im_module);

    /* a plain connection has no pool since the detach: lend it this one
     * (the local address is looked up into it for $server_addr) */
    cpool = c->pool;
    if (cpool == NULL) {
        c->pool = pool;
    }

    c->log->action = "logging im session";

    for (i = 0; i < n; i++) {
        (void) h[i](r);
    }

    if (cpool == NULL) {
        c->pool = NULL;
        c->local_sockaddr = NULL;
        c->local_socklen = 0;
    }

done:

    ngx_destroy_pool(pool);
}


/* variables */

static ngx_int_t
ngx_http_im_form_value(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    u_char *src, size_t len)
{
    u_char      *p;
    size_t       i;
    static u_char  hex[] = "0123456789ABCDEF";

    p = ngx_pnalloc(r->pool, len * 3 + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    /* application/x-www-form-urlencoded, unreserved characters kept */

    for (i = 0; i < len; i++) {
        if ((src[i] >= 'a' && src[i] <= 'z') || (src[i] >= 'A' && src[i] <= 'Z')
            || (src[i] >= '0' && src[i] <= '9') || src[i] == '-'
            || src[i] == '.' || src[i] == '_' || src[i] == '~')
        {
            *p++ = src[i];
            continue;
        }

        *p++ = '%';
        *p++ = hex[src[i] >> 4];
        *p++ = hex[src[i] & 0xf];
    }

    v->len = p - v->data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_im_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char             *p;
    ngx_http_im_ctx_t  *ctx;
    ngx_im_session_t   *s;

    if (data == 5) {
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_sprintf(p, "%ui", ngx_worker) - p;
        v->valid = 1;
        v->no_cacheable = 1;
        v->not_found = 0;
        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_im_module);

    /* the block lives until the connection is closed, after its access
     * log line: the session's figures are read at the end too */
    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = ngx_http_im_ctx_session(ctx);

    switch (data) {

    case 0:
    case 1:
        /* the credentials stay in the connection's pool until the login
         * is done: a refused login's name is in its access log line, a
         * password never */
        if (s->cred == NULL || (data == 1 && ctx->finalized)) {
            v->not_found = 1;
            return NGX_OK;
        }

        return (data == 0)
               ? ngx_http_im_form_value(r, v, s->cred->user.data,
                                        s->cred->user.len)
               : ngx_http_im_form_value(r, v, s->cred->pass.data,
                                        s->cred->pass.len);

    default:
        break;
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;
    v->len = ngx_sprintf(p, "%uD", data == 2 ? (uint32_t) s->role
                                   : data == 3 ? (uint32_t) s->route.client_id
                                   : s->route.uid)
             - p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* the session's figures for the access log: $im_session_time,
 * $im_messages_in, $im_messages_out, $im_end_reason */

static ngx_int_t
ngx_http_im_session_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char             *p;
    ngx_str_t          *why;
    ngx_http_im_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_im_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data == NGX_IM_FIGURE_REASON) {
        why = ngx_im_session_end_reason(ngx_http_im_ctx_session(ctx));

        if (why == NULL) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = why->data;
        v->len = why->len;

    } else {
        p = ngx_pnalloc(r->pool, NGX_IM_FIGURE_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_im_session_figure(p, ngx_http_im_ctx_session(ctx), data)
                 - p;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_http_variable_t  ngx_http_im_vars[] = {

    { ngx_string("im_username"), NULL, ngx_http_im_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("im_password"), NULL, ngx_http_im_variable, 1,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("im_role"), NULL, ngx_http_im_variable, 2,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("im_client_id"), NULL, ngx_http_im_variable, 3,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("im_uid"), NULL, ngx_http_im_variable, 4,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("im_worker"), NULL, ngx_http_im_variable, 5,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("im_session_time"), NULL, ngx_http_im_session_variable,
      NGX_IM_FIGURE_TIME, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("im_messages_in"), NULL, ngx_http_im_session_variable,
      NGX_IM_FIGURE_IN, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("im_messages_out"), NULL, ngx_http_im_session_variable,
      NGX_IM_FIGURE_OUT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("im_end_reason"), NULL, ngx_http_im_session_variable,
      NGX_IM_FIGURE_REASON, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_im_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_im_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}
