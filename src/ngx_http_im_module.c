/*
 * ngx_http_im_module.c: the WebSocket transport.
 *
 * Owns the im_websocket location: the RFC 6455 handshake (anything else
 * gets a proper HTTP status), the frame layer between the connection and
 * the session (control frames, fragments, close handshake and its codes),
 * authentication of CONNECT by an in-memory background subrequest to the
 * operator's im_auth location, and letting the request go at login.  The
 * im_status / im_metrics locations are ngx_http_im_status.c's.  What the
 * logs see of a session (the $im_*
 * variables, the access log line at its end) is ngx_http_im_log.c's.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_sha1.h>
#include <cjson/cJSON.h>

#include "ngx_im.h"
#include "ngx_im_session.h"
#include "ngx_im_router.h"
#include "ngx_im_wsframe.h"
#include "ngx_http_im_locate.h"
#include "ngx_http_im.h"


/* an im_auth to check once the location trees exist */
typedef struct {
    ngx_http_core_srv_conf_t  *cscf;
    ngx_http_core_loc_conf_t  *clcf;        /* of im_websocket */
    ngx_str_t                  auth;
    ngx_str_t                  file;
    ngx_uint_t                 line;
} ngx_http_im_auth_check_t;


typedef struct {
    ngx_array_t             checks;         /* ngx_http_im_auth_check_t */
} ngx_http_im_main_conf_t;


typedef struct {
    ngx_flag_t              websocket;
    ngx_flag_t              echo;
    ngx_flag_t              receipts;
    ngx_str_t               auth;
    ngx_str_t               file;       /* where im_websocket is */
    ngx_uint_t              line;
    /* that location's configuration, for the access log at the end */
    ngx_http_conf_ctx_t    *conf;
} ngx_http_im_loc_conf_t;


static ngx_int_t ngx_http_im_handler(ngx_http_request_t *r);
static void ngx_http_im_read(ngx_http_request_t *r);
static void ngx_http_im_write(ngx_http_request_t *r);
static void ngx_http_im_cleanup(void *data);
static void ngx_http_im_detach_handler(ngx_event_t *ev);
static void ngx_http_im_logged_in(ngx_im_session_t *s);
static void ngx_http_im_conn_read(ngx_event_t *ev);
static void ngx_http_im_conn_write(ngx_event_t *ev);
static void ngx_http_im_block_free(void *data);
static void ngx_http_im_own_pool(ngx_http_im_ctx_t *ctx);
static void ngx_http_im_close(ngx_http_im_ctx_t *ctx);

static void ngx_http_im_input(ngx_im_session_t *s, u_char *p, size_t n);
static void ngx_http_im_frames(ngx_im_session_t *s, im_ws_parser_t *wp,
    u_char *p, size_t n);
static void ngx_http_im_parser_keep(ngx_im_session_t *s,
    im_ws_parser_t *wp);
static void ngx_http_im_parser_free(ngx_http_im_ctx_t *ctx);
static size_t ngx_http_im_header(ngx_im_session_t *s, u_char *buf,
    size_t len);
static ngx_int_t ngx_http_im_auth(ngx_im_session_t *s);
static ngx_int_t ngx_http_im_auth_done(ngx_http_request_t *r, void *data,
    ngx_int_t rc);
static ngx_uint_t ngx_http_im_goodbye(ngx_im_session_t *s,
    ngx_uint_t reason);
static ngx_int_t ngx_http_im_pre_flush(ngx_im_session_t *s);
static void ngx_http_im_finalize(ngx_im_session_t *s);

