/*
 * ngx_im_login.c: taking a CONNECT to a logged-in session.
 *
 * Owns what happens between a session's CONNECT and its CONNECT_ACK: the
 * credentials, the question to whoever authenticates (the transport's auth
 * hook), the bound on logins in flight per worker and the queue of those
 * beyond it (docs/decisions/042-busy-is-not-dead.md), the token taken at
 * CONNECT (the order of a uid's logins), the hand-off to the login policy
 * (ngx_im_presence.c) and the router, the CONNECT_ACK, and the input a
 * client sends before it, kept and replayed after it.  It stands on the
 * session's life (ngx_im_session.c: its states, timer, grace and close,
 * through ngx_im_session_int.h), which calls it only through the hooks
 * and operations the dispatcher set; the dispatcher above
 * (ngx_im_dispatch.c) calls in here, and takes the replayed input back
 * through ngx_im_session_hooks.
 */

#include "ngx_im_session_int.h"
#include "ngx_im_presence.h"
#include "ngx_im_events.h"
#include "ngx_im_redis.h"


#define NGX_IM_DEFER_MAX    65536


static void ngx_im_login_auth_start(ngx_im_session_t *s);
static void ngx_im_login_out(ngx_im_session_t *s);
static void ngx_im_login_unqueue(ngx_im_session_t *s);
static void ngx_im_login_queue_handler(ngx_event_t *ev);
static void ngx_im_login_replay(ngx_im_session_t *s);


static ngx_str_t    ngx_im_login_nobody = ngx_string("");

/*
 * Logins asking the user centre (and the login policy) at once are
 * bounded per worker by im_logins_in_flight; the CONNECTs beyond wait in
 * this queue, in order, at most im_login_queue_timeout, so that a storm
 * drains at the pace the user centre and Redis answer instead of failing
 * on their timeouts (docs/decisions/042-busy-is-not-dead.md).
 */
static ngx_queue_t  ngx_im_login_queue;
static ngx_uint_t   ngx_im_logins_in_flight;
static ngx_event_t  ngx_im_login_queue_ev;


void
ngx_im_login_connect(ngx_im_session_t *s, im_msg_t *m)
{
    ngx_pool_t     *pool;
    ngx_im_conf_t  *imcf;
    ngx_im_cred_t  *cred;

    ngx_im_timer_del(&s->timer);

    pool = s->connection->pool;

    cred = ngx_palloc(pool, sizeof(ngx_im_cred_t));
    if (cred == NULL) {
        ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
        return;
    }

    cred->deferred = NULL;

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
    s->route.role = m->role;
    s->route.client_id = m->client_id;

    /* the login starts now: its place in the order of the uid's logins */
    s->route.token = ngx_im_session_token();

    ngx_im_session_set_state(s, NGX_IM_S_AUTH);

    cred->session = s;
    cred->queued = 0;

    imcf = ngx_im_get_conf();

    if (imcf->logins_in_flight
        && ngx_im_logins_in_flight >= imcf->logins_in_flight)
    {
        /* as many logins as allowed ask already: this one waits its
         * turn (what the client sends meanwhile is kept, as during
         * authentication) */
        if (ngx_im_login_queue_ev.handler == NULL) {
            ngx_queue_init(&ngx_im_login_queue);
            ngx_im_event_init(&ngx_im_login_queue_ev,
                              ngx_im_login_queue_handler);
        }

        cred->queued = 1;
        ngx_queue_insert_tail(&ngx_im_login_queue, &cred->queue);
        ngx_im_gauges->login_queue++;
        ngx_im_stats->login_queued++;

        ngx_im_session_add_timer(s, imcf->login_queue_timeout);
        return;
    }

    ngx_im_login_auth_start(s);
}


static void
ngx_im_login_auth_start(ngx_im_session_t *s)
{
    s->in_flight = 1;
    ngx_im_logins_in_flight++;
    ngx_im_gauges->logins_in_flight++;

    s->cred->asked = ngx_im_metrics_now();

    /* more logins ask than ever since the last burst: the auth
     * subrequest is likely to open a new upstream connection, whose
     * pool should come from the nursery (decision 053) */
    ngx_im_nursery_give(ngx_im_logins_in_flight);

    if (ngx_im_session_transport(s)->auth(s) != NGX_OK) {
        ngx_im_session_auth_done(s, 2, 0);
    }
}


