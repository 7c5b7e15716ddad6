/*
 * ngx_im_redis_pubsub.c: the worker's subscriptions.
 *
 * Owns what goes out on the subscriber connection and what comes back on
 * it: the (un)subscriptions of an event loop pass, batched into one
 * command each and sent before any client's output that depends on them;
 * in cluster mode the sharded ones (an SSUBSCRIBE per channel, to the
 * master of its slot); the replies, PONGs and confirmations, and each
 * message handed to the router (ngx_im_redis_handlers_t).  A channel the
 * cluster unsubscribed by itself (its slot moved) is told to the router
 * too, and the slot map is read again.
 */

#include "ngx_im_redis_int.h"


static ngx_int_t ngx_im_redis_pubsub(ngx_im_redis_conn_t *rc,
    redisReply *reply, const char *kind, size_t klen, redisReply **type,
    redisReply **chan);
static void ngx_im_redis_batch_handler(ngx_event_t *ev);
static ngx_int_t ngx_im_redis_ssub_cmd(ngx_uint_t which, u_char *channel,
    size_t len);


/*
 * The channels to (un)subscribe in this event loop pass, as RESP bulk
 * strings after room for the command's header: one SUBSCRIBE with many
 * channels at the end of the pass, not a command and a write per login
 * (see ngx_im_redis_subscribe).
 */

#define NGX_IM_REDIS_BATCH_MAX   1024    /* channels per command */
#define NGX_IM_REDIS_BATCH_HDR   48      /* "*1025\r\n$11\r\nUNSUBSCRIBE\r\n" */

typedef struct {
    const char          *cmd;
    u_char              *buf;
    size_t               len;       /* from buf + NGX_IM_REDIS_BATCH_HDR */
    size_t               size;
    ngx_uint_t           n;
} ngx_im_redis_batch_t;

static ngx_im_redis_batch_t      ngx_im_redis_batches[2] = {
    { "SUBSCRIBE", NULL, 0, 0, 0 },
    { "UNSUBSCRIBE", NULL, 0, 0, 0 }
};
static ngx_event_t               ngx_im_redis_batch_ev;

/* cluster mode: an SSUBSCRIBE queued since the last flush */
static ngx_uint_t                ngx_im_redis_ssub_new;
/* cluster mode: the subscriber connection that came back, while the
 * router subscribes again (NULL: all of them) */
static ngx_im_redis_conn_t      *ngx_im_redis_sub_back;


void
ngx_im_redis_pubsub_init(ngx_cycle_t *cycle)
{
    ngx_im_redis_batch_ev.data = &ngx_im_redis_dummy;
    ngx_im_redis_batch_ev.handler = ngx_im_redis_batch_handler;
    ngx_im_redis_batch_ev.log = cycle->log;
    ngx_im_redis_batch_reset();
}


/*
 * A subscriber connection came back.  On one Redis it had every channel;
 * in a cluster only those of the slots its master serves, and the other
 * masters' subscriptions went on: the router subscribes again what
 * ngx_im_redis_sub_lost() says was lost, and reads those uids' inboxes
 * again, not every uid's (decision 047).
 */

void
ngx_im_redis_sub_connected(ngx_im_redis_conn_t *rc)
{
    if (ngx_im_redis_handlers->sub_connected == NULL) {
        return;
    }

    ngx_im_redis_sub_back = ngx_im_redis_clustered ? rc : NULL;
    ngx_im_redis_handlers->sub_connected();
    ngx_im_redis_sub_back = NULL;
}


ngx_uint_t
ngx_im_redis_sub_lost(u_char *channel, size_t len)
{
    if (ngx_im_redis_sub_back == NULL) {
        return 1;
    }

    return ngx_im_redis_cluster_conn(NGX_IM_REDIS_SUB,
                                     ngx_im_slot(channel, len))
           == ngx_im_redis_sub_back;
}


void
ngx_im_redis_pubsub_exit(void)
{
    if (ngx_im_redis_batch_ev.posted) {
        ngx_delete_posted_event(&ngx_im_redis_batch_ev);
    }
}