static void *ngx_http_im_create_loc_conf(ngx_conf_t *cf);
static void *ngx_http_im_create_main_conf(ngx_conf_t *cf);
static ngx_int_t ngx_http_im_check_auth(ngx_conf_t *cf);
static char *ngx_http_im_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_im_websocket(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_im_receipts(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_im_commands[] = {

    { ngx_string("im_websocket"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_im_websocket,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("im_websocket_echo"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_im_websocket,
      NGX_HTTP_LOC_CONF_OFFSET,
      1,
      NULL },

    { ngx_string("im_auth"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, auth),
      NULL },

    { ngx_string("im_receipts"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_im_receipts,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, receipts),
      NULL },

    { ngx_string("im_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_im_status,
      0,
      0,
      NULL },

    { ngx_string("im_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_im_status,
      0,
      1,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_im_module_ctx = {
    ngx_http_im_add_variables,             /* preconfiguration */
    ngx_http_im_check_auth,                /* postconfiguration */

    ngx_http_im_create_main_conf,          /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_im_create_loc_conf,           /* create location configuration */
    ngx_http_im_merge_loc_conf             /* merge location configuration */
};


ngx_module_t  ngx_http_im_module = {
    NGX_MODULE_V1,
    &ngx_http_im_module_ctx,               /* module context */
    ngx_http_im_commands,                  /* module directives */
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


/* [1]: im_websocket_echo, the frame layer alone (for RFC 6455 test
 * suites), a session that speaks as the system */

static ngx_im_transport_t  ngx_http_im_transports[2] = {
    { 0, 0, ngx_http_im_input, ngx_http_im_header, ngx_http_im_auth,
      ngx_http_im_goodbye, ngx_http_im_pre_flush, ngx_http_im_finalize,
      ngx_http_im_logged_in },
    { 1, 0, ngx_http_im_input, ngx_http_im_header, NULL,
      ngx_http_im_goodbye, ngx_http_im_pre_flush, ngx_http_im_finalize,
      NULL }
};


#define NGX_HTTP_IM_GUID  "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


/* the handshake */

static ngx_table_elt_t *
ngx_http_im_find_header(ngx_http_request_t *r, const char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


static ngx_int_t
ngx_http_im_refuse(ngx_http_request_t *r, ngx_uint_t status, char *line)
{
    ngx_int_t         rc;
    ngx_table_elt_t  *h;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "im: not a WebSocket handshake: %s", line);

    if (status != 426) {
        return status;
    }

    /* nginx has no error page for 426: answer it here */

    r->headers_out.status = 426;
    ngx_str_set(&r->headers_out.status_line, "426 Upgrade Required");
    r->headers_out.content_length_n = 0;
    r->header_only = 1;
    r->keepalive = 0;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Sec-WebSocket-Version");
    ngx_str_set(&h->value, "13");

    rc = ngx_http_send_header(r);

    return (rc == NGX_ERROR || rc > NGX_OK) ? rc : NGX_OK;
}


static ngx_int_t
ngx_http_im_handler(ngx_http_request_t *r)
{
    u_char                    accept[28], key_raw[32];
    ngx_int_t                 rc;
    ngx_str_t                 src, dst;
    ngx_sha1_t                sha1;
    u_char                    digest[20];
    ngx_table_elt_t          *h, *key, *version;
    ngx_connection_t         *c;
    ngx_http_cleanup_t       *cln;
    ngx_pool_cleanup_t       *pcln;
    ngx_http_im_ctx_t        *ctx;
    ngx_http_im_block_t      *blk;
    ngx_http_core_loc_conf_t *clcf;
    ngx_http_im_loc_conf_t   *ilcf;

    c = r->connection;
    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_im_module);

    if (r != r->main) {
        return NGX_HTTP_NOT_FOUND;
    }

#if (NGX_HTTP_V2)
    if (r->stream) {
        /* RFC 8441 is not supported: WebSocket needs HTTP/1.1 */
        return ngx_http_im_refuse(r, NGX_HTTP_BAD_REQUEST, "HTTP/2");
    }
#endif

    if (r->method != NGX_HTTP_GET) {
        return ngx_http_im_refuse(r, NGX_HTTP_NOT_ALLOWED, "method");
    }

    if (r->http_version < NGX_HTTP_VERSION_11) {
        return ngx_http_im_refuse(r, NGX_HTTP_BAD_REQUEST, "HTTP/1.0");
    }

    /* nginx 1.22 does not keep the Connection header in headers_in */

    h = ngx_http_im_find_header(r, "Upgrade", 7);

    if (h == NULL || h->value.len != 9
        || ngx_strncasecmp(h->value.data, (u_char *) "websocket", 9) != 0)
    {
        return ngx_http_im_refuse(r, 426, "no Upgrade: websocket");
    }

    h = ngx_http_im_find_header(r, "Connection", 10);

    if (h == NULL
        || ngx_strcasestrn(h->value.data, "upgrade", 7 - 1) == NULL)
    {
        return ngx_http_im_refuse(r, NGX_HTTP_BAD_REQUEST,
                                  "no Connection: upgrade");
    }

    version = ngx_http_im_find_header(r, "Sec-WebSocket-Version", 21);

    if (version == NULL || version->value.len != 2
        || ngx_strncmp(version->value.data, "13", 2) != 0)
    {
        return ngx_http_im_refuse(r, 426, "Sec-WebSocket-Version");
    }

    key = ngx_http_im_find_header(r, "Sec-WebSocket-Key", 17);

    if (key == NULL || key->value.len != 24) {
        return ngx_http_im_refuse(r, NGX_HTTP_BAD_REQUEST,
                                  "Sec-WebSocket-Key");
    }

    src = key->value;
    dst.data = key_raw;

    if (ngx_decode_base64(&dst, &src) != NGX_OK || dst.len != 16) {
        return ngx_http_im_refuse(r, NGX_HTTP_BAD_REQUEST,
                                  "Sec-WebSocket-Key");
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_BAD_REQUEST;
    }

    blk = ngx_im_slab_alloc(sizeof(ngx_http_im_block_t) + c->socklen);
    if (blk == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pcln = ngx_pool_cleanup_add(c->pool, 0);
    if (pcln == NULL) {
        ngx_im_slab_free(blk);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pcln->handler = ngx_http_im_block_free;
    pcln->data = blk;

    ctx = &blk->ctx;

    ctx->u.request = r;
    ctx->echo = ilcf->echo;

    ctx->detach = ngx_im_event_alloc(ngx_http_im_detach_handler, ctx,
                                     c->log);
    if (ctx->detach == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->detach->cancelable = 1;

    /* Sec-WebSocket-Accept: base64(sha1(key ++ GUID)) */

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, key->value.data, key->value.len);
    ngx_sha1_update(&sha1, NGX_HTTP_IM_GUID, sizeof(NGX_HTTP_IM_GUID) - 1);
    ngx_sha1_final(digest, &sha1);

    src.data = digest;
    src.len = 20;
    dst.data = accept;
    ngx_encode_base64(&dst, &src);

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    ngx_str_set(&r->headers_out.status_line, "101 Switching Protocols");
    r->headers_out.content_length_n = -1;
    r->keepalive = 0;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Upgrade");
    ngx_str_set(&h->value, "websocket");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Sec-WebSocket-Accept");
    h->value.data = ngx_pnalloc(r->pool, dst.len);
    if (h->value.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    h->value.len = dst.len;
    ngx_memcpy(h->value.data, dst.data, dst.len);

    if (ngx_im_session_create(c, &ngx_http_im_transports[ctx->echo],
                              &blk->session)
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    blk->session.receipts = ilcf->receipts ? 1 : 0;

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        ngx_im_session_abort(ngx_http_im_ctx_session(ctx));
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_im_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_im_module);

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }

    if (ngx_http_send_special(r, NGX_HTTP_FLUSH) == NGX_ERROR) {
        return NGX_ERROR;
    }

    c->log->action = "serving im websocket";

    /* small messages both ways: Nagle's delays would be the latency */
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->tcp_nodelay && ngx_tcp_nodelay(c) != NGX_OK) {
        return NGX_ERROR;
    }

    r->read_event_handler = ngx_http_im_read;
    r->write_event_handler = ngx_http_im_write;

    /* the connection outlives this handler */
    r->main->count++;

    /*
     * Never in nginx's queue of reusable connections: when a worker runs
     * short of worker_connections, nginx closes connections from that
     * queue to make room (ngx_drain_connections: "worker_connections are
     * not enough, reusing connections").  The HTTP core puts a connection
     * there only while it waits for a request, and takes it out at the
     * request's first byte, so a WebSocket session is not there already;
     * this says so where the session begins, whatever the HTTP core
     * does before.  Nothing after this point puts it back: the request
     * is freed at login (ngx_http_im_detach_handler) without the HTTP
     * core's keepalive.  The TCP API's stream connections are never
     * reusable.  t/170-worker-connections.t fills a worker to check.
     */
    ngx_reusable_connection(c, 0);

    /* a client may send its first frame with the handshake */

    if (r->header_in->pos < r->header_in->last) {
        ngx_http_im_input(ngx_http_im_ctx_session(ctx), r->header_in->pos,
                          r->header_in->last - r->header_in->pos);
        r->header_in->pos = r->header_in->last;
    }

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);

    } else if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_im_session_close(ngx_http_im_ctx_session(ctx), NGX_IM_CLOSE_ERROR);
    }

    if (ctx->echo) {
        ngx_post_event(ctx->detach, &ngx_posted_events);
    }

    return NGX_DONE;
}


/*
 * After login nothing of the HTTP request is needed: free it and serve the
 * connection directly, as nginx itself does between keepalive requests.
 */

static void
ngx_http_im_logged_in(ngx_im_session_t *s)
{
    ngx_http_im_ctx_t  *ctx = ngx_http_im_session_ctx(s);

    if (ctx->detach && !ctx->detach->posted) {
        if (ctx->detach->timer_set) {
            ngx_del_timer(ctx->detach);
        }

        ngx_post_event(ctx->detach, &ngx_posted_events);
    }
}


static void
ngx_http_im_detach_handler(ngx_event_t *ev)
{
    ngx_chain_t             *cl;
    ngx_connection_t        *c;
    ngx_im_session_t        *s;
    ngx_http_request_t      *r;
    ngx_http_im_ctx_t       *ctx;
    ngx_http_connection_t   *hc;
    ngx_http_im_loc_conf_t  *ilcf;

    ctx = ev->data;

    if (ctx->finalized || ctx->detached) {
        return;
    }

    c = ngx_http_im_ctx_connection(ctx);
    r = ctx->u.request;
    s = ngx_http_im_ctx_session(ctx);

    if (s->ack_due) {
        /* CONNECT_ACK waits for the other holders of the uid: it posts
         * this again (ngx_http_im_logged_in) */
        return;
    }

    if (ngx_im_session_authenticating(s)) {
        /* the login policy is still being applied */
        ngx_add_timer(ev, 50);
        return;
    }

    if (!ngx_im_session_logged_in(s)) {
        /* refused, kicked or closing: it closes soon anyway */
        return;
    }

    if (r->main->count > 1 || r->out || r->postponed || r->posted_requests) {
        /* the auth subrequest or the 101 response is not quite done */
        ngx_add_timer(ev, 50);
        return;
    }

    hc = r->http_connection;
    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_im_module);

    ctx->detaching = 1;

    /* runs its cleanups, frees its pool; the access log line waits for
     * the session's end (ngx_http_im_log_session) */
    r->logged = 1;
    ngx_http_free_request(r, 0);

    c->destroyed = 0;
    c->data = ctx;
    c->log->action = "serving im websocket";
    c->read->handler = ngx_http_im_conn_read;
    c->write->handler = ngx_http_im_conn_write;

    ctx->u.conf = ilcf->conf;
    ctx->detaching = 0;
    ctx->detached = 1;

    /* the header buffers: everything in them was consumed */

    if (c->buffer && c->buffer->start
        && ngx_pfree(c->pool, c->buffer->start) == NGX_OK)
    {
        c->buffer->start = NULL;
        c->buffer->pos = NULL;
        c->buffer->last = NULL;
        c->buffer->end = NULL;
    }

    for (cl = hc->busy; cl; cl = cl->next) {
        (void) ngx_pfree(c->pool, cl->buf->start);
    }

    for (cl = hc->free; cl; cl = cl->next) {
        (void) ngx_pfree(c->pool, cl->buf->start);
    }

    hc->busy = NULL;
    hc->free = NULL;
    hc->nbusy = 0;

    if (c->ssl == NULL) {
        ngx_http_im_own_pool(ctx);

    } else {
        /* the pool stays (it holds the TLS state); the credentials are
         * let go as on a plain connection */
        ngx_im_session_moved(s);
    }

#if (NGX_HTTP_SSL)
    if (c->ssl && c->ssl->buf && c->ssl->buf->start
        && c->ssl->buf->pos == c->ssl->buf->last)
    {
        /* nginx's 16k TLS write buffer: our own chunks take its place */
        if (ngx_pfree(c->pool, c->ssl->buf->start) == NGX_OK) {
            c->ssl->buf->start = NULL;
            c->ssl->buffer = 0;
        }
    }
#endif

    /* not needed any more: this is its handler, nothing touches it after */
    ngx_im_event_free(ctx->detach);
    ctx->detach = NULL;

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }
}


static void
ngx_http_im_conn_read(ngx_event_t *ev)
{
    ngx_connection_t   *c = ev->data;
    ngx_http_im_ctx_t  *ctx = c->data;

    if (ctx->finalized) {
        return;
    }

    if (c->close) {
        /* worker_shutdown_timeout ran out (never a reuse: see
         * ngx_http_im_handler) */
        (void) ngx_im_session_shutdown(ngx_http_im_ctx_session(ctx), 0);
        ctx->finalized = 1;
        ngx_http_im_parser_free(ctx);
        ngx_http_im_close(ctx);
        return;
    }

    ngx_im_session_read(ngx_http_im_ctx_session(ctx));
}


static void
ngx_http_im_conn_write(ngx_event_t *ev)
{
    ngx_connection_t   *c = ev->data;
    ngx_http_im_ctx_t  *ctx = c->data;

    if (ctx->finalized) {
        return;
    }

    ngx_im_output_write(ngx_http_im_ctx_session(ctx));
}


static void
ngx_http_im_read(ngx_http_request_t *r)
{
    ngx_http_im_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_im_module);

    if (ctx == NULL || ctx->finalized) {
        return;
    }

    ngx_im_session_read(ngx_http_im_ctx_session(ctx));
}


static void
ngx_http_im_write(ngx_http_request_t *r)
{
    ngx_http_im_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_im_module);

    if (ctx == NULL || ctx->finalized) {
        return;
    }

    ngx_im_output_write(ngx_http_im_ctx_session(ctx));
}


/* frames */

static ngx_int_t
ngx_http_im_send_frame(ngx_im_session_t *s, ngx_uint_t opcode, u_char *p,
    size_t n)
{
    u_char  hdr[16];
    size_t  hlen;

    hlen = im_ws_header(hdr, (int) opcode, 1, n);

    if (ngx_im_output_send_raw(s, hdr, hlen) != NGX_OK) {
        return NGX_ERROR;
    }

    return n ? ngx_im_output_send_raw(s, p, n) : NGX_OK;
}


/*
 * An idle session keeps no frame parser (docs/decisions/049-*.md): between
 * frames a parser holds nothing that a new one lacks, so each read parses
 * with one on the stack, and only a read that ends inside a frame, or
 * between the fragments of a message, keeps its parser in a record of the
 * session's own (from a list of spares) until a later read ends between
 * messages again.
 */

static ngx_im_spares_t  ngx_http_im_parsers =
    ngx_im_spares(im_ws_parser_t, 1024);


static void
ngx_http_im_input(ngx_im_session_t *s, u_char *p, size_t n)
{
    ngx_http_im_ctx_t  *ctx = ngx_http_im_session_ctx(s);

    im_ws_parser_t   own, *wp;

    wp = ctx->parser;

    if (wp == NULL) {
        im_ws_parser_init(&own, 1, ngx_im_get_conf()->max_message);
        wp = &own;
    }

    ngx_http_im_frames(s, wp, p, n);

    if (ctx->finalized) {
        /* the connection was let go during the read (it never is: closes
         * are posted); the session's own parser went with it */
        if (wp == &own) {
            im_ws_parser_free(wp);
        }

        return;
    }

    ngx_http_im_parser_keep(s, wp);
}


/* the session keeps the parser of a read that ended inside a frame, and
 * lets it go once a read ends between messages */

static void
ngx_http_im_parser_keep(ngx_im_session_t *s, im_ws_parser_t *wp)
{
    ngx_http_im_ctx_t  *ctx = ngx_http_im_session_ctx(s);

    if (im_ws_parser_idle(wp)) {
        /* the buffers of a message read in pieces go too */
        im_ws_parser_free(wp);

        if (ctx->parser) {
            ngx_im_spare_put(&ngx_http_im_parsers, ctx->parser);
            ctx->parser = NULL;
        }

        return;
    }

    if (ctx->parser) {
        /* wp is the session's own already */
        return;
    }

    ctx->parser = ngx_im_spare_get(&ngx_http_im_parsers);

    if (ctx->parser == NULL) {
        im_ws_parser_free(wp);

        /* nothing more can be read from this stream */
        ctx->got_close = 1;
        ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
        return;
    }

    *ctx->parser = *wp;
}


static void
ngx_http_im_parser_free(ngx_http_im_ctx_t *ctx)
{
    if (ctx->parser) {
        im_ws_parser_free(ctx->parser);
        ngx_im_spare_put(&ngx_http_im_parsers, ctx->parser);
        ctx->parser = NULL;
    }
}


static void
ngx_http_im_frames(ngx_im_session_t *s, im_ws_parser_t *wp, u_char *p,
    size_t n)
{
    ngx_http_im_ctx_t  *ctx = ngx_http_im_session_ctx(s);

    size_t          consumed;
    im_ws_rc_t      rc;
    im_ws_event_t   ev;

    while (n) {
        rc = im_ws_parse(wp, p, n, &consumed, &ev);
        p += consumed;
        n -= consumed;

        switch (rc) {

        case IM_WS_AGAIN:
            return;

        case IM_WS_MESSAGE:
            if (ctx->got_close || ngx_im_session_closing(s)) {
                continue;
            }

            if (ctx->echo) {
                if (ev.opcode == IM_WS_OP_TEXT
                    && !im_utf8_valid(ev.data, ev.len))
                {
                    ctx->peer_code = 1007;
                    ngx_im_session_close(s, NGX_IM_CLOSE_PROTOCOL);
                    return;
                }

                (void) ngx_http_im_send_frame(s, ev.opcode, ev.data, ev.len);
                continue;
            }

            if (ev.opcode == IM_WS_OP_TEXT) {
                ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                              "im: text frame refused");
                ngx_im_session_drain(s, NGX_IM_CLOSE_TEXT);
                /* the stream is sound: the peer's close frame is read */
                continue;
            }

            ngx_im_session_message(s, ev.data, ev.len);
            continue;

        case IM_WS_PING:
            if (!ctx->got_close && ngx_im_session_can_send(s)) {
                (void) ngx_http_im_send_frame(s, IM_WS_OP_PONG, ev.data,
                                              ev.len);
            }
            continue;

        case IM_WS_PONG:
            continue;

        case IM_WS_CLOSE:
            if (ctx->got_close) {
                continue;
            }

            ctx->got_close = 1;
            ctx->peer_code = ev.code;

            ngx_im_session_peer_closed(s);
            return;

        default: /* IM_WS_ERROR */
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: websocket protocol error, close %d",
                          (int) ev.code);

            if (ev.code == 1009) {
                ngx_im_session_drain(s, NGX_IM_CLOSE_TOO_BIG);

            } else {
                ctx->peer_code = ev.code;
                ngx_im_session_drain(s, NGX_IM_CLOSE_PROTOCOL);
            }

            /* nothing more can be read from this stream */
            ctx->got_close = 1;
            return;
        }
    }
}


