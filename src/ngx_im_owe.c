/*
 * ngx_im_owe.c: write-through group messages owed by this worker's
 * members, without an inbox append each (decision 052).
 *
 * Owns the records of owed messages: in Redis one field per message (and
 * page of members) of the hash "im:owe:<node>:<worker slot>", named
 * "<pid>:<seq>" and holding <<EntryLen:32, Entry, Uid:32 ...>>; in the
 * worker which of those members still owe, cleared by an ack (no Redis)
 * or by the inbox append made when a member's sessions let the message
 * go unacked.  The field goes (HDEL, one per pass) once every member is
 * cleared and every late append answered.  A field whose process is gone
 * (kill -9, a crash) is delivered again, whole, by the sweep of the next
 * worker of the slot; the hashes of a node whose lease ran out (a node
 * lost for good) by one worker of another node, under a lock.  A recall
 * clears the members owing its MsgId.
 */

#include <signal.h>

#include "ngx_im_owe.h"
#include "ngx_im_router_int.h"
#include "ngx_im_store.h"
#include "ngx_im_redis.h"


/* a member's state in a record */
#define NGX_IM_OWE_OWING      0
#define NGX_IM_OWE_ACKED      1
#define NGX_IM_OWE_APPENDING  2
#define NGX_IM_OWE_APPENDED   3


typedef struct ngx_im_owe_s  ngx_im_owe_t;

struct ngx_im_owe_s {
    ngx_im_owe_t          *next;        /* the message's other records */
    ngx_queue_t            queue;       /* all records, for a recall */
    ngx_im_msg_t          *msg;
    ngx_im_ticket_t       *ticket;      /* until the field is written */
    uint64_t               seq;         /* the field's name */
    ngx_uint_t             n;
    ngx_uint_t             left;        /* owing, being appended, busy */
    unsigned               written:1;
    unsigned               failed:1;    /* an append failed: field kept */
    uint32_t              *uids;        /* sorted */
    u_char                *state;
};


/* a late append under way */
typedef struct {
    ngx_im_owe_t          *owe;
    ngx_uint_t             i;
} ngx_im_owe_append_t;


/* a record read back: its field and value, the pid and sequence named */
typedef struct {
    redisReply            *field;
    redisReply            *value;
    ngx_pid_t              pid;
    uint64_t               seq;
} ngx_im_owe_left_t;


/* a field of a gone process being delivered again; an adopted one (of a
 * node whose lease ran out) has its key after the field */
typedef struct {
    ngx_im_ticket_t        ticket;
    size_t                 len;
    size_t                 key_len;     /* 0: this worker's own key */
    u_char                 field[1];
} ngx_im_owe_swept_t;


static void ngx_im_owe_written(redisReply *reply, void *data);
static void ngx_im_owe_waited(redisReply *reply, void *data);
static void ngx_im_owe_serve(ngx_im_owe_t *o, ngx_uint_t ok);
static void ngx_im_owe_append(ngx_im_owe_t *o, ngx_uint_t i,
    ngx_im_msg_t *pivot);
static void ngx_im_owe_appended(redisReply *reply, void *data);
static void ngx_im_owe_done(ngx_im_owe_t *o);
static void ngx_im_owe_free(ngx_im_owe_t *o);
static ngx_int_t ngx_im_owe_find(ngx_im_owe_t *o, uint32_t uid);
static void ngx_im_owe_drop_field(u_char *field, size_t len);
static void ngx_im_owe_drop_handler(ngx_event_t *ev);
static void ngx_im_owe_swept(redisReply *reply, void *data);
static ngx_im_owe_left_t *ngx_im_owe_records(redisReply *reply,
    ngx_uint_t gone, ngx_uint_t *m);
static void ngx_im_owe_redelivered(ngx_im_ticket_t *t);
static int ngx_libc_cdecl ngx_im_owe_uid_cmp(const void *one,
    const void *two);
static void ngx_im_owe_sweep_handler(ngx_event_t *ev);
static ngx_int_t ngx_im_owe_redeliver(redisReply *field, redisReply *value,
    ngx_pid_t pid, u_char *key, size_t key_len);
static void ngx_im_owe_lease(void);
static void ngx_im_owe_lease_handler(ngx_event_t *ev);
static void ngx_im_owe_adopt_members(redisReply *reply, void *data);
static void ngx_im_owe_adopt_lease(redisReply *reply, void *data);
static void ngx_im_owe_adopt_locked(redisReply *reply, void *data);
static void ngx_im_owe_adopt_read(redisReply *reply, void *data);


static uint64_t      ngx_im_owe_seq;
static ngx_queue_t   ngx_im_owe_all;
static u_char        ngx_im_owe_key[NGX_IM_STORE_KEY_LEN + 64];
static size_t        ngx_im_owe_key_len;

/* the fields to HDEL at the end of the pass, "<pid>:<seq>" each, in
 * slots of a length byte and the name */
#define NGX_IM_OWE_FIELD_LEN  (1 + NGX_INT64_LEN + 1 + 16)

static u_char       *ngx_im_owe_drops;
static ngx_uint_t    ngx_im_owe_ndrops;
static ngx_uint_t    ngx_im_owe_drops_size;
static ngx_event_t   ngx_im_owe_drop_ev;

