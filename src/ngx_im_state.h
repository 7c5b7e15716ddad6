/*
 * ngx_im_state.h: a session's record, shared by the parts of a session.
 *
 * A session is one client connection (WebSocket) or one backend connection
 * (TCP API).  Its record is read and written by the parts below the state
 * machine: output (ngx_im_output.c), delivery (ngx_im_delivery.c) and
 * publishing (ngx_im_publish.c); the state machine (ngx_im_session.c)
 * drives them and owns the states and the close phases, the login
 * (ngx_im_login.c) the credentials.  Transports see only
 * ngx_im_session.h.
 */

#ifndef _NGX_IM_STATE_H_INCLUDED_
#define _NGX_IM_STATE_H_INCLUDED_


#include "ngx_im.h"
#include "ngx_im_alloc.h"
#include "ngx_im_timer.h"
#include "ngx_im_store.h"
#include "ngx_im_router.h"


typedef struct ngx_im_session_s  ngx_im_session_t;


/* states of the protocol */
#define NGX_IM_S_CONNECT     0   /* waiting for CONNECT */
#define NGX_IM_S_AUTH        1   /* asking the user centre */
#define NGX_IM_S_LIVE        2
#define NGX_IM_S_GRACE       3   /* refused or kicked: the client closes */
#define NGX_IM_S_CLOSING     4   /* saying goodbye, flushing */

/*
 * Close phases, in order; a session only moves forward through them.
 *   NONE          open
 *   DRAINING      to close once every pending publish has its answer
 *   POSTED        the close is posted: torn down on the posted event
 *   FLUSHING      torn down; the goodbye and what was due are being sent
 *   WAITING_PEER  as FLUSHING, and the peer's close frame is awaited
 *   FINAL         finalized at the next close event, whatever is left
 */
#define NGX_IM_CP_NONE          0
#define NGX_IM_CP_DRAINING      1
#define NGX_IM_CP_POSTED        2
#define NGX_IM_CP_FLUSHING      3
#define NGX_IM_CP_WAITING_PEER  4
#define NGX_IM_CP_FINAL         5

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
#define NGX_IM_CLOSE_LEFT       5     /* the client said goodbye
                                         (DISCONNECT or a close frame) */

/*
 * Why a session ended, as the logs say it (ngx_im_session_end_reason()):
 * the first cause known is kept, so a kicked session that the client then
 * closes ended as kicked.  The close reasons above drive the goodbye; these
 * only name the cause, and several of them close with NGX_IM_CLOSE_NORMAL.
 */
#define NGX_IM_END_NONE         0     /* not ended (yet) */
#define NGX_IM_END_LOGOUT       1     /* the client sent DISCONNECT */
#define NGX_IM_END_KICKED       2     /* logged in elsewhere, or kicked */
#define NGX_IM_END_CLIENT       3     /* close frame, end of file */
#define NGX_IM_END_PING         4     /* no PING_RESP in time */
#define NGX_IM_END_REPUSH       5     /* a push unacked after im_repush_max */
#define NGX_IM_END_SLOW         6     /* over im_send_buffer unsent */
#define NGX_IM_END_PROTOCOL     7
#define NGX_IM_END_SHUTDOWN     8     /* the worker is going */
#define NGX_IM_END_ERROR        9
#define NGX_IM_END_REFUSED      10    /* the login was refused */
#define NGX_IM_END_CONNECT      11    /* no CONNECT in time */
#define NGX_IM_END_IDLE         12    /* the TCP API's idle timeout */
#define NGX_IM_END_STALE        13    /* a newer login of the same uid
                                         and ClientId had started later
                                         and won (decision 042) */


