/*
 * ngx_im_session_int.h: what the three files of the session layer share,
 * lowest first: the session's life (ngx_im_session.c), the login
 * (ngx_im_login.c) and the dispatcher (ngx_im_dispatch.c).  A file calls
 * the ones below it; the life reaches the two above only through
 * ngx_im_session_hooks and ngx_im_session_ops, the login the dispatcher
 * only through ngx_im_session_hooks.  Nothing else includes it:
 * transports see ngx_im_session.h only.
 */

#ifndef _NGX_IM_SESSION_INT_H_INCLUDED_
#define _NGX_IM_SESSION_INT_H_INCLUDED_


#include "ngx_im_session.h"


/* what the login and the dispatcher do for the life below them; set at
 * worker start with ngx_im_session_ops (ngx_im_session_router_ops()) */
typedef struct {
    /* the session's timer ran out during its login */
    void     (*login_timeout)(ngx_im_session_t *s);
    /* the session is torn down: a login under way or waiting gives its
     * place up */
    void     (*login_end)(ngx_im_session_t *s);
    /* one whole message: what the client sent before its CONNECT_ACK,
     * replayed after it */
    void     (*message)(ngx_im_session_t *s, u_char *p, size_t n);
} ngx_im_session_hooks_t;

extern ngx_im_session_hooks_t  *ngx_im_session_hooks;


/* ngx_im_session.c */

/* unique in the worker, and when the login started */
uint64_t ngx_im_session_token(void);
void ngx_im_session_set_state(ngx_im_session_t *s, ngx_uint_t state);
/* the session's one timer (connect, login queue, ping, grace, close) */
void ngx_im_session_add_timer(ngx_im_session_t *s, ngx_msec_t delay);
/* a refusal or a kick: the client is to close first */
void ngx_im_session_grace(ngx_im_session_t *s);
/* a message the protocol refuses: INVALID once the answers due are out,
 * then the close */
void ngx_im_session_violation(ngx_im_session_t *s, u_char cmd);
/* ngx_im_session_ops: a write went out, all is out, the answers due are
 * out */
void ngx_im_session_written(ngx_im_session_t *s);
void ngx_im_session_flushed(ngx_im_session_t *s);
void ngx_im_session_answered(ngx_im_session_t *s);

/* by NGX_IM_T_*: how logs and events name a transport */
extern const char  *ngx_im_session_transports[];


/* ngx_im_login.c */

/* a parsed CONNECT: ask, or wait in the queue of logins */
void ngx_im_login_connect(ngx_im_session_t *s, im_msg_t *m);
/* the session's timer ran out during its login */
void ngx_im_login_timeout(ngx_im_session_t *s);
/* a login under way, or waiting, gives its place up */
void ngx_im_login_end(ngx_im_session_t *s);
/* the login policy's answer: a CONNECT_ACK code */
void ngx_im_login_done(ngx_im_session_t *s, ngx_uint_t code);
/* a message that came before the CONNECT_ACK: kept for after it */
void ngx_im_login_defer(ngx_im_session_t *s, u_char *p, size_t n);
/* the CONNECT_ACK 0 due, now; and with what follows it (the heartbeat,
 * the replay of what was kept, the transport's logged_in) */
void ngx_im_login_ack_now(ngx_im_session_t *s);
void ngx_im_login_ack(ngx_im_session_t *s);


#endif /* _NGX_IM_SESSION_INT_H_INCLUDED_ */
