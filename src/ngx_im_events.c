/*
 * ngx_im_events.c: what happened, for the business.
 *
 * Owns the events' configuration (im_events_stream, im_events_hook), the
 * JSON of each event, and the worker's two bounded queues, one per output.
 * An event is built once per output that is on and queued; the first one of
 * an event loop pass posts the flush, which hands the stream's queue to
 * Redis (one XADD each, pipelined on a connection of their own, so message
 * traffic never waits behind them) and the hook's queue to the hook client
 * (a batch, a JSON array, one POST at a time, retried with backoff until a
 * 2xx).  A queue counts what it holds and what is in flight; beyond its
 * bound an event is dropped and counted.  Delivery is at least once: an
 * XADD or a POST whose answer was lost is sent again.
 */

#include "ngx_im_events.h"
#include "ngx_im_hook.h"


#define NGX_IM_EVENTS_STREAM      0
#define NGX_IM_EVENTS_HOOK        1

#define NGX_IM_EVENTS_RETRY_MIN   1000
#define NGX_IM_EVENTS_RETRY_MAX   30000

/* the largest event: an offline one with a 200-byte node id and an IPv6
 * address */
#define NGX_IM_EVENT_MAX          1024

/* a parameter of another name */
#define NGX_IM_EVENTS_OTHER       ((char *) -2)


typedef struct ngx_im_event_s  ngx_im_event_t;

struct ngx_im_event_s {
    ngx_im_event_t         *next;
    size_t                  len;
    u_char                  data[1];
};


typedef struct {
    ngx_im_event_t         *head;
    ngx_im_event_t        **tail;
    ngx_uint_t              queued;
    ngx_uint_t              inflight;
    ngx_uint_t              max;
} ngx_im_events_queue_t;


typedef struct {
    ngx_str_t               stream;         /* the stream's key */
    ngx_uint_t              maxlen;         /* XADD MAXLEN ~ */
    ngx_uint_t              stream_queue;
    ngx_im_hook_conf_t     *hook;
    ngx_uint_t              batch;
    ngx_uint_t              hook_queue;
    ngx_msec_t              hook_timeout;
} ngx_im_events_conf_t;


static ngx_im_events_conf_t *ngx_im_events_conf(ngx_conf_t *cf);
static char *ngx_im_events_number(ngx_conf_t *cf, ngx_str_t *v,
    const char *name, ngx_uint_t *n);
static void ngx_im_events_add(u_char *p, size_t len);
static void ngx_im_events_flush(ngx_event_t *ev);
static void ngx_im_events_xadded(redisReply *reply, void *data);
static void ngx_im_events_post_batch(void);
static void ngx_im_events_send_batch(void);
static void ngx_im_events_posted(ngx_uint_t status, void *data);
static void ngx_im_events_retry(ngx_event_t *ev);
static u_char *ngx_im_events_head(u_char *p, const char *type);
static u_char *ngx_im_events_msgid(u_char *p, const u_char *msgid);


ngx_uint_t                     ngx_im_events_on;

static ngx_im_events_conf_t   *ngx_im_events_cf;
static ngx_im_events_queue_t   ngx_im_events_q[2];
static ngx_event_t             ngx_im_events_flush_ev;
static ngx_event_t             ngx_im_events_retry_ev;
static ngx_connection_t        ngx_im_events_dummy;
static ngx_msec_t              ngx_im_events_backoff;
static ngx_uint_t              ngx_im_events_exiting;

/* the hook's batch in flight (or waiting for its retry) */
static u_char                 *ngx_im_events_batch;
static size_t                  ngx_im_events_batch_len;
static ngx_uint_t              ngx_im_events_batch_n;
static ngx_uint_t              ngx_im_events_busy;

/* "time":..,"node":"..","worker":.. once escaped: the node id */
static ngx_str_t               ngx_im_events_node;


/* configuration */

static ngx_im_events_conf_t *
ngx_im_events_conf(ngx_conf_t *cf)
{
    ngx_im_conf_t         *imcf;
    ngx_im_events_conf_t  *ecf;

    imcf = (ngx_im_conf_t *) ngx_get_conf(cf->cycle->conf_ctx, ngx_im_module);

    if (imcf->events) {
        return imcf->events;
    }

    ecf = ngx_pcalloc(cf->pool, sizeof(ngx_im_events_conf_t));
    if (ecf == NULL) {
        return NULL;
    }

    ecf->maxlen = 100000;
    ecf->stream_queue = 10000;
    ecf->batch = 100;
    ecf->hook_queue = 10000;
    ecf->hook_timeout = 5000;

    imcf->events = ecf;

    return ecf;
}


