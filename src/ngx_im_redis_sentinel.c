/*
 * ngx_im_redis_sentinel.c: the master's address, as Redis Sentinel says.
 *
 * Owns the worker's one connection to a sentinel (an ngx_im_redis_conn_t
 * whose server is the list of sentinels: a sentinel that cannot be
 * reached, or does not know the master's name, makes it try the next),
 * the question it asks when it comes up, SENTINEL get-master-addr-by-name
 * followed by SUBSCRIBE +switch-master in the same write (so that no
 * switch falls between the answer and the subscription), and the master's
 * address itself, which the worker's data connections read from their
 * shared server.  A new address restarts them through the owner's
 * callback; the owner also asks again here whenever one of them is lost
 * or refused, because a failover may have happened while this connection
 * was away (its +switch-master then went unheard).
 */

#include "ngx_im_redis_sentinel.h"


#define NGX_IM_SENTINEL_DOWN       0
#define NGX_IM_SENTINEL_ASKING     1
#define NGX_IM_SENTINEL_LISTENING  2

/* between two questions when no sentinel knows the name, and between two
 * log lines saying so */
#define NGX_IM_SENTINEL_RETRY      1000
#define NGX_IM_SENTINEL_QUIET      60


static void ngx_im_redis_sentinel_ready(ngx_im_redis_conn_t *rc);
static ngx_int_t ngx_im_redis_sentinel_reply(ngx_im_redis_conn_t *rc,
    redisReply *reply);
static void ngx_im_redis_sentinel_down(ngx_im_redis_conn_t *rc);
static ngx_int_t ngx_im_redis_sentinel_answer(ngx_im_redis_conn_t *rc,
    redisReply *reply);
static ngx_int_t ngx_im_redis_sentinel_next(ngx_im_redis_conn_t *rc);
static void ngx_im_redis_sentinel_switch(ngx_im_redis_conn_t *rc,
    u_char *data, size_t len);
static ngx_int_t ngx_im_redis_sentinel_set(ngx_im_redis_conn_t *rc,
    u_char *ip, size_t iplen, u_char *port, size_t portlen);


static ngx_im_redis_conn_handlers_t  ngx_im_redis_sentinel_handlers = {
    ngx_im_redis_sentinel_ready,
    ngx_im_redis_sentinel_reply,
    ngx_im_redis_sentinel_down,
    ngx_im_redis_conn_ping,
    NULL
};

static ngx_im_redis_conn_t        ngx_im_sentinel_conn;
static ngx_im_redis_server_t      ngx_im_sentinel_server;
static ngx_uint_t                 ngx_im_sentinel_state;
static ngx_str_t                  ngx_im_sentinel_name;

/* the data connections' server and the callback that restarts them */
static ngx_im_redis_server_t     *ngx_im_sentinel_master;
static ngx_im_redis_sentinel_pt   ngx_im_sentinel_restart;
static ngx_uint_t                 ngx_im_sentinel_switching;
static time_t                     ngx_im_sentinel_logged;

/*
 * The master's address in two slots, the new one written into the slot
 * not in use: a connection to the old master may still log a line with
 * its address until it is restarted.
 */
static ngx_addr_t                 ngx_im_sentinel_addrs[2];
static ngx_sockaddr_t             ngx_im_sentinel_sockaddrs[2];
static u_char                     ngx_im_sentinel_names[2]
                                                     [NGX_SOCKADDR_STRLEN];
static ngx_uint_t                 ngx_im_sentinel_slot;


