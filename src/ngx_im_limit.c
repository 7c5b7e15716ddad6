/*
 * ngx_im_limit.c: the message rate of each uid on this node.
 *
 * Owns the token buckets of im_msg_rate: an rbtree uid -> bucket in the
 * im_zone slab pool (the directory makes the zone and lends its pool),
 * under the pool's mutex, with the buckets in a queue from the most to the
 * least recently used.  A bucket counts, in thousandths of a message, how
 * far its uid is ahead of the rate, as nginx's limit_req does: a message
 * is taken while that excess stays within the burst, and refused, without
 * being counted, beyond it.  A bucket that has drained to nothing says no
 * more than a missing one: the least recently used go when new ones are
 * made, so the zone holds only the uids that sent lately.
 */

#include "ngx_im_limit.h"


typedef struct {
    ngx_rbtree_node_t      node;          /* key: uid */
    ngx_queue_t            queue;         /* the most recent first */
    uint32_t               last;          /* ngx_current_msec, truncated */
    uint32_t               excess;        /* thousandths of a message */
} ngx_im_limit_node_t;


typedef struct {
    ngx_rbtree_t           rbtree;
    ngx_rbtree_node_t      sentinel;
    ngx_queue_t            queue;
} ngx_im_limit_sh_t;


static ngx_slab_pool_t    *ngx_im_limit_pool;
static ngx_im_limit_sh_t  *ngx_im_limit_sh;


void *
ngx_im_limit_zone_init(ngx_slab_pool_t *shpool)
{
    ngx_im_limit_sh_t  *sh;

    sh = ngx_slab_alloc(shpool, sizeof(ngx_im_limit_sh_t));
    if (sh == NULL) {
        return NULL;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel, ngx_rbtree_insert_value);
    ngx_queue_init(&sh->queue);

    return sh;
}


void
ngx_im_limit_init_process(ngx_slab_pool_t *shpool, void *root)
{
    ngx_im_limit_pool = shpool;
    ngx_im_limit_sh = root;
}


void
ngx_im_limit_exit_process(void)
{
    ngx_im_limit_sh = NULL;
}


/* the excess of b now, drained at rate (thousandths per second) since
 * its last message, with add more; never below 0 */

static ngx_uint_t
ngx_im_limit_excess(ngx_im_limit_node_t *b, ngx_uint_t rate, uint32_t now,
    ngx_uint_t add)
{
    int32_t   ms;
    uint64_t  drain, have;

    /* the clock is monotonic: a negative difference is a bucket older
     * than 24 days, long drained */
    ms = (int32_t) (now - b->last);
    if (ms < 0) {
        return 0;
    }

    drain = (uint64_t) rate * (uint64_t) ms / 1000;
    have = (uint64_t) b->excess + add;

    return (drain >= have) ? 0 : (ngx_uint_t) (have - drain);
}


/* under the mutex: the least recently used buckets that have drained go;
 * with force the oldest goes anyway (no room for a new one) */

static void
ngx_im_limit_expire(ngx_uint_t rate, uint32_t now, ngx_uint_t force)
{
    ngx_uint_t            n;
    ngx_queue_t          *q;
    ngx_im_limit_node_t  *b;

    for (n = 0; n < 3; n++) {

        if (ngx_queue_empty(&ngx_im_limit_sh->queue)) {
            return;
        }

        q = ngx_queue_last(&ngx_im_limit_sh->queue);
        b = ngx_queue_data(q, ngx_im_limit_node_t, queue);

        if (!(force && n == 0) && ngx_im_limit_excess(b, rate, now, 0) != 0) {
            return;
        }

        ngx_queue_remove(q);
        ngx_rbtree_delete(&ngx_im_limit_sh->rbtree, &b->node);
        ngx_slab_free_locked(ngx_im_limit_pool, b);
    }
}


ngx_int_t
ngx_im_limit_message(uint32_t uid)
{
    uint32_t              now;
    ngx_int_t             rc;
    ngx_uint_t            excess;
    ngx_im_conf_t        *imcf;
    ngx_im_limit_node_t  *b;

    imcf = ngx_im_get_conf();

    if (imcf->msg_rate == 0 || ngx_im_limit_sh == NULL || uid == 0) {
        return NGX_OK;
    }

    now = (uint32_t) ngx_current_msec;
    rc = NGX_OK;

    ngx_shmtx_lock(&ngx_im_limit_pool->mutex);

    b = (ngx_im_limit_node_t *)
            ngx_im_rbtree_lookup(&ngx_im_limit_sh->rbtree, uid);

    if (b) {
        /* this message costs a whole one */
        excess = ngx_im_limit_excess(b, imcf->msg_rate, now, 1000);

        if (excess > imcf->msg_burst) {
            rc = NGX_BUSY;

        } else {
            b->excess = (uint32_t) excess;
            b->last = now;
            ngx_queue_remove(&b->queue);
            ngx_queue_insert_head(&ngx_im_limit_sh->queue, &b->queue);
        }

        goto done;
    }

    ngx_im_limit_expire(imcf->msg_rate, now, 0);

    b = ngx_slab_alloc_locked(ngx_im_limit_pool,
                              sizeof(ngx_im_limit_node_t));

    if (b == NULL) {
        ngx_im_limit_expire(imcf->msg_rate, now, 1);

        b = ngx_slab_alloc_locked(ngx_im_limit_pool,
                                  sizeof(ngx_im_limit_node_t));
        if (b == NULL) {
            /* the zone is full: the message goes unlimited rather than
             * refused for want of memory (the slab logged it) */
            goto done;
        }
    }

    b->node.key = uid;
    b->last = now;
    b->excess = 0;
    ngx_rbtree_insert(&ngx_im_limit_sh->rbtree, &b->node);
    ngx_queue_insert_head(&ngx_im_limit_sh->queue, &b->queue);

done:

    ngx_shmtx_unlock(&ngx_im_limit_pool->mutex);

    return rc;
}
