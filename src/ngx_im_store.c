/*
 * ngx_im_store.c: a message's life in Redis (the object itself is
 * ngx_im_msg.c's).
 *
 * Owns every Redis key of the inbox and of the group sets.  The inbox is a list
 * per uid: appended in accept order, trimmed to the cap, and a message leaves
 * it (LREM of its exact bytes) when a recipient acknowledges it.  Each entry
 * carries its own expiry, so one old message in a busy inbox still expires on
 * time; the key's TTL only collects what nobody reads.  That TTL is
 * im_offline_ttl plus a slack of an eighth of it, given when the list is
 * created and again on appends, but for a uid online here at most once per
 * slack: a stored message is then one Redis command, not two.  The key never
 * expires before its newest entry.
 *
 * A message whose push ended im_poison_after sessions without an ack moves
 * to the uid's dead letters (im:dead:<uid>, a list of entries in the same
 * form, as long-lived as an inbox), its strikes counted in im:strikes:<uid>
 * (a hash MsgId -> sessions ended).
 *
 * While appends and inbox reads fail (the connection is down, Redis is
 * loading its data after a restart, or refuses writes) the cause is
 * logged once when it starts or changes, and once more when they work
 * again, with the count of those that failed meanwhile: not a line per
 * command.
 */

#include "ngx_im_store.h"
#include "ngx_im_alloc.h"
#include "ngx_im_uids.h"
#include "ngx_im_events.h"


/*
 * The names of a uid's keys and channels, each made here only.  In
 * cluster mode (im_redis_cluster) the uid is their hash tag,
 * "im:inbox:{42}": every key and the channel of a uid are in one slot,
 * so a script on several of them runs, and a uid's commands all go to
 * one master in the order they were made (docs/decisions/
 * 043-redis-cluster.md).  Otherwise the names are as they always were.
 *
 * Written by hand: ngx_sprintf()'s format parsing was 1.4% of a worker's
 * time in a write-through fan-out, two keys per delivery.
 */

static size_t
ngx_im_store_name(u_char *buf, const char *prefix, size_t plen,
    uint32_t uid)
{
    u_char      *p, *t, tmp[NGX_INT32_LEN];
    ngx_uint_t   tag;

    tag = ngx_im_get_conf()->redis_cluster;

    p = ngx_cpymem(buf, prefix, plen);

    if (tag) {
        *p++ = '{';
    }

    t = tmp + sizeof(tmp);

    do {
        *--t = (u_char) ('0' + uid % 10);
        uid /= 10;
    } while (uid);

    p = ngx_cpymem(p, t, tmp + sizeof(tmp) - t);

    if (tag) {
        *p++ = '}';
    }

    return p - buf;
}


size_t
ngx_im_store_key(u_char *buf, uint32_t uid)
{
    return ngx_im_store_name(buf, "im:inbox:", sizeof("im:inbox:") - 1,
                             uid);
}


size_t
ngx_im_store_dead_key(u_char *buf, uint32_t uid)
{
    return ngx_im_store_name(buf, "im:dead:", sizeof("im:dead:") - 1, uid);
}


size_t
ngx_im_store_strikes_key(u_char *buf, uint32_t uid)
{
    return ngx_im_store_name(buf, "im:strikes:", sizeof("im:strikes:") - 1,
                             uid);
}


size_t
ngx_im_store_presence_key(u_char *buf, uint32_t uid, int client_id)
{
    u_char  *p;

    p = buf + ngx_im_store_name(buf, "im:p:", sizeof("im:p:") - 1, uid);

    return ngx_sprintf(p, ":%d", client_id) - buf;
}


size_t
ngx_im_store_sessions_key(u_char *buf, uint32_t uid)
{
    return ngx_im_store_name(buf, "im:s:", sizeof("im:s:") - 1, uid);
}


size_t
ngx_im_store_uid_channel(u_char *buf, uint32_t uid)
{
    return ngx_im_store_name(buf, "im:u:", sizeof("im:u:") - 1, uid);
}


/* the uid of a channel made by ngx_im_store_uid_channel(), or NGX_ERROR:
 * not one of ours */

ngx_int_t
ngx_im_store_channel_uid(u_char *channel, size_t len)
{
    if (len <= 5 || ngx_strncmp(channel, "im:u:", 5) != 0) {
        return NGX_ERROR;
    }

    channel += 5;
    len -= 5;

    if (ngx_im_get_conf()->redis_cluster) {
        if (len <= 2 || channel[0] != '{' || channel[len - 1] != '}') {
            return NGX_ERROR;
        }

        channel++;
        len -= 2;
    }

    return ngx_atoi(channel, len);
}


/* "im:w:<worker id>", in cluster mode "im:w:{<worker id>}"; buf has room
 * for NGX_IM_STORE_WORKER_CHANNEL_LEN(id len) */

size_t
ngx_im_store_worker_channel(u_char *buf, u_char *id, size_t len)
{
    u_char      *p;
    ngx_uint_t   tag;

    tag = ngx_im_get_conf()->redis_cluster;

    p = ngx_cpymem(buf, "im:w:", 5);

    if (tag) {
        *p++ = '{';
    }

    p = ngx_cpymem(p, id, len);

    if (tag) {
        *p++ = '}';
    }

    return p - buf;
}


