/*
 * ngx_im_publish.c: a session's own messages, answered in order.
 *
 * Owns the publish pipeline: the checks that refuse a message and leave
 * the session healthy (docs/PROTOCOL.md 6), the message object built once
 * in its push form, the group's members read from the store before a group
 * message can go, the hand-over to the router in the order the requests
 * came (a 1:1 message waits behind a group message whose members are still
 * being read, so each recipient sees one sender's messages in order), and
 * the answers, which leave strictly in request order: the TCP API promises
 * one response per request, in order, and WebSocket keeps the same rule.
 */

#include "ngx_im_publish.h"
#include "ngx_im_output.h"
#include "ngx_im_uids.h"
#include "ngx_im_limit.h"
#include "ngx_im_payload.h"


/*
 * A group message waiting for its members.  Its size follows a part-group
 * list (up to 65,535 uids), so it is allocated per group message, as are
 * the recipients (pub->to); 1:1 messages need neither.
 */
typedef struct {
    ngx_im_pub_t          *pub;
    ngx_im_msg_t          *msg;
    uint32_t               sender;
    ngx_uint_t             part;
    ngx_uint_t             n;
    uint32_t               uids[1];
} ngx_im_group_req_t;


static ngx_im_msg_t *ngx_im_publish_msg(u_char *p, size_t n, im_msg_t *m,
    uint32_t from, ngx_str_t *watch, uint64_t token);
static ngx_int_t ngx_im_publish_group(ngx_im_pub_t *pub, ngx_im_msg_t *msg,
    im_msg_t *m, uint32_t from);
static void ngx_im_publish_dispatch(ngx_im_session_t *s);
static void ngx_im_publish_deliver(ngx_im_pub_t *pub);
static void ngx_im_publish_members(void *data, ngx_int_t rc,
    uint32_t *uids, ngx_uint_t n);
static void ngx_im_publish_fail(ngx_im_pub_t *pub, ngx_uint_t refused);
static void ngx_im_publish_done(ngx_im_ticket_t *t);
static void ngx_im_publish_api_done(ngx_im_pub_t *pub);
static void ngx_im_publish_answer(ngx_im_session_t *s);


/* per-message records: no malloc for them once the worker has warmed up */

static ngx_im_spares_t  ngx_im_spare_pub = ngx_im_spares(ngx_im_pub_t, 4096);

#define ngx_im_pub_alloc()       ngx_im_spare_get(&ngx_im_spare_pub)
#define ngx_im_pub_free(pub)     ngx_im_spare_put(&ngx_im_spare_pub, pub)


static ngx_im_pub_t *
ngx_im_publish_pub(ngx_im_session_t *s, u_char cmd, const u_char *msgid)
{
    ngx_im_pub_t   *pub;
    ngx_im_busy_t  *busy;

    busy = ngx_im_busy(s);
    if (busy == NULL) {
        return NULL;
    }

    pub = ngx_im_pub_alloc();
    if (pub == NULL) {
        return NULL;
    }

    ngx_memzero(pub, sizeof(ngx_im_pub_t));
    pub->ticket.done = ngx_im_publish_done;
    pub->ticket.direct = (cmd == IM_CMD_PUBLISH);
    pub->session = s;
    pub->cmd = cmd;
    ngx_memcpy(pub->msgid, msgid, IM_MSGID_LEN);

    ngx_queue_insert_tail(&busy->pubs, &pub->queue);

    return pub;
}


static void
ngx_im_publish_refuse(ngx_im_session_t *s, u_char cmd, const u_char *msgid,
    ngx_uint_t reason)
{
    ngx_im_pub_t  *pub;

    pub = ngx_im_publish_pub(s, cmd, msgid);
    if (pub == NULL) {
        ngx_im_session_ops->close(s, NGX_IM_CLOSE_ERROR);
        return;
    }

    ngx_im_stats->refused[reason]++;

    pub->done = 1;
    pub->refused = 1;
    pub->resolved = 1;
    ngx_im_publish_answer(s);
}


/* the message object of a request, in its push form, from uid "from";
 * watched (stored form 3) when watch is not NULL */

