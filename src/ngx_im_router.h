/*
 * ngx_im_router.h: where a uid's sessions are, and getting messages there.
 *
 * Each worker keeps a table uid -> its local sessions.  Every uid with a
 * local session is subscribed to the Redis channel "im:u:<uid>", so a
 * message published for that uid reaches every worker of every node that
 * holds one of its sessions; a worker or node that dies simply stops being
 * subscribed.  Kicks travel the same way.
 */

#ifndef _NGX_IM_ROUTER_H_INCLUDED_
#define _NGX_IM_ROUTER_H_INCLUDED_


#include "ngx_im.h"
#include "ngx_im_session.h"


ngx_int_t ngx_im_router_init_zone(ngx_cycle_t *cycle);
ngx_int_t ngx_im_router_init(ngx_cycle_t *cycle);
void ngx_im_router_exit(void);

/* after a good answer from the user centre: applies the login policy and
 * answers with ngx_im_session_login_done() (now or later) */
void ngx_im_router_login(ngx_im_session_t *s);
/* the session is live: it gets the uid's messages from now on;
 * NGX_ERROR: no room (the zone is full) */
ngx_int_t ngx_im_router_join(ngx_im_session_t *s);
void ngx_im_router_leave(ngx_im_session_t *s);
/* periodic: keeps the session's presence key alive (reject policy) */
void ngx_im_router_refresh(ngx_im_session_t *s);

/* hand msg to every recipient; ngx_im_pub_served() once per recipient */
void ngx_im_router_deliver(ngx_im_msg_t *msg, uint32_t *uids, ngx_uint_t n,
    ngx_im_pub_t *pub);

ngx_uint_t ngx_im_router_users(void);


void ngx_im_session_login_done(ngx_im_session_t *s, ngx_uint_t code);


#endif /* _NGX_IM_ROUTER_H_INCLUDED_ */
