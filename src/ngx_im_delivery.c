/*
 * ngx_im_delivery.c: messages to a session's client, until acknowledged.
 *
 * Owns a session's in-flight pushes (pushed, not yet acked, in deadline
 * order) with their re-push timer, the pushes waiting for their turn (the
 * inbox is being read, or the client has not read what it was sent), the
 * acks, the inbox read after login and its merge with what came live
 * meanwhile (ngx_im_merge.c), and the hand-back of everything unacked to
 * the store when the session stops taking messages.  In-flight windows are
 * small, so a MsgId is looked up by a linear scan.
 *
 * A push's re-push clock starts when its bytes have left: pushes whose
 * bytes still wait in the session's output are the tail of the in-flight
 * queue, and get their deadline when the output drains.  A deadline that
 * finds the client's input unread waits for it to be read: the ack may be
 * there (docs/decisions/042-busy-is-not-dead.md).
 */

#include "ngx_im_delivery.h"
#include "ngx_im_output.h"
#include "ngx_im_merge.h"
#include "ngx_im_events.h"
#include "ngx_im_router.h"
#include "ngx_im_owe.h"


/* a deadline that found the client's input unread looks again this much
 * later (ms): the read posted meanwhile takes up to 1 MB per pass */
#define NGX_IM_DELIVERY_LOOK  10


struct ngx_im_mark_s {
    ngx_event_t            ev;
    uint64_t               nonce;
    ngx_queue_t            inbox;           /* the read, held */
    unsigned               read:1;          /* the read is in */
    unsigned               back:1;          /* the mark is back */
};

typedef struct ngx_im_mark_s  ngx_im_mark_t;


typedef struct {
    ngx_queue_t            queue;
    ngx_im_msg_t          *msg;
    ngx_msec_t             deadline;
    ngx_uint_t             repushes;
    uint64_t               seq;             /* the msg's when queued */
    uint32_t               origin;
    unsigned               stored:1;
    unsigned               owed:1;          /* no append: ngx_im_owe.h */
    unsigned               live:1;          /* counted in waiting_bytes */
    unsigned               sent:1;          /* its bytes left (in flight) */
    unsigned               spared:1;        /* its deadline found input
                                             * unread */
} ngx_im_inflight_t;


static void ngx_im_delivery_repush_handler(ngx_event_t *ev);
static void ngx_im_delivery_loaded(redisReply *reply, void *data);
static void ngx_im_delivery_loading_done(ngx_im_session_t *s);
static void ngx_im_delivery_mark(ngx_im_session_t *s);
static void ngx_im_delivery_mark_handler(ngx_event_t *ev);
static void ngx_im_delivery_mark_free(ngx_im_session_t *s);
static void ngx_im_delivery_merge(ngx_im_session_t *s, ngx_queue_t *inbox);
static const u_char *ngx_im_delivery_id(ngx_queue_t *q);
static void ngx_im_delivery_enqueue(ngx_queue_t *head,
    ngx_im_inflight_t *f);
static void ngx_im_delivery_drop(ngx_queue_t *q, void *data);
static ngx_im_msg_t *ngx_im_delivery_pivot(ngx_im_session_t *s,
    ngx_queue_t *q);


/* per-message records: no malloc for them once the worker has warmed up */

static ngx_im_spares_t  ngx_im_spare_inflight =
    ngx_im_spares(ngx_im_inflight_t, 4096);

#define ngx_im_inflight_alloc()  ngx_im_spare_get(&ngx_im_spare_inflight)
#define ngx_im_inflight_free(f)  ngx_im_spare_put(&ngx_im_spare_inflight, f)


static void
ngx_im_delivery_drop_repush(ngx_im_session_t *s)
{
    if (s->busy->repush) {
        ngx_im_event_free(s->busy->repush);
        s->busy->repush = NULL;
    }
}


/* pushes */