static ngx_im_msg_t *
ngx_im_publish_msg(u_char *p, size_t n, im_msg_t *m, uint32_t from,
    ngx_str_t *watch, uint64_t token)
{
    size_t          len;
    ngx_time_t     *tp;
    ngx_im_msg_t   *msg;
    ngx_im_conf_t  *imcf;

    imcf = ngx_im_get_conf();

    switch (m->cmd) {

    case IM_CMD_PUBLISH:
        len = IM_SIZE_PUSH(m->payload_len);
        break;

    case IM_CMD_GROUP_PART_PUBLISH:
        if (imcf->part_push_as_group) {
            len = IM_SIZE_GROUP(m->payload_len);

        } else if (m->utf16) {
            /* its Len counted UTF-16 units: pushed with the bytes */
            len = IM_SIZE_PART((size_t) m->n_uids, m->payload_len);

        } else {
            /* pushed as received: the uid list as the sender gave it */
            len = n;
        }

        break;

    default: /* IM_CMD_GROUP_PUBLISH */
        len = IM_SIZE_GROUP(m->payload_len);
        break;
    }

    msg = ngx_im_msg_alloc(watch ? NGX_IM_ENTRY_HDR_V3(watch->len)
                                 : ngx_im_msg_hdr(),
                           len);
    if (msg == NULL) {
        return NULL;
    }

    if (watch) {
        ngx_im_msg_watch(msg, watch, token);
    }

    if (m->cmd == IM_CMD_PUBLISH) {
        (void) im_build_push(msg->push, m->msgid, m->payload, m->payload_len);

    } else if (m->cmd == IM_CMD_GROUP_PUBLISH || imcf->part_push_as_group) {
        (void) im_build_group(msg->push, m->to, m->msgid, m->payload,
                              m->payload_len);

    } else if (m->utf16) {
        (void) im_build_part(msg->push, m->to, m->msgid, m->n_uids, m->uids,
                             m->payload, m->payload_len);

    } else {
        ngx_memcpy(msg->push, p, n);
    }

    msg->from = from;
    tp = ngx_timeofday();
    msg->accepted = (uint64_t) tp->sec * 1000 + tp->msec;

    ngx_im_msg_finish(msg, ngx_time() + imcf->offline_ttl);

    return msg;
}


/* a group message: its members are read first; NGX_OK: they are being
 * read, else pub has failed already */