typedef struct {
    /* "speaks as the system": uid 0, live from the start, no CONNECT, no
     * pushes, no heartbeats (the TCP API; the WebSocket echo test mode) */
    unsigned   system:1;
    /* the length-framed TCP API (sessions are counted by transport) */
    unsigned   tcp:1;
    /* bytes read from the connection: decode them and call
     * ngx_im_session_message() for each whole message */
    void     (*input)(ngx_im_session_t *s, u_char *p, size_t n);
    /* framing header for an outgoing message of len bytes (<= 16) */
    size_t   (*header)(ngx_im_session_t *s, u_char *buf, size_t len);
    /* ask whoever authenticates: s->cred, s->role, s->route.client_id;
     * the answer comes through ngx_im_session_auth_done() */
    ngx_int_t (*auth)(ngx_im_session_t *s);
    /* framing-level goodbye (a WebSocket close frame); returns 1 when the
     * peer's own goodbye is to be awaited; may be NULL */
    ngx_uint_t (*goodbye)(ngx_im_session_t *s, ngx_uint_t reason);
    /* something to send before the output (the 101 response); may be
     * NULL */
    ngx_int_t (*pre_flush)(ngx_im_session_t *s);
    /* give the connection back to nginx; s is gone afterwards */
    void     (*finalize)(ngx_im_session_t *s);
    /* CONNECT_ACK 0 is out and what the client sent before it answered:
     * the login's state may go; may be NULL */
    void     (*logged_in)(ngx_im_session_t *s);
} ngx_im_transport_t;


/* what the state machine does for the parts below it */
typedef struct {
    /* end the session (deferred to a posted event) */
    void     (*close)(ngx_im_session_t *s, ngx_uint_t reason);
    /* a write went out: room for pushes waiting for it */
    void     (*written)(ngx_im_session_t *s);
    /* all output is out: a closing session may end */
    void     (*flushed)(ngx_im_session_t *s);
    /* the answers due are out: a drain goes on */
    void     (*answered)(ngx_im_session_t *s);
    /* the first inbox read starts: CONNECT_ACK 0 is due now */
    void     (*login_ack)(ngx_im_session_t *s);
} ngx_im_session_ops_t;

extern ngx_im_session_ops_t  *ngx_im_session_ops;


/* from CONNECT until the login is done, in the connection's pool */
typedef struct ngx_im_cred_s {
    ngx_str_t              user;
    ngx_str_t              pass;
    uint64_t               asked;           /* when the user centre was */
    ngx_chain_t           *deferred;        /* input during auth */
    /* waiting for a place among the logins in flight
     * (im_logins_in_flight) */
    ngx_queue_t            queue;
    ngx_im_session_t      *session;
    unsigned               queued:1;
} ngx_im_cred_t;


/* the transports a session may have, by its "transport" field */
#define NGX_IM_TRANSPORTS  4

extern ngx_im_transport_t  *ngx_im_transports[NGX_IM_TRANSPORTS];


/*
 * What a session holds only while something is under way: pushes in
 * flight and waiting, its own publishes awaiting answers, output not yet
 * written, and the events that go with them.  An idle session has none of
 * it, so the session block does not carry it (decision 044): s->busy then
 * points at ngx_im_busy_idle, one record for every idle session, whose
 * queues are empty and stay so.  Reading through s->busy is always right;
 * anything that adds to it first takes a record of the session's own with
 * ngx_im_busy(s) (from a list of spares), and ngx_im_busy_done(s) gives it
 * back once all of it is empty again.
 */
typedef struct {
    /* delivery */
    ngx_queue_t            inflight;        /* pushed, unacked, by deadline */
    ngx_queue_t            waiting;         /* to push when there is room */
    uint32_t               waiting_bytes;   /* of live messages in it */
    uint32_t               out_size;        /* bytes in out */
    /* while there is something to re-push */
    ngx_event_t           *repush;
    struct ngx_im_mark_s  *mark;            /* an inbox read held for its
                                             * mark (ngx_im_delivery.c) */

    /* publishing */
    ngx_queue_t            pubs;            /* own messages, acks in order */

    /* once closing */
    ngx_event_t           *close_ev;

    /* output */
    ngx_queue_t            flush_link;      /* in the list of writers */
    ngx_chain_t           *out;
    ngx_chain_t          **last_out;

    ngx_im_session_t      *session;         /* whose (from flush_link) */
} ngx_im_busy_t;


/*
 * A session is kept for each idle client, so the record is packed: what
 * only a login needs is behind cred, what only a busy session needs is
 * behind busy, a length that im_send_buffer bounds is 32 bits, the
 * transport is an index, and the transport finds its own context from the
 * session's address (it allocates both together).
 */