/* a sweep also runs this often (ms), for the records of an old worker
 * that went after a reload without clearing them */
#define NGX_IM_OWE_SWEEP  60000

static ngx_event_t   ngx_im_owe_sweep_ev;
/* nginx's debug log reads a descriptor out of every timer's data */
static ngx_connection_t  ngx_im_owe_dummy;

/*
 * Adoption (a node that never comes back): each node keeps a lease,
 * "im:owe_lease:<node>", set with a TTL of im_group_owe_lease by every
 * one of its workers a third of that apart, and names its records' keys
 * in the set "im:owe_nodes".  A key whose node has no lease is adopted,
 * under the lock "im:owe_lock:<key>" (SET NX PX the lease), by one
 * worker of another node: every field delivered again, then HDELed; an
 * empty key leaves the set.
 */
#define NGX_IM_OWE_NODES      "im:owe_nodes"

static ngx_event_t   ngx_im_owe_lease_ev;
static u_char        ngx_im_owe_lease_key[NGX_IM_STORE_KEY_LEN + 64];
static size_t        ngx_im_owe_lease_key_len;
/* steps and deliveries of adoptions under way: no new round meanwhile */
static ngx_uint_t    ngx_im_owe_adopting;

/* deliveries again of a sweep still under way */
static ngx_uint_t    ngx_im_owe_sweeping;
static ngx_uint_t    ngx_im_owe_sweep_again;


ngx_uint_t
ngx_im_owe_on(void)
{
    ngx_im_conf_t  *imcf;

    imcf = ngx_im_get_conf();

    return imcf->group_owe && imcf->delivery == NGX_IM_WRITE_THROUGH;
}


/* "im:owe:<node>:<slot>", the node and slot as hash tag in a cluster */

static void
ngx_im_owe_make_key(void)
{
    u_char         *p, *last;
    ngx_str_t      *node;
    ngx_uint_t      tag;

    if (ngx_im_owe_key_len) {
        return;
    }

    node = &ngx_im_get_conf()->node_id;
    tag = ngx_im_get_conf()->redis_cluster;

    p = ngx_im_owe_key;
    last = ngx_im_owe_key + sizeof(ngx_im_owe_key);

    p = ngx_slprintf(p, last, "im:owe:%s%*s:%ui%s", tag ? "{" : "",
                     ngx_min(node->len, NGX_IM_STORE_KEY_LEN), node->data,
                     (ngx_uint_t) ngx_worker, tag ? "}" : "");

    ngx_im_owe_key_len = p - ngx_im_owe_key;

    p = ngx_slprintf(ngx_im_owe_lease_key,
                     ngx_im_owe_lease_key + sizeof(ngx_im_owe_lease_key),
                     "im:owe_lease:%s%*s%s", tag ? "{" : "",
                     ngx_min(node->len, NGX_IM_STORE_KEY_LEN), node->data,
                     tag ? "}" : "");

    ngx_im_owe_lease_key_len = p - ngx_im_owe_lease_key;
}


static size_t
ngx_im_owe_field(u_char *buf, ngx_pid_t pid, uint64_t seq)
{
    return ngx_sprintf(buf, "%P:%016xL", pid, seq) - buf;
}


/* accept: one field for the members, written before anyone is pushed */

void
ngx_im_owe_deliver(ngx_im_msg_t *msg, uint32_t *uids, ngx_uint_t n,
    ngx_im_ticket_t *t)
{
    u_char        *value, *p, field[NGX_IM_OWE_FIELD_LEN];
    size_t         len;
    ngx_uint_t     i;
    const char    *argv[4];
    size_t         argvlen[4];
    ngx_im_owe_t  *o;

    ngx_im_owe_make_key();

    o = ngx_alloc(sizeof(ngx_im_owe_t) + n * (sizeof(uint32_t) + 1),
                  ngx_cycle->log);
    if (o == NULL) {
        goto refused;
    }

    o->uids = (uint32_t *) (o + 1);
    o->state = (u_char *) (o->uids + n);
    o->n = n;
    o->left = n;
    o->written = 0;
    o->failed = 0;
    o->seq = ++ngx_im_owe_seq;
    o->ticket = t;

    ngx_memcpy(o->uids, uids, n * sizeof(uint32_t));
    ngx_memzero(o->state, n);
    ngx_qsort(o->uids, n, sizeof(uint32_t), ngx_im_owe_uid_cmp);

    len = 4 + msg->entry_len + 4 * n;

    value = ngx_alloc(len, ngx_cycle->log);
    if (value == NULL) {
        ngx_free(o);
        goto refused;
    }

    p = value;
    im_put_u32(p, (uint32_t) msg->entry_len);
    p = ngx_cpymem(p + 4, msg->entry, msg->entry_len);

    for (i = 0; i < n; i++) {
        im_put_u32(p, o->uids[i]);
        p += 4;
    }

    argv[0] = "HSET";
    argvlen[0] = 4;
    argv[1] = (char *) ngx_im_owe_key;
    argvlen[1] = ngx_im_owe_key_len;
    argv[2] = (char *) field;
    argvlen[2] = ngx_im_owe_field(field, ngx_pid, o->seq);
    argv[3] = (char *) value;
    argvlen[3] = len;

    o->msg = ngx_im_msg_ref(msg);
    o->next = msg->owe;
    msg->owe = o;

    if (ngx_im_owe_all.next == NULL) {
        ngx_queue_init(&ngx_im_owe_all);
    }

    ngx_queue_insert_tail(&ngx_im_owe_all, &o->queue);

    if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_owe_written, o, 4, argv,
                         argvlen)
        != NGX_OK)
    {
        ngx_free(value);
        ngx_im_owe_free(o);
        goto refused;
    }

    ngx_free(value);

    /* the sender's acknowledgement rests on it */
    ngx_im_redis_wait_mark();

    return;