/*
 * The subscriber connection has no bookkeeping per channel either
 * (hiredis's async layer kept a dictionary entry, a key and a callback per
 * channel, about 100 bytes per subscribed uid, and copied and looked up
 * the channel name for every message).  (UN)SUBSCRIBE is appended to the
 * connection's output as plain bytes; the channel name of what Redis sends
 * goes to the router, which has its own table.
 *
 * And the channels of an event loop pass go in one command: a login storm
 * completes hundreds of logins per pass in each worker, and a SUBSCRIBE
 * and a write each (as it was) made Redis read, parse and answer
 * hundreds of tiny requests per worker and pass while every other
 * worker's did the same.  Redis answers a command of n channels with n
 * confirmations, so the router's view (one confirmation per channel) does
 * not change.  The batch leaves at the end of the pass, and a SUBSCRIBE
 * before any session's output (ngx_im_redis_flush_new_subs() from
 * ngx_im_output_write): a CONNECT_ACK never leaves before the SUBSCRIBE
 * of its uid.
 */

void
ngx_im_redis_batch_reset(void)
{
    ngx_uint_t  i;

    for (i = 0; i < 2; i++) {
        ngx_im_redis_batches[i].len = 0;
        ngx_im_redis_batches[i].n = 0;
    }
}


/* the batch as one command in the connection's output */

static ngx_int_t
ngx_im_redis_batch_close(ngx_im_redis_conn_t *rc, ngx_im_redis_batch_t *b)
{
    u_char     hdr[NGX_IM_REDIS_BATCH_HDR], *p;
    size_t     clen, hlen;
    ngx_int_t  rv;

    if (b->n == 0) {
        return NGX_OK;
    }

    clen = ngx_strlen(b->cmd);

    p = ngx_sprintf(hdr, "*%ui\r\n$%uz\r\n%s\r\n", b->n + 1, clen, b->cmd);
    hlen = p - hdr;

    p = b->buf + NGX_IM_REDIS_BATCH_HDR - hlen;
    ngx_memcpy(p, hdr, hlen);

    rv = ngx_im_redis_conn_append(rc, p, hlen + b->len);

    b->n = 0;
    b->len = 0;

    return rv;
}


void
ngx_im_redis_flush_subs(void)
{
    ngx_uint_t            i;
    ngx_im_redis_conn_t  *rc;

    if (ngx_im_redis_clustered) {
        ngx_im_redis_ssub_new = 0;

        for (i = 0; i < ngx_im_redis_cluster_nodes(); i++) {
            rc = &ngx_im_redis_cluster_node(i)->conns[NGX_IM_REDIS_SUB];

            if (rc->state == NGX_IM_REDIS_READY && rc->last > rc->pos) {
                ngx_im_redis_conn_send(rc);
            }
        }

        return;
    }

    if (ngx_im_redis_batches[0].n == 0 && ngx_im_redis_batches[1].n == 0) {
        return;
    }

    rc = &ngx_im_redis_conns[NGX_IM_REDIS_SUB];

    if (rc->state != NGX_IM_REDIS_READY) {
        ngx_im_redis_batch_reset();
        return;
    }

    for (i = 0; i < 2; i++) {
        if (ngx_im_redis_batch_close(rc, &ngx_im_redis_batches[i])
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ALERT, &rc->log, 0,
                          "im redis: %s of a batch not queued",
                          ngx_im_redis_batches[i].cmd);
        }
    }

    /* out now: a partial write is finished by the write event */
    ngx_im_redis_conn_send(rc);
}


/*
 * UNSUBSCRIBEs wait for the end of the pass: no output depends on them.
 * Sent before every output (as they were), each closing session wrote its
 * own: one write to Redis per logout in bench/login.sh, 2,000 of the
 * 2,304 writes on the subscriber connection over 2,000 logins and logouts
 * (decision 034).
 */

void
ngx_im_redis_flush_new_subs(void)
{
    if (ngx_im_redis_batches[0].n || ngx_im_redis_ssub_new) {
        ngx_im_redis_flush_subs();
    }
}


static void
ngx_im_redis_batch_handler(ngx_event_t *ev)
{
    ngx_im_redis_flush_subs();
}


