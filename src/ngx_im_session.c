/*
 * ngx_im_session.c: a session's life, shared by both transports.
 *
 * Owns the session record's start (its transport, its token, the CONNECT
 * timer), its states and the one timer (the CONNECT rule's, the heartbeat
 * that tells busy from dead, the grace, the bound of a close), reading
 * the connection, the grace close after a refusal or a kick, the drain
 * and the close phases with the teardown that hands every unacknowledged
 * message back to the store, and the session's last log line.  It is the
 * lowest of the session layer: the login (ngx_im_login.c) and the
 * dispatcher (ngx_im_dispatch.c: what each message means, the router's
 * calls) stand on it and call down; it calls them only through the hooks
 * and operations the dispatcher sets at worker start
 * (ngx_im_session_hooks, ngx_im_session_ops; ngx_im_session_int.h).
 * The work itself is done by the parts below: output (ngx_im_output.c),
 * delivery (ngx_im_delivery.c) and publishing (ngx_im_publish.c), which
 * reach back only through ngx_im_session_ops.
 *
 * Closing is always deferred to a posted event, so no caller ever finds its
 * session freed under it.  The phases (ngx_im_state.h) only move forward:
 * NONE, DRAINING (answers still due go first), POSTED, then on the event
 * FLUSHING (torn down: out of the router, the goodbye queued), possibly
 * WAITING_PEER (a WebSocket close frame is awaited), FINAL.
 */

#include "ngx_im_session_int.h"
#include "ngx_im_delivery.h"
#include "ngx_im_publish.h"
#include "ngx_im_presence.h"
#include "ngx_im_events.h"


#define NGX_IM_READ_BUF     65536
#define NGX_IM_READ_LOOPS   16


static void ngx_im_session_set_phase(ngx_im_session_t *s,
    ngx_uint_t phase);
static void ngx_im_session_timeout(ngx_im_timer_t *t);
static void ngx_im_session_close_step(ngx_im_session_t *s);
static void ngx_im_session_close_handler(ngx_event_t *ev);
static void ngx_im_session_post_close(ngx_im_session_t *s);
static void ngx_im_session_teardown(ngx_im_session_t *s);
static void ngx_im_session_finalize(ngx_im_session_t *s);
static void ngx_im_session_drain_with(ngx_im_session_t *s,
    ngx_uint_t reason, ngx_uint_t invalid, u_char cmd);
static ngx_uint_t ngx_im_session_end_of(ngx_uint_t reason);
static void ngx_im_session_log_end(ngx_im_session_t *s);
static ngx_uint_t ngx_im_session_alive(ngx_im_session_t *s);


static u_char        ngx_im_read_buf[NGX_IM_READ_BUF];

/* NGX_IM_END_*: the words a business reads in the logs */
static ngx_str_t     ngx_im_session_end_text[] = {
    ngx_null_string,
    ngx_string("logout"),
    ngx_string("kicked"),
    ngx_string("closed by client"),
    ngx_string("ping timeout"),
    ngx_string("re-push limit"),
    ngx_string("slow consumer"),
    ngx_string("protocol error"),
    ngx_string("server shutdown"),
    ngx_string("error"),
    ngx_string("login refused"),
    ngx_string("connect timeout"),
    ngx_string("idle timeout"),
    ngx_string("stale login")
};

/* by NGX_IM_T_*: how logs and events name a transport */
const char  *ngx_im_session_transports[] = { "ws", "wss", "tcp" };


#if (NGX_DEBUG)
static char  *ngx_im_session_states[] = {
    "connect", "auth", "live", "grace", "closing"
};
static char  *ngx_im_session_phases[] = {
    "none", "draining", "posted", "flushing", "waiting peer", "final"
};
#endif


ngx_im_transport_t  *ngx_im_transports[NGX_IM_TRANSPORTS];

/* set at worker start with ngx_im_session_ops (ngx_im_dispatch.c) */
ngx_im_session_hooks_t  *ngx_im_session_hooks;

static uint64_t          ngx_im_session_tokens;


