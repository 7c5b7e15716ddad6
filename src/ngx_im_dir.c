/*
 * ngx_im_dir.c: this node's directory of who holds which uid.
 *
 * Owns the im_zone shared memory (and lends its slab pool to the message
 * rate buckets of ngx_im_limit.c): a hash uid -> pids of the workers of
 * this node holding a session of that uid, under the slab pool's mutex
 * (which the master unlocks when a worker dies holding it), and per pid a
 * count of the entries naming it, so that a worker alone in the directory
 * need not look recipients up.  The zone survives a reload, so old and new
 * workers keep finding each other; a worker that died leaves pids behind,
 * dropped the first time mail to it bounces and swept whenever a worker
 * starts.
 *
 * An entry is 32 bytes, a slot of nginx's slab with nothing wasted: the
 * uid, the next entry of its bucket as a 32-bit offset in the zone, and
 * the pids.  An rbtree node alone was 40 bytes and its entry took a
 * 64-byte slot (decision 053).  The bucket array (32-bit offsets too)
 * doubles whenever there are more entries than buckets, moving every
 * entry under the mutex at once (7.5 ms at 200,000, 52 ms at a million,
 * once); it never shrinks.  Nothing needs the uids in order.
 */

#include "ngx_im_dir.h"
#include "ngx_im_limit.h"


/* how many entries name a pid: a worker alone in the directory need not
 * look a recipient up */
#define NGX_IM_DIR_HOLDERS  64

/* the first bucket array: a page */
#define NGX_IM_DIR_BUCKETS  1024

/* entries are 32-byte slots of the slab, aligned to their size: an
 * offset in the zone in 32-byte units fits 32 bits for any zone up to
 * 128 GB; 0 (the slab pool's own header) is no entry */
#define NGX_IM_DIR_UNIT  5


typedef struct {
    uint32_t               uid;
    uint32_t               next;               /* in its bucket; 0: none */
    ngx_pid_t              pids[NGX_IM_DIR_PIDS];
} ngx_im_dirent_t;


typedef struct {
    ngx_pid_t              pid;
    ngx_uint_t             entries;
} ngx_im_holder_t;


typedef struct {
    uint32_t              *buckets;    /* entries' offsets */
    ngx_uint_t             nbuckets;   /* a power of two */
    uint64_t               instance;
    ngx_uint_t             users;
    ngx_im_holder_t        holders[NGX_IM_DIR_HOLDERS];
    ngx_uint_t             uncounted;  /* a holder found no slot */
    void                  *limit;      /* ngx_im_limit's buckets */
} ngx_im_shctx_t;


static ngx_int_t ngx_im_dir_zone_init(ngx_shm_zone_t *shm_zone, void *data);
static void ngx_im_dir_prune(ngx_uint_t (*gone)(ngx_pid_t pid));
static ngx_uint_t ngx_im_dir_dead(ngx_pid_t pid);
static ngx_uint_t ngx_im_dir_self(ngx_pid_t pid);


static ngx_shm_zone_t    *ngx_im_shm_zone;
static ngx_im_shctx_t    *ngx_im_sh;
static ngx_slab_pool_t   *ngx_im_shpool;


