/*
 * ngx_im_redis_conn.c: one Redis connection on nginx's own connection.
 *
 * Owns the life of a connection: ngx_event_connect_peer to one of the
 * server's addresses (the next one after a failure), the TLS handshake
 * and the certificate's check, AUTH (with an ACL user or without) and
 * SELECT, the output buffer written with the connection's send, the
 * input read with its recv until the socket is empty and fed to hiredis's
 * reader, the replies built in an arena, the watchdog on the connection's
 * own timer (decision 030) and reconnection with exponential backoff.
 * Every failure is logged once with the address, the connection and what
 * it was doing.  The owner (ngx_im_redis_worker.c) is told when the
 * connection is ready, of each reply, and when it went down.
 */

#include "ngx_im_redis_conn.h"


#define NGX_IM_REDIS_BACKOFF_MIN   100
#define NGX_IM_REDIS_BACKOFF_MAX   5000

/* output: a buffer this large or larger is given back once empty */
#define NGX_IM_REDIS_OUT_MIN       16384
#define NGX_IM_REDIS_OUT_KEEP      (1024 * 1024)

/*
 * Reads per readiness: one pass over thousands of client events takes
 * milliseconds, and a subscriber connection read once per pass falls
 * behind what is published to it until Redis closes it at its pubsub
 * output buffer limit (32 MB).  So the socket is read until it is empty,
 * up to 1 MB per pass; the rest is read in a posted event of the same
 * loop's next pass.
 */
#define NGX_IM_REDIS_READ_SIZE     16384
#define NGX_IM_REDIS_READS         64


struct ngx_im_redis_chunk_s {
    ngx_im_redis_chunk_t  *next;
    u_char                *last;
    u_char                *end;
};


static void ngx_im_redis_conn_connected(ngx_im_redis_conn_t *rc);
static ngx_int_t ngx_im_redis_conn_test_connect(ngx_im_redis_conn_t *rc);
#if (NGX_SSL)
static void ngx_im_redis_conn_handshake(ngx_im_redis_conn_t *rc);
static void ngx_im_redis_conn_handshaked(ngx_connection_t *c);
static ngx_int_t ngx_im_redis_conn_check_name(ngx_im_redis_conn_t *rc);
#endif
static void ngx_im_redis_conn_setup(ngx_im_redis_conn_t *rc);
static ngx_int_t ngx_im_redis_conn_setup_reply(ngx_im_redis_conn_t *rc,
    redisReply *reply);
static void ngx_im_redis_conn_ready(ngx_im_redis_conn_t *rc);
static void ngx_im_redis_conn_fail(ngx_im_redis_conn_t *rc);
static void ngx_im_redis_conn_close(ngx_im_redis_conn_t *rc);
static void ngx_im_redis_conn_read_handler(ngx_event_t *rev);
static void ngx_im_redis_conn_write_handler(ngx_event_t *wev);
static ngx_int_t ngx_im_redis_conn_parse(ngx_im_redis_conn_t *rc,
    ngx_connection_t *c);
static void ngx_im_redis_conn_reconnect_handler(ngx_event_t *ev);
static void ngx_im_redis_conn_watch_handler(ngx_event_t *ev);
static u_char *ngx_im_redis_conn_log_error(ngx_log_t *log, u_char *buf,
    size_t len);

static void *ngx_im_redis_new_string(const redisReadTask *task, char *str,
    size_t len);
static void *ngx_im_redis_new_array(const redisReadTask *task, int elements);
static void *ngx_im_redis_new_integer(const redisReadTask *task,
    long long value);
static void *ngx_im_redis_new_nil(const redisReadTask *task);
static void ngx_im_redis_free_reply(void *reply);


uint64_t  ngx_im_redis_conn_clock;


/* nginx's debug log reads a descriptor out of every timer's data */
static ngx_connection_t  ngx_im_redis_conn_dummy;

static redisReplyObjectFunctions  ngx_im_redis_reply_fns = {
    ngx_im_redis_new_string,
    ngx_im_redis_new_array,
    ngx_im_redis_new_integer,
    ngx_im_redis_new_nil,
    ngx_im_redis_free_reply
};