static ngx_int_t
ngx_im_publish_group(ngx_im_pub_t *pub, ngx_im_msg_t *msg, im_msg_t *m,
    uint32_t from)
{
    size_t               len;
    ngx_uint_t           i;
    ngx_im_group_req_t  *gr;

    len = sizeof(ngx_im_group_req_t);
    if (m->cmd == IM_CMD_GROUP_PART_PUBLISH) {
        len += m->n_uids * sizeof(uint32_t);
    }

    gr = ngx_alloc(len, ngx_cycle->log);
    if (gr == NULL) {
        ngx_im_msg_unref(msg);
        ngx_im_publish_fail(pub, 0);
        return NGX_ERROR;
    }

    gr->pub = pub;
    gr->msg = msg;
    gr->sender = from;
    gr->part = (m->cmd == IM_CMD_GROUP_PART_PUBLISH);
    gr->n = 0;

    if (gr->part) {
        for (i = 0; i < m->n_uids; i++) {
            gr->uids[gr->n++] = im_get_u32(m->uids + 4 * i);
        }
    }

    if (ngx_im_store_members(m->to, ngx_im_publish_members, gr) != NGX_OK) {
        ngx_im_msg_unref(msg);
        ngx_free(gr);
        ngx_im_publish_fail(pub, 0);
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_im_publish(ngx_im_session_t *s, u_char *p, size_t n,
    im_msg_t *m)
{
    ngx_im_pub_t     *pub;
    ngx_im_msg_t     *msg;
    ngx_im_conf_t    *imcf;
    im_payload_rc_t   prc;

    imcf = ngx_im_get_conf();

    if (m->payload_len > imcf->max_payload
        || (m->cmd == IM_CMD_PUBLISH && m->to == 0)
        || (m->cmd == IM_CMD_GROUP_PART_PUBLISH && m->n_uids == 0))
    {
        ngx_im_publish_refuse(s, m->cmd, m->msgid, NGX_IM_REFUSED_INVALID);
        return;
    }

    /* a client's limits; the TCP API, the business's own, has none */

    if (!ngx_im_session_system(s)) {

        if (m->cmd == IM_CMD_GROUP_PART_PUBLISH && imcf->max_recipients
            && m->n_uids > imcf->max_recipients)
        {
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: uid %uD: part-group message to %ui uids "
                          "refused, im_max_recipients is %ui",
                          s->route.uid, (ngx_uint_t) m->n_uids,
                          imcf->max_recipients);
            ngx_im_publish_refuse(s, m->cmd, m->msgid,
                                  NGX_IM_REFUSED_FANOUT);
            return;
        }

        if (ngx_im_limit_message(s->route.uid) == NGX_BUSY) {
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: uid %uD: message refused, over im_msg_rate",
                          s->route.uid);
            ngx_im_publish_refuse(s, m->cmd, m->msgid, NGX_IM_REFUSED_RATE);
            return;
        }
    }

    /* the server vouches for the sender its recipients read
     * (docs/PROTOCOL.md 3.7); the system speaks for whom it will */

    if (imcf->check_sender && !ngx_im_session_system(s)) {
        prc = im_payload_check(m->payload, m->payload_len, s->route.uid,
                               m->cmd, m->to);

        if (prc != IM_PAYLOAD_OK) {
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "im: uid %uD: %s refused: %s", s->route.uid,
                          im_cmd_str(m->cmd), im_payload_rc_str(prc));
            ngx_im_publish_refuse(s, m->cmd, m->msgid,
                                  NGX_IM_REFUSED_SENDER);
            return;
        }
    }

    msg = ngx_im_publish_msg(p, n, m, s->route.uid, NULL, 0);
    if (msg == NULL) {
        ngx_im_session_ops->close(s, NGX_IM_CLOSE_ERROR);
        return;
    }

    pub = ngx_im_publish_pub(s, m->cmd, m->msgid);
    if (pub == NULL) {
        ngx_im_msg_unref(msg);
        ngx_im_session_ops->close(s, NGX_IM_CLOSE_ERROR);
        return;
    }

    if (m->cmd == IM_CMD_PUBLISH) {
        pub->msg = msg;
        pub->to1 = m->to;
        pub->to = &pub->to1;
        pub->nto = 1;
        pub->resolved = 1;

        if (s->unresolved == 0) {
            /* nothing waits ahead of it: no need to walk the queue */
            ngx_im_publish_deliver(pub);

        } else {
            ngx_im_publish_dispatch(s);
        }

        return;
    }

    /* groups: the members first */

    if (ngx_im_publish_group(pub, msg, m, s->route.uid) == NGX_OK) {
        s->unresolved++;
    }
}


/*
 * Messages of one sender are handed to the router in the order they came,
 * whatever their kind: a 1:1 message waits behind a group message whose
 * members are still being read, so each recipient sees them in order.
 */

static void
ngx_im_publish_dispatch(ngx_im_session_t *s)
{
    ngx_queue_t   *q;
    ngx_im_pub_t  *pub;

again:

    for (q = ngx_queue_head(&s->busy->pubs);
         q != ngx_queue_sentinel(&s->busy->pubs);
         q = ngx_queue_next(q))
    {
        pub = ngx_queue_data(q, ngx_im_pub_t, queue);

        if (!pub->resolved) {
            return;
        }

        if (pub->msg == NULL) {
            continue;
        }

        /* the router may answer at once and free pubs: start over */
        ngx_im_publish_deliver(pub);
        goto again;
    }
}


static void
ngx_im_publish_deliver(ngx_im_pub_t *pub)
{
    uint32_t      *to;
    ngx_uint_t     n;
    ngx_im_msg_t  *msg;

    msg = pub->msg;
    to = pub->to;
    n = pub->nto;

    pub->msg = NULL;
    pub->to = NULL;

    if (pub->api) {
        /* kept for the outcome and freed with it: the router may serve
         * every recipient, and so end pub, before it returns */
        pub->rcpts = to;
        pub->nrcpts = n;

        ngx_im_router_deliver(msg, to, n, &pub->ticket);
        ngx_im_msg_unref(msg);
        return;
    }

    ngx_im_router_deliver(msg, to, n, &pub->ticket);

    ngx_im_msg_unref(msg);

    if (to && to != &pub->to1) {
        ngx_free(to);
    }
}


