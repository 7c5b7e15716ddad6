/*
 * ngx_im_router_notice.c: what travels about a message rather than the
 * message: receipts, the marks behind inbox reads, and watched acks.
 *
 * A receipt goes where a kick goes (the sessions here, the siblings, the
 * uid's channel); a mark ('M') goes on the uid's channel right behind an
 * inbox read and comes back to the reading session; an ack of a watched
 * message ('W') goes to the worker that waits for it, here, by datagram
 * or on that worker's channel.  ngx_im_router.c's dispatch hands the
 * records that arrive to the functions here.
 */

#include "ngx_im_router_int.h"
#include "ngx_im_owe.h"
#include "ngx_im_redis.h"
#include "ngx_im_store.h"
#include "ngx_im_ipc.h"
#include "ngx_im_traffic.h"
#include "ngx_im_direct.h"


static ngx_im_router_acked_pt  ngx_im_router_acked_handler;


/*
 * A mark behind an inbox read (docs/decisions/040): published on the uid's
 * channel right after the LRANGE, on the same connection, it comes back on
 * the subscription behind the copies of every message published before
 * the read, those whose appends the read saw among them.  The session
 * merges the read with what came live once the mark is back, so that an
 * entry of the inbox whose copy is still on its way is not pushed ahead of
 * older copies.  NGX_DECLINED: no subscription in place to bring it back.
 */

ngx_int_t
ngx_im_router_mark(ngx_im_route_t *r, uint64_t nonce)
{
    u_char  buf[IM_TRAFFIC_NOTICE_MAX];
    size_t  len;

    if (r->user == NULL || r->user->sub != NGX_IM_SUB_SUBSCRIBED
        || !ngx_im_redis_ready(NGX_IM_REDIS_SUB))
    {
        return NGX_DECLINED;
    }

    len = im_traffic_build_notice(buf, 'M', ngx_im_worker_id.data,
                                  ngx_im_worker_id.len, &nonce);

    return ngx_im_table_publish(r->uid, buf, len, NULL, NULL);
}


void
ngx_im_router_marked(ngx_im_user_t *u, uint64_t nonce)
{
    ngx_queue_t     *q, *next;
    ngx_im_route_t  *r;

    if (u == NULL) {
        return;
    }

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        r = ngx_queue_data(q, ngx_im_route_t, link);

        ngx_im_table_ops()->marked(r, nonce);
    }
}


/*
 * Receipts go where kicks go: to the sessions here, to the siblings that
 * hold the uid, and on the uid's channel for other nodes (the siblings
 * ignore that copy unless a datagram could not be sent).  The channel's
 * "alone" skip of messages is not applied: a receipt is rarer than a
 * message and opt-in.
 */

void
ngx_im_router_receipt(uint32_t to, const u_char *msgid, uint32_t by)
{
    u_char          rec[IM_SIZE_RECEIPT];
    u_char          buf[IM_TRAFFIC_R_LEN(IM_TRAFFIC_ORIGIN_MAX,
                                         IM_SIZE_RECEIPT)];
    size_t          n, len;
    ngx_im_user_t  *u;

    n = im_build_receipt(rec, msgid, by);

    u = ngx_im_table_find(to);
    if (u) {
        ngx_im_router_receipt_local(u, rec, n);
    }

    len = im_traffic_build_r(buf, ngx_im_worker_id.data, ngx_im_worker_id.len,
                             0, rec, n);

    if (ngx_im_table_peers(to, buf, len) != NGX_OK) {
        buf[IM_TRAFFIC_FLAGS_AT(ngx_im_worker_id.len)] |= IM_TRAFFIC_ALL;
    }

    (void) ngx_im_table_publish(to, buf, len, NULL, NULL);
}


/* a recall of msgid for uid: the owe records here at once, every other
 * worker's and node's where uid has a session (an owing member has one
 * on its record's worker) by the uid's channel */