void
ngx_im_redis_conn_init(ngx_im_redis_conn_t *rc, ngx_im_redis_server_t *server,
    ngx_int_t db, const char *name, ngx_im_redis_conn_handlers_t *handlers,
    void *data)
{
    ngx_memzero(rc, sizeof(ngx_im_redis_conn_t));

    rc->server = server;
    rc->db = db;
    rc->name = name;
    rc->handlers = handlers;
    rc->data = data;
    rc->backoff = NGX_IM_REDIS_BACKOFF_MIN;

    /* every line about the connection names its address and its job */
    rc->log = *ngx_cycle->log;
    rc->log.handler = ngx_im_redis_conn_log_error;
    rc->log.data = rc;
    rc->log.action = NULL;

    ngx_im_redis_conn_dummy.fd = (ngx_socket_t) -1;

    rc->reconnect.handler = ngx_im_redis_conn_reconnect_handler;
    rc->reconnect.data = &ngx_im_redis_conn_dummy;
    rc->reconnect.log = &rc->log;
    rc->reconnect.cancelable = 1;

    rc->watch.handler = ngx_im_redis_conn_watch_handler;
    rc->watch.data = &ngx_im_redis_conn_dummy;
    rc->watch.log = &rc->log;
    rc->watch.cancelable = 1;
}


/* the timers' data is the dummy connection: the event finds its own */

static ngx_im_redis_conn_t *
ngx_im_redis_conn_of(ngx_event_t *ev, size_t offset)
{
    return (ngx_im_redis_conn_t *) ((u_char *) ev - offset);
}


static u_char *
ngx_im_redis_conn_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    u_char               *p;
    ngx_addr_t           *addr;
    ngx_im_redis_conn_t  *rc;

    rc = log->data;
    p = buf;

    if (log->action) {
        p = ngx_snprintf(p, len, " while %s", log->action);
        len -= p - buf;
    }

    if (rc->server->naddrs == 0) {
        return ngx_snprintf(p, len, ", redis: no address yet (%s)",
                            rc->name);
    }

    addr = &rc->server->addrs[rc->addr];

    return ngx_snprintf(p, len, ", redis: %V (%s)", &addr->name, rc->name);
}


void
ngx_im_redis_conn_connect(ngx_im_redis_conn_t *rc)
{
    int                     on;
    ngx_int_t               rv;
    ngx_addr_t             *addr;
    ngx_connection_t       *c;
    ngx_peer_connection_t  *pc;

    if (rc->server->naddrs == 0) {
        /* a Sentinel has not named the master yet: away until it does,
         * and then its owner connects (ngx_im_redis_conn_restart) */
        rc->state = NGX_IM_REDIS_DOWN;
        rc->failed = 1;
        return;
    }

    addr = &rc->server->addrs[rc->addr];

    pc = &rc->peer;
    ngx_memzero(pc, sizeof(ngx_peer_connection_t));

    pc->sockaddr = addr->sockaddr;
    pc->socklen = addr->socklen;
    pc->name = &addr->name;
    pc->get = ngx_event_get_peer;
    pc->log = &rc->log;
    pc->log_error = NGX_ERROR_ERR;

    rc->state = NGX_IM_REDIS_CONNECTING;
    rc->log.action = "connecting to Redis";
    rc->pending = 0;
    rc->probe = 0;
    rc->setup = 0;
    rc->progress = ngx_current_msec;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, &rc->log, 0,
                   "im redis: connection %ui connecting to %V", rc->index,
                   &addr->name);

    rv = ngx_event_connect_peer(pc);

    if (rv == NGX_ERROR || rv == NGX_BUSY || rv == NGX_DECLINED) {
        /* nginx logged the cause ("connect() to ... failed (111: ...)")
         * and closed the socket */
        pc->connection = NULL;
        ngx_im_redis_conn_fail(rc);
        return;
    }

    c = pc->connection;
    c->data = rc;
    c->read->handler = ngx_im_redis_conn_read_handler;
    c->write->handler = ngx_im_redis_conn_write_handler;

    rc->connection = c;

    rc->reader = redisReaderCreateWithFunctions(&ngx_im_redis_reply_fns);
    if (rc->reader == NULL) {
        ngx_log_error(NGX_LOG_ERR, &rc->log, 0, "im redis: out of memory");
        ngx_im_redis_conn_fail(rc);
        return;
    }

    /* the reply objects find their connection (and its arena) here */
    rc->reader->privdata = rc;

    if (addr->sockaddr->sa_family != AF_UNIX) {
        /* replies wanted at once, not after a delayed ACK */
        on = 1;
        (void) setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(int));
    }

    /* connect, handshake and login together take at most the timeout */
    ngx_add_timer(&rc->watch, rc->server->timeout);

    if (rv == NGX_AGAIN) {
        /* the write event tells how the connect ended */
        return;
    }

    ngx_im_redis_conn_connected(rc);
}