/*
 * A session's token is unique in the worker and, from its CONNECT on,
 * tells when its login started: microseconds since the epoch (the cached
 * clock), one more than the last when that is not later.  Logins of one
 * (uid, ClientId) are ordered by it on every worker and node: a login
 * that started later wins (ngx_im_presence.c).
 */

uint64_t
ngx_im_session_token(void)
{
    uint64_t     now;
    ngx_time_t  *tp;

    tp = ngx_timeofday();
    now = (uint64_t) tp->sec * 1000000 + (uint64_t) tp->msec * 1000;

    ngx_im_session_tokens = ngx_max(ngx_im_session_tokens + 1, now);

    return ngx_im_session_tokens;
}


ngx_im_session_t *
ngx_im_session_create(ngx_connection_t *c, ngx_im_transport_t *transport,
    ngx_im_session_t *mem)
{
    ngx_uint_t         t;
    ngx_im_conf_t     *imcf;
    ngx_im_session_t  *s;

    imcf = ngx_im_get_conf();

    /* the session keeps its transport as an index: the first session of
     * each transport enters it in the table */
    for (t = 0; t < NGX_IM_TRANSPORTS; t++) {
        if (ngx_im_transports[t] == NULL) {
            ngx_im_transports[t] = transport;
        }

        if (ngx_im_transports[t] == transport) {
            break;
        }
    }

    if (t == NGX_IM_TRANSPORTS) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "im session: more than %d transports",
                      NGX_IM_TRANSPORTS);
        return NULL;
    }

    if (mem) {
        s = mem;
        ngx_memzero(s, sizeof(ngx_im_session_t));

    } else {
        s = ngx_pcalloc(c->pool, sizeof(ngx_im_session_t));
        if (s == NULL) {
            return NULL;
        }
    }

    /* the session's time runs from here: on WebSocket the connection may
     * have served other requests before the handshake (keepalive), and
     * nothing follows a session on it, so keepalive_time is not affected */
    c->start_time = ngx_current_msec;

    s->connection = c;
    s->transport = t;
    s->route.token = ngx_im_session_token();
    s->busy = &ngx_im_busy_idle;

    s->kind = transport->tcp ? NGX_IM_T_TCP
#if (NGX_SSL)
              : c->ssl ? NGX_IM_T_WSS
#endif
              : NGX_IM_T_WS;

    ngx_im_stats->opened[s->kind]++;
    ngx_im_gauges->sessions[s->kind]++;

    if (transport->system) {
        /* the TCP API speaks as the system, uid 0, from the start */
        s->state = NGX_IM_S_LIVE;

        ngx_log_error(NGX_LOG_INFO, c->log, 0, "im: backend session start");

    } else {
        s->state = NGX_IM_S_CONNECT;
        ngx_im_session_add_timer(s, imcf->connect_timeout);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, c->log, 0,
                   "im session: created, token %uL, state %s",
                   s->route.token, ngx_im_session_states[s->state]);

    return s;
}


/*
 * The transport gave the connection a log of its own and let its pool go:
 * nothing of the session may point into either any more.
 */

void
ngx_im_session_moved(ngx_im_session_t *s)
{
    if (s->busy->repush) {
        s->busy->repush->log = s->connection->log;
    }

    if (s->busy->close_ev) {
        s->busy->close_ev->log = s->connection->log;
    }

    /* pool memory; only the login needed it */
    s->cred = NULL;
}


void
ngx_im_session_set_state(ngx_im_session_t *s, ngx_uint_t state)
{
    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im session: uid %uD state %s -> %s", s->route.uid,
                   ngx_im_session_states[s->state],
                   ngx_im_session_states[state]);

    s->state = (uint8_t) state;
}


