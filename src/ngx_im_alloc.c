/*
 * ngx_im_alloc.c: the worker's allocators below nginx's pools.
 *
 * Owns the lists of spares (per-message records recycled instead of
 * malloc'd), the worker slab (objects that live as long as a session),
 * event records that exist only while needed, the nursery that steers
 * the pools of new upstream connections, and the heap trim after a
 * burst.  A leaf: it knows nothing of sessions, messages or Redis.
 *
 * The slab: sessions are made in login bursts, while each handshake also
 * holds an HTTP request, an auth subrequest, an upstream connection and
 * their pools, all of them freed a few milliseconds later.  Taken from
 * malloc, the long-lived objects land between those short-lived blocks;
 * once the burst is over the heap is a lace of small live objects and free
 * gaps, and the pages under the gaps stay resident because no gap covers a
 * whole page.  Measured at 10,000 idle sessions that was about 300 bytes
 * per session on top of the objects themselves.
 *
 * Objects from here live in their own 64 KB runs of pages, one size per
 * run, packed and reused through a free list; a run that empties goes back
 * to the kernel (one empty run per size is kept against churn).  A run is
 * found from any of its objects by alignment, so an object carries no
 * header.  Worker-local, no locking.
 */

#include "ngx_im_alloc.h"

#if (NGX_LINUX && defined __GLIBC__)
#include <malloc.h>
#define NGX_IM_HAVE_MALLOC_TRIM  1
#endif

#include <sys/mman.h>


#define NGX_IM_SLAB_RUN      (64 * 1024)
#define NGX_IM_SLAB_ALIGN    16
#define NGX_IM_SLAB_CLASSES  (NGX_IM_SLAB_MAX / NGX_IM_SLAB_ALIGN)


typedef struct ngx_im_run_s  ngx_im_run_t;

struct ngx_im_run_s {
    ngx_queue_t          link;      /* in its class, while it has room */
    void                *free;      /* freed slots, linked by first word */
    u_char              *fresh;     /* slots never handed out start here */
    u_char              *end;
    uint32_t             used;
    uint32_t             cls;
    ngx_uint_t           listed;
};


typedef struct {
    ngx_queue_t          runs;      /* runs with room */
    ngx_uint_t           nruns;
} ngx_im_slab_class_t;


static ngx_im_slab_class_t  ngx_im_slab_classes[NGX_IM_SLAB_CLASSES];
static ngx_uint_t           ngx_im_slab_ready;


#define ngx_im_slab_hdr                                                       \
    ngx_align(sizeof(ngx_im_run_t), NGX_IM_SLAB_ALIGN)


static ngx_im_run_t *
ngx_im_slab_new_run(ngx_uint_t cls)
{
    u_char        *p, *start;
    size_t         len, head;
    ngx_im_run_t  *run;

    /* twice the size, then cut to a run-aligned run */

    len = 2 * NGX_IM_SLAB_RUN;

    p = mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS,
             -1, 0);
    if (p == MAP_FAILED) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_errno,
                      "im: mmap(%uz) failed", len);
        return NULL;
    }

    start = ngx_align_ptr(p, NGX_IM_SLAB_RUN);
    head = start - p;

    if (head) {
        (void) munmap(p, head);
    }

    (void) munmap(start + NGX_IM_SLAB_RUN, NGX_IM_SLAB_RUN - head);

    run = (ngx_im_run_t *) start;

    run->free = NULL;
    run->fresh = start + ngx_im_slab_hdr;
    run->end = start + NGX_IM_SLAB_RUN;
    run->used = 0;
    run->cls = cls;
    run->listed = 1;

    ngx_queue_insert_head(&ngx_im_slab_classes[cls].runs, &run->link);
    ngx_im_slab_classes[cls].nruns++;

    return run;
}


void *
ngx_im_slab_alloc(size_t size)
{
    void                 *p;
    size_t                slot;
    ngx_uint_t            i, cls;
    ngx_im_run_t         *run;
    ngx_im_slab_class_t  *sc;

    if (size == 0 || size > NGX_IM_SLAB_MAX) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "im: slab object of %uz bytes", size);
        return NULL;
    }

    if (!ngx_im_slab_ready) {
        for (i = 0; i < NGX_IM_SLAB_CLASSES; i++) {
            ngx_queue_init(&ngx_im_slab_classes[i].runs);
        }
        ngx_im_slab_ready = 1;
    }

    cls = (size - 1) / NGX_IM_SLAB_ALIGN;
    slot = (cls + 1) * NGX_IM_SLAB_ALIGN;
    sc = &ngx_im_slab_classes[cls];

    if (ngx_queue_empty(&sc->runs)) {
        run = ngx_im_slab_new_run(cls);
        if (run == NULL) {
            return NULL;
        }

    } else {
        run = ngx_queue_data(ngx_queue_head(&sc->runs), ngx_im_run_t, link);
    }

    if (run->free) {
        p = run->free;
        run->free = *(void **) p;

    } else {
        p = run->fresh;
        run->fresh += slot;
    }

    run->used++;

    if (run->free == NULL && run->fresh + slot > run->end) {
        ngx_queue_remove(&run->link);
        run->listed = 0;
    }

    ngx_memzero(p, slot);

    return p;
}


