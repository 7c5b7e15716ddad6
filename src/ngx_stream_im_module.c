/*
 * ngx_stream_im_module.c: the TCP backend API transport.
 *
 * Owns the im_tcp stream server: [Len:32][message] framing in both
 * directions, the idle timeout and the $im_* variables of the stream
 * access log (written by nginx at the session's end).  Each connection is a
 * session speaking
 * as the system (uid 0); what a message means is the session's business,
 * so the behaviour is exactly that of the WebSocket path.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_stream.h>

#include "ngx_im.h"
#include "ngx_im_session.h"


typedef struct {
    ngx_msec_t              timeout;
} ngx_stream_im_srv_conf_t;


typedef struct {
    ngx_stream_session_t   *stream;
    ngx_im_session_t       *session;
    u_char                 *buf;        /* a message split across reads */
    size_t                  have;
    size_t                  need;
    size_t                  size;
    ngx_msec_t              timeout;
    unsigned                finalized:1;
} ngx_stream_im_ctx_t;


/* the session follows its context in one allocation */
#define ngx_stream_im_session_ctx(s)  ((ngx_stream_im_ctx_t *) (s) - 1)


static void ngx_stream_im_handler(ngx_stream_session_t *s);
static void ngx_stream_im_read_handler(ngx_event_t *ev);
static void ngx_stream_im_write_handler(ngx_event_t *ev);

static void ngx_stream_im_input(ngx_im_session_t *s, u_char *p, size_t n);
static size_t ngx_stream_im_header(ngx_im_session_t *s, u_char *buf,
    size_t len);
static ngx_int_t ngx_stream_im_auth(ngx_im_session_t *s);
static void ngx_stream_im_finalize(ngx_im_session_t *s);