static ngx_im_inflight_t *
ngx_im_delivery_find(ngx_queue_t *head, const u_char *msgid)
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
ngx_im_delivery_send(ngx_im_session_t *s, ngx_im_msg_t *msg,
    ngx_uint_t stored)
{
    ngx_im_busy_t      *busy;
    ngx_im_conf_t      *imcf;
    ngx_im_inflight_t  *f;

    if (ngx_im_delivery_find(&s->busy->inflight, msg->msgid)) {
        return NGX_OK;
    }

    imcf = ngx_im_get_conf();

    busy = ngx_im_busy(s);
    if (busy == NULL) {
        return NGX_ERROR;
    }

    f = ngx_im_inflight_alloc();
    if (f == NULL) {
        return NGX_ERROR;
    }

    f->msg = ngx_im_msg_ref(msg);
    f->repushes = 0;
    f->stored = (stored && stored != NGX_IM_OWED);
    f->owed = (stored == NGX_IM_OWED);
    f->live = 0;
    f->sent = 0;
    f->spared = 0;
    f->seq = msg->seq;
    f->origin = msg->origin;
    f->deadline = ngx_current_msec + imcf->repush_interval;

    ngx_queue_insert_tail(&busy->inflight, &f->queue);

    ngx_im_stats->pushed++;

    if (busy->repush == NULL) {
        busy->repush = ngx_im_event_alloc(ngx_im_delivery_repush_handler, s,
                                          s->connection->log);
        if (busy->repush == NULL) {
            ngx_im_session_ops->close(s, NGX_IM_CLOSE_ERROR);
            return NGX_ERROR;
        }

        busy->repush->cancelable = 1;
    }

    if (!busy->repush->timer_set) {
        ngx_add_timer(busy->repush, imcf->repush_interval);
    }

    return ngx_im_output_send(s, msg->push, msg->push_len);
}


/*
 * A queue of pushes waiting for their turn is kept in each worker's order
 * of delivery (ngx_im_msg_t's seq): a new session gets this worker's
 * messages delivered just before it joined as the channel's copies, and
 * those delivered since directly; a sibling's come by channel until the
 * directory names this worker, by datagram after.  The copies arrive
 * later than the direct ones they precede.  Items of other origins, and
 * inbox items (origin 0), keep their places: a message goes behind the
 * last older one of its origin, and never ahead of an inbox item.
 */

static void
ngx_im_delivery_enqueue(ngx_queue_t *head, ngx_im_inflight_t *f)
{
    ngx_queue_t        *q;
    ngx_im_inflight_t  *w;

    /* a group message's seq changes with each page of members it is
     * delivered to: the item keeps the one it came with */
    f->seq = f->msg->seq;
    f->origin = f->msg->origin;

    if (f->origin == 0) {
        ngx_queue_insert_tail(head, &f->queue);
        return;
    }

    for (q = ngx_queue_last(head);
         q != ngx_queue_sentinel(head);
         q = ngx_queue_prev(q))
    {
        w = ngx_queue_data(q, ngx_im_inflight_t, queue);

        if (w->origin == 0 || (w->origin == f->origin && w->seq <= f->seq)) {
            break;
        }
    }

    /* after q; at the head when q is the sentinel */
    ngx_queue_insert_after(q, &f->queue);
}


/* NGX_OK: the session took the message (sent or queued for after the
 * inbox), NGX_DECLINED: it cannot */

ngx_int_t
ngx_im_delivery_push(ngx_im_session_t *s, ngx_im_msg_t *msg,
    ngx_uint_t stored)
{
    ngx_im_busy_t      *busy;
    ngx_im_inflight_t  *f;

    ngx_log_debug4(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im push: uid %uD state %ui loading %d phase %d",
                   s->route.uid, (ngx_uint_t) s->state, (int) s->loading,
                   (int) s->close_phase);

    if (s->state != NGX_IM_S_LIVE || ngx_im_session_system(s)) {
        return NGX_DECLINED;
    }

    if (ngx_im_session_closing(s) && s->route.user == NULL) {
        /* released already: the caller stores it */
        return NGX_DECLINED;
    }

    /*
     * A session that is closing but still routed takes the message into
     * its queue, unsent: its teardown hands everything back to the store
     * in order, this one behind what the session holds.  Declined, it
     * would be stored by the caller ahead of them.
     */

    if (ngx_im_session_closing(s) || s->loading
        || !ngx_queue_empty(&s->busy->waiting)
        || s->busy->out_size >= ngx_im_get_conf()->send_buffer / 2)
    {
        /* behind the inbox, or behind what the client has yet to read:
         * pushed as the output drains (ngx_im_delivery_feed) */
        if (ngx_im_delivery_find(&s->busy->waiting, msg->msgid)) {
            return NGX_OK;
        }

        busy = ngx_im_busy(s);
        if (busy == NULL) {
            return NGX_DECLINED;
        }

        f = ngx_im_inflight_alloc();
        if (f == NULL) {
            return NGX_DECLINED;
        }

        f->msg = ngx_im_msg_ref(msg);
        f->stored = (stored && stored != NGX_IM_OWED);
        f->owed = (stored == NGX_IM_OWED);
        f->repushes = 0;
        f->live = 1;
        ngx_im_delivery_enqueue(&busy->waiting, f);

        busy->waiting_bytes += msg->push_len;

        if (busy->waiting_bytes > ngx_im_get_conf()->send_buffer
            && !ngx_im_session_closing(s))
        {
            /* the client does not read: what waits is not kept for it
             * without bound (it goes back to the store) */
            ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                          "im: uid %uD does not read, %uD bytes waiting: "
                          "closing", s->route.uid, busy->waiting_bytes);
            ngx_im_stats->slow_closed++;
            ngx_im_session_ops->close(s, NGX_IM_CLOSE_SLOW);
        }

        return NGX_OK;
    }

    if (ngx_im_delivery_send(s, msg, stored) != NGX_OK) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