static ngx_int_t
ngx_im_redis_conn_test_connect(ngx_im_redis_conn_t *rc)
{
    int        err;
    socklen_t  len;

    err = 0;
    len = sizeof(int);

    if (getsockopt(rc->connection->fd, SOL_SOCKET, SO_ERROR, (void *) &err,
                   &len)
        == -1)
    {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_log_error(NGX_LOG_ERR, &rc->log, err,
                      "im redis: connect() failed");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_im_redis_conn_connected(ngx_im_redis_conn_t *rc)
{
    rc->progress = ngx_current_msec;

#if (NGX_SSL)
    if (rc->server->ssl) {
        ngx_im_redis_conn_handshake(rc);
        return;
    }
#endif

    ngx_im_redis_conn_setup(rc);
}


#if (NGX_SSL)

static void
ngx_im_redis_conn_handshake(ngx_im_redis_conn_t *rc)
{
    ngx_int_t          rv;
    ngx_str_t         *name;
    ngx_connection_t  *c;

    c = rc->connection;

    rc->state = NGX_IM_REDIS_HANDSHAKE;
    rc->log.action = "in the TLS handshake with Redis";

    /* the TLS connection's memory */
    c->pool = ngx_create_pool(1024, &rc->log);
    if (c->pool == NULL) {
        ngx_im_redis_conn_fail(rc);
        return;
    }

    if (ngx_ssl_create_connection(rc->server->ssl, c, NGX_SSL_CLIENT)
        != NGX_OK)
    {
        ngx_im_redis_conn_fail(rc);
        return;
    }

    name = &rc->server->ssl_name;

    /* no SNI for an address (RFC 6066) */
    if (name->len
        && ngx_inet_addr(name->data, name->len) == INADDR_NONE
#if (NGX_HAVE_INET6)
        && ngx_inet6_addr(name->data, name->len, NULL) != NGX_OK
#endif
        && SSL_set_tlsext_host_name(c->ssl->connection, (char *) name->data)
           == 0)
    {
        ngx_ssl_error(NGX_LOG_ERR, &rc->log, 0,
                      "im redis: SSL_set_tlsext_host_name(\"%V\") failed",
                      name);
        ngx_im_redis_conn_fail(rc);
        return;
    }

    rv = ngx_ssl_handshake(c);

    if (rv == NGX_AGAIN) {
        c->ssl->handler = ngx_im_redis_conn_handshaked;
        return;
    }

    ngx_im_redis_conn_handshaked(c);
}


static void
ngx_im_redis_conn_handshaked(ngx_connection_t *c)
{
    long                  rv;
    ngx_im_redis_conn_t  *rc;

    rc = c->data;

    if (!c->ssl->handshaked) {
        /* nginx logged OpenSSL's reason */
        ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                      "im redis: TLS handshake failed");
        ngx_im_redis_conn_fail(rc);
        return;
    }

    if (rc->server->ssl_verify) {
        rv = SSL_get_verify_result(c->ssl->connection);

        if (rv != X509_V_OK) {
            ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                          "im redis: TLS certificate verify failed: "
                          "(%l:%s)", rv, X509_verify_cert_error_string(rv));
            ngx_im_redis_conn_fail(rc);
            return;
        }

        if (ngx_im_redis_conn_check_name(rc) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                          "im redis: TLS certificate does not match \"%V\"",
                          &rc->server->ssl_name);
            ngx_im_redis_conn_fail(rc);
            return;
        }
    }

    c->read->handler = ngx_im_redis_conn_read_handler;
    c->write->handler = ngx_im_redis_conn_write_handler;

    ngx_im_redis_conn_setup(rc);
}


/* a name as ngx_ssl_check_host does; an address against the IP entries */

static ngx_int_t
ngx_im_redis_conn_check_name(ngx_im_redis_conn_t *rc)
{
    X509       *cert;
    ngx_int_t   rv;
    ngx_str_t  *name;

    name = &rc->server->ssl_name;

    if (ngx_inet_addr(name->data, name->len) == INADDR_NONE
#if (NGX_HAVE_INET6)
        && ngx_inet6_addr(name->data, name->len, NULL) != NGX_OK
#endif
       )
    {
        return ngx_ssl_check_host(rc->connection, name);
    }

    cert = SSL_get_peer_certificate(rc->connection->ssl->connection);
    if (cert == NULL) {
        return NGX_ERROR;
    }

    /* ssl_name is null-terminated (see ngx_im_module.c) */
    rv = (X509_check_ip_asc(cert, (char *) name->data, 0) == 1)
         ? NGX_OK : NGX_ERROR;

    X509_free(cert);

    return rv;
}

#endif


/* AUTH and SELECT, as plain bytes ahead of everything else */

