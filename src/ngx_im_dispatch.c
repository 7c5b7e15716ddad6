/*
 * ngx_im_dispatch.c: what a session's input and its router's calls mean.
 *
 * Owns the top of the session layer: each whole message a transport hands
 * in (the CONNECT rule, then what each message of a live session means:
 * a publish, a heartbeat, an ack, a goodbye), the kicks, and the calls
 * the router makes on a session (a push, a kick, a sync, the login's
 * answer, a receipt, a mark).  It calls down to the login
 * (ngx_im_login.c) and to the session's life (ngx_im_session.c), and at
 * worker start gives them what they call back up through
 * (ngx_im_session_hooks, ngx_im_session_ops), and the router
 * ngx_im_router_ops_t.
 */

#include "ngx_im_session_int.h"
#include "ngx_im_delivery.h"
#include "ngx_im_publish.h"


static void ngx_im_session_live(ngx_im_session_t *s, u_char *p, size_t n,
    im_msg_t *m);
static void ngx_im_session_kick(ngx_im_session_t *s, ngx_uint_t admin);

static ngx_int_t ngx_im_session_route_push(ngx_im_route_t *r,
    ngx_im_msg_t *msg, ngx_uint_t stored);
static void ngx_im_session_route_kick(ngx_im_route_t *r, ngx_uint_t admin);
static void ngx_im_session_route_sync(ngx_im_route_t *r);
static void ngx_im_session_route_login_done(ngx_im_route_t *r,
    ngx_uint_t code);
static ngx_log_t *ngx_im_session_route_log(ngx_im_route_t *r);
static void ngx_im_session_route_receipt(ngx_im_route_t *r, u_char *p,
    size_t n);
static void ngx_im_session_route_marked(ngx_im_route_t *r, uint64_t nonce);
static void ngx_im_session_route_owe_out(ngx_im_route_t *r);


static ngx_im_session_ops_t  ngx_im_session_own_ops = {
    ngx_im_session_close,
    ngx_im_session_written,
    ngx_im_session_flushed,
    ngx_im_session_answered,
    ngx_im_login_ack
};

static ngx_im_session_hooks_t  ngx_im_session_own_hooks = {
    ngx_im_login_timeout,
    ngx_im_login_end,
    ngx_im_session_message
};

static ngx_im_router_ops_t  ngx_im_session_route_ops = {
    ngx_im_session_route_push,
    ngx_im_session_route_kick,
    ngx_im_session_route_sync,
    ngx_im_session_route_login_done,
    ngx_im_session_route_log,
    ngx_im_session_route_receipt,
    ngx_im_session_route_marked,
    ngx_im_session_route_owe_out
};


#define ngx_im_route_session(r)                                               \
    ((ngx_im_session_t *) ((u_char *) (r) - offsetof(ngx_im_session_t, route)))


ngx_im_router_ops_t *
ngx_im_session_router_ops(void)
{
    ngx_im_session_ops = &ngx_im_session_own_ops;
    ngx_im_session_hooks = &ngx_im_session_own_hooks;

    return &ngx_im_session_route_ops;
}


/* input */

void
ngx_im_session_message(ngx_im_session_t *s, u_char *p, size_t n)
{
    im_rc_t        rc;
    im_msg_t       m;

    if (ngx_im_session_stopped(s) || s->state == NGX_IM_S_GRACE
        || s->state == NGX_IM_S_CLOSING)
    {
        return;
    }

    if (s->state == NGX_IM_S_LIVE && s->ack_due) {
        ngx_im_login_defer(s, p, n);
        return;
    }

    if (s->state != NGX_IM_S_AUTH) {
        /* what is deferred during the login counts when it is replayed */
        ngx_im_stats->in[n && p[0] < NGX_IM_CMDS ? p[0] : 0]++;
        s->msgs_in++;
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
            /* the field client counts UserLen and PassLen in UTF-16
             * units and reconnects at once when refused: read it its
             * way (docs/PROTOCOL.md 8) */
            if (im_parse_client_utf16(p, n, &m) != IM_OK) {
                ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                              "im: bad CONNECT: %s", im_rc_str(rc));
                ngx_im_session_violation(s, IM_CMD_CONNECT);
                return;
            }

            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: CONNECT read with lengths in UTF-16 units");
            s->utf16 = 1;
        }

        ngx_im_login_connect(s, &m);
        return;

    case NGX_IM_S_AUTH:
        ngx_im_login_defer(s, p, n);
        return;

    default: /* NGX_IM_S_LIVE */
        break;
    }

    rc = im_parse_client(p, n, &m);

    if (rc != IM_OK) {
        /* an older field client counts a message's Len in UTF-16 units
         * too (docs/PROTOCOL.md 8); a backend does not */
        if (!ngx_im_session_system(s)
            && im_parse_client_utf16(p, n, &m) == IM_OK
            && m.cmd != IM_CMD_CONNECT)
        {
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: %s read with its Len in UTF-16 units",
                          im_cmd_str(m.cmd));
            ngx_im_stats->utf16_messages++;
            ngx_im_session_live(s, p, n, &m);
            return;
        }

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
    u_char  ack[IM_SIZE_CONNECT_ACK];

    switch (m->cmd) {

    case IM_CMD_PUBLISH:
    case IM_CMD_GROUP_PUBLISH:
    case IM_CMD_GROUP_PART_PUBLISH:
        ngx_im_publish(s, p, n, m);
        return;

    case IM_CMD_PING:
        ngx_im_output_simple(s, IM_CMD_PING_RESP);
        return;

    case IM_CMD_PING_RESP:
        if (ngx_im_session_system(s)) {
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
        if (ngx_im_session_system(s)) {
            break;
        }

        ngx_im_delivery_ack(s, m->msgid);
        return;

    case IM_CMD_CONNECT:
        if (ngx_im_session_system(s)) {
            break;
        }

        /* a second CONNECT on a live session */
        ngx_im_stats->logins[1]++;
        (void) ngx_im_output_send(s, ack, im_build_connect_ack(ack, 1));
        return;

    case IM_CMD_DISCONNECT:
        ngx_im_session_close_why(s, NGX_IM_CLOSE_LEFT, NGX_IM_END_LOGOUT);
        return;

    default:
        break;
    }

    ngx_im_session_violation(s, m->cmd);
}