void
ngx_im_delivery_ack(ngx_im_session_t *s, const u_char *msgid)
{
    ngx_time_t         *tp;
    ngx_im_inflight_t  *f;

    f = ngx_im_delivery_find(&s->busy->inflight, msgid);
    if (f == NULL) {
        /* an ack for an unknown MsgId is ignored */
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im delivery: uid %uD acked a push", s->route.uid);

    ngx_queue_remove(&f->queue);
    ngx_im_stats->acked++;

    if (ngx_im_events_on) {
        tp = ngx_timeofday();
        ngx_im_events_delivered(msgid, s->route.uid, s->route.client_id,
                                f->msg->accepted
                                ? (ngx_msec_int_t) ((uint64_t) tp->sec * 1000
                                                    + tp->msec
                                                    - f->msg->accepted)
                                : -1);
    }

    if (f->owed) {
        /* no Redis: the member is cleared in its record */
        ngx_im_owe_acked(f->msg, s->route.uid);

    } else if (f->stored) {
        ngx_im_store_remove(s->route.uid, f->msg);
    }

    /* with receipts on, messages name their sender (stored form 2) */
    if (f->msg->from && f->msg->from != s->route.uid
        && ngx_im_get_conf()->receipts)
    {
        ngx_im_stats->receipts++;
        ngx_im_router_receipt(f->msg->from, f->msg->msgid, s->route.uid);
    }

    /* the admin API waits for this message's acks (stored form 3) */
    if (f->msg->watch) {
        ngx_im_router_acked(f->msg, s->route.uid, s->route.client_id);
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
ngx_im_delivery_repush_handler(ngx_event_t *ev)
{
    ngx_im_session_t   *s = ev->data;

    ngx_msec_int_t      left;
    ngx_queue_t        *q;
    ngx_im_conf_t      *imcf;
    ngx_im_inflight_t  *f, *last;

    if (ngx_im_session_closing(s) || s->state != NGX_IM_S_LIVE) {
        return;
    }

    imcf = ngx_im_get_conf();

    last = NULL;

    while (!ngx_queue_empty(&s->busy->inflight)) {
        q = ngx_queue_head(&s->busy->inflight);
        f = ngx_queue_data(q, ngx_im_inflight_t, queue);

        left = (ngx_msec_int_t) (f->deadline - ngx_current_msec);

        if (left > 0 || f == last) {
            ngx_add_timer(ev, left > 0 ? (ngx_msec_t) left : 1);
            return;
        }

        if (!f->sent) {
            /* its bytes (and those of every push behind it) have not
             * left: the deadline is set when the output drains */
            ngx_add_timer(ev, imcf->repush_interval);
            return;
        }

        if (last == NULL && ngx_im_session_unread(s)) {
            /* the worker is behind: what the client sent, the ack
             * perhaps, waits unread.  Read first (in this pass), look
             * again after; counted once per deadline */
            if (!f->spared) {
                f->spared = 1;
                ngx_im_stats->busy_spared++;
            }

            if (!s->connection->read->posted) {
                ngx_post_event(s->connection->read, &ngx_posted_events);
            }

            ngx_add_timer(ev, NGX_IM_DELIVERY_LOOK);
            return;
        }

        if (f->repushes >= imcf->repush_max) {
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: uid %uD did not ack after %ui re-pushes",
                          s->route.uid, f->repushes);

            /* this message ends the session: a poison one ends every
             * session of its recipient, login after login (only what is
             * in the inbox can be set aside: an owed one is appended
             * first, in its place) */
            if (f->owed && s->route.uid) {
                ngx_im_owe_release(f->msg, s->route.uid,
                                   ngx_im_delivery_pivot(s, q));
                f->owed = 0;
                f->stored = 1;
            }

            if (f->stored && s->route.uid) {
                ngx_im_store_strike(s->route.uid, f->msg);
            }

            ngx_im_session_ends(s, NGX_IM_END_REPUSH);
            ngx_im_session_ops->close(s, NGX_IM_CLOSE_NORMAL);
            return;
        }

        f->repushes++;
        f->deadline = ngx_current_msec + imcf->repush_interval;
        f->sent = 0;
        f->spared = 0;

        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                       "im delivery: uid %uD re-push %ui", s->route.uid,
                       f->repushes);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&s->busy->inflight, q);

        if (last == NULL) {
            last = f;
        }

        ngx_im_stats->repushed++;

        if (ngx_im_output_send(s, f->msg->push, f->msg->push_len)
            != NGX_OK)
        {
            return;
        }
    }

    /* all acknowledged since the timer was set */

    ngx_im_delivery_drop_repush(s);
    ngx_im_busy_done(s);
}