static void
ngx_im_redis_conn_setup(ngx_im_redis_conn_t *rc)
{
    u_char                 *p;
    size_t                  need, n;
    ngx_im_redis_server_t  *s;
    u_char                  db[NGX_INT_T_LEN];

    s = rc->server;

    rc->state = NGX_IM_REDIS_SETUP;
    rc->log.action = "logging in to Redis";
    rc->setup = 0;
    rc->progress = ngx_current_msec;

    need = sizeof("*3\r\n$4\r\nAUTH\r\n$\r\n\r\n$\r\n\r\n") + 2 * NGX_SIZE_T_LEN
           + s->user.len + s->password.len
           + sizeof("*2\r\n$6\r\nSELECT\r\n$\r\n\r\n") + 2 * NGX_INT_T_LEN
           + sizeof("*1\r\n$4\r\nROLE\r\n");

    p = ngx_im_redis_conn_reserve(rc, need);
    if (p == NULL) {
        ngx_im_redis_conn_fail(rc);
        return;
    }

    if (s->password.len) {
        if (s->user.len) {
            p = ngx_sprintf(p, "*3\r\n$4\r\nAUTH\r\n$%uz\r\n%V\r\n",
                            s->user.len, &s->user);
        } else {
            p = ngx_cpymem(p, "*2\r\n$4\r\nAUTH\r\n", 14);
        }

        p = ngx_sprintf(p, "$%uz\r\n%V\r\n", s->password.len, &s->password);
        rc->setup++;
    }

    if (rc->db > 0) {
        n = ngx_sprintf(db, "%i", rc->db) - db;
        p = ngx_sprintf(p, "*2\r\n$6\r\nSELECT\r\n$%uz\r\n%*s\r\n",
                        n, n, db);
        rc->setup++;
    }

    if (s->master) {
        /* a Sentinel named it, but a replica must never take writes: a
         * stale answer, or a failover under way */
        p = ngx_cpymem(p, "*1\r\n$4\r\nROLE\r\n", 14);
        rc->setup++;
    }

    rc->last = p;

    if (rc->setup == 0) {
        ngx_im_redis_conn_ready(rc);
        return;
    }

    ngx_im_redis_conn_send(rc);
}


static ngx_int_t
ngx_im_redis_conn_setup_reply(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    ngx_uint_t    total, i;
    const char   *what, *steps[3];
    redisReply   *role;

    /* the replies come in the order of the commands: AUTH, SELECT, ROLE,
     * each when it was sent */
    total = 0;

    if (rc->server->password.len) {
        steps[total++] = "AUTH";
    }

    if (rc->db > 0) {
        steps[total++] = "SELECT";
    }

    if (rc->server->master) {
        steps[total++] = "ROLE";
    }

    i = total - rc->setup;
    what = (i < total) ? steps[i] : "setup";

    rc->progress = ngx_current_msec;

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                      "im redis: %s failed: %*s", what, reply->len,
                      reply->str);
        return NGX_ERROR;
    }

    if (what[0] == 'R') {
        role = (reply->type == REDIS_REPLY_ARRAY && reply->elements)
               ? reply->element[0] : NULL;

        if (role == NULL
            || (role->type != REDIS_REPLY_STRING
                && role->type != REDIS_REPLY_STATUS))
        {
            ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                          "im redis: not a master: ROLE answered "
                          "no role");
            return NGX_ERROR;
        }

        if (role->len != 6 || ngx_strncmp(role->str, "master", 6) != 0) {
            ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                          "im redis: not a master: ROLE says \"%*s\"",
                          role->len, role->str);
            return NGX_ERROR;
        }
    }

    if (--rc->setup == 0) {
        ngx_im_redis_conn_ready(rc);
    }

    return NGX_OK;
}


static void
ngx_im_redis_conn_ready(ngx_im_redis_conn_t *rc)
{
    rc->state = NGX_IM_REDIS_READY;
    rc->failed = 0;
    rc->log.action = NULL;
    rc->backoff = NGX_IM_REDIS_BACKOFF_MIN;
    rc->progress = ngx_current_msec;
    rc->pending = 0;
    rc->probe = 0;

    if (rc->watch.timer_set) {
        ngx_del_timer(&rc->watch);
    }

    ngx_im_gauges->redis_up++;

    ngx_log_error(NGX_LOG_INFO, &rc->log, 0, "im redis: connection %ui ready",
                  rc->index);

    rc->handlers->ready(rc);
}


/*
 * The connection is gone (or never came): closed, its requests failed by
 * the owner, and a reconnect timer set.  A connection that never got
 * ready tries the server's next address.
 */

