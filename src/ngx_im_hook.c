/*
 * ngx_im_hook.c: one HTTP POST at a time to a fixed URL, from a worker.
 *
 * Owns the worker's one hook request: the connection (nginx's peer
 * connection, its timers), the request bytes, and the status line of the
 * answer.  Whoever posts is told the status through a posted event, so a
 * failure that happens at once is reported the same way as a late one.
 */

#include "ngx_im_hook.h"


#define NGX_IM_HOOK_ANSWER  256


typedef struct {
    ngx_peer_connection_t   peer;
    u_char                 *req;        /* the request, heap */
    u_char                 *pos;
    u_char                 *last;
    u_char                  in[NGX_IM_HOOK_ANSWER];
    size_t                  nin;
    ngx_msec_t              timeout;
    ngx_uint_t              status;
    ngx_uint_t              active;
    ngx_im_hook_done_pt     done;
    void                   *data;
    ngx_event_t             finished;
} ngx_im_hook_req_t;


static void ngx_im_hook_write(ngx_event_t *ev);
static void ngx_im_hook_read(ngx_event_t *ev);
static void ngx_im_hook_finish(ngx_uint_t status);
static void ngx_im_hook_finished(ngx_event_t *ev);


static ngx_im_hook_req_t  ngx_im_hook_req;


char *
ngx_im_hook_parse(ngx_conf_t *cf, ngx_str_t *value, ngx_im_hook_conf_t **hook)
{
    ngx_im_hook_conf_t  *h;

    if (value->len <= 7
        || ngx_strncasecmp(value->data, (u_char *) "http://", 7) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": the hook must be an http:// URL (point "
                           "it at an nginx location that proxies to the "
                           "business, for TLS and upstreams)", value);
        return NGX_CONF_ERROR;
    }

    h = ngx_pcalloc(cf->pool, sizeof(ngx_im_hook_conf_t));
    if (h == NULL) {
        return NGX_CONF_ERROR;
    }

    h->url.url.data = value->data + 7;
    h->url.url.len = value->len - 7;
    h->url.default_port = 80;
    h->url.uri_part = 1;

    if (ngx_parse_url(cf->pool, &h->url) != NGX_OK || h->url.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid hook URL \"%V\"%s%s",
                           value, h->url.err ? ": " : "",
                           h->url.err ? h->url.err : "");
        return NGX_CONF_ERROR;
    }

    if (h->url.uri.len == 0) {
        ngx_str_set(&h->url.uri, "/");
    }

    /* Host: as given, with the port unless it is 80 */
    h->host = h->url.host;

    if (h->url.port != 80) {
        h->host.data = ngx_pnalloc(cf->pool, h->url.host.len + 1
                                             + NGX_INT_T_LEN);
        if (h->host.data == NULL) {
            return NGX_CONF_ERROR;
        }

        h->host.len = ngx_sprintf(h->host.data, "%V:%d", &h->url.host,
                                  (int) h->url.port)
                      - h->host.data;
    }

    *hook = h;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_im_hook_post(ngx_im_hook_conf_t *hook, u_char *body, size_t len,
    ngx_msec_t timeout, ngx_im_hook_done_pt done, void *data)
{
    size_t              n;
    ngx_int_t           rc;
    ngx_connection_t   *c;
    ngx_im_hook_req_t  *r;

    r = &ngx_im_hook_req;

    if (r->active) {
        return NGX_ERROR;
    }

    n = sizeof("POST  HTTP/1.1" CRLF "Host: " CRLF
               "Content-Type: application/json" CRLF
               "Content-Length: " CRLF "Connection: close" CRLF
               "User-Agent: ngx_im" CRLF CRLF) - 1
        + hook->url.uri.len + hook->host.len + NGX_SIZE_T_LEN + len;

    r->req = ngx_alloc(n, ngx_cycle->log);
    if (r->req == NULL) {
        return NGX_ERROR;
    }

    r->pos = r->req;
    r->last = ngx_sprintf(r->req, "POST %V HTTP/1.1" CRLF "Host: %V" CRLF
                          "Content-Type: application/json" CRLF
                          "Content-Length: %uz" CRLF "Connection: close" CRLF
                          "User-Agent: ngx_im" CRLF CRLF,
                          &hook->url.uri, &hook->host, len);
    r->last = ngx_cpymem(r->last, body, len);

    r->nin = 0;
    r->status = 0;
    r->timeout = timeout;
    r->done = done;
    r->data = data;
    r->active = 1;

    r->finished.handler = ngx_im_hook_finished;
    r->finished.data = r;
    r->finished.log = ngx_cycle->log;

    ngx_memzero(&r->peer, sizeof(ngx_peer_connection_t));
    r->peer.sockaddr = hook->url.addrs[0].sockaddr;
    r->peer.socklen = hook->url.addrs[0].socklen;
    r->peer.name = &hook->url.addrs[0].name;
    r->peer.get = ngx_event_get_peer;
    r->peer.log = ngx_cycle->log;
    r->peer.log_error = NGX_ERROR_ERR;

    rc = ngx_event_connect_peer(&r->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_im_hook_finish(0);
        return NGX_OK;
    }

    c = r->peer.connection;
    c->data = r;
    c->read->handler = ngx_im_hook_read;
    c->write->handler = ngx_im_hook_write;

    if (rc == NGX_AGAIN) {
        ngx_add_timer(c->write, timeout);
        return NGX_OK;
    }

    ngx_im_hook_write(c->write);

    return NGX_OK;
}


