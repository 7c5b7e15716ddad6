/*
 * ngx_im.h: what every part of the module shares: the main-context
 * configuration of the CORE module ngx_im_module, the counters
 * (ngx_im_metrics.h) and the worker's name in traffic between workers and
 * nodes.
 */

#ifndef _NGX_IM_H_INCLUDED_
#define _NGX_IM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_im_proto.h"
#include "ngx_im_metrics.h"


#define NGX_IM_WRITE_THROUGH     0
#define NGX_IM_OFFLINE_ONLY      1

#define NGX_IM_LOGIN_KICK        0
#define NGX_IM_LOGIN_REJECT      1


typedef struct ngx_im_msg_s      ngx_im_msg_t;


typedef struct {
    ngx_flag_t          enabled;     /* an im_websocket or im_tcp exists */

    ngx_str_t           redis_url;      /* im_redis as given */
    ngx_str_t           redis_host;     /* its host: TLS's default name */
    ngx_addr_t         *redis_addrs;    /* resolved at configuration */
    ngx_uint_t          redis_naddrs;
    ngx_int_t           redis_db;
    ngx_str_t           redis_user;
    ngx_str_t           redis_password;
    ngx_msec_t          redis_timeout;
    /* im_redis_cluster on: im_redis is a seed of a Redis Cluster */
    ngx_flag_t          redis_cluster;

    ngx_flag_t          redis_ssl;
    ngx_flag_t          redis_ssl_verify;
    ngx_str_t           redis_ssl_name; /* null-terminated */
    ngx_str_t           redis_ssl_trusted;
    ngx_str_t           redis_ssl_cert;
    ngx_str_t           redis_ssl_key;
#if (NGX_SSL)
    /* the one client TLS context of the node's Redis connections: made
     * for im_redis_ssl on, or im_group_redis ... ssl */
    ngx_ssl_t          *redis_ssl_ctx;
#endif

    /* im_redis_sentinel: the master is found through these (ngx_addr_t,
     * every address of every directive, tried in turn) by its name */
    ngx_array_t        *sentinels;
    ngx_str_t           sentinel_master;
    ngx_str_t           sentinel_user;
    ngx_str_t           sentinel_password;

    /* im_redis_wait: replicas a write-through append must reach before
     * its acknowledgement (0: off), and how long WAIT may wait */
    ngx_uint_t          redis_wait;
    ngx_msec_t          redis_wait_timeout;

    ngx_int_t           group_db;
    ngx_str_t           group_prefix;

    /* im_group_redis: the group sets on a Redis of their own, in cluster
     * mode too (NULL addrs: on im_redis's Redis, or the cluster); its
     * database is group_db, its TLS context redis_ssl_ctx */
    ngx_str_t           group_host;     /* TLS's default name */
    ngx_addr_t         *group_addrs;
    ngx_uint_t          group_naddrs;
    ngx_str_t           group_user;
    ngx_str_t           group_password;
    ngx_flag_t          group_ssl;
    ngx_str_t           group_ssl_name; /* null-terminated */

    ngx_str_t           node_id;

    ngx_uint_t          delivery;
    time_t              offline_ttl;
    ngx_uint_t          offline_max;
    ngx_uint_t          poison_after;
    /* im_inbox_batch: how long removals of acked messages (and a new
     * list's TTL) may wait to leave together; 0: at the end of the pass */
    ngx_msec_t          inbox_batch;
    /* im_group_owe: group members online here only owe an ack instead of
     * an inbox append each (decision 052) */
    ngx_flag_t          group_owe;
    /* im_group_owe_lease: how long a node's records stay its own without
     * a word from it; then another node delivers them again */
    ngx_msec_t          group_owe_lease;

    ngx_msec_t          repush_interval;
    ngx_uint_t          repush_max;
    ngx_msec_t          ping_interval;
    ngx_msec_t          ping_timeout;
    ngx_msec_t          connect_timeout;
    ngx_msec_t          close_grace;

    ngx_uint_t          login_policy;
    /* logins asking the user centre at once, per worker; 0: no bound */
    ngx_uint_t          logins_in_flight;
    ngx_msec_t          login_queue_timeout;

    size_t              max_payload;
    size_t              max_message;
    size_t              send_buffer;

    ngx_flag_t          part_push_as_group;
    ngx_flag_t          alone;
    ngx_flag_t          receipts;    /* a location has im_receipts on */
    ngx_flag_t          redis_events; /* im_events_stream: a connection */
    void               *events;      /* ngx_im_events.c's configuration */
    ngx_flag_t          check_sender;

    /* a location has im_api: every login registers in im:s:<uid> */
    ngx_flag_t          registry;

    /* per-uid limits of clients (the TCP API is exempt); 0: none */
    ngx_uint_t          max_sessions;    /* live sessions, all nodes */
    ngx_uint_t          msg_rate;        /* per second, x 1000 */
    ngx_uint_t          msg_burst;       /* x 1000 */
    ngx_uint_t          max_recipients;  /* uids of a part-group list */

    ngx_shm_zone_t     *zone;
} ngx_im_conf_t;




extern ngx_module_t    ngx_im_module;


static ngx_inline ngx_im_conf_t *
ngx_im_get_conf(void)
{
    return (ngx_im_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx, ngx_im_module);
}


/* the node of key in an rbtree keyed by uid or gid, or NULL */
static ngx_inline ngx_rbtree_node_t *
ngx_im_rbtree_lookup(ngx_rbtree_t *tree, ngx_rbtree_key_t key)
{
    ngx_rbtree_node_t  *node;

    node = tree->root;

    while (node != tree->sentinel) {
        if (key == node->key) {
            return node;
        }

        node = (key < node->key) ? node->left : node->right;
    }

    return NULL;
}


/* called by the http and stream modules' directive handlers */
ngx_im_conf_t *ngx_im_conf_enable(ngx_conf_t *cf);

/* "node/instance:pid" names this worker in pub/sub traffic; workers that
 * share an im_zone share the part up to the colon, whose length is
 * ngx_im_node_prefix_len */
extern ngx_str_t   ngx_im_worker_id;
extern size_t      ngx_im_node_prefix_len;


#endif /* _NGX_IM_H_INCLUDED_ */