/*
 * The session's output is all out: the pushes written since the last time
 * (the tail of the in-flight queue) are counted from now.  The queue stays
 * in deadline order: those before them were due earlier.
 */

void
ngx_im_delivery_drained(ngx_im_session_t *s)
{
    ngx_msec_t          deadline;
    ngx_queue_t        *q;
    ngx_im_inflight_t  *f;

    deadline = ngx_current_msec + ngx_im_get_conf()->repush_interval;

    for (q = ngx_queue_last(&s->busy->inflight);
         q != ngx_queue_sentinel(&s->busy->inflight);
         q = ngx_queue_prev(q))
    {
        f = ngx_queue_data(q, ngx_im_inflight_t, queue);

        if (f->sent) {
            break;
        }

        f->sent = 1;
        f->spared = 0;
        f->deadline = deadline;
    }
}


/*
 * The first message behind q (in flight, then waiting) that is in the
 * inbox: an owed message appended late goes before it, so that the
 * member reads it in the order accepted (decision 052).  NULL: none.
 */

static ngx_im_msg_t *
ngx_im_delivery_pivot(ngx_im_session_t *s, ngx_queue_t *q)
{
    ngx_queue_t        *head;
    ngx_im_inflight_t  *f;

    head = &s->busy->inflight;

    for ( ;; ) {
        for (q = ngx_queue_next(q);
             q != ngx_queue_sentinel(head);
             q = ngx_queue_next(q))
        {
            f = ngx_queue_data(q, ngx_im_inflight_t, queue);

            if (f->stored && !ngx_im_msg_direct(f->msg)) {
                return f->msg;
            }
        }

        if (head == &s->busy->waiting) {
            return NULL;
        }

        head = &s->busy->waiting;
        q = ngx_queue_sentinel(head);
    }
}


/* another session of the uid reads the inbox next: what this one owes
 * goes there now, each in its place; an ack then removes it as any
 * stored message's */

void
ngx_im_delivery_owe_out(ngx_im_session_t *s)
{
    ngx_queue_t        *q, *head;
    ngx_im_inflight_t  *f;

    if (s->route.uid == 0) {
        return;
    }

    head = &s->busy->inflight;

    for ( ;; ) {
        for (q = ngx_queue_head(head);
             q != ngx_queue_sentinel(head);
             q = ngx_queue_next(q))
        {
            f = ngx_queue_data(q, ngx_im_inflight_t, queue);

            if (f->owed) {
                ngx_im_owe_release(f->msg, s->route.uid,
                                   ngx_im_delivery_pivot(s, q));
                f->owed = 0;
                f->stored = 1;
            }
        }

        if (head == &s->busy->waiting) {
            return;
        }

        head = &s->busy->waiting;
    }
}