ngx_int_t
ngx_im_redis_sentinel_init(ngx_cycle_t *cycle, ngx_im_redis_server_t *server,
    ngx_im_redis_sentinel_pt master)
{
    ngx_im_conf_t          *imcf;
    ngx_im_redis_server_t  *s;

    imcf = ngx_im_get_conf();

    ngx_im_sentinel_name = imcf->sentinel_master;
    ngx_im_sentinel_master = server;
    ngx_im_sentinel_restart = master;
    ngx_im_sentinel_state = NGX_IM_SENTINEL_DOWN;
    ngx_im_sentinel_slot = 0;
    ngx_im_sentinel_logged = 0;

    /* no address until a sentinel names the master: the connections are
     * away meanwhile, and logins are answered 2 */
    server->addrs = &ngx_im_sentinel_addrs[0];
    server->naddrs = 0;
    server->master = 1;

    /* the sentinels: their own AUTH, the servers' TLS and timeout */
    s = &ngx_im_sentinel_server;
    s->addrs = imcf->sentinels->elts;
    s->naddrs = imcf->sentinels->nelts;
    s->user = imcf->sentinel_user;
    s->password = imcf->sentinel_password;
    s->timeout = server->timeout;
#if (NGX_SSL)
    s->ssl = server->ssl;
#endif
    s->ssl_name = server->ssl_name;
    s->ssl_verify = server->ssl_verify;
    s->master = 0;

    ngx_im_redis_conn_init(&ngx_im_sentinel_conn, s, 0, "sentinel",
                           &ngx_im_redis_sentinel_handlers, NULL);
    ngx_im_redis_conn_connect(&ngx_im_sentinel_conn);

    return NGX_OK;
}


void
ngx_im_redis_sentinel_exit(void)
{
    ngx_im_redis_conn_exit(&ngx_im_sentinel_conn);
}


/*
 * A data connection was lost or refused.  The master may have failed
 * over while this connection was down too, so the sentinel is asked
 * again: the connection is dropped and comes back (to the same sentinel,
 * after the shortest backoff) with the question.  Once at a time: the
 * four data connections fail together.
 */

void
ngx_im_redis_sentinel_ask(void)
{
    if (ngx_im_sentinel_switching
        || ngx_im_sentinel_state != NGX_IM_SENTINEL_LISTENING)
    {
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "im redis: a connection went: the sentinel is asked "
                   "again");

    ngx_im_redis_conn_drop(&ngx_im_sentinel_conn);
}


static void
ngx_im_redis_sentinel_ready(ngx_im_redis_conn_t *rc)
{
    u_char     *p;
    ngx_str_t  *name;

    name = &ngx_im_sentinel_name;

    p = ngx_im_redis_conn_reserve(rc, 128 + NGX_SIZE_T_LEN + name->len);
    if (p == NULL) {
        ngx_im_redis_conn_drop(rc);
        return;
    }

    p = ngx_sprintf(p, "*3\r\n$8\r\nSENTINEL\r\n"
                    "$23\r\nget-master-addr-by-name\r\n"
                    "$%uz\r\n%V\r\n"
                    "*2\r\n$9\r\nSUBSCRIBE\r\n$14\r\n+switch-master\r\n",
                    name->len, name);

    ngx_im_redis_conn_commit(rc, p);
    ngx_im_redis_conn_sent(rc, 2);

    ngx_im_sentinel_state = NGX_IM_SENTINEL_ASKING;

    ngx_im_redis_conn_send(rc);
}


static void
ngx_im_redis_sentinel_down(ngx_im_redis_conn_t *rc)
{
    ngx_im_sentinel_state = NGX_IM_SENTINEL_DOWN;
}


static ngx_int_t
ngx_im_redis_sentinel_reply(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    redisReply  *type, *chan, *msg;

    if (ngx_im_redis_conn_pong(reply)) {
        ngx_im_redis_conn_answered(rc);
        return NGX_OK;
    }

    if (ngx_im_sentinel_state == NGX_IM_SENTINEL_ASKING) {
        ngx_im_redis_conn_answered(rc);
        return ngx_im_redis_sentinel_answer(rc, reply);
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                          "im redis: sentinel: %*s", reply->len, reply->str);
            return ngx_im_redis_sentinel_next(rc);
        }

        return NGX_OK;
    }

    type = reply->element[0];
    chan = reply->element[1];
    msg = reply->element[2];

    if (type->type != REDIS_REPLY_STRING) {
        return NGX_OK;
    }

    if (type->len == 9 && ngx_strncmp(type->str, "subscribe", 9) == 0) {
        ngx_im_redis_conn_answered(rc);
        return NGX_OK;
    }

    if (type->len == 7 && ngx_strncmp(type->str, "message", 7) == 0
        && chan->type == REDIS_REPLY_STRING
        && msg->type == REDIS_REPLY_STRING)
    {
        rc->progress = ngx_current_msec;
        ngx_im_redis_sentinel_switch(rc, (u_char *) msg->str, msg->len);
    }

    return NGX_OK;
}


