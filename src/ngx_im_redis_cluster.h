/*
 * ngx_im_redis_cluster.h: the worker's view of a Redis Cluster.
 *
 * With "im_redis_cluster on" the worker keeps a table of the cluster's
 * nodes (the seed from im_redis first, then every master the slot map
 * names), each with its own inbox, subscriber and events connections
 * (ngx_im_redis_conn_t: TLS and ACL as for one Redis), and the slot map:
 * 16,384 slots -> the index of the master that serves each.  What a
 * command is and which callback its reply goes to stays ngx_im_redis.c's;
 * this file says where a key lives (docs/decisions/043-redis-cluster.md).
 */

#ifndef _NGX_IM_REDIS_CLUSTER_H_INCLUDED_
#define _NGX_IM_REDIS_CLUSTER_H_INCLUDED_


#include "ngx_im.h"
#include "ngx_im_redis.h"
#include "ngx_im_redis_conn.h"
#include "ngx_im_slot.h"


#define NGX_IM_CLUSTER_NODES    64
#define NGX_IM_CLUSTER_NONE     0xff      /* a slot nobody serves yet */


typedef struct {
    ngx_im_redis_server_t     server;     /* the seed's, this address */
    ngx_addr_t                addr;
    u_char                    sockaddr[NGX_SOCKADDRLEN];
    u_char                    name[NGX_SOCKADDR_STRLEN];
    size_t                    name_len;   /* "host:port" */
    /* "host:port" as the node announces itself when that is a host name
     * (cluster-preferred-endpoint-type hostname): a redirect names it so */
    u_char                   *alias;
    size_t                    alias_len;
    ngx_uint_t                index;
    ngx_uint_t                slots;      /* served, by the last map */
    /* ngx_im_redis.c's roles; the group role uses the inbox connection
     * (with im_group_redis it is none of the cluster's) */
    ngx_im_redis_conn_t       conns[NGX_IM_REDIS_N];
} ngx_im_cluster_node_t;


ngx_int_t ngx_im_redis_cluster_init(ngx_cycle_t *cycle,
    ngx_im_redis_server_t *seed, ngx_im_redis_conn_handlers_t *handlers);
void ngx_im_redis_cluster_exit(void);

ngx_uint_t ngx_im_redis_cluster_nodes(void);
ngx_im_cluster_node_t *ngx_im_redis_cluster_node(ngx_uint_t i);

/* the slot a command is for: its key (EVAL: the first of its keys), or
 * NGX_DECLINED when it has none (PING) */
ngx_int_t ngx_im_redis_cluster_slot(int argc, const char **argv,
    const size_t *argvlen);

/* the connection of role that serves slot; NULL while the map is unread
 * or the slot has no master */
ngx_im_redis_conn_t *ngx_im_redis_cluster_conn(ngx_uint_t role,
    ngx_uint_t slot);

/* a CLUSTER SLOTS reply: the map replaced, new masters connected */
ngx_int_t ngx_im_redis_cluster_map(redisReply *reply);
ngx_uint_t ngx_im_redis_cluster_mapped(void);

/* a MOVED or ASK reply that rc got: the node it names (added and
 * connecting when it is new; with no host named, at rc's host), and for
 * MOVED the slot now points there */
ngx_im_cluster_node_t *ngx_im_redis_cluster_redirect(ngx_im_redirect_t *r,
    ngx_im_redis_conn_t *rc);

/* every master's connection of role is ready (and the map read) */
ngx_uint_t ngx_im_redis_cluster_ready(ngx_uint_t role);
/* the map cannot be read, or a master's connection of role failed */
ngx_uint_t ngx_im_redis_cluster_away(ngx_uint_t role);


#endif /* _NGX_IM_REDIS_CLUSTER_H_INCLUDED_ */
