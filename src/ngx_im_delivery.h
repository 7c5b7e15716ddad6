/*
 * ngx_im_delivery.h: messages to a session's client, until acknowledged.
 *
 * A push waits in the session's in-flight queue until the client acks it,
 * and is pushed again every im_repush_interval after its bytes left, at
 * most im_repush_max times; then the session is closed.  Pushes wait their
 * turn behind the inbox after a login and behind output the client has yet
 * to read.
 * Whatever a session did not get acked goes back to the store when it
 * ends (docs/PROTOCOL.md 5).
 */

#ifndef _NGX_IM_DELIVERY_H_INCLUDED_
#define _NGX_IM_DELIVERY_H_INCLUDED_


#include "ngx_im_state.h"


/* from the router: NGX_OK when the session took msg (pushed, or queued to
 * push in order), NGX_DECLINED when it cannot */
ngx_int_t ngx_im_delivery_push(ngx_im_session_t *s, ngx_im_msg_t *msg,
    ngx_uint_t stored);
/* the client acked a push (PUB_ACK, GROUP_PUB_ACK or GROUP_PART_PUB_ACK) */
void ngx_im_delivery_ack(ngx_im_session_t *s, const u_char *msgid);
/* read the inbox (after login, and again when the router says so) and
 * push it in order with what came live meanwhile */
void ngx_im_delivery_sync(ngx_im_session_t *s);
/* the mark behind the session's inbox read is back */
void ngx_im_delivery_marked(ngx_im_session_t *s, uint64_t nonce);
/* room in the output again: push what waits for it */
void ngx_im_delivery_feed(ngx_im_session_t *s);
/* the output is all out: the re-push clock of what it held starts */
void ngx_im_delivery_drained(ngx_im_session_t *s);
/* the session stops taking messages (kicked, or ending): what it holds
 * unacked goes back to the store */
void ngx_im_delivery_release(ngx_im_session_t *s);
/* the owed pushes the session holds go to the inbox now (another session
 * of the uid is about to read it: ngx_im_owe.h) */
void ngx_im_delivery_owe_out(ngx_im_session_t *s);


#endif /* _NGX_IM_DELIVERY_H_INCLUDED_ */
