/*
 * ngx_im_direct.c: 1:1 messages delivered without Redis while it is away.
 *
 * Owns the deliveries waiting for their recipient's ack (a tree by token)
 * and their deadline: the re-push budget, im_repush_interval times
 * (im_repush_max + 1), after which a session that did not ack has been
 * closed (unless a busy worker spared it, decision 042), plus one
 * interval for the ack to come back from a sibling.  A
 * refusal after the push is a possible duplicate: the recipient may have
 * the message, and the sender sends it again with the same MsgId
 * (docs/GUIDE.md 2).  Rare by design: only while appends fail.
 */

#include "ngx_im_direct.h"
#include "ngx_im_dir.h"
#include "ngx_im_timer.h"
#include "ngx_im_traffic.h"


typedef struct {
    ngx_rbtree_node_t      node;        /* key: the token */
    ngx_im_timer_t         timer;
    ngx_im_ticket_t       *ticket;
} ngx_im_direct_t;


static void ngx_im_direct_expired(ngx_im_timer_t *tm);


/* the tree's key: the token's count, without the bit that marks it */
#define ngx_im_direct_key(token)                                              \
    ((ngx_rbtree_key_t) ((token) & ~NGX_IM_WATCH_DIRECT))


static ngx_rbtree_t       ngx_im_direct_tree;
static ngx_rbtree_node_t  ngx_im_direct_sentinel;
static uint64_t           ngx_im_direct_last;


static ngx_msec_t
ngx_im_direct_budget(void)
{
    ngx_im_conf_t  *imcf;

    imcf = ngx_im_get_conf();

    return imcf->repush_interval * (imcf->repush_max + 2);
}


/* a copy of msg whose acks come back here: nothing of the original is
 * shared, so the copy's header may differ (form 3 instead of 1 or 2) */

static ngx_im_msg_t *
ngx_im_direct_copy(ngx_im_msg_t *msg, uint64_t token)
{
    ngx_im_msg_t  *w;

    w = ngx_im_msg_alloc(NGX_IM_ENTRY_HDR_V3(ngx_im_worker_id.len),
                         msg->push_len);
    if (w == NULL) {
        return NULL;
    }

    ngx_memcpy(w->push, msg->push, msg->push_len);
    w->from = msg->from;
    w->accepted = msg->accepted;

    ngx_im_msg_watch(w, &ngx_im_worker_id, token);
    ngx_im_msg_finish(w, msg->expire);

    return w;
}


ngx_int_t
ngx_im_direct_deliver(uint32_t uid, ngx_im_msg_t *msg, ngx_im_ticket_t *t)
{
    u_char           *rec;
    size_t            len;
    uint64_t          token;
    ngx_int_t         rc;
    ngx_uint_t        taken, peers;
    ngx_pid_t         pids[NGX_IM_DIR_PIDS];
    ngx_queue_t      *q;
    ngx_im_msg_t     *w;
    ngx_im_user_t    *u;
    ngx_im_route_t   *r;
    ngx_im_direct_t  *d;

    if (msg->watch || ngx_im_worker_id.len > NGX_IM_WATCH_MAX) {
        return NGX_DECLINED;
    }

    u = ngx_im_table_find(uid);
    peers = ngx_im_dir_alone() ? 0 : ngx_im_dir_peers(uid, pids);

    if ((u == NULL || u->nsessions == 0) && peers == 0) {
        return NGX_DECLINED;
    }

    if (ngx_im_direct_tree.root == NULL) {
        ngx_rbtree_init(&ngx_im_direct_tree, &ngx_im_direct_sentinel,
                        ngx_rbtree_insert_value);
    }

    d = ngx_alloc(sizeof(ngx_im_direct_t), ngx_cycle->log);
    if (d == NULL) {
        return NGX_DECLINED;
    }

    token = NGX_IM_WATCH_DIRECT | ++ngx_im_direct_last;

    w = ngx_im_direct_copy(msg, token);
    if (w == NULL) {
        ngx_free(d);
        return NGX_DECLINED;
    }

    /* in the worker's order with the rest (ngx_im_delivery_push) */
    w->seq = msg->seq;
    w->origin = msg->origin;

    taken = 0;

    if (u) {
        for (q = ngx_queue_head(&u->sessions);
             q != ngx_queue_sentinel(&u->sessions);
             q = ngx_queue_next(q))
        {
            r = ngx_queue_data(q, ngx_im_route_t, link);

            if (ngx_im_table_ops()->push(r, w, 0) == NGX_OK) {
                taken++;
            }
        }
    }

    if (peers) {
        len = IM_TRAFFIC_D_LEN(ngx_im_worker_id.len, w->entry_len);
        rec = ngx_alloc(len, ngx_cycle->log);

        if (rec) {
            (void) im_traffic_build_d(rec, ngx_im_worker_id.data,
                                      ngx_im_worker_id.len, 0,
                                      w->seq, w->entry, w->entry_len);

            rc = ngx_im_table_peers(uid, rec, len);

            /* NGX_AGAIN: some sibling had it, another one may not */
            if (rc != NGX_DECLINED) {
                taken++;
            }

            ngx_free(rec);
        }
    }

    ngx_im_msg_unref(w);

    if (taken == 0) {
        ngx_free(d);
        return NGX_DECLINED;
    }

    d->node.key = ngx_im_direct_key(token);
    d->ticket = t;
    d->timer.link.next = NULL;

    ngx_rbtree_insert(&ngx_im_direct_tree, &d->node);
    ngx_im_timer_add(&d->timer, ngx_im_direct_budget(),
                     ngx_im_direct_expired);

    ngx_im_stats->direct++;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "im direct: uid %uD, %ui takers, waiting for an ack",
                   uid, taken);

    return NGX_OK;
}


static ngx_im_direct_t *
ngx_im_direct_find(uint64_t token)
{
    ngx_rbtree_key_t    key;
    ngx_rbtree_node_t  *node, *sentinel;

    if (ngx_im_direct_tree.root == NULL) {
        return NULL;
    }

    key = ngx_im_direct_key(token);
    node = ngx_im_direct_tree.root;
    sentinel = ngx_im_direct_tree.sentinel;

    while (node != sentinel) {
        if (key == node->key) {
            return (ngx_im_direct_t *) node;
        }

        node = (key < node->key) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_im_direct_done(ngx_im_direct_t *d, ngx_uint_t ok)
{
    ngx_im_ticket_t  *t;

    t = d->ticket;

    ngx_rbtree_delete(&ngx_im_direct_tree, &d->node);

    if (ngx_im_timer_set(&d->timer)) {
        ngx_im_timer_del(&d->timer);
    }

    ngx_free(d);

    ngx_im_ticket_served(t, ok);
}


void
ngx_im_direct_acked(uint64_t token)
{
    ngx_im_direct_t  *d;

    /* the first ack serves it; the acks of the other sessions find
     * nothing */

    d = ngx_im_direct_find(token);
    if (d) {
        ngx_im_direct_done(d, 1);
    }
}


static void
ngx_im_direct_expired(ngx_im_timer_t *tm)
{
    ngx_im_direct_t  *d;

    d = (ngx_im_direct_t *) ((u_char *) tm
                             - offsetof(ngx_im_direct_t, timer));

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "im direct: a message delivered without Redis was not "
                  "acked in %M ms: refused", ngx_im_direct_budget());

    ngx_im_stats->direct_refused++;

    ngx_im_direct_done(d, 0);
}
