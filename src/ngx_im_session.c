/*
 * ngx_im_session.c: the protocol state machine shared by both transports.
 *
 * Owns a session's life: buffered output with a hard cap (a peer that does
 * not read is closed, never buffered without bound), the CONNECT rule and
 * timer, login through the transport's auth hook and the router's login
 * policy, publishing with responses strictly in request order, pushes with
 * re-push and ack matching, the inbox after login, heartbeats, kicks, the
 * grace close and the teardown that hands every unacknowledged message back
 * to the store.  Closing is always deferred to a posted event, so no caller
 * ever finds its session freed under it.
 */

#include "ngx_im_session.h"
#include "ngx_im_router.h"

#if (NGX_LINUX && defined __GLIBC__)
#include <malloc.h>
#define NGX_IM_HAVE_MALLOC_TRIM  1
#endif


/*
 * Output chunks: one allocation of 1 KB holds the chain link, the buffer
 * header and the bytes; a session with more to send chains several.  Each
 * session that has output waiting until the end of the pass holds one, so
 * they are small; spare ones are kept for reuse, but no more than
 * NGX_IM_CHUNKS_FREE, or a burst would stay allocated for good.
 */
#define NGX_IM_CHUNK_SIZE   1024
#define NGX_IM_CHUNK        (NGX_IM_CHUNK_SIZE - sizeof(ngx_chain_t)            \
                             - sizeof(ngx_buf_t))
#define NGX_IM_CHUNKS_FREE  256
#define NGX_IM_READ_BUF     65536
#define NGX_IM_READ_LOOPS   16
#define NGX_IM_DEFER_MAX    65536


typedef struct {
    ngx_queue_t            queue;
    ngx_im_msg_t          *msg;
    ngx_msec_t             deadline;
    ngx_uint_t             repushes;
    unsigned               stored:1;
    unsigned               live:1;          /* counted in waiting_bytes */
} ngx_im_inflight_t;


typedef struct {
    ngx_im_pub_t          *pub;
    ngx_im_msg_t          *msg;
    uint32_t               sender;
    ngx_uint_t             part;
    ngx_uint_t             n;
    uint32_t               uids[1];
} ngx_im_group_req_t;


/* per-message records: no malloc for them once the worker has warmed up */

static ngx_im_spares_t  ngx_im_spare_inflight =
    ngx_im_spares(ngx_im_inflight_t, 4096);
static ngx_im_spares_t  ngx_im_spare_pub = ngx_im_spares(ngx_im_pub_t, 4096);

#define ngx_im_inflight_alloc()  ngx_im_spare_get(&ngx_im_spare_inflight)
#define ngx_im_inflight_free(f)  ngx_im_spare_put(&ngx_im_spare_inflight, f)
#define ngx_im_pub_alloc()       ngx_im_spare_get(&ngx_im_spare_pub)
#define ngx_im_pub_free(pub)     ngx_im_spare_put(&ngx_im_spare_pub, pub)


static void ngx_im_session_timeout(ngx_im_session_t *s);
static void ngx_im_session_add_timer(ngx_im_session_t *s, ngx_msec_t delay);
static void ngx_im_session_del_timer(ngx_im_session_t *s);
static void ngx_im_session_closing(ngx_im_session_t *s);
static void ngx_im_session_trim_note(ngx_uint_t n);
static void ngx_im_session_repush_handler(ngx_event_t *ev);
static void ngx_im_session_close_handler(ngx_event_t *ev);
static void ngx_im_session_post_close(ngx_im_session_t *s);
static void ngx_im_session_teardown(ngx_im_session_t *s);
static void ngx_im_session_finalize(ngx_im_session_t *s);
static void ngx_im_session_post_flush(ngx_im_session_t *s);
static void ngx_im_session_free_out(ngx_im_session_t *s);
static void ngx_im_session_connect(ngx_im_session_t *s, im_msg_t *m);
static void ngx_im_session_live(ngx_im_session_t *s, u_char *p, size_t n,
    im_msg_t *m);
static void ngx_im_session_publish(ngx_im_session_t *s, u_char *p,
    size_t n, im_msg_t *m);
static void ngx_im_session_ack(ngx_im_session_t *s, im_msg_t *m);
static void ngx_im_session_violation(ngx_im_session_t *s, u_char cmd);
static void ngx_im_session_grace(ngx_im_session_t *s);
static void ngx_im_session_answer(ngx_im_session_t *s);
static void ngx_im_session_simple(ngx_im_session_t *s, u_char cmd);
static void ngx_im_session_release(ngx_im_session_t *s, ngx_queue_t *q);
static void ngx_im_session_loaded(redisReply *reply, void *data);
static void ngx_im_session_load_retry(ngx_im_session_t *s);
static void ngx_im_session_merge(ngx_im_session_t *s, ngx_queue_t *inbox);
static void ngx_im_session_feed(ngx_im_session_t *s);
static void ngx_im_session_members(void *data, ngx_int_t rc,
    uint32_t *uids, ngx_uint_t n);
static void ngx_im_pub_fail(ngx_im_pub_t *pub, ngx_uint_t refused);
static void ngx_im_session_dispatch(ngx_im_session_t *s);
static void ngx_im_pub_deliver(ngx_im_pub_t *pub);
static ngx_im_inflight_t *ngx_im_session_find(ngx_queue_t *q,
    const u_char *msgid);


static u_char        ngx_im_read_buf[NGX_IM_READ_BUF];
static ngx_str_t     ngx_im_session_nobody = ngx_string("");
/* spare chunks of the standard size; the first word of a spare is its
 * chain link's, rewritten when it is taken again */
static ngx_im_spares_t  ngx_im_spare_chunks =
    { NULL, 0, NGX_IM_CHUNKS_FREE, NGX_IM_CHUNK_SIZE, NULL, 0 };
static uint64_t      ngx_im_session_tokens;


ngx_im_session_t *
ngx_im_session_create(ngx_connection_t *c, ngx_im_transport_t *transport,
    void *ctx, ngx_uint_t backend, ngx_im_session_t *mem)
{
    ngx_im_conf_t     *imcf;
    ngx_im_session_t  *s;

    imcf = ngx_im_get_conf();

    if (mem) {
        s = mem;
        ngx_memzero(s, sizeof(ngx_im_session_t));

    } else {
        s = ngx_pcalloc(c->pool, sizeof(ngx_im_session_t));
        if (s == NULL) {
            return NULL;
        }
    }

    s->connection = c;
    s->transport = transport;
    s->ctx = ctx;
    s->backend = backend;
    s->token = ++ngx_im_session_tokens;
    s->last_out = &s->out;

    ngx_queue_init(&s->inflight);
    ngx_queue_init(&s->waiting);
    ngx_queue_init(&s->pubs);


    ngx_im_stats.sessions++;

    if (backend) {
        /* the TCP API speaks as the system, uid 0, from the start */
        s->state = NGX_IM_S_LIVE;

    } else {
        s->state = NGX_IM_S_CONNECT;
        ngx_im_session_add_timer(s, imcf->connect_timeout);
    }

    return s;
}


/*
 * The transport gave the connection a log of its own and let its pool go:
 * nothing of the session may point into either any more.
 */

void
ngx_im_session_moved(ngx_im_session_t *s)
{
    if (s->repush) {
        s->repush->log = s->connection->log;
    }

    if (s->close_ev) {
        s->close_ev->log = s->connection->log;
    }

    /* pool memory; only the login needed it */
    s->cred = NULL;
}


/*
 * An ngx_event_t is 96 bytes, and an idle session needs none but its timer:
 * the re-push event exists while pushes await their acks, the close event
 * once the session closes, the WebSocket detach event until the login.
 * Spare ones are kept for reuse.
 */

static ngx_im_spares_t  ngx_im_spare_events =
    ngx_im_spares(ngx_event_t, 1024);