static size_t
ngx_http_im_header(ngx_im_session_t *s, u_char *buf, size_t len)
{
    return im_ws_header(buf, IM_WS_OP_BINARY, 1, len);
}


static ngx_uint_t
ngx_http_im_goodbye(ngx_im_session_t *s, ngx_uint_t reason)
{
    ngx_http_im_ctx_t  *ctx = ngx_http_im_session_ctx(s);

    u_char      body[2];
    ngx_uint_t  code;

    switch (reason) {

    case NGX_IM_CLOSE_PROTOCOL:
        /* 1007 for bad UTF-8 in the echo mode, else 1002 */
        code = (ctx->peer_code == 1007) ? 1007 : 1002;
        break;

    case NGX_IM_CLOSE_SHUTDOWN:
    case NGX_IM_CLOSE_TEXT:
    case NGX_IM_CLOSE_POLICY:
    case NGX_IM_CLOSE_TOO_BIG:
        code = reason;
        break;

    default:
        code = 1000;
        break;
    }

    body[0] = (u_char) (code >> 8);
    body[1] = (u_char) code;

    (void) ngx_http_im_send_frame(s, IM_WS_OP_CLOSE, body, 2);

    /* RFC 6455 7.1.1: the server closes TCP once both closes passed */
    return !ctx->got_close;
}


