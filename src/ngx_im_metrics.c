/*
 * ngx_im_metrics.c: the node's counters, in shared memory.
 *
 * Owns the zone "ngx_im_metrics": a slot per live worker (its counters and
 * gauges, written by that worker only) and the retired totals of workers
 * that are gone.  A worker takes a free slot when it starts, or the slot
 * of a process that died (folding that one's counters first), and folds
 * its own counters when it exits; a scrape folds the slots of the dead it
 * finds.  The zone keeps its name and size across reloads, so nginx hands
 * the same memory to the new cycle and the counters go on.
 *
 * Also owns the two views of the node: the Prometheus text format and the
 * JSON of im_status.
 */

#include "ngx_im.h"


#define NGX_IM_METRICS_SLOTS  64


typedef struct {
    ngx_pid_t           pid;             /* 0: free */
    ngx_uint_t          worker;          /* ngx_worker */
    time_t              since;
    ngx_im_gauges_t     gauges;
    ngx_im_stats_t      stats;
} ngx_im_metrics_slot_t;


typedef struct {
    ngx_im_stats_t          retired;
    ngx_im_metrics_slot_t   slot[NGX_IM_METRICS_SLOTS];
} ngx_im_metrics_sh_t;


typedef struct {
    ngx_uint_t          worker;
    ngx_pid_t           pid;
    time_t              since;
    ngx_atomic_uint_t   sessions;
    ngx_atomic_uint_t   users;
    ngx_atomic_uint_t   redis_up;
} ngx_im_metrics_live_t;


typedef struct {
    ngx_im_stats_t          total;
    ngx_im_gauges_t         gauges;      /* summed over the live */
    ngx_uint_t              nlive;
    ngx_im_metrics_live_t   live[NGX_IM_METRICS_SLOTS];
} ngx_im_metrics_snap_t;


static ngx_int_t ngx_im_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_im_metrics_fold(ngx_im_metrics_sh_t *sh,
    ngx_im_metrics_slot_t *slot);
static void ngx_im_metrics_live(ngx_im_metrics_live_t *live,
    ngx_uint_t worker, ngx_pid_t pid, time_t since, ngx_im_gauges_t *g);
static ngx_int_t ngx_im_metrics_snap(ngx_im_metrics_snap_t *snap);


static ngx_im_stats_t          ngx_im_metrics_own_stats;
static ngx_im_gauges_t         ngx_im_metrics_own_gauges;

ngx_im_stats_t                *ngx_im_stats = &ngx_im_metrics_own_stats;
ngx_im_gauges_t               *ngx_im_gauges = &ngx_im_metrics_own_gauges;

static ngx_shm_zone_t         *ngx_im_metrics_shm;
static ngx_im_metrics_slot_t  *ngx_im_metrics_slot;

static ngx_str_t  ngx_im_metrics_name = ngx_string("ngx_im_metrics");

/* upper bounds of the latency buckets, microseconds */
static uint64_t  ngx_im_metrics_le[NGX_IM_HIST_N - 1] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    500000, 1000000, 2500000, 5000000
};

static char  *ngx_im_metrics_le_text[NGX_IM_HIST_N] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"
};

static char  *ngx_im_metrics_transports[NGX_IM_T_N] = {
    "ws", "wss", "tcp"
};

/* CONNECT_ACK codes (docs/PROTOCOL.md 3.1) */
static char  *ngx_im_metrics_results[4] = {
    "accepted", "duplicate", "unavailable", "denied"
};

static char  *ngx_im_metrics_refusals[NGX_IM_REFUSED_N] = {
    "invalid", "store", "sender", "rate", "fanout"
};

static char  *ngx_im_metrics_capped[NGX_IM_CAPPED_N] = {
    "refused", "kicked"
};

static char  *ngx_im_metrics_outputs[2] = {
    "stream", "hook"
};

static char  *ngx_im_metrics_api[NGX_IM_API_N] = {
    "presence", "publish", "kick", "inbox", "recall"
};

static char  *ngx_im_metrics_drops[NGX_IM_DROPPED_N] = {
    "inbox_cap", "unreadable", "poison"
};