static void
ngx_im_session_set_phase(ngx_im_session_t *s, ngx_uint_t phase)
{
    ngx_log_debug4(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im session: uid %uD close phase %s -> %s, reason %ui",
                   s->route.uid, ngx_im_session_phases[s->close_phase],
                   ngx_im_session_phases[phase],
                   (ngx_uint_t) s->close_reason);

    s->close_phase = (uint8_t) phase;
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

        if (s->close_phase == NGX_IM_CP_DRAINING
            || s->close_phase == NGX_IM_CP_FINAL)
        {
            return;
        }

        n = c->recv(c, ngx_im_read_buf, NGX_IM_READ_BUF);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
                ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
            }
            return;
        }

        if (n == 0 && !ngx_im_session_closing(s)
            && ngx_im_publish_pending(s))
        {
            /* a half-close: the answers still due are sent first */
            ngx_im_session_drain(s, NGX_IM_CLOSE_FLUSH);
            return;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_im_session_close(s, NGX_IM_CLOSE_EOF);
            return;
        }

        /* any byte is a sign of life for the heartbeat */
        s->heard = 1;

        ngx_im_session_transport(s)->input(s, ngx_im_read_buf, n);
    }

    /* fairness: let other connections run, come back in this cycle */
    ngx_post_event(c->read, &ngx_posted_events);
}


void
ngx_im_session_violation(ngx_im_session_t *s, u_char cmd)
{
    ngx_im_session_drain_with(s, NGX_IM_CLOSE_PROTOCOL, 1, cmd);
}


void
ngx_im_session_drain(ngx_im_session_t *s, ngx_uint_t reason)
{
    ngx_im_session_drain_with(s, reason, 0, 0);
}


/* answers to earlier requests go first: the TCP API promises one
 * response per request, in order, and a violation is the last one */

static void
ngx_im_session_drain_with(ngx_im_session_t *s, ngx_uint_t reason,
    ngx_uint_t invalid, u_char cmd)
{
    u_char  buf[IM_SIZE_INVALID];

    if (ngx_im_session_stopped(s)) {
        return;
    }

    ngx_im_session_ends(s, ngx_im_session_end_of(reason));

    if (ngx_im_publish_pending(s)) {
        s->drain_reason = (uint16_t) reason;
        s->drain_invalid = invalid;
        s->drain_cmd = cmd;
        ngx_im_session_set_phase(s, NGX_IM_CP_DRAINING);
        return;
    }

    if (invalid) {
        (void) ngx_im_output_send(s, buf, im_build_invalid(buf, cmd, NULL));
    }

    ngx_im_session_close(s, reason);
}


/* the last answer due is out: the drain goes on */

void
ngx_im_session_answered(ngx_im_session_t *s)
{
    s->close_phase = NGX_IM_CP_NONE;

    ngx_im_session_drain_with(s, s->drain_reason, s->drain_invalid,
                              s->drain_cmd);
}


/* a refusal or a kick: the client is to close first (docs/PROTOCOL.md
 * 3.1) */

void
ngx_im_session_grace(ngx_im_session_t *s)
{
    ngx_im_session_set_state(s, NGX_IM_S_GRACE);

    ngx_im_session_add_timer(s, ngx_im_get_conf()->close_grace);
}


/* output's calls, through ngx_im_session_ops */

void
ngx_im_session_written(ngx_im_session_t *s)
{
    if (s->busy->out == NULL && !s->connection->buffered
        && !ngx_queue_empty(&s->busy->inflight))
    {
        ngx_im_delivery_drained(s);
    }

    if (!ngx_queue_empty(&s->busy->waiting)) {
        /* room again: the next pushes, out at the next pass */
        ngx_im_delivery_feed(s);
    }
}


void
ngx_im_session_flushed(ngx_im_session_t *s)
{
    if (s->state == NGX_IM_S_CLOSING
        && s->close_phase != NGX_IM_CP_WAITING_PEER)
    {
        /* all said */
        ngx_im_session_post_close(s);
    }
}


/* timers */

void
ngx_im_session_add_timer(ngx_im_session_t *s, ngx_msec_t delay)
{
    ngx_im_timer_add(&s->timer, delay, ngx_im_session_timeout);
}