static char *
ngx_im_events_number(ngx_conf_t *cf, ngx_str_t *v, const char *name,
    ngx_uint_t *n)
{
    size_t     len;
    ngx_int_t  rc;

    len = ngx_strlen(name);

    if (v->len <= len || ngx_strncmp(v->data, name, len) != 0) {
        return NGX_IM_EVENTS_OTHER;
    }

    rc = ngx_atoi(v->data + len, v->len - len);

    if (rc == NGX_ERROR || rc == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"%V\"", v);
        return NGX_CONF_ERROR;
    }

    *n = (ngx_uint_t) rc;

    return NGX_CONF_OK;
}


/* im_events_stream key [maxlen=n] [queue=n] */

char *
ngx_im_events_stream_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_im_conf_t  *imcf = conf;

    char                  *rv;
    ngx_str_t             *value;
    ngx_uint_t             i;
    ngx_im_events_conf_t  *ecf;

    ecf = ngx_im_events_conf(cf);
    if (ecf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ecf->stream.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    ecf->stream = value[1];

    for (i = 2; i < cf->args->nelts; i++) {
        rv = ngx_im_events_number(cf, &value[i], "maxlen=", &ecf->maxlen);
        if (rv == NGX_IM_EVENTS_OTHER) {
            rv = ngx_im_events_number(cf, &value[i], "queue=",
                                      &ecf->stream_queue);
        }

        if (rv == NGX_IM_EVENTS_OTHER) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    /* the stream has a Redis connection of its own */
    imcf->redis_events = 1;

    return NGX_CONF_OK;
}


/* im_events_hook http://host:port/path [batch=n] [queue=n] [timeout=t] */

char *
ngx_im_events_hook_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char                  *rv;
    ngx_str_t             *value, t;
    ngx_uint_t             i;
    ngx_im_events_conf_t  *ecf;

    ecf = ngx_im_events_conf(cf);
    if (ecf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ecf->hook) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rv = ngx_im_hook_parse(cf, &value[1], &ecf->hook);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    for (i = 2; i < cf->args->nelts; i++) {
        rv = ngx_im_events_number(cf, &value[i], "batch=", &ecf->batch);
        if (rv == NGX_IM_EVENTS_OTHER) {
            rv = ngx_im_events_number(cf, &value[i], "queue=",
                                      &ecf->hook_queue);
        }

        if (rv == NGX_IM_EVENTS_OTHER
            && ngx_strncmp(value[i].data, "timeout=", 8) == 0)
        {
            t.data = value[i].data + 8;
            t.len = value[i].len - 8;
            ecf->hook_timeout = ngx_parse_time(&t, 0);
            rv = (ecf->hook_timeout == (ngx_msec_t) NGX_ERROR)
                 ? NGX_IM_EVENTS_OTHER : NGX_CONF_OK;
        }

        if (rv == NGX_IM_EVENTS_OTHER) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    return NGX_CONF_OK;
}


/* worker start and end */

ngx_int_t
ngx_im_events_init(ngx_cycle_t *cycle)
{
    size_t                 len;
    ngx_uint_t             i;
    ngx_im_conf_t         *imcf;
    ngx_im_events_conf_t  *ecf;

    imcf = ngx_im_get_conf();
    ecf = imcf->events;

    ngx_im_events_cf = ecf;
    ngx_im_events_on = 0;
    ngx_im_events_exiting = 0;

    for (i = 0; i < 2; i++) {
        ngx_memzero(&ngx_im_events_q[i], sizeof(ngx_im_events_queue_t));
        ngx_im_events_q[i].tail = &ngx_im_events_q[i].head;
    }

    if (ecf == NULL) {
        return NGX_OK;
    }

    ngx_im_events_q[NGX_IM_EVENTS_STREAM].max = ecf->stream.len
                                                ? ecf->stream_queue : 0;
    ngx_im_events_q[NGX_IM_EVENTS_HOOK].max = ecf->hook ? ecf->hook_queue
                                                        : 0;
    ngx_im_events_on = (ecf->stream.len || ecf->hook);

    /* the node id, escaped for JSON once */
    len = imcf->node_id.len
          + ngx_escape_json(NULL, imcf->node_id.data, imcf->node_id.len);

    ngx_im_events_node.data = ngx_pnalloc(cycle->pool, len);
    if (ngx_im_events_node.data == NULL) {
        return NGX_ERROR;
    }

    ngx_im_events_node.len = len;
    (void) ngx_escape_json(ngx_im_events_node.data, imcf->node_id.data,
                           imcf->node_id.len);

    ngx_im_events_dummy.fd = (ngx_socket_t) -1;

    ngx_im_events_flush_ev.handler = ngx_im_events_flush;
    ngx_im_events_flush_ev.data = &ngx_im_events_dummy;
    ngx_im_events_flush_ev.log = cycle->log;

    ngx_im_events_retry_ev.handler = ngx_im_events_retry;
    ngx_im_events_retry_ev.data = &ngx_im_events_dummy;
    ngx_im_events_retry_ev.log = cycle->log;
    ngx_im_events_retry_ev.cancelable = 1;

    ngx_im_events_backoff = NGX_IM_EVENTS_RETRY_MIN;

    return NGX_OK;
}


void
ngx_im_events_exit(void)
{
    ngx_uint_t       i;
    ngx_im_event_t  *e;

    ngx_im_events_exiting = 1;
    ngx_im_events_on = 0;

    if (ngx_im_events_flush_ev.posted) {
        ngx_delete_posted_event(&ngx_im_events_flush_ev);
    }

    if (ngx_im_events_retry_ev.timer_set) {
        ngx_del_timer(&ngx_im_events_retry_ev);
    }

    ngx_im_hook_abort();

    for (i = 0; i < 2; i++) {
        while (ngx_im_events_q[i].head) {
            e = ngx_im_events_q[i].head;
            ngx_im_events_q[i].head = e->next;
            ngx_free(e);
        }
    }

    if (ngx_im_events_batch) {
        ngx_free(ngx_im_events_batch);
        ngx_im_events_batch = NULL;
    }

    ngx_im_events_busy = 0;
}


/* the events */

static u_char *
ngx_im_events_head(u_char *p, const char *type)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return ngx_sprintf(p, "{\"type\":\"%s\",\"time\":%uL,\"node\":\"%V\","
                       "\"worker\":%P", type,
                       (uint64_t) tp->sec * 1000 + tp->msec,
                       &ngx_im_events_node, ngx_pid);
}


