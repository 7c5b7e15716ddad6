/*
 * ngx_im_state.c: what ngx_im_state.h declares for every part of a
 * session.
 *
 * Owns the state machine's operations as the parts below it call them
 * (set by ngx_im_dispatch.c), and the busy record's life: the one shared
 * record every idle session points at, the records a session takes when
 * something is under way (ngx_im_busy()) and gives back when all of it is
 * done (ngx_im_busy_done()), spares kept for the next burst.
 */

#include "ngx_im_state.h"
#include "ngx_im_metrics.h"


/* set by the state machine (ngx_im_dispatch.c, at worker start) */
ngx_im_session_ops_t  *ngx_im_session_ops;


/*
 * The busy record of every idle session: its queues point at themselves
 * and nothing is ever added to it (ngx_im_busy() takes a session's own
 * record first), so an idle session reads empty queues, no output and no
 * events through it.
 */
ngx_im_busy_t  ngx_im_busy_idle = {
    { &ngx_im_busy_idle.inflight, &ngx_im_busy_idle.inflight },
    { &ngx_im_busy_idle.waiting, &ngx_im_busy_idle.waiting },
    0, 0, NULL, NULL,
    { &ngx_im_busy_idle.pubs, &ngx_im_busy_idle.pubs },
    NULL,
    { NULL, NULL },
    NULL,
    &ngx_im_busy_idle.out,
    NULL
};

/* as many spares as sessions busy at once in a burst may use again soon */
static ngx_im_spares_t  ngx_im_spare_busy = ngx_im_spares(ngx_im_busy_t, 4096);


ngx_im_busy_t *
ngx_im_busy_take(ngx_im_session_t *s)
{
    ngx_im_busy_t  *b;

    b = ngx_im_spare_get(&ngx_im_spare_busy);
    if (b == NULL) {
        return NULL;
    }

    ngx_memzero(b, sizeof(ngx_im_busy_t));

    ngx_queue_init(&b->inflight);
    ngx_queue_init(&b->waiting);
    ngx_queue_init(&b->pubs);
    b->last_out = &b->out;
    b->session = s;

    s->busy = b;
    ngx_im_gauges->busy++;

    return b;
}


/* the shared record is as it was made: a write through s->busy without
 * ngx_im_busy() would have changed it */
static ngx_uint_t
ngx_im_busy_idle_intact(void)
{
    ngx_im_busy_t  *b = &ngx_im_busy_idle;

    return b->inflight.next == &b->inflight && b->inflight.prev == &b->inflight
           && b->waiting.next == &b->waiting && b->waiting.prev == &b->waiting
           && b->pubs.next == &b->pubs && b->pubs.prev == &b->pubs
           && b->waiting_bytes == 0 && b->out_size == 0
           && b->repush == NULL && b->mark == NULL && b->close_ev == NULL
           && b->out == NULL && b->last_out == &b->out;
}


void
ngx_im_busy_done(ngx_im_session_t *s)
{
    ngx_im_busy_t  *b;

    b = s->busy;

    if (b == &ngx_im_busy_idle) {
        return;
    }

    if (!ngx_queue_empty(&b->inflight) || !ngx_queue_empty(&b->waiting)
        || !ngx_queue_empty(&b->pubs) || s->flush_posted || b->out
        || b->repush || b->mark || b->close_ev)
    {
        return;
    }

    if (!ngx_im_busy_idle_intact()) {
        ngx_log_error(NGX_LOG_ALERT, s->connection->log, 0,
                      "im session: the idle sessions' record was written");
    }

    ngx_im_spare_put(&ngx_im_spare_busy, b);
    s->busy = &ngx_im_busy_idle;
    ngx_im_gauges->busy--;
}