static void
ngx_im_session_timeout(ngx_im_timer_t *t)
{
    ngx_im_session_t  *s;
    ngx_im_conf_t     *imcf;

    s = ngx_queue_data(t, ngx_im_session_t, timer);

    switch (s->close_phase) {

    case NGX_IM_CP_POSTED:
        /* the close event could not be had (no memory): the timer
         * stands in for it */
        if (s->busy->close_ev == NULL) {
            ngx_im_session_close_step(s);
        }
        return;

    case NGX_IM_CP_FLUSHING:
    case NGX_IM_CP_WAITING_PEER:
    case NGX_IM_CP_FINAL:
        /* the peer did not finish the close in time */
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                       "im session: uid %uD: close bound reached",
                       s->route.uid);
        ngx_im_session_finalize(s);
        return;

    default:
        break;
    }

    switch (s->state) {

    case NGX_IM_S_CONNECT:
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: no CONNECT in time");
        ngx_im_session_close_why(s, NGX_IM_CLOSE_POLICY, NGX_IM_END_CONNECT);
        return;

    case NGX_IM_S_GRACE:
        ngx_im_session_close(s, NGX_IM_CLOSE_NORMAL);
        return;

    case NGX_IM_S_AUTH:
        ngx_im_session_hooks->login_timeout(s);
        return;

    case NGX_IM_S_LIVE:
        if (ngx_im_session_system(s)) {
            return;
        }

        imcf = ngx_im_get_conf();

        if (s->ack_due) {
            /* the hold outlasted its bound: the inbox is read when the
             * subscription is in place, as after a Redis reconnect */
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: uid %uD: the uid's subscription is not "
                          "confirmed yet, CONNECT_ACK sent anyway",
                          s->route.uid);
            ngx_im_session_ops->login_ack(s);
            return;
        }

        if (s->ping_sent) {
            if (ngx_im_session_alive(s)) {
                /* busy is not dead: the client's answer may wait unread
                 * behind what it sent, or our PING behind our output;
                 * one more im_ping_timeout */
                ngx_im_stats->busy_spared++;
                ngx_log_debug1(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                               "im session: uid %uD: no PING_RESP yet, "
                               "alive", s->route.uid);
                ngx_im_session_add_timer(s, imcf->ping_timeout);
                return;
            }

            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: uid %uD: no PING_RESP in time", s->route.uid);
            ngx_im_session_close_why(s, NGX_IM_CLOSE_NORMAL, NGX_IM_END_PING);
            return;
        }

        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                       "im session: uid %uD: PING", s->route.uid);

        s->ping_sent = 1;
        s->heard = 0;
        s->wrote = 0;
        ngx_im_output_simple(s, IM_CMD_PING);
        ngx_im_presence_refresh(&s->route);
        ngx_im_session_add_timer(s, imcf->ping_timeout);
        return;

    default:
        return;
    }
}


/*
 * Busy is not dead (docs/decisions/042-busy-is-not-dead.md): a worker
 * that is behind finds its heartbeat timeouts due before it has read what
 * the clients sent.  A client is alive when bytes came from it since the
 * last look, when bytes wait unread in its socket (they are read now, in
 * this pass), or when our output to it is still waiting and the socket
 * took some of it since the last look: then our PING may not have reached
 * it.  A client with none of these is dead.  Each look clears the signs.
 */

static ngx_uint_t
ngx_im_session_alive(ngx_im_session_t *s)
{
    ngx_uint_t         alive;
    ngx_connection_t  *c;

    c = s->connection;

    alive = s->heard || (s->wrote && (s->busy->out || c->buffered));

    s->heard = 0;
    s->wrote = 0;

    if (ngx_im_session_unread(s)) {
        if (!c->read->posted) {
            ngx_post_event(c->read, &ngx_posted_events);
        }

        alive = 1;
    }

    return alive;
}


/* closing */

static ngx_inline ngx_uint_t
ngx_im_close_hard(ngx_uint_t reason)
{
    return reason == NGX_IM_CLOSE_EOF || reason == NGX_IM_CLOSE_ERROR
           || reason == NGX_IM_CLOSE_SLOW;
}


/* the cause a close reason tells by itself; NGX_IM_CLOSE_NORMAL tells
 * none: each of its callers names its own (ngx_im_session_close_why) */

