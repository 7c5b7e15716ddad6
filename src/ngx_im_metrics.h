/*
 * ngx_im_metrics.h: the node's counters, in shared memory.
 *
 * Each worker counts in a slot of its own in the zone "ngx_im_metrics", so
 * that whichever worker answers a scrape answers for the whole node.  A
 * worker writes only its own slot (plain increments, no atomic operation on
 * the hot path); the counters of a worker that is gone are folded into the
 * retired totals, so every counter only grows for the life of the master.
 */

#ifndef _NGX_IM_METRICS_H_INCLUDED_
#define _NGX_IM_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* transports, as sessions are labelled */
#define NGX_IM_T_WS              0
#define NGX_IM_T_WSS             1
#define NGX_IM_T_TCP             2
#define NGX_IM_T_N               3

/* why a client message was refused with INVALID_PACKET */
#define NGX_IM_REFUSED_INVALID   0     /* what it asks is not possible */
#define NGX_IM_REFUSED_STORE     1     /* Redis could not take it */
#define NGX_IM_REFUSED_SENDER    2     /* its payload names another sender */
#define NGX_IM_REFUSED_RATE      3     /* over the uid's message rate */
#define NGX_IM_REFUSED_FANOUT    4     /* too many recipients */
#define NGX_IM_REFUSED_N         5

/* why a stored message was discarded before it was acked */
#define NGX_IM_DROPPED_CAP       0     /* the inbox was over im_offline_max */
#define NGX_IM_DROPPED_UNREADABLE 1    /* an entry no reader understands */
#define NGX_IM_DROPPED_POISON    2     /* pushed without an ack too often */
#define NGX_IM_DROPPED_N         3

/* what a login over im_max_sessions made the server do */
#define NGX_IM_CAPPED_REFUSED    0     /* the login was refused */
#define NGX_IM_CAPPED_KICKED     1     /* an older session was logged out */
#define NGX_IM_CAPPED_N          2

/* admin API requests (im_api), by what they ask */
#define NGX_IM_API_PRESENCE      0
#define NGX_IM_API_PUBLISH       1
#define NGX_IM_API_KICK          2
#define NGX_IM_API_INBOX         3
#define NGX_IM_API_RECALL        4     /* DELETE of inbox entries */
#define NGX_IM_API_N             5

/* message counters by command byte; commands above 31 count as 0 */
#define NGX_IM_CMDS              32

/* latency buckets, microseconds; the last one is +Inf */
#define NGX_IM_HIST_N            16


typedef struct {
    ngx_atomic_uint_t   bucket[NGX_IM_HIST_N];
    ngx_atomic_uint_t   sum_us;
} ngx_im_hist_t;


/*
 * Counters only grow: a gone worker's are added to the node's retired
 * totals word by word, so every field is an ngx_atomic_uint_t.
 */