/*
 * An append is RPUSH and EXPIRE pipelined; the trim to im_offline_max runs
 * only when RPUSH reports the inbox longer than that, which is rare, instead
 * of after every append.  Until it runs the inbox may hold a few more.
 */

typedef struct {
    ngx_im_redis_cb_pt      cb;
    void                   *data;
    uint32_t                uid;
    ngx_uint_t              ttl_sent;   /* EXPIRE went behind the RPUSH */
    long long               length;     /* RPUSH's answer, held for WAIT */
} ngx_im_append_t;


static time_t
ngx_im_store_slack(void)
{
    time_t  slack;

    slack = ngx_im_get_conf()->offline_ttl / 8;

    return slack ? slack : 1;
}


static void
ngx_im_store_expire(u_char *key, size_t klen)
{
    u_char       ttl[NGX_INT_T_LEN];
    const char  *argv[3];
    size_t       argvlen[3];

    argv[0] = "EXPIRE";
    argvlen[0] = 6;
    argv[1] = (char *) key;
    argvlen[1] = klen;
    argv[2] = (char *) ttl;
    argvlen[2] = ngx_sprintf(ttl, "%T", ngx_im_get_conf()->offline_ttl
                                        + ngx_im_store_slack())
                 - ttl;

    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 3, argv,
                            argvlen);
}


static ngx_im_spares_t  ngx_im_spare_appends =
    ngx_im_spares(ngx_im_append_t, 4096);


/*
 * im_redis_wait: the append's owner hears of it once WAIT has seen it on
 * enough replicas.  Its callback reads RPUSH's answer, the inbox's
 * length: that answer is given again here, as the integer reply it was.
 */

static void
ngx_im_store_waited(redisReply *reply, void *data)
{
    ngx_im_append_t     *a = data;
    void                *cbdata;
    redisReply           pushed;
    ngx_im_redis_cb_pt   cb;

    ngx_memzero(&pushed, sizeof(redisReply));
    pushed.type = REDIS_REPLY_INTEGER;
    pushed.integer = a->length;

    cb = a->cb;
    cbdata = a->data;

    ngx_im_spare_put(&ngx_im_spare_appends, a);

    cb(reply ? &pushed : NULL, cbdata);
}


/*
 * Appends and inbox reads that fail: the cause (the first word of Redis's
 * error, or the connection) is logged when it is new, and the counts of
 * the failures it brought when it changes or the commands work again.
 * Per worker.  While Redis answers errors (LOADING after a restart) a
 * probe every second tells when it takes commands again, whether or not
 * messages come; inboxes whose read failed meanwhile are then read again
 * (the back handler, the router's).  A connection that comes back is the
 * router's to notice (ngx_im_redis_handlers_t.inbox_connected).
 */

#define NGX_IM_STORE_CAUSE_MAX  32
#define NGX_IM_STORE_PROBE      1000

static ngx_uint_t  ngx_im_store_failing;
static ngx_uint_t  ngx_im_store_nappends;    /* failed since the cause */
static ngx_uint_t  ngx_im_store_nreads;
static ngx_uint_t  ngx_im_store_reread;      /* an inbox read failed */
static u_char      ngx_im_store_cause[NGX_IM_STORE_CAUSE_MAX];
static size_t      ngx_im_store_cause_len;
static void      (*ngx_im_store_back_handler)(void);
static ngx_event_t       ngx_im_store_probe_ev;
static ngx_event_t       ngx_im_store_back_ev;
/* nginx's debug log reads a descriptor out of every timer's data */
static ngx_connection_t  ngx_im_store_dummy;


static void ngx_im_store_failed_on(u_char *err, size_t len,
    ngx_uint_t read);
static void ngx_im_store_probe(ngx_event_t *ev);
static void ngx_im_store_back(ngx_event_t *ev);
static ngx_int_t ngx_im_store_hold(uint32_t uid, ngx_im_msg_t *msg);


/* the worker's events of the store, made at first use */

static void
ngx_im_store_event(ngx_event_t *ev, ngx_event_handler_pt handler)
{
    if (ev->handler == NULL) {
        ngx_im_store_dummy.fd = (ngx_socket_t) -1;
        ev->data = &ngx_im_store_dummy;
        ev->handler = handler;
        ev->log = ngx_cycle->log;
        ev->cancelable = 1;
    }
}


void
ngx_im_store_on_back(void (*handler)(void))
{
    ngx_im_store_back_handler = handler;
}


/* the cause of a failed command: the error's first word; 1: it is the
 * cause commands are failing for now */

static ngx_uint_t
ngx_im_store_cause_of(u_char *err, size_t len, ngx_str_t *cause,
    ngx_str_t *text)
{
    u_char  *p, *last;

    if (err && len) {
        p = err;
        last = p + len;

        text->data = p;
        text->len = len;

        cause->data = p;

        if (last - p > NGX_IM_STORE_CAUSE_MAX) {
            last = p + NGX_IM_STORE_CAUSE_MAX;
        }

        while (p < last && *p != ' ') {
            p++;
        }

        cause->len = p - cause->data;

    } else {
        ngx_str_set(cause, "connection down");
        *text = *cause;
    }

    return (ngx_im_store_failing
            && cause->len == ngx_im_store_cause_len
            && ngx_memcmp(cause->data, ngx_im_store_cause, cause->len) == 0);
}


