/*
 * ngx_im_timer.c: one nginx event per timer delay.
 *
 * Owns the worker's timer queues.  A queue holds the timers of one delay
 * and one handler in the order of their deadlines (they were set in that
 * order), and its event is due at the head's deadline.  The events are not
 * cancelable, as the sessions' own timers were: a gracefully exiting worker
 * keeps its sessions until they end or worker_shutdown_timeout runs out; an
 * empty queue drops its event, so an idle worker exits at once.
 */

#include "ngx_im_timer.h"


#define NGX_IM_TIMER_QUEUES  16


typedef struct {
    ngx_msec_t             delay;
    ngx_im_timer_pt        handler;
    ngx_queue_t            timers;
    ngx_event_t            ev;
} ngx_im_timer_queue_t;


static ngx_im_timer_queue_t  ngx_im_timer_queues[NGX_IM_TIMER_QUEUES];
static ngx_uint_t            ngx_im_ntimer_queues;
/* nginx's debug log reads a descriptor out of every timer's data */
static ngx_connection_t      ngx_im_timer_dummy;


static void
ngx_im_timer_handler(ngx_event_t *ev)
{
    ngx_queue_t           *q;
    ngx_msec_int_t         left;
    ngx_im_timer_t        *t;
    ngx_im_timer_queue_t  *tq;

    tq = (ngx_im_timer_queue_t *) ((u_char *) ev
                                   - offsetof(ngx_im_timer_queue_t, ev));

    while (!ngx_queue_empty(&tq->timers)) {
        q = ngx_queue_head(&tq->timers);
        t = ngx_queue_data(q, ngx_im_timer_t, link);

        left = (int32_t) (t->deadline - (uint32_t) ngx_current_msec);

        if (left > 0) {
            ngx_add_timer(ev, (ngx_msec_t) left);
            return;
        }

        ngx_queue_remove(q);
        t->link.next = NULL;

        /* may set a timer again (later in this or another queue) */
        tq->handler(t);
    }
}


void
ngx_im_timer_add(ngx_im_timer_t *t, ngx_msec_t delay,
    ngx_im_timer_pt handler)
{
    ngx_uint_t             i;
    ngx_im_timer_queue_t  *tq;

    ngx_im_timer_del(t);

    for (i = 0; i < ngx_im_ntimer_queues; i++) {
        if (ngx_im_timer_queues[i].delay == delay
            && ngx_im_timer_queues[i].handler == handler)
        {
            break;
        }
    }

    if (i == ngx_im_ntimer_queues) {
        if (i == NGX_IM_TIMER_QUEUES) {
            /* more kinds than queues: cannot be with the module's timers;
             * the last queue then fires late or early, never not at all */
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "im: more than %d timer delays",
                          NGX_IM_TIMER_QUEUES);
            i--;

        } else {
            tq = &ngx_im_timer_queues[i];
            tq->delay = delay;
            tq->handler = handler;
            ngx_queue_init(&tq->timers);
            ngx_im_timer_dummy.fd = (ngx_socket_t) -1;
            tq->ev.handler = ngx_im_timer_handler;
            tq->ev.data = &ngx_im_timer_dummy;
            tq->ev.log = ngx_cycle->log;
            ngx_im_ntimer_queues++;
        }
    }

    tq = &ngx_im_timer_queues[i];

    t->deadline = (uint32_t) (ngx_current_msec + delay);
    ngx_queue_insert_tail(&tq->timers, &t->link);

    if (!tq->ev.timer_set) {
        ngx_add_timer(&tq->ev, delay);
    }
}


void
ngx_im_timer_del(ngx_im_timer_t *t)
{
    ngx_uint_t             i;
    ngx_im_timer_queue_t  *tq;

    if (t->link.next == NULL) {
        return;
    }

    ngx_queue_remove(&t->link);
    t->link.next = NULL;

    for (i = 0; i < ngx_im_ntimer_queues; i++) {
        tq = &ngx_im_timer_queues[i];

        if (tq->ev.timer_set && ngx_queue_empty(&tq->timers)) {
            ngx_del_timer(&tq->ev);
        }
    }
}