/* MsgId: 32 bytes the client chose; as text when it is printable, and
 * always in hex */

static u_char *
ngx_im_events_msgid(u_char *p, const u_char *msgid)
{
    ngx_uint_t  i;

    if (msgid == NULL) {
        return ngx_cpymem(p, ",\"msgid\":null", sizeof(",\"msgid\":null") - 1);
    }

    for (i = 0; i < IM_MSGID_LEN; i++) {
        if (msgid[i] < 0x20 || msgid[i] > 0x7e || msgid[i] == '"'
            || msgid[i] == '\\')
        {
            break;
        }
    }

    if (i == IM_MSGID_LEN) {
        p = ngx_sprintf(p, ",\"msgid\":\"%*s\"", (size_t) IM_MSGID_LEN,
                        msgid);

    } else {
        p = ngx_cpymem(p, ",\"msgid\":null", sizeof(",\"msgid\":null") - 1);
    }

    p = ngx_cpymem(p, ",\"msgid_hex\":\"", sizeof(",\"msgid_hex\":\"") - 1);
    p = ngx_hex_dump(p, (u_char *) msgid, IM_MSGID_LEN);
    *p++ = '"';

    return p;
}


void
ngx_im_events_session(uint32_t uid, ngx_uint_t client_id, ngx_uint_t role,
    ngx_str_t *addr, const char *transport, const char *reason,
    ngx_msec_t duration)
{
    u_char  buf[NGX_IM_EVENT_MAX], *p;

    if (!ngx_im_events_on) {
        return;
    }

    p = ngx_im_events_head(buf, reason ? "offline" : "online");
    p = ngx_sprintf(p, ",\"uid\":%uD,\"client_id\":%ui,\"role\":%ui,"
                    "\"addr\":\"%*s\",\"transport\":\"%s\"",
                    uid, client_id, role,
                    ngx_min(addr->len, (size_t) NGX_SOCKADDR_STRLEN),
                    addr->data, transport);

    if (reason) {
        p = ngx_sprintf(p, ",\"reason\":\"%s\",\"duration_ms\":%M",
                        reason, duration);
    }

    *p++ = '}';

    ngx_im_events_add(buf, p - buf);
}


void
ngx_im_events_stored(const u_char *msgid, uint32_t from, uint32_t to,
    uint32_t gid, size_t size)
{
    u_char  buf[NGX_IM_EVENT_MAX], *p;

    if (!ngx_im_events_on) {
        return;
    }

    p = ngx_im_events_head(buf, "stored");
    p = ngx_im_events_msgid(p, msgid);
    p = ngx_sprintf(p, ",\"from\":%uD,\"to\":%uD,\"gid\":%uD,\"size\":%uz}",
                    from, to, gid, size);

    ngx_im_events_add(buf, p - buf);
}