static void
ngx_im_store_failed(redisReply *reply, ngx_uint_t read)
{
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_im_store_failed_on((u_char *) reply->str, reply->len, read);

    } else {
        /* no reply, or one that is no error (a bug): the connection */
        ngx_im_store_failed_on(NULL, 0, read);
    }
}


/* err: Redis's error, or NULL when the connection went */

static void
ngx_im_store_failed_on(u_char *err, size_t len, ngx_uint_t read)
{
    ngx_str_t  cause, text, was;

    if (read) {
        ngx_im_store_reread = 1;
    }

    if (!ngx_im_store_cause_of(err, len, &cause, &text)) {

        if (ngx_im_store_failing) {
            was.data = ngx_im_store_cause;
            was.len = ngx_im_store_cause_len;

            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "im store: Redis commands fail: %V (before: %V, "
                          "%ui appends and %ui inbox reads failed)",
                          &text, &was, ngx_im_store_nappends,
                          ngx_im_store_nreads);

        } else {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "im store: Redis commands fail: %V; logged "
                          "again when this changes", &text);
        }

        ngx_im_store_failing = 1;
        ngx_im_store_nappends = 0;
        ngx_im_store_nreads = 0;
        ngx_im_store_cause_len = cause.len;
        ngx_memcpy(ngx_im_store_cause, cause.data, cause.len);
    }

    if (read) {
        ngx_im_store_nreads++;

    } else {
        ngx_im_store_nappends++;
    }

    /* an error from a Redis that is there: asked again in a while */

    if (err && !ngx_im_store_probe_ev.timer_set) {
        ngx_im_store_event(&ngx_im_store_probe_ev, ngx_im_store_probe);
        ngx_add_timer(&ngx_im_store_probe_ev, NGX_IM_STORE_PROBE);
    }
}


static void
ngx_im_store_worked(void)
{
    ngx_str_t  was;

    if (!ngx_im_store_failing) {
        return;
    }

    was.data = ngx_im_store_cause;
    was.len = ngx_im_store_cause_len;

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "im store: Redis works again after %V: %ui appends and "
                  "%ui inbox reads failed meanwhile", &was,
                  ngx_im_store_nappends, ngx_im_store_nreads);

    ngx_im_store_failing = 0;
    ngx_im_store_nappends = 0;
    ngx_im_store_nreads = 0;

    if (ngx_im_store_probe_ev.timer_set) {
        ngx_del_timer(&ngx_im_store_probe_ev);
    }

    if (ngx_im_store_reread) {
        ngx_im_store_reread = 0;

        /* not under the reply's callback, which may be an inbox read */
        if (ngx_im_store_back_handler && !ngx_im_store_back_ev.posted) {
            ngx_im_store_event(&ngx_im_store_back_ev, ngx_im_store_back);
            ngx_post_event(&ngx_im_store_back_ev, &ngx_posted_events);
        }
    }
}


static void
ngx_im_store_back(ngx_event_t *ev)
{
    if (ngx_im_store_back_handler && !ngx_exiting && !ngx_terminate) {
        ngx_im_store_back_handler();
    }
}


static void
ngx_im_store_probed(redisReply *reply, void *data)
{
    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        ngx_im_store_worked();
        return;
    }

    if (reply && ngx_im_store_failing
        && !ngx_im_store_probe_ev.timer_set)
    {
        ngx_add_timer(&ngx_im_store_probe_ev, NGX_IM_STORE_PROBE);
    }

    /* no reply: the connection is gone, and its return is noticed */
}


static void
ngx_im_store_probe(ngx_event_t *ev)
{
    const char  *argv[2];
    size_t       argvlen[2];

    if (!ngx_im_store_failing || ngx_exiting || ngx_terminate) {
        return;
    }

    /* a command Redis refuses while it loads, as it does RPUSH */

    argv[0] = "EXISTS";
    argvlen[0] = 6;
    argv[1] = "im:inbox:0";
    argvlen[1] = sizeof("im:inbox:0") - 1;

    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_store_probed, NULL,
                            2, argv, argvlen);
}


ngx_int_t
ngx_im_store_loaded(redisReply *reply)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        ngx_im_store_failed(reply, 1);
        return NGX_ERROR;
    }

    ngx_im_store_worked();

    return NGX_OK;
}


/* another command's error: logged unless appends fail for it already */

static void
ngx_im_store_error(const char *what, uint32_t id, redisReply *reply)
{
    ngx_str_t  cause, text;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR
        || ngx_im_store_cause_of((u_char *) reply->str, reply->len, &cause,
                                 &text))
    {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "im store: %s %uD: %V", what, id, &text);
}


/* an append's reply: the log's count, a new list's TTL, the cap */