/* command names by byte (docs/PROTOCOL.md 2); NULL: not a command */
static char  *ngx_im_metrics_cmds[NGX_IM_CMDS] = {
    "other", "connect", "connect_ack", "publish", "pub_ack",
    "group_publish", "group_pub_ack", "ping", "ping_resp", "disconnect",
    "invalid", "group_part_publish", "group_part_pub_ack", NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, "logout", NULL
};


/*
 * What the node shows, in the order of the Prometheus text: a metric is a
 * counter or gauge (one value, or one per value of a label) or a
 * histogram, read at its offset in the counters or the gauges.  "json" is
 * its key in im_status (NULL: not there, or in the older keys that open
 * that answer).  A new counter is a line here.
 */
typedef struct {
    char                *name;
    char                *json;
    char                *type;
    char                *help;
    char                *label;       /* NULL: one value */
    char               **values;      /* the label's; NULL ones are skipped */
    ngx_uint_t           n;
    unsigned             gauge:1;     /* in ngx_im_gauges_t */
    unsigned             hist:1;
    size_t               offset;
} ngx_im_metric_t;


#define ngx_im_metric_counter(name, json, field, help)                        \
    { name, json, "counter", help, NULL, NULL, 1, 0, 0,                       \
      offsetof(ngx_im_stats_t, field) }

#define ngx_im_metric_gauge(name, json, field, help)                          \
    { name, json, "gauge", help, NULL, NULL, 1, 1, 0,                         \
      offsetof(ngx_im_gauges_t, field) }

#define ngx_im_metric_counters(name, json, field, label, values, n, help)     \
    { name, json, "counter", help, label, values, n, 0, 0,                    \
      offsetof(ngx_im_stats_t, field) }

#define ngx_im_metric_gauges(name, json, field, label, values, n, help)       \
    { name, json, "gauge", help, label, values, n, 1, 0,                      \
      offsetof(ngx_im_gauges_t, field) }

#define ngx_im_metric_hist(name, field, help)                                 \
    { name, NULL, "histogram", help, NULL, NULL, 0, 0, 1,                     \
      offsetof(ngx_im_stats_t, field) }


