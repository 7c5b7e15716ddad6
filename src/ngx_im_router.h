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
 * route (ngx_im_route_t, a part of the session), and reaches the session
 * layer through the operations that layer gives ngx_im_router_init().
 */

#ifndef _NGX_IM_ROUTER_H_INCLUDED_
#define _NGX_IM_ROUTER_H_INCLUDED_


#include "ngx_im.h"
#include "ngx_im_alloc.h"
#include "ngx_im_store.h"


typedef struct ngx_im_user_s    ngx_im_user_t;
typedef struct ngx_im_route_s   ngx_im_route_t;
typedef struct ngx_im_ticket_s  ngx_im_ticket_t;


/* a session as the router sees it */
struct ngx_im_route_s {
    ngx_queue_t            link;        /* in its uid's record */
    ngx_im_user_t         *user;        /* NULL while not joined */
    /* a Redis reply under way that needs the session: the login's
     * presence claim, later an inbox read (never both at once) */
    ngx_im_ref_t          *ref;
    uint64_t               token;       /* unique in this worker */
    uint64_t               live_seq;    /* when it joined */
    uint32_t               uid;
    uint8_t                client_id;
};


/* what the router asks of the session layer above it */
typedef struct {
    /* NGX_OK: the session took msg (sent, or queued behind the inbox) */
    ngx_int_t   (*push)(ngx_im_route_t *r, ngx_im_msg_t *msg,
                    ngx_uint_t stored);
    /* a login elsewhere replaces this session */
    void        (*kick)(ngx_im_route_t *r);
    /* read the inbox (again) */
    void        (*sync)(ngx_im_route_t *r);
    /* the login policy's answer: a CONNECT_ACK code */
    void        (*login_done)(ngx_im_route_t *r, ngx_uint_t code);
    /* the session's connection log */
    ngx_log_t  *(*log)(ngx_im_route_t *r);
} ngx_im_router_ops_t;


/*
 * A delivery in progress: the router counts its recipients down as each
 * is served (pushed, stored or handed on) and calls done at the last one;
 * failed tells that some recipient could not be served.
 */
struct ngx_im_ticket_s {
    ngx_uint_t             remaining;
    void                 (*done)(ngx_im_ticket_t *t);
    unsigned               failed:1;
};


static ngx_inline void
ngx_im_ticket_served(ngx_im_ticket_t *t, ngx_uint_t ok)
{
    if (!ok) {
        t->failed = 1;
    }

    if (--t->remaining == 0) {
        t->done(t);
    }
}


ngx_int_t ngx_im_router_init(ngx_cycle_t *cycle, ngx_im_router_ops_t *ops);
void ngx_im_router_exit(void);

/* after a good answer from the user centre: applies the login policy and
 * answers through ops->login_done (now or later) */
void ngx_im_router_login(ngx_im_route_t *r);
/* the session is live: it gets the uid's messages from now on;
 * NGX_ERROR: no room (the zone is full) */
ngx_int_t ngx_im_router_join(ngx_im_route_t *r);
void ngx_im_router_leave(ngx_im_route_t *r);
/* periodic: keeps the session's presence key alive (reject policy) */
void ngx_im_router_refresh(ngx_im_route_t *r);

/* hand msg to every recipient; the ticket is served once per recipient */
void ngx_im_router_deliver(ngx_im_msg_t *msg, uint32_t *uids, ngx_uint_t n,
    ngx_im_ticket_t *t);

ngx_uint_t ngx_im_router_users(void);


/*
 * For the router's own parts (ngx_im_presence.c, ngx_im_alone.c): the
 * worker's record of a uid it holds, and the calls they share.
 */

#define NGX_IM_SUB_NONE           0
#define NGX_IM_SUB_SUBSCRIBING    1
#define NGX_IM_SUB_SUBSCRIBED     2
#define NGX_IM_SUB_UNSUBSCRIBING  3

typedef struct ngx_im_hold_s  ngx_im_hold_t;

struct ngx_im_user_s {
    ngx_rbtree_node_t      node;        /* key: uid */
    ngx_queue_t            sessions;    /* their routes */
    uint32_t               stamp;       /* changes when "alone" may not */
    uint32_t               ttl_set;     /* the inbox's TTL given then */
    uint32_t               nsessions;
    unsigned               sub:2;
    unsigned               alone:1;     /* no other worker holds the uid */
    ngx_im_hold_t         *hold;        /* a newcomer waits for answers */
};

ngx_im_user_t *ngx_im_router_find(uint32_t uid);
/* a record to the uid's channel, on the inbox connection: behind every
 * append this worker made */
ngx_int_t ngx_im_router_publish(uint32_t uid, u_char *data, size_t len,
    ngx_im_redis_cb_pt cb, void *cbdata);
/* NGX_OK: handed to at least one sibling worker; NGX_DECLINED: none;
 * NGX_AGAIN: some sibling could not be reached directly */
ngx_int_t ngx_im_router_peers(uint32_t uid, u_char *data, size_t len);
/* every session of u reads its inbox */
void ngx_im_router_sync_user(ngx_im_user_t *u);
/* sessions that joined up to this number had what was delivered since */
uint64_t ngx_im_router_seq(void);
uint32_t ngx_im_router_stamp(void);
ngx_im_router_ops_t *ngx_im_router_ops(void);


#endif /* _NGX_IM_ROUTER_H_INCLUDED_ */
