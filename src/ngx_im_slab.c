/*
 * ngx_im_slab.c: the worker's store for objects that live as long as a
 * session (the WebSocket block, the per-uid record).
 *
 * Sessions are made in login bursts, while each handshake also holds an
 * HTTP request, an auth subrequest, an upstream connection and their
 * pools, all of them freed a few milliseconds later.  Taken from malloc,
 * the long-lived objects land between those short-lived blocks; once the
 * burst is over the heap is a lace of small live objects and free gaps,
 * and the pages under the gaps stay resident because no gap covers a
 * whole page.  Measured at 10,000 idle sessions that was about 300 bytes
 * per session on top of the objects themselves.
 *
 * Objects from here live in their own 64 KB runs of pages, one size per
 * run, packed and reused through a free list; a run that empties goes back
 * to the kernel (one empty run per size is kept against churn).  A run is
 * found from any of its objects by alignment, so an object carries no
 * header.  Worker-local, no locking.
 */

#include "ngx_im.h"

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