refused:

    for (i = 0; i < n; i++) {
        ngx_im_ticket_served(t, 0);
    }
}


static void
ngx_im_owe_written(redisReply *reply, void *data)
{
    ngx_im_owe_t  *o = data;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ngx_im_owe_serve(o, 0);
        return;
    }

    switch (ngx_im_redis_after_wait(ngx_im_owe_waited, o)) {

    case NGX_OK:
        return;

    case NGX_ERROR:
        ngx_im_owe_serve(o, 0);
        return;

    default: /* NGX_DECLINED: no WAIT */
        ngx_im_owe_serve(o, 1);
    }
}


static void
ngx_im_owe_waited(redisReply *reply, void *data)
{
    ngx_im_owe_serve(data, reply != NULL);
}


/*
 * Redis has the field (or refused it): the pushes, or nothing at all
 * (decision 037).  A member with no session here left meanwhile: its
 * append now.  The record is kept busy (left + 1) while the pushes go:
 * a push may close a session, whose release clears its member.
 */

static void
ngx_im_owe_serve(ngx_im_owe_t *o, ngx_uint_t ok)
{
    u_char            field[NGX_IM_OWE_FIELD_LEN];
    ngx_uint_t        i, n;
    ngx_im_user_t    *u;
    ngx_im_ticket_t  *t;

    t = o->ticket;
    o->ticket = NULL;
    n = o->n;

    if (!ok) {
        /* refused: a field that reached the master without its replicas
         * must not be delivered by a sweep */
        ngx_im_owe_drop_field(field, ngx_im_owe_field(field, ngx_pid,
                                                      o->seq));
        o->left = 0;
        ngx_im_owe_free(o);

        for (i = 0; i < n; i++) {
            ngx_im_ticket_served(t, 0);
        }

        return;
    }

    o->written = 1;
    o->left++;

    for (i = 0; i < n; i++) {
        if (o->state[i] != NGX_IM_OWE_OWING) {
            continue;
        }

        ngx_im_stats->owed++;

        u = ngx_im_table_find(o->uids[i]);

        if (u == NULL || ngx_im_router_local(u, o->msg, NGX_IM_OWED, 0) == 0)
        {
            ngx_im_owe_append(o, i, NULL);
        }
    }

    ngx_im_owe_done(o);

    /* the ticket may be served whole, and freed, at the last one */

    for (i = 0; i < n; i++) {
        ngx_im_ticket_served(t, 1);
    }
}


static ngx_int_t
ngx_im_owe_find(ngx_im_owe_t *o, uint32_t uid)
{
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = o->n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        if (o->uids[mid] == uid) {
            return (ngx_int_t) mid;
        }

        if (o->uids[mid] < uid) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NGX_ERROR;
}


void
ngx_im_owe_acked(ngx_im_msg_t *msg, uint32_t uid)
{
    ngx_int_t      i;
    ngx_im_owe_t  *o;

    for (o = msg->owe; o; o = o->next) {
        i = ngx_im_owe_find(o, uid);

        if (i == NGX_ERROR) {
            continue;
        }

        switch (o->state[i]) {

        case NGX_IM_OWE_OWING:
            o->state[i] = NGX_IM_OWE_ACKED;
            ngx_im_owe_done(o);
            return;

        case NGX_IM_OWE_ACKED:
            return;

        default:
            /* appended already: it leaves the inbox as any ack's */
            ngx_im_store_remove(uid, msg);
            return;
        }
    }

    /* the record is gone: every member was cleared, this one by an
     * append perhaps, which another device's ack removes */
    ngx_im_store_remove(uid, msg);
}


void
ngx_im_owe_release(ngx_im_msg_t *msg, uint32_t uid, ngx_im_msg_t *pivot)
{
    ngx_int_t      i;
    ngx_im_owe_t  *o;

    for (o = msg->owe; o; o = o->next) {
        i = ngx_im_owe_find(o, uid);

        if (i != NGX_ERROR) {
            if (o->state[i] == NGX_IM_OWE_OWING) {
                ngx_im_owe_append(o, i, pivot);
            }

            return;
        }
    }
}


/*
 * A recall of msgid (the admin API): a member here that still owes it is
 * cleared as by an ack, so that no late append puts the message back in
 * its inbox; one whose append is made or under way has it removed again,
 * behind the append on the same connection.  Returns the members cleared.
 */

