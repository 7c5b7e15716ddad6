/*
 * ngx_im_table.h: the worker's table of the uids it holds.
 *
 * The floor under the router, the login policy and the channel skip: the
 * record of each uid with a local session (its sessions, its channel's
 * subscription state), a session as these parts see it (ngx_im_route_t),
 * the operations the session layer lends them, and the calls they share:
 * publishing on a uid's channel and mailing the sibling workers.
 */

#ifndef _NGX_IM_TABLE_H_INCLUDED_
#define _NGX_IM_TABLE_H_INCLUDED_


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
    uint8_t                role;        /* as CONNECT gave it */
};


/* what the router asks of the session layer above it, given at worker
 * start */
typedef struct {
    /* NGX_OK: the session took msg (sent, or queued behind the inbox) */
    ngx_int_t   (*push)(ngx_im_route_t *r, ngx_im_msg_t *msg,
                    ngx_uint_t stored);
    /* a login elsewhere replaces this session, or (admin) the admin API
     * logs it out */
    void        (*kick)(ngx_im_route_t *r, ngx_uint_t admin);
    /* read the inbox (again) */
    void        (*sync)(ngx_im_route_t *r);
    /* the login policy's answer: a CONNECT_ACK code */
    void        (*login_done)(ngx_im_route_t *r, ngx_uint_t code);
    /* the session's connection log */
    ngx_log_t  *(*log)(ngx_im_route_t *r);
    /* a delivery receipt (a RECEIPT message), for sessions that want
     * them */
    void        (*receipt)(ngx_im_route_t *r, u_char *p, size_t n);
    /* the mark behind an inbox read is back on the channel */
    void        (*marked)(ngx_im_route_t *r, uint64_t nonce);
    /* another session of the uid is about to read the inbox: the owed
     * pushes the session holds are appended now (ngx_im_owe.h) */
    void        (*owe_out)(ngx_im_route_t *r);
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
    /* a client's 1:1 message may go to its recipient without Redis while
     * appends fail (ngx_im_direct.h) */
    unsigned               direct:1;
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

void ngx_im_table_init(ngx_im_router_ops_t *ops);
ngx_im_router_ops_t *ngx_im_table_ops(void);

ngx_im_user_t *ngx_im_table_find(uint32_t uid);
/* the record of uid, made when there is none; NULL: no memory */
ngx_im_user_t *ngx_im_table_add(uint32_t uid);
void ngx_im_table_remove(ngx_im_user_t *u);
ngx_uint_t ngx_im_table_count(void);
/* in uid order; NULL after the last */
ngx_im_user_t *ngx_im_table_first(void);
ngx_im_user_t *ngx_im_table_next(ngx_im_user_t *u);
/* the first record of a uid at least uid; NULL: none */
ngx_im_user_t *ngx_im_table_from(uint32_t uid);

/* every session of u reads its inbox */
void ngx_im_table_sync(ngx_im_user_t *u);

/* the next number of this worker's one count of logins and deliveries: a
 * session that joined at n had every delivery numbered above n directly,
 * and a delivery's number ('D' Seq) is also its order */
uint64_t ngx_im_table_next_seq(void);
/* a new stamp, never 0 (the alone mark's guard) */
uint32_t ngx_im_table_stamp(void);

/* "im:u:<uid>" */
size_t ngx_im_table_channel(u_char *buf, uint32_t uid);
/* a record to the uid's channel, on the inbox connection: behind every
 * append this worker made */
ngx_int_t ngx_im_table_publish(uint32_t uid, u_char *data, size_t len,
    ngx_im_redis_cb_pt cb, void *cbdata);
/* NGX_OK: handed to at least one sibling worker; NGX_DECLINED: none;
 * NGX_AGAIN: some sibling could not be reached directly */
ngx_int_t ngx_im_table_peers(uint32_t uid, u_char *data, size_t len);


#endif /* _NGX_IM_TABLE_H_INCLUDED_ */