/* hand messages not acknowledged back to the store (docs/PROTOCOL.md 5) */

static void
ngx_im_delivery_put_back(ngx_im_session_t *s, ngx_queue_t *head)
{
    ngx_queue_t        *q;
    ngx_im_inflight_t  *f;

    while (!ngx_queue_empty(head)) {
        q = ngx_queue_head(head);
        f = ngx_queue_data(q, ngx_im_inflight_t, queue);

        /* in write-through mode it is in the inbox already, or owed: its
         * append now, before the first later one the session held that
         * is stored; a copy delivered without Redis is never stored (its
         * sender has the refusal once the budget runs out) */

        if (f->owed) {
            if (s->route.uid) {
                ngx_im_owe_release(f->msg, s->route.uid,
                                   ngx_im_delivery_pivot(s, q));
            }

        } else if (!f->stored && s->route.uid
                   && !ngx_im_msg_direct(f->msg))
        {
            if (ngx_im_store_push(s->route.uid, f->msg, NULL, NULL, NULL)
                != NGX_OK)
            {
                ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                              "im: uid %uD: an unacknowledged message "
                              "could not be stored", s->route.uid);
            }
        }

        ngx_queue_remove(q);
        ngx_im_msg_unref(f->msg);
        ngx_im_inflight_free(f);
    }
}


/* the inbox: after login, and again after the router lost Redis */

void
ngx_im_delivery_sync(ngx_im_session_t *s)
{
    ngx_im_ref_t  *ref;

    if (ngx_im_session_closing(s) || s->state != NGX_IM_S_LIVE) {
        return;
    }

    /* the login's answer goes ahead of what the read brings */
    ngx_im_session_ops->login_ack(s);

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im sync: uid %uD load under way %d", s->route.uid,
                   s->route.ref != NULL);

    if (s->route.ref || s->busy->mark) {
        /* what was stored after that read is read again afterwards */
        s->resync = 1;
        return;
    }

    ref = ngx_im_ref_alloc(s);
    if (ref == NULL) {
        return;
    }

    s->loading = 1;

    if (ngx_im_store_load(s->route.uid, ngx_im_delivery_loaded, ref)
        != NGX_OK)
    {
        ngx_im_ref_free(ref);
        ngx_im_delivery_loading_done(s);
        return;
    }

    s->route.ref = ref;

    ngx_im_delivery_mark(s);
}


/*
 * The read is merged with what came live once its mark is back on the
 * uid's channel (ngx_im_router_mark): by then the copies of the messages
 * the read saw, or saw removed, have come too.
 */

static void
ngx_im_delivery_mark(ngx_im_session_t *s)
{
    ngx_im_busy_t  *busy;
    ngx_im_mark_t  *m;

    static uint32_t  marks;

    m = ngx_alloc(sizeof(ngx_im_mark_t), ngx_cycle->log);
    if (m == NULL) {
        return;
    }

    ngx_memzero(m, sizeof(ngx_im_mark_t));
    m->nonce = ((uint64_t) ngx_pid << 32) | ++marks;

    if (ngx_im_router_mark(&s->route, m->nonce) != NGX_OK) {
        ngx_free(m);
        return;
    }

    ngx_queue_init(&m->inbox);

    /* the cycle's log: the connection's may move while the read waits
     * (the WebSocket transport lets the request go at login) */
    m->ev.handler = ngx_im_delivery_mark_handler;
    m->ev.data = s;
    m->ev.log = ngx_cycle->log;
    m->ev.cancelable = 1;
    /* a subscription lost meanwhile does not bring the mark back: wait
     * as long as for any Redis answer */
    ngx_add_timer(&m->ev, ngx_im_get_conf()->redis_timeout);

    busy = ngx_im_busy(s);
    if (busy == NULL) {
        /* no memory: the read is merged as soon as it is back */
        ngx_del_timer(&m->ev);
        ngx_free(m);
        return;
    }

    busy->mark = m;
}


