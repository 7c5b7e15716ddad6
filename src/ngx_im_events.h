/*
 * ngx_im_events.h: what happened, for the business.
 *
 * Session online and offline, a message stored for an offline uid, a
 * message delivered (acked), a stored message dropped: each becomes one
 * JSON object with its time, node and worker, queued in the worker and
 * sent, when the event loop pass ends, to a Redis stream (XADD, consumed
 * with consumer groups) and/or POSTed in batches to a web hook.  Both are
 * off unless configured.  Events never hold up messages: each output has
 * a bounded queue, and what does not fit is dropped and counted.
 */

#ifndef _NGX_IM_EVENTS_H_INCLUDED_
#define _NGX_IM_EVENTS_H_INCLUDED_


#include "ngx_im.h"
#include "ngx_im_redis.h"


/* an event output is on: callers test this before building anything */
extern ngx_uint_t  ngx_im_events_on;


char *ngx_im_events_stream_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_im_events_hook_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

ngx_int_t ngx_im_events_init(ngx_cycle_t *cycle);
void ngx_im_events_exit(void);


/* addr: the client's address as text; transport: "ws", "wss", "tcp";
 * reason: NULL when online */
void ngx_im_events_session(uint32_t uid, ngx_uint_t client_id,
    ngx_uint_t role, ngx_str_t *addr, const char *transport,
    const char *reason, ngx_msec_t duration);

/* gid: 0 for a 1:1 message */
void ngx_im_events_stored(const u_char *msgid, uint32_t from, uint32_t to,
    uint32_t gid, size_t size);

/* after: milliseconds from acceptance to the ack, or -1 when unknown */
void ngx_im_events_delivered(const u_char *msgid, uint32_t uid,
    ngx_uint_t client_id, ngx_msec_int_t after);

/* msgid may be NULL (an entry no reader understands, or the oldest ones
 * trimmed off a full inbox: then count says how many) */
void ngx_im_events_dropped(const u_char *msgid, uint32_t uid,
    const char *reason, ngx_uint_t count);


#endif /* _NGX_IM_EVENTS_H_INCLUDED_ */
