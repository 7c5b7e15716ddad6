/*
 * ngx_im_redis_redirect.c: what a reply makes of the command it answers.
 *
 * Owns the pairing of a reply with the oldest command of its connection
 * (ngx_im_redis_answer: the command's callback, its latency), and in
 * cluster mode what an error reply makes of a command's copy (made at
 * queue time by ngx_im_redis.c): MOVED sends it again to the slot's new
 * master, ASK to the importing node after ASKING, TRYAGAIN again to the
 * same one after a while (a timer, bounded by im_redis_timeout); a
 * transaction refused at queue time or redirected at EXEC is sent again
 * whole; CLUSTERDOWN makes the cluster "down" until a command is served
 * again.  Owns the reads of the slot map too: one at the start, one after
 * every MOVED, a moved channel or a lost master; what the map says is
 * ngx_im_redis_cluster.c's, what the first map makes of the connections
 * that came before it ngx_im_redis_worker.c's, which gives it at
 * ngx_im_redis_redirect_init().  (docs/decisions/043-redis-cluster.md)
 */

#include "ngx_im_redis_int.h"


static ngx_int_t ngx_im_redis_redirected(ngx_im_redis_conn_t *rc,
    ngx_im_redis_req_t *req, redisReply *reply);
static ngx_int_t ngx_im_redis_resend(ngx_im_redis_conn_t *rc,
    ngx_im_redis_req_t *req, ngx_uint_t asking);
static void ngx_im_redis_tx_queued(ngx_im_redis_conn_t *rc,
    ngx_im_redis_copy_t *copy, redisReply *reply);
static ngx_int_t ngx_im_redis_tx_late(ngx_im_redis_conn_t *rc,
    ngx_im_redis_copy_t *copy, redisReply *reply);
static ngx_int_t ngx_im_redis_tx_again(ngx_im_redis_conn_t *rc,
    ngx_im_redis_req_t *req, redisReply *reply);
static ngx_int_t ngx_im_redis_redirect(ngx_im_redis_conn_t *rc,
    ngx_im_redis_req_t *req, redisReply *reply);
static void ngx_im_redis_map_handler(ngx_event_t *ev);
static ngx_int_t ngx_im_redis_retry(ngx_im_redis_conn_t *rc,
    ngx_im_redis_req_t *req);
static void ngx_im_redis_retry_handler(ngx_event_t *ev);
static void ngx_im_redis_retry_fail(void);
static void ngx_im_redis_down_said(ngx_im_redis_conn_t *rc,
    redisReply *reply);
static void ngx_im_redis_down_handler(ngx_event_t *ev);
static void ngx_im_redis_down_read(redisReply *reply, void *data);


/* redirects followed per command (a transaction: times sent again) */
#define NGX_IM_REDIS_REDIRECTS   5


/* commands answered TRYAGAIN, sent again in a while */
typedef struct {
    ngx_im_redis_conn_t  *rc;
    ngx_im_redis_req_t    req;
} ngx_im_redis_retry_t;


/* the slot map's reads: one at a time, one more when asked meanwhile,
 * again in a second when none could be made */
static ngx_event_t               ngx_im_redis_map_ev;
static ngx_uint_t                ngx_im_redis_map_reading;
static ngx_uint_t                ngx_im_redis_map_again;
static ngx_im_redis_retry_t     *ngx_im_redis_retries;
static ngx_uint_t                ngx_im_redis_nretries;
static ngx_uint_t                ngx_im_redis_retries_size;
static ngx_event_t               ngx_im_redis_retry_ev;
/* a master said CLUSTERDOWN and no command has succeeded since */
static ngx_uint_t                ngx_im_redis_down;
static ngx_event_t               ngx_im_redis_down_ev;
/* the first map is read (ngx_im_redis_worker.c) */
static void                    (*ngx_im_redis_mapped)(void);