void
ngx_im_delivery_marked(ngx_im_session_t *s, uint64_t nonce)
{
    ngx_queue_t     inbox;
    ngx_im_mark_t  *m;

    m = s->busy->mark;

    if (m == NULL || m->nonce != nonce) {
        return;
    }

    if (!m->read) {
        /* the read's callback finds it back */
        m->back = 1;
        return;
    }

    ngx_queue_init(&inbox);

    if (!ngx_queue_empty(&m->inbox)) {
        ngx_queue_add(&inbox, &m->inbox);
        ngx_queue_init(&m->inbox);
    }

    ngx_im_delivery_mark_free(s);
    ngx_im_delivery_merge(s, &inbox);
}


static void
ngx_im_delivery_mark_handler(ngx_event_t *ev)
{
    ngx_im_session_t  *s = ev->data;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ev->log, 0,
                   "im sync: uid %uD: the mark did not come back",
                   s->route.uid);

    ngx_im_delivery_marked(s, s->busy->mark->nonce);
}


static void
ngx_im_delivery_mark_free(ngx_im_session_t *s)
{
    ngx_im_mark_t  *m = s->busy->mark;

    if (m->ev.timer_set) {
        ngx_del_timer(&m->ev);
    }

    /* inbox entries are stored: nothing to hand back */
    ngx_im_delivery_put_back(s, &m->inbox);

    ngx_free(m);
    s->busy->mark = NULL;
}


static void
ngx_im_delivery_loading_done(ngx_im_session_t *s)
{
    /* Redis is away: the router calls sync again when it is back, and
     * meanwhile live messages are not held back */

    s->loading = 0;
    ngx_im_delivery_feed(s);
}


/*
 * Pushes waiting for their turn leave while the client keeps reading: a
 * backlog larger than im_send_buffer is a reason to wait, not to close.
 */

void
ngx_im_delivery_feed(ngx_im_session_t *s)
{
    size_t              limit;
    ngx_queue_t        *q;
    ngx_im_inflight_t  *f;

    limit = ngx_im_get_conf()->send_buffer / 2;

    while (!ngx_queue_empty(&s->busy->waiting) && !ngx_im_session_closing(s)
           && !s->loading && s->state == NGX_IM_S_LIVE
           && s->busy->out_size < limit)
    {
        q = ngx_queue_head(&s->busy->waiting);
        f = ngx_queue_data(q, ngx_im_inflight_t, queue);
        ngx_queue_remove(q);

        if (f->live) {
            s->busy->waiting_bytes -= f->msg->push_len;
        }

        (void) ngx_im_delivery_send(s, f->msg,
                                    f->owed ? NGX_IM_OWED : f->stored);

        ngx_im_msg_unref(f->msg);
        ngx_im_inflight_free(f);
    }
}


/* an inbox entry that does not parse leaves the inbox: exactly its bytes,
 * even one shorter than an entry's header */

static void
ngx_im_delivery_drop_entry(ngx_im_session_t *s, u_char *p, size_t len)
{
    ngx_im_msg_t  *bad;

    bad = ngx_im_msg_alloc(0, len);
    if (bad == NULL) {
        return;
    }

    ngx_memcpy(bad->entry, p, len);
    bad->entry_len = len;

    ngx_im_store_remove(s->route.uid, bad);
    ngx_im_msg_unref(bad);
}


