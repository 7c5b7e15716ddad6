/*
 * ngx_im_redis.h: the worker's Redis connections, commands and pub/sub
 * (ngx_im_redis.c, ngx_im_redis_redirect.c, ngx_im_redis_pubsub.c,
 * ngx_im_redis_wait.c, ngx_im_redis_worker.c; what they share is
 * ngx_im_redis_int.h).
 *
 * Each worker keeps up to four connections: "inbox" (commands on the
 * inbox database), "group" (commands on the group database; the same
 * connection as inbox when both databases are equal; with im_group_redis
 * a connection to that Redis, in cluster mode too), "sub" (pub/sub) and,
 * with im_events_stream, "events" (XADDs, on the inbox database, so that
 * messages never wait behind events).
 * Connections reconnect by themselves with backoff; while a connection is
 * down every command fails at once (the callback gets a NULL reply), so
 * callers never wait on a dead Redis.
 */

#ifndef _NGX_IM_REDIS_H_INCLUDED_
#define _NGX_IM_REDIS_H_INCLUDED_


#include "ngx_im.h"
#include <hiredis/hiredis.h>


#define NGX_IM_REDIS_INBOX  0
#define NGX_IM_REDIS_GROUP  1
#define NGX_IM_REDIS_SUB    2
#define NGX_IM_REDIS_EVENTS 3
#define NGX_IM_REDIS_N      4


/* reply is NULL when the command failed (connection down or lost) */
typedef void (*ngx_im_redis_cb_pt)(redisReply *reply, void *data);

/* pub/sub events: a message on a channel, and the confirmation of
 * (un)subscribe; "connected" tells that the sub connection came (back) up
 * and every subscription must be made again */
typedef struct {
    void  (*message)(u_char *channel, size_t clen, u_char *data,
              size_t len);
    void  (*subscribed)(u_char *channel, size_t clen);
    void  (*unsubscribed)(u_char *channel, size_t clen);
    void  (*sub_connected)(void);
    void  (*inbox_connected)(void);
} ngx_im_redis_handlers_t;


ngx_int_t ngx_im_redis_init(ngx_cycle_t *cycle,
    ngx_im_redis_handlers_t *handlers);
void ngx_im_redis_exit(void);

ngx_uint_t ngx_im_redis_ready(ngx_uint_t which);

/* an attempt to connect failed and the connection has not been ready
 * since (not merely connecting at the worker's start, nor reconnecting
 * at once after a loss): logins are refused meanwhile */
ngx_uint_t ngx_im_redis_away(ngx_uint_t which);

/* callback may be NULL (fire and forget); returns NGX_ERROR when the
 * connection is down, without calling the callback */
ngx_int_t ngx_im_redis_cmd(ngx_uint_t which, ngx_im_redis_cb_pt cb,
    void *data, int argc, const char **argv, const size_t *argvlen);

/* the bytes a command takes in the output buffer, at most: argc
 * arguments of bytes in all */
#define NGX_IM_REDIS_CMD_LEN(argc, bytes)                                     \
    (sizeof("*\r\n") - 1 + NGX_INT_T_LEN                                      \
     + (argc) * (sizeof("$\r\n\r\n") - 1 + NGX_SIZE_T_LEN) + (bytes))

/* room for n commands of size bytes in all, made now: the commands sent
 * next in the same call cannot fail but for a connection that is down
 * (a transaction, once MULTI is sent, is so never left half queued) */
ngx_int_t ngx_im_redis_room(ngx_uint_t which, ngx_uint_t n, size_t size);

/* write what is queued for the inbox connection now, not on the next
 * event loop pass */
void ngx_im_redis_flush(void);

/* queued for the end of the pass, one command for all the channels of
 * the pass; ngx_im_redis_flush_subs() sends them now (before output to
 * clients: see ngx_im_redis_pubsub.c) */
ngx_int_t ngx_im_redis_subscribe(u_char *channel, size_t len);
ngx_int_t ngx_im_redis_unsubscribe(u_char *channel, size_t len);
void ngx_im_redis_flush_subs(void);
/* the same, only when a SUBSCRIBE is queued: what a client's output must
 * not overtake (a CONNECT_ACK its uid's SUBSCRIBE) */
void ngx_im_redis_flush_new_subs(void);
/* while the router subscribes again after handlers->sub_connected():
 * whether the channel's subscription went with the connection that came
 * back (always, but in a cluster, where each master has its own) */
ngx_uint_t ngx_im_redis_sub_lost(u_char *channel, size_t len);

/*
 * im_redis_wait N: an append whose acknowledgement must survive the loss
 * of the master marks the pass (ngx_im_redis_wait_mark, when it is
 * queued), and the inbox connection's output of the pass ends with one
 * "WAIT N timeout".  At the append's reply, ngx_im_redis_after_wait()
 * holds the acknowledgement until that WAIT answers: cb then gets the
 * WAIT's reply if N replicas have the writes, NULL if not (or if the
 * connection went).  NGX_DECLINED: the option is off, acknowledge now;
 * NGX_ERROR: cannot hold it, refuse.
 */
void ngx_im_redis_wait_mark(void);
ngx_int_t ngx_im_redis_after_wait(ngx_im_redis_cb_pt cb, void *data);


#endif /* _NGX_IM_REDIS_H_INCLUDED_ */