static void
ngx_im_store_appended_to(uint32_t uid, ngx_uint_t ttl_sent,
    redisReply *reply)
{
    u_char          key[32], num[NGX_INT_T_LEN];
    const char     *argv[4];
    size_t          argvlen[4];
    ngx_im_conf_t  *imcf;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ngx_im_store_failed(reply, 0);
        return;
    }

    ngx_im_store_worked();

    imcf = ngx_im_get_conf();

    if (reply->integer == 1 && !ttl_sent
        && ngx_im_store_hold(uid, NULL) != NGX_OK)
    {
        /* a new list: it must not live for ever */
        ngx_im_store_expire(key, ngx_im_store_key(key, uid));
    }

    if (reply->integer > (long long) imcf->offline_max) {
        ngx_im_events_dropped(NULL, uid, "inbox_cap",
                              (ngx_uint_t) reply->integer
                              - imcf->offline_max);

        argv[0] = "LTRIM";
        argvlen[0] = 5;
        argv[1] = (char *) key;
        argvlen[1] = ngx_im_store_key(key, uid);
        argv[2] = (char *) num;
        argvlen[2] = ngx_sprintf(num, "-%ui", imcf->offline_max) - num;
        argv[3] = "-1";
        argvlen[3] = 2;

        (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 4, argv,
                                argvlen);
    }
}


static void
ngx_im_store_appended(redisReply *reply, void *data)
{
    ngx_im_append_t     *a = data;
    void                *cbdata;
    ngx_im_redis_cb_pt   cb;

    ngx_im_store_appended_to(a->uid, a->ttl_sent, reply);

    cb = a->cb;
    cbdata = a->data;

    if (cb && reply && reply->type == REDIS_REPLY_INTEGER) {
        /* an acknowledgement rests on it: held for WAIT, if it is on */
        a->length = reply->integer;

        switch (ngx_im_redis_after_wait(ngx_im_store_waited, a)) {

        case NGX_OK:
            return;

        case NGX_ERROR:
            reply = NULL;
            break;

        default: /* NGX_DECLINED: no WAIT */
            break;
        }
    }

    ngx_im_spare_put(&ngx_im_spare_appends, a);

    if (cb) {
        cb(reply, cbdata);
    }
}


/*
 * The RPUSH of msg to uid's inbox, and behind it, when due (ttl_set, when
 * not NULL, says when the caller last gave the inbox its TTL), an EXPIRE
 * whose reply is not needed: pipelined on the same connection, it runs
 * right after the append.  0: not queued (the connection is down); else
 * the commands queued, *ttl_sent telling whether the EXPIRE went.
 */

static ngx_uint_t
ngx_im_store_rpush(uint32_t uid, ngx_im_msg_t *msg, uint32_t *ttl_set,
    ngx_uint_t *ttl_sent, ngx_im_redis_cb_pt cb, void *data)
{
    u_char       key[32];
    const char  *argv[3];
    size_t       argvlen[3];

    *ttl_sent = (ttl_set == NULL
                 || (time_t) *ttl_set + ngx_im_store_slack() <= ngx_time());

    argv[0] = "RPUSH";
    argvlen[0] = 5;
    argv[1] = (char *) key;
    argvlen[1] = ngx_im_store_key(key, uid);
    argv[2] = (char *) msg->entry;
    argvlen[2] = msg->entry_len;

    if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, cb, data, 3, argv, argvlen)
        != NGX_OK)
    {
        return 0;
    }

    if (!*ttl_sent) {
        return 1;
    }

    ngx_im_store_expire(key, argvlen[1]);

    if (ttl_set) {
        /* seconds since 1970 fit 32 bits until 2106 */
        *ttl_set = (uint32_t) ngx_time();
    }

    return 2;
}


/*
 * Write-through: appends in a transaction with what must leave with them
 * (the router's channel PUBLISHes), MULTI ... EXEC on the inbox
 * connection.  Redis runs it whole or not at all: an error at queue time
 * (LOADING while it loads its data, OOM, READONLY) aborts the EXEC, and
 * a PUBLISH never leaves without its append.  EXEC's error then says only
 * EXECABORT: the first queue-time error of the transaction is kept for
 * the log.  Replies come in order, so the one kept belongs to the
 * transaction whose EXEC is being answered.
 */

#define NGX_IM_STORE_QERR_MAX  128

static u_char  ngx_im_store_qerr[NGX_IM_STORE_QERR_MAX];
static size_t  ngx_im_store_qerr_len;


static void
ngx_im_store_multi(redisReply *reply, void *data)
{
    ngx_im_store_qerr_len = 0;
}


static void
ngx_im_store_queued(redisReply *reply, void *data)
{
    if (reply && reply->type == REDIS_REPLY_ERROR && reply->len
        && ngx_im_store_qerr_len == 0)
    {
        ngx_im_store_qerr_len = ngx_min(reply->len, NGX_IM_STORE_QERR_MAX);
        ngx_memcpy(ngx_im_store_qerr, reply->str, ngx_im_store_qerr_len);
    }
}