/* the answer to SENTINEL get-master-addr-by-name: [ip, port] or nil */

static ngx_int_t
ngx_im_redis_sentinel_answer(ngx_im_redis_conn_t *rc, redisReply *reply)
{
    redisReply  *ip, *port;

    ngx_im_sentinel_state = NGX_IM_SENTINEL_LISTENING;

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                      "im redis: sentinel: SENTINEL "
                      "get-master-addr-by-name failed: %*s",
                      reply->len, reply->str);
        return ngx_im_redis_sentinel_next(rc);
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        if (ngx_time() - ngx_im_sentinel_logged >= NGX_IM_SENTINEL_QUIET) {
            ngx_im_sentinel_logged = ngx_time();
            ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                          "im redis: sentinel does not know the master "
                          "\"%V\" (asked again every %d ms, this line "
                          "every %d s)", &ngx_im_sentinel_name,
                          NGX_IM_SENTINEL_RETRY, NGX_IM_SENTINEL_QUIET);
        }

        return ngx_im_redis_sentinel_next(rc);
    }

    ip = reply->element[0];
    port = reply->element[1];

    if (ngx_im_redis_sentinel_set(rc, (u_char *) ip->str, ip->len,
                                  (u_char *) port->str, port->len)
        != NGX_OK)
    {
        return ngx_im_redis_sentinel_next(rc);
    }

    ngx_im_sentinel_logged = 0;

    return NGX_OK;
}


/* this sentinel cannot help: the next one, a moment later */

static ngx_int_t
ngx_im_redis_sentinel_next(ngx_im_redis_conn_t *rc)
{
    rc->addr = (rc->addr + 1) % rc->server->naddrs;

    /* the backoff of a connection that got ready is the shortest: a
     * question a second, not ten (the connection doubles it from here) */
    rc->backoff = NGX_IM_SENTINEL_RETRY;

    return NGX_ERROR;
}


/* +switch-master: "<name> <old ip> <old port> <new ip> <new port>" */

static void
ngx_im_redis_sentinel_switch(ngx_im_redis_conn_t *rc, u_char *data,
    size_t len)
{
    u_char      *p, *last, *word[5];
    size_t       wlen[5];
    ngx_uint_t   n;

    p = data;
    last = data + len;

    for (n = 0; n < 5 && p < last; n++) {
        word[n] = p;

        while (p < last && *p != ' ') {
            p++;
        }

        wlen[n] = p - word[n];

        while (p < last && *p == ' ') {
            p++;
        }
    }

    if (n < 5) {
        ngx_log_error(NGX_LOG_WARN, &rc->log, 0,
                      "im redis: sentinel: +switch-master \"%*s\" not "
                      "understood", len, data);
        return;
    }

    if (wlen[0] != ngx_im_sentinel_name.len
        || ngx_strncmp(word[0], ngx_im_sentinel_name.data, wlen[0]) != 0)
    {
        /* another master of the same sentinels */
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, &rc->log, 0,
                  "im redis: sentinel: +switch-master \"%V\" from %*s:%*s "
                  "to %*s:%*s", &ngx_im_sentinel_name, wlen[1], word[1],
                  wlen[2], word[2], wlen[3], word[3], wlen[4], word[4]);

    (void) ngx_im_redis_sentinel_set(rc, word[3], wlen[3], word[4], wlen[4]);
}


