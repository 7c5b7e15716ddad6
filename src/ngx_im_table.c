/*
 * ngx_im_table.c: the worker's table of the uids it holds.
 *
 * Owns the rbtree uid -> ngx_im_user_t (made with the first session of a
 * uid here, dropped by the router once its subscription is undone), the
 * join sequence and the stamps, the session layer's operations, and the
 * two ways a record leaves this worker: a PUBLISH on the uid's channel and
 * mail to the sibling workers that the directory names.
 */

#include "ngx_im_table.h"
#include "ngx_im_redis.h"
#include "ngx_im_dir.h"
#include "ngx_im_ipc.h"


static ngx_rbtree_t            ngx_im_users;
static ngx_rbtree_node_t       ngx_im_users_sentinel;
static ngx_uint_t              ngx_im_nusers;
static uint64_t                ngx_im_seq;
static uint32_t                ngx_im_stamp;
static ngx_im_router_ops_t    *ngx_im_ops;


void
ngx_im_table_init(ngx_im_router_ops_t *ops)
{
    ngx_im_ops = ops;

    ngx_rbtree_init(&ngx_im_users, &ngx_im_users_sentinel,
                    ngx_rbtree_insert_value);
}


ngx_im_router_ops_t *
ngx_im_table_ops(void)
{
    return ngx_im_ops;
}


ngx_uint_t
ngx_im_table_count(void)
{
    return ngx_im_nusers;
}


uint64_t
ngx_im_table_next_seq(void)
{
    return ++ngx_im_seq;
}


/* never 0, which marks a publish that is no probe; a wrap after 2^32
 * changes is harmless: a probe is answered within seconds */

uint32_t
ngx_im_table_stamp(void)
{
    if (++ngx_im_stamp == 0) {
        ngx_im_stamp = 1;
    }

    return ngx_im_stamp;
}


ngx_im_user_t *
ngx_im_table_find(uint32_t uid)
{
    return (ngx_im_user_t *) ngx_im_rbtree_lookup(&ngx_im_users, uid);
}


ngx_im_user_t *
ngx_im_table_add(uint32_t uid)
{
    ngx_im_user_t  *u;

    u = ngx_im_table_find(uid);
    if (u) {
        return u;
    }

    u = ngx_im_slab_alloc(sizeof(ngx_im_user_t));
    if (u == NULL) {
        return NULL;
    }

    u->node.key = uid;
    u->stamp = ngx_im_table_stamp();
    ngx_queue_init(&u->sessions);
    ngx_rbtree_insert(&ngx_im_users, &u->node);
    ngx_im_nusers++;
    ngx_im_gauges->users++;

    return u;
}


void
ngx_im_table_remove(ngx_im_user_t *u)
{
    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "im router: uid %uD forgotten", (uint32_t) u->node.key);

    ngx_rbtree_delete(&ngx_im_users, &u->node);
    ngx_im_nusers--;
    ngx_im_gauges->users--;
    ngx_im_slab_free(u);
}


ngx_im_user_t *
ngx_im_table_first(void)
{
    if (ngx_im_users.root == ngx_im_users.sentinel) {
        return NULL;
    }

    return (ngx_im_user_t *) ngx_rbtree_min(ngx_im_users.root,
                                            ngx_im_users.sentinel);
}


ngx_im_user_t *
ngx_im_table_next(ngx_im_user_t *u)
{
    return (ngx_im_user_t *) ngx_rbtree_next(&ngx_im_users, &u->node);
}


ngx_im_user_t *
ngx_im_table_from(uint32_t uid)
{
    ngx_rbtree_node_t  *node, *sentinel, *found;

    node = ngx_im_users.root;
    sentinel = ngx_im_users.sentinel;
    found = NULL;

    while (node != sentinel) {
        if (node->key >= uid) {
            found = node;
            node = node->left;

        } else {
            node = node->right;
        }
    }

    return (ngx_im_user_t *) found;
}


void
ngx_im_table_sync(ngx_im_user_t *u)
{
    ngx_queue_t     *q, *next;
    ngx_im_route_t  *r;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        r = ngx_queue_data(q, ngx_im_route_t, link);
        ngx_im_ops->sync(r);
    }
}


size_t
ngx_im_table_channel(u_char *buf, uint32_t uid)
{
    return ngx_im_store_uid_channel(buf, uid);
}


ngx_int_t
ngx_im_table_publish(uint32_t uid, u_char *data, size_t len,
    ngx_im_redis_cb_pt cb, void *cbdata)
{
    u_char       channel[32];
    const char  *argv[3];
    size_t       argvlen[3];

    argv[0] = "PUBLISH";
    argvlen[0] = 7;
    argv[1] = (char *) channel;
    argvlen[1] = ngx_im_table_channel(channel, uid);
    argv[2] = (char *) data;
    argvlen[2] = len;

    return ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, cb, cbdata, 3, argv,
                            argvlen);
}


ngx_int_t
ngx_im_table_peers(uint32_t uid, u_char *data, size_t len)
{
    ngx_int_t   rc, sent;
    ngx_uint_t  i, n;
    ngx_pid_t   pids[NGX_IM_DIR_PIDS];

    n = ngx_im_dir_peers(uid, pids);

    sent = NGX_DECLINED;

    for (i = 0; i < n; i++) {
        rc = ngx_im_ipc_send(pids[i], uid, data, len);

        if (rc == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        if (rc == NGX_OK) {
            sent = NGX_OK;
        }
    }

    return sent;
}