ngx_int_t
ngx_im_store_begin(ngx_im_msg_t *msg, ngx_uint_t n, ngx_uint_t more,
    size_t size)
{
    size_t       one;
    const char  *argv[1];
    size_t       argvlen[1];

    /* an RPUSH and an EXPIRE per append, MULTI and EXEC */

    one = NGX_IM_REDIS_CMD_LEN(3, sizeof("RPUSH") - 1 + 32 + msg->entry_len)
          + NGX_IM_REDIS_CMD_LEN(3, sizeof("EXPIRE") - 1 + 32
                                    + NGX_INT_T_LEN);

    argv[0] = "MULTI";
    argvlen[0] = 5;

    if (ngx_im_redis_room(NGX_IM_REDIS_INBOX, 2 * n + more + 2,
                          n * one + size + 2 * NGX_IM_REDIS_CMD_LEN(1, 5))
        != NGX_OK
        || ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_store_multi, NULL, 1,
                            argv, argvlen)
           != NGX_OK)
    {
        while (n--) {
            ngx_im_store_failed(NULL, 0);
        }

        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_im_store_append(uint32_t uid, ngx_im_msg_t *msg, uint32_t *ttl_set,
    ngx_uint_t *ttl_sent)
{
    return ngx_im_store_rpush(uid, msg, ttl_set, ttl_sent,
                              ngx_im_store_queued, NULL);
}


ngx_int_t
ngx_im_store_commit(ngx_im_redis_cb_pt cb, void *data)
{
    const char  *argv[1];
    size_t       argvlen[1];

    argv[0] = "EXEC";
    argvlen[0] = 4;

    if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, cb, data, 1, argv, argvlen)
        == NGX_OK)
    {
        return NGX_OK;
    }

    /* not for want of room (ngx_im_store_begin() made it): the
     * connection is down, and what was queued fails with it */

    return NGX_ERROR;
}


void
ngx_im_store_discard(void)
{
    const char  *argv[1];
    size_t       argvlen[1];

    argv[0] = "DISCARD";
    argvlen[0] = 7;

    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 1, argv,
                            argvlen);
}


redisReply *
ngx_im_store_result(redisReply *exec, ngx_uint_t at)
{
    if (exec && exec->type == REDIS_REPLY_ARRAY && at < exec->elements) {
        return exec->element[at];
    }

    return NULL;
}


ngx_int_t
ngx_im_store_committed(uint32_t uid, ngx_uint_t ttl_sent, redisReply *exec,
    ngx_uint_t at)
{
    redisReply  *r;

    r = ngx_im_store_result(exec, at);

    if (r) {
        ngx_im_store_appended_to(uid, ttl_sent, r);
        return ngx_im_store_pushed(r);
    }

    if (exec && exec->type == REDIS_REPLY_ERROR && ngx_im_store_qerr_len) {
        /* EXECABORT: the cause is the queue-time error */
        ngx_im_store_failed_on(ngx_im_store_qerr, ngx_im_store_qerr_len, 0);

    } else {
        ngx_im_store_failed(exec, 0);
    }

    return NGX_ERROR;
}


ngx_int_t
ngx_im_store_push(uint32_t uid, ngx_im_msg_t *msg, uint32_t *ttl_set,
    ngx_im_redis_cb_pt cb, void *data)
{
    ngx_im_append_t  *a;

    a = ngx_im_spare_get(&ngx_im_spare_appends);
    if (a == NULL) {
        return NGX_ERROR;
    }

    a->cb = cb;
    a->data = data;
    a->uid = uid;

    if (ngx_im_store_rpush(uid, msg, ttl_set, &a->ttl_sent,
                           ngx_im_store_appended, a)
        == 0)
    {
        ngx_im_spare_put(&ngx_im_spare_appends, a);
        ngx_im_store_failed(NULL, 0);
        return NGX_ERROR;
    }

    if (cb) {
        /* an acknowledgement waits for it: a WAIT ends the pass */
        ngx_im_redis_wait_mark();
    }

    return NGX_OK;
}


/*
 * KEYS: inbox; ARGV: entry, pivot.  LINSERT answers -1 when the pivot is
 * gone (acked meanwhile) and 0 when the list is: then at the end.  The
 * list's length, as RPUSH's.
 */
static char  ngx_im_store_insert_script[] =
    "local n = redis.call('LINSERT', KEYS[1], 'BEFORE', ARGV[2], ARGV[1]) "
    "if n <= 0 then n = redis.call('RPUSH', KEYS[1], ARGV[1]) end "
    "return n";


ngx_int_t
ngx_im_store_insert(uint32_t uid, ngx_im_msg_t *msg, ngx_im_msg_t *pivot,
    ngx_im_redis_cb_pt cb, void *data)
{
    u_char            key[32];
    const char       *argv[6];
    size_t            argvlen[6];
    ngx_im_append_t  *a;

    if (pivot == NULL) {
        return ngx_im_store_push(uid, msg, NULL, cb, data);
    }

    a = ngx_im_spare_get(&ngx_im_spare_appends);
    if (a == NULL) {
        return NGX_ERROR;
    }

    a->cb = cb;
    a->data = data;
    a->uid = uid;
    /* a new list (length 1) gets its EXPIRE at the reply */
    a->ttl_sent = 0;

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = ngx_im_store_insert_script;
    argvlen[1] = sizeof(ngx_im_store_insert_script) - 1;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (char *) key;
    argvlen[3] = ngx_im_store_key(key, uid);
    argv[4] = (char *) msg->entry;
    argvlen[4] = msg->entry_len;
    argv[5] = (char *) pivot->entry;
    argvlen[5] = pivot->entry_len;

    if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_store_appended, a, 6,
                         argv, argvlen)
        != NGX_OK)
    {
        ngx_im_spare_put(&ngx_im_spare_appends, a);
        ngx_im_store_failed(NULL, 0);
        return NGX_ERROR;
    }

    if (cb) {
        ngx_im_redis_wait_mark();
    }

    return NGX_OK;
}


