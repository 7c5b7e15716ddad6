/*
 * ngx_im_ipc.h: mail between the workers of one node.
 *
 * With an im_zone each worker has a datagram socket in the abstract
 * namespace; a record for a sibling worker goes there by one sendmsg() at
 * the end of the event loop pass, without going through Redis.
 */

#ifndef _NGX_IM_IPC_H_INCLUDED_
#define _NGX_IM_IPC_H_INCLUDED_


#include "ngx_im.h"


/* one record: [Uid:32][Data], len bytes */
typedef void (*ngx_im_ipc_handler_pt)(u_char *data, size_t len);


/* the worker's socket; handler gets each record; before_flush (may be
 * NULL) runs before queued datagrams leave */
ngx_int_t ngx_im_ipc_init_process(ngx_cycle_t *cycle,
    ngx_im_ipc_handler_pt handler, void (*before_flush)(void));
void ngx_im_ipc_exit_process(void);

/* NGX_OK: queued; NGX_AGAIN: the peer cannot be reached directly now
 * (its queue is full, no slot, no memory): Redis must carry it */
ngx_int_t ngx_im_ipc_send(ngx_pid_t pid, uint32_t uid, u_char *data,
    size_t len);


#endif /* _NGX_IM_IPC_H_INCLUDED_ */
