/*
 * ngx_im_redis_wait.c: im_redis_wait, acknowledgements that must survive
 * the loss of the master.
 *
 * Owns the mark of a pass whose appends an acknowledgement rests on, the
 * one WAIT that then ends the inbox connection's output of the pass, the
 * acknowledgements held until it answers and their release (granted when
 * enough replicas have the writes, refused when not), and the log lines
 * when that starts and ends (docs/decisions/041-redis-sentinel.md).
 */

#include "ngx_im_redis_int.h"


static void ngx_im_redis_waited(redisReply *reply, void *data);


/*
 * im_redis_wait: the appends an acknowledgement rests on mark the pass
 * (ngx_im_redis_wait_mark), and the inbox connection's output of the pass
 * then ends with one WAIT, which counts every write of the connection so
 * far.  An append's reply comes before the WAIT behind it, so the
 * acknowledgements held at a WAIT's reply (ngx_im_redis_after_wait) are
 * exactly those that WAIT covers.
 */

static ngx_uint_t                ngx_im_redis_wait_marked;
static ngx_uint_t                ngx_im_redis_waits;     /* WAITs sent */
static ngx_im_redis_queue_t      ngx_im_redis_held;
static ngx_uint_t                ngx_im_redis_wait_short; /* refusing */
static ngx_uint_t                ngx_im_redis_wait_refused;


void
ngx_im_redis_wait_init(void)
{
    ngx_im_redis_wait_marked = 0;
    ngx_im_redis_waits = 0;
    ngx_im_redis_wait_short = 0;
}


void
ngx_im_redis_wait_lost(void)
{
    ngx_im_redis_waits = 0;
    ngx_im_redis_wait_marked = 0;
    ngx_im_redis_wait_release(NULL);
}


/* im_redis_wait: see ngx_im_redis_wait_marked above */

void
ngx_im_redis_wait_mark(void)
{
    if (ngx_im_get_conf()->redis_wait) {
        ngx_im_redis_wait_marked = 1;
    }
}


ngx_int_t
ngx_im_redis_after_wait(ngx_im_redis_cb_pt cb, void *data)
{
    ngx_im_redis_conn_t   *rc;
    ngx_im_redis_queue_t  *q;

    if (ngx_im_get_conf()->redis_wait == 0) {
        return NGX_DECLINED;
    }

    rc = &ngx_im_redis_conns[NGX_IM_REDIS_INBOX];
    q = &ngx_im_redis_held;

    if (rc->state != NGX_IM_REDIS_READY
        || (q->n == q->size && ngx_im_redis_grow(q) != NGX_OK))
    {
        return NGX_ERROR;
    }

    ngx_im_redis_push(q, cb, data, 0, NULL);

    if (ngx_im_redis_waits == 0) {
        /* no WAIT went behind this write (it was not marked): one at the
         * end of this pass */
        ngx_im_redis_wait_marked = 1;
        ngx_im_redis_conn_commit(rc, rc->last);
    }

    return NGX_OK;
}


/* the inbox connection's output is leaving: a WAIT behind the pass's
 * appends, if any was marked */

void
ngx_im_redis_wait_flush(ngx_im_redis_conn_t *rc)
{
    u_char          n[NGX_INT_T_LEN], ms[NGX_INT_T_LEN];
    const char     *argv[3];
    size_t          argvlen[3];
    ngx_im_conf_t  *imcf;

    if (rc->index != NGX_IM_REDIS_INBOX || !ngx_im_redis_wait_marked) {
        return;
    }

    ngx_im_redis_wait_marked = 0;

    imcf = ngx_im_get_conf();

    argv[0] = "WAIT";
    argvlen[0] = 4;
    argv[1] = (char *) n;
    argvlen[1] = ngx_sprintf(n, "%ui", imcf->redis_wait) - n;
    argv[2] = (char *) ms;
    argvlen[2] = ngx_sprintf(ms, "%M", imcf->redis_wait_timeout) - ms;

    if (ngx_im_redis_cmd(NGX_IM_REDIS_INBOX, ngx_im_redis_waited, NULL, 3,
                         argv, argvlen)
        != NGX_OK)
    {
        /* out of memory: what no WAIT will cover is refused now */
        if (ngx_im_redis_waits == 0) {
            ngx_im_redis_wait_release(NULL);
        }

        return;
    }

    ngx_im_redis_waits++;
    ngx_im_stats->redis_waits++;
}


/*
 * WAIT answered the number of replicas that have every write before it.
 * Fewer than im_redis_wait: what it covers is refused (not acknowledged:
 * the master may be lost with it); logged once when it starts and once
 * when it ends, with the count.
 */

static void
ngx_im_redis_waited(redisReply *reply, void *data)
{
    ngx_uint_t      ok;
    ngx_im_conf_t  *imcf;

    if (ngx_im_redis_waits) {
        ngx_im_redis_waits--;
    }

    if (reply == NULL) {
        /* the connection went: it logged why */
        ngx_im_redis_wait_release(NULL);
        return;
    }

    imcf = ngx_im_get_conf();

    ok = (reply->type == REDIS_REPLY_INTEGER
          && reply->integer >= (long long) imcf->redis_wait);

    if (!ok) {
        ngx_im_redis_wait_refused += ngx_im_redis_held.n;
        ngx_im_stats->redis_wait_short += ngx_im_redis_held.n;

        if (!ngx_im_redis_wait_short) {
            ngx_im_redis_wait_short = 1;

            if (reply->type == REDIS_REPLY_INTEGER) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "im redis: WAIT: %L of %ui replicas had the "
                              "writes within %M ms: write-through "
                              "messages are refused until enough do",
                              (int64_t) reply->integer, imcf->redis_wait,
                              imcf->redis_wait_timeout);

            } else {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "im redis: WAIT failed: %*s: write-through "
                              "messages are refused",
                              reply->type == REDIS_REPLY_ERROR
                              ? reply->len : 0, reply->str);
            }
        }

    } else if (ngx_im_redis_wait_short) {
        ngx_im_redis_wait_short = 0;

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "im redis: WAIT: %L replicas have the writes again; "
                      "%ui appends were refused meanwhile",
                      (int64_t) reply->integer,
                      ngx_im_redis_wait_refused);

        ngx_im_redis_wait_refused = 0;
    }

    ngx_im_redis_wait_release(ok ? reply : NULL);
}


/* the held acknowledgements, oldest first: those held now only (one that
 * a callback holds anew waits for the next WAIT) */

void
ngx_im_redis_wait_release(redisReply *reply)
{
    ngx_uint_t            n;
    ngx_im_redis_req_t    req;
    ngx_im_redis_queue_t  *q;

    q = &ngx_im_redis_held;

    for (n = q->n; n && q->n; n--) {
        req = ngx_im_redis_shift(q);
        req.cb(reply, req.data);
    }
}
