/*
 * ngx_im_router_int.h: what the router's files share, and nothing above
 * the router sees.
 *
 * ngx_im_router.c (the uids, their subscriptions, the dispatch of what
 * arrives), ngx_im_router_tx.c (a message to its recipients) and
 * ngx_im_router_notice.c (receipts, marks, watched acks).
 */

#ifndef _NGX_IM_ROUTER_INT_H_INCLUDED_
#define _NGX_IM_ROUTER_INT_H_INCLUDED_


#include "ngx_im_router.h"


/* this worker's id hashed: the origin of its messages (ngx_im_msg_t) */
extern uint32_t  ngx_im_router_origin;

/* msg to u's sessions here, but those that joined at or before Seq
 * "after" (they had it directly); how many took it */
ngx_uint_t ngx_im_router_local(ngx_im_user_t *u, ngx_im_msg_t *msg,
    ngx_uint_t stored, uint64_t after);

/* the dispatch's records: a session's mark is back, a receipt for u's
 * sessions, a 'W' addressed to this worker */
void ngx_im_router_marked(ngx_im_user_t *u, uint64_t nonce);
void ngx_im_router_receipt_local(ngx_im_user_t *u, u_char *p, size_t n);
void ngx_im_router_watch_acked(im_traffic_t *t);


#endif /* _NGX_IM_ROUTER_INT_H_INCLUDED_ */