static ngx_im_metric_t  ngx_im_metrics[] = {
    ngx_im_metric_gauges("im_sessions", "sessions_by_transport", sessions,
        "transport", ngx_im_metrics_transports, NGX_IM_T_N,
        "Sessions open now, by transport."),
    ngx_im_metric_counters("im_sessions_opened_total", NULL, opened,
        "transport", ngx_im_metrics_transports, NGX_IM_T_N,
        "Sessions opened, by transport."),
    ngx_im_metric_counters("im_logins_total", "logins_by_result", logins,
        "result", ngx_im_metrics_results, 4,
        "Logins, by the CONNECT_ACK they got."),
    ngx_im_metric_hist("im_auth_duration_seconds", auth,
        "Time the user centre took to answer a login."),
    ngx_im_metric_counters("im_messages_in_total", "messages_in", in, "cmd",
        ngx_im_metrics_cmds, NGX_IM_CMDS,
        "Protocol messages read from clients, by command."),
    ngx_im_metric_counters("im_messages_out_total", "messages_out", out, "cmd",
        ngx_im_metrics_cmds, NGX_IM_CMDS,
        "Protocol messages sent to clients, by command."),
    ngx_im_metric_counter("im_accepted_total", NULL, accepted,
        "Client messages acked to their senders."),
    ngx_im_metric_counters("im_refused_total", "refused_by_reason", refused,
        "reason", ngx_im_metrics_refusals, NGX_IM_REFUSED_N,
        "Client messages refused with INVALID_PACKET, by reason."),
    ngx_im_metric_counter("im_pushes_total", NULL, pushed,
        "Messages pushed to sessions (first pushes)."),
    ngx_im_metric_counter("im_repushes_total", NULL, repushed,
        "Pushes repeated for want of an ack."),
    ngx_im_metric_counter("im_acks_total", NULL, acked,
        "Pushes acked by their recipients."),
    ngx_im_metric_counter("im_receipts_total", "receipts", receipts,
        "Acks turned into receipts for their senders (im_receipts)."),
    ngx_im_metric_counter("im_kicks_total", NULL, kicked,
        "Sessions ended by a newer login."),
    ngx_im_metric_counters("im_max_sessions_total", "max_sessions", capped,
        "action", ngx_im_metrics_capped, NGX_IM_CAPPED_N,
        "Logins over im_max_sessions, by what the login policy did."),
    ngx_im_metric_counter("im_slow_closed_total", NULL, slow_closed,
        "Sessions closed for not reading (im_send_buffer)."),
    ngx_im_metric_counter("im_channel_skipped_total", NULL, channel_skipped,
        "Redis PUBLISHes skipped for a uid no other worker holds."),
    ngx_im_metric_counter("im_stored_total", NULL, stored,
        "Messages appended to inboxes."),
    ngx_im_metric_counter("im_loaded_total", NULL, loaded,
        "Inbox entries read at login."),
    ngx_im_metric_counter("im_expired_total", NULL, expired,
        "Inbox entries found past im_offline_ttl."),
    ngx_im_metric_counters("im_dropped_total", "dropped_by_reason", dropped,
        "reason", ngx_im_metrics_drops, NGX_IM_DROPPED_N,
        "Stored messages discarded unacked, by reason."),
    ngx_im_metric_counter("im_utf16_logins_total", NULL, utf16_logins,
        "Logins whose CONNECT counted its lengths in UTF-16 units."),
    ngx_im_metric_counter("im_utf16_messages_total", NULL, utf16_messages,
        "Client messages whose Len counted UTF-16 units."),
    ngx_im_metric_counter("im_redis_commands_total", NULL, redis_commands,
        "Redis commands sent."),
    ngx_im_metric_counter("im_redis_failed_total", NULL, redis_failed,
        "Redis commands whose connection went before the reply."),
    ngx_im_metric_counter("im_redis_reconnects_total", NULL, redis_reconnects,
        "Redis connections lost and tried again."),
    ngx_im_metric_counter("im_redis_pings_total", "redis_pings", redis_pings,
        "PINGs to a Redis connection silent for im_redis_timeout (busy, or "
        "dead if unanswered)."),
    ngx_im_metric_counter("im_direct_total", "direct", direct,
        "1:1 messages delivered without Redis while inbox appends failed."),
    ngx_im_metric_counter("im_direct_refused_total", "direct_refused",
        direct_refused,
        "Of those, refused: no ack within the re-push budget."),
    ngx_im_metric_counter("im_redis_master_switches_total",
        "redis_master_switches", redis_master_switches,
        "Times a sentinel named a new Redis master (im_redis_sentinel)."),
    ngx_im_metric_counter("im_redis_waits_total", "redis_waits", redis_waits,
        "WAITs sent behind appends (im_redis_wait)."),
    ngx_im_metric_counter("im_redis_wait_short_total", "redis_wait_short",
        redis_wait_short,
        "Appends refused because WAIT found too few replicas."),
    ngx_im_metric_counter("im_busy_spared_total", "busy_spared", busy_spared,
        "Heartbeat timeouts and re-push deadlines that found the client "
        "alive (input unread, output moving) and waited instead of closing."),
    ngx_im_metric_counter("im_stale_logins_total", "stale_logins", stale_logins,
        "Logins refused (CONNECT_ACK 1) because a login of the same uid and "
        "ClientId that started later had won."),
    ngx_im_metric_gauge("im_logins_in_flight", "logins_in_flight",
        logins_in_flight,
        "Logins asking the user centre now."),
    ngx_im_metric_gauge("im_login_queue", "login_queue", login_queue,
        "CONNECTs waiting for a place among the logins in flight "
        "(im_logins_in_flight)."),
    ngx_im_metric_gauge("im_sessions_busy", "sessions_busy", busy,
        "Sessions with pushes, publishes or output under way (an idle "
        "session holds none)."),
    ngx_im_metric_counter("im_login_queued_total", "login_queued", login_queued,
        "CONNECTs that waited for a place among the logins in flight."),
    ngx_im_metric_counter("im_login_queue_timeouts_total",
        "login_queue_timeouts", login_queue_timeouts,
        "CONNECTs answered CONNECT_ACK 2 after im_login_queue_timeout in the "
        "queue."),
    ngx_im_metric_counter("im_redis_cluster_moved_total", "redis_cluster_moved",
        redis_moved,
        "Redis Cluster: commands sent again to the master a MOVED reply "
        "named."),
    ngx_im_metric_counter("im_redis_cluster_asked_total", "redis_cluster_asked",
        redis_asked,
        "Redis Cluster: commands sent again, with ASKING, to the node an ASK "
        "reply named."),
    ngx_im_metric_counter("im_redis_cluster_map_reads_total",
        "redis_cluster_map_reads", redis_map_reads,
        "Redis Cluster: reads of the slot map (CLUSTER SLOTS)."),
    ngx_im_metric_counter("im_redis_cluster_channels_moved_total",
        "redis_cluster_channels_moved", redis_moved_channels,
        "Redis Cluster: shard channels unsubscribed by the cluster (their "
        "slot moved), subscribed again."),
    ngx_im_metric_counter("im_redis_cluster_tryagain_total",
        "redis_cluster_tryagain", redis_tryagain,
        "Redis Cluster: commands of several keys answered TRYAGAIN (their "
        "slot moving), sent again."),
    ngx_im_metric_counter("im_redis_cluster_tx_again_total",
        "redis_cluster_tx_again", redis_tx_again,
        "Redis Cluster: transactions (an append and its copy) sent again, "
        "whole, after a redirect."),
    ngx_im_metric_counter("im_resubscribed_total", "resubscribed", resubscribed,
        "uids subscribed again when the subscriber connection that had their "
        "channel came back."),
    ngx_im_metric_counter("im_group_owed_total", "group_owed", owed,
        "Write-through group deliveries to members here made without an "
        "inbox append (decision 052)."),
    ngx_im_metric_counter("im_group_owe_appended_total", "group_owe_appended",
        owe_appended,
        "Of those, inbox appends made later: the member's sessions let the "
        "message go unacked."),
    ngx_im_metric_counter("im_group_owe_swept_total", "group_owe_swept",
        owe_swept,
        "Members of records left by a gone process delivered again."),
    ngx_im_metric_counter("im_group_owe_recalled_total",
        "group_owe_recalled", owe_recalled,
        "Owed group members cleared by a recall: no late append."),
    ngx_im_metric_counter("im_group_owe_adopted_total", "group_owe_adopted",
        owe_adopted,
        "Members of records of a node whose lease ran out delivered again "
        "by this node."),
    ngx_im_metric_hist("im_redis_duration_seconds", redis,
        "Time from a Redis command to its reply."),
    ngx_im_metric_counters("im_events_total", "events", events, "output",
        ngx_im_metrics_outputs, 2,
        "Events the output took (XADD answered, or the hook answered 2xx)."),
    ngx_im_metric_counters("im_events_dropped_total", "events_dropped",
        events_dropped, "output", ngx_im_metrics_outputs, 2,
        "Events dropped: the output's queue was full."),
    ngx_im_metric_counters("im_api_requests_total", "api", api, "endpoint",
        ngx_im_metrics_api, NGX_IM_API_N,
        "Admin API requests (im_api), by endpoint."),
    ngx_im_metric_counter("im_api_errors_total", "api_errors", api_errors,
        "Admin API requests answered with an error status."),
    ngx_im_metric_counter("im_api_logouts_total", "api_logouts", api_logouts,
        "Sessions logged out by the admin API."),
    { NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, 0 }
};


