/*
 * ngx_im_timer.h: timers that share one nginx event per delay.
 *
 * A session has at most one pending timer, and each kind of timer (connect,
 * ping, ping timeout, grace, close bound; a newcomer's hold) has one fixed
 * delay, so the timers of one delay fire in the order they were set: they
 * wait in one FIFO per (delay, handler), driven by one ngx_event_t, and
 * cost 20 bytes each instead of an event's 96.
 */

#ifndef _NGX_IM_TIMER_H_INCLUDED_
#define _NGX_IM_TIMER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>


typedef struct ngx_im_timer_s  ngx_im_timer_t;

typedef void (*ngx_im_timer_pt)(ngx_im_timer_t *t);

struct ngx_im_timer_s {
    ngx_queue_t            link;        /* next is NULL when not set */
    uint32_t               deadline;    /* msec, wraps: compare the
                                           difference */
};


/* (re)arm t to call handler after delay; the handler may set it again */
void ngx_im_timer_add(ngx_im_timer_t *t, ngx_msec_t delay,
    ngx_im_timer_pt handler);
void ngx_im_timer_del(ngx_im_timer_t *t);

#define ngx_im_timer_set(t)  ((t)->link.next != NULL)


#endif /* _NGX_IM_TIMER_H_INCLUDED_ */