static void
ngx_im_delivery_loaded(redisReply *reply, void *data)
{
    ngx_im_ref_t  *ref = data;

    size_t              i;
    ngx_queue_t         inbox;
    ngx_im_msg_t       *msg;
    redisReply         *e;
    ngx_im_session_t   *s;
    ngx_im_inflight_t  *f;

    s = ref->data;
    ngx_im_ref_free(ref);

    if (s == NULL) {
        return;
    }

    s->route.ref = NULL;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im inbox: uid %uD, %uz entries", s->route.uid,
                   reply && reply->type == REDIS_REPLY_ARRAY
                   ? reply->elements : 0);

    if (ngx_im_store_loaded(reply) != NGX_OK) {
        if (s->busy->mark) {
            ngx_im_delivery_mark_free(s);
        }

        ngx_im_delivery_loading_done(s);
        ngx_im_busy_done(s);
        return;
    }

    ngx_queue_init(&inbox);

    for (i = 0; i < reply->elements && !ngx_im_session_closing(s); i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_STRING) {
            continue;
        }

        msg = ngx_im_msg_from_entry((u_char *) e->str, e->len);
        if (msg == NULL) {
            ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                          "im: uid %uD: unreadable inbox entry dropped",
                          s->route.uid);
            ngx_im_stats->dropped[NGX_IM_DROPPED_UNREADABLE]++;
            ngx_im_events_dropped(NULL, s->route.uid, "unreadable", 1);
            ngx_im_delivery_drop_entry(s, (u_char *) e->str, e->len);
            continue;
        }

        ngx_im_stats->loaded++;

        if (msg->expire && msg->expire < ngx_time()) {
            ngx_im_stats->expired++;
            ngx_im_events_dropped(msg->msgid, s->route.uid, "expired", 1);
            ngx_im_store_remove(s->route.uid, msg);
            ngx_im_msg_unref(msg);
            continue;
        }

        if (ngx_im_delivery_find(&s->busy->inflight, msg->msgid)
            || ngx_im_delivery_find(&inbox, msg->msgid))
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
        f->owed = 0;
        f->repushes = 0;
        f->live = 0;
        f->seq = 0;
        f->origin = 0;
        ngx_queue_insert_tail(&inbox, &f->queue);
    }

    if (s->busy->mark) {
        if (!s->busy->mark->back) {
            /* held until the mark is back */
            if (!ngx_queue_empty(&inbox)) {
                ngx_queue_add(&s->busy->mark->inbox, &inbox);
            }

            s->busy->mark->read = 1;
            return;
        }

        ngx_im_delivery_mark_free(s);
    }

    ngx_im_delivery_merge(s, &inbox);
}


static void
ngx_im_delivery_merge(ngx_im_session_t *s, ngx_queue_t *inbox)
{
    ngx_queue_t     *q;
    ngx_im_busy_t   *busy;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, s->connection->log, 0,
                   "im sync: uid %uD: the read merged", s->route.uid);

    if (!ngx_queue_empty(inbox) || !ngx_queue_empty(&s->busy->waiting)) {

        busy = ngx_im_busy(s);

        if (busy == NULL) {
            /* no memory: the entries stay in the inbox for a later read */
            while (!ngx_queue_empty(inbox)) {
                q = ngx_queue_head(inbox);
                ngx_queue_remove(q);
                ngx_im_delivery_drop(q, NULL);
            }

        } else {
            ngx_im_merge(&busy->waiting, inbox, s->loaded,
                         ngx_im_delivery_id, ngx_im_delivery_drop, NULL);
        }
    }

    s->loaded = 1;

    ngx_im_delivery_loading_done(s);

    if (s->resync && !ngx_im_session_closing(s)) {
        s->resync = 0;
        ngx_im_delivery_sync(s);
    }

    /* an empty read of an idle session leaves nothing under way */
    ngx_im_busy_done(s);
}


/*
 * The inbox read and what came live while it was read become one queue in
 * the order the messages were accepted (docs/PROTOCOL.md 3.4): see
 * ngx_im_merge.h for the rule.  The live ones the inbox lacks were acked by
 * another device before the read, or (offline-only) never stored.
 */

static const u_char *
ngx_im_delivery_id(ngx_queue_t *q)
{
    ngx_im_inflight_t  *f;

    f = ngx_queue_data(q, ngx_im_inflight_t, queue);

    return f->msg->msgid;
}


static void
ngx_im_delivery_drop(ngx_queue_t *q, void *data)
{
    ngx_im_inflight_t  *f;

    f = ngx_queue_data(q, ngx_im_inflight_t, queue);

    ngx_im_msg_unref(f->msg);
    ngx_im_inflight_free(f);
}


void
ngx_im_delivery_release(ngx_im_session_t *s)
{
    ngx_im_delivery_drop_repush(s);

    if (s->busy->mark) {
        ngx_im_delivery_mark_free(s);
    }

    /* in the order accepted: what was pushed, then what waited for its
     * turn (one queue, so that an owed one finds the stored ones behind
     * it: ngx_im_delivery_pivot) */
    if (!ngx_queue_empty(&s->busy->waiting)) {
        ngx_queue_add(&s->busy->inflight, &s->busy->waiting);
        ngx_queue_init(&s->busy->waiting);
    }

    ngx_im_delivery_put_back(s, &s->busy->inflight);
}

