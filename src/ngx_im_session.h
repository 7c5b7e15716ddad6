/*
 * ngx_im_session.h: the protocol state machine shared by both transports.
 *
 * A session is one client connection (WebSocket) or one backend connection
 * (TCP API).  The transport turns bytes into whole protocol messages and
 * back; everything the protocol says happens here: CONNECT and its timer,
 * publishing with in-order acks, pushes with re-push and their acks, the
 * offline inbox after login, heartbeats, kicks and the grace close.
 */

#ifndef _NGX_IM_SESSION_H_INCLUDED_
#define _NGX_IM_SESSION_H_INCLUDED_


#include "ngx_im.h"
#include "ngx_im_store.h"


/* states */
#define NGX_IM_S_CONNECT     0   /* waiting for CONNECT */
#define NGX_IM_S_AUTH        1   /* asking the user centre */
#define NGX_IM_S_LIVE        2
#define NGX_IM_S_GRACE       3   /* refused or kicked: the client closes */
#define NGX_IM_S_CLOSING     4   /* saying goodbye, flushing */

/* why a session ends; the WebSocket close code follows from it */
#define NGX_IM_CLOSE_NORMAL     1000
#define NGX_IM_CLOSE_SHUTDOWN   1001
#define NGX_IM_CLOSE_PROTOCOL   1002
#define NGX_IM_CLOSE_TEXT       1003
#define NGX_IM_CLOSE_POLICY     1008
#define NGX_IM_CLOSE_TOO_BIG    1009
#define NGX_IM_CLOSE_EOF        1     /* the peer went away */
#define NGX_IM_CLOSE_ERROR      2     /* I/O error or no memory */
#define NGX_IM_CLOSE_SLOW       3     /* the peer does not read */
#define NGX_IM_CLOSE_FLUSH      4     /* send what is due, then close */


typedef struct {
    /* bytes read from the connection: decode them and call
     * ngx_im_session_message() for each whole message */
    void     (*input)(ngx_im_session_t *s, u_char *p, size_t n);
    /* framing header for an outgoing message of len bytes (<= 16) */
    size_t   (*header)(ngx_im_session_t *s, u_char *buf, size_t len);
    /* ask whoever authenticates: s->cred, s->role, s->client_id;
     * the answer comes through ngx_im_session_auth_done() */
    ngx_int_t (*auth)(ngx_im_session_t *s);
    /* framing-level goodbye (a WebSocket close frame); may be NULL */
    void     (*goodbye)(ngx_im_session_t *s, ngx_uint_t reason);
    /* something to send before s->out (the 101 response); may be NULL */
    ngx_int_t (*pre_flush)(ngx_im_session_t *s);
    /* give the connection back to nginx; s is gone afterwards */
    void     (*finalize)(ngx_im_session_t *s);
} ngx_im_transport_t;


typedef struct ngx_im_cred_s {
    ngx_str_t              user;
    ngx_str_t              pass;
} ngx_im_cred_t;


struct ngx_im_session_s {
    ngx_connection_t      *connection;
    ngx_im_transport_t    *transport;
    void                  *ctx;             /* the transport's */

    uint32_t               uid;
    uint8_t                role;
    uint8_t                client_id;
    uint8_t                state;
    u_char                 drain_cmd;
    uint16_t               close_reason;
    uint16_t               drain_reason;
    uint32_t               unresolved;      /* groups whose members are read */
    uint64_t               token;           /* unique in this worker */
    uint64_t               live_seq;        /* when it joined the router */

    /* from CONNECT, in the connection's pool, until the login is done */
    struct ngx_im_cred_s  *cred;

    /* router */
    ngx_queue_t            user_link;
    void                  *urec;           /* the router's record */

    ngx_queue_t            inflight;        /* pushed, unacked, by deadline */
    ngx_queue_t            waiting;         /* to push when there is room */
    size_t                 waiting_bytes;   /* of live messages in it */
    ngx_queue_t            pubs;            /* own messages, acks in order */
    ngx_chain_t           *deferred;        /* input during auth */

    /* outstanding Redis work that must not outlive the session */
    struct ngx_im_ref_s   *login_ref;
    struct ngx_im_ref_s   *load_ref;

    /* the one pending timer (connect, ping, grace, close): a place in the
     * worker's queue of its delay (see ngx_im_session_add_timer) */
    ngx_queue_t            timer_link;
    /* only while there is something to re-push, only once closing: an
     * idle session does not carry them (ngx_im_event_alloc) */
    ngx_event_t           *repush;
    ngx_event_t           *close_ev;

