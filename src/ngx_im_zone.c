/*
 * ngx_im_zone.c: this node's directory and its workers' mail.
 *
 * Owns the im_zone shared memory (an rbtree uid -> pids of the workers
 * holding that uid, under the slab pool's mutex, which the master unlocks
 * when a worker dies holding it) and each worker's datagram socket.  The
 * zone survives a reload, so old and new workers keep finding each other;
 * a worker that died leaves pids behind, dropped the first time a message
 * to them bounces and swept whenever a worker starts.
 */

#include "ngx_im_zone.h"
#include "ngx_im_redis.h"

#include <sys/un.h>


#define NGX_IM_IPC_CHUNK  (64 * 1024)
#define NGX_IM_IPC_PEERS  64


/* datagrams to one peer, oldest first: records [Len:32][Uid:32][Data] */
typedef struct ngx_im_dgram_s  ngx_im_dgram_t;

struct ngx_im_dgram_s {
    ngx_im_dgram_t        *next;
    size_t                 len;
    size_t                 size;
    u_char                 data[1];
};


typedef struct {
    ngx_pid_t              pid;
    ngx_im_dgram_t        *head;
    ngx_im_dgram_t        *tail;
} ngx_im_peer_t;


typedef struct {
    ngx_rbtree_node_t      node;              /* key: uid */
    ngx_pid_t              pids[NGX_IM_DIR_PIDS];
} ngx_im_dirent_t;


/* how many entries name a pid: a worker alone in the directory need not
 * look a recipient up */
#define NGX_IM_DIR_HOLDERS  64

typedef struct {
    ngx_pid_t              pid;
    ngx_uint_t             entries;
} ngx_im_holder_t;


typedef struct {
    ngx_rbtree_t           rbtree;
    ngx_rbtree_node_t      sentinel;
    uint64_t               instance;
    ngx_uint_t             users;
    ngx_im_holder_t        holders[NGX_IM_DIR_HOLDERS];
    ngx_uint_t             uncounted;  /* a holder found no slot */
} ngx_im_shctx_t;


static ngx_int_t ngx_im_zone_init(ngx_shm_zone_t *shm_zone, void *data);
static void ngx_im_ipc_read_handler(ngx_event_t *ev);
static void ngx_im_dir_prune(ngx_uint_t (*gone)(ngx_pid_t pid));
static ngx_uint_t ngx_im_dir_dead(ngx_pid_t pid);
static ngx_uint_t ngx_im_dir_self(ngx_pid_t pid);
static void ngx_im_ipc_flush_handler(ngx_event_t *ev);


static ngx_shm_zone_t    *ngx_im_shm_zone;
static ngx_im_shctx_t    *ngx_im_sh;
static ngx_slab_pool_t   *ngx_im_shpool;
static ngx_connection_t  *ngx_im_ipc_conn;
static void             (*ngx_im_ipc_handler)(u_char *data, size_t len);
static u_char            *ngx_im_ipc_buf;
static size_t             ngx_im_ipc_buf_size;
static ngx_im_peer_t      ngx_im_peers[NGX_IM_IPC_PEERS];
static ngx_event_t        ngx_im_ipc_flush;
static ngx_connection_t   ngx_im_ipc_dummy;


char *
ngx_im_zone_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t       *value;
    ssize_t          size;
    ngx_shm_zone_t  *shm_zone;

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
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

    shm_zone->init = ngx_im_zone_init;
    shm_zone->data = (void *) 1;   /* set by init */

    ((ngx_im_conf_t *) conf)->zone = shm_zone;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_im_zone_init(ngx_shm_zone_t *shm_zone, void *data)
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

    ngx_rbtree_init(&ctx->rbtree, &ctx->sentinel, ngx_rbtree_insert_value);

    ctx->instance = ((uint64_t) ngx_random() << 33)
                    ^ ((uint64_t) ngx_random() << 11)
                    ^ (uint64_t) ngx_time() ^ (uint64_t) ngx_pid;
    ctx->users = 0;
    ngx_memzero(ctx->holders, sizeof(ctx->holders));
    ctx->uncounted = 0;

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