ngx_event_t *
ngx_im_event_alloc(ngx_event_handler_pt handler, void *data, ngx_log_t *log)
{
    ngx_event_t  *ev;

    ev = ngx_im_spare_get(&ngx_im_spare_events);
    if (ev == NULL) {
        return NULL;
    }

    ngx_memzero(ev, sizeof(ngx_event_t));

    ev->handler = handler;
    ev->data = data;
    ev->log = log;

    return ev;
}


void
ngx_im_event_free(ngx_event_t *ev)
{
    if (ev->timer_set) {
        ngx_del_timer(ev);
    }

    if (ev->posted) {
        ngx_delete_posted_event(ev);
    }

    ngx_im_spare_put(&ngx_im_spare_events, ev);
}


static void
ngx_im_session_drop_repush(ngx_im_session_t *s)
{
    if (s->repush) {
        ngx_im_event_free(s->repush);
        s->repush = NULL;
    }
}


/* input */

void
ngx_im_session_read(ngx_im_session_t *s)
{
    ssize_t            n;
    ngx_uint_t         i;
    ngx_connection_t  *c;

    c = s->connection;

    for (i = 0; i < NGX_IM_READ_LOOPS; i++) {

        if (s->finishing || s->draining) {
            return;
        }

        n = c->recv(c, ngx_im_read_buf, NGX_IM_READ_BUF);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
                ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
            }
            return;
        }

        if (n == 0 && !s->closing && !ngx_queue_empty(&s->pubs)) {
            /* a half-close: the answers still due are sent first */
            ngx_im_session_drain(s, NGX_IM_CLOSE_FLUSH, 0, 0);
            return;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_im_session_close(s, NGX_IM_CLOSE_EOF);
            return;
        }

        s->transport->input(s, ngx_im_read_buf, n);
    }

    /* fairness: let other connections run, come back in this cycle */
    ngx_post_event(c->read, &ngx_posted_events);
}


void
ngx_im_session_message(ngx_im_session_t *s, u_char *p, size_t n)
{
    im_rc_t        rc;
    im_msg_t       m;
    ngx_chain_t   *cl, **ll;
    ngx_buf_t     *b;
    size_t         size;

    if (s->closing || s->draining || s->state == NGX_IM_S_GRACE
        || s->state == NGX_IM_S_CLOSING)
    {
        return;
    }

    switch (s->state) {

    case NGX_IM_S_CONNECT:

        /* the first message must be CONNECT: anything else is closed
         * without a reply */
        if (n == 0 || p[0] != IM_CMD_CONNECT) {
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: first message is not CONNECT");
            ngx_im_session_close(s, NGX_IM_CLOSE_POLICY);
            return;
        }

        rc = im_parse_client(p, n, &m);
        if (rc != IM_OK) {
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: bad CONNECT: %s", im_rc_str(rc));
            ngx_im_session_violation(s, IM_CMD_CONNECT);
            return;
        }

        ngx_im_session_connect(s, &m);
        return;

    case NGX_IM_S_AUTH:

        /* a client that does not wait for CONNECT_ACK: keep what it
         * sends for after the login, within a bound */
        size = 0;
        for (ll = &s->deferred; *ll; ll = &(*ll)->next) {
            size += ngx_buf_size((*ll)->buf);
        }

        if (size + n > NGX_IM_DEFER_MAX) {
            ngx_im_session_close(s, NGX_IM_CLOSE_POLICY);
            return;
        }

        cl = ngx_alloc_chain_link(s->connection->pool);
        b = ngx_create_temp_buf(s->connection->pool, n ? n : 1);
        if (cl == NULL || b == NULL) {
            ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
            return;
        }

        b->last = ngx_cpymem(b->last, p, n);
        cl->buf = b;
        cl->next = NULL;
        *ll = cl;
        return;

    default: /* NGX_IM_S_LIVE */
        break;
    }

    rc = im_parse_client(p, n, &m);

    if (rc != IM_OK) {
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: bad message %d: %s", n ? p[0] : 0,
                      im_rc_str(rc));
        ngx_im_session_violation(s, n ? p[0] : 0);
        return;
    }

    ngx_im_session_live(s, p, n, &m);
}


static void
ngx_im_session_live(ngx_im_session_t *s, u_char *p, size_t n, im_msg_t *m)
{
    switch (m->cmd) {

    case IM_CMD_PUBLISH:
    case IM_CMD_GROUP_PUBLISH:
    case IM_CMD_GROUP_PART_PUBLISH:
        ngx_im_session_publish(s, p, n, m);
        return;

    case IM_CMD_PING:
        ngx_im_session_simple(s, IM_CMD_PING_RESP);
        return;

    case IM_CMD_PING_RESP:
        if (s->backend) {
            break;
        }

        if (s->ping_sent) {
            s->ping_sent = 0;
            ngx_im_session_add_timer(s, ngx_im_get_conf()->ping_interval);
        }
        return;

    case IM_CMD_PUB_ACK:
    case IM_CMD_GROUP_PUB_ACK:
    case IM_CMD_GROUP_PART_PUB_ACK:
        if (s->backend) {
            break;
        }

        ngx_im_session_ack(s, m);
        return;

    case IM_CMD_CONNECT:
        if (s->backend) {
            break;
        }

        /* a second CONNECT on a live session */
        {
            u_char  ack[IM_SIZE_CONNECT_ACK];

            (void) ngx_im_session_send(s, ack, im_build_connect_ack(ack, 1));
        }
        return;

    case IM_CMD_DISCONNECT:
        s->client_left = 1;
        ngx_im_session_close(s, NGX_IM_CLOSE_NORMAL);
        return;

    default:
        break;
    }

    ngx_im_session_violation(s, m->cmd);
}


static void
ngx_im_session_violation(ngx_im_session_t *s, u_char cmd)
{
    ngx_im_session_drain(s, NGX_IM_CLOSE_PROTOCOL, 1, cmd);
}


/* answers to earlier requests go first: the TCP API promises one
 * response per request, in order, and a violation is the last one */

void
ngx_im_session_drain(ngx_im_session_t *s, ngx_uint_t reason,
    ngx_uint_t invalid, u_char cmd)
{
    u_char  buf[IM_SIZE_INVALID];

    if (s->closing || s->draining) {
        return;
    }

    if (!ngx_queue_empty(&s->pubs)) {
        s->draining = 1;
        s->drain_reason = reason;
        s->drain_invalid = invalid;
        s->drain_cmd = cmd;
        return;
    }

    if (invalid) {
        (void) ngx_im_session_send(s, buf, im_build_invalid(buf, cmd, NULL));
    }

    ngx_im_session_close(s, reason);
}


static void
ngx_im_session_simple(ngx_im_session_t *s, u_char cmd)
{
    u_char  buf[1];

    (void) ngx_im_session_send(s, buf, im_build_simple(buf, cmd));
}


/* login */

static void
ngx_im_session_connect(ngx_im_session_t *s, im_msg_t *m)
{
    ngx_pool_t     *pool;
    ngx_im_cred_t  *cred;

    ngx_im_session_del_timer(s);

    pool = s->connection->pool;

    cred = ngx_palloc(pool, sizeof(ngx_im_cred_t));
    if (cred == NULL) {
        ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
        return;
    }

    cred->user.data = ngx_pnalloc(pool, m->user_len + 1);
    cred->pass.data = ngx_pnalloc(pool, m->pass_len + 1);
    if (cred->user.data == NULL || cred->pass.data == NULL) {
        ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
        return;
    }

    ngx_memcpy(cred->user.data, m->user, m->user_len);
    cred->user.len = m->user_len;
    cred->user.data[cred->user.len] = '\0';
    ngx_memcpy(cred->pass.data, m->pass, m->pass_len);
    cred->pass.len = m->pass_len;
    cred->pass.data[cred->pass.len] = '\0';

    s->cred = cred;

    s->role = m->role;
    s->client_id = m->client_id;

    s->state = NGX_IM_S_AUTH;

    if (s->transport->auth(s) != NGX_OK) {
        ngx_im_session_auth_done(s, 2, 0);
    }
}