ngx_int_t
ngx_im_metrics_zone(ngx_conf_t *cf)
{
    ngx_shm_zone_t  *shm_zone;

    shm_zone = ngx_shared_memory_add(cf, &ngx_im_metrics_name,
                                     8 * ngx_pagesize
                                     + sizeof(ngx_im_metrics_sh_t),
                                     &ngx_im_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_im_metrics_init_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_im_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t      *shpool;
    ngx_im_metrics_sh_t  *sh;

    if (data) {
        /* a reload: the same memory, the counters go on */
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_im_metrics_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = sh;
    shm_zone->data = sh;

    return NGX_OK;
}


/* this cycle's zone (a static pointer set at configuration time would
 * outlive a reload that failed) */

static ngx_shm_zone_t *
ngx_im_metrics_find(ngx_cycle_t *cycle)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_shm_zone_t   *zone;

    part = &cycle->shared_memory.part;
    zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].tag == &ngx_im_module
            && zone[i].shm.name.len == ngx_im_metrics_name.len
            && ngx_strncmp(zone[i].shm.name.data, ngx_im_metrics_name.data,
                           ngx_im_metrics_name.len)
               == 0)
        {
            return &zone[i];
        }
    }
}


static ngx_uint_t
ngx_im_metrics_alive(ngx_pid_t pid)
{
    return pid == ngx_pid || kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH;
}