static ngx_int_t
ngx_http_im_pre_flush(ngx_im_session_t *s)
{
    ngx_http_im_ctx_t   *ctx = ngx_http_im_session_ctx(s);
    ngx_http_request_t  *r;

    r = ngx_http_im_ctx_request(ctx);

    if (r == NULL || r->out == NULL) {
        return NGX_OK;
    }

    /* the 101 response did not leave in one go */

    if (ngx_http_output_filter(r, NULL) == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (r->out) {
        if (ngx_handle_write_event(s->connection->write, 0) != NGX_OK) {
            return NGX_ERROR;
        }
        return NGX_AGAIN;
    }

    return NGX_OK;
}


static void
ngx_http_im_finalize(ngx_im_session_t *s)
{
    ngx_http_im_ctx_t   *ctx = ngx_http_im_session_ctx(s);
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ngx_http_im_ctx_request(ctx);
    c = ngx_http_im_ctx_connection(ctx);

    ctx->finalized = 1;
    ngx_http_im_parser_free(ctx);

    if (ctx->detach) {
        ngx_im_event_free(ctx->detach);
        ctx->detach = NULL;
    }

    if (r == NULL) {
        ngx_http_im_close(ctx);
        return;
    }

    ngx_http_finalize_request(r, NGX_HTTP_CLOSE);
    ngx_http_run_posted_requests(c);
}


/*
 * A plain connection after the login: its pool held the log, the client's
 * address, the HTTP connection state and the freed header buffers, half a
 * kilobyte per idle session.  The block takes the first two and the pool
 * goes.
 */

static void
ngx_http_im_own_pool(ngx_http_im_ctx_t *ctx)
{
    u_char               *p;
    ngx_connection_t     *c;
    ngx_pool_cleanup_t   *cln;
    ngx_http_im_block_t  *blk;

    blk = (ngx_http_im_block_t *) ctx;
    c = ngx_http_im_ctx_connection(ctx);

    p = (u_char *) (blk + 1);

    ngx_memcpy(p, c->sockaddr, c->socklen);
    c->sockaddr = (struct sockaddr *) p;

    /* the text (up to 46 bytes) is made again from the sockaddr where it
     * is used: the error log's handler, the session's end event and the
     * access log line */
    ngx_str_null(&c->addr_text);

    blk->log = *c->log;
    blk->log.handler = ngx_http_im_log_error;
    blk->log.data = c;

    c->log = &blk->log;
    c->read->log = c->log;
    c->write->log = c->log;
    if (ctx->detach) {
        ctx->detach->log = c->log;
    }
    ngx_im_session_moved(ngx_http_im_ctx_session(ctx));

    /* the local address may have been looked up into the pool, and the
     * PROXY protocol header was read into it */
    c->local_sockaddr = NULL;
    c->local_socklen = 0;
    c->proxy_protocol = NULL;
    c->buffer = NULL;

    /* the pool's cleanup would free the block: disarm it */
    for (cln = c->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_im_block_free && cln->data == blk) {
            cln->handler = NULL;
            break;
        }
    }

    ngx_destroy_pool(c->pool);
    c->pool = NULL;
}


