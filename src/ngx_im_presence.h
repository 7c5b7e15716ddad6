/*
 * ngx_im_presence.h: the login policy.
 *
 * "im_login_policy kick" (the default) replaces an older session of the
 * same (uid, ClientId) wherever it is: here at once, on other workers and
 * nodes by a 'K' record.  "reject" refuses the new login while such a
 * session lives anywhere, which a presence key in Redis tells.  The admin
 * API's kick travels the same ways as an 'L' record.
 */

#ifndef _NGX_IM_PRESENCE_H_INCLUDED_
#define _NGX_IM_PRESENCE_H_INCLUDED_


#include "ngx_im_table.h"
#include "ngx_im_traffic.h"


/* after a good answer from the user centre: applies the login policy and
 * answers through the router's ops->login_done (now or later) */
void ngx_im_presence_login(ngx_im_route_t *r);
/* periodic: keeps the session's presence key alive (reject policy) */
void ngx_im_presence_refresh(ngx_im_route_t *r);
/* the session leaves: its presence key goes (reject policy) */
void ngx_im_presence_leave(ngx_im_route_t *r);
/* a 'K' record for uid: the sessions it replaces here go */
void ngx_im_presence_kicked(ngx_im_user_t *u, ngx_uint_t own,
    im_traffic_t *t);
/* the admin API: uid's sessions of client_id, or every one of them
 * (IM_TRAFFIC_L_EVERY), are logged out on every worker and node */
void ngx_im_presence_logout(uint32_t uid, uint8_t scope, uint8_t client_id);
/*
 * The admin API's presence: the live entries of im:s:<uid> for each of
 * uids (registered with im_api or im_max_sessions), read in one script;
 * cb gets an array with, per uid in order, an array of field, value
 * pairs: "<node>/<instance>:<pid>:<token>", "<deadline> <login time, us>
 * <ClientId> [<Role>]".
 */
ngx_int_t ngx_im_presence_sessions(uint32_t *uids, ngx_uint_t n,
    ngx_im_redis_cb_pt cb, void *data);
/* an 'L' record for uid from another worker */
void ngx_im_presence_logged_out(ngx_im_user_t *u, im_traffic_t *t);


#endif /* _NGX_IM_PRESENCE_H_INCLUDED_ */