ngx_int_t
ngx_im_store_pushed(redisReply *reply)
{
    ngx_im_conf_t  *imcf;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        /* logged once per cause: ngx_im_store_failed() */
        return NGX_ERROR;
    }

    imcf = ngx_im_get_conf();

    if ((ngx_uint_t) reply->integer > imcf->offline_max) {
        ngx_im_stats->dropped[NGX_IM_DROPPED_CAP]++;
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "im store: inbox over %ui messages, oldest dropped",
                      imcf->offline_max);
    }

    ngx_im_stats->stored++;

    return NGX_OK;
}


/* LREM of an entry's exact bytes: the first one (an ack), or all (0) */

static ngx_int_t
ngx_im_store_lrem(uint32_t uid, u_char *entry, size_t len, const char *count,
    ngx_im_redis_cb_pt cb, void *data)
{
    u_char       key[32];
    const char  *argv[4];
    size_t       argvlen[4];

    argv[0] = "LREM";
    argvlen[0] = 4;
    argv[1] = (char *) key;
    argvlen[1] = ngx_im_store_key(key, uid);
    argv[2] = count;
    argvlen[2] = 1;
    argv[3] = (char *) entry;
    argvlen[3] = len;

    return ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, cb, data, 4, argv, argvlen);
}


/*
 * Writes held back (im_inbox_batch, decision 051): an ack's LREM and a
 * new list's EXPIRE need no answer, and sent at once each costs Redis a
 * wake-up and the worker a pass for the reply.  They wait up to
 * im_inbox_batch, or until NGX_IM_STORE_HELD_MAX wait, and leave
 * together, in the order they came.  What must not overtake them goes
 * behind them: every command that reads an inbox (ngx_im_store_load(),
 * the strike, the recall) sends them first, and so do the router's
 * answer to another worker's announcement and a uid's last session
 * leaving, so that a login elsewhere reads the inbox after them.
 * Appends of other entries may go first.  A worker that dies holding
 * them leaves acked messages in the inbox: pushed again at the next
 * login, a duplicate, never a loss.
 */

#define NGX_IM_STORE_HELD_MAX  512

typedef struct {
    ngx_im_msg_t           *msg;        /* NULL: the list's TTL */
    uint32_t                uid;
} ngx_im_held_t;


static ngx_im_held_t  *ngx_im_store_held;
static ngx_uint_t      ngx_im_store_nheld;
static ngx_event_t     ngx_im_store_held_ev;


static void
ngx_im_store_held_timer(ngx_event_t *ev)
{
    ngx_im_store_flush();
}


/* NGX_DECLINED: not held, to be sent now */

static ngx_int_t
ngx_im_store_hold(uint32_t uid, ngx_im_msg_t *msg)
{
    ngx_msec_t      delay;
    ngx_im_held_t  *h;

    delay = ngx_im_get_conf()->inbox_batch;

    if (delay == 0 || ngx_exiting || ngx_terminate) {
        return NGX_DECLINED;
    }

    if (ngx_im_store_held == NULL) {
        /* 8 KB, for the worker's life */
        ngx_im_store_held = ngx_alloc(NGX_IM_STORE_HELD_MAX
                                      * sizeof(ngx_im_held_t),
                                      ngx_cycle->log);
        if (ngx_im_store_held == NULL) {
            return NGX_DECLINED;
        }
    }

    h = &ngx_im_store_held[ngx_im_store_nheld++];
    h->msg = msg ? ngx_im_msg_ref(msg) : NULL;
    h->uid = uid;

    if (ngx_im_store_nheld == NGX_IM_STORE_HELD_MAX) {
        ngx_im_store_flush();
        return NGX_OK;
    }

    if (!ngx_im_store_held_ev.timer_set) {
        /* cancelable: a worker shutting down sends them as its sessions
         * leave (ngx_im_router_leave()), and holds none after */
        ngx_im_store_event(&ngx_im_store_held_ev, ngx_im_store_held_timer);
        ngx_add_timer(&ngx_im_store_held_ev, delay);
    }

    return NGX_OK;
}


void
ngx_im_store_flush(void)
{
    u_char          key[NGX_IM_STORE_KEY_LEN];
    ngx_uint_t      i, n;
    ngx_im_held_t  *h;

    n = ngx_im_store_nheld;
    ngx_im_store_nheld = 0;

    if (ngx_im_store_held_ev.timer_set) {
        ngx_del_timer(&ngx_im_store_held_ev);
    }

    for (i = 0; i < n; i++) {
        h = &ngx_im_store_held[i];

        if (h->msg == NULL) {
            ngx_im_store_expire(key, ngx_im_store_key(key, h->uid));
            continue;
        }

        (void) ngx_im_store_lrem(h->uid, h->msg->entry, h->msg->entry_len,
                                 "1", NULL, NULL);
        ngx_im_msg_unref(h->msg);
    }
}


