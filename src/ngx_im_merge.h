
/*
 * ngx_im_merge.h: the inbox read and the live queue, merged in order.
 *
 * Owns the order a session delivers in after it reads its inbox
 * (docs/PROTOCOL.md 3.4): the items read from the store and those that came
 * live meanwhile, into one queue.  A pure function over two ngx_queue_t
 * queues of the caller's items, known here only by their MsgIds, so that
 * the unit tests run exactly the module's code; it uses nothing of nginx
 * but ngx_queue.h's macros.
 */


#ifndef _NGX_IM_MERGE_H_INCLUDED_
#define _NGX_IM_MERGE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_IM_MERGE_ID_LEN  32          /* IM_MSGID_LEN */


/* the item's MsgId: NGX_IM_MERGE_ID_LEN bytes */
typedef const u_char *(*ngx_im_merge_id_pt)(ngx_queue_t *q);

/* frees an inbox item whose live copy was found */
typedef void (*ngx_im_merge_drop_pt)(ngx_queue_t *q, void *data);


/*
 * waiting: the live items queued for the session, in arrival order;
 * inbox: the items read from the store, in store order, emptied by the
 * call; later: 0 on the session's first read, 1 afterwards.  On return
 * waiting holds the merged order.  An inbox item with a live copy is
 * passed to drop (with data) once, and is no longer linked anywhere.
 */
void ngx_im_merge(ngx_queue_t *waiting, ngx_queue_t *inbox, ngx_uint_t later,
    ngx_im_merge_id_pt id, ngx_im_merge_drop_pt drop, void *data);


#endif /* _NGX_IM_MERGE_H_INCLUDED_ */