void
ngx_im_session_auth_done(ngx_im_session_t *s, ngx_uint_t code, uint32_t uid)
{
    if (s->closing || s->state != NGX_IM_S_AUTH) {
        return;
    }

    /* the password is not needed any more */
    if (s->cred) {
        ngx_explicit_memzero(s->cred->pass.data, s->cred->pass.len);
    }

    if (code != 0 || uid == 0) {
        ngx_im_session_login_done(s, code ? code : 2);
        return;
    }

    s->uid = uid;
    ngx_im_router_login(s);
}


void
ngx_im_session_login_done(ngx_im_session_t *s, ngx_uint_t code)
{
    u_char          ack[IM_SIZE_CONNECT_ACK];
    ngx_chain_t    *cl;
    ngx_im_conf_t  *imcf;

    if (s->closing || s->state != NGX_IM_S_AUTH) {
        return;
    }

    if (code == 0) {
        /* live before it joins: the router may push the inbox at once */
        s->state = NGX_IM_S_LIVE;

        if (ngx_im_router_join(s) != NGX_OK) {
            s->state = NGX_IM_S_AUTH;
            code = 2;
        }
    }

    (void) ngx_im_session_send(s, ack, im_build_connect_ack(ack, code));

    if (code != 0) {
        ngx_im_stats.login_failures++;
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: login of \"%V\" refused with code %ui",
                      s->cred ? &s->cred->user : &ngx_im_session_nobody,
                      code);
        ngx_im_session_grace(s);
        return;
    }

    imcf = ngx_im_get_conf();

    ngx_im_stats.logins++;
    ngx_im_session_trim_note(1);
    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "im: uid %uD client %d logged in", s->uid,
                  (int) s->client_id);

    ngx_im_session_add_timer(s, imcf->ping_interval);

    /* what the client sent while it was being authenticated */

    while (s->deferred && !s->closing) {
        cl = s->deferred;
        s->deferred = cl->next;

        ngx_im_session_message(s, cl->buf->pos, ngx_buf_size(cl->buf));
    }
}


/* a refusal or a kick: the client is to close first (PROTOCOL.md 3.1) */

static void
ngx_im_session_grace(ngx_im_session_t *s)
{
    s->state = NGX_IM_S_GRACE;

    ngx_im_session_del_timer(s);

    ngx_im_session_add_timer(s, ngx_im_get_conf()->close_grace);
}


void
ngx_im_session_kick(ngx_im_session_t *s)
{
    if (s->closing || s->state != NGX_IM_S_LIVE) {
        return;
    }

    ngx_im_stats.kicked++;
    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "im: uid %uD client %d logged in elsewhere", s->uid,
                  (int) s->client_id);

    ngx_im_router_leave(s);

    ngx_im_session_release(s, &s->waiting);
    ngx_im_session_release(s, &s->inflight);
    ngx_im_session_drop_repush(s);

    ngx_im_session_simple(s, IM_CMD_LOGOUT);
    ngx_im_session_grace(s);
}


/* publishing */

static ngx_im_pub_t *
ngx_im_session_pub(ngx_im_session_t *s, u_char cmd, const u_char *msgid)
{
    ngx_im_pub_t  *pub;

    pub = ngx_im_pub_alloc();
    if (pub == NULL) {
        return NULL;
    }

    ngx_memzero(pub, sizeof(ngx_im_pub_t));
    pub->session = s;
    pub->cmd = cmd;
    ngx_memcpy(pub->msgid, msgid, IM_MSGID_LEN);

    ngx_queue_insert_tail(&s->pubs, &pub->queue);

    return pub;
}


static void
ngx_im_session_refuse(ngx_im_session_t *s, u_char cmd, const u_char *msgid)
{
    ngx_im_pub_t  *pub;

    pub = ngx_im_session_pub(s, cmd, msgid);
    if (pub == NULL) {
        ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
        return;
    }

    ngx_im_stats.refused++;

    pub->done = 1;
    pub->refused = 1;
    pub->resolved = 1;
    ngx_im_session_answer(s);
}


static void
ngx_im_session_publish(ngx_im_session_t *s, u_char *p, size_t n,
    im_msg_t *m)
{
    size_t               len;
    time_t               expire;
    ngx_im_pub_t        *pub;
    ngx_im_msg_t        *msg;
    ngx_im_conf_t       *imcf;
    ngx_im_group_req_t  *gr;

    imcf = ngx_im_get_conf();

    if (m->payload_len > imcf->max_payload
        || (m->cmd == IM_CMD_PUBLISH && m->to == 0)
        || (m->cmd == IM_CMD_GROUP_PART_PUBLISH && m->n_uids == 0))
    {
        ngx_im_session_refuse(s, m->cmd, m->msgid);
        return;
    }

    switch (m->cmd) {

    case IM_CMD_PUBLISH:
        len = IM_SIZE_PUSH(m->payload_len);
        break;

    case IM_CMD_GROUP_PART_PUBLISH:
        if (!imcf->part_push_as_group) {
            /* pushed as received: the uid list as the sender gave it */
            len = n;
            break;
        }
        /* fall through */

    default: /* IM_CMD_GROUP_PUBLISH */
        len = IM_SIZE_GROUP(m->payload_len);
        break;
    }

    msg = ngx_im_msg_alloc(len);
    if (msg == NULL) {
        ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
        return;
    }

    if (m->cmd == IM_CMD_PUBLISH) {
        (void) im_build_push(msg->push, m->msgid, m->payload, m->payload_len);

    } else if (len == n) {
        ngx_memcpy(msg->push, p, n);

    } else {
        (void) im_build_group(msg->push, m->to, m->msgid, m->payload,
                              m->payload_len);
    }

    expire = ngx_time() + imcf->offline_ttl;
    ngx_im_msg_finish(msg, expire);

    pub = ngx_im_session_pub(s, m->cmd, m->msgid);
    if (pub == NULL) {
        ngx_im_msg_unref(msg);
        ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
        return;
    }

    if (m->cmd == IM_CMD_PUBLISH) {
        pub->msg = msg;
        pub->to1 = m->to;
        pub->to = &pub->to1;
        pub->nto = 1;
        pub->resolved = 1;

        if (s->unresolved == 0) {
            /* nothing waits ahead of it: no need to walk the queue */
            ngx_im_pub_deliver(pub);

        } else {
            ngx_im_session_dispatch(s);
        }

        return;
    }

    /* groups: the members first */

    len = sizeof(ngx_im_group_req_t);
    if (m->cmd == IM_CMD_GROUP_PART_PUBLISH) {
        len += m->n_uids * sizeof(uint32_t);
    }

    gr = ngx_alloc(len, s->connection->log);
    if (gr == NULL) {
        ngx_im_msg_unref(msg);
        ngx_im_pub_fail(pub, 0);
        return;
    }

    gr->pub = pub;
    gr->msg = msg;
    gr->sender = s->uid;
    gr->part = (m->cmd == IM_CMD_GROUP_PART_PUBLISH);
    gr->n = 0;

    if (gr->part) {
        ngx_uint_t  i;

        for (i = 0; i < m->n_uids; i++) {
            gr->uids[gr->n++] = im_get_u32(m->uids + 4 * i);
        }
    }

    if (ngx_im_store_members(m->to, ngx_im_session_members, gr) != NGX_OK) {
        ngx_im_msg_unref(msg);
        ngx_free(gr);
        ngx_im_pub_fail(pub, 0);
        return;
    }

    s->unresolved++;
}


/*
 * Messages of one sender are handed to the router in the order they came,
 * whatever their kind: a 1:1 message waits behind a group message whose
 * members are still being read, so each recipient sees them in order.
 */

static void
ngx_im_session_dispatch(ngx_im_session_t *s)
{
    ngx_queue_t   *q;
    ngx_im_pub_t  *pub;

again:

    for (q = ngx_queue_head(&s->pubs);
         q != ngx_queue_sentinel(&s->pubs);
         q = ngx_queue_next(q))
    {
        pub = ngx_queue_data(q, ngx_im_pub_t, queue);

        if (!pub->resolved) {
            return;
        }

        if (pub->msg == NULL) {
            continue;
        }

        /* the router may answer at once and free pubs: start over */
        ngx_im_pub_deliver(pub);
        goto again;
    }
}


