/*
 * ngx_im_alloc.h: where a worker's short- and long-lived objects come from.
 *
 * Three allocators below nginx's pools, each for one kind of lifetime:
 * lists of spares for records made and freed per message, the worker slab
 * for objects that live as long as a session, and events that exist only
 * while needed.  After a burst (of logins, of sessions ending, or of a
 * large fan-out) the worker lets its spares go and trims the heap.
 * docs/ARCHITECTURE.md has the table of which object lives where.
 */

#ifndef _NGX_IM_ALLOC_H_INCLUDED_
#define _NGX_IM_ALLOC_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>


/*
 * Records made and freed per message (pending answers, pushes in flight,
 * Redis requests, appends, probes, events, output chunks) are recycled
 * through a worker's list of spares instead of malloc'd each time; a list
 * keeps at most max, so a burst does not stay allocated for good, and
 * ngx_im_spare_drain_all() empties every list once a burst is over.
 */
typedef struct ngx_im_spares_s  ngx_im_spares_t;

struct ngx_im_spares_s {
    void               *list;       /* linked through the first word */
    ngx_uint_t          n;
    ngx_uint_t          max;
    size_t              size;
    ngx_im_spares_t    *next;       /* in the worker's list of lists */
    ngx_uint_t          known;
};

#define ngx_im_spares(type, max)  { NULL, 0, max, sizeof(type), NULL, 0 }

void *ngx_im_spare_get(ngx_im_spares_t *sp);    /* not zeroed */
void ngx_im_spare_put(ngx_im_spares_t *sp, void *p);
void ngx_im_spare_drain(ngx_im_spares_t *sp);   /* free the spares */
void ngx_im_spare_drain_all(void);


/*
 * Objects that live as long as a session come from the worker's slab,
 * not from malloc: zeroed, at most NGX_IM_SLAB_MAX bytes.
 */
#define NGX_IM_SLAB_MAX  1024

void *ngx_im_slab_alloc(size_t size);
void ngx_im_slab_free(void *p);


/* events needed for a while, from a list of spares; free deletes the
 * timer and the posting */
ngx_event_t *ngx_im_event_alloc(ngx_event_handler_pt handler, void *data,
    ngx_log_t *log);
void ngx_im_event_free(ngx_event_t *ev);

/* a static event of the worker's own, not a connection's (a flush, a
 * queue, the trim): its data is a connection without a socket, which
 * nginx's debug log of events reads */
void ngx_im_event_init(ngx_event_t *ev, ngx_event_handler_pt handler);


/* n more logins or session ends (or a pass that wrote to n sessions):
 * once such a burst has paused for a second, spares are let go and the
 * heap is trimmed */
#define NGX_IM_TRIM_BURST  256

void ngx_im_trim_note(ngx_uint_t n);


/*
 * Steer nginx's next malloc of a small size into the worker's nursery of
 * such blocks: one block of it is freed just before (decision 053).  For
 * the 128-byte pool nginx gives each new upstream connection, which a
 * kept-alive connection holds for long.  in_flight: the worker's auth
 * subrequests under way, the one about to start counted; a block is
 * given only when that is more than ever since the last trim, as a new
 * connection is then likely.
 */
#define NGX_IM_NURSERY_SIZE  128

void ngx_im_nursery_give(ngx_uint_t in_flight);


/* a pointer to an object that a late callback may find cleared */
typedef struct {
    void               *data;
} ngx_im_ref_t;

ngx_im_ref_t *ngx_im_ref_alloc(void *data);
void ngx_im_ref_free(ngx_im_ref_t *ref);


#endif /* _NGX_IM_ALLOC_H_INCLUDED_ */
