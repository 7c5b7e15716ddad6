/*
 * ngx_im_store.h: messages as the server keeps them, and where Redis keeps
 * them.
 *
 * A message is held once, reference counted, in its stored form
 * <<1, Expire:32, Push>> where Push is the exact bytes every recipient gets
 * (<<3, MsgId, Len, P>>, <<5, Gid, MsgId, ...>> or <<11, ...>>).  The same
 * bytes go to Redis, so a message read back from the inbox is pushed exactly
 * as it was the first time.  The inbox of a uid is the list
 * "im:inbox:<uid>", oldest first.
 */

#ifndef _NGX_IM_STORE_H_INCLUDED_
#define _NGX_IM_STORE_H_INCLUDED_


#include "ngx_im.h"
#include "ngx_im_redis.h"


/*
 * Version 2 of the stored form, <<2, Expire:32, From:32, Accepted:64,
 * Push>>, also keeps the sender's uid and when the message was accepted
 * (milliseconds since the epoch), for delivery receipts and events.  It
 * is written only while receipts (im_receipts) or events (im_events_*)
 * are on: builds from before it read an entry of version 2 as unreadable
 * and drop it, so every node must run a build that reads it first.
 */
#define NGX_IM_ENTRY_HDR     5
#define NGX_IM_ENTRY_HDR_V2  17

/*
 * Version 3, <<3, Expire:32, From:32, Accepted:64, WatchLen:8, Watch,
 * Token:64, Push>>, is version 2 with a "watch": the id of the worker
 * that waits for the recipients' acks (ngx_im_worker_id) and its token
 * for the request, so that an ack anywhere reaches it ('W' records,
 * ngx_im_traffic.h).  Only a message of the admin API published with a
 * "wait" is written so; every other message keeps version 1 or 2, and
 * costs what it did.  Builds from before version 3 read such an entry as
 * unreadable and drop it, as they did version 2.
 */
#define NGX_IM_ENTRY_HDR_V3(wlen)  (NGX_IM_ENTRY_HDR_V2 + 1 + (wlen) + 8)
#define NGX_IM_WATCH_MAX           255
/* the token of a watch set by ngx_im_direct.c: a copy delivered without
 * Redis, never stored */
#define NGX_IM_WATCH_DIRECT        ((uint64_t) 1 << 63)
#define ngx_im_msg_direct(msg)                                                \
    ((msg)->watch && ((msg)->watch_token & NGX_IM_WATCH_DIRECT))


struct ngx_im_msg_s {
    ngx_uint_t       refs;
    u_char          *msgid;      /* into push */
    u_char          *push;       /* entry + the header */
    size_t           push_len;
    size_t           entry_len;
    time_t           expire;
    uint32_t         from;       /* version 2 only; 0 otherwise */
    uint64_t         accepted;   /* version 2 only, ms */
    u_char          *watch;      /* version 3 only, into entry; or NULL */
    size_t           watch_len;
    uint64_t         watch_token;
    /* where and when it was delivered from: a worker's id hashed (0 for
     * an inbox entry) and its Seq ('D' records), which orders a session's
     * queue (ngx_im_delivery_push) */
    uint64_t         seq;
    uint32_t         origin;
    /* this worker's records of members who owe an ack for it, with no
     * inbox append (ngx_im_owe.h), or NULL */
    struct ngx_im_owe_s  *owe;
    u_char           entry[1];
};




/* the push is built by the caller into msg->push after the call */
ngx_im_msg_t *ngx_im_msg_alloc(size_t hdr, size_t push_len);
size_t ngx_im_msg_hdr(void);
ngx_im_msg_t *ngx_im_msg_from_entry(u_char *entry, size_t len);
void ngx_im_msg_finish(ngx_im_msg_t *msg, time_t expire);
/* a message allocated with NGX_IM_ENTRY_HDR_V3(watch->len): who waits for
 * its acks, before ngx_im_msg_finish() */
void ngx_im_msg_watch(ngx_im_msg_t *msg, ngx_str_t *watch, uint64_t token);

static ngx_inline ngx_im_msg_t *
ngx_im_msg_ref(ngx_im_msg_t *msg)
{
    msg->refs++;
    return msg;
}

static ngx_inline void
ngx_im_msg_unref(ngx_im_msg_t *msg)
{
    if (--msg->refs == 0) {
        ngx_free(msg);
    }
}


/*
 * Append msg to the inbox of uid (trimmed to im_offline_max, expiring after
 * im_offline_ttl); cb gets the reply of the append, to be judged by
 * ngx_im_store_pushed().  NGX_ERROR: Redis is down, cb is not called.
 * ttl_set, when not NULL, is the caller's memory of when it last gave this
 * inbox its TTL: the TTL is then given again only when due.
 */
/* a uid's keys and channels (with the uid as hash tag in cluster mode);
 * buf holds NGX_IM_STORE_KEY_LEN bytes */