static void
ngx_im_pub_deliver(ngx_im_pub_t *pub)
{
    uint32_t      *to;
    ngx_uint_t     n;
    ngx_im_msg_t  *msg;

    msg = pub->msg;
    to = pub->to;
    n = pub->nto;

    pub->msg = NULL;
    pub->to = NULL;

    ngx_im_router_deliver(msg, to, n, pub);

    ngx_im_msg_unref(msg);

    if (to && to != &pub->to1) {
        ngx_free(to);
    }
}


static void
ngx_im_session_members(void *data, ngx_int_t rc, uint32_t *members,
    ngx_uint_t n)
{
    ngx_im_group_req_t  *gr = data;

    uint32_t           uid;
    ngx_uint_t         i, j, m, sender_in;
    ngx_im_pub_t      *pub;
    ngx_im_session_t  *s;

    pub = gr->pub;
    s = pub->session;

    if (rc != NGX_OK) {
        ngx_im_pub_fail(pub, 0);
        goto done;
    }

    /* pub->msg stays NULL until the recipients are known: fail paths
     * below leave nothing to deliver */

    /* the sender out; the store gives each member once */

    sender_in = 0;

    for (i = 0; i < n; i++) {
        if (members[i] == gr->sender) {
            sender_in = 1;
            members[i] = members[--n];
            break;
        }
    }

    /* the system (uid 0, the TCP API) need not be a member */

    if (gr->sender != 0 && !sender_in) {
        ngx_im_pub_fail(pub, 1);
        goto done;
    }

    if (gr->part) {
        /* the members that are listed: the list sorted, each once */

        m = ngx_im_uids_unique(gr->uids, gr->n);
        j = 0;

        for (i = 0; i < n; i++) {
            uid = members[i];

            if (bsearch(&uid, gr->uids, m, sizeof(uint32_t), ngx_im_uid_cmp)
                != NULL)
            {
                members[j++] = uid;
            }
        }

        n = j;
    }

    if (n == 0) {
        ngx_im_pub_fail(pub, 1);
        goto done;
    }

    pub->to = ngx_alloc(n * sizeof(uint32_t), ngx_cycle->log);
    if (pub->to == NULL) {
        ngx_im_pub_fail(pub, 0);
        goto done;
    }

    ngx_memcpy(pub->to, members, n * sizeof(uint32_t));
    pub->nto = n;
    pub->msg = ngx_im_msg_ref(gr->msg);
    pub->resolved = 1;

    if (s == NULL) {
        /* the sender is gone: no order to keep */
        ngx_im_pub_deliver(pub);
    }

done:

    ngx_im_msg_unref(gr->msg);
    ngx_free(gr);

    if (s) {
        /* this one, and what waited behind it */
        s->unresolved--;
        ngx_im_session_dispatch(s);
    }
}


static void
ngx_im_pub_fail(ngx_im_pub_t *pub, ngx_uint_t refused)
{
    if (refused) {
        pub->refused = 1;
    }

    pub->resolved = 1;
    pub->remaining = 1;
    ngx_im_pub_served(pub, 0);
}


void
ngx_im_pub_served(ngx_im_pub_t *pub, ngx_uint_t ok)
{
    if (!ok) {
        pub->failed = 1;
    }

    if (--pub->remaining) {
        return;
    }

    pub->done = 1;

    if (pub->session == NULL) {
        ngx_im_pub_free(pub);
        return;
    }

    ngx_im_session_answer(pub->session);
}


/* acks and refusals leave in the order the requests came */

static void
ngx_im_session_answer(ngx_im_session_t *s)
{
    u_char         buf[IM_SIZE_INVALID];
    u_char         ack;
    ngx_queue_t   *q;
    ngx_im_pub_t  *pub;

    while (!ngx_queue_empty(&s->pubs)) {
        q = ngx_queue_head(&s->pubs);
        pub = ngx_queue_data(q, ngx_im_pub_t, queue);

        if (!pub->done) {
            return;
        }

        ngx_queue_remove(q);

        if (pub->failed || pub->refused) {
            if (!pub->refused) {
                ngx_im_stats.refused++;
            }

            (void) ngx_im_session_send(s, buf,
                                       im_build_invalid(buf, pub->cmd,
                                                        pub->msgid));

        } else {
            ngx_im_stats.accepted++;

            ack = (pub->cmd == IM_CMD_PUBLISH) ? IM_CMD_PUB_ACK
                  : (pub->cmd == IM_CMD_GROUP_PUBLISH) ? IM_CMD_GROUP_PUB_ACK
                  : IM_CMD_GROUP_PART_PUB_ACK;

            (void) ngx_im_session_send(s, buf,
                                       im_build_ack(buf, ack, pub->msgid));
        }

        ngx_im_pub_free(pub);
    }

    if (s->draining) {
        s->draining = 0;
        ngx_im_session_drain(s, s->drain_reason, s->drain_invalid,
                             s->drain_cmd);
    }
}


/* pushes */

static ngx_im_inflight_t *
ngx_im_session_find(ngx_queue_t *head, const u_char *msgid)
{
    ngx_queue_t        *q;
    ngx_im_inflight_t  *f;

    for (q = ngx_queue_head(head);
         q != ngx_queue_sentinel(head);
         q = ngx_queue_next(q))
    {
        f = ngx_queue_data(q, ngx_im_inflight_t, queue);

        if (ngx_memcmp(f->msg->msgid, msgid, IM_MSGID_LEN) == 0) {
            return f;
        }
    }

    return NULL;
}


static ngx_int_t
ngx_im_session_send_push(ngx_im_session_t *s, ngx_im_msg_t *msg,
    ngx_uint_t stored)
{
    ngx_im_conf_t      *imcf;
    ngx_im_inflight_t  *f;

    if (ngx_im_session_find(&s->inflight, msg->msgid)) {
        return NGX_OK;
    }

    imcf = ngx_im_get_conf();

    f = ngx_im_inflight_alloc();
    if (f == NULL) {
        return NGX_ERROR;
    }

    f->msg = ngx_im_msg_ref(msg);
    f->repushes = 0;
    f->stored = stored;
    f->live = 0;
    f->deadline = ngx_current_msec + imcf->repush_interval;

    ngx_queue_insert_tail(&s->inflight, &f->queue);

    ngx_im_stats.pushed++;

    if (s->repush == NULL) {
        s->repush = ngx_im_event_alloc(ngx_im_session_repush_handler, s,
                                       s->connection->log);
        if (s->repush == NULL) {
            ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
            return NGX_ERROR;
        }

        s->repush->cancelable = 1;
    }

    if (!s->repush->timer_set) {
        ngx_add_timer(s->repush, imcf->repush_interval);
    }

    return ngx_im_session_send(s, msg->push, msg->push_len);
}


/* NGX_OK: the session took the message (sent or queued for after the
 * inbox), NGX_DECLINED: it cannot */