static void
ngx_im_redis_conn_fail(ngx_im_redis_conn_t *rc)
{
    ngx_uint_t  was;

    was = rc->state;

    ngx_im_redis_conn_close(rc);

    rc->state = NGX_IM_REDIS_DOWN;
    rc->pending = 0;
    rc->probe = 0;
    rc->log.action = NULL;

    if (was == NGX_IM_REDIS_READY) {
        ngx_im_gauges->redis_up--;

    } else {
        /* an attempt to connect failed: Redis is away (a connection
         * merely lost is not, until its reconnection fails too) */
        rc->failed = !rc->exiting;

        if (rc->server->naddrs) {
            rc->addr = (rc->addr + 1) % rc->server->naddrs;
        }
    }

    if (!rc->exiting) {
        ngx_im_stats->redis_reconnects++;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, &rc->log, 0,
                   "im redis: connection %ui down, reconnect in %M",
                   rc->index, rc->backoff);

    rc->handlers->down(rc);

    if (rc->exiting) {
        return;
    }

    if (!rc->reconnect.timer_set) {
        ngx_add_timer(&rc->reconnect, rc->backoff);
    }

    rc->backoff *= 2;
    if (rc->backoff > NGX_IM_REDIS_BACKOFF_MAX) {
        rc->backoff = NGX_IM_REDIS_BACKOFF_MAX;
    }
}


void
ngx_im_redis_conn_drop(ngx_im_redis_conn_t *rc)
{
    if (rc->connection) {
        ngx_im_redis_conn_fail(rc);
    }
}


void
ngx_im_redis_conn_restart(ngx_im_redis_conn_t *rc)
{
    if (rc->exiting) {
        return;
    }

    if (rc->connection) {
        /* what it was asked fails now (the owner's down handler): it was
         * asked of the old server */
        ngx_im_redis_conn_fail(rc);
    }

    if (rc->reconnect.timer_set) {
        ngx_del_timer(&rc->reconnect);
    }

    rc->addr = 0;
    rc->backoff = NGX_IM_REDIS_BACKOFF_MIN;

    ngx_im_redis_conn_connect(rc);
}


static void
ngx_im_redis_conn_close(ngx_im_redis_conn_t *rc)
{
    ngx_pool_t        *pool;
    ngx_connection_t  *c;

    if (rc->watch.timer_set) {
        ngx_del_timer(&rc->watch);
    }

    c = rc->connection;

    if (c) {
        rc->connection = NULL;

#if (NGX_SSL)
        if (c->ssl) {
            c->ssl->no_wait_shutdown = 1;
            (void) ngx_ssl_shutdown(c);
        }
#endif

        pool = c->pool;
        ngx_close_connection(c);

        if (pool) {
            ngx_destroy_pool(pool);
        }
    }

    if (rc->reader) {
        redisReaderFree(rc->reader);
        rc->reader = NULL;
    }

    rc->pos = rc->start;
    rc->last = rc->start;
}


static void
ngx_im_redis_conn_reconnect_handler(ngx_event_t *ev)
{
    ngx_im_redis_conn_t  *rc;

    rc = ngx_im_redis_conn_of(ev, offsetof(ngx_im_redis_conn_t, reconnect));

    if (rc->exiting || rc->connection) {
        return;
    }

    ngx_im_redis_conn_connect(rc);
}


void
ngx_im_redis_conn_exit(ngx_im_redis_conn_t *rc)
{
    ssize_t            n;
    ngx_connection_t  *c;

    rc->exiting = 1;

    if (rc->reconnect.timer_set) {
        ngx_del_timer(&rc->reconnect);
    }

    c = rc->connection;

    if (c == NULL) {
        return;
    }

    /* what the worker last asked of Redis (the removals of the last acks
     * above all) leaves now, as far as the socket takes it at once: the
     * event loop that would have written it is over */

    if (rc->state == NGX_IM_REDIS_READY && rc->last > rc->pos) {
        n = c->send(c, rc->pos, rc->last - rc->pos);
        (void) n;
    }

    ngx_im_redis_conn_fail(rc);
}


/*
 * The watchdog, on the connection's own timer, set when a request goes
 * out to an idle connection and looked at again when it fires.
 *
 * A connection with requests unanswered for the timeout is not yet taken
 * for dead: a Redis busy with a login storm of many workers (tens of
 * thousands of SUBSCRIBEs and presence writes) answers late, and dropping
 * it then makes every worker subscribe all its uids and read all its
 * inboxes again, on top of the storm.  So the connection is dead only
 * when nothing comes back at all: no byte of a reply (replies that wait in
 * the socket mean that this worker is behind, not Redis) and no answer to
 * a PING sent at the first timeout, within a second timeout.  A busy Redis
 * answers the PING behind the commands before it; a dead one, a hung one
 * or a lost route never does.  Connecting, the TLS handshake and the login
 * together have one timeout.
 */