void
ngx_im_store_remove(uint32_t uid, ngx_im_msg_t *msg)
{
    if (ngx_im_store_hold(uid, msg) == NGX_OK) {
        return;
    }

    (void) ngx_im_store_lrem(uid, msg->entry, msg->entry_len, "1", NULL,
                             NULL);
}


/*
 * KEYS: inbox, strikes, dead letters; ARGV: MsgId, entry, TTL, strikes to
 * move at, dead letters kept.  1: moved; 0: not yet, or no longer in the
 * inbox (acked meanwhile by another device, or expired).
 */
static char  ngx_im_store_strike_script[] =
    "local n = redis.call('HINCRBY', KEYS[2], ARGV[1], 1) "
    "redis.call('EXPIRE', KEYS[2], ARGV[3]) "
    "if n < tonumber(ARGV[4]) then return 0 end "
    "redis.call('HDEL', KEYS[2], ARGV[1]) "
    "if redis.call('LREM', KEYS[1], 1, ARGV[2]) == 0 then return 0 end "
    "redis.call('RPUSH', KEYS[3], ARGV[2]) "
    "redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1) "
    "redis.call('EXPIRE', KEYS[3], ARGV[3]) "
    "return 1";


typedef struct {
    ngx_im_msg_t   *msg;
    uint32_t        uid;
} ngx_im_strike_t;


static void
ngx_im_store_struck(redisReply *reply, void *data)
{
    ngx_im_strike_t  *st = data;

    u_char            hex[2 * IM_MSGID_LEN];
    uint32_t          uid;
    ngx_im_msg_t     *msg;

    msg = st->msg;
    uid = st->uid;
    ngx_free(st);

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ngx_im_store_error("strike of uid", uid, reply);

        ngx_im_msg_unref(msg);
        return;
    }

    if (reply->integer == 1) {
        ngx_im_stats->dropped[NGX_IM_DROPPED_POISON]++;
        ngx_im_events_dropped(msg->msgid, uid, "poison", 1);

        (void) ngx_hex_dump(hex, msg->msgid, IM_MSGID_LEN);
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "im: uid %uD: message %*s ended %ui sessions "
                      "without an ack: moved to im:dead:%uD",
                      uid, (size_t) (2 * IM_MSGID_LEN), hex,
                      ngx_im_get_conf()->poison_after, uid);
    }

    ngx_im_msg_unref(msg);
}


void
ngx_im_store_strike(uint32_t uid, ngx_im_msg_t *msg)
{
    u_char          key[32], strikes[40], dead[40], ttl[NGX_TIME_T_LEN],
                    limit[NGX_INT_T_LEN], keep[NGX_INT_T_LEN];
    const char       *argv[11];
    size_t            argvlen[11];
    ngx_im_conf_t    *imcf;
    ngx_im_strike_t  *st;

    imcf = ngx_im_get_conf();

    if (imcf->poison_after == 0 || msg->msgid == NULL) {
        return;
    }

    /* its LREM must see the removals of acks held so far */
    ngx_im_store_flush();

    /* rare: the heap, not a list of spares */
    st = ngx_alloc(sizeof(ngx_im_strike_t), ngx_cycle->log);
    if (st == NULL) {
        return;
    }

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = ngx_im_store_strike_script;
    argvlen[1] = sizeof(ngx_im_store_strike_script) - 1;
    argv[2] = "3";
    argvlen[2] = 1;
    argv[3] = (char *) key;
    argvlen[3] = ngx_im_store_key(key, uid);
    argv[4] = (char *) strikes;
    argvlen[4] = ngx_im_store_strikes_key(strikes, uid);
    argv[5] = (char *) dead;
    argvlen[5] = ngx_im_store_dead_key(dead, uid);
    argv[6] = (char *) msg->msgid;
    argvlen[6] = IM_MSGID_LEN;
    argv[7] = (char *) msg->entry;
    argvlen[7] = msg->entry_len;
    argv[8] = (char *) ttl;
    argvlen[8] = ngx_sprintf(ttl, "%T", imcf->offline_ttl) - ttl;
    argv[9] = (char *) limit;
    argvlen[9] = ngx_sprintf(limit, "%ui", imcf->poison_after) - limit;
    argv[10] = (char *) keep;
    argvlen[10] = ngx_sprintf(keep, "%ui", imcf->offline_max) - keep;

    st->msg = msg;
    st->uid = uid;
    ngx_im_msg_ref(msg);

    if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_store_struck, st, 11,
                         argv, argvlen)
        != NGX_OK)
    {
        /* Redis is away: this session's strike is not counted */
        ngx_im_msg_unref(msg);
        ngx_free(st);
    }
}


