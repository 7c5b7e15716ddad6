/*
 * ngx_im_hook.h: one HTTP POST at a time to a fixed URL, from a worker.
 *
 * The events' web hook: the URL names an nginx location (normally in the
 * same nginx), which proxies to the business, so that upstreams,
 * keepalive, TLS and timeouts are configured the nginx way.  This client
 * speaks the least HTTP/1.1 that does it: one request per connection,
 * "Connection: close", and only the status line of the answer counts.
 */

#ifndef _NGX_IM_HOOK_H_INCLUDED_
#define _NGX_IM_HOOK_H_INCLUDED_


#include "ngx_im.h"
#include <ngx_event_connect.h>


typedef struct {
    ngx_url_t           url;        /* parsed, with its address */
    ngx_str_t           host;       /* for the Host header */
} ngx_im_hook_conf_t;


/* status: the HTTP status of the answer, or 0 when there was none */
typedef void (*ngx_im_hook_done_pt)(ngx_uint_t status, void *data);


/* "http://host:port/path", resolved at configuration time */
char *ngx_im_hook_parse(ngx_conf_t *cf, ngx_str_t *value,
    ngx_im_hook_conf_t **hook);

/* POST body (application/json); done is called once, later, never from
 * inside this call; NGX_ERROR: could not start (done is not called) */
ngx_int_t ngx_im_hook_post(ngx_im_hook_conf_t *hook, u_char *body,
    size_t len, ngx_msec_t timeout, ngx_im_hook_done_pt done, void *data);

/* the worker exits: a request in flight is dropped without its done */
void ngx_im_hook_abort(void);


#endif /* _NGX_IM_HOOK_H_INCLUDED_ */