/* the connection of a detached session */

static void
ngx_http_im_close(ngx_http_im_ctx_t *ctx)
{
    ngx_connection_t  *c;

    c = ngx_http_im_ctx_connection(ctx);

    ngx_http_im_log_session(ctx);

    if (c->pool) {
        /* the pool's cleanup frees the block */
        ngx_http_close_connection(c);
        return;
    }

#if (NGX_STAT_STUB)
    (void) ngx_atomic_fetch_add(ngx_stat_active, -1);
#endif

    c->destroyed = 1;
    ngx_close_connection(c);
    ngx_im_slab_free(ctx);
}


static void
ngx_http_im_block_free(void *data)
{
    ngx_http_im_ctx_t  *ctx = data;

    if (ctx->detach) {
        ngx_im_event_free(ctx->detach);
    }

    ngx_im_slab_free(ctx);
}


/* nginx ends the request itself: worker shutdown, or an error */

static void
ngx_http_im_cleanup(void *data)
{
    ngx_http_im_ctx_t  *ctx = data;

    if (ctx->finalized || ctx->detaching) {
        return;
    }

    ctx->finalized = 1;

    if (ctx->detach) {
        ngx_im_event_free(ctx->detach);
        ctx->detach = NULL;
    }

    (void) ngx_im_session_shutdown(ngx_http_im_ctx_session(ctx), 0);
    ngx_http_im_parser_free(ctx);
}


