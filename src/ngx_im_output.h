/*
 * ngx_im_output.h: a session's output.
 *
 * Bytes for the peer are queued in the session's chunks and leave once per
 * event loop pass (or when the socket can take more), however many
 * messages were queued.  Output beyond im_send_buffer closes the session:
 * a peer that does not read is never buffered without bound.
 */

#ifndef _NGX_IM_OUTPUT_H_INCLUDED_
#define _NGX_IM_OUTPUT_H_INCLUDED_


#include "ngx_im_state.h"


/* queue bytes with the transport's framing; raw skips the framing */
ngx_int_t ngx_im_output_send(ngx_im_session_t *s, u_char *p, size_t n);
ngx_int_t ngx_im_output_send_raw(ngx_im_session_t *s, u_char *p, size_t n);
/* a message of one byte (PING, PING_RESP, DISCONNECT, LOGOUT) */
void ngx_im_output_simple(ngx_im_session_t *s, u_char cmd);

/* the write handler's body: send what is queued */
void ngx_im_output_write(ngx_im_session_t *s);

/* the session goes: drop what is queued */
void ngx_im_output_free(ngx_im_session_t *s);


#endif /* _NGX_IM_OUTPUT_H_INCLUDED_ */
