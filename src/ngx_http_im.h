
/*
 * ngx_http_im.h: what the WebSocket transport's files share.
 *
 * Owns the layout of a WebSocket session's context and block
 * (ngx_http_im_module.c makes and frees them; ngx_http_im_log.c reads
 * them for the variables and the access log line at the end).
 */


#ifndef _NGX_HTTP_IM_H_INCLUDED_
#define _NGX_HTTP_IM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_im_session.h"
#include "ngx_im_wsframe.h"


/*
 * Once a session is live the HTTP request (its pool holds the handshake and
 * the auth subrequest, some ten kilobytes) is freed and the connection is
 * served directly.  The context and the session are one allocation of
 * their own (ngx_http_im_block_t); a plain connection then lets its pool
 * go too, and the block keeps what nginx kept there and still needs: the
 * log and the client's address.  A TLS connection keeps its pool, which
 * holds the TLS state.
 */

typedef struct {
    /* one word: the request until the session is detached, then the
     * im_websocket location's configuration, for the access log line at
     * the end (ngx_http_im_ctx_request()) */
    union {
        ngx_http_request_t  *request;
        ngx_http_conf_ctx_t *conf;
    } u;
    /* only while a read has ended inside a frame or a fragmented
     * message; between them a read parses with one of its own
     * (ngx_http_im_input()) */
    im_ws_parser_t         *parser;
    ngx_event_t            *detach;         /* until detached */
    uint16_t                peer_code;
    unsigned                echo:1;
    unsigned                got_close:1;
    unsigned                finalized:1;
    unsigned                detaching:1;
    unsigned                detached:1;
} ngx_http_im_ctx_t;


typedef struct {
    ngx_http_im_ctx_t       ctx;            /* first: the block is ctx */
    ngx_im_session_t        session;        /* its connection is ctx's */
    ngx_log_t               log;            /* once the pool is gone */
    /* then the client's sockaddr; its text is made when needed */
} ngx_http_im_block_t;


/* the session and the connection of a context: both in its block */
#define ngx_http_im_ctx_session(ctx)                                          \
    (&((ngx_http_im_block_t *) (ctx))->session)
#define ngx_http_im_ctx_connection(ctx)                                       \
    (ngx_http_im_ctx_session(ctx)->connection)
#define ngx_http_im_session_ctx(s)                                            \
    ((ngx_http_im_ctx_t *) ((u_char *) (s)                                    \
                            - offsetof(ngx_http_im_block_t, session)))
/* NULL once detached */
#define ngx_http_im_ctx_request(ctx)                                          \
    ((ctx)->detached ? NULL : (ctx)->u.request)


extern ngx_module_t  ngx_http_im_module;


/* ngx_http_im_log.c: the $im_* variables, the error log's context of a
 * detached session, the access log line at a detached session's end */
ngx_int_t ngx_http_im_add_variables(ngx_conf_t *cf);
u_char *ngx_http_im_log_error(ngx_log_t *log, u_char *buf, size_t len);
void ngx_http_im_log_session(ngx_http_im_ctx_t *ctx);

/* ngx_http_im_status.c: the im_status and im_metrics directives */
char *ngx_http_im_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);


#endif /* _NGX_HTTP_IM_H_INCLUDED_ */
