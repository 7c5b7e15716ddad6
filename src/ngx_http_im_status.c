/*
 * ngx_http_im_status.c: the im_status and im_metrics locations.
 *
 * Whichever worker answers gives the node's counters (ngx_im_metrics.c
 * keeps them in shared memory and writes them): im_status as JSON with
 * the answering worker's id and the node's users, im_metrics in
 * Prometheus's text format.  Access control is the location's own.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_im.h"
#include "ngx_im_dir.h"
#include "ngx_http_im.h"


static ngx_int_t ngx_http_im_counters(ngx_http_request_t *r,
    ngx_uint_t prometheus);


/* im_status and im_metrics: the node's counters, whichever worker answers */

static ngx_int_t
ngx_http_im_status_handler(ngx_http_request_t *r)
{
    return ngx_http_im_counters(r, 0);
}


static ngx_int_t
ngx_http_im_metrics_handler(ngx_http_request_t *r)
{
    return ngx_http_im_counters(r, 1);
}


static ngx_int_t
ngx_http_im_counters(ngx_http_request_t *r, ngx_uint_t prometheus)
{
    ngx_int_t                rc;
    ngx_buf_t               *b;
    ngx_chain_t              out;
    ngx_im_metrics_extra_t   extra;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (prometheus) {
        b = ngx_im_metrics_prometheus(r->pool);
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; version=0.0.4; charset=utf-8");

    } else {
        extra.id = ngx_im_worker_id;
        extra.node_users = ngx_im_dir_users();

        b = ngx_im_metrics_json(r->pool, &extra);
        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* im_status; im_metrics (cmd->offset 1) */

char *
ngx_http_im_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate";
    }

    /* im_metrics: the Prometheus text format; im_status: JSON */
    clcf->handler = cmd->offset ? ngx_http_im_metrics_handler
                                : ngx_http_im_status_handler;

    return NGX_CONF_OK;
}
