/*
 * ngx_im_limit.h: the message rate of each uid on this node.
 *
 * "im_msg_rate rate [burst=n];" gives every uid a token bucket in the
 * im_zone shared memory, so that all the workers of a node draw on the
 * same one.  Nodes do not share buckets: a uid sending through sessions
 * on k nodes may send k times the rate (docs/decisions/023-per-uid-
 * limits.md).
 */

#ifndef _NGX_IM_LIMIT_H_INCLUDED_
#define _NGX_IM_LIMIT_H_INCLUDED_


#include "ngx_im.h"


/* the zone is made (by the directory, which owns it): the buckets' root
 * in its slab pool, or NULL */
void *ngx_im_limit_zone_init(ngx_slab_pool_t *shpool);
/* a worker starts: the zone's pool and the root made above */
void ngx_im_limit_init_process(ngx_slab_pool_t *shpool, void *root);
void ngx_im_limit_exit_process(void);

/* one message of uid: NGX_OK within the rate, NGX_BUSY over it */
ngx_int_t ngx_im_limit_message(uint32_t uid);


#endif /* _NGX_IM_LIMIT_H_INCLUDED_ */