ngx_int_t
ngx_im_store_remove_entry(uint32_t uid, u_char *entry, size_t len,
    ngx_im_redis_cb_pt cb, void *data)
{
    ngx_im_store_flush();

    return ngx_im_store_lrem(uid, entry, len, "0", cb, data);
}


ngx_int_t
ngx_im_store_load(uint32_t uid, ngx_im_redis_cb_pt cb, void *data)
{
    u_char       key[32];
    const char  *argv[4];
    size_t       argvlen[4];

    /* acked is not to be read again */
    ngx_im_store_flush();

    argv[0] = "LRANGE";
    argvlen[0] = 6;
    argv[1] = (char *) key;
    argvlen[1] = ngx_im_store_key(key, uid);
    argv[2] = "0";
    argvlen[2] = 1;
    argv[3] = "-1";
    argvlen[3] = 2;

    return ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, cb, data, 4, argv, argvlen);
}


typedef struct {
    ngx_im_members_cb_pt    cb;
    void                   *data;
    uint32_t                gid;
    uint32_t               *uids;
    ngx_uint_t              n;
    ngx_uint_t              size;
    ngx_uint_t              pages;
} ngx_im_members_t;


static void ngx_im_store_members_step(redisReply *reply, void *data);


static ngx_int_t
ngx_im_store_sscan(ngx_im_members_t *mr, const char *cursor, size_t clen)
{
    u_char          key[NGX_MAX_ERROR_STR];
    const char     *argv[5];
    size_t          argvlen[5];
    ngx_im_conf_t  *imcf;

    imcf = ngx_im_get_conf();

    if (imcf->group_prefix.len > sizeof(key) - NGX_INT32_LEN) {
        return NGX_ERROR;
    }

    argv[0] = "SSCAN";
    argvlen[0] = 5;
    argv[1] = (char *) key;
    argvlen[1] = ngx_sprintf(key, "%V%uD", &imcf->group_prefix, mr->gid)
                 - key;
    argv[2] = cursor;
    argvlen[2] = clen;
    argv[3] = "COUNT";
    argvlen[3] = 5;
    /* a page stops once it has COUNT members: groups of up to about 2,000
     * are read in one round trip, and a call holds Redis 0.9 ms on average
     * (bench/group-read.sh, 10,000 members: COUNT 1000 0.6 ms, COUNT 4096
     * 1.5 ms, longer than one SMEMBERS of all 10,000) */
    argv[4] = "2048";
    argvlen[4] = 4;

    return ngx_im_redis_cmd(NGX_IM_REDIS_GROUP, ngx_im_store_members_step,
                            mr, 5, argv, argvlen);
}


ngx_int_t
ngx_im_store_members(uint32_t gid, ngx_im_members_cb_pt cb, void *data)
{
    ngx_im_members_t  *mr;

    /* one per group message, with the member array it grows page by page
     * (its size follows the group): heap, not a list of spares */
    mr = ngx_calloc(sizeof(ngx_im_members_t), ngx_cycle->log);
    if (mr == NULL) {
        return NGX_ERROR;
    }

    mr->cb = cb;
    mr->data = data;
    mr->gid = gid;

    if (ngx_im_store_sscan(mr, "0", 1) != NGX_OK) {
        ngx_free(mr);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_im_store_members_step(redisReply *reply, void *data)
{
    ngx_im_members_t  *mr = data;

    size_t       i;
    uint32_t    *nu;
    ngx_int_t    v;
    redisReply  *cursor, *list, *e;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_ARRAY)
    {
        ngx_im_store_error("group", mr->gid, reply);
        goto failed;
    }

    cursor = reply->element[0];
    list = reply->element[1];

    mr->pages++;

    if (mr->n + list->elements > mr->size) {
        mr->size = ngx_max(2 * mr->size, mr->n + list->elements + 16);

        nu = ngx_alloc(mr->size * sizeof(uint32_t), ngx_cycle->log);
        if (nu == NULL) {
            goto failed;
        }

        if (mr->uids) {
            ngx_memcpy(nu, mr->uids, mr->n * sizeof(uint32_t));
            ngx_free(mr->uids);
        }

        mr->uids = nu;
    }

    for (i = 0; i < list->elements; i++) {
        e = list->element[i];

        if (e->type != REDIS_REPLY_STRING) {
            continue;
        }

        /* what is not a uid is not a member */
        v = ngx_atoi((u_char *) e->str, e->len);
        if (v <= 0 || v > 0xffffffff) {
            continue;
        }

        mr->uids[mr->n++] = (uint32_t) v;
    }

    if (!(cursor->len == 1 && cursor->str[0] == '0')) {
        if (ngx_im_store_sscan(mr, cursor->str, cursor->len) == NGX_OK) {
            return;
        }
        goto failed;
    }

    /* one SSCAN call returns each member once; a member can come again in
     * a later page when the set was rehashed in between */
    if (mr->pages > 1) {
        mr->n = ngx_im_uids_unique(mr->uids, mr->n);
    }

    mr->cb(mr->data, NGX_OK, mr->uids, mr->n);
    goto done;

failed:

    mr->cb(mr->data, NGX_ERROR, NULL, 0);

done:

    if (mr->uids) {
        ngx_free(mr->uids);
    }

    ngx_free(mr);
}