static void
ngx_im_redis_conn_watch_handler(ngx_event_t *ev)
{
    int                   n;
    ngx_msec_t            now, timeout, since;
    ngx_im_redis_conn_t  *rc;

    rc = ngx_im_redis_conn_of(ev, offsetof(ngx_im_redis_conn_t, watch));

    if (rc->connection == NULL) {
        return;
    }

    now = ngx_current_msec;
    timeout = rc->server->timeout;
    since = now - rc->progress;

    if (rc->state != NGX_IM_REDIS_READY) {

        if (since < timeout) {
            ngx_add_timer(ev, timeout - since);
            return;
        }

        ngx_log_error(NGX_LOG_ERR, &rc->log, NGX_ETIMEDOUT,
                      "im redis: connection %ui timed out after %M ms",
                      rc->index, since);
        ngx_im_redis_conn_fail(rc);
        return;
    }

    if (rc->pending == 0) {
        rc->probe = 0;
        return;
    }

    if (since < timeout) {
        ngx_add_timer(ev, timeout - since);
        return;
    }

    if (ioctl(rc->connection->fd, FIONREAD, &n) != -1 && n > 0) {
        rc->progress = now;
        ngx_add_timer(ev, timeout);
        return;
    }

    if (rc->probe == 0) {
        ngx_log_error(NGX_LOG_WARN, &rc->log, 0,
                      "im redis: connection %ui: %ui commands unanswered "
                      "for %M ms, PING sent", rc->index, rc->pending, since);

        if (rc->handlers->ping(rc) == NGX_OK) {
            rc->probe = now;
            ngx_im_stats->redis_pings++;
            ngx_add_timer(ev, timeout);
            return;
        }

    } else if (now - rc->probe < timeout) {
        ngx_add_timer(ev, timeout - (now - rc->probe));
        return;
    }

    ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                  "im redis: connection %ui timed out: nothing received "
                  "for %M ms", rc->index, since);

    ngx_im_redis_conn_fail(rc);
}


void
ngx_im_redis_conn_sent(ngx_im_redis_conn_t *rc, ngx_uint_t n)
{
    if (rc->pending == 0) {
        rc->progress = ngx_current_msec;

        if (!rc->watch.timer_set) {
            ngx_add_timer(&rc->watch, rc->server->timeout);
        }
    }

    rc->pending += n;
}


/*
 * Output.  Commands are formatted straight into the connection's buffer
 * (ngx_im_redis_conn_reserve, then _commit), and the buffer is written
 * once at the end of the event loop pass by the write event, posted: a
 * pass's commands leave in one send.  A TLS write that must be retried
 * is retried with the same bytes first (the buffer may move: the context
 * allows it, see ngx_im_module.c).
 */

u_char *
ngx_im_redis_conn_reserve(ngx_im_redis_conn_t *rc, size_t size)
{
    u_char  *p;
    size_t   n, have;

    if ((size_t) (rc->end - rc->last) >= size) {
        return rc->last;
    }

    n = rc->last - rc->pos;
    have = rc->end - rc->start;

    if (rc->pos != rc->start && have - n >= size && n < have / 2) {
        ngx_memmove(rc->start, rc->pos, n);
        rc->pos = rc->start;
        rc->last = rc->start + n;
        return rc->last;
    }

    have = ngx_max(ngx_max(have * 2, n + size), NGX_IM_REDIS_OUT_MIN);

    p = ngx_alloc(have, &rc->log);
    if (p == NULL) {
        return NULL;
    }

    if (n) {
        ngx_memcpy(p, rc->pos, n);
    }

    if (rc->start) {
        ngx_free(rc->start);
    }

    rc->start = p;
    rc->pos = p;
    rc->last = p + n;
    rc->end = p + have;

    return rc->last;
}


void
ngx_im_redis_conn_commit(ngx_im_redis_conn_t *rc, u_char *last)
{
    ngx_event_t  *wev;

    rc->last = last;

    wev = rc->connection->write;

    if (wev->ready && !wev->posted) {
        ngx_post_event(wev, &ngx_posted_events);
    }
}