ngx_uint_t
ngx_im_owe_recall(uint32_t uid, const u_char *msgid)
{
    ngx_int_t      i;
    ngx_uint_t     n;
    ngx_queue_t   *q, *next;
    ngx_im_owe_t  *o;

    if (ngx_im_owe_all.next == NULL) {
        return 0;
    }

    n = 0;

    for (q = ngx_queue_head(&ngx_im_owe_all);
         q != ngx_queue_sentinel(&ngx_im_owe_all);
         q = next)
    {
        next = ngx_queue_next(q);
        o = ngx_queue_data(q, ngx_im_owe_t, queue);

        if (ngx_memcmp(o->msg->msgid, msgid, IM_MSGID_LEN) != 0) {
            continue;
        }

        i = ngx_im_owe_find(o, uid);

        if (i == NGX_ERROR) {
            continue;
        }

        switch (o->state[i]) {

        case NGX_IM_OWE_OWING:
            o->state[i] = NGX_IM_OWE_ACKED;
            ngx_im_stats->owe_recalled++;
            n++;

            ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                          "im owe: uid %uD: an owed group message recalled",
                          uid);

            /* o may go here, its next is kept */
            ngx_im_owe_done(o);
            break;

        case NGX_IM_OWE_APPENDING:
        case NGX_IM_OWE_APPENDED:
            ngx_im_store_remove(uid, o->msg);
            break;

        default: /* acked */
            break;
        }
    }

    return n;
}


static void
ngx_im_owe_append(ngx_im_owe_t *o, ngx_uint_t i, ngx_im_msg_t *pivot)
{
    ngx_im_owe_append_t  *a;

    o->state[i] = NGX_IM_OWE_APPENDING;
    ngx_im_stats->owe_appended++;

    a = ngx_alloc(sizeof(ngx_im_owe_append_t), ngx_cycle->log);

    if (a) {
        a->owe = o;
        a->i = i;

        if (ngx_im_store_insert(o->uids[i], o->msg, pivot,
                                ngx_im_owe_appended, a)
            == NGX_OK)
        {
            if ((ngx_exiting || ngx_quit || ngx_terminate)
                && !ngx_im_get_conf()->redis_cluster)
            {
                /* a worker that is going may not see the reply: the
                 * HDEL goes behind the append on the same connection,
                 * which Redis runs in order */
                a->owe = NULL;
                o->state[i] = NGX_IM_OWE_APPENDED;
                ngx_im_owe_done(o);
            }

            return;
        }

        ngx_free(a);
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "im owe: uid %uD: an unacknowledged group message could "
                  "not be stored: its record stays for a later sweep",
                  o->uids[i]);

    o->failed = 1;
    o->state[i] = NGX_IM_OWE_APPENDED;
    ngx_im_owe_done(o);
}


static void
ngx_im_owe_appended(redisReply *reply, void *data)
{
    ngx_im_owe_append_t  *a = data;

    ngx_uint_t     i;
    ngx_im_owe_t  *o;

    o = a->owe;
    i = a->i;
    ngx_free(a);

    if (o == NULL) {
        /* counted when it was sent */
        (void) ngx_im_store_pushed(reply);
        return;
    }

    if (ngx_im_store_pushed(reply) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im owe: uid %uD: the append of an unacknowledged "
                      "group message failed: its record stays for a later "
                      "sweep", o->uids[i]);
        o->failed = 1;
    }

    o->state[i] = NGX_IM_OWE_APPENDED;
    ngx_im_owe_done(o);
}


/* a member cleared (or the pushes gone): at the last one the field goes,
 * behind every append it waited for */

static void
ngx_im_owe_done(ngx_im_owe_t *o)
{
    u_char  field[NGX_IM_OWE_FIELD_LEN];

    if (--o->left) {
        return;
    }

    if (!o->failed) {
        ngx_im_owe_drop_field(field, ngx_im_owe_field(field, ngx_pid,
                                                      o->seq));
    }

    ngx_im_owe_free(o);
}


static void
ngx_im_owe_free(ngx_im_owe_t *o)
{
    ngx_im_owe_t  **pp;

    ngx_queue_remove(&o->queue);

    for (pp = &o->msg->owe; *pp; pp = &(*pp)->next) {
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    }

    ngx_im_msg_unref(o->msg);
    ngx_free(o);
}


/* HDELs of a pass in one command, at its end */

static void
ngx_im_owe_drop_field(u_char *field, size_t len)
{
    u_char      *drops;
    ngx_uint_t   size;

    if (len > NGX_IM_OWE_FIELD_LEN - 1) {
        /* not one of ours (the sweep read it): left alone */
        return;
    }

    if (ngx_im_owe_ndrops == ngx_im_owe_drops_size) {
        size = ngx_im_owe_drops_size ? 2 * ngx_im_owe_drops_size : 64;

        drops = ngx_alloc(size * NGX_IM_OWE_FIELD_LEN, ngx_cycle->log);
        if (drops == NULL) {
            /* the field stays: a sweep delivers it again after this
             * process is gone */
            return;
        }

        if (ngx_im_owe_drops) {
            ngx_memcpy(drops, ngx_im_owe_drops,
                       ngx_im_owe_ndrops * NGX_IM_OWE_FIELD_LEN);
            ngx_free(ngx_im_owe_drops);
        }

        ngx_im_owe_drops = drops;
        ngx_im_owe_drops_size = size;
    }

    /* each slot: its length, then the name */
    drops = ngx_im_owe_drops + ngx_im_owe_ndrops * NGX_IM_OWE_FIELD_LEN;
    drops[0] = (u_char) len;
    ngx_memcpy(drops + 1, field, len);

    ngx_im_owe_ndrops++;

    if (!ngx_im_owe_drop_ev.posted) {
        ngx_im_owe_drop_ev.handler = ngx_im_owe_drop_handler;
        ngx_im_owe_drop_ev.log = ngx_cycle->log;
        ngx_post_event(&ngx_im_owe_drop_ev, &ngx_posted_events);
    }
}