    ngx_queue_t            flush_link;      /* in the list of writers */
    ngx_chain_t           *out;
    ngx_chain_t          **last_out;
    size_t                 out_size;

    unsigned               backend:1;       /* TCP API: uid 0, no pushes */
    unsigned               closing:1;       /* close posted */
    unsigned               torn_down:1;
    unsigned               ping_sent:1;
    unsigned               loading:1;       /* inbox not pushed yet */
    unsigned               resync:1;        /* load again after this one */
    unsigned               loaded:1;        /* the inbox was read once */
    unsigned               flush_posted:1;
    unsigned               ws_closing:1;    /* waiting for the peer's close */
    unsigned               finishing:1;     /* finalize on the close event */
    unsigned               client_left:1;   /* DISCONNECT or close frame */
    unsigned               draining:1;      /* closing once answers are out */
    unsigned               drain_invalid:1;
    unsigned               close_wanted:1;  /* on the timer: no close_ev */
    unsigned               timer_set:1;
    uint32_t               deadline;        /* msec, wraps: compare the
                                               difference */
};


/* in mem when not NULL (the transport frees it), else in the pool */
ngx_im_session_t *ngx_im_session_create(ngx_connection_t *c,
    ngx_im_transport_t *transport, void *ctx, ngx_uint_t backend,
    ngx_im_session_t *mem);
/* the connection's log moved and its pool is gone (after the login) */
void ngx_im_session_moved(ngx_im_session_t *s);

/* events needed for a while, from a worker's free list; free deletes the
 * timer and the posting */
ngx_event_t *ngx_im_event_alloc(ngx_event_handler_pt handler, void *data,
    ngx_log_t *log);
void ngx_im_event_free(ngx_event_t *ev);

/* read handler body: recv until EAGAIN, feed the transport */
void ngx_im_session_read(ngx_im_session_t *s);
/* write handler body */
void ngx_im_session_write(ngx_im_session_t *s);

/* one whole protocol message from the transport */
void ngx_im_session_message(ngx_im_session_t *s, u_char *p, size_t n);

/* code 0 with uid, or 2 / 3 */
void ngx_im_session_auth_done(ngx_im_session_t *s, ngx_uint_t code,
    uint32_t uid);

/* queue bytes with the transport's framing; raw skips the framing */
ngx_int_t ngx_im_session_send(ngx_im_session_t *s, u_char *p, size_t n);
ngx_int_t ngx_im_session_send_raw(ngx_im_session_t *s, u_char *p, size_t n);

void ngx_im_session_close(ngx_im_session_t *s, ngx_uint_t reason);
/* close once every pending publish has had its answer; invalid: send
 * <<10, cmd>> after them (a protocol violation) */
void ngx_im_session_drain(ngx_im_session_t *s, ngx_uint_t reason,
    ngx_uint_t invalid, u_char cmd);
/* the connection is going away under us (nginx closes it): tear down now */
void ngx_im_session_abort(ngx_im_session_t *s);

/* from the router */
ngx_int_t ngx_im_session_push(ngx_im_session_t *s, ngx_im_msg_t *msg,
    ngx_uint_t stored);
void ngx_im_session_kick(ngx_im_session_t *s);
void ngx_im_session_sync(ngx_im_session_t *s);

/* a pointer to a session that a late callback may find cleared */
typedef struct ngx_im_ref_s {
    ngx_im_session_t      *session;
} ngx_im_ref_t;


/* publishing: what the router reports back */
typedef struct ngx_im_pub_s  ngx_im_pub_t;

struct ngx_im_pub_s {
    ngx_queue_t            queue;
    ngx_im_session_t      *session;        /* NULL once it is gone */
    u_char                 msgid[IM_MSGID_LEN];
    uint8_t                cmd;             /* the request's command */
    ngx_im_msg_t          *msg;             /* still to hand to the router */
    uint32_t              *to;              /* its recipients, once known */
    ngx_uint_t             nto;
    uint32_t               to1;
    ngx_uint_t             remaining;       /* recipients not yet served */
    unsigned               done:1;
    unsigned               failed:1;
    unsigned               refused:1;       /* refusal, not failure */
    unsigned               resolved:1;      /* recipients known */
};

void ngx_im_pub_served(ngx_im_pub_t *pub, ngx_uint_t ok);


#endif /* _NGX_IM_SESSION_H_INCLUDED_ */