static ngx_uint_t
ngx_im_session_end_of(ngx_uint_t reason)
{
    switch (reason) {

    case NGX_IM_CLOSE_NORMAL:
        return NGX_IM_END_NONE;

    case NGX_IM_CLOSE_SHUTDOWN:
        return NGX_IM_END_SHUTDOWN;

    case NGX_IM_CLOSE_PROTOCOL:
    case NGX_IM_CLOSE_TEXT:
    case NGX_IM_CLOSE_POLICY:
    case NGX_IM_CLOSE_TOO_BIG:
        return NGX_IM_END_PROTOCOL;

    case NGX_IM_CLOSE_EOF:
    case NGX_IM_CLOSE_LEFT:
    case NGX_IM_CLOSE_FLUSH:        /* a half-close, answers due first */
        return NGX_IM_END_CLIENT;

    case NGX_IM_CLOSE_SLOW:
        return NGX_IM_END_SLOW;

    default: /* NGX_IM_CLOSE_ERROR */
        return NGX_IM_END_ERROR;
    }
}


void
ngx_im_session_close_why(ngx_im_session_t *s, ngx_uint_t reason,
    ngx_uint_t why)
{
    ngx_im_session_ends(s, why);
    ngx_im_session_close(s, reason);
}


void
ngx_im_session_close(ngx_im_session_t *s, ngx_uint_t reason)
{
    ngx_im_session_ends(s, ngx_im_session_end_of(reason));

    switch (s->close_phase) {

    case NGX_IM_CP_NONE:
    case NGX_IM_CP_DRAINING:
        s->close_reason = (uint16_t) reason;
        ngx_im_session_set_phase(s, NGX_IM_CP_POSTED);
        break;

    case NGX_IM_CP_POSTED:
        if (ngx_im_close_hard(reason)
            || (reason == NGX_IM_CLOSE_LEFT
                && s->close_reason == NGX_IM_CLOSE_NORMAL))
        {
            /* no goodbye can be said any more, or none is wanted */
            s->close_reason = (uint16_t) reason;
        }
        break;

    default:
        /* the goodbye is out: the peer's close frame, the end of the
         * connection or an error finish it */
        if (s->close_phase != NGX_IM_CP_FINAL) {
            ngx_im_session_set_phase(s, NGX_IM_CP_FINAL);
        }
        break;
    }

    ngx_im_session_post_close(s);
}


void
ngx_im_session_peer_closed(ngx_im_session_t *s)
{
    if (s->close_phase == NGX_IM_CP_WAITING_PEER) {
        /* the answer to our close */
        ngx_im_session_set_phase(s, NGX_IM_CP_FLUSHING);
    }

    ngx_im_session_close(s, NGX_IM_CLOSE_LEFT);
}


static void
ngx_im_session_post_close(ngx_im_session_t *s)
{
    ngx_im_busy_t  *b;

    b = ngx_im_busy(s);

    if (b != NULL && b->close_ev == NULL) {
        b->close_ev = ngx_im_event_alloc(ngx_im_session_close_handler, s,
                                         s->connection->log);
    }

    if (b == NULL || b->close_ev == NULL) {
        /* no memory even for that: the session timer does it */
        ngx_im_session_add_timer(s, 1);
        return;
    }

    if (!b->close_ev->posted) {
        ngx_post_event(b->close_ev, &ngx_posted_events);
    }
}


static void
ngx_im_session_close_handler(ngx_event_t *ev)
{
    ngx_im_session_close_step(ev->data);
}


