/*
 * ngx_im_redis_conn.h: one connection to one Redis, owned by nginx.
 *
 * A connection is given a server (addresses tried in turn, AUTH, TLS) and
 * a database; it connects with ngx_event_connect_peer, does the TLS
 * handshake through nginx's OpenSSL, sends AUTH and SELECT, and then
 * carries the owner's bytes out and hands the owner each reply that
 * comes back, parsed by hiredis's reader.  It watches itself on its own
 * timers (connecting too long, commands unanswered: decision 030) and
 * reconnects with backoff.  What the commands mean, and which callback a
 * reply belongs to, is the owner's business (ngx_im_redis_worker.c and
 * ngx_im_redis.c); a Sentinel or a Cluster layer would own several of
 * these.
 */

#ifndef _NGX_IM_REDIS_CONN_H_INCLUDED_
#define _NGX_IM_REDIS_CONN_H_INCLUDED_


#include "ngx_im.h"
#include <ngx_event_connect.h>
#include <hiredis/hiredis.h>


#define NGX_IM_REDIS_DOWN        0
#define NGX_IM_REDIS_CONNECTING  1
#define NGX_IM_REDIS_HANDSHAKE   2
#define NGX_IM_REDIS_SETUP       3
#define NGX_IM_REDIS_READY       4


typedef struct ngx_im_redis_conn_s   ngx_im_redis_conn_t;
typedef struct ngx_im_redis_chunk_s  ngx_im_redis_chunk_t;


/* where and how to connect: one per Redis, shared by its connections */
typedef struct {
    ngx_addr_t          *addrs;      /* tried in turn on failure */
    ngx_uint_t           naddrs;     /* 0: not known yet (a Sentinel's
                                      * master); the owner connects later */
    ngx_str_t            user;       /* empty: AUTH password alone */
    ngx_str_t            password;   /* empty: no AUTH */
    ngx_msec_t           timeout;
#if (NGX_SSL)
    ngx_ssl_t           *ssl;        /* NULL: plain TCP */
#endif
    ngx_str_t            ssl_name;   /* SNI and the name verified */
    ngx_flag_t           ssl_verify;
    /* ROLE after the login: a server that is not a master is refused */
    ngx_flag_t           master;
} ngx_im_redis_server_t;


/* what the owner does when the connection comes up, answers, goes */
typedef struct {
    void        (*ready)(ngx_im_redis_conn_t *rc);
    /* NGX_ERROR drops the connection (a reply to no command) */
    ngx_int_t   (*reply)(ngx_im_redis_conn_t *rc, redisReply *reply);
    /* after the connection closed: fail what is pending */
    void        (*down)(ngx_im_redis_conn_t *rc);
    /* the watchdog's PING, queued the owner's way */
    ngx_int_t   (*ping)(ngx_im_redis_conn_t *rc);
    /* the output of a ready connection is about to leave: the owner's
     * last word of the pass (a WAIT behind the appends); may be NULL */
    void        (*flush)(ngx_im_redis_conn_t *rc);
} ngx_im_redis_conn_handlers_t;


struct ngx_im_redis_conn_s {
    ngx_uint_t                     state;
    ngx_connection_t              *connection;
    ngx_peer_connection_t          peer;
    ngx_im_redis_server_t         *server;
    ngx_uint_t                     addr;       /* index in server->addrs */
    ngx_int_t                      db;         /* -1: no SELECT */
    const char                    *name;       /* "inbox", in log lines */

    ngx_im_redis_conn_handlers_t  *handlers;
    void                          *data;       /* the owner's */
    ngx_uint_t                     index;      /* the owner's */

    ngx_uint_t                     setup;      /* AUTH/SELECT replies due */
    ngx_uint_t                     pending;    /* requests unanswered */
    ngx_msec_t                     progress;   /* last sign of life */
    ngx_msec_t                     probe;      /* a PING sent then, or 0 */
    ngx_msec_t                     backoff;

    ngx_event_t                    reconnect;
    ngx_event_t                    watch;

    /* output: bytes from pos to last leave next */
    u_char                        *start;
    u_char                        *pos;
    u_char                        *last;
    u_char                        *end;

    redisReader                   *reader;
    ngx_im_redis_chunk_t          *arena;      /* the reply being read */

    ngx_log_t                      log;

    unsigned                       exiting:1;
    /* an attempt to connect failed since it was last ready: Redis is
     * away (not just starting, nor a lost connection coming back) */
    unsigned                       failed:1;
};


void ngx_im_redis_conn_init(ngx_im_redis_conn_t *rc,
    ngx_im_redis_server_t *server, ngx_int_t db, const char *name,
    ngx_im_redis_conn_handlers_t *handlers, void *data);
void ngx_im_redis_conn_connect(ngx_im_redis_conn_t *rc);

/* room for at least size bytes of output; commit what was written */
u_char *ngx_im_redis_conn_reserve(ngx_im_redis_conn_t *rc, size_t size);
void ngx_im_redis_conn_commit(ngx_im_redis_conn_t *rc, u_char *last);
ngx_int_t ngx_im_redis_conn_append(ngx_im_redis_conn_t *rc, u_char *data,
    size_t len);

/* n more requests await replies (the watchdog looks after them) */
void ngx_im_redis_conn_sent(ngx_im_redis_conn_t *rc, ngx_uint_t n);

/* the watchdog's PING on a subscribed connection, and its answer */
ngx_int_t ngx_im_redis_conn_ping(ngx_im_redis_conn_t *rc);
ngx_uint_t ngx_im_redis_conn_pong(redisReply *reply);

/* a request was answered */
static ngx_inline void
ngx_im_redis_conn_answered(ngx_im_redis_conn_t *rc)
{
    if (rc->pending) {
        rc->pending--;
    }

    rc->progress = ngx_current_msec;
    rc->probe = 0;
}

/*
 * The clock of Redis's latency figure, read once per event loop pass for
 * the commands (they all leave at its end) and once per read for the
 * replies: two system-call-free clock reads per batch rather than two per
 * command.
 */
extern uint64_t  ngx_im_redis_conn_clock;

static ngx_inline uint64_t
ngx_im_redis_conn_now(void)
{
    if (ngx_im_redis_conn_clock == 0) {
        ngx_im_redis_conn_clock = ngx_im_metrics_now();
    }

    return ngx_im_redis_conn_clock;
}

/* write the output now rather than at the end of the pass */
void ngx_im_redis_conn_send(ngx_im_redis_conn_t *rc);

/* drop a ready connection (a protocol error); it reconnects */
void ngx_im_redis_conn_drop(ngx_im_redis_conn_t *rc);

/* the server's address changed (a Sentinel's failover): drop what is
 * connected and connect now, to the first address, with no backoff */
void ngx_im_redis_conn_restart(ngx_im_redis_conn_t *rc);

/* worker exit: what is queued leaves as far as the socket takes it, then
 * the connection closes for good */
void ngx_im_redis_conn_exit(ngx_im_redis_conn_t *rc);


#endif /* _NGX_IM_REDIS_CONN_H_INCLUDED_ */