static void
ngx_im_owe_drop_handler(ngx_event_t *ev)
{
    u_char       *f;
    size_t       *argvlen;
    ngx_uint_t    i, n;
    const char  **argv;

    n = ngx_im_owe_ndrops;

    if (n == 0) {
        return;
    }

    argv = ngx_alloc((n + 2) * (sizeof(char *) + sizeof(size_t)),
                     ngx_cycle->log);
    if (argv == NULL) {
        ngx_im_owe_ndrops = 0;
        return;
    }

    argvlen = (size_t *) (argv + n + 2);

    argv[0] = "HDEL";
    argvlen[0] = 4;
    argv[1] = (char *) ngx_im_owe_key;
    argvlen[1] = ngx_im_owe_key_len;

    for (i = 0; i < n; i++) {
        f = ngx_im_owe_drops + i * NGX_IM_OWE_FIELD_LEN;
        argv[i + 2] = (char *) f + 1;
        argvlen[i + 2] = f[0];
    }

    /* a field that stays is delivered again after a crash: a duplicate,
     * never a loss */
    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, (int) n + 2,
                            argv, argvlen);

    ngx_free(argv);
    ngx_im_owe_ndrops = 0;
}


static int ngx_libc_cdecl
ngx_im_owe_uid_cmp(const void *one, const void *two)
{
    uint32_t  a = *(const uint32_t *) one;
    uint32_t  b = *(const uint32_t *) two;

    return (a < b) ? -1 : (a > b);
}


/*
 * The sweep: the fields of this slot's hash whose process is gone are
 * delivered again as new write-through deliveries (appended, and pushed
 * live to sessions anywhere), oldest first, then HDELed.  A process is
 * gone when signal 0 cannot reach its pid on this host; an old worker
 * still serving after a reload keeps its fields.  Run whenever the inbox
 * connection comes up, so also at a worker's start.
 */

void
ngx_im_owe_sweep(void)
{
    const char  *argv[2];
    size_t       argvlen[2];

    if (!ngx_im_owe_on()) {
        return;
    }

    if (ngx_im_owe_sweep_ev.handler == NULL) {
        ngx_im_owe_sweep_ev.handler = ngx_im_owe_sweep_handler;
        ngx_im_owe_sweep_ev.data = &ngx_im_owe_dummy;
        ngx_im_owe_sweep_ev.log = ngx_cycle->log;
        ngx_im_owe_sweep_ev.cancelable = 1;
        ngx_im_owe_dummy.fd = (ngx_socket_t) -1;
    }

    if (!ngx_im_owe_sweep_ev.timer_set) {
        ngx_add_timer(&ngx_im_owe_sweep_ev, NGX_IM_OWE_SWEEP);
    }

    if (ngx_im_owe_lease_ev.handler == NULL) {
        ngx_im_owe_lease_ev.handler = ngx_im_owe_lease_handler;
        ngx_im_owe_lease_ev.data = &ngx_im_owe_dummy;
        ngx_im_owe_lease_ev.log = ngx_cycle->log;
        ngx_im_owe_lease_ev.cancelable = 1;
    }

    ngx_im_owe_make_key();

    /* the lease and the registry at once: a worker's start, or its inbox
     * connection back */
    ngx_im_owe_lease();

    if (!ngx_im_owe_lease_ev.timer_set) {
        ngx_add_timer(&ngx_im_owe_lease_ev,
                      ngx_im_get_conf()->group_owe_lease / 3);
    }

    if (ngx_im_owe_sweeping) {
        ngx_im_owe_sweep_again = 1;
        return;
    }

    ngx_im_owe_make_key();

    argv[0] = "HGETALL";
    argvlen[0] = 7;
    argv[1] = (char *) ngx_im_owe_key;
    argvlen[1] = ngx_im_owe_key_len;

    if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_owe_swept, NULL, 2,
                         argv, argvlen)
        == NGX_OK)
    {
        ngx_im_owe_sweeping = 1;
    }
}


static void
ngx_im_owe_sweep_handler(ngx_event_t *ev)
{
    if (!ngx_exiting && !ngx_quit && !ngx_terminate) {
        ngx_im_owe_sweep();
    }
}


static int ngx_libc_cdecl
ngx_im_owe_left_cmp(const void *one, const void *two)
{
    const ngx_im_owe_left_t  *a = one;
    const ngx_im_owe_left_t  *b = two;

    if (a->pid != b->pid) {
        return (a->pid < b->pid) ? -1 : 1;
    }

    return (a->seq < b->seq) ? -1 : (a->seq > b->seq);
}