#define NGX_IM_STORE_KEY_LEN  48
size_t ngx_im_store_key(u_char *buf, uint32_t uid);
size_t ngx_im_store_dead_key(u_char *buf, uint32_t uid);
size_t ngx_im_store_strikes_key(u_char *buf, uint32_t uid);
size_t ngx_im_store_presence_key(u_char *buf, uint32_t uid, int client_id);
size_t ngx_im_store_sessions_key(u_char *buf, uint32_t uid);
size_t ngx_im_store_uid_channel(u_char *buf, uint32_t uid);
ngx_int_t ngx_im_store_channel_uid(u_char *channel, size_t len);
/* the worker's channel: buf holds len + 7 bytes */
size_t ngx_im_store_worker_channel(u_char *buf, u_char *id, size_t len);

ngx_int_t ngx_im_store_push(uint32_t uid, ngx_im_msg_t *msg,
    uint32_t *ttl_set, ngx_im_redis_cb_pt cb, void *data);
ngx_int_t ngx_im_store_pushed(redisReply *reply);
/* the append of msg to uid's inbox just before the first copy of pivot's
 * entry, or at the end when there is none (a late append that must keep
 * its place: ngx_im_owe.h); cb as ngx_im_store_push()'s */
ngx_int_t ngx_im_store_insert(uint32_t uid, ngx_im_msg_t *msg,
    ngx_im_msg_t *pivot, ngx_im_redis_cb_pt cb, void *data);
/*
 * Write-through's appends, each in a transaction with its PUBLISH: begin
 * (MULTI) for n appends of msg, with more other commands of size bytes
 * in all (room is made for all of them, so none fails once MULTI is
 * sent); append (the RPUSH, and an EXPIRE when due: returns how many
 * commands, 0 when the connection is down); commit (EXEC, whose reply
 * is cb's).  Each append's outcome is then ngx_im_store_committed() of
 * EXEC's reply and the append's place in it (counted and logged, once
 * per cause, with the other appends); a command's own result
 * ngx_im_store_result().  An error at queue time (LOADING, OOM,
 * READONLY) aborts the whole transaction.
 */
ngx_int_t ngx_im_store_begin(ngx_im_msg_t *msg, ngx_uint_t n,
    ngx_uint_t more, size_t size);
ngx_uint_t ngx_im_store_append(uint32_t uid, ngx_im_msg_t *msg,
    uint32_t *ttl_set, ngx_uint_t *ttl_sent);
ngx_int_t ngx_im_store_commit(ngx_im_redis_cb_pt cb, void *data);
/* DISCARD: a transaction that cannot be completed */
void ngx_im_store_discard(void);
ngx_int_t ngx_im_store_committed(uint32_t uid, ngx_uint_t ttl_sent,
    redisReply *exec, ngx_uint_t at);
redisReply *ngx_im_store_result(redisReply *exec, ngx_uint_t at);
/* an ack: msg leaves the inbox of uid, after im_inbox_batch at most */
void ngx_im_store_remove(uint32_t uid, ngx_im_msg_t *msg);
/* the removals and TTLs held back leave now: before anything that must
 * come behind them (the inbox reads here call it themselves) */
void ngx_im_store_flush(void);
/*
 * A push of msg ended a session of uid without an ack (the re-push limit):
 * one strike.  At im_poison_after strikes the entry leaves the inbox for the
 * uid's dead letters and is counted and logged.
 */
void ngx_im_store_strike(uint32_t uid, ngx_im_msg_t *msg);
/* the admin API's recall: every copy of this exact entry leaves the
 * inbox of uid; cb gets LREM's count */
ngx_int_t ngx_im_store_remove_entry(uint32_t uid, u_char *entry,
    size_t len, ngx_im_redis_cb_pt cb, void *data);
/* the whole inbox, oldest first: an array of entries */
ngx_int_t ngx_im_store_load(uint32_t uid, ngx_im_redis_cb_pt cb,
    void *data);
/* the reply of ngx_im_store_load(): NGX_OK when it is the inbox; a failure
 * is counted and logged with the appends', once per cause */
ngx_int_t ngx_im_store_loaded(redisReply *reply);
/* handler runs when Redis takes appends and inbox reads again after an
 * inbox read failed: the router has the inboxes read again */
void ngx_im_store_on_back(void (*handler)(void));
/* the members of group gid, each once, in no order, read in SSCAN steps
 * so that a large group never holds Redis for long; rc NGX_ERROR when
 * Redis failed */
typedef void (*ngx_im_members_cb_pt)(void *data, ngx_int_t rc,
    uint32_t *uids, ngx_uint_t n);

ngx_int_t ngx_im_store_members(uint32_t gid, ngx_im_members_cb_pt cb,
    void *data);


#endif /* _NGX_IM_STORE_H_INCLUDED_ */