/* the login has its answer, or its session went: the next CONNECT that
 * waits may ask (on a posted event: an answer can come within the call
 * that asks) */

static void
ngx_im_login_out(ngx_im_session_t *s)
{
    if (!s->in_flight) {
        return;
    }

    s->in_flight = 0;
    ngx_im_logins_in_flight--;
    ngx_im_gauges->logins_in_flight--;

    if (ngx_im_login_queue_ev.handler && !ngx_queue_empty(&ngx_im_login_queue)
        && !ngx_im_login_queue_ev.posted)
    {
        ngx_post_event(&ngx_im_login_queue_ev, &ngx_posted_events);
    }
}


static void
ngx_im_login_unqueue(ngx_im_session_t *s)
{
    if (s->cred == NULL || !s->cred->queued) {
        return;
    }

    s->cred->queued = 0;
    ngx_queue_remove(&s->cred->queue);
    ngx_im_gauges->login_queue--;
}


/* the session is torn down: a login under way or waiting gives its
 * place up */

void
ngx_im_login_end(ngx_im_session_t *s)
{
    ngx_im_login_unqueue(s);
    ngx_im_login_out(s);
}


static void
ngx_im_login_queue_handler(ngx_event_t *ev)
{
    ngx_uint_t         max;
    ngx_queue_t       *q;
    ngx_im_cred_t     *cred;
    ngx_im_session_t  *s;

    max = ngx_im_get_conf()->logins_in_flight;

    while (!ngx_queue_empty(&ngx_im_login_queue)
           && (max == 0 || ngx_im_logins_in_flight < max))
    {
        q = ngx_queue_head(&ngx_im_login_queue);
        cred = ngx_queue_data(q, ngx_im_cred_t, queue);
        s = cred->session;

        ngx_im_login_unqueue(s);
        ngx_im_timer_del(&s->timer);

        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                       "im session: a queued login asks, %ui in flight",
                       ngx_im_logins_in_flight);

        ngx_im_login_auth_start(s);

        /*
         * Asked from here, outside the connection's handlers: what the
         * transport leaves for them to finish (the WebSocket transport's
         * auth subrequest runs when the request's handler returns) is
         * done by a write event, with nothing to write
         */
        if (!s->connection->write->posted) {
            ngx_post_event(s->connection->write, &ngx_posted_events);
        }
    }
}


void
ngx_im_session_auth_done(ngx_im_session_t *s, ngx_uint_t code, uint32_t uid)
{
    if (ngx_im_session_closing(s) || s->state != NGX_IM_S_AUTH) {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im session: user centre answered %ui, uid %uD",
                   code, uid);

    /* the password is not needed any more */
    if (s->cred) {
        ngx_im_metrics_observe(&ngx_im_stats->auth,
                               ngx_im_metrics_now() - s->cred->asked);
        ngx_explicit_memzero(s->cred->pass.data, s->cred->pass.len);
    }

    if (code != 0 || uid == 0) {
        ngx_im_login_done(s, code ? code : 2);
        return;
    }

    s->route.uid = uid;
    ngx_im_presence_login(&s->route);
}


void
ngx_im_login_done(ngx_im_session_t *s, ngx_uint_t code)
{
    u_char          ack[IM_SIZE_CONNECT_ACK];
    ngx_im_conf_t  *imcf;

    if (ngx_im_session_closing(s) || s->state != NGX_IM_S_AUTH) {
        return;
    }

    ngx_im_login_out(s);

    if (code == 0
        && (ngx_im_redis_away(NGX_IM_REDIS_INBOX)
            || ngx_im_redis_away(NGX_IM_REDIS_SUB)))
    {
        /* Redis is away: neither the inbox nor another node's messages
         * can reach the session; "try later" (the log of the connection
         * says why) */
        code = 2;
    }

    if (code == 0) {
        /* live before it joins: the router may push the inbox at once;
         * live messages wait until the inbox is pushed: order
         * (docs/PROTOCOL.md 5) */
        ngx_im_session_set_state(s, NGX_IM_S_LIVE);
        s->loading = 1;
        s->ack_due = 1;

        if (ngx_im_router_join(&s->route) != NGX_OK) {
            ngx_im_session_set_state(s, NGX_IM_S_AUTH);
            s->loading = 0;
            s->ack_due = 0;
            code = 2;
        }
    }

    if (code != 0) {
        (void) ngx_im_output_send(s, ack, im_build_connect_ack(ack, code));
    }

    ngx_im_stats->logins[code < 4 ? code : 2]++;

    if (code != 0) {
        ngx_im_session_ends(s, NGX_IM_END_REFUSED);
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: login of \"%V\" refused with code %ui",
                      s->cred ? &s->cred->user : &ngx_im_login_nobody,
                      code);
        ngx_im_session_grace(s);
        return;
    }

    imcf = ngx_im_get_conf();

    if (s->utf16) {
        ngx_im_stats->utf16_logins++;
    }

    ngx_im_trim_note(1);
    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "im: uid %uD client %d logged in", s->route.uid,
                  (int) s->route.client_id);

    ngx_im_events_session(s->route.uid, s->route.client_id, s->role,
                          &s->connection->addr_text,
                          ngx_im_session_transports[s->kind], NULL, 0);
    s->online = 1;

    /* a subscription Redis is slow to confirm (a login storm, a reconnect)
     * does not keep the client from its CONNECT_ACK for long: two Redis
     * round trips (the subscription, the 'J') at most as long as Redis
     * is waited for */
    ngx_im_session_add_timer(s, s->ack_due ? 2 * imcf->redis_timeout
                                           : imcf->ping_interval);

    /* what the client sent while it was being authenticated, once its
     * CONNECT_ACK is out */
    ngx_im_login_replay(s);
}