static void
ngx_im_publish_members(void *data, ngx_int_t rc, uint32_t *members,
    ngx_uint_t n)
{
    ngx_im_group_req_t  *gr = data;

    uint32_t           uid;
    ngx_uint_t         i, j, m, sender_in;
    ngx_im_pub_t      *pub;
    ngx_im_session_t  *s;

    pub = gr->pub;
    s = pub->session;

    if (rc != NGX_OK) {
        ngx_im_publish_fail(pub, 0);
        goto done;
    }

    /* pub->msg stays NULL until the recipients are known: fail paths
     * below leave nothing to deliver */

    /* the sender out; the store gives each member once */

    sender_in = 0;

    for (i = 0; i < n; i++) {
        if (members[i] == gr->sender) {
            sender_in = 1;
            members[i] = members[--n];
            break;
        }
    }

    /* the system (uid 0, the TCP API) need not be a member */

    if (gr->sender != 0 && !sender_in) {
        pub->why = NGX_IM_PUB_NOT_MEMBER;
        ngx_im_publish_fail(pub, 1);
        goto done;
    }

    if (gr->part) {
        /* the members that are listed: the list sorted, each once */

        m = ngx_im_uids_unique(gr->uids, gr->n);
        j = 0;

        for (i = 0; i < n; i++) {
            uid = members[i];

            if (bsearch(&uid, gr->uids, m, sizeof(uint32_t), ngx_im_uid_cmp)
                != NULL)
            {
                members[j++] = uid;
            }
        }

        n = j;
    }

    if (n == 0) {
        pub->why = NGX_IM_PUB_NOBODY;
        ngx_im_publish_fail(pub, 1);
        goto done;
    }

    pub->to = ngx_alloc(n * sizeof(uint32_t), ngx_cycle->log);
    if (pub->to == NULL) {
        ngx_im_publish_fail(pub, 0);
        goto done;
    }

    ngx_memcpy(pub->to, members, n * sizeof(uint32_t));
    pub->nto = n;
    pub->msg = ngx_im_msg_ref(gr->msg);
    pub->resolved = 1;

    if (s == NULL) {
        /* the sender is gone: no order to keep */
        ngx_im_publish_deliver(pub);
    }

done:

    ngx_im_msg_unref(gr->msg);
    ngx_free(gr);

    if (s) {
        /* this one, and what waited behind it */
        s->unresolved--;
        ngx_im_publish_dispatch(s);
    }
}


static void
ngx_im_publish_fail(ngx_im_pub_t *pub, ngx_uint_t refused)
{
    if (refused) {
        pub->refused = 1;
    }

    pub->resolved = 1;
    pub->ticket.remaining = 1;
    ngx_im_ticket_served(&pub->ticket, 0);
}


/* every recipient is served: the answer may leave */

static void
ngx_im_publish_done(ngx_im_ticket_t *t)
{
    ngx_im_pub_t  *pub = (ngx_im_pub_t *) t;

    pub->done = 1;

    if (pub->api) {
        ngx_im_publish_api_done(pub);
        return;
    }

    if (pub->session == NULL) {
        ngx_im_pub_free(pub);
        return;
    }

    ngx_im_publish_answer(pub->session);
}


/* acks and refusals leave in the order the requests came */

static void
ngx_im_publish_answer(ngx_im_session_t *s)
{
    u_char         buf[IM_SIZE_INVALID];
    u_char         ack;
    ngx_queue_t   *q;
    ngx_im_pub_t  *pub;

    while (!ngx_queue_empty(&s->busy->pubs)) {
        q = ngx_queue_head(&s->busy->pubs);
        pub = ngx_queue_data(q, ngx_im_pub_t, queue);

        if (!pub->done) {
            return;
        }

        ngx_queue_remove(q);

        if (pub->ticket.failed || pub->refused) {
            if (!pub->refused) {
                ngx_im_stats->refused[NGX_IM_REFUSED_STORE]++;
            }

            (void) ngx_im_output_send(s, buf,
                                       im_build_invalid(buf, pub->cmd,
                                                        pub->msgid));

        } else {
            ngx_im_stats->accepted++;

            ack = (pub->cmd == IM_CMD_PUBLISH) ? IM_CMD_PUB_ACK
                  : (pub->cmd == IM_CMD_GROUP_PUBLISH) ? IM_CMD_GROUP_PUB_ACK
                  : IM_CMD_GROUP_PART_PUB_ACK;

            (void) ngx_im_output_send(s, buf,
                                       im_build_ack(buf, ack, pub->msgid));
        }

        ngx_im_pub_free(pub);
    }

    if (s->close_phase == NGX_IM_CP_DRAINING) {
        ngx_im_session_ops->answered(s);
    }
}