typedef struct {
    ngx_atomic_uint_t   opened[NGX_IM_T_N];
    ngx_atomic_uint_t   logins[4];       /* by CONNECT_ACK code */
    ngx_im_hist_t       auth;            /* user-centre answer time */

    ngx_atomic_uint_t   in[NGX_IM_CMDS];
    ngx_atomic_uint_t   out[NGX_IM_CMDS];

    ngx_atomic_uint_t   accepted;        /* messages acked to senders */
    ngx_atomic_uint_t   refused[NGX_IM_REFUSED_N];
    ngx_atomic_uint_t   pushed;
    ngx_atomic_uint_t   repushed;
    ngx_atomic_uint_t   acked;           /* pushes acked by recipients */
    ngx_atomic_uint_t   receipts;        /* RECEIPTs routed to senders */
    ngx_atomic_uint_t   kicked;
    ngx_atomic_uint_t   slow_closed;
    ngx_atomic_uint_t   channel_skipped; /* deliveries to an "alone" uid */

    ngx_atomic_uint_t   stored;
    ngx_atomic_uint_t   loaded;          /* inbox entries read at login */
    ngx_atomic_uint_t   expired;         /* found past their TTL */
    ngx_atomic_uint_t   dropped[NGX_IM_DROPPED_N];

    ngx_atomic_uint_t   redis_commands;
    ngx_atomic_uint_t   redis_failed;    /* no reply: the connection went */
    ngx_atomic_uint_t   redis_reconnects;
    ngx_im_hist_t       redis;           /* command to reply */

    /* events out, by output: [0] the Redis stream, [1] the web hook */
    ngx_atomic_uint_t   events[2];
    ngx_atomic_uint_t   events_dropped[2];

    ngx_atomic_uint_t   capped[NGX_IM_CAPPED_N];   /* im_max_sessions */

    /* read with the field client's lengths in UTF-16 units
     * (docs/PROTOCOL.md 8) */
    ngx_atomic_uint_t   utf16_logins;    /* logins of such a CONNECT */
    ngx_atomic_uint_t   utf16_messages;  /* PUBLISH, GROUP_(PART_)PUBLISH */

    /* the admin API (im_api): requests by endpoint, those answered with
     * an error status, sessions it logged out */
    ngx_atomic_uint_t   api[NGX_IM_API_N];
    ngx_atomic_uint_t   api_errors;
    ngx_atomic_uint_t   api_logouts;

    /* the watchdog's PINGs to a connection that was slow to answer: Redis
     * busy (answered) or gone (then a reconnect follows) */
    ngx_atomic_uint_t   redis_pings;

    /* 1:1 messages delivered without Redis while appends failed
     * (ngx_im_direct.c), and those of them refused after the re-push
     * budget without an ack */
    ngx_atomic_uint_t   direct;
    ngx_atomic_uint_t   direct_refused;
    /* im_redis_sentinel: the master moved; im_redis_wait: WAITs sent,
     * and appends refused because a WAIT found too few replicas */
    ngx_atomic_uint_t   redis_master_switches;
    ngx_atomic_uint_t   redis_waits;
    ngx_atomic_uint_t   redis_wait_short;
    /* a server behind (decision 042): a heartbeat or a re-push that found
     * the client alive (input unread, or its output moving) and waited
     * instead of closing; logins that lost to a newer login of the same
     * uid and ClientId; logins that waited for a place among those in
     * flight (im_logins_in_flight), and those that waited too long */
    ngx_atomic_uint_t   busy_spared;
    ngx_atomic_uint_t   stale_logins;
    ngx_atomic_uint_t   login_queued;
    ngx_atomic_uint_t   login_queue_timeouts;
    /* Redis Cluster (im_redis_cluster): commands sent again after MOVED,
     * after ASK; reads of the slot map; shard channels the cluster
     * unsubscribed (their slot moved) */
    ngx_atomic_uint_t   redis_moved;
    ngx_atomic_uint_t   redis_asked;
    ngx_atomic_uint_t   redis_map_reads;
    ngx_atomic_uint_t   redis_moved_channels;
    /* commands of several keys answered TRYAGAIN (a slot moving), sent
     * again */
    ngx_atomic_uint_t   redis_tryagain;
    /* transactions (decision 037) sent again, whole, after a redirect */
    ngx_atomic_uint_t   redis_tx_again;
    /* uids subscribed again because the subscriber connection that held
     * their channel came back (in a cluster: that master's only) */
    ngx_atomic_uint_t   resubscribed;
    /* write-through group members here pushed with no inbox append, their
     * record's (decision 052); appends made late for those whose sessions
     * let it go unacked; members of gone processes' records delivered
     * again */
    ngx_atomic_uint_t   owed;
    ngx_atomic_uint_t   owe_appended;
    ngx_atomic_uint_t   owe_swept;
    /* owed members cleared by a recall; members of a lost node's records
     * delivered again by this node */
    ngx_atomic_uint_t   owe_recalled;
    ngx_atomic_uint_t   owe_adopted;
} ngx_im_stats_t;


/* what a worker holds now; meaningless once it is gone */
typedef struct {
    ngx_atomic_uint_t   sessions[NGX_IM_T_N];
    ngx_atomic_uint_t   users;           /* uids in the worker's table */
    ngx_atomic_uint_t   redis_up;        /* Redis connections ready */
    ngx_atomic_uint_t   logins_in_flight; /* asking the user centre */
    ngx_atomic_uint_t   login_queue;     /* waiting to ask it */
    ngx_atomic_uint_t   busy;            /* sessions with a busy record */
} ngx_im_gauges_t;


/* what only the answering worker knows, for the JSON */
typedef struct {
    ngx_str_t           id;
    ngx_uint_t          node_users;      /* im_zone's, or 0 */
} ngx_im_metrics_extra_t;


/* this worker's slot, or a private one when there is no zone */
extern ngx_im_stats_t   *ngx_im_stats;
extern ngx_im_gauges_t  *ngx_im_gauges;


/* from a directive that enables the module: declare the zone */
ngx_int_t ngx_im_metrics_zone(ngx_conf_t *cf);
ngx_int_t ngx_im_metrics_init_process(ngx_cycle_t *cycle);
void ngx_im_metrics_exit_process(void);

/* microseconds on a monotonic clock */
uint64_t ngx_im_metrics_now(void);
void ngx_im_metrics_observe(ngx_im_hist_t *h, uint64_t us);

/* the node's view: Prometheus text, or the im_status JSON */
ngx_buf_t *ngx_im_metrics_prometheus(ngx_pool_t *pool);
ngx_buf_t *ngx_im_metrics_json(ngx_pool_t *pool,
    ngx_im_metrics_extra_t *extra);


#endif /* _NGX_IM_METRICS_H_INCLUDED_ */