ngx_int_t
ngx_im_metrics_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t              i;
    ngx_slab_pool_t        *shpool;
    ngx_im_metrics_sh_t    *sh;
    ngx_im_metrics_slot_t  *slot;

    ngx_memzero(&ngx_im_metrics_own_stats, sizeof(ngx_im_stats_t));
    ngx_memzero(&ngx_im_metrics_own_gauges, sizeof(ngx_im_gauges_t));

    ngx_im_metrics_shm = ngx_im_metrics_find(cycle);

    if (ngx_im_metrics_shm == NULL || ngx_im_metrics_shm->data == NULL) {
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) ngx_im_metrics_shm->shm.addr;
    sh = ngx_im_metrics_shm->data;
    slot = NULL;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < NGX_IM_METRICS_SLOTS; i++) {
        if (sh->slot[i].pid == 0) {
            slot = &sh->slot[i];
            break;
        }
    }

    for (i = 0; slot == NULL && i < NGX_IM_METRICS_SLOTS; i++) {
        if (!ngx_im_metrics_alive(sh->slot[i].pid)) {
            slot = &sh->slot[i];
            ngx_im_metrics_fold(sh, slot);
        }
    }

    if (slot) {
        ngx_memzero(slot, sizeof(ngx_im_metrics_slot_t));
        slot->pid = ngx_pid;
        slot->worker = ngx_worker;
        slot->since = ngx_time();
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (slot == NULL) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "im: more than %d processes count in \"%V\": this "
                      "worker's counters are left out of the node's",
                      NGX_IM_METRICS_SLOTS, &ngx_im_metrics_name);
        return NGX_OK;
    }

    ngx_im_metrics_slot = slot;
    ngx_im_stats = &slot->stats;
    ngx_im_gauges = &slot->gauges;

    return NGX_OK;
}


void
ngx_im_metrics_exit_process(void)
{
    ngx_slab_pool_t      *shpool;
    ngx_im_metrics_sh_t  *sh;

    if (ngx_im_metrics_slot == NULL) {
        return;
    }

    shpool = (ngx_slab_pool_t *) ngx_im_metrics_shm->shm.addr;
    sh = ngx_im_metrics_shm->data;

    ngx_shmtx_lock(&shpool->mutex);
    ngx_im_metrics_fold(sh, ngx_im_metrics_slot);
    ngx_shmtx_unlock(&shpool->mutex);

    /* what is still counted on the way out goes nowhere */
    ngx_im_stats = &ngx_im_metrics_own_stats;
    ngx_im_gauges = &ngx_im_metrics_own_gauges;
    ngx_im_metrics_slot = NULL;
}


/* with the zone's mutex held */

static void
ngx_im_metrics_fold(ngx_im_metrics_sh_t *sh, ngx_im_metrics_slot_t *slot)
{
    ngx_uint_t          i, n;
    ngx_atomic_uint_t  *from, *to;

    n = sizeof(ngx_im_stats_t) / sizeof(ngx_atomic_uint_t);
    from = (ngx_atomic_uint_t *) &slot->stats;
    to = (ngx_atomic_uint_t *) &sh->retired;

    for (i = 0; i < n; i++) {
        to[i] += from[i];
    }

    ngx_memzero(slot, sizeof(ngx_im_metrics_slot_t));
}


uint64_t
ngx_im_metrics_now(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


void
ngx_im_metrics_observe(ngx_im_hist_t *h, uint64_t us)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_IM_HIST_N - 1; i++) {
        if (us <= ngx_im_metrics_le[i]) {
            break;
        }
    }

    h->bucket[i]++;
    h->sum_us += us;
}