ngx_int_t
ngx_im_session_push(ngx_im_session_t *s, ngx_im_msg_t *msg,
    ngx_uint_t stored)
{
    ngx_im_inflight_t  *f;

    ngx_log_debug4(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im push: uid %uD state %ui loading %d closing %d",
                   s->uid, (ngx_uint_t) s->state, (int) s->loading,
                   (int) s->closing);

    if (s->closing || s->state != NGX_IM_S_LIVE || s->backend) {
        return NGX_DECLINED;
    }

    if (s->loading || !ngx_queue_empty(&s->waiting)
        || s->out_size >= ngx_im_get_conf()->send_buffer / 2)
    {
        /* behind the inbox, or behind what the client has yet to read:
         * pushed as the output drains (ngx_im_session_feed) */
        if (ngx_im_session_find(&s->waiting, msg->msgid)) {
            return NGX_OK;
        }

        f = ngx_im_inflight_alloc();
        if (f == NULL) {
            return NGX_DECLINED;
        }

        f->msg = ngx_im_msg_ref(msg);
        f->stored = stored;
        f->repushes = 0;
        f->live = 1;
        ngx_queue_insert_tail(&s->waiting, &f->queue);

        s->waiting_bytes += msg->push_len;

        if (s->waiting_bytes > ngx_im_get_conf()->send_buffer) {
            /* the client does not read: what waits is not kept for it
             * without bound (it goes back to the store) */
            ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                          "im: uid %uD does not read, %uz bytes waiting: "
                          "closing", s->uid, s->waiting_bytes);
            ngx_im_stats.slow_closed++;
            ngx_im_session_close(s, NGX_IM_CLOSE_SLOW);
        }

        return NGX_OK;
    }

    if (ngx_im_session_send_push(s, msg, stored) != NGX_OK) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_im_session_ack(ngx_im_session_t *s, im_msg_t *m)
{
    ngx_im_inflight_t  *f;

    f = ngx_im_session_find(&s->inflight, m->msgid);
    if (f == NULL) {
        /* an ack for an unknown MsgId is ignored */
        return;
    }

    ngx_queue_remove(&f->queue);
    ngx_im_stats.acked++;

    if (f->stored) {
        ngx_im_store_remove(s->uid, f->msg);
    }

    ngx_im_msg_unref(f->msg);
    ngx_im_inflight_free(f);

    /*
     * The re-push timer stays armed when the last push is acknowledged: it
     * goes off once, finds nothing due and lets the event go.  Deleting it
     * here and adding it again on the next push cost two timer tree
     * operations per delivery in a fan-out.
     */
}


static void
ngx_im_session_repush_handler(ngx_event_t *ev)
{
    ngx_im_session_t   *s = ev->data;

    ngx_msec_int_t      left;
    ngx_queue_t        *q;
    ngx_im_conf_t      *imcf;
    ngx_im_inflight_t  *f, *last;

    if (s->closing || s->state != NGX_IM_S_LIVE) {
        return;
    }

    imcf = ngx_im_get_conf();

    last = NULL;

    while (!ngx_queue_empty(&s->inflight)) {
        q = ngx_queue_head(&s->inflight);
        f = ngx_queue_data(q, ngx_im_inflight_t, queue);

        left = (ngx_msec_int_t) (f->deadline - ngx_current_msec);

        if (left > 0 || f == last) {
            ngx_add_timer(ev, left > 0 ? (ngx_msec_t) left : 1);
            return;
        }

        if (f->repushes >= imcf->repush_max) {
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: uid %uD did not ack after %ui re-pushes",
                          s->uid, f->repushes);
            ngx_im_session_close(s, NGX_IM_CLOSE_NORMAL);
            return;
        }

        f->repushes++;
        f->deadline = ngx_current_msec + imcf->repush_interval;
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&s->inflight, q);

        if (last == NULL) {
            last = f;
        }

        ngx_im_stats.repushed++;

        if (ngx_im_session_send(s, f->msg->push, f->msg->push_len)
            != NGX_OK)
        {
            return;
        }
    }

    /* all acknowledged since the timer was set */

    ngx_im_session_drop_repush(s);
}


/* hand messages not acknowledged back to the store (PROTOCOL.md 5) */

static void
ngx_im_session_release(ngx_im_session_t *s, ngx_queue_t *head)
{
    ngx_queue_t        *q;
    ngx_im_inflight_t  *f;

    while (!ngx_queue_empty(head)) {
        q = ngx_queue_head(head);
        f = ngx_queue_data(q, ngx_im_inflight_t, queue);
        ngx_queue_remove(q);

        /* in write-through mode it is in the inbox already */

        if (!f->stored && s->uid) {
            if (ngx_im_store_push(s->uid, f->msg, NULL, NULL, NULL) != NGX_OK) {
                ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                              "im: uid %uD: an unacknowledged message "
                              "could not be stored", s->uid);
            }
        }

        ngx_im_msg_unref(f->msg);
        ngx_im_inflight_free(f);
    }
}


/* the inbox: after login, and again after the router lost Redis */

void
ngx_im_session_sync(ngx_im_session_t *s)
{
    ngx_im_ref_t  *ref;

    if (s->closing || s->state != NGX_IM_S_LIVE) {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im sync: uid %uD load under way %d", s->uid,
                   s->load_ref != NULL);

    if (s->load_ref) {
        /* what was stored after that read is read again afterwards */
        s->resync = 1;
        return;
    }

    ref = ngx_alloc(sizeof(ngx_im_ref_t), s->connection->log);
    if (ref == NULL) {
        return;
    }

    ref->session = s;
    s->loading = 1;

    if (ngx_im_store_load(s->uid, ngx_im_session_loaded, ref) != NGX_OK) {
        ngx_free(ref);
        ngx_im_session_load_retry(s);
        return;
    }

    s->load_ref = ref;
}


static void
ngx_im_session_load_retry(ngx_im_session_t *s)
{
    /* Redis is away: the router calls sync again when it is back, and
     * meanwhile live messages are not held back */

    s->loading = 0;
    ngx_im_session_feed(s);
}


/*
 * Pushes waiting for their turn leave while the client keeps reading: a
 * backlog larger than im_send_buffer is a reason to wait, not to close.
 */

static void
ngx_im_session_feed(ngx_im_session_t *s)
{
    size_t              limit;
    ngx_queue_t        *q;
    ngx_im_inflight_t  *f;

    limit = ngx_im_get_conf()->send_buffer / 2;

    while (!ngx_queue_empty(&s->waiting) && !s->closing && !s->loading
           && s->state == NGX_IM_S_LIVE && s->out_size < limit)
    {
        q = ngx_queue_head(&s->waiting);
        f = ngx_queue_data(q, ngx_im_inflight_t, queue);
        ngx_queue_remove(q);

        if (f->live) {
            s->waiting_bytes -= f->msg->push_len;
        }

        (void) ngx_im_session_send_push(s, f->msg, f->stored);

        ngx_im_msg_unref(f->msg);
        ngx_im_inflight_free(f);
    }
}


static void
ngx_im_session_loaded(redisReply *reply, void *data)
{
    ngx_im_ref_t  *ref = data;

    size_t              i;
    ngx_queue_t         inbox;
    ngx_im_msg_t       *msg;
    redisReply         *e;
    ngx_im_session_t   *s;
    ngx_im_inflight_t  *f;

    s = ref->session;
    ngx_free(ref);

    if (s == NULL) {
        return;
    }

    s->load_ref = NULL;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im inbox: uid %uD, %uz entries", s->uid,
                   reply && reply->type == REDIS_REPLY_ARRAY
                   ? reply->elements : 0);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        ngx_im_session_load_retry(s);
        return;
    }

    ngx_queue_init(&inbox);

    for (i = 0; i < reply->elements && !s->closing; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_STRING) {
            continue;
        }

        msg = ngx_im_msg_from_entry((u_char *) e->str, e->len);
        if (msg == NULL) {
            ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                          "im: uid %uD: unreadable inbox entry dropped",
                          s->uid);
            /* remove exactly those bytes */
            {
                ngx_im_msg_t  *bad;

                bad = ngx_im_msg_alloc(e->len - NGX_IM_ENTRY_HDR);
                if (bad && e->len >= NGX_IM_ENTRY_HDR) {
                    ngx_memcpy(bad->entry, e->str, e->len);
                    ngx_im_store_remove(s->uid, bad);
                }
                if (bad) {
                    ngx_im_msg_unref(bad);
                }
            }
            continue;
        }

        if (msg->expire && msg->expire < ngx_time()) {
            ngx_im_store_remove(s->uid, msg);
            ngx_im_msg_unref(msg);
            continue;
        }

        if (ngx_im_session_find(&s->inflight, msg->msgid)
            || ngx_im_session_find(&inbox, msg->msgid))
        {
            ngx_im_msg_unref(msg);
            continue;
        }

        f = ngx_im_inflight_alloc();
        if (f == NULL) {
            ngx_im_msg_unref(msg);
            break;
        }

        f->msg = msg;
        f->stored = 1;
        f->repushes = 0;
        f->live = 0;
        ngx_queue_insert_tail(&inbox, &f->queue);
    }

    ngx_im_session_merge(s, &inbox);
    s->loaded = 1;

    ngx_im_session_load_retry(s);

    if (s->resync && !s->closing) {
        s->resync = 0;
        ngx_im_session_sync(s);
    }
}