static void
ngx_im_hook_write(ngx_event_t *ev)
{
    ssize_t             n;
    ngx_connection_t   *c;
    ngx_im_hook_req_t  *r;

    c = ev->data;
    r = c->data;

    if (ev->timedout) {
        ngx_log_error(NGX_LOG_ERR, c->log, NGX_ETIMEDOUT,
                      "im hook: %V timed out", r->peer.name);
        ngx_im_hook_finish(0);
        return;
    }

    while (r->pos < r->last) {
        n = c->send(c, r->pos, r->last - r->pos);

        if (n == NGX_ERROR) {
            ngx_im_hook_finish(0);
            return;
        }

        if (n == NGX_AGAIN) {
            if (!ev->timer_set) {
                ngx_add_timer(ev, r->timeout);
            }

            if (ngx_handle_write_event(ev, 0) != NGX_OK) {
                ngx_im_hook_finish(0);
            }

            return;
        }

        r->pos += n;
    }

    if (ev->timer_set) {
        ngx_del_timer(ev);
    }

    ngx_add_timer(c->read, r->timeout);

    if (c->read->ready) {
        ngx_im_hook_read(c->read);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_im_hook_finish(0);
    }
}


/* only the status line matters: "HTTP/1.x NNN" */

static void
ngx_im_hook_read(ngx_event_t *ev)
{
    ssize_t             n;
    ngx_uint_t          status;
    ngx_connection_t   *c;
    ngx_im_hook_req_t  *r;

    c = ev->data;
    r = c->data;

    if (ev->timedout) {
        ngx_log_error(NGX_LOG_ERR, c->log, NGX_ETIMEDOUT,
                      "im hook: %V did not answer", r->peer.name);
        ngx_im_hook_finish(0);
        return;
    }

    for ( ;; ) {
        n = c->recv(c, r->in + r->nin, sizeof(r->in) - r->nin);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(ev, 0) != NGX_OK) {
                ngx_im_hook_finish(0);
            }

            return;
        }

        if (n > 0) {
            r->nin += n;
        }

        if (r->nin >= sizeof("HTTP/1.x NNN") - 1
            && ngx_strncmp(r->in, "HTTP/1.", 7) == 0)
        {
            status = ngx_atoi(r->in + 9, 3);
            ngx_im_hook_finish(status == (ngx_uint_t) NGX_ERROR ? 0 : status);
            return;
        }

        if (n == 0 || n == NGX_ERROR || r->nin == sizeof(r->in)) {
            ngx_im_hook_finish(0);
            return;
        }
    }
}


static void
ngx_im_hook_finish(ngx_uint_t status)
{
    ngx_im_hook_req_t  *r;

    r = &ngx_im_hook_req;

    if (r->peer.connection) {
        ngx_close_connection(r->peer.connection);
        r->peer.connection = NULL;
    }

    if (r->req) {
        ngx_free(r->req);
        r->req = NULL;
    }

    r->status = status;

    ngx_post_event(&r->finished, &ngx_posted_events);
}


static void
ngx_im_hook_finished(ngx_event_t *ev)
{
    ngx_im_hook_req_t  *r = ev->data;

    r->active = 0;
    r->done(r->status, r->data);
}


void
ngx_im_hook_abort(void)
{
    ngx_im_hook_req_t  *r;

    r = &ngx_im_hook_req;

    if (r->finished.posted) {
        ngx_delete_posted_event(&r->finished);
    }

    if (r->peer.connection) {
        ngx_close_connection(r->peer.connection);
        r->peer.connection = NULL;
    }

    if (r->req) {
        ngx_free(r->req);
        r->req = NULL;
    }

    r->active = 0;
}