static void
ngx_im_metrics_live(ngx_im_metrics_live_t *live, ngx_uint_t worker,
    ngx_pid_t pid, time_t since, ngx_im_gauges_t *g)
{
    ngx_uint_t  i;

    live->worker = worker;
    live->pid = pid;
    live->since = since;
    live->sessions = 0;

    for (i = 0; i < NGX_IM_T_N; i++) {
        live->sessions += g->sessions[i];
    }

    live->users = g->users;
    live->redis_up = g->redis_up;
}


/* the node's counters and the live workers' gauges */

static ngx_int_t
ngx_im_metrics_snap(ngx_im_metrics_snap_t *snap)
{
    ngx_uint_t              i, j, n;
    ngx_slab_pool_t        *shpool;
    ngx_atomic_uint_t      *from, *to, *gf, *gt;
    ngx_im_metrics_sh_t    *sh;
    ngx_im_metrics_slot_t  *slot;

    ngx_memzero(snap, sizeof(ngx_im_metrics_snap_t));

    if (ngx_im_metrics_slot == NULL) {
        /* no zone (or no slot): this worker alone */
        snap->total = *ngx_im_stats;
        snap->gauges = *ngx_im_gauges;
        snap->nlive = 1;
        ngx_im_metrics_live(&snap->live[0], ngx_worker, ngx_pid, 0,
                            ngx_im_gauges);
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) ngx_im_metrics_shm->shm.addr;
    sh = ngx_im_metrics_shm->data;

    n = sizeof(ngx_im_stats_t) / sizeof(ngx_atomic_uint_t);
    to = (ngx_atomic_uint_t *) &snap->total;
    gt = (ngx_atomic_uint_t *) &snap->gauges;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < NGX_IM_METRICS_SLOTS; i++) {
        slot = &sh->slot[i];

        if (slot->pid && !ngx_im_metrics_alive(slot->pid)) {
            /* a worker that died: its counts stay, its gauges go */
            ngx_im_metrics_fold(sh, slot);
        }
    }

    from = (ngx_atomic_uint_t *) &sh->retired;

    for (j = 0; j < n; j++) {
        to[j] = from[j];
    }

    for (i = 0; i < NGX_IM_METRICS_SLOTS; i++) {
        slot = &sh->slot[i];

        if (slot->pid == 0) {
            continue;
        }

        from = (ngx_atomic_uint_t *) &slot->stats;

        for (j = 0; j < n; j++) {
            to[j] += from[j];
        }

        gf = (ngx_atomic_uint_t *) &slot->gauges;

        for (j = 0; j < sizeof(ngx_im_gauges_t) / sizeof(ngx_atomic_uint_t);
             j++)
        {
            gt[j] += gf[j];
        }

        ngx_im_metrics_live(&snap->live[snap->nlive++], slot->worker,
                            slot->pid, slot->since, &slot->gauges);
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;
}


static ngx_atomic_uint_t
ngx_im_metrics_sum(ngx_atomic_uint_t *v, ngx_uint_t n)
{
    ngx_uint_t         i;
    ngx_atomic_uint_t  sum;

    sum = 0;

    for (i = 0; i < n; i++) {
        sum += v[i];
    }

    return sum;
}


/* the first (or only) value of a metric in a snapshot */

static ngx_atomic_uint_t *
ngx_im_metrics_value(ngx_im_metrics_snap_t *snap, ngx_im_metric_t *m)
{
    u_char  *base;

    base = m->gauge ? (u_char *) &snap->gauges : (u_char *) &snap->total;

    return (ngx_atomic_uint_t *) (base + m->offset);
}


/* Prometheus text format 0.0.4 */

static u_char *
ngx_im_metrics_head(u_char *p, char *name, char *type, char *help)
{
    return ngx_sprintf(p, "# HELP %s %s\n# TYPE %s %s\n",
                       name, help, name, type);
}


static u_char *
ngx_im_metrics_one(u_char *p, char *name, char *type, char *help,
    ngx_atomic_uint_t v)
{
    p = ngx_im_metrics_head(p, name, type, help);

    return ngx_sprintf(p, "%s %uA\n", name, v);
}


