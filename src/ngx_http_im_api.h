/*
 * ngx_http_im_api.h: what the admin API's files share: a request's
 * context (ngx_http_im_api_module.c), its arguments and its answer
 * (ngx_http_im_api_request.c), presence and kick
 * (ngx_http_im_api_presence.c), the inbox and recall
 * (ngx_http_im_api_inbox.c), and the publish with its wait
 * (ngx_http_im_api_publish.c).
 */

#ifndef _NGX_HTTP_IM_API_H_INCLUDED_
#define _NGX_HTTP_IM_API_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <cjson/cJSON.h>

#include "ngx_im.h"
#include "ngx_im_redis.h"


/* uids one request may name (a part-group list may name more) */
#define NGX_HTTP_IM_API_MAX_UIDS   1000

/* recipients a publish answer lists one by one; beyond, counts only */
#define NGX_HTTP_IM_API_MAX_LIST   1000

/* a publish's "wait", at most, in seconds */
#define NGX_HTTP_IM_API_MAX_WAIT   30

/* acks one waiting publish keeps (to list them); more are counted */
#define NGX_HTTP_IM_API_MAX_ACKS   16000


/* an ack of a watched message, as a 'W' record brought it */
typedef struct {
    uint32_t               uid;
    uint32_t               after_ms;
    ngx_pid_t              worker;
    uint8_t                client_id;
    ngx_str_t              node;
} ngx_http_im_api_ack_t;


typedef struct ngx_http_im_api_ctx_s  ngx_http_im_api_ctx_t;

struct ngx_http_im_api_ctx_s {
    ngx_http_request_t    *request;
    ngx_uint_t             endpoint;       /* NGX_IM_API_* */

    uint32_t              *uids;
    ngx_uint_t             nuids;

    /* recall: Redis replies still due */
    ngx_uint_t             pending;

    /* kick */
    uint8_t                client_id;
    unsigned               every:1;

    /* publish and recall */
    u_char                 msgid[IM_MSGID_LEN];
    uint32_t               from;           /* publish: the sender */
    uint32_t               target;         /* publish: the uid or gid */

    cJSON                 *out;            /* the answer being built */
    cJSON                 *list;           /* an array in it */
    cJSON                 *extra;          /* another one */

    /*
     * A publish with a wait: in the worker's table by token while it
     * waits; the recipients (uids, sorted), their sessions then (nsess,
     * NULL past NGX_HTTP_IM_API_MAX_LIST), which acked, and how many of
     * those it waits for are still to ack (left).
     */
    ngx_msec_t             wait;
    ngx_rbtree_node_t      wait_node;      /* key: the token */
    ngx_event_t            wait_ev;
    ngx_array_t           *acks;           /* ngx_http_im_api_ack_t */
    ngx_uint_t             acks_dropped;
    int                   *nsess;
    u_char                *acked;
    ngx_uint_t             left;
    uint32_t              *asked;          /* a part-group's uids */
    ngx_uint_t             nasked;
    unsigned               waiting:1;      /* in the table */
    unsigned               known:1;        /* the recipients are */
    unsigned               timed_out:1;
};


typedef struct {
    ngx_http_im_api_ctx_t *ctx;
    uint32_t               uid;
} ngx_http_im_api_step_t;


/* ngx_http_im_api_request.c: arguments and answers */
ngx_int_t ngx_http_im_api_read_body(ngx_http_request_t *r, ngx_str_t *body);
cJSON *ngx_http_im_api_json(ngx_http_request_t *r, ngx_str_t *body,
    const char **allowed, u_char *err, size_t size);
ngx_int_t ngx_http_im_api_arg(ngx_http_request_t *r, char *name,
    ngx_str_t *v);
ngx_int_t ngx_http_im_api_uid_list(ngx_http_im_api_ctx_t *ctx, ngx_str_t *v,
    u_char *err, size_t size);
ngx_int_t ngx_http_im_api_uid_arg(ngx_http_im_api_ctx_t *ctx, ngx_uint_t one,
    const char *missing, ngx_int_t *answer);
ngx_int_t ngx_http_im_api_json_u32(cJSON *json, const char *name,
    ngx_uint_t zero, uint32_t *v, u_char *err, size_t size);
ngx_int_t ngx_http_im_api_msgid(ngx_str_t *v, u_char *msgid);
void ngx_http_im_api_add_msgid(cJSON *obj, const u_char *msgid);
void ngx_http_im_api_finish(ngx_http_im_api_ctx_t *ctx, ngx_uint_t status);
ngx_int_t ngx_http_im_api_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *fmt, ...);
ngx_int_t ngx_http_im_api_send(ngx_http_request_t *r, ngx_uint_t status,
    cJSON *json);

/* ngx_http_im_api_presence.c: presence and kick */
ngx_int_t ngx_http_im_api_presence(ngx_http_im_api_ctx_t *ctx);
ngx_int_t ngx_http_im_api_kick(ngx_http_im_api_ctx_t *ctx, cJSON *body);
ngx_int_t ngx_http_im_api_users(cJSON *users, cJSON *nodes,
    redisReply *reply, uint32_t *uids, ngx_uint_t n, ngx_int_t client_id);

/* ngx_http_im_api_inbox.c: GET and DELETE inbox (recall) */
ngx_int_t ngx_http_im_api_inbox(ngx_http_im_api_ctx_t *ctx);
ngx_int_t ngx_http_im_api_recall(ngx_http_im_api_ctx_t *ctx);

/* ngx_http_im_api_publish.c: POST publish, and its wait for acks */
ngx_int_t ngx_http_im_api_publish(ngx_http_im_api_ctx_t *ctx, cJSON *body);
void ngx_http_im_api_wait_end(ngx_http_im_api_ctx_t *ctx);


#endif /* _NGX_HTTP_IM_API_H_INCLUDED_ */