struct ngx_im_session_s {
    ngx_connection_t      *connection;

    ngx_im_route_t         route;           /* uid, ClientId, token */

    uint8_t                role;
    uint8_t                state;
    uint8_t                close_phase;
    u_char                 drain_cmd;
    uint16_t               close_reason;
    uint16_t               drain_reason;
    uint32_t               unresolved;      /* groups whose members are read */

    unsigned               ping_sent:1;
    /* signs of life since the PING (or since the heartbeat last looked):
     * bytes read from the client, bytes the socket took from us */
    unsigned               heard:1;
    unsigned               wrote:1;
    /* among the worker's logins in flight (ngx_im_login.c) */
    unsigned               in_flight:1;
    unsigned               loading:1;       /* inbox not pushed yet */
    unsigned               resync:1;        /* load again after this one */
    unsigned               loaded:1;        /* the inbox was read once */
    unsigned               ack_due:1;       /* CONNECT_ACK 0 waits for the
                                             * first inbox read */
    unsigned               flush_posted:1;
    unsigned               drain_invalid:1;
    unsigned               kind:2;          /* NGX_IM_T_WS, _WSS, _TCP */
    unsigned               receipts:1;      /* wants RECEIPT messages */
    unsigned               utf16:1;         /* CONNECT counted UTF-16
                                               units (PROTOCOL.md 8) */
    unsigned               end:4;           /* NGX_IM_END_* */
    unsigned               online:1;        /* its "online" event went */
    unsigned               transport:2;     /* in ngx_im_transports[] */

    /* protocol messages, for the logs: whole ones read from the peer,
     * and queued for it (pushes, re-pushes, answers, heartbeats) */
    uint32_t               msgs_in;
    uint32_t               msgs_out;

    /* from CONNECT, in the connection's pool, until the login is done */
    ngx_im_cred_t         *cred;

    /* the one pending timer (connect, ping, grace, close) */
    ngx_im_timer_t         timer;

    /* pushes, publishes and output under way (never NULL) */
    ngx_im_busy_t         *busy;
};


#define ngx_im_session_transport(s)  (ngx_im_transports[(s)->transport])
#define ngx_im_session_system(s)  (ngx_im_session_transport(s)->system)

/* the close is under way (posted or later) */
#define ngx_im_session_closing(s)  ((s)->close_phase >= NGX_IM_CP_POSTED)
/* nothing more is taken from the peer */
#define ngx_im_session_stopped(s)  ((s)->close_phase != NGX_IM_CP_NONE)
/* torn down: no longer in the router, nothing more is pushed */
#define ngx_im_session_torn_down(s)                                           \
    ((s)->close_phase >= NGX_IM_CP_FLUSHING)


/* bytes from the peer wait to be read (in the socket, or decrypted in
 * TLS's buffer): a worker that is behind has not read them yet */
static ngx_inline ngx_uint_t
ngx_im_session_unread(ngx_im_session_t *s)
{
    int                n;
    ngx_connection_t  *c;

    c = s->connection;

#if (NGX_SSL)
    if (c->ssl && SSL_pending(c->ssl->connection) > 0) {
        return 1;
    }
#endif

    return ioctl(c->fd, FIONREAD, &n) != -1 && n > 0;
}


/* the record every idle session shares: never written */
extern ngx_im_busy_t  ngx_im_busy_idle;

/* a record of the session's own (NULL: no memory), and its return once
 * empty (ngx_im_state.c) */
ngx_im_busy_t *ngx_im_busy_take(ngx_im_session_t *s);
void ngx_im_busy_done(ngx_im_session_t *s);

static ngx_inline ngx_im_busy_t *
ngx_im_busy(ngx_im_session_t *s)
{
    return (s->busy != &ngx_im_busy_idle) ? s->busy : ngx_im_busy_take(s);
}


/* the first cause of the end is the one the logs tell */
static ngx_inline void
ngx_im_session_ends(ngx_im_session_t *s, ngx_uint_t why)
{
    if (s->end == NGX_IM_END_NONE) {
        s->end = why;
    }
}


#endif /* _NGX_IM_STATE_H_INCLUDED_ */
