/*
 * ngx_im_module.c: the CORE module.
 *
 * Owns the main-context directives (Redis, delivery mode, timers, limits,
 * login policy, sender check, node id) and the worker's start and end:
 * the directory, the Redis connections and the router come up in each
 * worker that serves im_websocket or im_tcp, wired to the session layer,
 * and go away when it exits.
 */

#include "ngx_im.h"
#include "ngx_im_dir.h"
#include "ngx_im_events.h"
#include "ngx_im_router.h"
#include "ngx_im_session.h"


static void *ngx_im_create_conf(ngx_cycle_t *cycle);
static char *ngx_im_init_conf(ngx_cycle_t *cycle, void *conf);
static ngx_int_t ngx_im_redis_parse_url(ngx_pool_t *pool, ngx_log_t *log,
    const char *directive, u_char *url, size_t len, ngx_url_t *u);
static ngx_int_t ngx_im_redis_parse_addr(ngx_pool_t *pool, ngx_log_t *log,
    ngx_im_conf_t *imcf, u_char *url, size_t len);
static char *ngx_im_redis_addr(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_im_group_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_im_group_redis_check(ngx_cycle_t *cycle,
    ngx_im_conf_t *imcf);
static ngx_int_t ngx_im_redis_ssl_name(ngx_cycle_t *cycle,
    ngx_im_conf_t *imcf, ngx_str_t *name, ngx_str_t *host,
    const char *setting);
static ngx_int_t ngx_im_redis_ssl(ngx_cycle_t *cycle, ngx_im_conf_t *imcf);
static char *ngx_im_redis_sentinel(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_im_redis_wait(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_im_redis_check(ngx_cycle_t *cycle, ngx_im_conf_t *imcf);
static char *ngx_im_msg_rate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_im_init_process(ngx_cycle_t *cycle);
static void ngx_im_exit_process(ngx_cycle_t *cycle);


ngx_str_t       ngx_im_worker_id;
size_t          ngx_im_node_prefix_len;


static ngx_conf_enum_t  ngx_im_delivery_modes[] = {
    { ngx_string("write_through"), NGX_IM_WRITE_THROUGH },
    { ngx_string("offline_only"), NGX_IM_OFFLINE_ONLY },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_im_login_policies[] = {
    { ngx_string("kick"), NGX_IM_LOGIN_KICK },
    { ngx_string("reject"), NGX_IM_LOGIN_REJECT },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_im_commands[] = {

    { ngx_string("im_redis"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_im_redis_addr,
      0,
      0,
      NULL },

    { ngx_string("im_redis_db"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      0,
      offsetof(ngx_im_conf_t, redis_db),
      NULL },

    { ngx_string("im_redis_password"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_im_conf_t, redis_password),
      NULL },

    { ngx_string("im_redis_user"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_im_conf_t, redis_user),
      NULL },

    { ngx_string("im_redis_timeout"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      0,
      offsetof(ngx_im_conf_t, redis_timeout),
      NULL },

    { ngx_string("im_redis_cluster"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      0,
      offsetof(ngx_im_conf_t, redis_cluster),
      NULL },

    { ngx_string("im_redis_ssl"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      0,
      offsetof(ngx_im_conf_t, redis_ssl),
      NULL },

    { ngx_string("im_redis_ssl_verify"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      0,
      offsetof(ngx_im_conf_t, redis_ssl_verify),
      NULL },

    { ngx_string("im_redis_ssl_name"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_im_conf_t, redis_ssl_name),
      NULL },

    { ngx_string("im_redis_ssl_trusted_certificate"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_im_conf_t, redis_ssl_trusted),
      NULL },

    { ngx_string("im_redis_ssl_certificate"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_im_conf_t, redis_ssl_cert),
      NULL },

    { ngx_string("im_redis_ssl_certificate_key"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_im_conf_t, redis_ssl_key),
      NULL },

    { ngx_string("im_redis_sentinel"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_1MORE,
      ngx_im_redis_sentinel,
      0,
      0,
      NULL },

    { ngx_string("im_redis_sentinel_master"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_im_conf_t, sentinel_master),
      NULL },

    { ngx_string("im_redis_sentinel_user"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_im_conf_t, sentinel_user),
      NULL },

    { ngx_string("im_redis_sentinel_password"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_im_conf_t, sentinel_password),
      NULL },

    { ngx_string("im_redis_wait"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE12,
      ngx_im_redis_wait,
      0,
      0,
      NULL },

    { ngx_string("im_group_db"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      0,
      offsetof(ngx_im_conf_t, group_db),
      NULL },

    { ngx_string("im_group_prefix"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_im_conf_t, group_prefix),
      NULL },

    { ngx_string("im_group_redis"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_1MORE,
      ngx_im_group_redis,
      0,
      0,
      NULL },

    { ngx_string("im_node_id"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_im_conf_t, node_id),
      NULL },

    { ngx_string("im_zone"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE2,
      ngx_im_dir_zone_directive,
      0,
      0,
      NULL },

    { ngx_string("im_delivery"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      0,
      offsetof(ngx_im_conf_t, delivery),
      &ngx_im_delivery_modes },

    { ngx_string("im_offline_ttl"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      0,
      offsetof(ngx_im_conf_t, offline_ttl),
      NULL },

    { ngx_string("im_offline_max"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      0,
      offsetof(ngx_im_conf_t, offline_max),
      NULL },

    { ngx_string("im_poison_after"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      0,
      offsetof(ngx_im_conf_t, poison_after),
      NULL },

    { ngx_string("im_inbox_batch"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      0,
      offsetof(ngx_im_conf_t, inbox_batch),
      NULL },

    { ngx_string("im_group_owe"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      0,
      offsetof(ngx_im_conf_t, group_owe),
      NULL },

    { ngx_string("im_group_owe_lease"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      0,
      offsetof(ngx_im_conf_t, group_owe_lease),
      NULL },

    { ngx_string("im_repush_interval"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      0,
      offsetof(ngx_im_conf_t, repush_interval),
      NULL },

    { ngx_string("im_repush_max"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      0,
      offsetof(ngx_im_conf_t, repush_max),
      NULL },

    { ngx_string("im_ping_interval"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      0,
      offsetof(ngx_im_conf_t, ping_interval),
      NULL },

    { ngx_string("im_ping_timeout"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      0,
      offsetof(ngx_im_conf_t, ping_timeout),
      NULL },

    { ngx_string("im_connect_timeout"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      0,
      offsetof(ngx_im_conf_t, connect_timeout),
      NULL },

    { ngx_string("im_close_grace"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      0,
      offsetof(ngx_im_conf_t, close_grace),
      NULL },

    { ngx_string("im_login_policy"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      0,
      offsetof(ngx_im_conf_t, login_policy),
      &ngx_im_login_policies },

    { ngx_string("im_logins_in_flight"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      0,
      offsetof(ngx_im_conf_t, logins_in_flight),
      NULL },

    { ngx_string("im_login_queue_timeout"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      0,
      offsetof(ngx_im_conf_t, login_queue_timeout),
      NULL },

    { ngx_string("im_max_payload"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      0,
      offsetof(ngx_im_conf_t, max_payload),
      NULL },

    { ngx_string("im_max_message"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      0,
      offsetof(ngx_im_conf_t, max_message),
      NULL },

    { ngx_string("im_send_buffer"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      0,
      offsetof(ngx_im_conf_t, send_buffer),
      NULL },

    { ngx_string("im_part_push_as_group"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      0,
      offsetof(ngx_im_conf_t, part_push_as_group),
      NULL },

    { ngx_string("im_events_stream"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_1MORE,
      ngx_im_events_stream_directive,
      0,
      0,
      NULL },

    { ngx_string("im_events_hook"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_1MORE,
      ngx_im_events_hook_directive,
      0,
      0,
      NULL },

    { ngx_string("im_alone"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      0,
      offsetof(ngx_im_conf_t, alone),
      NULL },

    { ngx_string("im_max_sessions"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      0,
      offsetof(ngx_im_conf_t, max_sessions),
      NULL },

    { ngx_string("im_msg_rate"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE12,
      ngx_im_msg_rate,
      0,
      0,
      NULL },

    { ngx_string("im_max_recipients"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      0,
      offsetof(ngx_im_conf_t, max_recipients),
      NULL },

    { ngx_string("im_check_sender"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      0,
      offsetof(ngx_im_conf_t, check_sender),
      NULL },

      ngx_null_command
};


static ngx_core_module_t  ngx_im_module_ctx = {
    ngx_string("im"),
    ngx_im_create_conf,
    ngx_im_init_conf
};


ngx_module_t  ngx_im_module = {
    NGX_MODULE_V1,
    &ngx_im_module_ctx,                    /* module context */
    ngx_im_commands,                       /* module directives */
    NGX_CORE_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_im_init_process,                   /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_im_exit_process,                   /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_im_create_conf(ngx_cycle_t *cycle)
{
    ngx_im_conf_t  *imcf;

    imcf = ngx_pcalloc(cycle->pool, sizeof(ngx_im_conf_t));
    if (imcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     imcf->redis_url = { 0, NULL };
     *     imcf->redis_host = { 0, NULL };
     *     imcf->redis_addrs = NULL;
     *     imcf->redis_user = { 0, NULL };
     *     imcf->redis_password = { 0, NULL };
     *     imcf->redis_ssl_name = { 0, NULL };
     *     imcf->redis_ssl_trusted = { 0, NULL };
     *     imcf->redis_ssl_cert = { 0, NULL };
     *     imcf->redis_ssl_key = { 0, NULL };
     *     imcf->sentinels = NULL;
     *     imcf->sentinel_master = { 0, NULL };
     *     imcf->sentinel_user = { 0, NULL };
     *     imcf->sentinel_password = { 0, NULL };
     *     imcf->group_prefix = { 0, NULL };
     *     imcf->group_host = { 0, NULL };
     *     imcf->group_addrs = NULL;
     *     imcf->group_user = { 0, NULL };
     *     imcf->group_password = { 0, NULL };
     *     imcf->group_ssl = 0;
     *     imcf->group_ssl_name = { 0, NULL };
     *     imcf->node_id = { 0, NULL };
     */

    imcf->enabled = 0;
    imcf->redis_db = NGX_CONF_UNSET;
    imcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    imcf->redis_ssl = NGX_CONF_UNSET;
    imcf->redis_cluster = NGX_CONF_UNSET;
    imcf->redis_ssl_verify = NGX_CONF_UNSET;
    imcf->redis_wait = NGX_CONF_UNSET_UINT;
    imcf->redis_wait_timeout = NGX_CONF_UNSET_MSEC;
    imcf->group_db = NGX_CONF_UNSET;
    imcf->delivery = NGX_CONF_UNSET_UINT;
    imcf->offline_ttl = NGX_CONF_UNSET;
    imcf->offline_max = NGX_CONF_UNSET_UINT;
    imcf->poison_after = NGX_CONF_UNSET_UINT;
    imcf->inbox_batch = NGX_CONF_UNSET_MSEC;
    imcf->group_owe = NGX_CONF_UNSET;
    imcf->group_owe_lease = NGX_CONF_UNSET_MSEC;
    imcf->repush_interval = NGX_CONF_UNSET_MSEC;
    imcf->repush_max = NGX_CONF_UNSET_UINT;
    imcf->ping_interval = NGX_CONF_UNSET_MSEC;
    imcf->ping_timeout = NGX_CONF_UNSET_MSEC;
    imcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    imcf->close_grace = NGX_CONF_UNSET_MSEC;
    imcf->login_policy = NGX_CONF_UNSET_UINT;
    imcf->logins_in_flight = NGX_CONF_UNSET_UINT;
    imcf->login_queue_timeout = NGX_CONF_UNSET_MSEC;
    imcf->max_payload = NGX_CONF_UNSET_SIZE;
    imcf->max_message = NGX_CONF_UNSET_SIZE;
    imcf->send_buffer = NGX_CONF_UNSET_SIZE;
    imcf->part_push_as_group = NGX_CONF_UNSET;
    imcf->alone = NGX_CONF_UNSET;
    imcf->max_sessions = NGX_CONF_UNSET_UINT;
    imcf->msg_rate = NGX_CONF_UNSET_UINT;
    imcf->msg_burst = NGX_CONF_UNSET_UINT;
    imcf->max_recipients = NGX_CONF_UNSET_UINT;
    imcf->check_sender = NGX_CONF_UNSET;

    return imcf;
}


static char *
ngx_im_init_conf(ngx_cycle_t *cycle, void *conf)
{
    ngx_im_conf_t  *imcf = conf;

    if (imcf->redis_addrs == NULL && imcf->sentinels == NULL
        && ngx_im_redis_parse_addr(cycle->pool, cycle->log, imcf,
                                   (u_char *) "127.0.0.1:6379",
                                   sizeof("127.0.0.1:6379") - 1)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_value(imcf->redis_db, 0);
    ngx_conf_init_msec_value(imcf->redis_timeout, 3000);
    ngx_conf_init_value(imcf->redis_ssl, 0);
    ngx_conf_init_value(imcf->redis_ssl_verify, 1);

    if (imcf->redis_user.len && imcf->redis_password.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_redis_user needs im_redis_password");
        return NGX_CONF_ERROR;
    }

    if (ngx_im_redis_check(cycle, imcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (imcf->redis_ssl
        && (ngx_im_redis_ssl_name(cycle, imcf, &imcf->redis_ssl_name,
                                  &imcf->redis_host, "im_redis_ssl_name")
            != NGX_OK
            || ngx_im_redis_ssl(cycle, imcf) != NGX_OK))
    {
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_value(imcf->redis_cluster, 0);

    if (imcf->redis_cluster) {
        /* a cluster has database 0 only: no SELECT
         * (docs/decisions/043-redis-cluster.md); im_group_redis is not
         * the cluster */
        if (imcf->redis_db != 0
            || (imcf->group_db > 0 && imcf->group_addrs == NULL))
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "im_redis_cluster: a Redis Cluster has database "
                          "0 only: im_redis_db and im_group_db must be 0 "
                          "(im_group_db may be another with "
                          "im_group_redis)");
            return NGX_CONF_ERROR;
        }

        /* a cluster promotes its replicas itself; a WAIT would be one
         * per master touched, not built */
        if (imcf->sentinels) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "im_redis_cluster and im_redis_sentinel exclude "
                          "each other: a cluster fails over by itself");
            return NGX_CONF_ERROR;
        }

        if (imcf->redis_wait != NGX_CONF_UNSET_UINT && imcf->redis_wait) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "im_redis_cluster: \"im_redis_wait\" is not "
                          "supported with a Redis Cluster yet");
            return NGX_CONF_ERROR;
        }

        if (imcf->group_addrs == NULL) {
            ngx_conf_init_value(imcf->group_db, 0);
        }
    }

    ngx_conf_init_value(imcf->group_db, 1);

    if (ngx_im_group_redis_check(cycle, imcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (imcf->group_prefix.data == NULL) {
        ngx_str_set(&imcf->group_prefix, "im_group:");
    }

    if (imcf->node_id.data == NULL) {
        imcf->node_id = cycle->hostname;
    }

    if (imcf->node_id.len > 200) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_node_id is longer than 200 bytes");
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_uint_value(imcf->delivery, NGX_IM_WRITE_THROUGH);
    ngx_conf_init_value(imcf->offline_ttl, 7 * 86400);
    ngx_conf_init_uint_value(imcf->offline_max, 1000);
    ngx_conf_init_uint_value(imcf->poison_after, 3);
    /* decision 051: 5 ms take a removal's wake-up of Redis and pass of
     * the worker off each message at 20,000 messages/s */
    ngx_conf_init_msec_value(imcf->inbox_batch, 5);
    ngx_conf_init_value(imcf->group_owe, 1);
    ngx_conf_init_msec_value(imcf->group_owe_lease, 30000);

    if (imcf->group_owe_lease < 300) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_group_owe_lease must be at least 300ms");
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_msec_value(imcf->repush_interval, 2000);
    ngx_conf_init_uint_value(imcf->repush_max, 3);
    ngx_conf_init_msec_value(imcf->ping_interval, 30000);
    ngx_conf_init_msec_value(imcf->ping_timeout, 10000);
    ngx_conf_init_msec_value(imcf->connect_timeout, 10000);
    ngx_conf_init_msec_value(imcf->close_grace, 5000);
    ngx_conf_init_uint_value(imcf->login_policy, NGX_IM_LOGIN_KICK);
    /* decision 042: 12 workers of the full-box bench ask a user centre
     * at most 3,072 logins at once, within its listen queue */
    ngx_conf_init_uint_value(imcf->logins_in_flight, 256);
    ngx_conf_init_msec_value(imcf->login_queue_timeout, 10000);
    ngx_conf_init_size_value(imcf->max_payload, 32767);
    ngx_conf_init_size_value(imcf->max_message, 128 * 1024);
    ngx_conf_init_size_value(imcf->send_buffer, 1024 * 1024);
    ngx_conf_init_value(imcf->part_push_as_group, 0);
    ngx_conf_init_value(imcf->alone, 1);
    ngx_conf_init_uint_value(imcf->max_sessions, 0);
    ngx_conf_init_uint_value(imcf->msg_rate, 0);
    ngx_conf_init_uint_value(imcf->msg_burst, 0);
    ngx_conf_init_uint_value(imcf->max_recipients, 0);

    if (imcf->msg_rate && imcf->zone == NULL) {
        /* the buckets are shared by the workers of the node */
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_msg_rate needs im_zone: its buckets are kept "
                      "there, shared by the workers");
        return NGX_CONF_ERROR;
    }
    /* off: configurations written before the check carry payloads it
     * would refuse; conf/ turns it on */
    ngx_conf_init_value(imcf->check_sender, 0);

    if (imcf->send_buffer > 1024 * 1024 * 1024) {
        /* a session counts its unsent bytes in 32 bits (packed: one
         * record per idle client) */
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_send_buffer cannot exceed 1024m");
        return NGX_CONF_ERROR;
    }

    if (imcf->max_payload > 65535) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_max_payload cannot exceed 65535: the length "
                      "field has 16 bits");
        return NGX_CONF_ERROR;
    }

    if (imcf->offline_max == 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_offline_max must be at least 1");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * im_redis addr: "host:port" (a name is resolved now, as nginx resolves
 * upstream servers; each of its addresses is tried in turn), "[::1]:port",
 * or "unix:/path".
 */

static ngx_int_t
ngx_im_redis_parse_url(ngx_pool_t *pool, ngx_log_t *log,
    const char *directive, u_char *url, size_t len, ngx_url_t *u)
{
    ngx_memzero(u, sizeof(ngx_url_t));
    u->url.data = url;
    u->url.len = len;
    u->default_port = 6379;

    if (ngx_parse_url(pool, u) != NGX_OK || u->naddrs == 0) {
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "invalid %s address \"%*s\"%s%s", directive, len, url,
                      u->err ? ": " : "", u->err ? u->err : "");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_im_redis_parse_addr(ngx_pool_t *pool, ngx_log_t *log,
    ngx_im_conf_t *imcf, u_char *url, size_t len)
{
    ngx_url_t  u;

    if (ngx_im_redis_parse_url(pool, log, "im_redis", url, len, &u)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    imcf->redis_url = u.url;
    imcf->redis_addrs = u.addrs;
    imcf->redis_naddrs = u.naddrs;

    if (u.family != AF_UNIX) {
        imcf->redis_host = u.host;
    }

    return NGX_OK;
}


static char *
ngx_im_redis_addr(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_im_conf_t  *imcf = conf;

    ngx_str_t  *value;

    if (imcf->redis_addrs) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_im_redis_parse_addr(cf->pool, cf->log, imcf, value[1].data,
                                value[1].len)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * im_group_redis addr [ssl] [ssl_name=name] [user=name] [password=s]: the
 * group sets on a Redis of their own, the address as im_redis takes it.
 * Its database is im_group_db; with "ssl", the TLS trust and client
 * certificate are im_redis_ssl_*'s (docs/decisions/045-group-redis.md).
 */

static char *
ngx_im_group_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_im_conf_t  *imcf = conf;

    ngx_url_t    u;
    ngx_str_t   *value, *to, v;
    ngx_uint_t   i;

    if (imcf->group_addrs) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_im_redis_parse_url(cf->pool, cf->log, "im_group_redis",
                               value[1].data, value[1].len, &u)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    imcf->group_addrs = u.addrs;
    imcf->group_naddrs = u.naddrs;

    if (u.family != AF_UNIX) {
        imcf->group_host = u.host;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (value[i].len == 3 && ngx_strncmp(value[i].data, "ssl", 3) == 0) {
            imcf->group_ssl = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "ssl_name=", 9) == 0) {
            to = &imcf->group_ssl_name;
            v.data = value[i].data + 9;

        } else if (ngx_strncmp(value[i].data, "user=", 5) == 0) {
            to = &imcf->group_user;
            v.data = value[i].data + 5;

        } else if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            to = &imcf->group_password;
            v.data = value[i].data + 9;

        } else {
            goto invalid;
        }

        v.len = value[i].data + value[i].len - v.data;

        if (v.len == 0) {
            goto invalid;
        }

        *to = v;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid im_group_redis parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/* im_group_redis's parameters that go together; its TLS name */

static ngx_int_t
ngx_im_group_redis_check(ngx_cycle_t *cycle, ngx_im_conf_t *imcf)
{
    if (imcf->group_addrs == NULL) {
        return NGX_OK;
    }

    if (imcf->group_user.len && imcf->group_password.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_group_redis: user= needs password=");
        return NGX_ERROR;
    }

    if (!imcf->group_ssl) {
        if (imcf->group_ssl_name.len) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "im_group_redis: ssl_name= needs ssl");
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (ngx_im_redis_ssl_name(cycle, imcf, &imcf->group_ssl_name,
                              &imcf->group_host, "im_group_redis's ssl_name=")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* one context for both: the trust and the client certificate are
     * the node's */
    return ngx_im_redis_ssl(cycle, imcf);
}


/*
 * im_redis_sentinel addr ...: the sentinels, each "host:port" (26379 by
 * default) as im_redis takes it; repeatable, all tried in turn.
 */

static char *
ngx_im_redis_sentinel(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_im_conf_t  *imcf = conf;

    ngx_url_t    u;
    ngx_str_t   *value;
    ngx_uint_t   i, j;
    ngx_addr_t  *addr;

    if (imcf->sentinels == NULL) {
        imcf->sentinels = ngx_array_create(cf->pool, 3, sizeof(ngx_addr_t));
        if (imcf->sentinels == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        ngx_memzero(&u, sizeof(ngx_url_t));
        u.url = value[i];
        u.default_port = 26379;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid im_redis_sentinel address "
                               "\"%V\"%s%s", &value[i],
                               u.err ? ": " : "", u.err ? u.err : "");
            return NGX_CONF_ERROR;
        }

        for (j = 0; j < u.naddrs; j++) {
            addr = ngx_array_push(imcf->sentinels);
            if (addr == NULL) {
                return NGX_CONF_ERROR;
            }

            *addr = u.addrs[j];
        }
    }

    return NGX_CONF_OK;
}


/* im_redis_wait replicas [timeout] */

static char *
ngx_im_redis_wait(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_im_conf_t  *imcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value;
    ngx_msec_t   ms;

    if (imcf->redis_wait != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        if (cf->args->nelts > 2) {
            return "takes no timeout with \"off\"";
        }

        imcf->redis_wait = 0;
        return NGX_CONF_OK;
    }

    n = ngx_atoi(value[1].data, value[1].len);

    if (n < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "im_redis_wait needs a number of replicas (1 or "
                           "more) or \"off\", not \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    imcf->redis_wait = n;

    if (cf->args->nelts > 2) {
        ms = ngx_parse_time(&value[2], 0);

        if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
            /* WAIT 0 would wait for ever, and the connection with it */
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid im_redis_wait timeout \"%V\" "
                               "(more than 0 is needed)", &value[2]);
            return NGX_CONF_ERROR;
        }

        imcf->redis_wait_timeout = ms;
    }

    return NGX_CONF_OK;
}


/* the Redis directives that go together, and those that do not */

static ngx_int_t
ngx_im_redis_check(ngx_cycle_t *cycle, ngx_im_conf_t *imcf)
{
    if (imcf->sentinels) {
        if (imcf->redis_addrs) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "im_redis and im_redis_sentinel exclude each "
                          "other: with Sentinel, the sentinels name the "
                          "master");
            return NGX_ERROR;
        }

        if (imcf->sentinel_master.len == 0) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "im_redis_sentinel needs "
                          "im_redis_sentinel_master");
            return NGX_ERROR;
        }

        if (imcf->redis_ssl && imcf->redis_ssl_verify
            && imcf->redis_ssl_name.len == 0)
        {
            /* the master's address changes; the certificates' name
             * does not */
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "im_redis_ssl_verify with im_redis_sentinel "
                          "needs im_redis_ssl_name");
            return NGX_ERROR;
        }

    } else if (imcf->sentinel_master.len || imcf->sentinel_user.len
               || imcf->sentinel_password.len)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_redis_sentinel_master, _user and _password need "
                      "im_redis_sentinel");
        return NGX_ERROR;
    }

    if (imcf->sentinel_user.len && imcf->sentinel_password.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_redis_sentinel_user needs "
                      "im_redis_sentinel_password");
        return NGX_ERROR;
    }

    ngx_conf_init_uint_value(imcf->redis_wait, 0);
    ngx_conf_init_msec_value(imcf->redis_wait_timeout,
                             imcf->redis_timeout / 3);

    if (imcf->redis_wait && imcf->redis_wait_timeout >= imcf->redis_timeout)
    {
        /* WAIT holds the connection: at im_redis_timeout its watchdog
         * would take Redis for dead */
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_redis_wait's timeout (%M ms) must be shorter "
                      "than im_redis_timeout (%M ms)",
                      imcf->redis_wait_timeout, imcf->redis_timeout);
        return NGX_ERROR;
    }

    if (imcf->redis_wait && imcf->redis_wait_timeout == 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_redis_timeout is too short for im_redis_wait");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The name a TLS connection to a Redis sends as SNI and verifies: the
 * one given, else the host of its address (none for a unix socket).
 */

static ngx_int_t
ngx_im_redis_ssl_name(ngx_cycle_t *cycle, ngx_im_conf_t *imcf,
    ngx_str_t *name, ngx_str_t *host, const char *setting)
{
    u_char  *p;

    if (name->len == 0) {
        *name = *host;
    }

    if (name->len) {
        /* for SSL_set_tlsext_host_name() and X509_check_ip_asc() */
        p = ngx_pnalloc(cycle->pool, name->len + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, name->data, name->len);
        p[name->len] = '\0';
        name->data = p;

    } else if (imcf->redis_ssl_verify) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im_redis_ssl_verify needs %s with a unix socket",
                      setting);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The one client TLS context of the worker's Redis connections (im_redis
 * and im_group_redis), as the proxy module makes one for its upstreams.
 * The main context's directives are all read by now; nginx's certificate
 * loaders take a configuration, and one made of the cycle serves them.
 */

static ngx_int_t
ngx_im_redis_ssl(ngx_cycle_t *cycle, ngx_im_conf_t *imcf)
{
#if (NGX_SSL)
    ngx_ssl_t           *ssl;
    ngx_conf_t           cf;
    ngx_pool_cleanup_t  *cln;

    if (imcf->redis_ssl_ctx) {
        return NGX_OK;
    }

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.cycle = cycle;
    cf.pool = cycle->pool;
    cf.temp_pool = cycle->pool;
    cf.log = cycle->log;

    ssl = ngx_pcalloc(cycle->pool, sizeof(ngx_ssl_t));
    if (ssl == NULL) {
        return NGX_ERROR;
    }

    ssl->log = cycle->log;

    if (ngx_ssl_create(ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cycle->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(ssl);
        return NGX_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = ssl;

    /* a write retried after SSL_ERROR_WANT_WRITE may start at another
     * address: the connection's output buffer grows and compacts */
    SSL_CTX_set_mode(ssl->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

    if (imcf->redis_ssl_cert.len) {
        if (imcf->redis_ssl_key.len == 0) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "no im_redis_ssl_certificate_key for "
                          "im_redis_ssl_certificate \"%V\"",
                          &imcf->redis_ssl_cert);
            return NGX_ERROR;
        }

        if (ngx_ssl_certificate(&cf, ssl, &imcf->redis_ssl_cert,
                                &imcf->redis_ssl_key, NULL)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (imcf->redis_ssl_verify) {
        if (imcf->redis_ssl_trusted.len == 0) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "im_redis_ssl_verify is on and no "
                          "im_redis_ssl_trusted_certificate is given "
                          "(or set im_redis_ssl_verify off)");
            return NGX_ERROR;
        }

        if (ngx_ssl_trusted_certificate(&cf, ssl, &imcf->redis_ssl_trusted,
                                        4)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    imcf->redis_ssl_ctx = ssl;

    return NGX_OK;

#else

    ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                  "im_redis_ssl needs nginx built with OpenSSL");
    return NGX_ERROR;

#endif
}


/* im_msg_rate rate [burst=n]: rate as "10r/s" or "30r/m", as limit_req */

static char *
ngx_im_msg_rate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_im_conf_t  *imcf = conf;

    size_t      len;
    u_char     *p;
    ngx_int_t   rate, scale, burst;
    ngx_str_t  *value;

    if (imcf->msg_rate != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    len = value[1].len;
    p = value[1].data + len - 3;
    scale = 1;

    if (len > 3 && ngx_strncmp(p, "r/s", 3) == 0) {
        len -= 3;

    } else if (len > 3 && ngx_strncmp(p, "r/m", 3) == 0) {
        scale = 60;
        len -= 3;

    } else {
        len = 0;
    }

    rate = len ? ngx_atoi(value[1].data, len) : NGX_ERROR;

    if (rate <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid im_msg_rate \"%V\": give messages per "
                           "second or minute, as \"10r/s\" or \"30r/m\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    burst = 0;

    if (cf->args->nelts == 3) {
        if (value[2].len <= 6
            || ngx_strncmp(value[2].data, "burst=", 6) != 0
            || (burst = ngx_atoi(value[2].data + 6, value[2].len - 6))
               == NGX_ERROR)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid im_msg_rate burst \"%V\"",
                               &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    if (rate > 1000000 || burst > 1000000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "im_msg_rate: at most 1000000 for rate and burst");
        return NGX_CONF_ERROR;
    }

    /* thousandths, as the buckets count */
    imcf->msg_rate = rate * 1000 / scale;
    imcf->msg_burst = burst * 1000;

    if (imcf->msg_rate == 0) {
        imcf->msg_rate = 1;
    }

    return NGX_CONF_OK;
}


ngx_im_conf_t *
ngx_im_conf_enable(ngx_conf_t *cf)
{
    ngx_im_conf_t  *imcf;

    imcf = (ngx_im_conf_t *) ngx_get_conf(cf->cycle->conf_ctx, ngx_im_module);

    if (!imcf->enabled && ngx_im_metrics_zone(cf) != NGX_OK) {
        return NULL;
    }

    imcf->enabled = 1;

    return imcf;
}


static ngx_int_t
ngx_im_init_process(ngx_cycle_t *cycle)
{
    u_char         *p;
    uint64_t        instance;
    ngx_im_conf_t  *imcf;

    imcf = (ngx_im_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_im_module);

    if (imcf == NULL || !imcf->enabled) {
        return NGX_OK;
    }

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    if (ngx_im_metrics_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_im_dir_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(cycle->pool, imcf->node_id.len + 2 + 16 + NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    /* without a zone every worker is on its own */

    instance = ngx_im_dir_enabled()
               ? ngx_im_dir_instance()
               : ((uint64_t) ngx_random() << 32) ^ (uint64_t) ngx_random()
                 ^ (uint64_t) ngx_pid;

    ngx_im_worker_id.data = p;
    ngx_im_worker_id.len = ngx_sprintf(p, "%V/%016xL:", &imcf->node_id,
                                       instance)
                           - p;
    ngx_im_node_prefix_len = ngx_im_worker_id.len;
    ngx_im_worker_id.len = ngx_sprintf(p + ngx_im_worker_id.len, "%P",
                                       ngx_pid)
                           - p;

    if (ngx_im_events_init(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_im_router_init(cycle, ngx_im_session_router_ops());
}


static void
ngx_im_exit_process(ngx_cycle_t *cycle)
{
    ngx_im_conf_t  *imcf;

    imcf = (ngx_im_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_im_module);

    if (imcf == NULL || !imcf->enabled) {
        return;
    }

    ngx_im_router_exit();
    ngx_im_events_exit();
    ngx_im_dir_exit_process();
    ngx_im_metrics_exit_process();
}
