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

/*
 * The outcome of an admin API message: rc NGX_OK (every recipient served),
 * NGX_DECLINED (refused: why says which NGX_IM_PUB_*), NGX_ERROR (some
 * recipient could not be served: Redis); to and n are its recipients,
 * valid during the call only (NULL, 0 when they were never known).
 */
typedef void (*ngx_im_publish_api_pt)(void *data, ngx_int_t rc,
    ngx_uint_t why, uint32_t *to, ngx_uint_t n);

#define NGX_IM_PUB_NOT_MEMBER   1       /* the sender is not in the group */
#define NGX_IM_PUB_NOBODY       2       /* no recipient in the group */

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
    unsigned               why:2;           /* NGX_IM_PUB_*, refused */

    /* an admin API message (no session): told the outcome, with the
     * recipients kept for it */
    ngx_im_publish_api_pt  api;
    void                  *api_data;
    uint32_t              *rcpts;
    ngx_uint_t             nrcpts;
};


/* a publish request, parsed */
void ngx_im_publish(ngx_im_session_t *s, u_char *p, size_t n, im_msg_t *m);
/* a message of the admin API, parsed as a client's (m from p, n bytes),
 * from uid "from" (0: the system), watched by worker "watch" with token
 * when watch is not NULL (its recipients' acks come back as 'W'
 * records): done is called once, maybe before this returns; NGX_ERROR:
 * no memory, done is not called */
ngx_int_t ngx_im_publish_api(uint32_t from, u_char *p, size_t n,
    im_msg_t *m, ngx_str_t *watch, uint64_t token,
    ngx_im_publish_api_pt done, void *data);
/* the session goes: its messages still under way finish without it */
void ngx_im_publish_end(ngx_im_session_t *s);

/* requests not answered yet */
#define ngx_im_publish_pending(s)  (!ngx_queue_empty(&(s)->busy->pubs))


#endif /* _NGX_IM_PUBLISH_H_INCLUDED_ */