/*
 * The fields of a record hash read whole (HGETALL), oldest first: by pid,
 * then sequence.  gone: only those of processes that are gone (the crash
 * sweep), else all of them (an adopted node's, whose pids mean nothing
 * here).  NULL when there is no memory; *m is the count.
 */

static ngx_im_owe_left_t *
ngx_im_owe_records(redisReply *reply, ngx_uint_t gone, ngx_uint_t *m)
{
    u_char             *p, *end;
    ngx_int_t           pid;
    ngx_uint_t          i, j, k, n;
    ngx_im_owe_left_t  *left;

    n = reply->elements / 2;

    left = ngx_alloc(n * sizeof(ngx_im_owe_left_t), ngx_cycle->log);
    if (left == NULL) {
        return NULL;
    }

    j = 0;

    for (i = 0; i < n; i++) {
        left[j].field = reply->element[2 * i];
        left[j].value = reply->element[2 * i + 1];

        if (left[j].field->type != REDIS_REPLY_STRING
            || left[j].value->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        p = (u_char *) left[j].field->str;
        end = p + left[j].field->len;

        for (k = 0; p + k < end && p[k] != ':'; k++) { /* void */ }

        pid = ngx_atoi(p, k);

        if (gone) {
            if (pid <= 0 || p + k == end) {
                continue;
            }

            if ((ngx_pid_t) pid == ngx_pid
                || kill((pid_t) pid, 0) == 0 || ngx_errno != NGX_ESRCH)
            {
                /* this process's, or one that still runs */
                continue;
            }
        }

        left[j].pid = (pid > 0) ? (ngx_pid_t) pid : 0;
        left[j].seq = (p + k < end)
                      ? (uint64_t) ngx_hextoi(p + k + 1, end - p - k - 1)
                      : 0;
        j++;
    }

    ngx_qsort(left, j, sizeof(ngx_im_owe_left_t), ngx_im_owe_left_cmp);

    *m = j;

    return left;
}


static void
ngx_im_owe_swept(redisReply *reply, void *data)
{
    ngx_uint_t           i, n, m;
    ngx_im_owe_left_t   *left;

    /* the read is in: from here sweeping counts the deliveries under way,
     * and one for this call (a delivery may be served before it returns) */

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "im owe: the sweep's read of %*s failed",
                      ngx_im_owe_key_len, ngx_im_owe_key);
        goto done;
    }

    if (reply->elements < 2) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "im owe: sweep of %*s: no records",
                      ngx_im_owe_key_len, ngx_im_owe_key);
        goto done;
    }

    n = reply->elements / 2;

    left = ngx_im_owe_records(reply, 1, &m);
    if (left == NULL) {
        goto done;
    }

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "im owe: sweep of %*s: %ui records, %ui of gone "
                  "processes", ngx_im_owe_key_len, ngx_im_owe_key, n, m);

    for (i = 0; i < m; i++) {
        (void) ngx_im_owe_redeliver(left[i].field, left[i].value,
                                    left[i].pid, NULL, 0);
    }

    ngx_free(left);

done:

    if (--ngx_im_owe_sweeping == 0 && ngx_im_owe_sweep_again) {
        ngx_im_owe_sweep_again = 0;
        ngx_im_owe_sweep();
    }
}


/* a field delivered again: it goes, unless some member was refused (the
 * next sweep tries again) */

static void
ngx_im_owe_redelivered(ngx_im_ticket_t *t)
{
    ngx_im_owe_swept_t  *sw = (ngx_im_owe_swept_t *) t;

    const char  *argv[3];
    size_t       argvlen[3];

    if (sw->key_len) {
        if (!t->failed) {
            argv[0] = "HDEL";
            argvlen[0] = 4;
            argv[1] = (char *) sw->field + sw->len;
            argvlen[1] = sw->key_len;
            argv[2] = (char *) sw->field;
            argvlen[2] = sw->len;

            (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 3,
                                    argv, argvlen);
        }

        ngx_free(sw);
        ngx_im_owe_adopting--;
        return;
    }

    if (!t->failed) {
        ngx_im_owe_drop_field(sw->field, sw->len);
    }

    ngx_free(sw);

    if (--ngx_im_owe_sweeping == 0 && ngx_im_owe_sweep_again) {
        ngx_im_owe_sweep_again = 0;
        ngx_im_owe_sweep();
    }
}


/*
 * One field delivered again, whole, as a new write-through delivery:
 * NGX_OK when a delivery went (its ticket's end counts it down); an
 * unreadable field is dropped.  key: an adopted record's, else this
 * worker's own.
 */

