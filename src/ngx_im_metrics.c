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
    ngx_im_stats_t         *t;
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

    t = &snap->total;
    p = b->last;

    p = ngx_im_metrics_labelled(p, "im_sessions", "gauge",
                                "Sessions open now, by transport.",
                                "transport", ngx_im_metrics_transports,
                                snap->gauges.sessions, NGX_IM_T_N);
    p = ngx_im_metrics_labelled(p, "im_sessions_opened_total", "counter",
                                "Sessions opened, by transport.",
                                "transport", ngx_im_metrics_transports,
                                t->opened, NGX_IM_T_N);
    p = ngx_im_metrics_labelled(p, "im_logins_total", "counter",
                                "Logins, by the CONNECT_ACK they got.",
                                "result", ngx_im_metrics_results,
                                t->logins, 4);
    p = ngx_im_metrics_hist(p, "im_auth_duration_seconds",
                            "Time the user centre took to answer a login.",
                            &t->auth);
    p = ngx_im_metrics_labelled(p, "im_messages_in_total", "counter",
                                "Protocol messages read from clients, "
                                "by command.",
                                "cmd", ngx_im_metrics_cmds, t->in,
                                NGX_IM_CMDS);
    p = ngx_im_metrics_labelled(p, "im_messages_out_total", "counter",
                                "Protocol messages sent to clients, "
                                "by command.",
                                "cmd", ngx_im_metrics_cmds, t->out,
                                NGX_IM_CMDS);
    p = ngx_im_metrics_one(p, "im_accepted_total", "counter",
                           "Client messages acked to their senders.",
                           t->accepted);
    p = ngx_im_metrics_labelled(p, "im_refused_total", "counter",
                                "Client messages refused with "
                                "INVALID_PACKET, by reason.",
                                "reason", ngx_im_metrics_refusals,
                                t->refused, NGX_IM_REFUSED_N);
    p = ngx_im_metrics_one(p, "im_pushes_total", "counter",
                           "Messages pushed to sessions (first pushes).",
                           t->pushed);
    p = ngx_im_metrics_one(p, "im_repushes_total", "counter",
                           "Pushes repeated for want of an ack.",
                           t->repushed);
    p = ngx_im_metrics_one(p, "im_acks_total", "counter",
                           "Pushes acked by their recipients.", t->acked);
    p = ngx_im_metrics_one(p, "im_receipts_total", "counter",
                           "Acks turned into receipts for their senders "
                           "(im_receipts).",
                           t->receipts);
    p = ngx_im_metrics_one(p, "im_kicks_total", "counter",
                           "Sessions ended by a newer login.", t->kicked);
    p = ngx_im_metrics_labelled(p, "im_max_sessions_total", "counter",
                                "Logins over im_max_sessions, by what the "
                                "login policy did.",
                                "action", ngx_im_metrics_capped,
                                t->capped, NGX_IM_CAPPED_N);
    p = ngx_im_metrics_one(p, "im_slow_closed_total", "counter",
                           "Sessions closed for not reading "
                           "(im_send_buffer).",
                           t->slow_closed);
    p = ngx_im_metrics_one(p, "im_channel_skipped_total", "counter",
                           "Redis PUBLISHes skipped for a uid no other "
                           "worker holds.",
                           t->channel_skipped);
    p = ngx_im_metrics_one(p, "im_stored_total", "counter",
                           "Messages appended to inboxes.", t->stored);
    p = ngx_im_metrics_one(p, "im_loaded_total", "counter",
                           "Inbox entries read at login.", t->loaded);
    p = ngx_im_metrics_one(p, "im_expired_total", "counter",
                           "Inbox entries found past im_offline_ttl.",
                           t->expired);
    p = ngx_im_metrics_labelled(p, "im_dropped_total", "counter",
                                "Stored messages discarded unacked, "
                                "by reason.",
                                "reason", ngx_im_metrics_drops, t->dropped,
                                NGX_IM_DROPPED_N);
    p = ngx_im_metrics_one(p, "im_utf16_logins_total", "counter",
                           "Logins whose CONNECT counted its lengths in "
                           "UTF-16 units.",
                           t->utf16_logins);
    p = ngx_im_metrics_one(p, "im_utf16_messages_total", "counter",
                           "Client messages whose Len counted UTF-16 "
                           "units.",
                           t->utf16_messages);
    p = ngx_im_metrics_one(p, "im_redis_commands_total", "counter",
                           "Redis commands sent.", t->redis_commands);
    p = ngx_im_metrics_one(p, "im_redis_failed_total", "counter",
                           "Redis commands whose connection went before "
                           "the reply.",
                           t->redis_failed);
    p = ngx_im_metrics_one(p, "im_redis_reconnects_total", "counter",
                           "Redis connections lost and tried again.",
                           t->redis_reconnects);
    p = ngx_im_metrics_one(p, "im_redis_pings_total", "counter",
                           "PINGs to a Redis connection silent for "
                           "im_redis_timeout (busy, or dead if "
                           "unanswered).",
                           t->redis_pings);
    p = ngx_im_metrics_one(p, "im_direct_total", "counter",
                           "1:1 messages delivered without Redis while "
                           "inbox appends failed.",
                           t->direct);
    p = ngx_im_metrics_one(p, "im_direct_refused_total", "counter",
                           "Of those, refused: no ack within the re-push "
                           "budget.",
                           t->direct_refused);
    p = ngx_im_metrics_one(p, "im_redis_master_switches_total", "counter",
                           "Times a sentinel named a new Redis master "
                           "(im_redis_sentinel).",
                           t->redis_master_switches);
    p = ngx_im_metrics_one(p, "im_redis_waits_total", "counter",
                           "WAITs sent behind appends (im_redis_wait).",
                           t->redis_waits);
    p = ngx_im_metrics_one(p, "im_redis_wait_short_total", "counter",
                           "Appends refused because WAIT found too few "
                           "replicas.",
                           t->redis_wait_short);
    p = ngx_im_metrics_one(p, "im_busy_spared_total", "counter",
                           "Heartbeat timeouts and re-push deadlines that "
                           "found the client alive (input unread, output "
                           "moving) and waited instead of closing.",
                           t->busy_spared);
    p = ngx_im_metrics_one(p, "im_stale_logins_total", "counter",
                           "Logins refused (CONNECT_ACK 1) because a "
                           "login of the same uid and ClientId that "
                           "started later had won.",
                           t->stale_logins);
    p = ngx_im_metrics_one(p, "im_logins_in_flight", "gauge",
                           "Logins asking the user centre now.",
                           snap->gauges.logins_in_flight);
    p = ngx_im_metrics_one(p, "im_login_queue", "gauge",
                           "CONNECTs waiting for a place among the "
                           "logins in flight (im_logins_in_flight).",
                           snap->gauges.login_queue);
    p = ngx_im_metrics_one(p, "im_sessions_busy", "gauge",
                           "Sessions with pushes, publishes or output "
                           "under way (an idle session holds none).",
                           snap->gauges.busy);
    p = ngx_im_metrics_one(p, "im_login_queued_total", "counter",
                           "CONNECTs that waited for a place among the "
                           "logins in flight.",
                           t->login_queued);
    p = ngx_im_metrics_one(p, "im_login_queue_timeouts_total", "counter",
                           "CONNECTs answered CONNECT_ACK 2 after "
                           "im_login_queue_timeout in the queue.",
                           t->login_queue_timeouts);
    p = ngx_im_metrics_one(p, "im_redis_cluster_moved_total", "counter",
                           "Redis Cluster: commands sent again to the "
                           "master a MOVED reply named.",
                           t->redis_moved);
    p = ngx_im_metrics_one(p, "im_redis_cluster_asked_total", "counter",
                           "Redis Cluster: commands sent again, with "
                           "ASKING, to the node an ASK reply named.",
                           t->redis_asked);
    p = ngx_im_metrics_one(p, "im_redis_cluster_map_reads_total",
                           "counter",
                           "Redis Cluster: reads of the slot map "
                           "(CLUSTER SLOTS).",
                           t->redis_map_reads);
    p = ngx_im_metrics_one(p, "im_redis_cluster_channels_moved_total",
                           "counter",
                           "Redis Cluster: shard channels unsubscribed "
                           "by the cluster (their slot moved), "
                           "subscribed again.",
                           t->redis_moved_channels);
    p = ngx_im_metrics_one(p, "im_redis_cluster_tryagain_total", "counter",
                           "Redis Cluster: commands of several keys "
                           "answered TRYAGAIN (their slot moving), sent "
                           "again.",
                           t->redis_tryagain);
    p = ngx_im_metrics_one(p, "im_redis_cluster_tx_again_total", "counter",
                           "Redis Cluster: transactions (an append and "
                           "its copy) sent again, whole, after a "
                           "redirect.",
                           t->redis_tx_again);
    p = ngx_im_metrics_one(p, "im_resubscribed_total", "counter",
                           "uids subscribed again when the subscriber "
                           "connection that had their channel came back.",
                           t->resubscribed);
    p = ngx_im_metrics_hist(p, "im_redis_duration_seconds",
                            "Time from a Redis command to its reply.",
                            &t->redis);
    p = ngx_im_metrics_labelled(p, "im_events_total", "counter",
                                "Events the output took (XADD answered, "
                                "or the hook answered 2xx).",
                                "output", ngx_im_metrics_outputs, t->events,
                                2);
    p = ngx_im_metrics_labelled(p, "im_events_dropped_total", "counter",
                                "Events dropped: the output's queue was "
                                "full.",
                                "output", ngx_im_metrics_outputs,
                                t->events_dropped, 2);
    p = ngx_im_metrics_labelled(p, "im_api_requests_total", "counter",
                                "Admin API requests (im_api), by "
                                "endpoint.",
                                "endpoint", ngx_im_metrics_api, t->api,
                                NGX_IM_API_N);
    p = ngx_im_metrics_one(p, "im_api_errors_total", "counter",
                           "Admin API requests answered with an error "
                           "status.",
                           t->api_errors);
    p = ngx_im_metrics_one(p, "im_api_logouts_total", "counter",
                           "Sessions logged out by the admin API.",
                           t->api_logouts);
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

    p = ngx_im_metrics_json_map(p, "sessions_by_transport",
                                ngx_im_metrics_transports,
                                snap->gauges.sessions, NGX_IM_T_N);
    p = ngx_im_metrics_json_map(p, "logins_by_result",
                                ngx_im_metrics_results, t->logins, 4);
    p = ngx_im_metrics_json_map(p, "refused_by_reason",
                                ngx_im_metrics_refusals, t->refused,
                                NGX_IM_REFUSED_N);
    p = ngx_im_metrics_json_map(p, "max_sessions",
                                ngx_im_metrics_capped, t->capped,
                                NGX_IM_CAPPED_N);
    p = ngx_im_metrics_json_map(p, "api", ngx_im_metrics_api, t->api,
                                NGX_IM_API_N);
    p = ngx_sprintf(p, ",\"api_errors\":%uA,\"api_logouts\":%uA",
                    t->api_errors, t->api_logouts);
    p = ngx_sprintf(p, ",\"direct\":%uA,\"direct_refused\":%uA",
                    t->direct, t->direct_refused);
    p = ngx_sprintf(p, ",\"redis_master_switches\":%uA,"
                    "\"redis_waits\":%uA,\"redis_wait_short\":%uA",
                    t->redis_master_switches, t->redis_waits,
                    t->redis_wait_short);
    p = ngx_sprintf(p, ",\"busy_spared\":%uA,\"stale_logins\":%uA,"
                    "\"logins_in_flight\":%uA,\"login_queue\":%uA,"
                    "\"login_queued\":%uA,\"login_queue_timeouts\":%uA",
                    t->busy_spared, t->stale_logins,
                    snap->gauges.logins_in_flight, snap->gauges.login_queue,
                    t->login_queued, t->login_queue_timeouts);
    p = ngx_sprintf(p, ",\"sessions_busy\":%uA", snap->gauges.busy);
    p = ngx_sprintf(p, ",\"redis_cluster_moved\":%uA,"
                    "\"redis_cluster_asked\":%uA,"
                    "\"redis_cluster_map_reads\":%uA,"
                    "\"redis_cluster_channels_moved\":%uA,"
                    "\"redis_cluster_tryagain\":%uA,"
                    "\"redis_cluster_tx_again\":%uA,\"resubscribed\":%uA",
                    t->redis_moved, t->redis_asked, t->redis_map_reads,
                    t->redis_moved_channels, t->redis_tryagain,
                    t->redis_tx_again, t->resubscribed);
    p = ngx_im_metrics_json_map(p, "dropped_by_reason",
                                ngx_im_metrics_drops, t->dropped,
                                NGX_IM_DROPPED_N);
    p = ngx_im_metrics_json_map(p, "messages_in", ngx_im_metrics_cmds, t->in,
                                NGX_IM_CMDS);
    p = ngx_im_metrics_json_map(p, "messages_out", ngx_im_metrics_cmds,
                                t->out, NGX_IM_CMDS);

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