/* auth */

static ngx_int_t
ngx_http_im_auth(ngx_im_session_t *s)
{
    ngx_http_im_ctx_t           *ctx = ngx_http_im_session_ctx(s);
    ngx_http_request_t          *r, *sr;
    ngx_http_im_loc_conf_t      *ilcf;
    ngx_http_post_subrequest_t  *ps;

    r = ngx_http_im_ctx_request(ctx);
    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_im_module);

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_im_auth_done;
    ps->data = ctx;

    /*
     * limit_req runs once per main request: a limit_req of the WebSocket
     * location (on the handshake) would make the auth location's own, the
     * one keyed by $im_username, pass everything.  The handshake was
     * limited already; the auth location's limit now has its turn.
     */
    r->main->limit_req_status = 0;

    if (ngx_http_subrequest(r, &ilcf->auth, NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY
                            |NGX_HTTP_SUBREQUEST_BACKGROUND)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* as auth_request does: the subrequest has no body of the client's */
    sr->request_body = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (sr->request_body == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_im_auth_done(ngx_http_request_t *sr, void *data, ngx_int_t rc)
{
    ngx_http_im_ctx_t  *ctx = data;

    double             v;
    cJSON             *json, *result, *uid;
    ngx_buf_t         *b;
    ngx_uint_t         status, code;
    ngx_im_session_t  *s;

    if (ctx->finalized) {
        return rc;
    }

    s = ngx_http_im_ctx_session(ctx);

    if (!ngx_im_session_authenticating(s)) {
        return rc;
    }

    status = sr->headers_out.status;
    code = 2;
    v = 0;

    if (rc != NGX_ERROR && rc < NGX_HTTP_SPECIAL_RESPONSE
        && status >= 200 && status < 300 && sr->out && sr->out->buf)
    {
        b = sr->out->buf;

        json = cJSON_ParseWithLength((char *) b->pos, b->last - b->pos);

        if (json) {
            result = cJSON_GetObjectItemCaseSensitive(json, "result");
            uid = cJSON_GetObjectItemCaseSensitive(json, "uid");

            if (cJSON_IsString(result)
                && ngx_strcmp(result->valuestring, "denied") == 0)
            {
                code = 3;

            } else if (cJSON_IsString(result)
                       && ngx_strcmp(result->valuestring, "pass") == 0)
            {
                if (cJSON_IsNumber(uid)) {
                    v = uid->valuedouble;

                } else if (cJSON_IsString(uid)) {
                    v = (double) ngx_atoi((u_char *) uid->valuestring,
                                          ngx_strlen(uid->valuestring));
                }

                /* uid 0 is the system's: never a user */
                if (v >= 1 && v <= 4294967295.0 && v == (double) (uint32_t) v)
                {
                    code = 0;
                }
            }

            cJSON_Delete(json);
        }
    }

    if (code == 2 && (rc == NGX_HTTP_TOO_MANY_REQUESTS
                      || status == NGX_HTTP_TOO_MANY_REQUESTS))
    {
        /* the auth location's limit_req (limit_req_status 429): a flood
         * of logins is not worth a warning each */
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: login limited by the auth location (429)");

    } else if (code == 2) {
        ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                      "im: user centre gave no valid answer "
                      "(status %ui, rc %i)", status, rc);
    }

    ngx_im_session_auth_done(s, code, code == 0 ? (uint32_t) v : 0);

    if (code == 0 && ctx->detach && !ctx->detach->posted
        && !ctx->detach->timer_set)
    {
        /* after this subrequest is finished with */
        ngx_post_event(ctx->detach, &ngx_posted_events);
    }

    return rc;
}


/* configuration */

static void *
ngx_http_im_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_im_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_im_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->auth = { 0, NULL };
     *     conf->file = { 0, NULL };
     *     conf->line = 0;
     */

    conf->websocket = NGX_CONF_UNSET;
    conf->echo = NGX_CONF_UNSET;
    conf->receipts = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_im_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_im_loc_conf_t *prev = parent;
    ngx_http_im_loc_conf_t *conf = child;

    ngx_uint_t                 here;
    ngx_http_im_main_conf_t   *imcf;
    ngx_http_im_auth_check_t  *check;

    /* im_websocket in this very location (nested ones inherit the flag,
     * not the handler) */
    here = (conf->websocket == 1);

    ngx_conf_merge_value(conf->websocket, prev->websocket, 0);
    ngx_conf_merge_value(conf->echo, prev->echo, 0);
    ngx_conf_merge_value(conf->receipts, prev->receipts, 0);
    ngx_conf_merge_str_value(conf->auth, prev->auth, "");

    if (here && !conf->echo && conf->auth.len == 0) {
        /* every handshake would answer 500: say so at nginx -t */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"im_websocket\" in %V:%ui has no \"im_auth\": "
                           "add \"im_auth /_auth;\" naming the location "
                           "that asks the user centre (see conf/nginx.conf), "
                           "or use \"im_websocket_echo\" for the echo "
                           "test mode", &conf->file, conf->line);
        return NGX_CONF_ERROR;
    }

    if (here && !conf->echo) {
        /* whether a location answers it is known once the trees exist */
        imcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_im_module);

        check = ngx_array_push(&imcf->checks);
        if (check == NULL) {
            return NGX_CONF_ERROR;
        }

        check->cscf = ngx_http_conf_get_module_srv_conf(cf,
                                                        ngx_http_core_module);
        check->clcf = ngx_http_conf_get_module_loc_conf(cf,
                                                        ngx_http_core_module);
        check->auth = conf->auth;
        check->file = conf->file;
        check->line = conf->line;
    }

    return NGX_CONF_OK;
}