void
ngx_im_redis_redirect_init(ngx_cycle_t *cycle, void (*mapped)(void))
{
    ngx_im_redis_mapped = mapped;

    ngx_im_redis_map_ev.data = &ngx_im_redis_dummy;
    ngx_im_redis_map_ev.handler = ngx_im_redis_map_handler;
    ngx_im_redis_map_ev.log = cycle->log;
    ngx_im_redis_map_ev.cancelable = 1;

    ngx_im_redis_retry_ev.data = &ngx_im_redis_dummy;
    ngx_im_redis_retry_ev.handler = ngx_im_redis_retry_handler;
    ngx_im_redis_retry_ev.log = cycle->log;
    ngx_im_redis_retry_ev.cancelable = 1;

    ngx_im_redis_down_ev.data = &ngx_im_redis_dummy;
    ngx_im_redis_down_ev.handler = ngx_im_redis_down_handler;
    ngx_im_redis_down_ev.log = cycle->log;
    ngx_im_redis_down_ev.cancelable = 1;
}


void
ngx_im_redis_redirect_exit(void)
{
    if (ngx_im_redis_map_ev.timer_set) {
        ngx_del_timer(&ngx_im_redis_map_ev);
    }

    if (ngx_im_redis_retry_ev.timer_set) {
        ngx_del_timer(&ngx_im_redis_retry_ev);
    }

    if (ngx_im_redis_down_ev.timer_set) {
        ngx_del_timer(&ngx_im_redis_down_ev);
    }

    ngx_im_redis_retry_fail();
}


/*
 * The reply to the oldest command of a connection: its callback called,
 * with the command's latency counted; in cluster mode a command with a
 * copy may be sent again instead, where the cluster says.
 */

ngx_int_t
ngx_im_redis_answer(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    uint64_t               now;
    ngx_im_redis_req_t     req;
    ngx_im_redis_queue_t  *q;

    q = rc->data;

    if (q == NULL || q->n == 0) {
        ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                      "im redis: a reply to no command");
        return NGX_ERROR;
    }

    req = ngx_im_redis_shift(q);

    ngx_im_redis_conn_answered(rc);

    if (req.copy) {
        switch (ngx_im_redis_redirected(rc, &req, reply)) {

        case NGX_OK:
            /* sent again where the cluster said: answered there */
            return NGX_OK;

        case NGX_DONE:
            /* a transaction's command: its copy goes with EXEC */
            break;

        default:
            ngx_im_redis_copy_free(req.copy);
        }

    } else if (ngx_im_redis_clustered && reply->type == REDIS_REPLY_ERROR
               && reply->len > 6 && ngx_strncmp(reply->str, "MOVED ", 6) == 0)
    {
        /* a command of a transaction kept no copy (DISCARD, or out of
         * memory): not followed, but the next one goes right */
        ngx_im_redis_read_map();
    }

    now = ngx_im_redis_conn_now();
    ngx_im_metrics_observe(&ngx_im_stats->redis,
                           now > req.sent ? now - req.sent : 0);

    if (req.cb) {
        req.cb(reply, req.data);
    }

    return NGX_OK;
}


/*
 * A command sent again, as it was, on another connection (a redirect),
 * with its callback and its copy: ASKING first for an ASK, whose "+OK"
 * goes to no callback.  A transaction goes whole, each of its commands
 * with its callback again (ASKING holds until EXEC inside a MULTI).
 */