static ngx_int_t
ngx_im_redis_sub_cmd(ngx_uint_t which, u_char *channel, size_t len)
{
    u_char                *p;
    size_t                 need;
    ngx_im_redis_conn_t   *rc;
    ngx_im_redis_batch_t  *b;

    if (ngx_im_redis_clustered) {
        return ngx_im_redis_ssub_cmd(which, channel, len);
    }

    rc = &ngx_im_redis_conns[NGX_IM_REDIS_SUB];

    if (rc->state != NGX_IM_REDIS_READY) {
        return NGX_ERROR;
    }

    b = &ngx_im_redis_batches[which];

    if (b->n == NGX_IM_REDIS_BATCH_MAX
        && ngx_im_redis_batch_close(rc, b) != NGX_OK)
    {
        return NGX_ERROR;
    }

    need = NGX_IM_REDIS_BATCH_HDR + b->len
           + sizeof("$\r\n\r\n") - 1 + NGX_SIZE_T_LEN + len;

    if (need > b->size) {
        need = ngx_max(need * 2, 16384);

        p = ngx_alloc(need, ngx_cycle->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (b->buf) {
            ngx_memcpy(p, b->buf, NGX_IM_REDIS_BATCH_HDR + b->len);
            ngx_free(b->buf);
        }

        b->buf = p;
        b->size = need;
    }

    p = b->buf + NGX_IM_REDIS_BATCH_HDR + b->len;
    p = ngx_im_redis_num(p, '$', len);
    p = ngx_cpymem(p, channel, len);
    *p++ = '\r'; *p++ = '\n';

    b->len = p - (b->buf + NGX_IM_REDIS_BATCH_HDR);
    b->n++;

    ngx_im_redis_conn_sent(rc, 1);

    if (!ngx_im_redis_batch_ev.posted) {
        ngx_post_event(&ngx_im_redis_batch_ev, &ngx_posted_events);
    }

    return NGX_OK;
}


ngx_int_t
ngx_im_redis_subscribe(u_char *channel, size_t len)
{
    return ngx_im_redis_sub_cmd(0, channel, len);
}


ngx_int_t
ngx_im_redis_unsubscribe(u_char *channel, size_t len)
{
    return ngx_im_redis_sub_cmd(1, channel, len);
}


/*
 * What the replies of a subscriber connection have in common, plain or
 * sharded: the watchdog's PONG, and a message of that kind ("message",
 * "smessage") handed to the router.  NGX_DONE: handled (or not pub/sub
 * at all); NGX_DECLINED: an error reply, the caller's; NGX_OK: *type and
 * *chan are a confirmation's, the caller's.
 */

static ngx_int_t
ngx_im_redis_pubsub(ngx_im_redis_conn_t *rc, redisReply *reply,
    const char *kind, size_t klen, redisReply **type, redisReply **chan)
{
    redisReply  *msg;

    if (ngx_im_redis_conn_pong(reply)) {
        /* the watchdog's PING ("+PONG" with no channel subscribed), which
         * has no place in the ring */
        ngx_im_redis_conn_answered(rc);
        return NGX_DONE;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        return NGX_DECLINED;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {
        return NGX_DONE;
    }

    *type = reply->element[0];
    *chan = reply->element[1];
    msg = reply->element[2];

    if ((*type)->type != REDIS_REPLY_STRING
        || (*chan)->type != REDIS_REPLY_STRING)
    {
        return NGX_DONE;
    }

    if ((*type)->len == klen && ngx_strncmp((*type)->str, kind, klen) == 0)
    {
        rc->progress = ngx_current_msec;
        rc->probe = 0;

        if (msg->type == REDIS_REPLY_STRING) {
            ngx_im_redis_handlers->message((u_char *) (*chan)->str,
                                           (*chan)->len,
                                           (u_char *) msg->str, msg->len);
        }

        return NGX_DONE;
    }

    return NGX_OK;
}


void
ngx_im_redis_sub_reply(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    redisReply  *type, *chan;

    switch (ngx_im_redis_pubsub(rc, reply, "message", 7, &type, &chan)) {

    case NGX_DECLINED:
        ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                      "im redis: pub/sub: %*s", reply->len, reply->str);
        return;

    case NGX_OK:
        break;

    default:
        return;
    }

    ngx_im_redis_conn_answered(rc);

    if (type->len == 9 && ngx_strncmp(type->str, "subscribe", 9) == 0) {
        ngx_im_redis_handlers->subscribed((u_char *) chan->str, chan->len);

    } else if (type->len == 11
               && ngx_strncmp(type->str, "unsubscribe", 11) == 0)
    {
        ngx_im_redis_handlers->unsubscribed((u_char *) chan->str,
                                            chan->len);
    }
}


/*
 * Cluster mode: sharded pub/sub.  A shard channel lives in its slot like
 * a key, and one SSUBSCRIBE may name the channels of one slot only, so
 * each uid's channel is a command of its own on the subscriber connection
 * of its slot's master; a pass's commands still leave in one write per
 * master.  Each waits in the connection's ring with its bytes, like any
 * command in cluster mode: a MOVED answer (the map was behind) sends it
 * again to the master named.  A "sunsubscribe" that is not the answer to
 * the oldest command is the cluster's own (the slot moved away): the
 * router subscribes again, at the new owner.
 */

static ngx_int_t
ngx_im_redis_ssub_cmd(ngx_uint_t which, u_char *channel, size_t len)
{
    const char           *argv[2];
    size_t                argvlen[2];
    ngx_im_redis_conn_t  *rc;

    rc = ngx_im_redis_cluster_conn(NGX_IM_REDIS_SUB,
                                   ngx_im_slot(channel, len));
    if (rc == NULL) {
        return NGX_ERROR;
    }

    argv[0] = which ? "SUNSUBSCRIBE" : "SSUBSCRIBE";
    argvlen[0] = which ? 12 : 10;
    argv[1] = (char *) channel;
    argvlen[1] = len;

    if (ngx_im_redis_send(rc, NULL, NULL, 2, argv, argvlen,
                          NGX_IM_REDIS_KEEP)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (which == 0) {
        ngx_im_redis_ssub_new = 1;
    }

    return NGX_OK;
}


/* the oldest command on the connection is SUNSUBSCRIBE of this channel */

static ngx_uint_t
ngx_im_redis_ssub_asked(ngx_im_redis_conn_t *rc, redisReply *chan)
{
    u_char                *p;
    ngx_im_redis_copy_t   *copy;
    ngx_im_redis_queue_t  *q;

    q = rc->data;

    if (q == NULL || q->n == 0) {
        return 0;
    }

    copy = q->ring[q->first].copy;

    if (copy == NULL || copy->len < 24 + chan->len) {
        return 0;
    }

    p = ngx_im_redis_copy_bytes(copy);

    return ngx_strncmp(p + 4, "$12\r\nSUNSUBSCRIBE\r\n", 19) == 0
           && ngx_memcmp(p + copy->len - 2 - chan->len, chan->str,
                         chan->len)
              == 0;
}


void
ngx_im_redis_ssub_reply(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    redisReply  *type, *chan;

    switch (ngx_im_redis_pubsub(rc, reply, "smessage", 8, &type, &chan)) {

    case NGX_DECLINED:
        /* an (S)SUBSCRIBE refused: followed when redirected */
        ngx_log_error(NGX_LOG_INFO, &rc->log, 0,
                      "im redis: pub/sub: %*s", reply->len, reply->str);
        (void) ngx_im_redis_answer(rc, reply);
        return;

    case NGX_OK:
        break;

    default:
        return;
    }

    if (type->len == 10 && ngx_strncmp(type->str, "ssubscribe", 10) == 0) {
        (void) ngx_im_redis_answer(rc, reply);
        ngx_im_redis_handlers->subscribed((u_char *) chan->str, chan->len);
        return;
    }

    if (type->len == 12 && ngx_strncmp(type->str, "sunsubscribe", 12) == 0)
    {
        if (ngx_im_redis_ssub_asked(rc, chan)) {
            (void) ngx_im_redis_answer(rc, reply);

        } else {
            ngx_im_stats->redis_moved_channels++;
            ngx_log_error(NGX_LOG_INFO, &rc->log, 0,
                          "im redis cluster: channel %*s moved away",
                          chan->len, chan->str);
            ngx_im_redis_read_map();
        }

        ngx_im_redis_handlers->unsubscribed((u_char *) chan->str,
                                            chan->len);
    }
}