void
ngx_im_slab_free(void *p)
{
    ngx_im_run_t         *run;
    ngx_im_slab_class_t  *sc;

    if (p == NULL) {
        return;
    }

    run = (ngx_im_run_t *) ((uintptr_t) p & ~(uintptr_t)
                            (NGX_IM_SLAB_RUN - 1));
    sc = &ngx_im_slab_classes[run->cls];

    *(void **) p = run->free;
    run->free = p;
    run->used--;

    if (!run->listed) {
        ngx_queue_insert_head(&sc->runs, &run->link);
        run->listed = 1;
    }

    if (run->used == 0 && sc->nruns > 1) {
        ngx_queue_remove(&run->link);
        sc->nruns--;
        (void) munmap(run, NGX_IM_SLAB_RUN);
    }
}


/* lists of spares */

void *
ngx_im_spare_get(ngx_im_spares_t *sp)
{
    void  *p;

    p = sp->list;

    if (p) {
        sp->list = *(void **) p;
        sp->n--;
        return p;
    }

    return ngx_alloc(sp->size, ngx_cycle->log);
}


static ngx_im_spares_t  *ngx_im_spare_lists;


void
ngx_im_spare_put(ngx_im_spares_t *sp, void *p)
{
    if (sp->n >= sp->max) {
        ngx_free(p);
        return;
    }

    if (!sp->known) {
        sp->known = 1;
        sp->next = ngx_im_spare_lists;
        ngx_im_spare_lists = sp;
    }

    *(void **) p = sp->list;
    sp->list = p;
    sp->n++;
}


void
ngx_im_spare_drain(ngx_im_spares_t *sp)
{
    void  *p;

    while (sp->list) {
        p = sp->list;
        sp->list = *(void **) p;
        ngx_free(p);
    }

    sp->n = 0;
}


void
ngx_im_spare_drain_all(void)
{
    ngx_im_spares_t  *sp;

    for (sp = ngx_im_spare_lists; sp; sp = sp->next) {
        ngx_im_spare_drain(sp);
    }
}


/*
 * An ngx_event_t is 96 bytes, and an idle session needs none but its timer:
 * the re-push event exists while pushes await their acks, the close event
 * once the session closes, the WebSocket detach event until the login.
 * Spare ones are kept for reuse.
 */

static ngx_im_spares_t  ngx_im_spare_events =
    ngx_im_spares(ngx_event_t, 1024);


ngx_event_t *
ngx_im_event_alloc(ngx_event_handler_pt handler, void *data, ngx_log_t *log)
{
    ngx_event_t  *ev;

    ev = ngx_im_spare_get(&ngx_im_spare_events);
    if (ev == NULL) {
        return NULL;
    }

    ngx_memzero(ev, sizeof(ngx_event_t));

    ev->handler = handler;
    ev->data = data;
    ev->log = log;

    return ev;
}


void
ngx_im_event_free(ngx_event_t *ev)
{
    if (ev->timer_set) {
        ngx_del_timer(ev);
    }

    if (ev->posted) {
        ngx_delete_posted_event(ev);
    }

    ngx_im_spare_put(&ngx_im_spare_events, ev);
}


void
ngx_im_event_init(ngx_event_t *ev, ngx_event_handler_pt handler)
{
    static ngx_connection_t  dummy;

    dummy.fd = (ngx_socket_t) -1;

    ev->handler = handler;
    ev->data = &dummy;
    ev->log = ngx_cycle->log;
}