ngx_uint_t
ngx_im_zone_enabled(void)
{
    return ngx_im_sh != NULL;
}


uint64_t
ngx_im_zone_instance(void)
{
    return ngx_im_sh ? ngx_im_sh->instance : 0;
}


static socklen_t
ngx_im_ipc_addr(struct sockaddr_un *sun, ngx_pid_t pid)
{
    u_char  *p;

    ngx_memzero(sun, sizeof(struct sockaddr_un));
    sun->sun_family = AF_UNIX;

    /* abstract namespace: nothing on disk, gone with the process */
    p = (u_char *) sun->sun_path;
    *p++ = '\0';
    p = ngx_sprintf(p, "ngx_im.%016xL.%P", ngx_im_sh->instance, pid);

    return (socklen_t) (offsetof(struct sockaddr_un, sun_path)
                        + (p - (u_char *) sun->sun_path));
}


ngx_int_t
ngx_im_zone_init_process(ngx_cycle_t *cycle,
    void (*handler)(u_char *data, size_t len))
{
    int                  fd, size;
    socklen_t            len;
    ngx_im_conf_t       *imcf;
    ngx_connection_t    *c;
    struct sockaddr_un   sun;

    imcf = ngx_im_get_conf();

    if (imcf->zone == NULL) {
        return NGX_OK;
    }

    ngx_im_shm_zone = imcf->zone;
    ngx_im_sh = imcf->zone->data;
    ngx_im_shpool = (ngx_slab_pool_t *) imcf->zone->shm.addr;
    ngx_im_ipc_handler = handler;

    ngx_im_dir_prune(ngx_im_dir_dead);

    /* the largest datagram: a chunk, or one record of the largest message */
    ngx_im_ipc_buf_size = ngx_max(NGX_IM_IPC_CHUNK,
                                  imcf->max_message + 8 * 1024);

    ngx_im_ipc_buf = ngx_alloc(ngx_im_ipc_buf_size, cycle->log);
    if (ngx_im_ipc_buf == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(ngx_im_peers, sizeof(ngx_im_peers));

    ngx_im_ipc_dummy.fd = (ngx_socket_t) -1;
    ngx_im_ipc_flush.data = &ngx_im_ipc_dummy;
    ngx_im_ipc_flush.handler = ngx_im_ipc_flush_handler;
    ngx_im_ipc_flush.log = cycle->log;
    ngx_im_ipc_flush.cancelable = 1;

    fd = socket(AF_UNIX, SOCK_DGRAM|SOCK_NONBLOCK|SOCK_CLOEXEC, 0);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                      "im zone: socket() failed");
        return NGX_ERROR;
    }

    /* room for bursts between workers, and for large datagrams */
    size = 4 * 1024 * 1024;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(int))
        == -1)
    {
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(int));
    }

    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(int))
        == -1)
    {
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(int));
    }

    len = ngx_im_ipc_addr(&sun, ngx_pid);

    if (bind(fd, (struct sockaddr *) &sun, len) == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                      "im zone: bind() of the worker socket failed");
        (void) close(fd);
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        (void) close(fd);
        return NGX_ERROR;
    }

    c->read->handler = ngx_im_ipc_read_handler;
    c->read->log = cycle->log;
    c->write->log = cycle->log;
    c->data = NULL;

    /* not a client: graceful shutdown must not wait for it */
    c->read->channel = 1;

    ngx_im_ipc_conn = c;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_im_zone_exit_process(void)
{
    ngx_uint_t       i;
    ngx_im_dgram_t  *d;

    if (ngx_im_ipc_flush.timer_set) {
        ngx_del_timer(&ngx_im_ipc_flush);
    }

    if (ngx_im_ipc_flush.posted) {
        ngx_delete_posted_event(&ngx_im_ipc_flush);
    }

    for (i = 0; i < NGX_IM_IPC_PEERS; i++) {
        while (ngx_im_peers[i].head) {
            d = ngx_im_peers[i].head;
            ngx_im_peers[i].head = d->next;
            ngx_free(d);
        }
    }

    if (ngx_im_ipc_conn) {
        ngx_close_connection(ngx_im_ipc_conn);
        ngx_im_ipc_conn = NULL;
    }

    if (ngx_im_sh == NULL) {
        return;
    }

    /* whatever this worker still holds is not held any more */
    ngx_im_dir_prune(ngx_im_dir_self);

    ngx_im_sh = NULL;
}