static void
ngx_im_session_close_step(ngx_im_session_t *s)
{
    ngx_im_conf_t  *imcf;
    ngx_uint_t      reason, was;

    if (ngx_im_session_torn_down(s)) {
        if (s->close_phase == NGX_IM_CP_FINAL
            || (s->close_phase == NGX_IM_CP_FLUSHING
                && s->busy->out == NULL && !s->connection->buffered))
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

    ngx_im_session_set_state(s, NGX_IM_S_CLOSING);

    /* a server-side end of a live session is announced
     * (docs/PROTOCOL.md 3.5) */
    if (was == NGX_IM_S_LIVE && !ngx_im_session_system(s)
        && (reason == NGX_IM_CLOSE_NORMAL || reason == NGX_IM_CLOSE_SHUTDOWN))
    {
        ngx_im_output_simple(s, IM_CMD_DISCONNECT);
    }

    if (ngx_im_session_transport(s)->goodbye && reason != NGX_IM_CLOSE_FLUSH
        && ngx_im_session_transport(s)->goodbye(s, reason))
    {
        /* RFC 6455 7.1.1: the server closes TCP once both closes passed */
        ngx_im_session_set_phase(s, NGX_IM_CP_WAITING_PEER);
    }

    /* a bound on flushing and on waiting for the peer's close */
    ngx_im_session_add_timer(s, ngx_min(imcf->close_grace, 5000));

    if (s->close_phase == NGX_IM_CP_WAITING_PEER) {
        /* the peer's close frame may be waiting unread */
        ngx_post_event(s->connection->read, &ngx_posted_events);
    }

    ngx_im_output_write(s);
}


static void
ngx_im_session_teardown(ngx_im_session_t *s)
{
    ngx_im_session_set_phase(s, NGX_IM_CP_FLUSHING);

    /* a login under way or waiting gives its place up */
    ngx_im_session_hooks->login_end(s);

    ngx_im_router_leave(&s->route);

    ngx_im_timer_del(&s->timer);

    ngx_im_delivery_release(s);

    ngx_im_publish_end(s);

    if (s->route.ref) {
        if (s->state == NGX_IM_S_AUTH) {
            /* the login policy's script is under way: what it takes
             * (presence key, place among the uid's sessions) is given
             * back behind it, on the same connection */
            ngx_im_presence_leave(&s->route);
        }

        /* a late reply (a presence claim, an inbox read) finds nobody */
        s->route.ref->data = NULL;
        s->route.ref = NULL;
    }

    /* pool memory, freed with the connection */
    if (s->cred) {
        s->cred->deferred = NULL;
    }
}


static void
ngx_im_session_finalize(ngx_im_session_t *s)
{
    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im session: uid %uD finalized, reason %ui",
                   s->route.uid, (ngx_uint_t) s->close_reason);

    ngx_im_session_abort(s);
    ngx_im_session_transport(s)->finalize(s);
}


ngx_int_t
ngx_im_session_shutdown(ngx_im_session_t *s, ngx_uint_t wait)
{
    ngx_chain_t       *cl;
    ngx_connection_t  *c;

    c = s->connection;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, c->log, 0,
                   "im session: uid %uD: the worker is going", s->route.uid);

    /* nginx also ends a request that failed: that is no shutdown */
    ngx_im_session_ends(s, (ngx_exiting || ngx_quit || ngx_terminate)
                           ? NGX_IM_END_SHUTDOWN : NGX_IM_END_ERROR);

    if (wait && ngx_im_publish_pending(s)) {
        /* answers still due go out first */
        ngx_im_session_drain(s, NGX_IM_CLOSE_FLUSH);
        return NGX_AGAIN;
    }

    /* nginx marks the connection as failed when it ends it at
     * worker_shutdown_timeout: the socket itself is fine, try */

    if (!ngx_im_session_torn_down(s) && s->state == NGX_IM_S_LIVE
        && !ngx_im_session_system(s) && !c->write->error)
    {
        if (s->busy->out) {
            /* what the pass has not flushed yet (a re-push, say) first */
            ngx_im_output_write(s);
        }

        if (s->busy->out == NULL && !ngx_im_session_closing(s)) {
            /* best effort, the worker is going: DISCONNECT, close 1001 */
            ngx_im_output_simple(s, IM_CMD_DISCONNECT);

            if (ngx_im_session_transport(s)->goodbye) {
                (void) ngx_im_session_transport(s)->goodbye(s,
                                                   NGX_IM_CLOSE_SHUTDOWN);
            }

            cl = s->busy->out;

            if (cl && cl->next == NULL) {
                (void) c->send(c, cl->buf->pos,
                               cl->buf->last - cl->buf->pos);
            }
        }
    }

    ngx_im_session_abort(s);

    return NGX_OK;
}