/*
 * The inbox read and what came live while it was read, into one queue in
 * the order the messages were accepted (PROTOCOL.md 3.4).  Each stream is
 * in that order: the inbox by its appends, the live messages by their
 * publisher's.  A message in both marks a point where they meet: the live
 * messages up to its live copy go before it.  Of the rest of the inbox,
 * on the first read, what is older than the first such point is older
 * than anything live (stored before this session subscribed) and goes
 * first; on a later read the session has pushed live messages already, so
 * what the inbox alone has is either on its way here live or late anyway,
 * and goes last.  The live ones the inbox lacks were acked by another
 * device before the read (a replay among them: see "Alone" in
 * ngx_im_router.c).  The waiting entries are moved by splicing: a loop
 * moving them one at a time was compiled here (gcc 12, -O2) into one that
 * never read the queue's head again and hung the worker.
 */

static void
ngx_im_session_merge(ngx_im_session_t *s, ngx_queue_t *inbox)
{
    ngx_queue_t         merged, late, *q, *first, *last;
    ngx_im_inflight_t  *f, *live;

    ngx_queue_init(&merged);
    ngx_queue_init(&late);

    while (!ngx_queue_empty(inbox)) {
        q = ngx_queue_head(inbox);
        ngx_queue_remove(q);
        f = ngx_queue_data(q, ngx_im_inflight_t, queue);

        live = ngx_im_session_find(&s->waiting, f->msg->msgid);

        if (live == NULL) {
            ngx_queue_insert_tail(s->loaded ? &late : &merged, q);
            continue;
        }

        /* the live copy stays, behind what came live before it: the
         * waiting ones up to it move to the merged queue at once */

        first = ngx_queue_head(&s->waiting);
        last = &live->queue;

        s->waiting.next = last->next;
        last->next->prev = &s->waiting;

        first->prev = merged.prev;
        merged.prev->next = first;
        last->next = &merged;
        merged.prev = last;

        ngx_im_msg_unref(f->msg);
        ngx_im_inflight_free(f);
    }

    /* merged, the rest of what came live, the late ones */

    if (!ngx_queue_empty(&s->waiting)) {
        ngx_queue_add(&merged, &s->waiting);
    }

    if (!ngx_queue_empty(&late)) {
        ngx_queue_add(&merged, &late);
    }

    ngx_queue_init(&s->waiting);

    if (!ngx_queue_empty(&merged)) {
        ngx_queue_add(&s->waiting, &merged);
    }
}


/* timers */

static void
ngx_im_session_timeout(ngx_im_session_t *s)
{
    ngx_im_conf_t  *imcf;

    if (s->close_wanted) {
        s->close_wanted = 0;
        ngx_im_session_closing(s);
        return;
    }

    if (s->torn_down) {
        /* the peer did not finish the close in time */
        ngx_im_session_finalize(s);
        return;
    }

    if (s->closing) {
        return;
    }

    switch (s->state) {

    case NGX_IM_S_CONNECT:
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: no CONNECT in time");
        ngx_im_session_close(s, NGX_IM_CLOSE_POLICY);
        return;

    case NGX_IM_S_GRACE:
        ngx_im_session_close(s, NGX_IM_CLOSE_NORMAL);
        return;

    case NGX_IM_S_LIVE:
        if (s->backend) {
            return;
        }

        imcf = ngx_im_get_conf();

        if (s->ping_sent) {
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: uid %uD: no PING_RESP in time", s->uid);
            ngx_im_session_close(s, NGX_IM_CLOSE_NORMAL);
            return;
        }

        s->ping_sent = 1;
        ngx_im_session_simple(s, IM_CMD_PING);
        ngx_im_router_refresh(s);
        ngx_im_session_add_timer(s, imcf->ping_timeout);
        return;

    default:
        return;
    }
}


/*
 * A burst of logins leaves the heap holding the freed request pools of the
 * handshakes (some 10 KB per login in progress) between the sessions'
 * memory, and glibc returns such free pages only on malloc_trim().  Once
 * logins have paused for a second after at least NGX_IM_TRIM_LOGINS of
 * them, the worker lets every list of spares go and trims: 1.27 -> 1.10 KB
 * per idle session measured at 10,000.  A pass that flushed output to more
 * than NGX_IM_TRIM_LOGINS sessions counts as a burst as well: a fan-out to
 * 10,000 held a chunk per member, and the worker kept 10 MB more after it.
 */

#define NGX_IM_TRIM_LOGINS  256

static ngx_event_t  ngx_im_trim_ev;
static ngx_connection_t  ngx_im_trim_dummy;     /* for the event's debug log */
static ngx_uint_t   ngx_im_trim_logins;     /* since the last trim */
static ngx_uint_t   ngx_im_trim_recent;     /* in the last second */


static void
ngx_im_session_trim_handler(ngx_event_t *ev)
{
    if (ngx_im_trim_recent) {
        ngx_im_trim_recent = 0;
        ngx_add_timer(ev, 1000);
        return;
    }

    if (ngx_im_trim_logins >= NGX_IM_TRIM_LOGINS) {
        ngx_im_spare_drain_all();

#if (NGX_IM_HAVE_MALLOC_TRIM)
        (void) malloc_trim(0);
#endif
    }

    ngx_im_trim_logins = 0;
}


static void
ngx_im_session_trim_note(ngx_uint_t n)
{
    ngx_im_trim_logins += n;
    ngx_im_trim_recent++;

    if (!ngx_im_trim_ev.timer_set) {
        ngx_im_trim_ev.handler = ngx_im_session_trim_handler;
        ngx_im_trim_dummy.fd = (ngx_socket_t) -1;
        ngx_im_trim_ev.data = &ngx_im_trim_dummy;
        ngx_im_trim_ev.log = ngx_cycle->log;
        ngx_im_trim_ev.cancelable = 1;
        ngx_im_trim_recent = 0;
        ngx_add_timer(&ngx_im_trim_ev, 1000);
    }
}


/*
 * Session timers.  A session has one pending timer at most, and each kind
 * (connect, ping, ping timeout, grace, close) has one fixed delay, so the
 * sessions wait in one queue per delay, in the order of their deadlines,
 * and one event per queue drives it: 20 bytes in the session instead of an
 * ngx_event_t's 96.  The events are not cancelable, as the sessions' own
 * timers were: a gracefully exiting worker keeps its sessions until they
 * end or worker_shutdown_timeout runs out; an empty queue drops its event.
 */

#define NGX_IM_TIMER_QUEUES  8

typedef struct {
    ngx_msec_t             delay;
    ngx_queue_t            sessions;
    ngx_event_t            ev;
} ngx_im_timer_queue_t;


static ngx_im_timer_queue_t  ngx_im_timer_queues[NGX_IM_TIMER_QUEUES];
static ngx_uint_t            ngx_im_ntimer_queues;


static void
ngx_im_session_timer_handler(ngx_event_t *ev)
{
    ngx_queue_t           *q;
    ngx_msec_int_t         left;
    ngx_im_session_t      *s;
    ngx_im_timer_queue_t  *tq;

    tq = ev->data;

    while (!ngx_queue_empty(&tq->sessions)) {
        q = ngx_queue_head(&tq->sessions);
        s = ngx_queue_data(q, ngx_im_session_t, timer_link);

        left = (int32_t) (s->deadline - (uint32_t) ngx_current_msec);

        if (left > 0) {
            ngx_add_timer(ev, (ngx_msec_t) left);
            return;
        }

        ngx_queue_remove(q);
        s->timer_set = 0;

        /* may set a timer again (later in this or another queue), or end
         * the session */
        ngx_im_session_timeout(s);
    }
}