static u_char *
ngx_im_metrics_labelled(u_char *p, char *name, char *type, char *help,
    char *label, char **values, ngx_atomic_uint_t *v, ngx_uint_t n)
{
    ngx_uint_t  i;

    p = ngx_im_metrics_head(p, name, type, help);

    for (i = 0; i < n; i++) {
        if (values[i] == NULL) {
            continue;
        }

        p = ngx_sprintf(p, "%s{%s=\"%s\"} %uA\n", name, label, values[i],
                        v[i]);
    }

    return p;
}


static u_char *
ngx_im_metrics_hist(u_char *p, char *name, char *help, ngx_im_hist_t *h)
{
    ngx_uint_t         i;
    ngx_atomic_uint_t  cum;

    p = ngx_im_metrics_head(p, name, "histogram", help);

    cum = 0;

    for (i = 0; i < NGX_IM_HIST_N; i++) {
        cum += h->bucket[i];
        p = ngx_sprintf(p, "%s_bucket{le=\"%s\"} %uA\n", name,
                        ngx_im_metrics_le_text[i], cum);
    }

    return ngx_sprintf(p, "%s_sum %uA.%06uA\n%s_count %uA\n",
                       name, h->sum_us / 1000000, h->sum_us % 1000000,
                       name, cum);
}


static u_char *
ngx_im_metrics_per_worker(u_char *p, ngx_im_metrics_snap_t *snap,
    char *name, char *help, size_t off)
{
    ngx_uint_t              i;
    ngx_im_metrics_live_t  *live;

    p = ngx_im_metrics_head(p, name, "gauge", help);

    for (i = 0; i < snap->nlive; i++) {
        live = &snap->live[i];
        p = ngx_sprintf(p, "%s{worker=\"%ui\",pid=\"%P\"} %uA\n", name,
                        live->worker, live->pid,
                        *(ngx_atomic_uint_t *) ((u_char *) live + off));
    }

    return p;
}


ngx_buf_t *
ngx_im_metrics_prometheus(ngx_pool_t *pool)
{
    u_char                 *p;
    size_t                  len;
    ngx_buf_t              *b;
    ngx_im_metric_t        *m;
    ngx_atomic_uint_t      *v;
    ngx_im_metrics_snap_t  *snap;

    snap = ngx_palloc(pool, sizeof(ngx_im_metrics_snap_t));
    if (snap == NULL || ngx_im_metrics_snap(snap) != NGX_OK) {
        return NULL;
    }

    /* about 140 lines of at most 160 bytes, and 4 per live worker */
    len = 32768 + 4 * NGX_IM_CMDS * 160 + snap->nlive * 4 * 160;

    b = ngx_create_temp_buf(pool, len);
    if (b == NULL) {
        return NULL;
    }

    p = b->last;

    for (m = ngx_im_metrics; m->name; m++) {
        v = ngx_im_metrics_value(snap, m);

        if (m->hist) {
            p = ngx_im_metrics_hist(p, m->name, m->help, (ngx_im_hist_t *) v);

        } else if (m->label) {
            p = ngx_im_metrics_labelled(p, m->name, m->type, m->help,
                                        m->label, m->values, v, m->n);

        } else {
            p = ngx_im_metrics_one(p, m->name, m->type, m->help, *v);
        }
    }

    p = ngx_im_metrics_one(p, "im_workers", "gauge",
                           "Worker processes counting in this node.",
                           snap->nlive);
    p = ngx_im_metrics_per_worker(p, snap, "im_worker_sessions",
                                  "Sessions a worker holds.",
                                  offsetof(ngx_im_metrics_live_t, sessions));
    p = ngx_im_metrics_per_worker(p, snap, "im_worker_users",
                                  "Uids in a worker's table.",
                                  offsetof(ngx_im_metrics_live_t, users));
    p = ngx_im_metrics_per_worker(p, snap, "im_worker_redis_up",
                                  "A worker's Redis connections that are "
                                  "ready (of 3).",
                                  offsetof(ngx_im_metrics_live_t, redis_up));

    b->last = p;

    return b;
}


/* im_status: the same counters as JSON, for people and older scripts */