ngx_uint_t
ngx_im_session_logged_in(ngx_im_session_t *s)
{
    return !ngx_im_session_stopped(s) && s->state == NGX_IM_S_LIVE
           && (s->cred == NULL || s->cred->deferred == NULL);
}


/* a client that does not wait for CONNECT_ACK: keep what it sends for
 * after the login, within a bound */

void
ngx_im_login_defer(ngx_im_session_t *s, u_char *p, size_t n)
{
    size_t        size;
    ngx_buf_t    *b;
    ngx_chain_t  *cl, **ll;

    if (s->cred == NULL) {
        /* the login's record is gone (it holds what is deferred) */
        ngx_im_session_close(s, NGX_IM_CLOSE_ERROR);
        return;
    }

    size = 0;
    for (ll = &s->cred->deferred; *ll; ll = &(*ll)->next) {
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
}


/* what the client sent before its CONNECT_ACK, answered after it */

static void
ngx_im_login_replay(ngx_im_session_t *s)
{
    ngx_chain_t  *cl;

    while (s->cred && s->cred->deferred && !ngx_im_session_closing(s)
           && !s->ack_due)
    {
        cl = s->cred->deferred;
        s->cred->deferred = cl->next;

        ngx_im_session_hooks->message(s, cl->buf->pos,
                                      ngx_buf_size(cl->buf));
    }
}


/*
 * CONNECT_ACK 0 leaves when the session starts reading its inbox: once
 * every other worker that held the uid has answered its 'J' (and so
 * publishes the uid's messages on the channel), or at once when the uid
 * was settled here (ngx_im_router_join).  Whatever is accepted after the
 * client sees it reaches the session; what came before is in the inbox
 * or went to the devices online then.  The pushes follow it.
 */

void
ngx_im_login_ack_now(ngx_im_session_t *s)
{
    u_char  ack[IM_SIZE_CONNECT_ACK];

    if (s->ack_due) {
        s->ack_due = 0;
        (void) ngx_im_output_send(s, ack, im_build_connect_ack(ack, 0));
    }
}


void
ngx_im_login_ack(ngx_im_session_t *s)
{
    if (!s->ack_due) {
        return;
    }

    ngx_im_login_ack_now(s);

    if (s->online) {
        /* the bound of the wait is off; else the login's end sets the
         * heartbeat and replays it */
        ngx_im_session_add_timer(s, ngx_im_get_conf()->ping_interval);
        ngx_im_login_replay(s);
    }

    if (ngx_im_session_transport(s)->logged_in) {
        ngx_im_session_transport(s)->logged_in(s);
    }
}


/* the session's timer during its login: it runs only while the login
 * waits in the queue */

void
ngx_im_login_timeout(ngx_im_session_t *s)
{
    if (s->cred && s->cred->queued) {
        /* no place among the logins in flight in time: "try later" */
        ngx_im_login_unqueue(s);
        ngx_im_stats->login_queue_timeouts++;
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "im: login waited im_login_queue_timeout for "
                      "its turn");
        ngx_im_login_done(s, 2);
    }
}