/*
 * The admin API's messages have no session: nothing to keep in order, the
 * outcome goes to the API's callback with the recipients.  The checks and
 * the rules are a client's (a sender uid must be in its group), without a
 * client's limits, as for the TCP API.
 */

ngx_int_t
ngx_im_publish_api(uint32_t from, u_char *p, size_t n, im_msg_t *m,
    ngx_str_t *watch, uint64_t token, ngx_im_publish_api_pt done,
    void *data)
{
    ngx_im_pub_t   *pub;
    ngx_im_msg_t   *msg;
    ngx_im_conf_t  *imcf;

    imcf = ngx_im_get_conf();

    if (m->payload_len > imcf->max_payload
        || (m->cmd == IM_CMD_PUBLISH && m->to == 0)
        || (m->cmd == IM_CMD_GROUP_PART_PUBLISH && m->n_uids == 0))
    {
        ngx_im_stats->refused[NGX_IM_REFUSED_INVALID]++;
        done(data, NGX_DECLINED, 0, NULL, 0);
        return NGX_OK;
    }

    pub = ngx_im_pub_alloc();
    if (pub == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(pub, sizeof(ngx_im_pub_t));
    pub->ticket.done = ngx_im_publish_done;
    pub->cmd = m->cmd;
    ngx_memcpy(pub->msgid, m->msgid, IM_MSGID_LEN);
    pub->api = done;
    pub->api_data = data;

    msg = ngx_im_publish_msg(p, n, m, from, watch, token);
    if (msg == NULL) {
        ngx_im_pub_free(pub);
        return NGX_ERROR;
    }

    if (m->cmd == IM_CMD_PUBLISH) {
        pub->msg = msg;
        pub->to1 = m->to;
        pub->to = &pub->to1;
        pub->nto = 1;
        pub->resolved = 1;

        ngx_im_publish_deliver(pub);
        return NGX_OK;
    }

    (void) ngx_im_publish_group(pub, msg, m, from);

    return NGX_OK;
}


static void
ngx_im_publish_api_done(ngx_im_pub_t *pub)
{
    ngx_int_t  rc;

    if (pub->refused) {
        ngx_im_stats->refused[NGX_IM_REFUSED_INVALID]++;
        rc = NGX_DECLINED;

    } else if (pub->ticket.failed) {
        ngx_im_stats->refused[NGX_IM_REFUSED_STORE]++;
        rc = NGX_ERROR;

    } else {
        ngx_im_stats->accepted++;
        rc = NGX_OK;
    }

    pub->api(pub->api_data, rc, pub->why, pub->rcpts, pub->nrcpts);

    if (pub->rcpts && pub->rcpts != &pub->to1) {
        ngx_free(pub->rcpts);
    }

    ngx_im_pub_free(pub);
}


void
ngx_im_publish_end(ngx_im_session_t *s)
{
    ngx_queue_t   *q, late;
    ngx_im_pub_t  *pub;

    /* own messages still under way finish without us; those that waited
     * for their turn go now */

    ngx_queue_init(&late);

    while (!ngx_queue_empty(&s->busy->pubs)) {
        q = ngx_queue_head(&s->busy->pubs);
        pub = ngx_queue_data(q, ngx_im_pub_t, queue);
        ngx_queue_remove(q);

        if (pub->done) {
            ngx_im_pub_free(pub);
            continue;
        }

        pub->session = NULL;

        if (pub->msg && pub->resolved) {
            ngx_queue_insert_tail(&late, q);
        }
    }

    while (!ngx_queue_empty(&late)) {
        q = ngx_queue_head(&late);
        ngx_queue_remove(q);
        ngx_im_publish_deliver(ngx_queue_data(q, ngx_im_pub_t, queue));
    }
}