static ngx_int_t
ngx_im_owe_redeliver(redisReply *field, redisReply *value, ngx_pid_t pid,
    u_char *key, size_t key_len)
{
    u_char              *p, *end;
    size_t               elen;
    uint32_t            *uids;
    ngx_uint_t           n, k;
    ngx_im_msg_t        *msg;
    ngx_im_owe_swept_t  *sw;
    const char          *argv[3];
    size_t               argvlen[3];

    p = (u_char *) value->str;
    end = p + value->len;

    if (end - p < 4) {
        goto bad;
    }

    elen = im_get_u32(p);
    p += 4;

    if ((size_t) (end - p) < elen || (end - p - elen) % 4) {
        goto bad;
    }

    msg = ngx_im_msg_from_entry(p, elen);
    if (msg == NULL) {
        goto bad;
    }

    p += elen;
    n = (end - p) / 4;

    if (n == 0) {
        ngx_im_msg_unref(msg);
        goto bad;
    }

    sw = ngx_alloc(offsetof(ngx_im_owe_swept_t, field) + field->len
                   + key_len, ngx_cycle->log);
    /* the uids apart: the ticket, sw with it, may be served whole
     * before the delivery returns */
    uids = ngx_alloc(n * sizeof(uint32_t), ngx_cycle->log);

    if (sw == NULL || uids == NULL) {
        if (sw) {
            ngx_free(sw);
        }

        if (uids) {
            ngx_free(uids);
        }

        ngx_im_msg_unref(msg);
        return NGX_ERROR;
    }

    ngx_memcpy(sw->field, field->str, field->len);
    sw->len = field->len;
    sw->key_len = key_len;

    if (key_len) {
        ngx_memcpy(sw->field + field->len, key, key_len);
    }

    for (k = 0; k < n; k++) {
        uids[k] = im_get_u32(p + 4 * k);
    }

    ngx_memzero(&sw->ticket, sizeof(ngx_im_ticket_t));
    sw->ticket.done = ngx_im_owe_redelivered;

    if (key_len) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "im owe: a record of %*s, whose node's lease ran out, "
                      "delivered again to %ui members", key_len, key, n);
        ngx_im_stats->owe_adopted += n;
        ngx_im_owe_adopting++;

    } else {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "im owe: a record of gone process %P delivered "
                      "again to %ui members", pid, n);
        ngx_im_stats->owe_swept += n;
        ngx_im_owe_sweeping++;
    }

    ngx_im_router_deliver(msg, uids, n, &sw->ticket);
    ngx_im_msg_unref(msg);
    ngx_free(uids);

    return NGX_OK;

bad:

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "im owe: an unreadable record %*s dropped",
                  field->len, field->str);

    if (key_len == 0) {
        ngx_im_owe_drop_field((u_char *) field->str, field->len);
        return NGX_DECLINED;
    }

    argv[0] = "HDEL";
    argvlen[0] = 4;
    argv[1] = (char *) key;
    argvlen[1] = key_len;
    argv[2] = field->str;
    argvlen[2] = field->len;

    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 3, argv,
                            argvlen);

    return NGX_DECLINED;
}


/* the lease of this node, and its key in the registry */

static void
ngx_im_owe_lease(void)
{
    u_char       ms[NGX_INT_T_LEN];
    const char  *argv[5];
    size_t       argvlen[5];

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (char *) ngx_im_owe_lease_key;
    argvlen[1] = ngx_im_owe_lease_key_len;
    argv[2] = (char *) ngx_im_worker_id.data;
    argvlen[2] = ngx_im_worker_id.len;
    argv[3] = "PX";
    argvlen[3] = 2;
    argv[4] = (char *) ms;
    argvlen[4] = ngx_sprintf(ms, "%M", ngx_im_get_conf()->group_owe_lease)
                 - ms;

    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 5, argv,
                            argvlen);

    argv[0] = "SADD";
    argvlen[0] = 4;
    argv[1] = NGX_IM_OWE_NODES;
    argvlen[1] = sizeof(NGX_IM_OWE_NODES) - 1;
    argv[2] = (char *) ngx_im_owe_key;
    argvlen[2] = ngx_im_owe_key_len;

    (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 3, argv,
                            argvlen);
}


static void
ngx_im_owe_lease_handler(ngx_event_t *ev)
{
    const char  *argv[2];
    size_t       argvlen[2];

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        /* an old worker's end: the new ones hold the lease */
        return;
    }

    ngx_add_timer(ev, ngx_im_get_conf()->group_owe_lease / 3);

    ngx_im_owe_lease();

    if (ngx_im_owe_adopting) {
        return;
    }

    argv[0] = "SMEMBERS";
    argvlen[0] = 8;
    argv[1] = NGX_IM_OWE_NODES;
    argvlen[1] = sizeof(NGX_IM_OWE_NODES) - 1;

    if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_owe_adopt_members, NULL,
                         2, argv, argvlen)
        == NGX_OK)
    {
        ngx_im_owe_adopting++;
    }
}


/* an adoption's step: the key it is about, and the lease key of its node */
typedef struct {
    size_t                 key_len;
    size_t                 lease_len;
    u_char                 key[1];
} ngx_im_owe_adopt_t;