static ngx_int_t ngx_stream_im_add_variables(ngx_conf_t *cf);
static void *ngx_stream_im_create_srv_conf(ngx_conf_t *cf);
static char *ngx_stream_im_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_stream_im_tcp(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_stream_im_commands[] = {

    { ngx_string("im_tcp"),
      NGX_STREAM_SRV_CONF|NGX_CONF_NOARGS,
      ngx_stream_im_tcp,
      NGX_STREAM_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("im_tcp_timeout"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_im_srv_conf_t, timeout),
      NULL },

      ngx_null_command
};


static ngx_stream_module_t  ngx_stream_im_module_ctx = {
    ngx_stream_im_add_variables,           /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    ngx_stream_im_create_srv_conf,         /* create server configuration */
    ngx_stream_im_merge_srv_conf           /* merge server configuration */
};


ngx_module_t  ngx_stream_im_module = {
    NGX_MODULE_V1,
    &ngx_stream_im_module_ctx,             /* module context */
    ngx_stream_im_commands,                /* module directives */
    NGX_STREAM_MODULE,                     /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_im_transport_t  ngx_stream_im_transport = {
    1,
    1,
    ngx_stream_im_input,
    ngx_stream_im_header,
    ngx_stream_im_auth,
    NULL,
    NULL,
    ngx_stream_im_finalize,
    NULL
};


static void
ngx_stream_im_handler(ngx_stream_session_t *s)
{
    ngx_connection_t            *c;
    ngx_stream_im_ctx_t         *ctx;
    ngx_stream_im_srv_conf_t    *iscf;
    ngx_stream_core_srv_conf_t  *cscf;

    c = s->connection;
    iscf = ngx_stream_get_module_srv_conf(s, ngx_stream_im_module);

    c->log->action = "serving im backend api";

    cscf = ngx_stream_get_module_srv_conf(s, ngx_stream_core_module);

    if (cscf->tcp_nodelay && ngx_tcp_nodelay(c) != NGX_OK) {
        ngx_stream_finalize_session(s, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx = ngx_pcalloc(c->pool, sizeof(ngx_stream_im_ctx_t)
                               + sizeof(ngx_im_session_t));
    if (ctx == NULL) {
        ngx_stream_finalize_session(s, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->stream = s;
    ctx->timeout = iscf->timeout;

    ctx->session = ngx_im_session_create(c, &ngx_stream_im_transport,
                                         (ngx_im_session_t *) (ctx + 1));
    if (ctx->session == NULL) {
        ngx_stream_finalize_session(s, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_stream_set_ctx(s, ctx, ngx_stream_im_module);

    c->read->handler = ngx_stream_im_read_handler;
    c->write->handler = ngx_stream_im_write_handler;

    /* a backend connection is let go at a graceful shutdown, as an idle
     * keepalive connection is; its pending answers are sent first */
    c->idle = 1;

    /* bytes a preread phase already took */

    if (c->buffer && c->buffer->pos < c->buffer->last) {
        ngx_stream_im_input(ctx->session, c->buffer->pos,
                            c->buffer->last - c->buffer->pos);
        c->buffer->pos = c->buffer->last;
    }

    ngx_add_timer(c->read, ctx->timeout);

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);

    } else if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_im_session_close(ctx->session, NGX_IM_CLOSE_ERROR);
    }
}


static void
ngx_stream_im_read_handler(ngx_event_t *ev)
{
    ngx_connection_t      *c;
    ngx_stream_session_t  *s;
    ngx_stream_im_ctx_t   *ctx;

    c = ev->data;
    s = c->data;
    ctx = ngx_stream_get_module_ctx(s, ngx_stream_im_module);

    if (ctx->finalized) {
        return;
    }

    if (c->close) {
        /* the worker is shutting down: answers still due go out first */
        c->close = 0;

        if (ngx_im_session_shutdown(ctx->session, 1) == NGX_AGAIN) {
            return;
        }

        ctx->finalized = 1;
        ngx_stream_finalize_session(s, NGX_STREAM_OK);
        return;
    }

    if (ev->timedout) {
        ev->timedout = 0;
        ngx_log_error(NGX_LOG_INFO, c->log, 0, "im: backend idle timeout");
        ngx_im_session_close_why(ctx->session, NGX_IM_CLOSE_NORMAL,
                                 NGX_IM_END_IDLE);
        return;
    }

    if (ngx_im_session_closing(ctx->session)) {
        /* nothing more is read; the close is under way */
        ngx_im_session_read(ctx->session);
        return;
    }

    ngx_add_timer(c->read, ctx->timeout);

    ngx_im_session_read(ctx->session);
}


static void
ngx_stream_im_write_handler(ngx_event_t *ev)
{
    ngx_connection_t      *c;
    ngx_stream_session_t  *s;
    ngx_stream_im_ctx_t   *ctx;

    c = ev->data;
    s = c->data;
    ctx = ngx_stream_get_module_ctx(s, ngx_stream_im_module);

    if (ctx->finalized) {
        return;
    }

    ngx_im_output_write(ctx->session);
}


/* [Len:32][message] */

static void
ngx_stream_im_input(ngx_im_session_t *s, u_char *p, size_t n)
{
    ngx_stream_im_ctx_t  *ctx = ngx_stream_im_session_ctx(s);

    size_t          len, take;
    u_char         *nb;
    ngx_im_conf_t  *imcf;

    imcf = ngx_im_get_conf();

    while (n && ngx_im_session_reading(s)) {

        if (ctx->have == 0 && n >= 4
            && (len = im_get_u32(p)) <= imcf->max_message
            && n - 4 >= len)
        {
            /* the common case: a whole message in the read buffer */
            ngx_im_session_message(s, p + 4, len);
            p += 4 + len;
            n -= 4 + len;
            continue;
        }

        /* gather the length, then the message, across reads */

        if (ctx->size == 0) {
            ctx->buf = ngx_alloc(64, s->connection->log);
            if (ctx->buf == NULL) {
                ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
                return;
            }
            ctx->size = 64;
        }

        if (ctx->have < 4) {
            take = ngx_min(4 - ctx->have, n);
            ngx_memcpy(ctx->buf + ctx->have, p, take);
            ctx->have += take;
            p += take;
            n -= take;

            if (ctx->have < 4) {
                return;
            }

            len = im_get_u32(ctx->buf);

            if (len > imcf->max_message) {
                ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                              "im: backend message of %uz bytes is over "
                              "im_max_message", len);
                ngx_im_session_drain(s, NGX_IM_CLOSE_TOO_BIG);
                return;
            }

            ctx->need = 4 + len;

            if (ctx->need > ctx->size) {
                nb = ngx_alloc(ctx->need, s->connection->log);
                if (nb == NULL) {
                    ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
                    return;
                }

                ngx_memcpy(nb, ctx->buf, 4);
                ngx_free(ctx->buf);
                ctx->buf = nb;
                ctx->size = ctx->need;
            }
        }

        take = ngx_min(ctx->need - ctx->have, n);
        ngx_memcpy(ctx->buf + ctx->have, p, take);
        ctx->have += take;
        p += take;
        n -= take;

        if (ctx->have == ctx->need) {
            ctx->have = 0;
            ngx_im_session_message(s, ctx->buf + 4, ctx->need - 4);
        }
    }
}


static size_t
ngx_stream_im_header(ngx_im_session_t *s, u_char *buf, size_t len)
{
    (void) im_put_u32(buf, (uint32_t) len);
    return 4;
}


static ngx_int_t
ngx_stream_im_auth(ngx_im_session_t *s)
{
    /* the backend API has no CONNECT: access is nginx's allow/deny */
    return NGX_ERROR;
}


static void
ngx_stream_im_finalize(ngx_im_session_t *s)
{
    ngx_stream_im_ctx_t  *ctx = ngx_stream_im_session_ctx(s);

    ctx->finalized = 1;

    if (ctx->buf) {
        ngx_free(ctx->buf);
        ctx->buf = NULL;
    }

    ngx_stream_finalize_session(ctx->stream, NGX_STREAM_OK);
}


/* the session's figures for the stream access log, as on WebSocket */

static ngx_int_t
ngx_stream_im_variable(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data)
{
    u_char               *p;
    ngx_str_t            *why;
    ngx_stream_im_ctx_t  *ctx;

    ctx = ngx_stream_get_module_ctx(s, ngx_stream_im_module);

    /* none: the server is not im_tcp, or access was denied */
    if (ctx == NULL || ctx->session == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data == NGX_IM_FIGURE_REASON) {
        why = ngx_im_session_end_reason(ctx->session);

        if (why == NULL) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = why->data;
        v->len = why->len;

    } else {
        p = ngx_pnalloc(s->connection->pool, NGX_IM_FIGURE_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_im_session_figure(p, ctx->session, data) - p;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_stream_variable_t  ngx_stream_im_vars[] = {

    { ngx_string("im_session_time"), NULL, ngx_stream_im_variable,
      NGX_IM_FIGURE_TIME, NGX_STREAM_VAR_NOCACHEABLE, 0 },

    { ngx_string("im_messages_in"), NULL, ngx_stream_im_variable,
      NGX_IM_FIGURE_IN, NGX_STREAM_VAR_NOCACHEABLE, 0 },

    { ngx_string("im_messages_out"), NULL, ngx_stream_im_variable,
      NGX_IM_FIGURE_OUT, NGX_STREAM_VAR_NOCACHEABLE, 0 },

    { ngx_string("im_end_reason"), NULL, ngx_stream_im_variable,
      NGX_IM_FIGURE_REASON, NGX_STREAM_VAR_NOCACHEABLE, 0 },

      ngx_stream_null_variable
};


static ngx_int_t
ngx_stream_im_add_variables(ngx_conf_t *cf)
{
    ngx_stream_variable_t  *var, *v;

    for (v = ngx_stream_im_vars; v->name.len; v++) {
        var = ngx_stream_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static void *
ngx_stream_im_create_srv_conf(ngx_conf_t *cf)
{
    ngx_stream_im_srv_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_stream_im_srv_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->timeout = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_stream_im_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_stream_im_srv_conf_t *prev = parent;
    ngx_stream_im_srv_conf_t *conf = child;

    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 600000);

    return NGX_CONF_OK;
}


static char *
ngx_stream_im_tcp(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_core_srv_conf_t  *cscf;

    cscf = ngx_stream_conf_get_module_srv_conf(cf, ngx_stream_core_module);

    if (cscf->handler) {
        return "is duplicate";
    }

    cscf->handler = ngx_stream_im_handler;

    if (ngx_im_conf_enable(cf) == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