static void
ngx_im_session_add_timer(ngx_im_session_t *s, ngx_msec_t delay)
{
    ngx_uint_t             i;
    ngx_im_timer_queue_t  *tq;

    ngx_im_session_del_timer(s);

    for (i = 0; i < ngx_im_ntimer_queues; i++) {
        if (ngx_im_timer_queues[i].delay == delay) {
            break;
        }
    }

    if (i == ngx_im_ntimer_queues) {
        if (i == NGX_IM_TIMER_QUEUES) {
            /* more delays than configured kinds: cannot be; the last
             * queue then fires late or early, never not at all */
            i--;

        } else {
            tq = &ngx_im_timer_queues[i];
            tq->delay = delay;
            ngx_queue_init(&tq->sessions);
            tq->ev.handler = ngx_im_session_timer_handler;
            tq->ev.data = tq;
            tq->ev.log = ngx_cycle->log;
            ngx_im_ntimer_queues++;
        }
    }

    tq = &ngx_im_timer_queues[i];

    s->deadline = (uint32_t) (ngx_current_msec + delay);
    ngx_queue_insert_tail(&tq->sessions, &s->timer_link);
    s->timer_set = 1;

    if (!tq->ev.timer_set) {
        ngx_add_timer(&tq->ev, delay);
    }
}


static void
ngx_im_session_del_timer(ngx_im_session_t *s)
{
    ngx_uint_t             i;
    ngx_im_timer_queue_t  *tq;

    if (!s->timer_set) {
        return;
    }

    ngx_queue_remove(&s->timer_link);
    s->timer_set = 0;

    for (i = 0; i < ngx_im_ntimer_queues; i++) {
        tq = &ngx_im_timer_queues[i];

        if (tq->ev.timer_set && ngx_queue_empty(&tq->sessions)) {
            ngx_del_timer(&tq->ev);
        }
    }
}


/* output */

static ngx_chain_t *
ngx_im_chunk_alloc(size_t size)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (size <= NGX_IM_CHUNK) {
        size = NGX_IM_CHUNK;
        cl = ngx_im_spare_get(&ngx_im_spare_chunks);

    } else {
        cl = ngx_alloc(sizeof(ngx_chain_t) + sizeof(ngx_buf_t) + size,
                       ngx_cycle->log);
    }

    if (cl == NULL) {
        return NULL;
    }

    b = (ngx_buf_t *) (cl + 1);
    ngx_memzero(b, sizeof(ngx_buf_t));

    b->start = (u_char *) (b + 1);
    b->pos = b->start;
    b->last = b->start;
    b->end = b->start + size;
    b->temporary = 1;

    cl->buf = b;
    cl->next = NULL;

    return cl;
}


static void
ngx_im_chunk_free(ngx_chain_t *cl)
{
    if ((size_t) (cl->buf->end - cl->buf->start) == NGX_IM_CHUNK) {
        ngx_im_spare_put(&ngx_im_spare_chunks, cl);
        return;
    }

    ngx_free(cl);
}


static ngx_int_t
ngx_im_session_append(ngx_im_session_t *s, u_char *hdr, size_t hlen,
    u_char *p, size_t n)
{
    size_t          total;
    ngx_buf_t      *b;
    ngx_chain_t    *cl, *last;
    ngx_im_conf_t  *imcf;

    if (s->torn_down && s->state != NGX_IM_S_CLOSING) {
        return NGX_ERROR;
    }

    imcf = ngx_im_get_conf();

    total = hlen + n;

    if (s->out_size + total > imcf->send_buffer) {
        ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                      "im: uid %uD does not read, %uz bytes unsent: closing",
                      s->uid, s->out_size);
        ngx_im_stats.slow_closed++;
        ngx_im_session_close(s, NGX_IM_CLOSE_SLOW);
        return NGX_ERROR;
    }

    last = (s->last_out == &s->out) ? NULL
           : (ngx_chain_t *) ((u_char *) s->last_out
                              - offsetof(ngx_chain_t, next));

    if (last == NULL || (size_t) (last->buf->end - last->buf->last) < total)
    {
        cl = ngx_im_chunk_alloc(total);
        if (cl == NULL) {
            ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
            return NGX_ERROR;
        }

        if (last) {
            last->buf->flush = 0;
        }

        *s->last_out = cl;
        s->last_out = &cl->next;
        last = cl;
    }

    b = last->buf;
    b->last = ngx_cpymem(b->last, hdr, hlen);
    b->last = ngx_cpymem(b->last, p, n);
    /* nginx's SSL layer sends its buffer when it sees a flush */
    b->flush = 1;

    s->out_size += total;

    ngx_im_session_post_flush(s);

    return NGX_OK;
}


ngx_int_t
ngx_im_session_send(ngx_im_session_t *s, u_char *p, size_t n)
{
    u_char  hdr[16];

    return ngx_im_session_append(s, hdr, s->transport->header(s, hdr, n),
                                 p, n);
}


ngx_int_t
ngx_im_session_send_raw(ngx_im_session_t *s, u_char *p, size_t n)
{
    return ngx_im_session_append(s, NULL, 0, p, n);
}


/*
 * Output leaves once per connection per event loop pass, whatever the
 * number of messages queued in it: sessions with something to send wait in
 * a list flushed at the end of the pass.  A group message reaches a
 * thousand sessions in one pass, and the next group message read in the
 * same pass joins it in the same write: one system call per member for
 * several messages.  (Flushing every 32 sessions instead cost three times
 * the CPU per fan-out delivery, and measured no better latency in 1:1.)
 * The list is flushed early only past NGX_IM_FLUSH_BATCH sessions, so that
 * output held for a pass stays bounded (a chunk per session).  At 1,024 a
 * group of 10,000 got each message in a write of its own per member: 15.5
 * us per delivery with 4 group messages in flight, 9.9 us at 16,384; with
 * one message at a time both cost the same, the first member getting it 5
 * ms later (15 instead of 10) and the last one no later.
 */

#define NGX_IM_FLUSH_BATCH  16384

static ngx_queue_t   ngx_im_flush_queue;
static ngx_uint_t    ngx_im_flush_n;
static ngx_uint_t    ngx_im_flushing;
static ngx_event_t   ngx_im_flush_ev;
static ngx_connection_t  ngx_im_flush_dummy;


static void
ngx_im_session_flush_all(void)
{
    ngx_queue_t       *q;
    ngx_im_session_t  *s;

    if (ngx_im_flushing) {
        return;
    }

    ngx_im_flushing = 1;

    if (ngx_im_flush_n > NGX_IM_TRIM_LOGINS) {
        /* a chunk per session was held: the heap may keep them */
        ngx_im_session_trim_note(NGX_IM_TRIM_LOGINS);
    }

    while (!ngx_queue_empty(&ngx_im_flush_queue)) {
        q = ngx_queue_head(&ngx_im_flush_queue);
        ngx_queue_remove(q);
        ngx_im_flush_n--;

        s = ngx_queue_data(q, ngx_im_session_t, flush_link);
        s->flush_posted = 0;

        ngx_im_session_write(s);
    }

    ngx_im_flushing = 0;
}


static void
ngx_im_session_flush_handler(ngx_event_t *ev)
{
    ngx_im_session_flush_all();
}


static void
ngx_im_session_post_flush(ngx_im_session_t *s)
{
    if (s->flush_posted) {
        return;
    }

    if (ngx_im_flush_ev.handler == NULL) {
        ngx_queue_init(&ngx_im_flush_queue);
        ngx_im_flush_dummy.fd = (ngx_socket_t) -1;
        ngx_im_flush_ev.data = &ngx_im_flush_dummy;
        ngx_im_flush_ev.handler = ngx_im_session_flush_handler;
        ngx_im_flush_ev.log = ngx_cycle->log;
    }

    s->flush_posted = 1;
    ngx_queue_insert_tail(&ngx_im_flush_queue, &s->flush_link);

    if (++ngx_im_flush_n >= NGX_IM_FLUSH_BATCH) {
        ngx_im_session_flush_all();
        return;
    }

    if (!ngx_im_flush_ev.posted) {
        ngx_post_event(&ngx_im_flush_ev, &ngx_posted_events);
    }
}