static u_char *
ngx_im_metrics_json_map(u_char *p, char *key, char **names,
    ngx_atomic_uint_t *v, ngx_uint_t n)
{
    ngx_uint_t  i, first;

    p = ngx_sprintf(p, ",\"%s\":{", key);
    first = 1;

    for (i = 0; i < n; i++) {
        if (names[i] == NULL) {
            continue;
        }

        p = ngx_sprintf(p, "%s\"%s\":%uA", first ? "" : ",", names[i], v[i]);
        first = 0;
    }

    *p++ = '}';

    return p;
}


ngx_buf_t *
ngx_im_metrics_json(ngx_pool_t *pool, ngx_im_metrics_extra_t *extra)
{
    u_char                 *p;
    size_t                  len;
    ngx_buf_t              *b;
    ngx_uint_t              i;
    ngx_im_stats_t         *t;
    ngx_im_metric_t        *m;
    ngx_atomic_uint_t      *v;
    ngx_im_metrics_live_t  *live;
    ngx_im_metrics_snap_t  *snap;

    snap = ngx_palloc(pool, sizeof(ngx_im_metrics_snap_t));
    if (snap == NULL || ngx_im_metrics_snap(snap) != NGX_OK) {
        return NULL;
    }

    len = 8192 + extra->id.len + 2 * NGX_IM_CMDS * 48 + snap->nlive * 160;

    b = ngx_create_temp_buf(pool, len);
    if (b == NULL) {
        return NULL;
    }

    t = &snap->total;

    /*
     * The first keys are those of the per-worker JSON of old, now for the
     * whole node; "worker", "pid" and "id" name the worker that answered.
     */

    p = ngx_sprintf(b->last,
                    "{\"worker\":%ui,\"pid\":%P,\"id\":\"%V\","
                    "\"sessions\":%uA,\"users\":%uA,\"node_users\":%ui,"
                    "\"logins\":%uA,\"login_failures\":%uA,"
                    "\"accepted\":%uA,\"refused\":%uA,"
                    "\"pushed\":%uA,\"repushed\":%uA,\"acked\":%uA,"
                    "\"stored\":%uA,\"offline_dropped\":%uA,"
                    "\"kicked\":%uA,\"slow_closed\":%uA,"
                    "\"channel_skipped\":%uA,"
                    "\"loaded\":%uA,\"expired\":%uA,"
                    "\"redis_commands\":%uA,\"redis_failed\":%uA,"
                    "\"redis_reconnects\":%uA,"
                    "\"utf16_logins\":%uA,\"utf16_messages\":%uA",
                    ngx_worker, ngx_pid, &extra->id,
                    ngx_im_metrics_sum(snap->gauges.sessions, NGX_IM_T_N),
                    snap->gauges.users, extra->node_users,
                    t->logins[0], ngx_im_metrics_sum(t->logins + 1, 3),
                    t->accepted,
                    ngx_im_metrics_sum(t->refused, NGX_IM_REFUSED_N),
                    t->pushed, t->repushed, t->acked, t->stored,
                    t->dropped[NGX_IM_DROPPED_CAP], t->kicked,
                    t->slow_closed, t->channel_skipped,
                    t->loaded, t->expired,
                    t->redis_commands, t->redis_failed,
                    t->redis_reconnects, t->utf16_logins,
                    t->utf16_messages);

    for (m = ngx_im_metrics; m->name; m++) {
        if (m->json == NULL) {
            continue;
        }

        v = ngx_im_metrics_value(snap, m);

        if (m->label) {
            p = ngx_im_metrics_json_map(p, m->json, m->values, v, m->n);

        } else {
            p = ngx_sprintf(p, ",\"%s\":%uA", m->json, *v);
        }
    }

    p = ngx_cpymem(p, ",\"workers\":[", sizeof(",\"workers\":[") - 1);

    for (i = 0; i < snap->nlive; i++) {
        live = &snap->live[i];
        p = ngx_sprintf(p, "%s{\"worker\":%ui,\"pid\":%P,\"since\":%T,"
                        "\"sessions\":%uA,\"users\":%uA,\"redis_up\":%uA}",
                        i ? "," : "", live->worker, live->pid, live->since,
                        live->sessions, live->users, live->redis_up);
    }

    p = ngx_cpymem(p, "]}\n", 3);

    b->last = p;

    return b;
}