static void
ngx_im_owe_adopt_members(redisReply *reply, void *data)
{
    u_char              *p, *end, *node, *last;
    size_t               len;
    ngx_uint_t           i, tag;
    redisReply          *e;
    const char          *argv[2];
    size_t               argvlen[2];
    ngx_im_owe_adopt_t  *ad;

    tag = ngx_im_get_conf()->redis_cluster;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        goto done;
    }

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_STRING
            || e->len <= sizeof("im:owe:") - 1
            || ngx_strncmp(e->str, "im:owe:", sizeof("im:owe:") - 1) != 0
            || e->len > NGX_IM_STORE_KEY_LEN + 64)
        {
            continue;
        }

        /* "im:owe:<node>:<slot>", in a cluster "im:owe:{<node>:<slot>}" */

        p = (u_char *) e->str;
        end = p + e->len;
        node = p + sizeof("im:owe:") - 1;
        last = end;

        if (tag && *node == '{' && end[-1] == '}') {
            node++;
            last--;
        }

        while (last > node && last[-1] != ':') {
            last--;
        }

        if (last - node < 2) {
            continue;
        }

        last--;                 /* the ':' before the slot */

        if ((size_t) (last - node) == ngx_im_get_conf()->node_id.len
            && ngx_strncmp(node, ngx_im_get_conf()->node_id.data,
                           last - node)
               == 0)
        {
            /* this node's: its workers sweep them */
            continue;
        }

        len = e->len + sizeof("im:owe_lease:{}") + (last - node);

        ad = ngx_alloc(sizeof(ngx_im_owe_adopt_t) + len, ngx_cycle->log);
        if (ad == NULL) {
            continue;
        }

        ngx_memcpy(ad->key, e->str, e->len);
        ad->key_len = e->len;

        p = ngx_sprintf(ad->key + e->len, "im:owe_lease:%s%*s%s",
                        tag ? "{" : "", (size_t) (last - node), node,
                        tag ? "}" : "");
        ad->lease_len = p - (ad->key + e->len);

        argv[0] = "EXISTS";
        argvlen[0] = 6;
        argv[1] = (char *) ad->key + e->len;
        argvlen[1] = ad->lease_len;

        if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_owe_adopt_lease, ad,
                             2, argv, argvlen)
            != NGX_OK)
        {
            ngx_free(ad);
            continue;
        }

        ngx_im_owe_adopting++;
    }

done:

    ngx_im_owe_adopting--;
}


static void
ngx_im_owe_adopt_lease(redisReply *reply, void *data)
{
    ngx_im_owe_adopt_t  *ad = data;

    u_char       ms[NGX_INT_T_LEN], *lock;
    const char  *argv[6];
    size_t       argvlen[6];

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER
        || reply->integer != 0)
    {
        /* its node is there (or Redis did not say) */
        goto done;
    }

    /* the lock: one adopter per key for a lease's time */

    lock = ngx_alloc(sizeof("im:owe_lock:") + ad->key_len, ngx_cycle->log);
    if (lock == NULL) {
        goto done;
    }

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (char *) lock;
    argvlen[1] = ngx_sprintf(lock, "im:owe_lock:%*s", ad->key_len, ad->key)
                 - lock;
    argv[2] = (char *) ngx_im_worker_id.data;
    argvlen[2] = ngx_im_worker_id.len;
    argv[3] = "NX";
    argvlen[3] = 2;
    argv[4] = "PX";
    argvlen[4] = 2;
    argv[5] = (char *) ms;
    argvlen[5] = ngx_sprintf(ms, "%M", ngx_im_get_conf()->group_owe_lease)
                 - ms;

    if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_owe_adopt_locked, ad, 6,
                         argv, argvlen)
        == NGX_OK)
    {
        ngx_free(lock);
        return;
    }

    ngx_free(lock);

done:

    ngx_free(ad);
    ngx_im_owe_adopting--;
}


static void
ngx_im_owe_adopt_locked(redisReply *reply, void *data)
{
    ngx_im_owe_adopt_t  *ad = data;

    const char  *argv[2];
    size_t       argvlen[2];

    if (reply == NULL || reply->type != REDIS_REPLY_STATUS) {
        /* another worker holds it */
        goto done;
    }

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "im owe: %*s: its node's lease ran out, adopted",
                  ad->key_len, ad->key);

    argv[0] = "HGETALL";
    argvlen[0] = 7;
    argv[1] = (char *) ad->key;
    argvlen[1] = ad->key_len;

    if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_owe_adopt_read, ad, 2,
                         argv, argvlen)
        == NGX_OK)
    {
        return;
    }

done:

    ngx_free(ad);
    ngx_im_owe_adopting--;
}


static void
ngx_im_owe_adopt_read(redisReply *reply, void *data)
{
    ngx_im_owe_adopt_t  *ad = data;

    ngx_uint_t          i, n, m;
    const char         *argv[3];
    size_t              argvlen[3];
    ngx_im_owe_left_t  *left;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        goto done;
    }

    n = reply->elements / 2;

    if (n == 0) {
        /* emptied: it leaves the registry (its node, back, adds it again
         * at its next lease) */
        argv[0] = "SREM";
        argvlen[0] = 4;
        argv[1] = NGX_IM_OWE_NODES;
        argvlen[1] = sizeof(NGX_IM_OWE_NODES) - 1;
        argv[2] = (char *) ad->key;
        argvlen[2] = ad->key_len;

        (void) ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, NULL, NULL, 3, argv,
                                argvlen);
        goto done;
    }

    left = ngx_im_owe_records(reply, 0, &m);
    if (left == NULL) {
        goto done;
    }

    for (i = 0; i < m; i++) {
        (void) ngx_im_owe_redeliver(left[i].field, left[i].value, 0,
                                    ad->key, ad->key_len);
    }

    ngx_free(left);

done:

    ngx_free(ad);
    ngx_im_owe_adopting--;
}