ngx_int_t
ngx_im_redis_conn_append(ngx_im_redis_conn_t *rc, u_char *data, size_t len)
{
    u_char  *p;

    p = ngx_im_redis_conn_reserve(rc, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_im_redis_conn_commit(rc, ngx_cpymem(p, data, len));

    return NGX_OK;
}


/*
 * PING as plain bytes, with no callback: the watchdog's question on a
 * connection that subscribed (the subscriber's, a sentinel's), whose
 * answers are told apart by ngx_im_redis_conn_pong().
 */

ngx_int_t
ngx_im_redis_conn_ping(ngx_im_redis_conn_t *rc)
{
    if (ngx_im_redis_conn_append(rc, (u_char *) "*1\r\n$4\r\nPING\r\n", 14)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_im_redis_conn_sent(rc, 1);

    return NGX_OK;
}


/* "+PONG" with no channel subscribed, ["pong", ""] once subscribed */

ngx_uint_t
ngx_im_redis_conn_pong(redisReply *reply)
{
    return reply->type == REDIS_REPLY_STATUS
           || (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
               && reply->element[0]->type == REDIS_REPLY_STRING
               && reply->element[0]->len == 4
               && ngx_strncmp(reply->element[0]->str, "pong", 4) == 0);
}


void
ngx_im_redis_conn_send(ngx_im_redis_conn_t *rc)
{
    ssize_t            n;
    ngx_connection_t  *c;

    c = rc->connection;

    if (c == NULL || rc->state < NGX_IM_REDIS_SETUP) {
        return;
    }

    if (rc->state == NGX_IM_REDIS_READY && rc->handlers->flush) {
        rc->handlers->flush(rc);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    /* the next command is of the next pass */
    ngx_im_redis_conn_clock = 0;

    while (rc->pos < rc->last) {

        n = c->send(c, rc->pos, rc->last - rc->pos);

        if (n == NGX_AGAIN) {
            /* the write event comes when there is room */
            return;
        }

        if (n == NGX_ERROR) {
            /* nginx logged the cause */
            ngx_im_redis_conn_fail(rc);
            return;
        }

        rc->pos += n;
    }

    if ((size_t) (rc->end - rc->start) > NGX_IM_REDIS_OUT_KEEP) {
        /* a burst's buffer goes back to the heap */
        ngx_free(rc->start);
        rc->start = NULL;
        rc->end = NULL;
    }

    rc->pos = rc->start;
    rc->last = rc->start;
}


static void
ngx_im_redis_conn_write_handler(ngx_event_t *wev)
{
    ngx_connection_t     *c;
    ngx_im_redis_conn_t  *rc;

    c = wev->data;
    rc = c->data;

    if (rc->state == NGX_IM_REDIS_CONNECTING) {
        if (ngx_im_redis_conn_test_connect(rc) != NGX_OK) {
            ngx_im_redis_conn_fail(rc);
            return;
        }

        ngx_im_redis_conn_connected(rc);
        return;
    }

    ngx_im_redis_conn_send(rc);
}


static void
ngx_im_redis_conn_read_handler(ngx_event_t *rev)
{
    ssize_t               n;
    ngx_uint_t            i;
    ngx_connection_t     *c;
    ngx_im_redis_conn_t  *rc;

    static u_char         buf[NGX_IM_REDIS_READ_SIZE];

    c = rev->data;
    rc = c->data;

    if (rc->state == NGX_IM_REDIS_CONNECTING) {
        if (ngx_im_redis_conn_test_connect(rc) != NGX_OK) {
            ngx_im_redis_conn_fail(rc);
            return;
        }

        ngx_im_redis_conn_connected(rc);
        return;
    }

    for (i = 0; i < NGX_IM_REDIS_READS; i++) {

        n = c->recv(c, buf, NGX_IM_REDIS_READ_SIZE);

        if (n == NGX_AGAIN) {
            return;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                          "im redis: connection %ui lost: %s", rc->index,
                          n == 0 ? "closed by Redis" : "read failed");
            ngx_im_redis_conn_fail(rc);
            return;
        }

        /* a part of a reply is a sign of life too: a large one (an
         * inbox, a page of members) may take longer than the timeout */
        rc->progress = ngx_current_msec;

        if (redisReaderFeed(rc->reader, (char *) buf, n) != REDIS_OK) {
            ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                          "im redis: out of memory");
            ngx_im_redis_conn_fail(rc);
            return;
        }

        /* the replies' time; the commands their callbacks send leave at
         * the end of this pass */
        ngx_im_redis_conn_clock = ngx_im_metrics_now();

        if (ngx_im_redis_conn_parse(rc, c) != NGX_OK) {
            return;
        }

        if (!rev->ready) {
            return;
        }
    }

    /* more to read: on the next pass, after the other events */
    ngx_post_event(rev, &ngx_posted_next_events);
}


/* the replies read so far; NGX_ERROR when the connection went meanwhile */

static ngx_int_t
ngx_im_redis_conn_parse(ngx_im_redis_conn_t *rc, ngx_connection_t *c)
{
    void       *r;
    ngx_int_t   rv;

    for ( ;; ) {
        if (redisReaderGetReply(rc->reader, &r) != REDIS_OK) {
            ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                          "im redis: bad reply: %s", rc->reader->errstr);
            ngx_im_redis_conn_fail(rc);
            return NGX_ERROR;
        }

        if (r == NULL) {
            return NGX_OK;
        }

        if (rc->state == NGX_IM_REDIS_SETUP) {
            rv = ngx_im_redis_conn_setup_reply(rc, r);

        } else {
            rv = rc->handlers->reply(rc, r);
        }

        ngx_im_redis_free_reply(r);

        if (rc->connection != c) {
            return NGX_ERROR;
        }

        if (rv != NGX_OK) {
            ngx_im_redis_conn_fail(rc);
            return NGX_ERROR;
        }
    }
}