/*
 * The nursery.  A burst of logins needs as many auth subrequests in flight
 * as logins, and so, the first time, as many upstream connections to the
 * user centre; nginx gives each a 128-byte pool (ngx_http_upstream_connect)
 * that lives as long as the kept-alive connection.  Taken from malloc
 * between the handshakes' 4 KB request pools, one such pool followed each
 * request pool at the top of the heap: once the request pools were freed,
 * every 4 KB page of the burst still held a live pool, and malloc_trim()
 * could give none back.  Measured at 10,000 idle sessions (4 workers):
 * 66-79 pools per worker, pinning 168-236 KB of it: the largest part of
 * the heap's share of a session.
 *
 * So before an auth subrequest that is likely to open a new connection
 * (more in flight than ever since the last trim: the kept-alive ones are
 * all busy) the worker frees one block of that size from a reserve it
 * mallocs NGX_IM_NURSERY_BATCH at a time, side by side.  glibc's
 * per-thread cache hands the block freed last to the next malloc of its
 * size class, and nginx's posix_memalign(16, 128) is such a malloc: the
 * new connection's pool is that block, packed among the other pools in
 * the nursery's pages instead of one per page of the burst.  If the
 * subrequest reuses a kept-alive connection after all, some other short
 * malloc of that size takes the block and frees it later.  Another
 * allocator simply is not steered; nothing depends on it but the memory.
 */

#define NGX_IM_NURSERY_BATCH  64

static void        *ngx_im_nursery[NGX_IM_NURSERY_BATCH];
static ngx_uint_t   ngx_im_nursery_n;
static ngx_uint_t   ngx_im_nursery_high;    /* in flight, since the trim */


void
ngx_im_nursery_give(ngx_uint_t in_flight)
{
    ngx_uint_t  i;

    if (in_flight <= ngx_im_nursery_high) {
        return;
    }

    ngx_im_nursery_high = in_flight;

    if (ngx_im_nursery_n == 0) {
        for (i = 0; i < NGX_IM_NURSERY_BATCH; i++) {
            ngx_im_nursery[i] = ngx_alloc(NGX_IM_NURSERY_SIZE,
                                          ngx_cycle->log);
            if (ngx_im_nursery[i] == NULL) {
                break;
            }
        }

        ngx_im_nursery_n = i;

        if (i == 0) {
            return;
        }
    }

    ngx_free(ngx_im_nursery[--ngx_im_nursery_n]);
}


/*
 * A burst of logins leaves the heap holding the freed request pools of the
 * handshakes (some 10 KB per login in progress) between the sessions'
 * memory, and glibc returns such free pages only on malloc_trim().  Once
 * logins have paused for a second after at least NGX_IM_TRIM_BURST of
 * them, the worker lets every list of spares go and trims: 1.27 -> 1.10 KB
 * per idle session measured at 10,000.  A pass that flushed output to more
 * than NGX_IM_TRIM_BURST sessions counts as a burst as well: a fan-out to
 * 10,000 held a chunk per member, and the worker kept 10 MB more after it.
 * So does the end of a session: a storm of connections that never log in
 * frees its handshake pools only then (17 MB kept after 3,300, decision
 * 028).
 */

static ngx_event_t       ngx_im_trim_ev;
static ngx_uint_t        ngx_im_trim_count;   /* since the last trim */
static ngx_uint_t        ngx_im_trim_recent;  /* in the last second */


static void
ngx_im_trim_handler(ngx_event_t *ev)
{
    if (ngx_im_trim_recent) {
        ngx_im_trim_recent = 0;
        ngx_add_timer(ev, 1000);
        return;
    }

    if (ngx_im_trim_count >= NGX_IM_TRIM_BURST) {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                       "im alloc: trim after a burst of %ui",
                       ngx_im_trim_count);

        ngx_im_spare_drain_all();

        /* the next burst may find the kept-alive upstream connections
         * closed meanwhile: it gives the nursery's blocks again */
        ngx_im_nursery_high = 0;

#if (NGX_IM_HAVE_MALLOC_TRIM)
        (void) malloc_trim(0);
#endif
    }

    ngx_im_trim_count = 0;
}


void
ngx_im_trim_note(ngx_uint_t n)
{
    ngx_im_trim_count += n;
    ngx_im_trim_recent++;

    if (!ngx_im_trim_ev.timer_set) {
        ngx_im_event_init(&ngx_im_trim_ev, ngx_im_trim_handler);
        ngx_im_trim_ev.cancelable = 1;
        ngx_im_trim_recent = 0;
        ngx_add_timer(&ngx_im_trim_ev, 1000);
    }
}


/* references held by Redis callbacks (a login's claim, an inbox read) */

static ngx_im_spares_t  ngx_im_spare_refs = ngx_im_spares(ngx_im_ref_t, 1024);


ngx_im_ref_t *
ngx_im_ref_alloc(void *data)
{
    ngx_im_ref_t  *ref;

    ref = ngx_im_spare_get(&ngx_im_spare_refs);
    if (ref == NULL) {
        return NULL;
    }

    ref->data = data;

    return ref;
}


void
ngx_im_ref_free(ngx_im_ref_t *ref)
{
    ngx_im_spare_put(&ngx_im_spare_refs, ref);
}