/* nginx closes the connection itself (shutdown, or the request is gone) */

void
ngx_im_session_abort(ngx_im_session_t *s)
{
    u_char     text[NGX_SOCKADDR_STRLEN];
    ngx_str_t  addr;

    if (!ngx_im_session_torn_down(s)) {
        ngx_im_session_teardown(s);
    }

    ngx_im_timer_del(&s->timer);

    ngx_im_delivery_release(s);

    if (s->busy->close_ev) {
        ngx_im_event_free(s->busy->close_ev);
        s->busy->close_ev = NULL;
    }

    ngx_im_output_free(s);

    ngx_im_busy_done(s);

    if (s->busy != &ngx_im_busy_idle) {
        ngx_log_error(NGX_LOG_ALERT, s->connection->log, 0,
                      "im session: uid %uD: still busy at its end",
                      s->route.uid);
    }

    ngx_im_gauges->sessions[s->kind]--;

    /* a storm of connections that never log in (idle, refused, hostile)
     * leaves its handshake pools freed here, not at a login: their end
     * counts towards the trim after a burst too */
    ngx_im_trim_note(1);

    /* nginx closed the connection under a session that had no other
     * cause (a handshake that failed half-way) */
    ngx_im_session_ends(s, NGX_IM_END_ERROR);

    ngx_im_session_log_end(s);

    if (s->online) {
        addr = s->connection->addr_text;

        if (addr.len == 0 && s->connection->sockaddr) {
            /* a detached WebSocket connection keeps the address only */
            addr.data = text;
            addr.len = ngx_sock_ntop(s->connection->sockaddr,
                                     s->connection->socklen, text,
                                     NGX_SOCKADDR_STRLEN, 0);
        }

        /* the end reason's text is a literal: null-terminated */
        ngx_im_events_session(s->route.uid, s->route.client_id, s->role,
                              &addr,
                              ngx_im_session_transports[s->kind],
                              (char *) ngx_im_session_end_reason(s)->data,
                              ngx_im_session_time(s));
    }
}


ngx_str_t *
ngx_im_session_end_reason(ngx_im_session_t *s)
{
    if (s->end == NGX_IM_END_NONE) {
        return NULL;
    }

    return &ngx_im_session_end_text[s->end];
}


u_char *
ngx_im_session_figure(u_char *p, ngx_im_session_t *s, ngx_uint_t which)
{
    ngx_msec_t  ms;

    switch (which) {

    case NGX_IM_FIGURE_TIME:
        ms = ngx_im_session_time(s);
        return ngx_sprintf(p, "%T.%03M", (time_t) (ms / 1000), ms % 1000);

    case NGX_IM_FIGURE_IN:
        return ngx_sprintf(p, "%uD", s->msgs_in);

    default: /* NGX_IM_FIGURE_OUT */
        return ngx_sprintf(p, "%uD", s->msgs_out);
    }
}


/* one line at info per session: who, why, how long, how many messages;
 * the connection's log adds the client's address */

static void
ngx_im_session_log_end(ngx_im_session_t *s)
{
    ngx_msec_t  ms;
    ngx_str_t  *why;

    ms = ngx_im_session_time(s);
    why = ngx_im_session_end_reason(s);

    if (ngx_im_session_system(s)) {
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: backend session end: %V, %T.%03M s, "
                      "messages in %uD, out %uD",
                      why, (time_t) (ms / 1000), ms % 1000,
                      s->msgs_in, s->msgs_out);

    } else if (s->route.uid == 0) {
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: session end before login: %V, %T.%03M s, "
                      "messages in %uD, out %uD",
                      why, (time_t) (ms / 1000), ms % 1000,
                      s->msgs_in, s->msgs_out);

    } else {
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: uid %uD client %d session end: %V, %T.%03M s, "
                      "messages in %uD, out %uD",
                      s->route.uid, (int) s->route.client_id,
                      why, (time_t) (ms / 1000), ms % 1000,
                      s->msgs_in, s->msgs_out);
    }
}