static ngx_im_dirent_t *
ngx_im_dir_find(uint32_t uid)
{
    return (ngx_im_dirent_t *) ngx_im_rbtree_lookup(&ngx_im_sh->rbtree, uid);
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
    ngx_uint_t        i, used;
    ngx_im_dirent_t  *e;

    e = ngx_im_dir_find(uid);
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
        ngx_rbtree_delete(&ngx_im_sh->rbtree, &e->node);
        ngx_slab_free_locked(ngx_im_shpool, e);
        ngx_im_sh->users--;
    }
}


ngx_int_t
ngx_im_dir_add(uint32_t uid)
{
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
        e->node.key = uid;
        ngx_rbtree_insert(&ngx_im_sh->rbtree, &e->node);
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
    ngx_uint_t          i, used;
    ngx_im_dirent_t    *e;
    ngx_rbtree_node_t  *node, *next;

    ngx_shmtx_lock(&ngx_im_shpool->mutex);

    node = (ngx_im_sh->rbtree.root == ngx_im_sh->rbtree.sentinel) ? NULL
           : ngx_rbtree_min(ngx_im_sh->rbtree.root, ngx_im_sh->rbtree.sentinel);

    while (node) {
        next = ngx_rbtree_next(&ngx_im_sh->rbtree, node);
        e = (ngx_im_dirent_t *) node;

        used = 0;

        for (i = 0; i < NGX_IM_DIR_PIDS; i++) {
            if (e->pids[i] && gone(e->pids[i])) {
                ngx_im_dir_count(e->pids[i], -1);
                e->pids[i] = 0;
            }
            used += (e->pids[i] != 0);
        }

        if (used == 0) {
            ngx_rbtree_delete(&ngx_im_sh->rbtree, node);
            ngx_slab_free_locked(ngx_im_shpool, node);
            ngx_im_sh->users--;
        }

        node = next;
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


/*
 * Mail.  Records for one peer are queued in order and leave as few
 * datagrams as possible at the end of the event loop pass; a peer whose
 * queue is full is tried again a millisecond later, and what comes for it
 * meanwhile waits behind, so nothing overtakes.
 */

ngx_int_t
ngx_im_ipc_send(ngx_pid_t pid, uint32_t uid, u_char *data, size_t len)
{
    u_char          *p;
    size_t           need;
    ngx_uint_t       i;
    ngx_im_peer_t   *peer, *free;
    ngx_im_dgram_t  *d;

    if (ngx_im_ipc_conn == NULL) {
        return NGX_AGAIN;
    }

    need = 8 + len;

    if (need > ngx_im_ipc_buf_size) {
        return NGX_AGAIN;
    }

    peer = NULL;
    free = NULL;

    for (i = 0; i < NGX_IM_IPC_PEERS; i++) {
        if (ngx_im_peers[i].pid == pid) {
            peer = &ngx_im_peers[i];
            break;
        }

        if (free == NULL && ngx_im_peers[i].pid == 0) {
            free = &ngx_im_peers[i];
        }
    }

    if (peer == NULL) {
        if (free == NULL) {
            /* more peers than slots: Redis carries it */
            return NGX_AGAIN;
        }

        peer = free;
        peer->pid = pid;
    }

    d = peer->tail;

    if (d == NULL || d->size - d->len < need) {
        d = ngx_alloc(offsetof(ngx_im_dgram_t, data)
                      + ngx_max(NGX_IM_IPC_CHUNK, need), ngx_cycle->log);
        if (d == NULL) {
            return NGX_AGAIN;
        }

        d->next = NULL;
        d->len = 0;
        d->size = ngx_max(NGX_IM_IPC_CHUNK, need);

        if (peer->tail) {
            peer->tail->next = d;

        } else {
            peer->head = d;
        }

        peer->tail = d;
    }

    p = d->data + d->len;
    p = im_put_u32(p, (uint32_t) len);
    p = im_put_u32(p, uid);
    ngx_memcpy(p, data, len);
    d->len += need;

    if (!ngx_im_ipc_flush.posted && !ngx_im_ipc_flush.timer_set) {
        ngx_post_event(&ngx_im_ipc_flush, &ngx_posted_events);
    }

    return NGX_OK;
}


static void
ngx_im_ipc_flush_handler(ngx_event_t *ev)
{
    ssize_t              n;
    ngx_err_t            err;
    ngx_uint_t           i, again;
    ngx_im_peer_t       *peer;
    ngx_im_dgram_t      *d;
    struct sockaddr_un   sun;
    socklen_t            len;

    again = 0;

    /* the inbox appends of these messages reach Redis first, so that a
     * recipient's ack (and its removal from the inbox) cannot overtake
     * them */
    ngx_im_redis_flush();

    for (i = 0; i < NGX_IM_IPC_PEERS; i++) {
        peer = &ngx_im_peers[i];

        if (peer->pid == 0) {
            continue;
        }

        len = ngx_im_ipc_addr(&sun, peer->pid);

        while (peer->head) {
            d = peer->head;

            n = sendto(ngx_im_ipc_conn->fd, d->data, d->len,
                       MSG_DONTWAIT|MSG_NOSIGNAL, (struct sockaddr *) &sun,
                       len);

            if (n == -1) {
                err = ngx_socket_errno;

                if (err == NGX_EAGAIN || err == ENOBUFS) {
                    again = 1;
                    break;
                }

                if (err == ECONNREFUSED || err == ENOENT) {
                    /* that worker is gone: its sessions with it */
                    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                                  "im zone: worker %P is gone", peer->pid);
                    ngx_im_dir_prune(ngx_im_dir_dead);

                } else {
                    ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, err,
                                  "im zone: sendto() to worker %P failed",
                                  peer->pid);
                }

                /* drop what was for it */
                while (peer->head) {
                    d = peer->head;
                    peer->head = d->next;
                    ngx_free(d);
                }

                break;
            }

            peer->head = d->next;
            ngx_free(d);
        }

        if (peer->head == NULL) {
            peer->tail = NULL;
            peer->pid = 0;
        }
    }

    if (again) {
        ngx_add_timer(ev, 1);
    }
}


static void
ngx_im_ipc_read_handler(ngx_event_t *ev)
{
    u_char            *p, *last;
    size_t             len;
    ssize_t            n;
    ngx_uint_t         i;
    ngx_connection_t  *c = ev->data;

    if (c->close) {
        return;
    }

    for (i = 0; i < 1024; i++) {
        n = recv(c->fd, ngx_im_ipc_buf, ngx_im_ipc_buf_size, MSG_DONTWAIT);

        if (n == -1) {
            if (ngx_socket_errno != NGX_EAGAIN) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, ngx_socket_errno,
                              "im zone: recv() failed");
            }

            ev->ready = 0;
            (void) ngx_handle_read_event(ev, 0);
            return;
        }

        p = ngx_im_ipc_buf;
        last = p + n;

        while (last - p >= 8) {
            len = im_get_u32(p);

            if ((size_t) (last - p - 8) < len) {
                break;
            }

            /* the handler gets [Uid:32][Data] */
            ngx_im_ipc_handler(p + 4, 4 + len);
            p += 8 + len;
        }
    }

    /* more may wait: come back after the others had their turn */
    ngx_post_event(ev, &ngx_posted_events);
}
