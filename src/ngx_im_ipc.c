/*
 * ngx_im_ipc.c: mail between the workers of one node.
 *
 * Owns each worker's datagram socket in the abstract namespace, named after
 * the zone's instance and the worker's pid, and the queues of records for
 * each sibling.  Records for one sibling are queued in order and leave as
 * few datagrams as possible at the end of the event loop pass.  What a
 * record means is the router's business; the order rule across Redis and
 * mail is too, through the before-flush hook.
 */

#include "ngx_im_ipc.h"
#include "ngx_im_dir.h"

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


static void ngx_im_ipc_read_handler(ngx_event_t *ev);
static void ngx_im_ipc_flush_handler(ngx_event_t *ev);


static ngx_connection_t  *ngx_im_ipc_conn;
static ngx_im_ipc_handler_pt  ngx_im_ipc_handler;
static void             (*ngx_im_ipc_before_flush)(void);
static u_char            *ngx_im_ipc_buf;
static size_t             ngx_im_ipc_buf_size;
static ngx_im_peer_t      ngx_im_peers[NGX_IM_IPC_PEERS];
static ngx_event_t        ngx_im_ipc_flush;
static ngx_connection_t   ngx_im_ipc_dummy;


static socklen_t
ngx_im_ipc_addr(struct sockaddr_un *sun, ngx_pid_t pid)
{
    u_char  *p;

    ngx_memzero(sun, sizeof(struct sockaddr_un));
    sun->sun_family = AF_UNIX;

    /* abstract namespace: nothing on disk, gone with the process */
    p = (u_char *) sun->sun_path;
    *p++ = '\0';
    p = ngx_sprintf(p, "ngx_im.%016xL.%P", ngx_im_dir_instance(), pid);

    return (socklen_t) (offsetof(struct sockaddr_un, sun_path)
                        + (p - (u_char *) sun->sun_path));
}


/*
 * before_flush runs before the queued datagrams leave: the router writes
 * out its Redis connection there, so that the inbox appends of these
 * messages reach Redis first and a recipient's ack (and its removal from
 * the inbox) cannot overtake them.
 */

ngx_int_t
ngx_im_ipc_init_process(ngx_cycle_t *cycle, ngx_im_ipc_handler_pt handler,
    void (*before_flush)(void))
{
    int                  fd, size;
    socklen_t            len;
    ngx_im_conf_t       *imcf;
    ngx_connection_t    *c;
    struct sockaddr_un   sun;

    if (!ngx_im_dir_enabled()) {
        return NGX_OK;
    }

    imcf = ngx_im_get_conf();

    ngx_im_ipc_handler = handler;
    ngx_im_ipc_before_flush = before_flush;

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
ngx_im_ipc_exit_process(void)
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
}


/*
 * Records for one peer are queued in order and leave as few
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

    if (ngx_im_ipc_before_flush) {
        /* the router's ordering rule: see ngx_im_ipc_init_process() */
        ngx_im_ipc_before_flush();
    }

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
                    ngx_im_dir_forget_dead();

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