void
ngx_im_events_delivered(const u_char *msgid, uint32_t uid,
    ngx_uint_t client_id, ngx_msec_int_t after)
{
    u_char  buf[NGX_IM_EVENT_MAX], *p;

    if (!ngx_im_events_on) {
        return;
    }

    p = ngx_im_events_head(buf, "delivered");
    p = ngx_im_events_msgid(p, msgid);
    p = ngx_sprintf(p, ",\"uid\":%uD,\"client_id\":%ui", uid, client_id);

    if (after >= 0) {
        p = ngx_sprintf(p, ",\"after_ms\":%M", (ngx_msec_t) after);
    }

    *p++ = '}';

    ngx_im_events_add(buf, p - buf);
}


void
ngx_im_events_dropped(const u_char *msgid, uint32_t uid, const char *reason,
    ngx_uint_t count)
{
    u_char  buf[NGX_IM_EVENT_MAX], *p;

    if (!ngx_im_events_on) {
        return;
    }

    p = ngx_im_events_head(buf, "dropped");
    p = ngx_im_events_msgid(p, msgid);
    p = ngx_sprintf(p, ",\"uid\":%uD,\"reason\":\"%s\",\"count\":%ui}",
                    uid, reason, count);

    ngx_im_events_add(buf, p - buf);
}


/* a copy in each queue that is on, within its bound */

static void
ngx_im_events_add(u_char *p, size_t len)
{
    ngx_uint_t              i;
    ngx_im_event_t         *e;
    ngx_im_events_queue_t  *q;

    for (i = 0; i < 2; i++) {
        q = &ngx_im_events_q[i];

        if (q->max == 0) {
            continue;
        }

        if (q->queued + q->inflight >= q->max) {
            ngx_im_stats->events_dropped[i]++;
            continue;
        }

        e = ngx_alloc(offsetof(ngx_im_event_t, data) + len, ngx_cycle->log);
        if (e == NULL) {
            ngx_im_stats->events_dropped[i]++;
            continue;
        }

        e->next = NULL;
        e->len = len;
        ngx_memcpy(e->data, p, len);

        *q->tail = e;
        q->tail = &e->next;
        q->queued++;
    }

    if (!ngx_im_events_flush_ev.posted) {
        ngx_post_event(&ngx_im_events_flush_ev, &ngx_posted_events);
    }
}


static ngx_im_event_t *
ngx_im_events_take(ngx_im_events_queue_t *q)
{
    ngx_im_event_t  *e;

    e = q->head;

    if (e) {
        q->head = e->next;

        if (q->head == NULL) {
            q->tail = &q->head;
        }

        q->queued--;
    }

    return e;
}


static void
ngx_im_events_flush(ngx_event_t *ev)
{
    const char             *argv[8];
    size_t                  argvlen[8];
    u_char                  maxlen[NGX_INT_T_LEN];
    ngx_im_event_t         *e;
    ngx_im_events_queue_t  *q;

    if (ngx_im_events_exiting) {
        return;
    }

    /* the stream: one XADD per event */

    q = &ngx_im_events_q[NGX_IM_EVENTS_STREAM];

    if (q->queued && ngx_im_redis_ready(NGX_IM_REDIS_EVENTS)) {
        argv[0] = "XADD";
        argvlen[0] = 4;
        argv[1] = (char *) ngx_im_events_cf->stream.data;
        argvlen[1] = ngx_im_events_cf->stream.len;
        argv[2] = "MAXLEN";
        argvlen[2] = 6;
        argv[3] = "~";
        argvlen[3] = 1;
        argv[4] = (char *) maxlen;
        argvlen[4] = ngx_sprintf(maxlen, "%ui", ngx_im_events_cf->maxlen)
                     - maxlen;
        argv[5] = "*";
        argvlen[5] = 1;
        argv[6] = "event";
        argvlen[6] = 5;

        while (q->head) {
            e = q->head;

            argv[7] = (char *) e->data;
            argvlen[7] = e->len;

            if (ngx_im_redis_cmd(NGX_IM_REDIS_EVENTS, ngx_im_events_xadded,
                                 e, 8, argv, argvlen)
                != NGX_OK)
            {
                break;
            }

            (void) ngx_im_events_take(q);
            q->inflight++;
        }
    }

    if (q->queued && !ngx_im_events_retry_ev.timer_set) {
        /* Redis is away: look again later */
        ngx_add_timer(&ngx_im_events_retry_ev, NGX_IM_EVENTS_RETRY_MIN);
    }

    /* the hook: a batch at a time; the next one when it is through */

    if (ngx_im_events_q[NGX_IM_EVENTS_HOOK].queued
        && ngx_im_events_batch == NULL)
    {
        ngx_im_events_post_batch();
    }
}