ngx_uint_t
ngx_im_router_recall(uint32_t uid, const u_char *msgid)
{
    u_char      buf[IM_TRAFFIC_C_LEN(IM_TRAFFIC_ORIGIN_MAX)];
    size_t      len;
    ngx_uint_t  n;

    n = ngx_im_owe_recall(uid, msgid);

    len = im_traffic_build_c(buf, ngx_im_worker_id.data, ngx_im_worker_id.len,
                             0, msgid);

    if (ngx_im_table_peers(uid, buf, len) != NGX_OK) {
        buf[IM_TRAFFIC_FLAGS_AT(ngx_im_worker_id.len)] |= IM_TRAFFIC_ALL;
    }

    (void) ngx_im_table_publish(uid, buf, len, NULL, NULL);

    return n;
}


void
ngx_im_router_receipt_local(ngx_im_user_t *u, u_char *p, size_t n)
{
    ngx_queue_t     *q;
    ngx_im_route_t  *r;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = ngx_queue_next(q))
    {
        r = ngx_queue_data(q, ngx_im_route_t, link);
        ngx_im_table_ops()->receipt(r, p, n);
    }
}


/*
 * Acks of watched messages.  Unwatched messages never come here (the
 * delivery layer tests msg->watch).  The record is small and rare: at
 * most one per session that acks a watched message.
 */

void
ngx_im_router_acked(ngx_im_msg_t *msg, uint32_t uid, uint8_t client_id)
{
    u_char        buf[IM_TRAFFIC_W_LEN(IM_TRAFFIC_ORIGIN_MAX)];
    u_char        channel[7 + NGX_IM_WATCH_MAX];
    size_t        len, argvlen[3];
    uint64_t      now, after;
    ngx_int_t     pid;
    ngx_time_t   *tp;
    const char   *argv[3];
    im_traffic_t  t;

    tp = ngx_timeofday();
    now = (uint64_t) tp->sec * 1000 + tp->msec;
    after = (now > msg->accepted) ? now - msg->accepted : 0;

    if (after > 0xffffffff) {
        after = 0xffffffff;
    }

    len = im_traffic_build_w(buf, ngx_im_worker_id.data,
                             ngx_im_worker_id.len, 0, msg->watch_token, uid,
                             client_id, (uint32_t) after, msg->msgid);

    if (msg->watch_len == ngx_im_worker_id.len
        && ngx_memcmp(msg->watch, ngx_im_worker_id.data, msg->watch_len)
           == 0)
    {
        /* the waiting request is here */
        if (im_traffic_parse(buf, len, &t) == IM_OK) {
            ngx_im_router_watch_acked(&t);
        }

        return;
    }

    /* a sibling: the same node and instance, another pid */

    if (msg->watch_len > ngx_im_node_prefix_len
        && ngx_memcmp(msg->watch, ngx_im_worker_id.data,
                      ngx_im_node_prefix_len)
           == 0)
    {
        pid = ngx_atoi(msg->watch + ngx_im_node_prefix_len,
                       msg->watch_len - ngx_im_node_prefix_len);

        if (pid > 0 && ngx_im_ipc_send((ngx_pid_t) pid, uid, buf, len)
                       == NGX_OK)
        {
            return;
        }
    }

    /* another node, or no datagram: the waiting worker's channel */

    argv[0] = "PUBLISH";
    argvlen[0] = 7;
    argv[1] = (char *) channel;
    argvlen[1] = ngx_im_store_worker_channel(channel, msg->watch,
                                             msg->watch_len);
    argv[2] = (char *) buf;
    argvlen[2] = len;

    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 3, argv,
                            argvlen);
}


void
ngx_im_router_on_acked(ngx_im_router_acked_pt handler)
{
    ngx_im_router_acked_handler = handler;
}


/* a 'W' for this worker: a delivery without Redis, or the API's wait */

void
ngx_im_router_watch_acked(im_traffic_t *t)
{
    if (t->token & NGX_IM_WATCH_DIRECT) {
        ngx_im_direct_acked(t->token);
        return;
    }

    if (ngx_im_router_acked_handler) {
        ngx_im_router_acked_handler(t);
    }
}