/*
 * im_receipts on anywhere makes every node write messages in the stored
 * form that names the sender (ngx_im_store.h): the main configuration
 * learns it here.
 */

static char *
ngx_http_im_receipts(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char           *rv;
    ngx_im_conf_t  *imcf;
    ngx_http_im_loc_conf_t  *ilcf = conf;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (ilcf->receipts) {
        imcf = (ngx_im_conf_t *) ngx_get_conf(cf->cycle->conf_ctx,
                                              ngx_im_module);
        imcf->receipts = 1;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_im_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_im_main_conf_t  *imcf;

    imcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_im_main_conf_t));
    if (imcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&imcf->checks, cf->pool, 2,
                       sizeof(ngx_http_im_auth_check_t))
        != NGX_OK)
    {
        return NULL;
    }

    return imcf;
}


/*
 * An im_auth that no location answers makes every login fail with code 2:
 * "nginx -t" says so instead.  The subrequest runs in the location that
 * would serve its URI; there must be one, other than the WebSocket
 * endpoint itself, and not just "location /" serving files.
 */

static ngx_int_t
ngx_http_im_check_auth(ngx_conf_t *cf)
{
    char                      *why;
    ngx_uint_t                 i;
    ngx_http_im_main_conf_t   *imcf;
    ngx_http_im_auth_check_t  *check;
    ngx_http_core_loc_conf_t  *found;

    imcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_im_module);
    check = imcf->checks.elts;

    for (i = 0; i < imcf->checks.nelts; i++) {

        if (check[i].auth.len == 0 || check[i].auth.data[0] != '/') {
            why = "it must be a URI starting with \"/\" (a named location "
                  "cannot be asked by subrequest)";
            goto failed;
        }

        found = ngx_http_im_locate(check[i].cscf, &check[i].auth);

        if (found == NULL) {
            why = "no location of this server matches it";
            goto failed;
        }

        if (found == check[i].clcf) {
            why = "it is the WebSocket location itself";
            goto failed;
        }

        if (found->name.len == 1 && found->name.data[0] == '/'
            && found->handler == NULL)
        {
            why = "only \"location /\" matches it, and that location "
                  "has no proxy_pass (or other handler) to ask a user "
                  "centre";
            goto failed;
        }

        continue;

    failed:

        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"im_auth %V\" of the \"im_websocket\" in %V:%ui "
                      "names no location that can answer: %s; add "
                      "\"location = %V { ... proxy_pass ...; }\" asking "
                      "the user centre (see conf/nginx.conf)",
                      &check[i].auth, &check[i].file, check[i].line, why,
                      &check[i].auth);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static char *
ngx_http_im_websocket(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_im_loc_conf_t  *ilcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (ilcf->websocket != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    ilcf->websocket = 1;
    ilcf->echo = cmd->offset;
    ilcf->file = cf->conf_file->file.name;
    ilcf->line = cf->conf_file->line;
    ilcf->conf = cf->ctx;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_im_handler;

    if (ngx_im_conf_enable(cf) == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