static void
ngx_im_events_xadded(redisReply *reply, void *data)
{
    ngx_im_event_t  *e = data;

    ngx_im_events_queue_t  *q;

    q = &ngx_im_events_q[NGX_IM_EVENTS_STREAM];
    q->inflight--;

    if (reply && reply->type != REDIS_REPLY_ERROR) {
        ngx_im_stats->events[NGX_IM_EVENTS_STREAM]++;
        ngx_free(e);
        return;
    }

    if (reply) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im events: XADD failed: %s", reply->str);
    }

    if (ngx_im_events_exiting) {
        ngx_free(e);
        return;
    }

    /* at least once: the event goes back to the front of the queue */

    e->next = q->head;
    q->head = e;

    if (q->tail == &q->head) {
        q->tail = &e->next;
    }

    q->queued++;

    if (!ngx_im_events_retry_ev.timer_set) {
        ngx_add_timer(&ngx_im_events_retry_ev, NGX_IM_EVENTS_RETRY_MIN);
    }
}


static void
ngx_im_events_post_batch(void)
{
    u_char                 *p;
    size_t                  len;
    ngx_uint_t              n;
    ngx_im_event_t         *e;
    ngx_im_events_queue_t  *q;

    q = &ngx_im_events_q[NGX_IM_EVENTS_HOOK];

    len = 2;
    n = 0;

    for (e = q->head; e && n < ngx_im_events_cf->batch; e = e->next) {
        len += e->len + 1;
        n++;
    }

    p = ngx_alloc(len, ngx_cycle->log);
    if (p == NULL) {
        return;
    }

    ngx_im_events_batch = p;
    *p++ = '[';

    for (n = 0; n < ngx_im_events_cf->batch && q->head; n++) {
        e = ngx_im_events_take(q);

        if (n) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, e->data, e->len);
        ngx_free(e);
    }

    *p++ = ']';

    ngx_im_events_batch_len = p - ngx_im_events_batch;
    ngx_im_events_batch_n = n;
    q->inflight = n;

    ngx_im_events_send_batch();
}


static void
ngx_im_events_send_batch(void)
{
    ngx_im_events_busy = 1;

    if (ngx_im_hook_post(ngx_im_events_cf->hook, ngx_im_events_batch,
                         ngx_im_events_batch_len,
                         ngx_im_events_cf->hook_timeout,
                         ngx_im_events_posted, NULL)
        != NGX_OK)
    {
        /* kept, and tried again after the backoff */
        ngx_im_events_busy = 0;

        if (!ngx_im_events_retry_ev.timer_set) {
            ngx_add_timer(&ngx_im_events_retry_ev, ngx_im_events_backoff);
        }
    }
}


static void
ngx_im_events_posted(ngx_uint_t status, void *data)
{
    ngx_im_events_queue_t  *q;

    q = &ngx_im_events_q[NGX_IM_EVENTS_HOOK];
    ngx_im_events_busy = 0;

    if (status >= 200 && status < 300) {
        ngx_im_stats->events[NGX_IM_EVENTS_HOOK] += ngx_im_events_batch_n;
        ngx_free(ngx_im_events_batch);
        ngx_im_events_batch = NULL;
        q->inflight = 0;
        ngx_im_events_backoff = NGX_IM_EVENTS_RETRY_MIN;

        if (q->queued) {
            ngx_im_events_post_batch();
        }

        return;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "im events: the hook answered %ui; %ui events are tried "
                  "again in %M ms", status, ngx_im_events_batch_n,
                  ngx_im_events_backoff);

    if (!ngx_im_events_retry_ev.timer_set) {
        ngx_add_timer(&ngx_im_events_retry_ev, ngx_im_events_backoff);
    }

    ngx_im_events_backoff *= 2;

    if (ngx_im_events_backoff > NGX_IM_EVENTS_RETRY_MAX) {
        ngx_im_events_backoff = NGX_IM_EVENTS_RETRY_MAX;
    }
}


static void
ngx_im_events_retry(ngx_event_t *ev)
{
    if (ngx_im_events_exiting) {
        return;
    }

    if (ngx_im_events_batch && !ngx_im_events_busy) {
        /* the same batch again: at least once */
        ngx_im_events_send_batch();
    }

    ngx_im_events_flush(ev);
}