/* the master is at ip:port; a new address restarts the connections */

static ngx_int_t
ngx_im_redis_sentinel_set(ngx_im_redis_conn_t *rc, u_char *ip, size_t iplen,
    u_char *port, size_t portlen)
{
    size_t                  len;
    in_addr_t               inaddr;
    ngx_int_t               n;
    ngx_uint_t              slot, known;
    ngx_addr_t             *addr, *old;
    ngx_sockaddr_t         *sa;
    struct sockaddr_in     *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6    *sin6;
#endif
    ngx_im_redis_server_t  *server;

    server = ngx_im_sentinel_master;
    known = server->naddrs;
    old = server->addrs;

    n = ngx_atoi(port, portlen);

    if (n < 1 || n > 65535) {
        goto bad;
    }

    slot = known ? 1 - ngx_im_sentinel_slot : ngx_im_sentinel_slot;
    sa = &ngx_im_sentinel_sockaddrs[slot];
    addr = &ngx_im_sentinel_addrs[slot];

    ngx_memzero(sa, sizeof(ngx_sockaddr_t));

    inaddr = ngx_inet_addr(ip, iplen);

    if (inaddr != INADDR_NONE) {
        sin = &sa->sockaddr_in;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = inaddr;
        addr->socklen = sizeof(struct sockaddr_in);

#if (NGX_HAVE_INET6)
    } else if (ngx_inet6_addr(ip, iplen,
                              sa->sockaddr_in6.sin6_addr.s6_addr)
               == NGX_OK)
    {
        sin6 = &sa->sockaddr_in6;
        sin6->sin6_family = AF_INET6;
        addr->socklen = sizeof(struct sockaddr_in6);
#endif

    } else {
        /*
         * A host name (the sentinels' announce-hostnames): a worker never
         * resolves one, it would block every session of the worker.
         */
        ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                      "im redis: sentinel named the master \"%V\" by the "
                      "host name \"%*s\", which is not resolved here; set "
                      "\"sentinel announce-hostnames no\" on the "
                      "sentinels", &ngx_im_sentinel_name, iplen, ip);
        return NGX_ERROR;
    }

    ngx_inet_set_port(&sa->sockaddr, (in_port_t) n);

    addr->sockaddr = &sa->sockaddr;
    len = ngx_sock_ntop(addr->sockaddr, addr->socklen,
                        ngx_im_sentinel_names[slot], NGX_SOCKADDR_STRLEN, 1);
    addr->name.data = ngx_im_sentinel_names[slot];
    addr->name.len = len;

    if (known
        && ngx_cmp_sockaddr(old->sockaddr, old->socklen, addr->sockaddr,
                            addr->socklen, 1)
           == NGX_OK)
    {
        /* the same master: its connections come back by themselves */
        return NGX_OK;
    }

    if (known) {
        ngx_log_error(NGX_LOG_NOTICE, &rc->log, 0,
                      "im redis: master \"%V\" is now at %V (was %V): "
                      "connecting there", &ngx_im_sentinel_name,
                      &addr->name, &old->name);
        ngx_im_stats->redis_master_switches++;

    } else {
        ngx_log_error(NGX_LOG_NOTICE, &rc->log, 0,
                      "im redis: master \"%V\" is at %V",
                      &ngx_im_sentinel_name, &addr->name);
    }

    ngx_im_sentinel_slot = slot;
    server->addrs = addr;
    server->naddrs = 1;

    ngx_im_sentinel_switching = 1;
    ngx_im_sentinel_restart();
    ngx_im_sentinel_switching = 0;

    return NGX_OK;

bad:

    ngx_log_error(NGX_LOG_ERR, &rc->log, 0,
                  "im redis: sentinel named the master \"%V\" at "
                  "\"%*s:%*s\", not an address and port",
                  &ngx_im_sentinel_name, iplen, ip, portlen, port);

    return NGX_ERROR;
}