static void
ngx_im_session_kick(ngx_im_session_t *s, ngx_uint_t admin)
{
    u_char  ack[IM_SIZE_CONNECT_ACK];

    if (ngx_im_session_closing(s) || s->state != NGX_IM_S_LIVE) {
        return;
    }

    if (s->ack_due && !admin) {
        /* a newer login of its (uid, ClientId) won before this one's
         * CONNECT_ACK: it is answered as a duplicate (docs/PROTOCOL.md
         * 3.2), not accepted and then logged out */
        ngx_im_stats->stale_logins++;
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: uid %uD client %d: a login that started later "
                      "won before the CONNECT_ACK, answered 1",
                      s->route.uid, (int) s->route.client_id);

        s->ack_due = 0;
        ngx_im_session_ends(s, NGX_IM_END_STALE);
        ngx_im_router_leave(&s->route);
        ngx_im_delivery_release(s);

        (void) ngx_im_output_send(s, ack, im_build_connect_ack(ack, 1));
        ngx_im_session_grace(s);
        return;
    }

    /* an admin's logout ends the session as a kick does; a LOGOUT
     * needs a login before it */
    ngx_im_login_ack_now(s);
    ngx_im_session_ends(s, NGX_IM_END_KICKED);

    if (admin) {
        ngx_im_stats->api_logouts++;
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: uid %uD client %d logged out by the admin API",
                      s->route.uid, (int) s->route.client_id);

    } else {
        ngx_im_stats->kicked++;
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: uid %uD client %d logged in elsewhere",
                      s->route.uid, (int) s->route.client_id);
    }

    ngx_im_router_leave(&s->route);

    ngx_im_delivery_release(s);

    ngx_im_output_simple(s, IM_CMD_LOGOUT);
    ngx_im_session_grace(s);
}


/* the router's calls */

static ngx_int_t
ngx_im_session_route_push(ngx_im_route_t *r, ngx_im_msg_t *msg,
    ngx_uint_t stored)
{
    return ngx_im_delivery_push(ngx_im_route_session(r), msg, stored);
}


static void
ngx_im_session_route_owe_out(ngx_im_route_t *r)
{
    ngx_im_delivery_owe_out(ngx_im_route_session(r));
}


static void
ngx_im_session_route_kick(ngx_im_route_t *r, ngx_uint_t admin)
{
    ngx_im_session_kick(ngx_im_route_session(r), admin);
}


static void
ngx_im_session_route_sync(ngx_im_route_t *r)
{
    ngx_im_delivery_sync(ngx_im_route_session(r));
}


static void
ngx_im_session_route_login_done(ngx_im_route_t *r, ngx_uint_t code)
{
    ngx_im_login_done(ngx_im_route_session(r), code);
}


static ngx_log_t *
ngx_im_session_route_log(ngx_im_route_t *r)
{
    return ngx_im_route_session(r)->connection->log;
}


/* receipts are opt-in per location: the field's client knows no cmd 13 */

static void
ngx_im_session_route_marked(ngx_im_route_t *r, uint64_t nonce)
{
    ngx_im_delivery_marked(ngx_im_route_session(r), nonce);
}


static void
ngx_im_session_route_receipt(ngx_im_route_t *r, u_char *p, size_t n)
{
    ngx_im_session_t  *s;

    s = ngx_im_route_session(r);

    if (s->receipts && ngx_im_session_logged_in(s)) {
        (void) ngx_im_output_send(s, p, n);
    }
}