static ngx_int_t
ngx_im_redis_resend(ngx_im_redis_conn_t *rc, ngx_im_redis_req_t *req,
    ngx_uint_t asking)
{
    ngx_uint_t             i;
    ngx_im_redis_copy_t   *copy;
    ngx_im_redis_txcb_t   *cbs;
    ngx_im_redis_queue_t  *q;

    if (rc->state != NGX_IM_REDIS_READY) {
        return NGX_ERROR;
    }

    q = ngx_im_redis_queue(rc);
    if (q == NULL) {
        return NGX_ERROR;
    }

    copy = req->copy;

    while (q->size - q->n < copy->cmds + 1) {
        if (ngx_im_redis_grow(q) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (asking) {
        if (ngx_im_redis_conn_append(rc,
                                     (u_char *) "*1\r\n$6\r\nASKING\r\n", 16)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_im_redis_push(q, NULL, NULL, ngx_im_redis_conn_now(), NULL);

        ngx_im_redis_conn_sent(rc, 1);
    }

    if (ngx_im_redis_conn_append(rc, ngx_im_redis_copy_bytes(copy),
                                 copy->len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    copy->answered = 0;
    copy->to = NULL;
    copy->asking = 0;
    copy->tryagain = 0;

    cbs = (ngx_im_redis_txcb_t *) (copy + 1);

    for (i = 0; i + 1 < copy->cmds; i++) {
        ngx_im_redis_push(q, cbs[i].cb, cbs[i].data, req->sent, copy);
    }

    q->ring[(q->first + q->n++) & (q->size - 1)] = *req;

    ngx_im_redis_conn_sent(rc, copy->cmds);

    return NGX_OK;
}


/*
 * The reply to a command with a copy.  A transaction's commands are
 * answered first ("+OK", "+QUEUED", or an error at queue time: the first
 * redirect is noted, the map entry changed by a MOVED); at EXEC's
 * EXECABORT the whole is sent again where the note says (decision 047).
 */

static ngx_int_t
ngx_im_redis_redirected(ngx_im_redis_conn_t *rc, ngx_im_redis_req_t *req,
    redisReply *reply)
{
    ngx_im_redis_copy_t  *copy;

    copy = req->copy;

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_im_redis_down_said(rc, reply);
    }

    if (copy->cmds > 1 && ++copy->answered < copy->cmds) {
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_im_redis_tx_queued(rc, copy, reply);
        }

        return NGX_DONE;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        /* a command served (a transaction's MULTI is answered +OK even
         * while the cluster is down: only its EXEC counts) */
        ngx_im_redis_down = 0;
        return NGX_DECLINED;
    }

    if (copy->cmds > 1 && (copy->to || copy->tryagain)) {
        return ngx_im_redis_tx_again(rc, req, reply);
    }

    return ngx_im_redis_redirect(rc, req, reply);
}


/* a transaction's command refused at queue time: the first redirect of
 * the transaction noted */

static void
ngx_im_redis_tx_queued(ngx_im_redis_conn_t *rc, ngx_im_redis_copy_t *copy,
    redisReply *reply)
{
    ngx_im_redirect_t       r;
    ngx_im_cluster_node_t  *node;

    if (copy->to || copy->tryagain) {
        return;
    }

    if (ngx_im_slot_redirect((u_char *) reply->str, reply->len, &r)
        == NGX_IM_REDIRECT_NONE)
    {
        if (reply->len >= 8 && ngx_strncmp(reply->str, "TRYAGAIN", 8) == 0)
        {
            copy->tryagain = 1;
        }

        return;
    }

    node = ngx_im_redis_cluster_redirect(&r, rc);
    if (node == NULL) {
        /* a node not known by that name: refused; the map says where
         * the slot is for the next one */
        if (r.kind == NGX_IM_REDIRECT_MOVED) {
            ngx_im_redis_read_map();
        }

        return;
    }

    if (r.kind == NGX_IM_REDIRECT_MOVED) {
        ngx_im_redis_read_map();

    } else {
        copy->asking = 1;
    }

    copy->to = node;
}


/* a transaction is sent again at most 5 times, within im_redis_timeout
 * of its first sending */

static ngx_int_t
ngx_im_redis_tx_late(ngx_im_redis_conn_t *rc, ngx_im_redis_copy_t *copy,
    redisReply *reply)
{
    if (copy->redirects++ < NGX_IM_REDIS_REDIRECTS
        && ngx_current_msec - copy->made < ngx_im_get_conf()->redis_timeout)
    {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                  "im redis cluster: a transaction sent %ui times in %M ms "
                  "is refused, the last answer: %*s", copy->redirects,
                  ngx_current_msec - copy->made, reply->len, reply->str);

    return NGX_ERROR;
}


/*
 * EXECABORT after a redirect at queue time: nothing of the transaction
 * ran, and it goes again, whole, to the node the redirect named (TRYAGAIN:
 * to the same one, in a while), within im_redis_timeout of its first
 * sending; then the caller has its refusal.
 */

static ngx_int_t
ngx_im_redis_tx_again(ngx_im_redis_conn_t *rc, ngx_im_redis_req_t *req,
    redisReply *reply)
{
    ngx_im_redis_copy_t  *copy;

    copy = req->copy;

    if (copy->tryagain) {
        return ngx_im_redis_retry(rc, req);
    }

    if (ngx_im_redis_tx_late(rc, copy, reply) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (copy->asking) {
        ngx_im_stats->redis_asked++;

    } else {
        ngx_im_stats->redis_moved++;
    }

    ngx_im_stats->redis_tx_again++;

    return ngx_im_redis_resend(&copy->to->conns[rc->index], req,
                               copy->asking);
}


/*
 * MOVED: the slot lives elsewhere now; the map's entry points there, a
 * whole map read follows, and the command goes there.  The commands of
 * that slot pipelined behind it get the same answer and follow it, in
 * their order.  ASK: this key, this once, on the node importing the
 * slot: ASKING and the command there, the map unchanged.  TRYAGAIN: the
 * same again in a while.  Any other error (CLUSTERDOWN) is the caller's:
 * a refusal.  A transaction whose EXEC is redirected goes whole.
 */

static ngx_int_t
ngx_im_redis_redirect(ngx_im_redis_conn_t *rc, ngx_im_redis_req_t *req,
    redisReply *reply)
{
    ngx_im_redirect_t       r;
    ngx_im_cluster_node_t  *node;

    if (ngx_im_slot_redirect((u_char *) reply->str, reply->len, &r)
        == NGX_IM_REDIRECT_NONE)
    {
        if (reply->len >= 8 && ngx_strncmp(reply->str, "TRYAGAIN", 8) == 0)
        {
            /* a script's keys on both sides of a slot being moved */
            return ngx_im_redis_retry(rc, req);
        }

        return NGX_DECLINED;
    }

    if (req->copy->cmds > 1) {
        if (ngx_im_redis_tx_late(rc, req->copy, reply) != NGX_OK) {
            return NGX_DECLINED;
        }

    } else if (req->copy->redirects++ == NGX_IM_REDIS_REDIRECTS) {
        ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                      "im redis cluster: %d redirects of one command, "
                      "the last: %s", NGX_IM_REDIS_REDIRECTS, reply->str);
        return NGX_DECLINED;
    }

    node = ngx_im_redis_cluster_redirect(&r, rc);
    if (node == NULL) {
        if (r.kind == NGX_IM_REDIRECT_MOVED) {
            ngx_im_redis_read_map();
        }

        return NGX_DECLINED;
    }

    if (r.kind == NGX_IM_REDIRECT_MOVED) {
        ngx_im_stats->redis_moved++;
        ngx_im_redis_read_map();

    } else {
        ngx_im_stats->redis_asked++;
    }

    if (req->copy->cmds > 1) {
        ngx_im_stats->redis_tx_again++;
    }

    return ngx_im_redis_resend(&node->conns[rc->index], req,
                               r.kind == NGX_IM_REDIRECT_ASK);
}


/*
 * The slot map: read at the start from the seed, and again after a MOVED
 * or a channel moved away, from the first master whose inbox connection
 * is ready.
 */

static void
ngx_im_redis_map_read(redisReply *reply, void *data)
{
    ngx_uint_t  first;

    ngx_im_redis_map_reading = 0;

    first = !ngx_im_redis_cluster_mapped();

    if (ngx_im_redis_cluster_map(reply) != NGX_OK) {
        if (!ngx_im_redis_map_ev.timer_set) {
            ngx_add_timer(&ngx_im_redis_map_ev, 1000);
        }

        return;
    }

    if (first) {
        /* the connections that came before the map are of use now */
        ngx_im_redis_mapped();
    }

    if (ngx_im_redis_map_again) {
        ngx_im_redis_map_again = 0;
        ngx_im_redis_read_map();
        return;
    }

    if (!ngx_im_redis_cluster_ready(NGX_IM_REDIS_INBOX)
        && !ngx_im_redis_map_ev.timer_set)
    {
        /* a master of the map does not answer: gone for good when a
         * replica is promoted in its place, which a later map says */
        ngx_add_timer(&ngx_im_redis_map_ev, 1000);
    }
}


void
ngx_im_redis_read_map(void)
{
    static const char  *argv[2] = { "CLUSTER", "SLOTS" };
    static size_t       argvlen[2] = { 7, 5 };

    ngx_uint_t              i;
    ngx_im_cluster_node_t  *node;

    if (ngx_im_redis_exiting) {
        return;
    }

    if (ngx_im_redis_map_reading) {
        ngx_im_redis_map_again = 1;
        return;
    }

    for (i = 0; i < ngx_im_redis_cluster_nodes(); i++) {
        node = ngx_im_redis_cluster_node(i);

        if (ngx_im_redis_send(&node->conns[NGX_IM_REDIS_INBOX],
                              ngx_im_redis_map_read, NULL, 2, argv, argvlen,
                              0)
            == NGX_OK)
        {
            ngx_im_redis_map_reading = 1;
            ngx_im_stats->redis_map_reads++;
            return;
        }
    }

    /* no node answers now: again in a second */

    if (!ngx_im_redis_map_ev.timer_set) {
        ngx_add_timer(&ngx_im_redis_map_ev, 1000);
    }
}


static void
ngx_im_redis_map_handler(ngx_event_t *ev)
{
    ngx_im_redis_read_map();
}


/*
 * TRYAGAIN: a command of several keys (the strike script) while their
 * slot moves and some of the keys are gone already.  It is sent again,
 * whole, on the same connection every 50 ms: once the move is done the
 * old owner answers MOVED, which is followed.  After im_redis_timeout the
 * caller gets the failure (nothing was done: nothing acknowledged).
 */

#define NGX_IM_REDIS_RETRY_DELAY  50

static ngx_int_t
ngx_im_redis_retry(ngx_im_redis_conn_t *rc, ngx_im_redis_req_t *req)
{
    size_t                 size;
    ngx_im_redis_retry_t  *r;

    if (ngx_current_msec - req->copy->made
        >= ngx_im_get_conf()->redis_timeout)
    {
        return NGX_DECLINED;
    }

    if (ngx_im_redis_nretries == ngx_im_redis_retries_size) {
        size = ngx_im_redis_retries_size ? 2 * ngx_im_redis_retries_size
                                         : 16;

        r = ngx_alloc(size * sizeof(ngx_im_redis_retry_t), ngx_cycle->log);
        if (r == NULL) {
            return NGX_DECLINED;
        }

        if (ngx_im_redis_retries) {
            ngx_memcpy(r, ngx_im_redis_retries,
                       ngx_im_redis_nretries * sizeof(ngx_im_redis_retry_t));
            ngx_free(ngx_im_redis_retries);
        }

        ngx_im_redis_retries = r;
        ngx_im_redis_retries_size = size;
    }

    r = &ngx_im_redis_retries[ngx_im_redis_nretries++];
    r->rc = rc;
    r->req = *req;

    ngx_im_stats->redis_tryagain++;

    if (!ngx_im_redis_retry_ev.timer_set) {
        ngx_add_timer(&ngx_im_redis_retry_ev, NGX_IM_REDIS_RETRY_DELAY);
    }

    return NGX_OK;
}


static void
ngx_im_redis_retry_handler(ngx_event_t *ev)
{
    ngx_uint_t            i, n;
    ngx_im_redis_req_t    req;
    ngx_im_redis_retry_t  *r;

    /* a resend may be answered TRYAGAIN again and come back here, but
     * not before this loop is done: replies come in later passes */

    n = ngx_im_redis_nretries;
    ngx_im_redis_nretries = 0;

    for (i = 0; i < n; i++) {
        r = &ngx_im_redis_retries[i];
        req = r->req;

        if (ngx_im_redis_resend(r->rc, &req, 0) == NGX_OK) {
            continue;
        }

        ngx_im_redis_copy_free(req.copy);
        ngx_im_stats->redis_failed++;

        if (req.cb) {
            req.cb(NULL, req.data);
        }
    }
}


static void
ngx_im_redis_retry_fail(void)
{
    ngx_im_redis_req_t  req;

    while (ngx_im_redis_nretries) {
        req = ngx_im_redis_retries[--ngx_im_redis_nretries].req;

        ngx_im_redis_copy_free(req.copy);

        if (req.cb) {
            req.cb(NULL, req.data);
        }
    }
}


/*
 * CLUSTERDOWN (a slot without a master: the cluster refuses every
 * command while cluster-require-full-coverage is on) is a refusal like
 * any error, and makes logins answer "try later" (ngx_im_redis_away())
 * until a command is served again; the operator is told which node says
 * it, and how many commands it refused, at most every 10 seconds rather
 * than per command.
 */

static void
ngx_im_redis_down_said(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    static time_t      logged;
    static ngx_uint_t  refused;

    if (reply->len < 11 || ngx_strncmp(reply->str, "CLUSTERDOWN", 11) != 0) {
        return;
    }

    refused++;

    /* logins answer "try later" until a command is served again; a probe
     * every second finds the end when no other command would */
    ngx_im_redis_down = 1;

    if (!ngx_im_redis_down_ev.timer_set && !ngx_im_redis_exiting) {
        ngx_add_timer(&ngx_im_redis_down_ev, 1000);
    }

    if (ngx_time() - logged < 10) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                  "im redis cluster: \"%*s\": %ui command(s) refused "
                  "since the last such line", reply->len, reply->str,
                  refused);

    logged = ngx_time();
    refused = 0;
}


ngx_uint_t
ngx_im_redis_cluster_down(void)
{
    return ngx_im_redis_down;
}


/* while the cluster is down: CLUSTER INFO of a master, every second */

static void
ngx_im_redis_down_handler(ngx_event_t *ev)
{
    static const char  *argv[2] = { "CLUSTER", "INFO" };
    static size_t       argvlen[2] = { 7, 4 };

    ngx_uint_t              i;
    ngx_im_cluster_node_t  *node;

    if (!ngx_im_redis_down || ngx_im_redis_exiting) {
        return;
    }

    for (i = 0; i < ngx_im_redis_cluster_nodes(); i++) {
        node = ngx_im_redis_cluster_node(i);

        if (ngx_im_redis_send(&node->conns[NGX_IM_REDIS_INBOX],
                              ngx_im_redis_down_read, NULL, 2, argv, argvlen,
                              0)
            == NGX_OK)
        {
            return;
        }
    }

    ngx_add_timer(&ngx_im_redis_down_ev, 1000);
}


static void
ngx_im_redis_down_read(redisReply *reply, void *data)
{
    if (!ngx_im_redis_down || ngx_im_redis_exiting) {
        return;
    }

    if (reply && reply->type == REDIS_REPLY_STRING
        && ngx_strnstr((u_char *) reply->str, "cluster_state:ok",
                       reply->len)
           != NULL)
    {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "im redis cluster: the cluster serves again");
        ngx_im_redis_down = 0;
        return;
    }

    if (!ngx_im_redis_down_ev.timer_set) {
        ngx_add_timer(&ngx_im_redis_down_ev, 1000);
    }
}