char *
ngx_im_dir_zone_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t       *value;
    ssize_t          size;
    ngx_shm_zone_t  *shm_zone;

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)
        || (uint64_t) size >> (32 + NGX_IM_DIR_UNIT))
    {
        /* entries' offsets are 32 bits (of 32-byte units): 128 GB */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid im_zone size \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    shm_zone = ngx_shared_memory_add(cf, &value[1], size, &ngx_im_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        return "is duplicate";
    }

    shm_zone->init = ngx_im_dir_zone_init;
    shm_zone->data = (void *) 1;   /* set by init */

    ((ngx_im_conf_t *) conf)->zone = shm_zone;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_im_dir_zone_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_im_shctx_t   *octx = data;

    size_t            len;
    ngx_im_shctx_t   *ctx;
    ngx_slab_pool_t  *shpool;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (octx && octx != (void *) 1) {
        /* reload: the workers of both generations share the directory */
        shm_zone->data = octx;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    ctx = ngx_slab_alloc(shpool, sizeof(ngx_im_shctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->buckets = ngx_slab_calloc(shpool,
                                   NGX_IM_DIR_BUCKETS * sizeof(uint32_t));
    if (ctx->buckets == NULL) {
        return NGX_ERROR;
    }

    ctx->nbuckets = NGX_IM_DIR_BUCKETS;

    ctx->instance = ((uint64_t) ngx_random() << 33)
                    ^ ((uint64_t) ngx_random() << 11)
                    ^ (uint64_t) ngx_time() ^ (uint64_t) ngx_pid;
    ctx->users = 0;
    ngx_memzero(ctx->holders, sizeof(ctx->holders));
    ctx->uncounted = 0;

    ctx->limit = ngx_im_limit_zone_init(shpool);
    if (ctx->limit == NULL) {
        return NGX_ERROR;
    }

    shpool->data = ctx;
    shm_zone->data = ctx;

    len = sizeof(" in im_zone \"\"") + shm_zone->shm.name.len;

    shpool->log_ctx = ngx_slab_alloc(shpool, len);
    if (shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(shpool->log_ctx, " in im_zone \"%V\"%Z",
                &shm_zone->shm.name);

    return NGX_OK;
}


ngx_int_t
ngx_im_dir_init_process(ngx_cycle_t *cycle)
{
    ngx_im_conf_t  *imcf;

    imcf = ngx_im_get_conf();

    if (imcf->zone == NULL) {
        return NGX_OK;
    }

    ngx_im_shm_zone = imcf->zone;
    ngx_im_sh = imcf->zone->data;
    ngx_im_shpool = (ngx_slab_pool_t *) imcf->zone->shm.addr;

    ngx_im_limit_init_process(ngx_im_shpool, ngx_im_sh->limit);

    ngx_im_dir_prune(ngx_im_dir_dead);

    return NGX_OK;
}


void
ngx_im_dir_exit_process(void)
{
    if (ngx_im_sh == NULL) {
        return;
    }

    /* whatever this worker still holds is not held any more */
    ngx_im_dir_prune(ngx_im_dir_self);

    ngx_im_limit_exit_process();
    ngx_im_sh = NULL;
}


ngx_uint_t
ngx_im_dir_enabled(void)
{
    return ngx_im_sh != NULL;
}


uint64_t
ngx_im_dir_instance(void)
{
    return ngx_im_sh ? ngx_im_sh->instance : 0;
}


#define ngx_im_dir_ent(off)                                                   \
    ((ngx_im_dirent_t *) ((u_char *) ngx_im_shpool                            \
                          + ((size_t) (off) << NGX_IM_DIR_UNIT)))
#define ngx_im_dir_off(e)                                                     \
    ((uint32_t) (((u_char *) (e) - (u_char *) ngx_im_shpool)                  \
                 >> NGX_IM_DIR_UNIT))


static ngx_inline ngx_uint_t
ngx_im_dir_bucket(uint32_t uid, ngx_uint_t nbuckets)
{
    uint32_t  h;

    /* uids in a row or with a common stride spread over all buckets: a
     * multiplication by an odd constant, its better mixed top half folded
     * onto the bottom one that the mask keeps */
    h = uid * 2654435769U;
    h ^= h >> 16;

    return h & (nbuckets - 1);
}


/* under the mutex: the entry of uid, and where the link to it is */

static ngx_im_dirent_t *
ngx_im_dir_find_link(uint32_t uid, uint32_t **link)
{
    uint32_t         *l;
    ngx_im_dirent_t  *e;

    l = &ngx_im_sh->buckets[ngx_im_dir_bucket(uid, ngx_im_sh->nbuckets)];

    while (*l) {
        e = ngx_im_dir_ent(*l);

        if (e->uid == uid) {
            if (link) {
                *link = l;
            }

            return e;
        }

        l = &e->next;
    }

    return NULL;
}


static ngx_im_dirent_t *
ngx_im_dir_find(uint32_t uid)
{
    return ngx_im_dir_find_link(uid, NULL);
}


/* under the mutex: twice the buckets once entries outnumber them; without
 * memory for it the chains just grow longer */

static void
ngx_im_dir_grow(void)
{
    uint32_t         *buckets, off, next;
    ngx_uint_t        i, n, b;
    ngx_im_dirent_t  *e;

    n = ngx_im_sh->nbuckets * 2;

    if (n > 0x80000000) {
        return;
    }

    buckets = ngx_slab_calloc_locked(ngx_im_shpool, n * sizeof(uint32_t));
    if (buckets == NULL) {
        return;
    }

    for (i = 0; i < ngx_im_sh->nbuckets; i++) {
        for (off = ngx_im_sh->buckets[i]; off; off = next) {
            e = ngx_im_dir_ent(off);
            next = e->next;
            b = ngx_im_dir_bucket(e->uid, n);
            e->next = buckets[b];
            buckets[b] = off;
        }
    }

    ngx_slab_free_locked(ngx_im_shpool, ngx_im_sh->buckets);

    ngx_im_sh->buckets = buckets;
    ngx_im_sh->nbuckets = n;
}


/* under the mutex: unlink e (link points at the link to it) and free it */

static void
ngx_im_dir_free(ngx_im_dirent_t *e, uint32_t *link)
{
    *link = e->next;
    ngx_slab_free_locked(ngx_im_shpool, e);
    ngx_im_sh->users--;
}


/* under the mutex: an entry names pid from now on (1) or no more (-1) */

static void
ngx_im_dir_count(ngx_pid_t pid, ngx_int_t delta)
{
    ngx_uint_t        i;
    ngx_im_holder_t  *h, *free;

    free = NULL;

    for (i = 0; i < NGX_IM_DIR_HOLDERS; i++) {
        h = &ngx_im_sh->holders[i];

        if (h->pid == pid) {
            h->entries += delta;

            if (h->entries == 0) {
                h->pid = 0;
            }

            return;
        }

        if (free == NULL && h->pid == 0) {
            free = h;
        }
    }

    if (delta < 0) {
        /* counted nowhere: it was uncounted */
        return;
    }

    if (free == NULL) {
        /* more holders than slots, for the zone's life: every worker
         * looks every recipient up, as if never alone */
        ngx_im_sh->uncounted = 1;
        return;
    }

    free->pid = pid;
    free->entries = 1;
}


static void
ngx_im_dir_remove_pid(uint32_t uid, ngx_pid_t pid)
{
    uint32_t         *link;
    ngx_uint_t        i, used;
    ngx_im_dirent_t  *e;

    e = ngx_im_dir_find_link(uid, &link);
    if (e == NULL) {
        return;
    }

    used = 0;

    for (i = 0; i < NGX_IM_DIR_PIDS; i++) {
        if (e->pids[i] == pid) {
            e->pids[i] = 0;
            ngx_im_dir_count(pid, -1);
        }
        used += (e->pids[i] != 0);
    }

    if (used == 0) {
        ngx_im_dir_free(e, link);
    }
}


ngx_int_t
ngx_im_dir_add(uint32_t uid)
{
    uint32_t         *bucket;
    ngx_uint_t        i;
    ngx_im_dirent_t  *e;

    if (ngx_im_sh == NULL) {
        return NGX_OK;
    }

    ngx_shmtx_lock(&ngx_im_shpool->mutex);

    e = ngx_im_dir_find(uid);

    if (e == NULL) {
        e = ngx_slab_alloc_locked(ngx_im_shpool, sizeof(ngx_im_dirent_t));
        if (e == NULL) {
            ngx_shmtx_unlock(&ngx_im_shpool->mutex);
            ngx_log_error(NGX_LOG_CRIT, ngx_cycle->log, 0,
                          "im zone \"%V\" is full: login of uid %uD refused",
                          &ngx_im_shm_zone->shm.name, uid);
            return NGX_DECLINED;
        }

        ngx_memzero(e, sizeof(ngx_im_dirent_t));
        e->uid = uid;

        if (ngx_im_sh->users >= ngx_im_sh->nbuckets) {
            ngx_im_dir_grow();
        }

        bucket = &ngx_im_sh->buckets[ngx_im_dir_bucket(uid,
                                                       ngx_im_sh->nbuckets)];
        e->next = *bucket;
        *bucket = ngx_im_dir_off(e);
        ngx_im_sh->users++;
    }

    for (i = 0; i < NGX_IM_DIR_PIDS; i++) {
        if (e->pids[i] == ngx_pid) {
            break;
        }
    }

    if (i == NGX_IM_DIR_PIDS) {
        for (i = 0; i < NGX_IM_DIR_PIDS; i++) {
            if (e->pids[i] == 0) {
                e->pids[i] = ngx_pid;
                ngx_im_dir_count(ngx_pid, 1);
                break;
            }
        }
    }

    /* more workers than slots: peers learn of it through Redis */

    ngx_shmtx_unlock(&ngx_im_shpool->mutex);

    return NGX_OK;
}


void
ngx_im_dir_del(uint32_t uid)
{
    if (ngx_im_sh == NULL) {
        return;
    }

    ngx_shmtx_lock(&ngx_im_shpool->mutex);
    ngx_im_dir_remove_pid(uid, ngx_pid);
    ngx_shmtx_unlock(&ngx_im_shpool->mutex);
}


ngx_uint_t
ngx_im_dir_peers(uint32_t uid, ngx_pid_t *pids)
{
    ngx_uint_t        i, n;
    ngx_im_dirent_t  *e;

    if (ngx_im_sh == NULL) {
        return 0;
    }

    n = 0;

    ngx_shmtx_lock(&ngx_im_shpool->mutex);

    e = ngx_im_dir_find(uid);

    if (e) {
        for (i = 0; i < NGX_IM_DIR_PIDS; i++) {
            if (e->pids[i] && e->pids[i] != ngx_pid) {
                pids[n++] = e->pids[i];
            }
        }
    }

    ngx_shmtx_unlock(&ngx_im_shpool->mutex);

    return n;
}


ngx_uint_t
ngx_im_dir_alone(void)
{
    ngx_uint_t  i, alone;

    if (ngx_im_sh == NULL) {
        return 1;
    }

    ngx_shmtx_lock(&ngx_im_shpool->mutex);

    alone = !ngx_im_sh->uncounted;

    for (i = 0; alone && i < NGX_IM_DIR_HOLDERS; i++) {
        if (ngx_im_sh->holders[i].pid != 0
            && ngx_im_sh->holders[i].pid != ngx_pid)
        {
            alone = 0;
        }
    }

    ngx_shmtx_unlock(&ngx_im_shpool->mutex);

    return alone;
}


ngx_uint_t
ngx_im_dir_users(void)
{
    return ngx_im_sh ? ngx_im_sh->users : 0;
}


/* drop from every entry the pids that gone() names */

static void
ngx_im_dir_prune(ngx_uint_t (*gone)(ngx_pid_t pid))
{
    uint32_t         *link;
    ngx_uint_t        b, i, used;
    ngx_im_dirent_t  *e;

    ngx_shmtx_lock(&ngx_im_shpool->mutex);

    for (b = 0; b < ngx_im_sh->nbuckets; b++) {
        link = &ngx_im_sh->buckets[b];

        while (*link) {
            e = ngx_im_dir_ent(*link);

            used = 0;

            for (i = 0; i < NGX_IM_DIR_PIDS; i++) {
                if (e->pids[i] && gone(e->pids[i])) {
                    ngx_im_dir_count(e->pids[i], -1);
                    e->pids[i] = 0;
                }
                used += (e->pids[i] != 0);
            }

            if (used == 0) {
                ngx_im_dir_free(e, link);

            } else {
                link = &e->next;
            }
        }
    }

    ngx_shmtx_unlock(&ngx_im_shpool->mutex);
}


static ngx_uint_t
ngx_im_dir_dead(ngx_pid_t pid)
{
    /* killed or crashed workers */
    return kill(pid, 0) == -1 && ngx_errno == NGX_ESRCH;
}


static ngx_uint_t
ngx_im_dir_self(ngx_pid_t pid)
{
    return pid == ngx_pid;
}


/* mail to a worker bounced: it is gone, and so are its sessions */

void
ngx_im_dir_forget_dead(void)
{
    if (ngx_im_sh) {
        ngx_im_dir_prune(ngx_im_dir_dead);
    }
}
