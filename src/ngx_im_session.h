/*
 * ngx_im_session.h: the protocol state machine, as the transports see it.
 *
 * A session is one client connection (WebSocket) or one backend connection
 * (TCP API).  The transport turns bytes into whole protocol messages and
 * back; everything the protocol says happens behind these calls: CONNECT
 * and its timer, login, publishing, pushes and their acks, heartbeats,
 * kicks, the grace close and the close phases.  A transport never touches
 * the session's fields that the state machine owns; it uses the verbs
 * below.
 */

#ifndef _NGX_IM_SESSION_H_INCLUDED_
#define _NGX_IM_SESSION_H_INCLUDED_


#include "ngx_im_state.h"
#include "ngx_im_output.h"


/* in mem when not NULL (the transport frees it), else in the pool */
ngx_im_session_t *ngx_im_session_create(ngx_connection_t *c,
    ngx_im_transport_t *transport, ngx_im_session_t *mem);
/* the connection's log moved and its pool is gone (after the login) */
void ngx_im_session_moved(ngx_im_session_t *s);

/* what the CORE module gives the router: the session layer's side */
ngx_im_router_ops_t *ngx_im_session_router_ops(void);

/* read handler body: recv until EAGAIN, feed the transport */
void ngx_im_session_read(ngx_im_session_t *s);

/* one whole protocol message from the transport */
void ngx_im_session_message(ngx_im_session_t *s, u_char *p, size_t n);

/* code 0 with uid, or 2 / 3 */
void ngx_im_session_auth_done(ngx_im_session_t *s, ngx_uint_t code,
    uint32_t uid);

void ngx_im_session_close(ngx_im_session_t *s, ngx_uint_t reason);
/* as ngx_im_session_close(), naming the cause for the logs (NGX_IM_END_*)
 * where the reason alone does not tell it */
void ngx_im_session_close_why(ngx_im_session_t *s, ngx_uint_t reason,
    ngx_uint_t why);
/* close once every pending publish has had its answer (the framing is
 * broken, or a text frame came): no more input is taken */
void ngx_im_session_drain(ngx_im_session_t *s, ngx_uint_t reason);
/* the peer said goodbye (a WebSocket close frame) */
void ngx_im_session_peer_closed(ngx_im_session_t *s);
/* the worker is going (nginx closes the connection): with wait, answers
 * still due go first (NGX_AGAIN: the session ends by itself later), else
 * a best-effort goodbye to a client; NGX_OK: torn down, the transport
 * closes the connection now */
ngx_int_t ngx_im_session_shutdown(ngx_im_session_t *s, ngx_uint_t wait);
/* the connection is going away under us (nginx closes it): tear down now */
void ngx_im_session_abort(ngx_im_session_t *s);

/* for the logs: why it ended ("kicked", "ping timeout"...; NULL while it
 * lasts), milliseconds since it began, protocol messages in and out */
ngx_str_t *ngx_im_session_end_reason(ngx_im_session_t *s);
#define ngx_im_session_time(s)                                                \
    ((ngx_msec_t) (ngx_current_msec - (s)->connection->start_time))

/* a log variable's text: NGX_IM_FIGURE_TIME "12.345" (seconds with
 * milliseconds, as $request_time), _IN and _OUT the message counts; at
 * most NGX_IM_FIGURE_LEN bytes */
#define NGX_IM_FIGURE_TIME  0
#define NGX_IM_FIGURE_IN    1
#define NGX_IM_FIGURE_OUT   2
#define NGX_IM_FIGURE_LEN   (NGX_TIME_T_LEN + 4)
/* not a figure: the transports' variable tables number the end reason
 * (ngx_im_session_end_reason()) after them */
#define NGX_IM_FIGURE_REASON  3

u_char *ngx_im_session_figure(u_char *p, ngx_im_session_t *s,
    ngx_uint_t which);

/* input is still taken */
#define ngx_im_session_reading(s)  (!ngx_im_session_stopped(s))
/* a framing-level message (a pong) may still be sent */
#define ngx_im_session_can_send(s)  (!ngx_im_session_torn_down(s))
/* live and not closing: the transport may let go of the login's state */
ngx_uint_t ngx_im_session_logged_in(ngx_im_session_t *s);
/* still being authenticated */
#define ngx_im_session_authenticating(s)                                      \
    (!ngx_im_session_stopped(s) && (s)->state == NGX_IM_S_AUTH)


#endif /* _NGX_IM_SESSION_H_INCLUDED_ */