/*
 * Replies are built in an arena per connection rather than with a malloc
 * per element: a group's SSCAN page of 1,000 members was 2,000 mallocs and
 * as many frees, the largest user-space cost of a fan-out.  hiredis's
 * reader builds one reply at a time and the reply is freed (above, or by
 * the reader through freeObject) before the next one starts, so freeing
 * a root empties its connection's arena.  The reader's privdata names the
 * connection; a root also keeps it in the word in front of it, for the
 * free.
 */

#define NGX_IM_REDIS_CHUNK   (64 * 1024)
#define NGX_IM_REDIS_PREFIX  16

#define ngx_im_redis_chunk_hdr                                                \
    ngx_align(sizeof(ngx_im_redis_chunk_t), NGX_IM_REDIS_PREFIX)


static void *
ngx_im_redis_arena_alloc(ngx_im_redis_conn_t *rc, size_t size)
{
    u_char                *p;
    size_t                 n;
    ngx_im_redis_chunk_t  *ch;

    size = ngx_align(size, NGX_IM_REDIS_PREFIX);
    ch = rc->arena;

    if (ch == NULL || (size_t) (ch->end - ch->last) < size) {
        n = ngx_max(NGX_IM_REDIS_CHUNK, ngx_im_redis_chunk_hdr + size);

        ch = ngx_alloc(n, ngx_cycle->log);
        if (ch == NULL) {
            return NULL;
        }

        ch->next = rc->arena;
        ch->last = (u_char *) ch + ngx_im_redis_chunk_hdr;
        ch->end = (u_char *) ch + n;
        rc->arena = ch;
    }

    p = ch->last;
    ch->last += size;

    return p;
}


static redisReply *
ngx_im_redis_new(const redisReadTask *task, int type, size_t extra)
{
    u_char               *p;
    redisReply           *r, *parent;
    ngx_im_redis_conn_t  *rc;

    rc = task->privdata;

    if (rc == NULL) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "im redis: a reply without its connection");
        return NULL;
    }

    if (task->parent == NULL) {
        p = ngx_im_redis_arena_alloc(rc, NGX_IM_REDIS_PREFIX
                                         + sizeof(redisReply) + extra);
        if (p == NULL) {
            return NULL;
        }

        *(ngx_im_redis_conn_t **) p = rc;
        r = (redisReply *) (p + NGX_IM_REDIS_PREFIX);

    } else {
        r = ngx_im_redis_arena_alloc(rc, sizeof(redisReply) + extra);
        if (r == NULL) {
            return NULL;
        }

        parent = task->parent->obj;
        parent->element[task->idx] = r;
    }

    ngx_memzero(r, sizeof(redisReply));
    r->type = type;

    return r;
}


static void *
ngx_im_redis_new_string(const redisReadTask *task, char *str, size_t len)
{
    redisReply  *r;

    r = ngx_im_redis_new(task, task->type, len + 1);
    if (r == NULL) {
        return NULL;
    }

    r->str = (char *) (r + 1);
    r->len = len;
    ngx_memcpy(r->str, str, len);
    r->str[len] = '\0';

    return r;
}


static void *
ngx_im_redis_new_array(const redisReadTask *task, int elements)
{
    size_t       n;
    redisReply  *r;

    n = (elements > 0) ? (size_t) elements * sizeof(redisReply *) : 0;

    r = ngx_im_redis_new(task, REDIS_REPLY_ARRAY, n);
    if (r == NULL) {
        return NULL;
    }

    if (n) {
        r->element = (redisReply **) (r + 1);
        ngx_memzero(r->element, n);
    }

    r->elements = (elements > 0) ? (size_t) elements : 0;

    return r;
}


static void *
ngx_im_redis_new_integer(const redisReadTask *task, long long value)
{
    redisReply  *r;

    r = ngx_im_redis_new(task, REDIS_REPLY_INTEGER, 0);
    if (r == NULL) {
        return NULL;
    }

    r->integer = value;

    return r;
}


static void *
ngx_im_redis_new_nil(const redisReadTask *task)
{
    return ngx_im_redis_new(task, REDIS_REPLY_NIL, 0);
}


static void
ngx_im_redis_free_reply(void *reply)
{
    ngx_im_redis_conn_t   *rc;
    ngx_im_redis_chunk_t  *ch;

    rc = *(ngx_im_redis_conn_t **) ((u_char *) reply - NGX_IM_REDIS_PREFIX);

    /* keep one chunk of the standard size */

    while (rc->arena) {
        ch = rc->arena;

        if (ch->next == NULL
            && (size_t) (ch->end - (u_char *) ch) == NGX_IM_REDIS_CHUNK)
        {
            ch->last = (u_char *) ch + ngx_im_redis_chunk_hdr;
            return;
        }

        rc->arena = ch->next;
        ngx_free(ch);
    }
}
