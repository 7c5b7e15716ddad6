/*
 * ngx_im_redis_sentinel.h: the master's address, as Redis Sentinel says.
 *
 * With im_redis_sentinel, a worker keeps one connection to one sentinel
 * (the configured ones tried in turn): it asks for the master's address by
 * name (SENTINEL get-master-addr-by-name) and listens for +switch-master.
 * The address goes into the server the worker's Redis connections share,
 * and the owner of those connections is told to connect them again.  The
 * connections check ROLE themselves (ngx_im_redis_conn.c).
 */

#ifndef _NGX_IM_REDIS_SENTINEL_H_INCLUDED_
#define _NGX_IM_REDIS_SENTINEL_H_INCLUDED_


#include "ngx_im.h"
#include "ngx_im_redis_conn.h"


/* the master is (now) at server->addrs[0]: connect to it */
typedef void (*ngx_im_redis_sentinel_pt)(void);


/* server: the data connections' server; its address is set here (naddrs
 * is 0 until a sentinel answers) */
ngx_int_t ngx_im_redis_sentinel_init(ngx_cycle_t *cycle,
    ngx_im_redis_server_t *server, ngx_im_redis_sentinel_pt master);
void ngx_im_redis_sentinel_exit(void);

/* a data connection went or was refused: ask again (once at a time) */
void ngx_im_redis_sentinel_ask(void);


#endif /* _NGX_IM_REDIS_SENTINEL_H_INCLUDED_ */
