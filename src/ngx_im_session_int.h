/*
 * ngx_im_session_int.h: what the state machine (ngx_im_session.c) and the
 * login (ngx_im_login.c) share.  Nothing else includes it: transports see
 * ngx_im_session.h only.
 */

#ifndef _NGX_IM_SESSION_INT_H_INCLUDED_
#define _NGX_IM_SESSION_INT_H_INCLUDED_


#include "ngx_im_session.h"


/* ngx_im_session.c */

void ngx_im_session_set_state(ngx_im_session_t *s, ngx_uint_t state);
/* the session's one timer (connect, login queue, ping, grace, close) */
void ngx_im_session_add_timer(ngx_im_session_t *s, ngx_msec_t delay);
/* a refusal or a kick: the client is to close first */
void ngx_im_session_grace(ngx_im_session_t *s);

/* by NGX_IM_T_*: how logs and events name a transport */
extern const char  *ngx_im_session_transports[];


/* ngx_im_login.c */

/* unique in the worker, and when the login started */
uint64_t ngx_im_login_token(void);
/* a parsed CONNECT: ask, or wait in the queue of logins */
void ngx_im_login_connect(ngx_im_session_t *s, im_msg_t *m);
/* the session's timer ran out during its login */
void ngx_im_login_timeout(ngx_im_session_t *s);
/* a login under way, or waiting, gives its place up */
void ngx_im_login_out(ngx_im_session_t *s);
void ngx_im_login_unqueue(ngx_im_session_t *s);
/* the login policy's answer: a CONNECT_ACK code */
void ngx_im_login_done(ngx_im_session_t *s, ngx_uint_t code);
/* a message that came before the CONNECT_ACK: kept for after it */
void ngx_im_login_defer(ngx_im_session_t *s, u_char *p, size_t n);
/* the CONNECT_ACK 0 due, now; and with what follows it (the heartbeat,
 * the replay of what was kept, the transport's logged_in) */
void ngx_im_login_ack_now(ngx_im_session_t *s);
void ngx_im_login_ack(ngx_im_session_t *s);


#endif /* _NGX_IM_SESSION_INT_H_INCLUDED_ */