static void
ngx_im_session_unflush(ngx_im_session_t *s)
{
    if (s->flush_posted) {
        ngx_queue_remove(&s->flush_link);
        ngx_im_flush_n--;
        s->flush_posted = 0;
    }
}


void
ngx_im_session_write(ngx_im_session_t *s)
{
    ssize_t            n;
    ngx_buf_t         *b;
    ngx_chain_t       *cl, *next;
    ngx_connection_t  *c;

    c = s->connection;

    if (c->write->timedout) {
        c->write->timedout = 0;
        ngx_im_session_close(s, NGX_IM_CLOSE_SLOW);
        return;
    }

    if (s->transport->pre_flush) {
        switch (s->transport->pre_flush(s)) {
        case NGX_OK:
            break;
        case NGX_AGAIN:
            return;
        default:
            ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
            return;
        }
    }

    if (s->out || c->buffered) {

        if (s->out && s->out->next == NULL && !c->buffered) {

            /*
             * One buffer, the usual case: send() rather than the chain's
             * writev(), which costs a file lookup with its position lock
             * and an iovec import per call (6.1 against 7.1 us for a small
             * write on loopback here)
             */

            b = s->out->buf;
            n = c->send(c, b->pos, b->last - b->pos);

            if (n == NGX_ERROR) {
                cl = NGX_CHAIN_ERROR;

            } else {
                b->pos += (n > 0) ? n : 0;
                cl = (b->pos == b->last) ? NULL : s->out;
            }

        } else {
            cl = c->send_chain(c, s->out, 0);
        }

        if (cl == NGX_CHAIN_ERROR) {
            c->error = 1;
            ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
            return;
        }

        /* cl is the first chunk not wholly sent */

        while (s->out != cl) {
            next = s->out->next;
            ngx_im_chunk_free(s->out);
            s->out = next;
        }

        s->out_size = 0;

        if (s->out == NULL) {
            s->last_out = &s->out;

        } else {
            /* partly sent: count only what is left */
            for (cl = s->out; cl; cl = cl->next) {
                s->out_size += cl->buf->last - cl->buf->pos;
            }
        }
    }

    if (!ngx_queue_empty(&s->waiting)) {
        /* room again: the next pushes, out at the next pass */
        ngx_im_session_feed(s);
    }

    if (s->out || c->buffered) {
        if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
            ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
        }
        return;
    }

    if (s->state == NGX_IM_S_CLOSING && !s->ws_closing) {
        /* all said */
        ngx_im_session_post_close(s);
    }
}


static void
ngx_im_session_free_out(ngx_im_session_t *s)
{
    ngx_chain_t  *cl;

    while (s->out) {
        cl = s->out;
        s->out = cl->next;
        ngx_im_chunk_free(cl);
    }

    s->last_out = &s->out;
    s->out_size = 0;
}


/* closing */

static ngx_inline ngx_uint_t
ngx_im_close_hard(ngx_uint_t reason)
{
    return reason == NGX_IM_CLOSE_EOF || reason == NGX_IM_CLOSE_ERROR
           || reason == NGX_IM_CLOSE_SLOW;
}


void
ngx_im_session_close(ngx_im_session_t *s, ngx_uint_t reason)
{
    if (!s->closing) {
        s->closing = 1;
        s->close_reason = reason;

    } else if (s->torn_down) {
        /* the goodbye is out: the peer's close frame, the end of the
         * connection or an error finish it */
        s->finishing = 1;

    } else if (ngx_im_close_hard(reason)) {
        /* no goodbye can be said any more */
        s->close_reason = reason;
    }

    ngx_im_session_post_close(s);
}


static void
ngx_im_session_post_close(ngx_im_session_t *s)
{
    if (s->close_ev == NULL) {
        s->close_ev = ngx_im_event_alloc(ngx_im_session_close_handler, s,
                                         s->connection->log);

        if (s->close_ev == NULL) {
            /* no memory even for that: the session timer does it */
            s->close_wanted = 1;
            ngx_im_session_add_timer(s, 1);
            return;
        }
    }

    if (!s->close_ev->posted) {
        ngx_post_event(s->close_ev, &ngx_posted_events);
    }
}


static void
ngx_im_session_close_handler(ngx_event_t *ev)
{
    ngx_im_session_closing(ev->data);
}


static void
ngx_im_session_closing(ngx_im_session_t *s)
{
    ngx_im_conf_t     *imcf;
    ngx_uint_t         reason, was;

    if (s->torn_down) {
        if (s->finishing
            || (s->out == NULL && !s->connection->buffered
                && !s->ws_closing))
        {
            ngx_im_session_finalize(s);
        }
        return;
    }

    reason = s->close_reason;
    was = s->state;

    ngx_im_session_teardown(s);

    if (ngx_im_close_hard(reason)) {
        ngx_im_session_finalize(s);
        return;
    }

    imcf = ngx_im_get_conf();

    s->state = NGX_IM_S_CLOSING;

    /* a server-side end of a live session is announced (PROTOCOL.md 3.5) */
    if (was == NGX_IM_S_LIVE && !s->backend && !s->client_left
        && (reason == NGX_IM_CLOSE_NORMAL || reason == NGX_IM_CLOSE_SHUTDOWN))
    {
        ngx_im_session_simple(s, IM_CMD_DISCONNECT);
    }

    if (s->transport->goodbye && reason != NGX_IM_CLOSE_FLUSH) {
        s->transport->goodbye(s, reason);
    }

    /* a bound on flushing and on waiting for the peer's close */
    ngx_im_session_add_timer(s, ngx_min(imcf->close_grace, 5000));

    if (s->ws_closing) {
        /* the peer's close frame may be waiting unread */
        ngx_post_event(s->connection->read, &ngx_posted_events);
    }

    ngx_im_session_write(s);
}


static void
ngx_im_session_teardown(ngx_im_session_t *s)
{
    ngx_queue_t   *q, late;
    ngx_im_pub_t  *pub;

    s->torn_down = 1;

    ngx_im_router_leave(s);

    ngx_im_session_del_timer(s);

    ngx_im_session_drop_repush(s);

    ngx_im_session_release(s, &s->waiting);
    ngx_im_session_release(s, &s->inflight);

    /* own messages still under way finish without us; those that waited
     * for their turn go now */

    ngx_queue_init(&late);

    while (!ngx_queue_empty(&s->pubs)) {
        q = ngx_queue_head(&s->pubs);
        pub = ngx_queue_data(q, ngx_im_pub_t, queue);
        ngx_queue_remove(q);

        if (pub->done) {
            ngx_im_pub_free(pub);
            continue;
        }

        pub->session = NULL;

        if (pub->msg && pub->resolved) {
            ngx_queue_insert_tail(&late, q);
        }
    }

    while (!ngx_queue_empty(&late)) {
        q = ngx_queue_head(&late);
        ngx_queue_remove(q);
        ngx_im_pub_deliver(ngx_queue_data(q, ngx_im_pub_t, queue));
    }

    if (s->login_ref) {
        s->login_ref->session = NULL;
        s->login_ref = NULL;
    }

    if (s->load_ref) {
        s->load_ref->session = NULL;
        s->load_ref = NULL;
    }

    /* pool memory, freed with the connection */
    s->deferred = NULL;
}


static void
ngx_im_session_finalize(ngx_im_session_t *s)
{
    ngx_im_session_abort(s);
    s->transport->finalize(s);
}


/* nginx closes the connection itself (shutdown, or the request is gone) */

void
ngx_im_session_abort(ngx_im_session_t *s)
{
    if (!s->torn_down) {
        ngx_im_session_teardown(s);
    }

    ngx_im_session_unflush(s);

    ngx_im_session_del_timer(s);

    ngx_im_session_drop_repush(s);

    if (s->close_ev) {
        ngx_im_event_free(s->close_ev);
        s->close_ev = NULL;
    }

    ngx_im_session_free_out(s);

    ngx_im_stats.sessions--;
}
