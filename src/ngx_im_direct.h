/*
 * ngx_im_direct.h: 1:1 messages delivered without Redis while it is away.
 *
 * In write-through a message is pushed once its inbox append is in
 * (docs/decisions/037).  When the append fails and the one recipient is
 * online on this node (this worker, or a sibling the directory names), the
 * message goes to its sessions all the same, as a watched copy (stored
 * form 3: this worker's id and a token with NGX_IM_WATCH_DIRECT set, so
 * that an ack on a sibling comes back as a 'W' record), and the sender's
 * answer waits: PUB_ACK at the first ack of any of its sessions, the
 * refusal when none comes within the re-push budget.  Such a copy is never
 * stored, not even by a session that ends without acking it.
 */

#ifndef _NGX_IM_DIRECT_H_INCLUDED_
#define _NGX_IM_DIRECT_H_INCLUDED_


#include "ngx_im_table.h"


/* NGX_OK: msg went to uid's sessions on this node, and t is served when
 * one of them acks or the budget runs out; NGX_DECLINED: nobody here
 * took it, t is untouched */
ngx_int_t ngx_im_direct_deliver(uint32_t uid, ngx_im_msg_t *msg,
    ngx_im_ticket_t *t);

/* a 'W' record whose token has NGX_IM_WATCH_DIRECT: the message was
 * acked */
void ngx_im_direct_acked(uint64_t token);


#endif /* _NGX_IM_DIRECT_H_INCLUDED_ */
