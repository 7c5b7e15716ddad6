/*
 * ngx_im_router.h: where a uid's sessions are, and getting messages there.
 *
 * Each worker keeps a table uid -> its local sessions.  Every uid with a
 * local session is subscribed to the Redis channel "im:u:<uid>", so a
 * message published for that uid reaches every worker of every node that
 * holds one of its sessions; a worker or node that dies simply stops being
 * subscribed.  Kicks travel the same way.
 *
 * The router sits below the sessions: it knows a session only as its
 * route (ngx_im_route_t, a part of the session, ngx_im_table.h), and
 * reaches the session layer through the operations that layer gives
 * ngx_im_router_init().
 */

#ifndef _NGX_IM_ROUTER_H_INCLUDED_
#define _NGX_IM_ROUTER_H_INCLUDED_


#include "ngx_im_table.h"
#include "ngx_im_traffic.h"


ngx_int_t ngx_im_router_init(ngx_cycle_t *cycle, ngx_im_router_ops_t *ops);
void ngx_im_router_exit(void);

/* the session is live: it gets the uid's messages from now on;
 * NGX_ERROR: no room (the zone is full) */
ngx_int_t ngx_im_router_join(ngx_im_route_t *r);
void ngx_im_router_leave(ngx_im_route_t *r);

/* hand msg to every recipient; the ticket is served once per recipient */
void ngx_im_router_deliver(ngx_im_msg_t *msg, uint32_t *uids, ngx_uint_t n,
    ngx_im_ticket_t *t);

/* uid "by" acked message msgid of uid "to": a RECEIPT to to's sessions on
 * every worker and node (live ones only; nothing is stored) */
void ngx_im_router_receipt(uint32_t to, const u_char *msgid, uint32_t by);
/* the admin API's recall of msgid for uid: members owing it in a group
 * record (decision 052) are cleared on this worker (the count returned)
 * and on every other worker and node where uid has a session */
ngx_uint_t ngx_im_router_recall(uint32_t uid, const u_char *msgid);
/* a mark on r's uid channel behind an inbox read; NGX_DECLINED: none can
 * come back */
ngx_int_t ngx_im_router_mark(ngx_im_route_t *r, uint64_t nonce);

/*
 * The admin API's publish with a wait: uid's session of client_id acked
 * msg, which carries a watch (stored form 3): a 'W' record goes to the
 * watching worker, handed to this worker's handler when it is the one,
 * else by datagram to a sibling, else on the worker's channel
 * "im:w:<worker id>" that every worker of a node with im_api subscribes.
 */
void ngx_im_router_acked(ngx_im_msg_t *msg, uint32_t uid,
    uint8_t client_id);

/* the receiver of 'W' records addressed to this worker (the API module's,
 * set at configuration); t is valid during the call only */
typedef void (*ngx_im_router_acked_pt)(im_traffic_t *t);

void ngx_im_router_on_acked(ngx_im_router_acked_pt handler);

ngx_uint_t ngx_im_router_users(void);


#endif /* _NGX_IM_ROUTER_H_INCLUDED_ */
