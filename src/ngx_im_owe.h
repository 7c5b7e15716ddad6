/*
 * ngx_im_owe.h: write-through group messages owed by this worker's
 * members (docs/decisions/052-group-owe-records.md).
 *
 * A group message's members who have a session on this worker, and on no
 * other worker or node, get no inbox append at accept.  The worker writes
 * one record per message (an HSET field of its slot's hash) saying that
 * these members still owe an ack, pushes once Redis has it, and keeps in
 * memory which members still owe.  An ack clears a member without Redis;
 * a member whose sessions let the message go unacked gets the inbox
 * append then, in its place among the member's stored messages.  The
 * record goes (HDEL) when every member is cleared.  A worker that dies
 * leaves its records; the next worker of its slot delivers them again,
 * and another node's worker does once the node's lease has run out.  A
 * recall clears the members owing its MsgId.
 */

#ifndef _NGX_IM_OWE_H_INCLUDED_
#define _NGX_IM_OWE_H_INCLUDED_


#include "ngx_im_table.h"


/* the "stored" of a push whose inbox append is owed, not made */
#define NGX_IM_OWED  2


/* whether msg's members here may be owed (im_group_owe, write-through) */
ngx_uint_t ngx_im_owe_on(void);

/* msg to uids (each with a session on this worker only): one record, the
 * pushes at its reply; the ticket is served once per uid */
void ngx_im_owe_deliver(ngx_im_msg_t *msg, uint32_t *uids, ngx_uint_t n,
    ngx_im_ticket_t *t);

/* uid acked its owed push of msg */
void ngx_im_owe_acked(ngx_im_msg_t *msg, uint32_t uid);

/* a session of uid let its owed push of msg go unacked: the inbox append,
 * before pivot's entry when pivot is not NULL (a later message the
 * session held, stored) */
void ngx_im_owe_release(ngx_im_msg_t *msg, uint32_t uid,
    ngx_im_msg_t *pivot);

/* a recall of msgid: uid's owing members here cleared (no late append),
 * its appended ones removed again; returns the members cleared */
ngx_uint_t ngx_im_owe_recall(uint32_t uid, const u_char *msgid);

/* the records of this worker's slot left by processes that are gone
 * are delivered again (once the inbox connection is up); the node's lease
 * is set, and from then on kept, with the adoption of lost nodes' hashes */
void ngx_im_owe_sweep(void);


#endif /* _NGX_IM_OWE_H_INCLUDED_ */
