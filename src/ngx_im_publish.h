/*
 * ngx_im_publish.h: a session's own messages, answered in order.
 *
 * PUBLISH, GROUP_PUBLISH and GROUP_PART_PUBLISH (and the TCP API's same
 * three) become one message each, handed to the router once its
 * recipients are known; the sender gets its ack, or INVALID_PACKET with
 * the MsgId for a refusal, strictly in the order of its requests.
 */

#ifndef _NGX_IM_PUBLISH_H_INCLUDED_
#define _NGX_IM_PUBLISH_H_INCLUDED_


#include "ngx_im_state.h"


typedef struct ngx_im_pub_s  ngx_im_pub_t;

struct ngx_im_pub_s {
    ngx_im_ticket_t        ticket;          /* first: the router's count */
    ngx_queue_t            queue;           /* in the session's pubs */
    ngx_im_session_t      *session;         /* NULL once it is gone */
    u_char                 msgid[IM_MSGID_LEN];
    uint8_t                cmd;             /* the request's command */
    ngx_im_msg_t          *msg;             /* still to hand to the router */
    uint32_t              *to;              /* its recipients, once known */
    ngx_uint_t             nto;
    uint32_t               to1;
    unsigned               done:1;
    unsigned               refused:1;       /* refusal, not failure */
    unsigned               resolved:1;      /* recipients known */
};


/* a publish request, parsed */
void ngx_im_publish(ngx_im_session_t *s, u_char *p, size_t n, im_msg_t *m);
/* the session goes: its messages still under way finish without it */
void ngx_im_publish_end(ngx_im_session_t *s);

/* requests not answered yet */
#define ngx_im_publish_pending(s)  (!ngx_queue_empty(&(s)->pubs))


#endif /* _NGX_IM_PUBLISH_H_INCLUDED_ */
